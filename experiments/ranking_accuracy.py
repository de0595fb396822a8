"""Ranking accuracy of DPO on the testbed: few flips, the flip threshold, idealized accuracy.

Reproduces the analyses of "Preference Learning Algorithms Do Not Learn Preference Rankings"
(Chen et al., NeurIPS 2024) with a tabular policy (one logit per response) on the enumerable
testbed, so every quantity is exact:

(a) the four categories of training pairs (reference ranking → policy ranking: correct →
    correct, correct → incorrect, incorrect → correct, incorrect → incorrect) vs the DPO step
    (Fig 2); the step of best held-out DPO loss is marked;
(b) the per-pair final DPO loss vs c = log π_ref(y_l)/π_ref(y_w) with the curve −log σ(βc):
    a pair is ranked correctly iff its loss lies on or below the curve (Thm 4.1, Fig 3);
(c) observed ranking accuracy after DPO (trained per β) vs the idealized ranking accuracy R*
    of Cor 3.3 (α = the gold Bradley–Terry probability of the recorded winner), vs β;
(d) γ-scaled DPO (§5, Eq 4): ranking accuracy and exact win rate against π_ref vs γ.

Pairs are drawn from π_ref (distinct responses), labelled once by Bradley–Terry on a gold
additive reward; full-batch Adam on the mean DPO loss from π_θ = π_ref.

(e, f) the LLM form: a one-layer transformer policy on its own small testbed (A = 3, L = 2: 9
responses; π_ref = π_0, made peaked by ``transformer_init_scale`` so that it ranks many pairs
wrongly) trained by DPO on the training engine (``algorithm.name: dpo``, the testbed task:
fresh pairs from π_ref every engine step, Bernoulli Bradley–Terry labels, warm-started Adam).
The task's exact history (the enumerated log π_t after every step) is scored exactly over the
training-pair distribution — ordered pairs (y_w, y_l), y_w ≠ y_l, weighted by
π_ref(y_w) π_ref(y_l) P(y_w ≻ y_l) — giving (e) the four categories and (f) the observed ranking
accuracy per step against the idealized R* of Cor 3.3 at the transformer's β (α = P(y_w ≻ y_l)).

    jaxalign reproduce ranking-accuracy --out results/ranking-accuracy
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxalign import kl, plotting
from jaxalign.experiment import Experiment, Result
from jaxalign.losses import pairwise as PW
from jaxalign.losses import ranking as RK
from jaxalign.testbed import Testbed, additive_reward

_CATEGORIES = (
    ("correct_to_correct", r"correct $\to$ correct", "C2"),
    ("correct_to_incorrect", r"correct $\to$ incorrect", "C3"),
    ("incorrect_to_correct", r"incorrect $\to$ correct", "C0"),
    ("incorrect_to_incorrect", r"incorrect $\to$ incorrect", "C1"),
)


@dataclasses.dataclass(frozen=True)
class Config:
    alphabet_size: int = 4  # tokens A
    response_length: int = 3  # L; A^L responses
    reward_scale: float = 1.0  # std of the gold per-position token rewards
    ref_scale: float = 2.0  # std of π_ref's logits (larger: larger |c|)
    seed: int = 0  # reward, π_ref, pairs and labels
    num_pairs: int = 1000  # training pairs (distinct responses, from π_ref)
    num_val_pairs: int = 500  # held-out pairs for the best-validation-loss step
    beta: float = 0.1  # β of panels (a), (b), (d)
    betas: tuple[float, ...] = (0.01, 0.1, 1.0, 5.0, 10.0)  # β of panel (c) (the paper's grid)
    gammas: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)  # γ-scaled DPO
    steps: int = 500  # full-batch Adam steps
    learning_rate: float = 0.05
    # Panels (e, f): a transformer trained by DPO on the engine, on its own small testbed.
    transformer: bool = True  # false: the tabular panels only
    transformer_alphabet_size: int = 3  # A of the transformer's testbed
    transformer_response_length: int = 2  # L of the transformer's testbed
    transformer_hidden_size: int = 32  # width of the one-layer transformer
    transformer_init_scale: float = 0.3  # initializer_range: larger, a more peaked π_ref
    transformer_beta: float = 0.1  # DPO's β
    transformer_batch_size: int = 512  # pairs from π_ref per engine step
    transformer_inner_steps: int = 5  # Adam steps per fit (warm-started)
    transformer_learning_rate: float = 2e-4  # small: the flips spread over the steps
    transformer_iterations: int = 20  # engine steps (fresh pairs each)

    def __post_init__(self):
        if self.num_pairs < 10 or self.num_val_pairs < 10:
            raise ValueError("num_pairs and num_val_pairs must be >= 10")
        if self.beta <= 0 or not self.betas or min(self.betas) <= 0:
            raise ValueError(f"betas must be > 0, got {self.beta}, {self.betas}")
        if not self.gammas or min(self.gammas) < 0:
            raise ValueError(f"gammas must be >= 0, got {self.gammas}")
        if self.steps < 1 or self.learning_rate <= 0:
            raise ValueError("need steps >= 1 and learning_rate > 0")
        if self.transformer_beta <= 0 or self.transformer_iterations < 1:
            raise ValueError(
                f"need transformer_beta > 0 and transformer_iterations >= 1, got "
                f"{self.transformer_beta}, {self.transformer_iterations}"
            )
        if self.transformer_hidden_size % 2:
            raise ValueError(
                f"transformer_hidden_size must be even, got {self.transformer_hidden_size}"
            )


def run(config: Config, track) -> Result:
    transformer = None
    if config.transformer:
        for _ in track([0], "transformer DPO run (engine)"):
            trained = _train_transformer(config)  # float32: the engine's own precision
        with jax.enable_x64(True):
            transformer = _score_transformer(config, trained)
    # optax's Adam mixes int and float (its step count), which strict promotion rejects.
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        return _run(config, track, transformer)


def _pairs(key, log_ref, r, num):
    """``num`` pairs of distinct responses from π_ref, labelled once by Bradley–Terry on r:
    (winner, loser) indices."""
    k_draw, k_label = jax.random.split(key)
    draw = np.asarray(jax.random.categorical(k_draw, log_ref, shape=(2, 4 * num + 64)))
    keep = draw[0] != draw[1]
    a, b = draw[0][keep][:num], draw[1][keep][:num]
    if a.shape[0] < num:
        raise ValueError("π_ref is too concentrated to draw enough distinct pairs")
    first = np.asarray(jax.random.uniform(k_label, (num,)) < jax.nn.sigmoid(r[a] - r[b]))
    return np.where(first, a, b), np.where(first, b, a)


@functools.partial(jax.jit, static_argnames=("steps", "lr"))
def _train(log_ref, w, l_, vw, vl, pref, beta, gamma, steps, lr):
    """Full-batch Adam on the γ-scaled DPO loss (γ = 1: DPO) of a tabular policy from π_ref.

    Returns per-step traces (categories [S, 4], train/val loss, KL, win rate) and final log π.
    """
    tx = optax.adam(lr)

    def loss_fn(theta, yw, yl):
        lp = jax.nn.log_softmax(theta)
        return RK.gamma_scaled_dpo_loss(
            lp[yw], lp[yl], log_ref[yw], log_ref[yl], beta=beta, gamma=gamma
        ).loss

    def step(carry, _):
        theta, opt = carry
        loss, g = jax.value_and_grad(lambda t: jnp.mean(loss_fn(t, w, l_)))(theta)
        upd, opt = tx.update(g, opt)
        theta = optax.apply_updates(theta, upd)
        lp = jax.nn.log_softmax(theta)
        cats = jnp.stack(RK.flip_categories(lp[w], lp[l_], log_ref[w], log_ref[l_]))
        val = jnp.mean(PW.dpo_loss(lp[vw], lp[vl], log_ref[vw], log_ref[vl], beta=beta).loss)
        win = jnp.exp(lp) @ pref @ jnp.exp(log_ref)
        trace = dict(
            cats=cats,
            loss=loss,
            val=val,
            kl=kl.kl_divergence(lp, log_ref),
            win=win,
            acc=RK.ranking_accuracy(lp[w], lp[l_]),
        )
        return (theta, opt), trace

    theta0 = log_ref
    (theta, _), traces = jax.lax.scan(step, (theta0, tx.init(theta0)), None, length=steps)
    return traces, jax.nn.log_softmax(theta)


def _run(config: Config, track, transformer) -> Result:
    testbed = Testbed(config.alphabet_size, config.response_length)
    k_r, k_ref, k_pairs, k_val = jax.random.split(jax.random.key(config.seed), 4)
    shape = (config.response_length, config.alphabet_size)
    r = additive_reward(testbed, jax.random.normal(k_r, shape, jnp.float64) * config.reward_scale)
    log_ref = jax.nn.log_softmax(
        jax.random.normal(k_ref, (testbed.num_responses,), jnp.float64) * config.ref_scale
    )
    pref = jax.nn.sigmoid(r[:, None] - r[None, :])
    w, l_ = _pairs(k_pairs, log_ref, r, config.num_pairs)
    vw, vl = _pairs(k_val, log_ref, r, config.num_val_pairs)
    c = np.asarray(log_ref[l_] - log_ref[w])
    alpha = jax.nn.sigmoid(r[w] - r[l_])  # fraction of (BT) raters preferring the winner
    train = functools.partial(
        _train, log_ref, w, l_, vw, vl, pref, steps=config.steps, lr=config.learning_rate
    )

    # (a), (b): DPO at β.
    traces, lp = train(jnp.asarray(config.beta), jnp.asarray(1.0))
    cats = np.asarray(traces["cats"])
    best = int(np.argmin(np.asarray(traces["val"])))
    final_loss = np.asarray(
        PW.dpo_loss(lp[w], lp[l_], log_ref[w], log_ref[l_], beta=config.beta).loss
    )
    correct = np.asarray(RK.ranked_correctly(lp[w], lp[l_])).astype(bool)
    cond = np.asarray(
        RK.dpo_flip_condition(lp[w], lp[l_], log_ref[w], log_ref[l_], beta=config.beta)
    ).astype(bool)
    ref_incorrect = float(np.mean(c > 0))

    # (c): observed vs idealized accuracy per β.
    per_beta = {}
    for beta in track(config.betas, "DPO per beta"):
        tr, _ = train(jnp.asarray(beta), jnp.asarray(1.0))
        b_best = int(np.argmin(np.asarray(tr["val"])))
        per_beta[beta] = {
            "observed_final": float(tr["acc"][-1]),
            "observed_best_val": float(tr["acc"][b_best]),
            "idealized": float(
                RK.idealized_ranking_accuracy(log_ref[w], log_ref[l_], alpha, beta=beta)
            ),
        }
    reference_acc = float(RK.ranking_accuracy(log_ref[w], log_ref[l_]))

    # (d): γ-scaled DPO.
    per_gamma = {}
    for gamma in track(config.gammas, "gamma-scaled DPO"):
        tr, _ = train(jnp.asarray(config.beta), jnp.asarray(gamma))
        per_gamma[gamma] = {
            "accuracy": float(tr["acc"][-1]),
            "win_rate": float(tr["win"][-1]),
            "kl": float(tr["kl"][-1]),
        }

    rows = []
    for s in range(config.steps):
        rows.append(
            {
                "series": "categories",
                "step": s + 1,
                **{name: float(cats[s, i]) for i, (name, _, _) in enumerate(_CATEGORIES)},
                "train_loss": float(traces["loss"][s]),
                "val_loss": float(traces["val"][s]),
                "win_rate": float(traces["win"][s]),
                "kl": float(traces["kl"][s]),
            }
        )
    for i in range(config.num_pairs):
        rows.append(
            {
                "series": "pair",
                "c": float(c[i]),
                "final_loss": float(final_loss[i]),
                "correct": int(correct[i]),
            }
        )

    # ------------------------------------------------------------------ figure
    fig, flat = plotting.figure(
        2 if transformer is None else 3,
        2,
        panel_size=(6.5, 4.6),
        suptitle=(
            f"Ranking accuracy of DPO on the testbed ({testbed.num_responses} responses, "
            f"{config.num_pairs} pairs from $\\pi_{{\\rm ref}}$): (a–d) tabular policy"
            + ("" if transformer is None else ", (e, f) a transformer trained by the engine")
        ),
    )
    axes = np.asarray(flat, dtype=object).reshape(-1, 2)
    ax = axes[0, 0]
    steps = np.arange(1, config.steps + 1)
    for i, (_, label, color) in enumerate(_CATEGORIES):
        ax.plot(steps, cats[:, i], color=color, label=label)
    ax.axvline(best + 1, color="k", ls=":", lw=1, label="best held-out loss")
    ax.set_xlabel("DPO step (full-batch Adam)")
    ax.set_ylabel("fraction of training pairs")
    ax.set_title(rf"(a) reference ranking $\to$ policy ranking, $\beta={config.beta:g}$")
    ax.legend(fontsize=8, loc="center right")
    ax.grid(alpha=0.3)

    ax = axes[0, 1]
    cs = np.linspace(c.min() - 0.5, c.max() + 0.5, 400)
    ax.semilogy(c[correct], final_loss[correct], ".", color="C2", ms=3, label="ranked correctly")
    ax.semilogy(
        c[~correct], final_loss[~correct], ".", color="C3", ms=3, label="ranked incorrectly"
    )
    ax.semilogy(
        cs,
        np.asarray(RK.flip_threshold(jnp.asarray(cs), beta=config.beta)),
        "k--",
        label=r"$-\log\sigma(\beta c)$",
    )
    ax.set_xlabel(r"$c = \log \pi_{\rm ref}(y_l) / \pi_{\rm ref}(y_w)$  [nats]")
    ax.set_ylabel("final per-pair DPO loss")
    ax.set_title("(b) correct iff the loss is on or below the curve")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3, which="both")

    ax = axes[1, 0]
    bs = list(config.betas)
    ax.semilogx(
        bs,
        [per_beta[b]["idealized"] for b in bs],
        "o-",
        color="k",
        label=r"idealized $R^*$ (Cor 3.3)",
    )
    ax.semilogx(
        bs,
        [per_beta[b]["observed_final"] for b in bs],
        "s-",
        color="C0",
        label=f"DPO, after {config.steps} steps",
    )
    ax.semilogx(
        bs,
        [per_beta[b]["observed_best_val"] for b in bs],
        "^--",
        color="C1",
        label="DPO, at best held-out loss",
    )
    ax.axhline(reference_acc, color="grey", ls=":", label=r"$\pi_{\rm ref}$")
    ax.set_xlabel(r"$\beta$")
    ax.set_ylabel("ranking accuracy on training pairs")
    ax.set_title("(c) observed vs idealized ranking accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3, which="both")

    ax = axes[1, 1]
    gs = list(config.gammas)
    ax.plot(gs, [per_gamma[g]["accuracy"] for g in gs], "o-", color="C0", label="ranking accuracy")
    ax.plot(
        gs,
        [per_gamma[g]["win_rate"] for g in gs],
        "s-",
        color="C1",
        label=r"win rate vs $\pi_{\rm ref}$ (exact)",
    )
    ax.set_xlabel(r"$\gamma$ (weight of the reference term; $\gamma = 1$ is DPO)")
    ax.set_ylabel("after training")
    ax.set_title(rf"(d) $\gamma$-scaled DPO, $\beta={config.beta:g}$")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    if transformer is not None:
        _transformer_panels(config, axes[2], transformer)

    initially_wrong = cats[0, 2] + cats[0, 3]  # after step 1 the reference ranks are intact
    cats_ref = np.asarray(RK.flip_categories(log_ref[w], log_ref[l_], log_ref[w], log_ref[l_]))
    wrong0 = float(cats_ref[2] + cats_ref[3])
    summary = {
        "reference_accuracy": reference_acc,
        "fraction_reference_incorrect": ref_incorrect,
        "c_range": [float(c.min()), float(c.max())],
        "best_val_step": best + 1,
        "categories_at_best_val": {
            n: float(cats[best, i]) for i, (n, _, _) in enumerate(_CATEGORIES)
        },
        "categories_final": {n: float(cats[-1, i]) for i, (n, _, _) in enumerate(_CATEGORIES)},
        # Of the pairs the reference ranks incorrectly, the fraction DPO has flipped.
        "flipped_fraction_at_best_val": float(cats[best, 2] / wrong0) if wrong0 else None,
        "flipped_fraction_final": float(cats[-1, 2] / wrong0) if wrong0 else None,
        "accuracy_after_step_1_minus_reference": float(1 - initially_wrong - reference_acc),
        "flip_condition_matches_ranking": bool(np.all(cond == correct)),
        "per_beta": {f"{b:g}": v for b, v in per_beta.items()},
        "per_gamma": {f"{g:g}": v for g, v in per_gamma.items()},
        "final_kl": float(traces["kl"][-1]),
        "final_win_rate": float(traces["win"][-1]),
    }
    if transformer is not None:
        summary["transformer"] = transformer["summary"]
        for t, (cats_t, kl_t) in enumerate(zip(transformer["categories"], transformer["kl"])):
            rows.append(
                {
                    "series": "transformer",
                    "step": t,
                    **{name: float(cats_t[i]) for i, (name, _, _) in enumerate(_CATEGORIES)},
                    "kl": float(kl_t),
                }
            )
    return Result(figure=fig, table=rows, summary=summary)


# ---------------------------------------------------------------------------------------------
# Panels (e, f): a transformer trained by DPO on the training engine, scored every step.


def _engine_config(config: Config, out_dir):
    """The engine config of the transformer's DPO run (light: no checkpoints, TensorBoard or
    saved model)."""
    from jaxalign.train import testbed_run_config

    return testbed_run_config(
        {"name": "dpo", "beta": config.transformer_beta},
        alphabet_size=config.transformer_alphabet_size,
        response_length=config.transformer_response_length,
        hidden_size=config.transformer_hidden_size, num_kv_heads=2,
        init_scale=config.transformer_init_scale, steps=config.transformer_iterations,
        seed=config.seed, out_dir=out_dir,
        online={"batch_size": config.transformer_batch_size,
                "inner_steps": config.transformer_inner_steps,
                "learning_rate": config.transformer_learning_rate},
        testbed={"enabled": True, "preference": "bradley_terry",
                 "reward_scale": config.reward_scale, "seed": config.seed},
        oracle={"sample": True},
        logging={"kl_ref": False},
    )  # fmt: skip


def _train_transformer(config: Config) -> dict:
    """One engine run of DPO on the testbed; its exact log π_t of every step, π_ref, P."""
    import tempfile
    from pathlib import Path

    from jaxalign.train import train

    with tempfile.TemporaryDirectory(prefix="ranking-accuracy-") as tmp:
        result = train(_engine_config(config, Path(tmp) / "dpo"), quiet=True)
    task = result.task
    return dict(
        log_policies=np.asarray(task.exact_history.history().log_policies, np.float64),
        log_ref=np.asarray(task.log_ref, np.float64),
        p=np.asarray(task.setup.game.preference, np.float64),
    )


def _score_transformer(config: Config, trained: dict) -> dict:
    """Exact population flip categories per step, over the training-pair distribution:
    ordered pairs (y_w, y_l), y_w ≠ y_l, with weight π_ref(y_w) π_ref(y_l) P(y_w ≻ y_l)
    (both responses from π_ref, the winner by the Bradley–Terry label)."""
    log_ref = jax.nn.log_softmax(jnp.asarray(trained["log_ref"]))
    log_pis = jax.nn.log_softmax(jnp.asarray(trained["log_policies"]), axis=-1)
    p = jnp.asarray(trained["p"])
    n = log_ref.shape[0]
    iw, il = np.nonzero(~np.eye(n, dtype=bool))
    weight = jnp.exp(log_ref[iw] + log_ref[il]) * p[iw, il]
    weight = weight / jnp.sum(weight)
    before = RK.ranked_correctly(log_ref[iw], log_ref[il])

    def categories(lp):
        now = RK.ranked_correctly(lp[iw], lp[il])
        return jnp.stack(
            [
                jnp.sum(weight * before * now),
                jnp.sum(weight * before * (1 - now)),
                jnp.sum(weight * (1 - before) * now),
                jnp.sum(weight * (1 - before) * (1 - now)),
            ]
        )

    cats = np.asarray(jax.vmap(categories)(log_pis))  # [T + 1, 4]
    alpha = jnp.clip(p[iw, il], RK.ALPHA_CLIP, 1 - RK.ALPHA_CLIP)
    ideal = RK.optimal_log_ratio(log_ref[iw], log_ref[il], alpha, beta=config.transformer_beta)
    kls = np.asarray(jax.vmap(lambda lp: kl.kl_divergence(lp, log_ref))(log_pis))
    wrong0 = float(cats[0, 2] + cats[0, 3])
    return dict(
        categories=cats,
        kl=kls,
        summary={
            "num_responses": int(n),
            "reference_accuracy": float(cats[0, 0] + cats[0, 1]),
            "accuracy_final": float(cats[-1, 0] + cats[-1, 2]),
            "idealized_accuracy": float(jnp.sum(weight * (ideal > 0).astype(weight.dtype))),
            "categories_final": {
                name: float(cats[-1, i]) for i, (name, _, _) in enumerate(_CATEGORIES)
            },
            "flipped_fraction_final": float(cats[-1, 2] / wrong0) if wrong0 else None,
            "final_kl": float(kls[-1]),
        },
    )


def _transformer_panels(config: Config, axes, transformer: dict) -> None:
    """(e) the four categories and (f) ranking accuracy vs the engine step."""
    cats, s = transformer["categories"], transformer["summary"]
    steps = np.arange(cats.shape[0])
    ax_e, ax_f = axes
    for i, (_, label, color) in enumerate(_CATEGORIES):
        ax_e.plot(steps, cats[:, i], "-o", ms=3, color=color, label=label)
    ax_e.set_xlabel(
        f"engine step ({config.transformer_batch_size} fresh pairs from $\\pi_{{\\rm ref}}$ each)"
    )
    ax_e.set_ylabel("fraction of training pairs (exact)")
    ax_e.set_title(
        f"(e) transformer ({s['num_responses']} responses), DPO "
        f"$\\beta={config.transformer_beta:g}$: categories",
        fontsize=10,
    )
    ax_e.set_ylim(-0.02, 1.02)
    plotting.legend(ax_e, fontsize=8, outside=True)
    ax_e.grid(alpha=0.3)
    ax_f.plot(steps, cats[:, 0] + cats[:, 2], "-o", ms=3, color="C0", label="observed (exact)")
    plotting.reference_line(ax_f, y=s["idealized_accuracy"], horizontal=True,
                            label=r"idealized $R^*$ (Cor 3.3)")  # fmt: skip
    plotting.reference_line(ax_f, y=s["reference_accuracy"], horizontal=True, ls=":",
                            label=r"$\pi_{\rm ref}$")  # fmt: skip
    ax_f.set_xlabel("engine step")
    ax_f.set_ylabel("ranking accuracy on training pairs")
    ax_f.set_title("(f) transformer: observed vs idealized ranking accuracy", fontsize=10)
    ax_f.set_ylim(0, 1.05)
    plotting.legend(ax_f, fontsize=8, outside=True)
    ax_f.grid(alpha=0.3)


EXPERIMENT = Experiment(
    name="ranking-accuracy",
    description=(
        "DPO's ranking accuracy on the testbed: flip categories, the −log σ(βc) threshold, "
        "idealized R*, γ-scaled DPO, and a transformer trained by DPO on the engine "
        "(Chen et al. 2024)"
    ),
    config_cls=Config,
    run=run,
    headline=(
        "reference_accuracy",
        "flip_condition_matches_ranking",
        "flipped_fraction_final",
        "transformer.reference_accuracy",
        "transformer.accuracy_final",
        "transformer.idealized_accuracy",
        "transformer.flipped_fraction_final",
    ),
)


def main(argv=None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
