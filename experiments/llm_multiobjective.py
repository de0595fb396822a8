"""Multi-objective DPO on a transformer vs the exact KL-regularised Pareto front.

Two conflicting additive rewards r1, r2 on the enumerable testbed (A tokens, L
positions). For each reward an offline preference dataset is built from pairs sampled
from the reference transformer π_ref and labelled by Bradley–Terry on that reward. A
copy of π_ref is then trained by the training engine's multi-objective step,
:func:`jaxalign.train.multiobjective_train_step` (both DPO losses, per-objective
gradients combined inside one jitted step, full batch, constant-rate Adam from
:func:`jaxalign.train.make_optimizer`), with each aggregator — weighted sum and RACO for
several user weights w, MGDA and CAGrad (weight free) — and each trained policy's
expected rewards (E_π r1, E_π r2) are computed EXACTLY over all A^L responses. They are
drawn against the exact front of the KL-regularised scalarised objectives: for a grid of
w, the tilt π_ref·exp((w r1 + (1−w) r2)/β), the optimum weighted-sum DPO targets.

    jaxalign reproduce llm-multiobjective --out results/llm-multiobjective
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign import kl, plotting
from jaxalign.data import PreferenceBatch
from jaxalign.experiment import Experiment, Result
from jaxalign.models import ModelConfig, generate
from jaxalign.parallel import DEFAULT_RULES, MeshConfig, make_mesh
from jaxalign.testbed import Testbed, additive_reward, policy_log_probs
from jaxalign.train import (
    OptimizerConfig,
    ScheduleConfig,
    TrainState,
    abstract_model,
    init_train_state,
    make_optimizer,
    multiobjective_train_step,
    train_shardings,
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


def _pairs(testbed: Testbed, y1, y2, reward, key) -> PreferenceBatch:
    """Pairs (y1_i, y2_i) labelled by Bradley–Terry on ``reward``, as a full batch."""
    r1, r2 = reward[testbed.index_of(y1)], reward[testbed.index_of(y2)]
    first = jax.random.uniform(key, r1.shape) < jax.nn.sigmoid(r1 - r2)
    chosen, mask_c = testbed.sequences(jnp.where(first[:, None], y1, y2))
    rejected, mask_r = testbed.sequences(jnp.where(first[:, None], y2, y1))
    ones, f32 = jnp.ones_like(chosen), jnp.float32
    return PreferenceBatch(chosen, ones, mask_c.astype(f32), rejected, ones,
                           mask_r.astype(f32), jnp.ones(r1.shape, f32))  # fmt: skip


def _fit(step, state: TrainState, reference, batches, num_steps: int, weights):
    """``num_steps`` full-batch multi-objective steps from ``state``; the final parameters
    and the last step's metrics (per-objective losses at the pre-update parameters)."""
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int and float
        for _ in range(num_steps):
            state, metrics = step(state, reference, batches, weights=weights)
    return state.params, {k: float(v) for k, v in jax.device_get(metrics).items()}


def run(config: Config, track) -> Result:
    testbed = Testbed(config.alphabet_size, config.response_length)
    k_model, k_r1, k_r2, k_pairs, k_labels = jax.random.split(jax.random.key(config.seed), 5)
    # π_ref and the optimizer state every run starts from (a train state as the engine's
    # multi-objective task builds it, on one device however many there are).
    model_config, rules = _model_config(config), DEFAULT_RULES.as_pairs()
    graphdef, abstract = abstract_model(model_config, rules)
    tx, lr_schedule = make_optimizer(
        OptimizerConfig(lr=config.learning_rate, clip_norm=None),
        ScheduleConfig(kind="constant"),
        config.steps,
    )
    one_device = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    shardings = train_shardings(abstract, tx, one_device, rules)
    start = init_train_state(model_config, tx, shardings, key=k_model, rules=rules)
    ref_params = start.params
    ref_model = nnx.merge(graphdef, ref_params)
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
    batches = tuple(
        _pairs(testbed, ys[k, 0], ys[k, 1], rewards[k], jax.random.fold_in(k_labels, k))
        for k in range(2)
    )

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
    steps = {}  # one compiled step per aggregator (the weights are an argument)
    rows = []
    for agg, w in track(runs, "multi-objective DPO runs"):
        if agg not in steps:
            step = functools.partial(multiobjective_train_step, graphdef=graphdef, tx=tx,
                                     lr_schedule=lr_schedule, aggregator=agg,
                                     c=float(config.c), beta=float(config.beta))  # fmt: skip
            steps[agg] = jax.jit(step)
        wv = None if w is None else jnp.asarray([w, 1 - w], jnp.float32)
        params, metrics = _fit(steps[agg], start, ref_params, batches, config.steps, wv)
        log_pi = policy_log_probs(nnx.merge(graphdef, params), testbed)
        with jax.enable_x64(True):
            e1, e2, d = exact(log_pi)
        row = {"aggregator": agg, "weight": float("nan") if w is None else float(w),
               "reward_1": e1, "reward_2": e2, "kl": d,
               "final_loss_1": metrics["loss_0"], "final_loss_2": metrics["loss_1"],
               "final_weight_1": metrics["agg_weight_0"],
               "final_cosine_min": min(metrics["agg_cos_0"], metrics["agg_cos_1"])}  # fmt: skip
        if w is not None:
            row["target_reward_1"], row["target_reward_2"] = targets[w][:2]
        rows.append(row)

    fig, axes = plotting.figure(
        1,
        2,
        panel_size=(5.6, 4.6),
        suptitle=(
            f"Multi-objective DPO on a transformer (testbed $A={config.alphabet_size}$, "
            f"$L={config.response_length}$, {config.pairs} pairs per objective)"
        ),
    )
    styles = {"weighted_sum": ("o", "C0"), "raco": ("^", "C3"), "mgda": ("s", "C1"),
              "cagrad": ("D", "C2")}  # fmt: skip
    for ax in axes:
        ax.plot(front[:, 0], front[:, 1], "k-", lw=1.5, zorder=plotting.Z_REFERENCE,
                label=r"exact front: $\pi_{\mathrm{ref}}\,e^{(w r_1 + (1-w) r_2)/\beta}$, "
                f"$\\beta={config.beta:g}$")  # fmt: skip
        tgt = np.asarray([v[:2] for v in targets.values()]).reshape(-1, 2)
        ax.plot(tgt[:, 0], tgt[:, 1], "o", mfc="none", mec="k", ms=11, ls="",
                label="target of weight $w$")  # fmt: skip
        for agg in config.aggregators:
            sel = [r for r in rows if r["aggregator"] == agg]
            marker, color = styles.get(agg, ("x", "C4"))
            label = agg if agg in _WEIGHTED else f"{agg} (weight-free)"
            if agg in ("cagrad", "raco"):
                label += f", $c={config.c:g}$"
            ax.plot([r["reward_1"] for r in sel], [r["reward_2"] for r in sel], marker=marker,
                    color=color, ls="", ms=8, mec="k", mew=0.5, label=label)  # fmt: skip
            for r in sel:  # each weighted run joined to the target of its weight
                if agg in _WEIGHTED:
                    tx_, ty_ = targets[r["weight"]][:2]
                    ax.plot([r["reward_1"], tx_], [r["reward_2"], ty_], color=color, lw=0.8,
                            ls=":", zorder=plotting.Z_BAND)  # fmt: skip
        ax.plot(*ref_point[:2], "k*", ms=12, ls="", label=r"$\pi_{\mathrm{ref}}$")
        ax.set_xlabel(r"$E_\pi[r_1]$  (exact)")
        ax.set_ylabel(r"$E_\pi[r_2]$  (exact)")
    axes[0].set_title("(a) the whole front")
    # (b) zoom on the runs and their targets; only there the targets carry their w.
    ax = axes[1]
    pts = np.asarray([[r["reward_1"], r["reward_2"]] for r in rows]
                     + [v[:2] for v in targets.values()] + [ref_point[:2]])  # fmt: skip
    lo, hi = pts.min(0), pts.max(0)
    pad = 0.12 * np.maximum(hi - lo, 1e-3)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    for w, (x, y, _) in targets.items():
        ax.annotate(f"$w={w:g}$", (x, y), fontsize=8, xytext=(8, 4), textcoords="offset points")
    ax.set_title("(b) zoom: dotted lines join each weighted run to its target")
    axes[0].indicate_inset_zoom(ax, edgecolor="0.5")
    plotting.figure_legend(fig, axes[:1], ncols=3)

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
    headline=("reference", "reward_correlation", "points", "targets", "weighted_sum_monotone"),
)


def main(argv=None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
