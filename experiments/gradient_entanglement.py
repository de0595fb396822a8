r"""Gradient entanglement: chosen and rejected log-probs move together under margin losses.

A margin loss (DPO, SimPO, ...) changes :math:`\log\pi_w` and :math:`\log\pi_l` through the
two gradients :math:`g_w, g_l`; when :math:`\langle g_w, g_l\rangle` is large relative to
their norms, both rise or both fall (:mod:`jaxalign.losses.entanglement`). On the testbed's
real transformer (A tokens, prompt ``[0]``) with pairs that share all but ONE token:

(a–c) full-batch SGD from a random init π_0 = π_ref on ``num_pairs`` pairs
      ``y_w = (a, s)``, ``y_l = (b, s)`` (a shared suffix s of ``train_length − 1`` tokens;
      the chosen first token is the one a random per-token reward prefers) with DPO, SimPO
      and the normalised pairwise update :math:`\theta \mathrel{+}= \eta\,\omega(g_w/\|g_w\|
      - g_l/\|g_l\|)` (ω = DPO's :math:`\beta\sigma(-\beta h)`): the change of
      :math:`\log\pi_w` and :math:`\log\pi_l` (mean and 25–75 % band over pairs) and the
      fraction of pairs whose chosen log-prob is below its start, per step;
(d)   :math:`\cos(g_w, g_l)` against the shared length — pairs differing in the first token
      (shared suffix) or in the last (shared prefix) — over ``num_models`` random inits, and
      the unigram closed form (:func:`~jaxalign.losses.entanglement.unigram_shared_suffix`);
(e)   the fraction of pairs for which one DPO step on that pair alone lowers the chosen or
      raises the rejected log-prob (first order), against the shared length;
(f)   DPO and the normalised update run one pair per step (pair ``t mod n`` at step t): each
      pair's total change split into its own steps and the other pairs' steps.

Every step's first-order prediction (one ``jax.jvp`` along the update actually taken) is
compared with the change measured after it (summary: sign agreement, median relative error).

    jaxalign reproduce gradient-entanglement --out results/gradient-entanglement
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.experiment import Experiment, Result
from jaxalign.losses import entanglement as ent
from jaxalign.models import CausalLM, ModelConfig
from jaxalign.testbed import Testbed

METHODS = ("dpo", "simpo", "normalised")
LABELS = {"dpo": "DPO", "simpo": "SimPO", "normalised": "normalised update"}


@dataclasses.dataclass(frozen=True)
class Config:
    alphabet_size: int = 4  # tokens A (= model vocabulary)
    train_length: int = 8  # response length of the training pairs (shared suffix = L − 1)
    num_pairs: int = 16  # training pairs (one full batch)
    steps: int = 480  # SGD steps per run
    beta: float = 0.1  # DPO β (also the normalised update's pair weight βσ(−βh))
    simpo_beta: float = 2.0  # SimPO β
    simpo_gamma: float = 0.5  # SimPO γ
    lr_dpo: float = 0.002  # SGD step size of DPO
    lr_simpo: float = 0.0005  # SGD step size of SimPO
    lr_normalised: float = 0.1  # SGD step size of the normalised update
    shared_lengths: tuple[int, ...] = (0, 1, 2, 3, 5, 7, 9, 11)  # shared tokens in (d), (e)
    num_models: int = 3  # random inits in (d), (e)
    pairs_per_length: int = 24  # random pairs per shared length and model in (d), (e)
    hidden_size: int = 32  # model width
    num_layers: int = 2  # model depth
    init_scale: float = 0.02  # weight std of the random inits
    seed: int = 0

    def __post_init__(self):
        if self.alphabet_size < 2 or self.train_length < 2:
            raise ValueError("need alphabet_size >= 2 and train_length >= 2 (a shared suffix)")
        if min(self.num_pairs, self.steps, self.num_models, self.pairs_per_length) < 1:
            raise ValueError("num_pairs, steps, num_models and pairs_per_length must be >= 1")
        if min(self.shared_lengths, default=-1) < 0:
            raise ValueError(f"shared_lengths must be >= 0, got {self.shared_lengths}")
        if min(self.beta, self.simpo_beta, self.lr_dpo, self.lr_simpo, self.lr_normalised) <= 0:
            raise ValueError("beta, simpo_beta and the learning rates must be > 0")


def _model(config: Config, seed: int):
    from flax import nnx

    cfg = ModelConfig(
        vocab_size=config.alphabet_size,
        hidden_size=config.hidden_size,
        intermediate_size=2 * config.hidden_size,
        num_layers=config.num_layers,
        num_heads=2,
        num_kv_heads=1,
        head_dim=config.hidden_size // 2,
        initializer_range=config.init_scale,
    )
    return nnx.split(CausalLM.create(cfg, key=jax.random.key(seed)))


def _one_token_pairs(rng, n: int, shared: int, alphabet: int, where: str, width: int):
    """``n`` pairs differing in one token with ``shared`` common tokens after it (``where =
    "suffix"``) or before it (``"prefix"``), right-padded to ``width`` response tokens:
    ``((tokens, mask) chosen, (tokens, mask) rejected)``, each ``[n, 1 + width]``."""
    a = rng.integers(0, alphabet, n)
    b = (a + rng.integers(1, alphabet, n)) % alphabet
    s = rng.integers(0, alphabet, (n, shared))
    join = (lambda t: np.concatenate([t[:, None], s], 1)) if where == "suffix" else (
        lambda t: np.concatenate([s, t[:, None]], 1))  # fmt: skip
    pad = np.zeros((n, width - shared - 1), np.int64)
    prompt = np.broadcast_to(np.asarray(Testbed(alphabet, 1).prompt), (n, 1))
    mask = np.zeros((n, 1 + width), np.float32)
    mask[:, 1 : shared + 2] = 1.0  # the response tokens; right padding is never scored
    out = []
    for first in (a, b):
        tokens = np.concatenate([prompt, join(first), pad], 1)
        out.append((jnp.asarray(tokens, jnp.int32), jnp.asarray(mask)))
    return a, b, out[0], out[1]


def _geometry(config: Config, track):
    """cos(g_w, g_l) and the DPO first-order failure per (where, shared length, model, pair)."""
    width = max(config.shared_lengths) + 1
    rng = np.random.default_rng(config.seed + 1)
    n = config.pairs_per_length
    wheres = ("suffix", "prefix")
    chosen, rejected = [], []
    for where in wheres:
        for k in config.shared_lengths:
            _, _, c, r = _one_token_pairs(rng, n, k, config.alphabet_size, where, width)
            chosen.append(c)
            rejected.append(r)
    stack = lambda xs: jax.tree.map(lambda *t: jnp.concatenate(t), *xs)
    chosen, rejected = stack(chosen), stack(rejected)
    total = chosen[0].shape[0]
    ones = jnp.ones(total, jnp.float32)
    cos, fail, both = [], [], []
    for m in track(range(config.num_models), "random inits"):
        graphdef, params = _model(config, config.seed + 100 + m)
        diag = _diagnose(graphdef, params, chosen, rejected, ones)
        cos.append(np.asarray(diag.cosine))
        fail.append(np.asarray((diag.change_w < 0) | (diag.change_l > 0)))
        both.append(np.asarray((diag.change_w < 0) & (diag.change_l > 0)))
    shape = (config.num_models, len(wheres), len(config.shared_lengths), n)
    return {
        "cosine": np.stack(cos).reshape(shape),
        "failure": np.stack(fail).reshape(shape),
        "chosen_down_and_rejected_up": np.stack(both).reshape(shape),
    }


@functools.partial(jax.jit, static_argnums=0)
def _diagnose(graphdef, params, chosen, rejected, d):
    logp = ent.sequence_logp_fn(graphdef)
    return ent.gradient_entanglement(logp, params, chosen, rejected, ent.LossDerivatives(d, d))


def _unigram_cosine(config: Config) -> np.ndarray:
    """Mean closed-form cos(g_w, g_l) of shared-suffix pairs under random unigram policies
    (logits ~ N(0, 1)), per shared length."""
    rng = np.random.default_rng(config.seed + 2)
    a_sz = config.alphabet_size
    out = []
    for k in config.shared_lengths:
        vals = []
        for _ in range(64):
            z = rng.standard_normal(a_sz)
            a, b = rng.choice(a_sz, 2, replace=False)
            counts = np.bincount(rng.integers(0, a_sz, k), minlength=a_sz).astype(np.float32)
            vals.append(float(ent.unigram_shared_suffix(z, int(a), int(b), counts).cosine))
        out.append(np.mean(vals))
    return np.asarray(out)


def _train(config: Config, method: str, graphdef, params, chosen, rejected, one_pair=False):
    """``steps`` full-batch SGD steps of ``method``: per step the log-probs before it and the
    first-order change of the step taken (jvp), plus the final log-probs (``[steps+1, n]``)."""
    lr = {"dpo": config.lr_dpo, "simpo": config.lr_simpo, "normalised": config.lr_normalised}
    static = dataclasses.replace(config, lr_dpo=1.0, lr_simpo=1.0, lr_normalised=1.0)
    out = _sgd(
        static,
        graphdef,
        params,
        chosen,
        rejected,
        METHODS.index(method),
        lr[method],
        jnp.asarray(one_pair),
    )
    lw, ll, pw, pl, fw, fl = (np.asarray(x) for x in out)
    return np.concatenate([lw, fw[None]]), np.concatenate([ll, fl[None]]), pw, pl


@functools.partial(jax.jit, static_argnums=(0, 1))
def _sgd(config: Config, graphdef, params, chosen, rejected, method, lr, one_pair):
    r"""One compiled trajectory for all three methods (``method`` indexes :data:`METHODS`).

    Each loss enters only through its per-pair weights: by the chain rule its gradient is
    that of :math:`\frac1B\sum_i(-d_{w,i}\log\pi_{w,i} + d_{l,i}\log\pi_{l,i})` with
    :math:`(d_w, d_l)` held fixed — DPO's and SimPO's from
    :mod:`jaxalign.losses.entanglement`, and :math:`(\omega/\|g_w\|, \omega/\|g_l\|)`,
    :math:`\omega = \beta\sigma(-\beta h)`, for the normalised update
    (:func:`~jaxalign.losses.entanglement.normalised_pairwise_loss`'s gradient). So the
    model's forward, backward and per-pair gradients compile once, not once per method.
    """
    logp = ent.sequence_logp_fn(graphdef)
    batched = jax.vmap(logp, in_axes=(None, 0))
    ref_w, ref_l = batched(params, chosen), batched(params, rejected)
    n_tok = jnp.sum(chosen[1], axis=1)

    def weights(p, lw, ll):
        dpo = lambda: tuple(ent.dpo_derivatives(lw, ll, ref_w, ref_l, beta=config.beta))
        simpo = lambda: tuple(ent.simpo_derivatives(lw, ll, n_tok, n_tok, beta=config.simpo_beta,
                                                    gamma=config.simpo_gamma))  # fmt: skip

        def normalised():
            gram = ent.pair_gradient_gram(logp, p, chosen, rejected)
            omega = ent.dpo_derivatives(lw, ll, ref_w, ref_l, beta=config.beta).d_w
            zero = jnp.zeros_like(lw)
            # d/dlog π of normalised_pairwise_loss: (ω/‖g_w‖, ω/‖g_l‖).
            out = jax.grad(lambda w, l_: jnp.sum(ent.normalised_pairwise_loss(
                w, l_, jnp.sqrt(gram.sq_norm_w), jnp.sqrt(gram.sq_norm_l), omega)),
                argnums=(0, 1))(zero, zero)  # fmt: skip
            return -out[0], out[1]

        return jax.lax.switch(method, (dpo, simpo, normalised))

    n = ref_w.shape[0]

    def step(p, t):
        lw, ll = batched(p, chosen), batched(p, rejected)
        d_w, d_l = jax.lax.stop_gradient(weights(p, lw, ll))
        # one_pair: a step on pair t mod n alone (the per-pair setting of the first-order
        # statements); otherwise the full batch.
        only = jnp.where(one_pair, n * jax.nn.one_hot(t % n, n, dtype=lw.dtype), 1.0)
        d_w, d_l = d_w * only, d_l * only
        surrogate = lambda q: jnp.mean(-d_w * batched(q, chosen) + d_l * batched(q, rejected))
        update = jax.tree.map(lambda g: -lr * g, jax.grad(surrogate)(p))
        pred_w = ent.directional_logp_change(logp, p, update, chosen)
        pred_l = ent.directional_logp_change(logp, p, update, rejected)
        return jax.tree.map(jnp.add, p, update), (lw, ll, pred_w, pred_l)

    final, (lw, ll, pw, pl) = jax.lax.scan(step, params, jnp.arange(config.steps))
    return lw, ll, pw, pl, batched(final, chosen), batched(final, rejected)


def _decompose(lw, ll):
    """For a one-pair-per-step run (pair ``t mod n`` at step t): each pair's total change of
    log π_w and log π_l split into its own steps and the other pairs' steps, plus the
    fraction of its own steps that raised log π_w (resp. lowered log π_l)."""
    steps, n = lw.shape[0] - 1, lw.shape[1]
    own = (np.arange(steps)[:, None] % n) == np.arange(n)[None, :]
    step_w, step_l = np.diff(lw, axis=0), np.diff(ll, axis=0)
    return {
        "chosen_own": float(np.sum(step_w * own) / n),
        "chosen_others": float(np.sum(step_w * ~own) / n),
        "rejected_own": float(np.sum(step_l * own) / n),
        "rejected_others": float(np.sum(step_l * ~own) / n),
        "own_steps_chosen_up": float(np.mean(step_w[own] > 0)),
        "own_steps_rejected_down": float(np.mean(step_l[own] < 0)),
    }


def run(config: Config, track) -> Result:
    rng = np.random.default_rng(config.seed)
    # The training pairs: one token differs, the rest is a shared suffix; the chosen first
    # token is the one a random per-token reward prefers.
    reward = rng.standard_normal(config.alphabet_size)
    a, b, y1, y2 = _one_token_pairs(
        rng, config.num_pairs, config.train_length - 1, config.alphabet_size, "suffix",
        config.train_length,
    )  # fmt: skip
    first = jnp.asarray(reward[a] >= reward[b])[:, None]
    chosen = tuple(jnp.where(first, u, v) for u, v in zip(y1, y2))
    rejected = tuple(jnp.where(first, v, u) for u, v in zip(y1, y2))
    graphdef, params = _model(config, config.seed)

    runs = [(m, False) for m in METHODS] + [("dpo", True), ("normalised", True)]
    curves, rows = {}, []
    for method, one_pair in track(runs, "training runs"):
        lw, ll, pw, pl = _train(config, method, graphdef, params, chosen, rejected, one_pair)
        curves[method, one_pair] = (lw, ll, pw, pl)
        for t in range(config.steps + 1):
            rows.append({
                "panel": "training", "method": method, "one_pair_per_step": one_pair, "step": t,
                "chosen_change": float(np.mean(lw[t] - lw[0])),
                "rejected_change": float(np.mean(ll[t] - ll[0])),
                "chosen_down_fraction": float(np.mean(lw[t] < lw[0])),
                "rejected_up_fraction": float(np.mean(ll[t] > ll[0])),
            })  # fmt: skip
    geo = _geometry(config, track)
    unigram = _unigram_cosine(config)
    for wi, where in enumerate(("suffix", "prefix")):
        for ki, k in enumerate(config.shared_lengths):
            rows.append({
                "panel": "geometry", "method": f"shared {where}", "step": k,
                "cosine": float(geo["cosine"][:, wi, ki].mean()),
                "dpo_failure_fraction": float(geo["failure"][:, wi, ki].mean()),
                "unigram_cosine": float(unigram[ki]) if where == "suffix" else None,
            })  # fmt: skip
    split = {m: _decompose(*curves[m, True][:2]) for m in ("dpo", "normalised")}
    fig = _figure(config, curves, geo, unigram, split)

    def final(method):
        lw, ll = curves[method, False][:2]
        dw, dl = lw[-1] - lw[0], ll[-1] - ll[0]
        return {
            "chosen_change": float(dw.mean()),
            "rejected_change": float(dl.mean()),
            "margin_change": float((dw - dl).mean()),
            "chosen_down_fraction": float(np.mean(dw < 0)),
            "rejected_up_fraction": float(np.mean(dl > 0)),
            "both_down_fraction": float(np.mean((dw < 0) & (dl < 0))),
        }

    # The jvp prediction of every step against the change measured after it (all runs).
    pred = np.concatenate([np.stack(c[2:]).ravel() for c in curves.values()])
    meas = np.concatenate([np.stack([np.diff(c[0], axis=0), np.diff(c[1], axis=0)]).ravel()
                           for c in curves.values()])  # fmt: skip
    clear = np.abs(pred) > 1e-3 * np.abs(pred).max()
    cos, fail = geo["cosine"], geo["failure"]
    per_k = lambda x, w: {str(k): float(x[:, w, i].mean())
                          for i, k in enumerate(config.shared_lengths)}  # fmt: skip
    z, suffix = np.asarray([1.0, 0.0, 0.0]), lambda L: np.asarray([0.0, 0.0, L - 1.0])
    summary = {
        "final_full_batch": {m: final(m) for m in METHODS},
        "one_pair_per_step": split,
        "cosine_shared_suffix": per_k(cos, 0),
        "cosine_shared_prefix": per_k(cos, 1),
        "dpo_failure_shared_suffix": per_k(fail, 0),
        "dpo_failure_shared_prefix": per_k(fail, 1),
        "chosen_down_and_rejected_up_predicted": float(geo["chosen_down_and_rejected_up"].mean()),
        "first_order_sign_agreement": float(np.mean(np.sign(pred[clear]) == np.sign(meas[clear]))),
        "first_order_median_relative_error": float(
            np.median(np.abs(pred - meas)[clear] / np.abs(pred[clear]))
        ),
        "unigram_cosine_table": {
            str(L): float(ent.unigram_shared_suffix(z, 0, 1, suffix(L)).cosine)
            for L in (1, 2, 5, 20, 100)
        },
    }  # fmt: skip
    return Result(figure=fig, table=rows, summary=summary)


def _figure(config: Config, curves, geo, unigram, split):
    from jaxalign import plotting

    blue, red, green, purple, orange, sky = (plotting.PALETTE[i] for i in (0, 1, 2, 3, 4, 5))
    fig, axes = plotting.figure(
        2, 3, panel_size=(4.9, 3.7),
        suptitle=f"Gradient entanglement on the testbed transformer (A = {config.alphabet_size}): "
        f"{config.num_pairs} pairs differing in the first of {config.train_length} tokens",
    )  # fmt: skip
    steps = np.arange(config.steps + 1)
    twins = []
    for i, (ax, method) in enumerate(zip(axes[:3], METHODS)):
        lw, ll = curves[method, False][:2]
        dw, dl = lw - lw[0], ll - ll[0]
        ax.plot(steps, dw.mean(1), color=blue, lw=2, label=r"chosen $\log\pi_w$")
        ax.plot(steps, dl.mean(1), color=red, lw=2, label=r"rejected $\log\pi_l$")
        plotting.band(ax, steps, *np.percentile(dw, [25, 75], axis=1), color=blue)
        plotting.band(ax, steps, *np.percentile(dl, [25, 75], axis=1), color=red)
        plotting.reference_line(ax, y=0.0, horizontal=True, ls="-")
        twin = ax.twinx()
        twin.plot(steps, np.mean(dw < 0, axis=1), color="0.35", ls=":", lw=1.4,
                  label="fraction of pairs with chosen below start (right axis)")  # fmt: skip
        twin.set_ylim(-0.02, 1.02)
        twin.grid(False)
        twin.spines["right"].set_visible(True)
        twin.set_ylabel("fraction of pairs (dotted)", color="0.35")
        ax.set_xlabel("full-batch SGD step")
        ax.set_ylabel(r"change of $\log\pi$ since step 0")
        ax.set_title(f"({'abc'[i]}) {LABELS[method]}")
        twins.append(twin)
    plotting.band_key(axes[0], "25–75 % of pairs")
    # One legend for the three training panels, below the figure (off the data).
    plotting.figure_legend(
        fig, [axes[0], twins[0]], loc="outside lower center", ncols=4, title="panels (a)–(c)"
    )

    ks = np.asarray(config.shared_lengths)
    colors = {"suffix": purple, "prefix": green}
    ax = axes[3]
    for wi, where in enumerate(("suffix", "prefix")):
        flat = geo["cosine"][:, wi].transpose(1, 0, 2).reshape(len(ks), -1)
        ax.plot(ks, flat.mean(1), "o-", color=colors[where], label=f"transformer, shared {where}")
        plotting.band(ax, ks, *np.percentile(flat, [25, 75], axis=1), color=colors[where])
    ax.plot(ks, unigram, "--", color="0.2", lw=1.2, label="unigram policy, shared suffix (exact)")
    plotting.reference_line(ax, y=0.0, horizontal=True, ls="-")
    ax.set_xlabel("shared tokens (the pair differs in one token)")
    ax.set_ylabel(r"$\cos(\nabla_\theta\log\pi_w,\ \nabla_\theta\log\pi_l)$")
    ax.set_title("(d) gradient cosine vs shared length")
    ax.set_ylim(-1.02, 1.02)
    ax.legend(loc="lower right")

    ax = axes[4]
    for wi, where in enumerate(("suffix", "prefix")):
        ax.plot(ks, geo["failure"][:, wi].mean(axis=(0, 2)), "o-", color=colors[where],
                label=f"shared {where}")  # fmt: skip
    ax.set_xlabel("shared tokens")
    ax.set_ylabel("fraction of pairs")
    ax.set_title(r"(e) one DPO step: chosen $\downarrow$ or rejected $\uparrow$ (first order)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left")

    ax = axes[5]
    names = [("chosen_own", "chosen,\nown steps"), ("chosen_others", "chosen,\nothers' steps"),
             ("rejected_own", "rejected,\nown steps"),
             ("rejected_others", "rejected,\nothers' steps")]  # fmt: skip
    x = np.arange(len(names))
    for j, (method, color) in enumerate((("dpo", orange), ("normalised", sky))):
        vals = [split[method][k] for k, _ in names]
        ax.bar(x + (j - 0.5) * 0.38, vals, width=0.38, color=color, label=LABELS[method])
    plotting.reference_line(ax, y=0.0, horizontal=True, ls="-")
    ax.set_xticks(x, [lab for _, lab in names])
    ax.set_ylabel(r"total change of $\log\pi$ (mean over pairs)")
    ax.set_title("(f) one pair per step: own vs other pairs' steps")
    ax.legend(loc="lower left")
    return fig


EXPERIMENT = Experiment(
    name="gradient-entanglement",
    description="Gradient entanglement (Yuan et al. 2025): chosen/rejected log-probs under "
    "DPO, SimPO and the normalised update; gradient cosine vs shared length",
    config_cls=Config,
    run=run,
)


def main(argv=None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
