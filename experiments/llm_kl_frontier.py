"""LLM-form alignment algorithms against the exact reward–KL frontier.

A tiny causal transformer is the reference policy on the enumerable testbed (A tokens,
L positions, A^L responses) and the reward is additive over positions (the testbed's
Bradley–Terry reward, seeded by ``seed``). Three LLM-form algorithms are run on it:

(1) KL-regularised policy gradient, one training-engine run per β
    (:func:`jaxalign.train.train` with ``algorithm.name: kl_pg``: RLOO baseline, k2 KL
    term in the loss, one prompt and ``pg_group_size`` responses sampled with the
    KV-cache sampler per step, clipped Adam); the engine's π_0 is π_ref;
(2) DPO trained offline on a fixed set of pairs sampled from π_ref and labelled by
    Bradley–Terry on the reward, per β: full-batch steps of the engine's DPO step
    :func:`jaxalign.train.preference_train_step` (constant-rate Adam);
(3) best-of-N, exact (``kl.best_of_n_policy`` on the reference model's enumerated
    distribution), N = 1 … N_max.

Every trained policy is then scored EXACTLY (its log-probs over all A^L responses,
renormalised in float64): reward E_π r and KL(π‖π_ref), and compared with the exact
KL-constrained RL frontier Δ ↦ max_{KL ≤ Δ} E r (``kl.reward_kl_frontier``) of the same
reference distribution and reward. No policy can lie above the frontier; the summary
reports the largest excess of any point over the frontier at its own KL.

    jaxalign reproduce llm-kl-frontier --out results/llm-kl-frontier
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import kl, plotting
from jaxalign.data import PreferenceBatch
from jaxalign.experiment import Experiment, Result
from jaxalign.testbed import Testbed
from jaxalign.train import (
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
    TrainState,
    make_optimizer,
    preference_train_step,
    reference_sequence_logprobs,
    testbed_run_config,
    train,
)

# KLs below this are zero up to float64 round-off (best-of-1 is π_ref itself).
_KL_ZERO = 1e-12


@dataclasses.dataclass(frozen=True)
class Config:
    alphabet_size: int = 4  # tokens A (= model vocabulary)
    response_length: int = 3  # L; A^L responses are enumerated
    reward_scale: float = 1.0  # std of the per-position token rewards R[i, a]
    hidden_size: int = 32  # model width
    num_layers: int = 2  # model depth
    init_scale: float = 0.5  # weight std of the (random) reference model
    seed: int = 1  # π_ref (run.seed), the reward (testbed.seed), the DPO pairs
    pg_betas: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # KL coefficients of KL-PG
    pg_steps: int = 500  # engine steps (Adam steps) per β
    pg_group_size: int = 32  # responses sampled per step (one prompt, RLOO group)
    pg_learning_rate: float = 0.001
    dpo_betas: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # DPO β
    dpo_pairs: int = 4096  # offline pairs sampled from π_ref
    dpo_steps: int = 100  # full-batch Adam steps per β
    dpo_learning_rate: float = 0.01
    bon_max_n: int = 64  # best-of-N for N = 1 … bon_max_n
    frontier_points: int = 60  # budgets on the plotted frontier

    def __post_init__(self):
        if not self.pg_betas:
            raise ValueError("pg_betas must name at least one β (its run provides π_ref)")
        if min(self.pg_betas) <= 0 or min(self.dpo_betas, default=1.0) <= 0:
            raise ValueError(f"betas must be > 0, got {self.pg_betas} and {self.dpo_betas}")
        if self.pg_group_size < 2:
            raise ValueError(f"pg_group_size must be >= 2 (RLOO), got {self.pg_group_size}")
        if self.bon_max_n < 1 or self.dpo_pairs < 1 or self.frontier_points < 2:
            raise ValueError("need bon_max_n >= 1, dpo_pairs >= 1 and frontier_points >= 2")


def pg_config(config: Config, beta: float, out_dir: Path) -> TrainConfig:
    """The engine config of the KL-PG run at ``beta`` (light: no checkpoints, TensorBoard,
    progress bar or saved model)."""
    return testbed_run_config(
        {
            "name": "kl_pg",
            "beta": beta,
            "group_size": config.pg_group_size,
            "baseline": "leave_one_out",
            "estimator": "k2",
            "kl_mode": "loss",
        },
        alphabet_size=config.alphabet_size,
        response_length=config.response_length,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        init_scale=config.init_scale,
        steps=config.pg_steps,
        seed=config.seed,
        out_dir=out_dir,
        online={
            "batch_size": 1,  # one prompt (the testbed's), pg_group_size responses
            "learning_rate": config.pg_learning_rate,
            "adam_eps": 1e-8,  # Adam's usual ε (the online default 1e-3 suits the Nash fits)
        },
        testbed={
            "preference": "bradley_terry",
            "reward_scale": config.reward_scale,
            "seed": config.seed,
        },
    )  # the oracle: the testbed's additive reward


def _offline_pairs(setup, ref_params, reward, num_pairs: int, key) -> PreferenceBatch:
    """``num_pairs`` pairs from π_ref (the engine's KV-cache sampler), labelled by
    Bradley–Terry on ``reward``, as one full batch with π_ref's log-probs."""
    testbed = setup.exact.testbed
    k_prompt, k_sample, k_label = jax.random.split(key, 3)
    tokens, mask = setup.prompts.sample(k_prompt, 2 * num_pairs)
    ys = setup.sampler.sample(ref_params, k_sample, (jnp.asarray(tokens), jnp.asarray(mask)))
    y1, y2 = ys.responses[:num_pairs], ys.responses[num_pairs:]
    r1, r2 = reward[testbed.index_of(y1)], reward[testbed.index_of(y2)]
    first = jax.random.uniform(k_label, r1.shape) < jax.nn.sigmoid(r1 - r2)
    chosen, mask_c = testbed.sequences(jnp.where(first[:, None], y1, y2))
    rejected, mask_r = testbed.sequences(jnp.where(first[:, None], y2, y1))
    ones, f32 = jnp.ones_like(chosen), jnp.float32
    pairs = PreferenceBatch(chosen, ones, mask_c.astype(f32), rejected, ones,
                            mask_r.astype(f32), jnp.ones(r1.shape, f32))  # fmt: skip
    # π_ref's log-probs once, with the pairs: the DPO steps then skip the reference pass.
    ref_logps = reference_sequence_logprobs(ref_params, pairs, graphdef=setup.graphdef)
    return pairs._replace(reference_chosen_logp=ref_logps[0], reference_rejected_logp=ref_logps[1])


def _dpo_policy(config: Config, step, tx, ref_params, pairs: PreferenceBatch, beta: float):
    """The parameters after ``dpo_steps`` full-batch DPO steps from π_ref."""
    rng = jax.random.key_data(jax.random.key(config.seed))
    beta = jnp.asarray(beta, jnp.float32)  # an argument: one compiled step for every β
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int and float
        state = TrainState(jnp.zeros((), jnp.int32), ref_params, tx.init(ref_params), rng)
        for _ in range(config.dpo_steps):
            state, _ = step(state, ref_params, pairs, beta=beta)
    return state.params


def _label_betas(ax, rows, color, *, below: bool) -> None:
    """β next to each point; points closer than ~2 % of the axes share one label."""
    groups: list[list[dict]] = []
    for r in sorted(rows, key=lambda r: r["parameter"]):
        for g in groups:
            near_kl = abs(np.log(r["kl"] / g[0]["kl"])) < 0.1
            if near_kl and abs(r["reward"] - g[0]["reward"]) < 0.02:
                g.append(r)
                break
        else:
            groups.append([r])
    for g in groups:
        text = "β=" + ", ".join(f"{r['parameter']:g}" for r in g)
        ax.annotate(text, (g[0]["kl"], g[0]["reward"]), fontsize=7, color=color,
                    xytext=(6, -12 if below else 4), textcoords="offset points",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none",
                          "alpha": 0.8})  # fmt: skip


def run(config: Config, track) -> Result:
    testbed = Testbed(config.alphabet_size, config.response_length)
    trained = []  # (method, parameter, final parameters)
    with tempfile.TemporaryDirectory(prefix="llm-kl-frontier-") as runs:
        for i, beta in enumerate(track(config.pg_betas, "KL-PG betas")):
            result = train(pg_config(config, float(beta), Path(runs) / f"pg-{i}"), quiet=True)
            trained.append(("kl-pg", float(beta), result.state.params))
    # Every run starts from the same π_0 = π_ref (run.seed) and reward (testbed.seed).
    task = result.task
    setup, ref_params = task.setup, task.frozen["reference"]
    log_ref32, reward32 = task.objective.log_ref, task.objective.reward

    # Offline preference data: pairs from π_ref, Bradley–Terry labels; DPO per β.
    pairs = _offline_pairs(
        setup, ref_params, reward32, config.dpo_pairs, jax.random.key(config.seed)
    )
    tx, lr_schedule = make_optimizer(
        OptimizerConfig(lr=config.dpo_learning_rate, clip_norm=None),
        ScheduleConfig(kind="constant"),
        config.dpo_steps,
    )
    step = jax.jit(functools.partial(preference_train_step, graphdef=setup.graphdef, tx=tx,
                                     lr_schedule=lr_schedule, algorithm="dpo",
                                     kl_metric=False))  # fmt: skip
    for beta in track(config.dpo_betas, "DPO betas"):
        params = _dpo_policy(config, step, tx, ref_params, pairs, beta)
        trained.append(("dpo", float(beta), params))

    def exact(log_pi32):
        """(reward, KL) of an enumerated policy, in float64, renormalised."""
        with jax.enable_x64(True):
            lp = jax.nn.log_softmax(jnp.asarray(np.asarray(log_pi32), jnp.float64))
            lr = jax.nn.log_softmax(jnp.asarray(np.asarray(log_ref32), jnp.float64))
            r = jnp.asarray(np.asarray(reward32), jnp.float64)
            return float(kl.expected_reward(lp, r)), float(kl.kl_divergence(lp, lr))

    log_probs = jax.jit(setup.exact.log_probs)
    points = [(m, p, *exact(log_probs(params))) for m, p, params in trained]

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

    fig, axes = plotting.figure(
        1,
        2,
        panel_size=(6.0, 4.4),
        suptitle=(
            f"LLM-form alignment vs the exact reward–KL frontier (testbed "
            f"$A={config.alphabet_size}$, $L={config.response_length}$, "
            f"{testbed.num_responses} responses)"
        ),
    )
    bon_label = f"best-of-N (exact), $N = 2, \\ldots, {config.bon_max_n}$"
    styles = {"kl-pg": ("o", "C0", "KL-reg. policy gradient (RLOO)"),
              "dpo": ("s", "C1", "DPO (offline BT pairs)"),
              "best-of-n": (".", "C2", bon_label)}  # fmt: skip
    for ax, log_x in zip(axes, (False, True), strict=True):
        ax.plot(front_kl, front_r, "k-", lw=1.5, label="exact KL-RL frontier")
        for method, (marker, color, label) in styles.items():
            sel, x, y = of(method)
            # KL(π_N ‖ π_ref) at N = 1 is 0 up to round-off (±1e-17): that point is π_ref
            # itself (drawn as the star), and on a log axis a segment from it would run far
            # left and seem to cross above the frontier.
            keep = x > _KL_ZERO
            sel, x, y = [r for r, k in zip(sel, keep, strict=True) if k], x[keep], y[keep]
            ax.plot(x, y, marker=marker, color=color, ls="-" if method == "best-of-n" else "",
                    label=label, ms=4 if method == "best-of-n" else 7)  # fmt: skip
            if method != "best-of-n" and log_x:  # β labels where the points are apart
                _label_betas(ax, sel, color, below=method == "dpo")
        tk = np.asarray([targets[b][1] for b in config.pg_betas])
        tr = np.asarray([targets[b][0] for b in config.pg_betas])
        ax.plot(tk, tr, "o", mfc="none", mec="C0", ms=10,
                label=r"target $\pi_{\mathrm{ref}}\,e^{r/\beta}$ of each $\beta$")  # fmt: skip
        ax.plot([0.0], [ref_reward], "k*", ms=9, label=r"$\pi_{\mathrm{ref}}$ (= best-of-1)")
        plotting.reference_line(ax, y=best_reward, horizontal=True, ls=":", label="max reward")
        ax.set_xlabel(r"$\mathrm{KL}(\pi\,\|\,\pi_{\mathrm{ref}})$  [nats]")
        ax.set_ylabel(r"$E_\pi[r]$ (exact)")
        ax.grid(True, which="both")
        if log_x:
            ax.set_xscale("log")
            ax.set_xlim(left=1e-3)
            ax.set_title("(b) same, log KL axis (labels: β)")
        else:
            ax.set_title("(a) reward vs KL, every policy evaluated exactly")
    plotting.figure_legend(fig, axes[:1], ncols=4)

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
    headline=(
        "max_excess_over_frontier",
        "max_gap_below_frontier",
        "points.kl-pg",
        "points.dpo",
        "points.best-of-n",
    ),
)


def main(argv=None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
