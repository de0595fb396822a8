"""LLM-form alignment algorithms against the exact reward–KL frontier.

A tiny causal transformer is the reference policy on the enumerable testbed (A tokens,
L positions, A^L responses) and the reward is additive over positions. Three LLM-form
algorithms are run on it:

(1) KL-regularised policy gradient (``kl_regularized_pg_loss``: RLOO baseline, k2 KL term
    in the loss) on groups sampled with the model's KV-cache ``generate``, a fixed number
    of Adam steps per β;
(2) DPO trained offline on pairs sampled from π_ref and labelled by Bradley–Terry on the
    reward, per β;
(3) best-of-N, exact (``kl.best_of_n_policy`` on the reference model's enumerated
    distribution), N = 1 … N_max.

Every trained policy is then scored EXACTLY (``policy_log_probs`` over all A^L
responses, in float64): reward E_π r and KL(π‖π_ref), and compared with the exact
KL-constrained RL frontier Δ ↦ max_{KL ≤ Δ} E r (``kl.reward_kl_frontier``) of the same
reference distribution and reward. No policy can lie above the frontier; the summary
reports the largest excess of any point over the frontier at its own KL.

    jaxalign reproduce llm-kl-frontier --out results/llm-kl-frontier
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxalign import kl
from jaxalign.data.testbed import Testbed, additive_reward, policy_log_probs
from jaxalign.experiment import Experiment, Result
from jaxalign.losses import dpo_loss, kl_regularized_pg_loss
from jaxalign.models import CausalLM, ModelConfig, generate, sequence_logprobs, token_logprobs


@dataclasses.dataclass(frozen=True)
class Config:
    alphabet_size: int = 4  # tokens A (= model vocabulary)
    response_length: int = 3  # L; A^L responses are enumerated
    reward_scale: float = 1.0  # std of the per-position token rewards R[i, a]
    hidden_size: int = 32  # model width
    num_layers: int = 2  # model depth
    init_scale: float = 0.5  # weight std of the (random) reference model
    seed: int = 0
    pg_betas: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # KL coefficients of KL-PG
    pg_steps: int = 500  # Adam steps per β
    pg_group_size: int = 32  # responses sampled per step (one prompt, RLOO group)
    pg_learning_rate: float = 0.01
    dpo_betas: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # DPO β
    dpo_pairs: int = 4096  # offline pairs sampled from π_ref
    dpo_steps: int = 100  # full-batch Adam steps per β
    dpo_learning_rate: float = 0.01
    bon_max_n: int = 64  # best-of-N for N = 1 … bon_max_n
    frontier_points: int = 60  # budgets on the plotted frontier

    def __post_init__(self):
        if min(self.pg_betas, default=1.0) <= 0 or min(self.dpo_betas, default=1.0) <= 0:
            raise ValueError(f"betas must be > 0, got {self.pg_betas} and {self.dpo_betas}")
        if self.pg_group_size < 2:
            raise ValueError(f"pg_group_size must be >= 2 (RLOO), got {self.pg_group_size}")
        if self.bon_max_n < 1 or self.dpo_pairs < 1 or self.frontier_points < 2:
            raise ValueError("need bon_max_n >= 1, dpo_pairs >= 1 and frontier_points >= 2")


def _model_config(config: Config) -> ModelConfig:
    return ModelConfig(
        vocab_size=config.alphabet_size,
        hidden_size=config.hidden_size,
        intermediate_size=2 * config.hidden_size,
        num_layers=config.num_layers,
        num_heads=2,
        num_kv_heads=1,
        head_dim=config.hidden_size // 2,
        initializer_range=config.init_scale,
    )


def _full_sequences(testbed: Testbed, responses):
    """Prompt + responses and the response mask, ``[b, P + L]``."""
    return testbed.sequences(responses)


@functools.partial(jax.jit, static_argnames=("graphdef", "testbed", "steps", "group", "lr"))
def _train_pg(graphdef, ref_params, reward, beta, key, *, testbed, steps, group, lr):
    """``steps`` Adam steps of KL-regularised REINFORCE (RLOO, k2) from π_ref."""
    opt = optax.adam(lr)
    prompts = jnp.broadcast_to(jnp.asarray(testbed.prompt, jnp.int32), (group, len(testbed.prompt)))

    def loss_fn(params, tokens, mask, rewards):
        logp = token_logprobs(nnx.merge(graphdef, params)(tokens), tokens)
        ref_logp = token_logprobs(nnx.merge(graphdef, ref_params)(tokens), tokens)
        out = kl_regularized_pg_loss(
            logp, ref_logp, mask, rewards, beta=beta, group_size=group,
            baseline="leave_one_out", estimator="k2", kl_mode="loss",
        )  # fmt: skip
        return out.loss

    def step(carry, k):
        params, opt_state = carry
        gen = generate(
            nnx.merge(graphdef, params), prompts, key=k, max_new_tokens=testbed.response_length
        )
        tokens, mask = _full_sequences(testbed, gen.tokens)
        rewards = reward[testbed.index_of(gen.tokens)]
        grads = jax.grad(loss_fn)(params, tokens, mask.astype(jnp.float32), rewards)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(
        step, (ref_params, opt.init(ref_params)), jax.random.split(key, steps)
    )
    return params


@functools.partial(jax.jit, static_argnames=("graphdef", "steps", "lr"))
def _train_dpo(graphdef, ref_params, chosen, rejected, beta, *, steps, lr):
    """``steps`` full-batch Adam steps of DPO on fixed (chosen, rejected) sequences."""
    tokens_c, mask_c = chosen
    tokens_r, mask_r = rejected
    ref = nnx.merge(graphdef, ref_params)
    ref_c = sequence_logprobs(ref, tokens_c, mask_c).sequence
    ref_r = sequence_logprobs(ref, tokens_r, mask_r).sequence
    opt = optax.adam(lr)

    def loss_fn(params):
        model = nnx.merge(graphdef, params)
        pc = sequence_logprobs(model, tokens_c, mask_c).sequence
        pr = sequence_logprobs(model, tokens_r, mask_r).sequence
        return jnp.mean(dpo_loss(pc, pr, ref_c, ref_r, beta=beta).loss)

    def step(carry, _):
        params, opt_state = carry
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (ref_params, opt.init(ref_params)), None, length=steps)
    return params


def run(config: Config, track) -> Result:
    import matplotlib.pyplot as plt

    testbed = Testbed(config.alphabet_size, config.response_length)
    key_model, key_reward, key_pg, key_pairs, key_labels = jax.random.split(
        jax.random.key(config.seed), 5
    )
    ref_model = CausalLM.create(_model_config(config), key=key_model)
    graphdef, ref_params = nnx.split(ref_model)
    token_rewards = jax.random.normal(
        key_reward, (config.response_length, config.alphabet_size), jnp.float32
    ) * jnp.asarray(config.reward_scale, jnp.float32)
    reward32 = additive_reward(testbed, token_rewards)
    log_ref32 = jax.jit(policy_log_probs, static_argnums=1)(ref_model, testbed)

    def exact(log_pi32):
        """(reward, KL) of an enumerated policy, in float64, renormalised."""
        with jax.enable_x64(True):
            lp = jax.nn.log_softmax(jnp.asarray(np.asarray(log_pi32), jnp.float64))
            lr = jax.nn.log_softmax(jnp.asarray(np.asarray(log_ref32), jnp.float64))
            r = jnp.asarray(np.asarray(reward32), jnp.float64)
            return float(kl.expected_reward(lp, r)), float(kl.kl_divergence(lp, lr))

    points = []  # (method, parameter, reward, kl)
    for beta in track(config.pg_betas, "KL-PG betas"):
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int and float
            params = _train_pg(
                graphdef, ref_params, reward32, jnp.asarray(beta, jnp.float32),
                jax.random.fold_in(key_pg, len(points)), testbed=testbed, steps=config.pg_steps,
                group=config.pg_group_size, lr=config.pg_learning_rate,
            )  # fmt: skip
        log_pi = policy_log_probs(nnx.merge(graphdef, params), testbed)
        points.append(("kl-pg", float(beta), *exact(log_pi)))

    # Offline preference data: pairs from π_ref (KV-cache sampler), Bradley–Terry labels.
    gen = generate(
        ref_model,
        jnp.broadcast_to(
            jnp.asarray(testbed.prompt, jnp.int32), (2 * config.dpo_pairs, len(testbed.prompt))
        ),
        key=key_pairs,
        max_new_tokens=config.response_length,
    )
    y1, y2 = gen.tokens[: config.dpo_pairs], gen.tokens[config.dpo_pairs :]
    r1, r2 = reward32[testbed.index_of(y1)], reward32[testbed.index_of(y2)]
    first_wins = jax.random.uniform(key_labels, r1.shape) < jax.nn.sigmoid(r1 - r2)
    chosen = jnp.where(first_wins[:, None], y1, y2)
    rejected = jnp.where(first_wins[:, None], y2, y1)
    pairs = (_full_sequences(testbed, chosen), _full_sequences(testbed, rejected))
    for beta in track(config.dpo_betas, "DPO betas"):
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int and float
            params = _train_dpo(
                graphdef, ref_params, *pairs, jnp.asarray(beta, jnp.float32),
                steps=config.dpo_steps, lr=config.dpo_learning_rate,
            )  # fmt: skip
        log_pi = policy_log_probs(nnx.merge(graphdef, params), testbed)
        points.append(("dpo", float(beta), *exact(log_pi)))

    with jax.enable_x64(True):
        lr64 = jax.nn.log_softmax(jnp.asarray(np.asarray(log_ref32), jnp.float64))
        r64 = jnp.asarray(np.asarray(reward32), jnp.float64)
        for n in range(1, config.bon_max_n + 1):
            lp = kl.best_of_n_policy(lr64, r64, jnp.asarray(float(n), jnp.float64))
            points.append(
                (
                    "best-of-n",
                    float(n),
                    float(kl.expected_reward(lp, r64)),
                    float(kl.kl_divergence(lp, lr64)),
                )
            )
        kl_max = float(kl.max_kl(lr64, r64))
        budgets = np.concatenate([[0.0], np.geomspace(1e-3, kl_max, config.frontier_points - 1)])
        front = kl.reward_kl_frontier(lr64, r64, jnp.asarray(budgets, jnp.float64))
        front_r, front_kl = np.asarray(front.reward), np.asarray(front.kl)
        # The frontier at each point's own KL (clipped to the frontier's range).
        at_kl = np.asarray([p[3] for p in points])
        on_front = kl.reward_kl_frontier(
            lr64, r64, jnp.asarray(np.clip(at_kl, 0.0, kl_max), jnp.float64)
        )
        frontier_at = np.asarray(on_front.reward)
        # The KL-regularised optimum π_ref e^{r/β} each KL-PG / DPO run targets.
        targets = {}
        for beta in sorted(set(config.pg_betas) | set(config.dpo_betas)):
            lp = kl.tilted_policy(lr64, r64, jnp.asarray(beta, jnp.float64))
            targets[beta] = (float(kl.expected_reward(lp, r64)), float(kl.kl_divergence(lp, lr64)))
        ref_reward = float(kl.expected_reward(lr64, r64))
        best_reward = float(jnp.max(r64))

    rows = []
    for (method, param, rew, d), f in zip(points, frontier_at, strict=True):
        rows.append({"method": method, "parameter": param, "reward": rew, "kl": d,
                     "frontier_reward": float(f), "excess": rew - float(f)})  # fmt: skip

    def of(method):
        sel = [r for r in rows if r["method"] == method]
        return sel, np.asarray([r["kl"] for r in sel]), np.asarray([r["reward"] for r in sel])

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    styles = {"kl-pg": ("o", "C0", "KL-reg. policy gradient (RLOO)"),
              "dpo": ("s", "C1", "DPO (offline BT pairs)"),
              "best-of-n": (".", "C2", "best-of-N (exact)")}  # fmt: skip
    for ax, log_x in zip(axes, (False, True), strict=True):
        ax.plot(front_kl, front_r, "k-", lw=1.5, label="exact KL-RL frontier")
        for method, (marker, color, label) in styles.items():
            sel, x, y = of(method)
            if log_x:  # KL = 0 (N = 1) has no place on a log axis
                x, y = x[x > 0], y[x > 0]
            ax.plot(x, y, marker=marker, color=color, ls="-" if method == "best-of-n" else "",
                    label=label, ms=4 if method == "best-of-n" else 7)  # fmt: skip
            if method != "best-of-n" and not log_x:
                for r in sel:
                    ax.annotate(
                        f"β={r['parameter']:g}", (r["kl"], r["reward"]), fontsize=7,
                        xytext=(4, -9), textcoords="offset points", color=color,
                    )  # fmt: skip
        tk = np.asarray([targets[b][1] for b in config.pg_betas])
        tr = np.asarray([targets[b][0] for b in config.pg_betas])
        ax.plot(tk, tr, "o", mfc="none", mec="C0", ms=10, label="KL-PG target π_ref e^{r/β}")
        ax.plot([0.0], [ref_reward], "k*", ms=9, label="π_ref")
        ax.axhline(best_reward, color="grey", ls=":", lw=1, label="max reward")
        ax.set_xlabel("KL(π ‖ π_ref)  [nats]")
        ax.set_ylabel("E_π[r]")
        ax.grid(alpha=0.3, which="both")
        if log_x:
            ax.set_xscale("log")
            ax.set_xlim(left=1e-3)
            ax.set_title("(b) same, log KL axis")
        else:
            ax.set_title("(a) reward vs KL, all evaluated exactly")
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"LLM-form alignment vs the exact reward–KL frontier (testbed A={config.alphabet_size}, "
        f"L={config.response_length}, {testbed.num_responses} responses)"
    )
    fig.tight_layout()

    def gap_to_front(method):
        sel, _, _ = of(method)
        return float(max(r["frontier_reward"] - r["reward"] for r in sel)) if sel else None

    pg = sorted(of("kl-pg")[0], key=lambda r: r["parameter"])
    summary = {
        "reference_reward": ref_reward,
        "max_reward": best_reward,
        "max_kl": kl_max,
        "max_excess_over_frontier": float(max(r["excess"] for r in rows)),
        "max_gap_below_frontier": {m: gap_to_front(m) for m in styles},
        # [parameter (β or N), reward, KL]; best-of-N at N = 1, 2, 4, … only.
        "points": {
            m: [
                [r["parameter"], r["reward"], r["kl"]]
                for r in of(m)[0]
                if m != "best-of-n" or int(r["parameter"]) & (int(r["parameter"]) - 1) == 0
            ]
            for m in styles
        },
        # β → (reward, KL) of the exact optimum π_ref e^{r/β} (on the frontier).
        "tilt_targets": {f"{b:g}": list(v) for b, v in targets.items()},
        # True when KL-PG's reward grows as β shrinks (pg sorted by increasing β), up to
        # 1e-3 where small βs all saturate at the best response.
        "pg_reward_decreasing_in_beta": bool(
            all(a["reward"] >= b["reward"] - 1e-3 for a, b in itertools.pairwise(pg))
        ),
    }
    return Result(figure=fig, table=rows, summary=summary)


EXPERIMENT = Experiment(
    name="llm-kl-frontier",
    description="KL-PG, DPO and best-of-N on a transformer vs the exact reward-KL frontier",
    config_cls=Config,
    run=run,
)


def main(argv=None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
