"""Multi-objective DPO on a transformer vs the exact KL-regularised Pareto front.

Two conflicting additive rewards r1, r2 on the enumerable testbed (A tokens, L
positions). For each reward an offline preference dataset is built from pairs sampled
from the reference transformer π_ref and labelled by Bradley–Terry on that reward. A
copy of π_ref is then trained with :func:`jaxalign.train.multiobjective.multiobjective_dpo_step`
(both DPO losses, per-objective gradients combined inside one jitted step) with each
aggregator — weighted sum and RACO for several user weights w, MGDA and CAGrad (weight
free) — and each trained policy's expected rewards (E_π r1, E_π r2) are computed EXACTLY
over all A^L responses. They are drawn against the exact front of the KL-regularised
scalarised objectives: for a grid of w, the tilt π_ref·exp((w r1 + (1−w) r2)/β), the
optimum weighted-sum DPO targets.

    jaxalign reproduce llm-multiobjective --out results/llm-multiobjective
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
from jaxalign.models import CausalLM, ModelConfig, generate
from jaxalign.train.multiobjective import (
    PreferenceBatches,
    multiobjective_dpo_step,
    reference_logprobs,
)

_WEIGHTED = ("weighted_sum", "raco")  # aggregators that use the user weights


@dataclasses.dataclass(frozen=True)
class Config:
    alphabet_size: int = 4  # tokens A (= model vocabulary)
    response_length: int = 3  # L
    conflict: float = 0.5  # r2's token rewards = −conflict·R1 + sqrt(1−conflict²)·noise
    hidden_size: int = 32
    num_layers: int = 2
    init_scale: float = 0.5
    seed: int = 2
    beta: float = 0.5  # DPO β (and the β of the exact front)
    pairs: int = 2048  # offline pairs per objective, sampled from π_ref
    steps: int = 150  # full-batch Adam steps per run
    learning_rate: float = 0.03
    aggregators: tuple[str, ...] = ("weighted_sum", "mgda", "cagrad", "raco")
    weights: tuple[float, ...] = (0.2, 0.5, 0.8)  # w on objective 1 (1 − w on objective 2)
    c: float = 0.5  # CAGrad / RACO radius
    front_points: int = 41

    def __post_init__(self):
        if not self.beta > 0 or not 0 <= self.conflict <= 1:
            raise ValueError(f"need beta > 0 and 0 <= conflict <= 1, got {self}")
        if any(not 0 <= w <= 1 for w in self.weights) or self.front_points < 2:
            raise ValueError("weights must lie in [0, 1] and front_points >= 2")


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


@functools.partial(jax.jit, static_argnames=("graphdef", "aggregator", "c", "steps", "lr"))
def _train(graphdef, ref_params, batches, beta, weights, *, aggregator, c, steps, lr):
    tx = optax.adam(lr)
    step = functools.partial(
        multiobjective_dpo_step, graphdef=graphdef, tx=tx, beta=beta,
        aggregator=aggregator, weights=weights, c=c,
    )  # fmt: skip

    def body(carry, _):
        params, opt_state, metrics = step(*carry, batches)
        return (params, opt_state), metrics

    (params, _), metrics = jax.lax.scan(body, (ref_params, tx.init(ref_params)), None, length=steps)
    return params, jax.tree.map(lambda x: x[-1], metrics)


def run(config: Config, track) -> Result:
    import matplotlib.pyplot as plt

    testbed = Testbed(config.alphabet_size, config.response_length)
    k_model, k_r1, k_r2, k_pairs, k_labels = jax.random.split(jax.random.key(config.seed), 5)
    ref_model = CausalLM.create(_model_config(config), key=k_model)
    graphdef, ref_params = nnx.split(ref_model)
    shape = (config.response_length, config.alphabet_size)
    t1 = jax.random.normal(k_r1, shape, jnp.float32)
    a = jnp.asarray(config.conflict, jnp.float32)
    t2 = -a * t1 + jnp.sqrt(1 - a * a) * jax.random.normal(k_r2, shape, jnp.float32)
    rewards = jnp.stack([additive_reward(testbed, t1), additive_reward(testbed, t2)])  # [2, n]

    # Offline BT preference data, one dataset per objective, pairs sampled from π_ref.
    n = config.pairs
    prompts = jnp.broadcast_to(jnp.asarray(testbed.prompt, jnp.int32), (4 * n, len(testbed.prompt)))
    ys = generate(ref_model, prompts, key=k_pairs, max_new_tokens=config.response_length).tokens
    ys = ys.reshape(2, 2, n, config.response_length)  # [objective, first/second, n, L]
    ct, cm, rt, rm = [], [], [], []
    for obj in range(2):
        y1, y2 = ys[obj, 0], ys[obj, 1]
        r = rewards[obj]
        first = jax.random.uniform(jax.random.fold_in(k_labels, obj), (n,)) < jax.nn.sigmoid(
            r[testbed.index_of(y1)] - r[testbed.index_of(y2)]
        )
        tc, mc = testbed.sequences(jnp.where(first[:, None], y1, y2))
        tr, mr = testbed.sequences(jnp.where(first[:, None], y2, y1))
        ct, cm, rt, rm = [*ct, tc], [*cm, mc], [*rt, tr], [*rm, mr]
    ct, cm, rt, rm = (jnp.stack(x) for x in (ct, cm, rt, rm))
    batches = PreferenceBatches(ct, cm, rt, rm, *reference_logprobs(ref_model, ct, cm, rt, rm))

    log_ref32 = policy_log_probs(ref_model, testbed)
    with jax.enable_x64(True):
        lr64 = jax.nn.log_softmax(jnp.asarray(np.asarray(log_ref32), jnp.float64))
        r64 = jnp.asarray(np.asarray(rewards), jnp.float64)

        def exact(log_pi):
            lp = jax.nn.log_softmax(jnp.asarray(np.asarray(log_pi), jnp.float64))
            return [float(kl.expected_reward(lp, r64[i])) for i in range(2)] + [
                float(kl.kl_divergence(lp, lr64))
            ]

        def tilt(w):
            r = w * r64[0] + (1 - w) * r64[1]
            return exact(kl.tilted_policy(lr64, r, jnp.asarray(config.beta, jnp.float64)))

        front = np.asarray([tilt(w) for w in np.linspace(0.0, 1.0, config.front_points)])
        targets = {w: tilt(w) for w in config.weights}
        ref_point = exact(log_ref32)

    runs = [(agg, w) for agg in config.aggregators
            for w in (config.weights if agg in _WEIGHTED else (None,))]  # fmt: skip
    rows = []
    for agg, w in track(runs, "multi-objective DPO runs"):
        wv = jnp.asarray([0.5 if w is None else w, 0.5 if w is None else 1 - w], jnp.float32)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int and float
            params, metrics = _train(
                graphdef, ref_params, batches, jnp.asarray(config.beta, jnp.float32), wv,
                aggregator=agg, c=float(config.c), steps=config.steps, lr=config.learning_rate,
            )  # fmt: skip
        log_pi = policy_log_probs(nnx.merge(graphdef, params), testbed)
        with jax.enable_x64(True):
            e1, e2, d = exact(log_pi)
        row = {"aggregator": agg, "weight": float("nan") if w is None else float(w),
               "reward_1": e1, "reward_2": e2, "kl": d,
               "final_loss_1": float(metrics.losses[0]), "final_loss_2": float(metrics.losses[1]),
               "final_weight_1": float(metrics.info.weights[0]),
               "final_cosine_min": float(jnp.min(metrics.info.cosines))}  # fmt: skip
        if w is not None:
            row["target_reward_1"], row["target_reward_2"] = targets[w][:2]
        rows.append(row)

    fig, ax = plt.subplots(figsize=(7.5, 6))
    ax.plot(front[:, 0], front[:, 1], "k-", lw=1.5,
            label=f"exact front: π_ref·exp((w r1+(1−w) r2)/β), β={config.beta:g}")  # fmt: skip
    for w, (x, y, _) in targets.items():
        ax.plot(x, y, "o", mfc="none", mec="k", ms=11)
        ax.annotate(
            f"target w={w:g}", (x, y), fontsize=7, xytext=(6, 4), textcoords="offset points"
        )
    styles = {"weighted_sum": ("o", "C0"), "raco": ("^", "C3"), "mgda": ("s", "C1"),
              "cagrad": ("D", "C2")}  # fmt: skip
    for agg in config.aggregators:
        sel = [r for r in rows if r["aggregator"] == agg]
        marker, color = styles.get(agg, ("x", "C4"))
        label = agg if agg in _WEIGHTED else f"{agg} (weight-free)"
        if agg in ("cagrad", "raco"):
            label += f", c={config.c:g}"
        ax.plot([r["reward_1"] for r in sel], [r["reward_2"] for r in sel], marker=marker,
                color=color, ls="", ms=8, label=label)  # fmt: skip
        for r in sel:
            if agg in _WEIGHTED:
                ax.annotate(f"w={r['weight']:g}", (r["reward_1"], r["reward_2"]), fontsize=7,
                            xytext=(4, -10), textcoords="offset points", color=color)  # fmt: skip
    ax.plot(*ref_point[:2], "k*", ms=12, label="π_ref")
    ax.set_xlabel("E_π[r1]  (exact)")
    ax.set_ylabel("E_π[r2]  (exact)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(
        f"Multi-objective DPO on a transformer (testbed A={config.alphabet_size}, "
        f"L={config.response_length}, {config.pairs} pairs/objective)",
        fontsize=10,
    )
    fig.tight_layout()

    ws = sorted((r for r in rows if r["aggregator"] == "weighted_sum"), key=lambda r: r["weight"])
    summary = {
        "reference": ref_point[:2],
        "reward_correlation": float(np.corrcoef(np.asarray(rewards))[0, 1]),
        "points": {
            f"{r['aggregator']}" + ("" if np.isnan(r["weight"]) else f"@{r['weight']:g}"): [
                r["reward_1"],
                r["reward_2"],
                r["kl"],
            ]
            for r in rows
        },
        "targets": {f"{w:g}": v for w, v in targets.items()},
        "all_finite": bool(all(np.isfinite([r["reward_1"], r["reward_2"]]).all() for r in rows)),
        # Weighted-sum DPO trades r2 for r1 as w grows.
        "weighted_sum_monotone": bool(
            all(a["reward_1"] <= b["reward_1"] + 1e-3 for a, b in itertools.pairwise(ws))
        ),
    }
    return Result(figure=fig, table=rows, summary=summary)


EXPERIMENT = Experiment(
    name="llm-multiobjective",
    description="Multi-objective DPO (weighted sum, MGDA, CAGrad, RACO) vs the exact Pareto front",
    config_cls=Config,
    run=run,
)


def main(argv=None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
