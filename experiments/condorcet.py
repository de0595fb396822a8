"""Condorcet cycles: the maximal lottery vs the Bradley–Terry winner, and Nash self-play.

Three annotator groups with transitive rankings A≻B≻C, B≻C≻A, C≻A≻B (sizes
``group_sizes``, default 4/3/3) have a cyclic majority A≻B≻C≻A. The study computes, exactly:

* the maximal lottery (LP on the majority margins; the Nash equilibrium of the majority
  game, NLHF's target without KL) and its closed form (each response weighted by the
  margin of the opposite edge);
* the Bradley–Terry fit to the pairwise rates (what RLHF's reward model learns), its winner
  and the majority that beats it, and the KL-regularised RLHF path π_β ∝ π_ref e^{s/β} from
  the reference (β → ∞) to the BT vertex (β → 0);
* tabular Nash self-play from a non-uniform start: INPO at τ = 0 (= online mirror descent;
  average iterate), ONPO (optimistic; last iterate) and MNPO (n = 3 players, the last two
  iterates as opponents; average iterate), with trajectories on the simplex and exact
  duality gaps.

The same is repeated **on the testbed** (A = 3 tokens, L = 2, 9 responses): each group is a
Bradley–Terry annotator whose reward is additive over positions (token utilities of its
ranking, the first position weighted ``position_weight`` times the second), mixed with
weights ∝ group sizes — the annotator-mixture oracle. Its majority is cyclic at the
sequence level too; the solvers run on the exact 9×9 game.

Finally **a transformer reaches the lottery online** (panels e, f): a tiny transformer
(vocabulary = the 3-token alphabet) is trained by INPO (τ = 0) and ONPO, and MNPO in the full
profile (``transformer_algorithms``; ``[]`` turns the panel off), one run of the training engine
each (:func:`jaxalign.train.engine.run` with the online Nash task): every iteration samples
``transformer_batch_size`` pairs with the KV-cache sampler, labels them with Bernoulli draws
from the annotator-mixture preference above and fits the algorithm's pairwise loss. The
config's own ``testbed.preference: annotators`` draws random annotators, so the task is
handed this game and its oracle. The testbed is enumerable, so every iterate π_t gets its
exact duality gap and its total-variation distance ½‖π_t − p*‖₁ to the maximal lottery;
they are drawn (last iterate and running average of π_0..π_t) next to the tabular solver of
the same algorithm and step size run from the transformer's own π_0, with the RLHF-BT
policy at ``report_beta`` and the best point of the RLHF-BT path as levels. Measured (quick
profile, s = 4, 30 iterations of 256 pairs): the gap of the average of the transformer's
iterates falls 0.22 → 0.042 (INPO) / 0.039 (ONPO) — tabular from the same π_0: 0.052 /
0.026 — below the RLHF-BT policy's 0.15 and the whole RLHF-BT path's best 0.087; its
distance to the lottery 0.62 → 0.19 / 0.26 (RLHF-BT: 0.59). The last iterate oscillates
with the sampling noise (ONPO 0.02–0.24, final 0.094; INPO at τ = 0 cycles, as tabular).
Full profile (60 iterations, MNPO too): average-iterate gaps 0.044 / 0.031 / 0.023 (MNPO;
tabular 0.038 / 0.015 / 0.041); ONPO's final transformer has gap 0.070 and lies at TV 0.16
from the lottery (its tabular twin: 0.047, 0.19).

    jaxalign reproduce condorcet --out results/condorcet
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import games as G
from jaxalign import plotting
from jaxalign.experiment import Experiment, Result
from jaxalign.testbed import Testbed
from jaxalign.testbed.space import annotator_mixture_preference

CYCLE = ((0, 1, 2), (1, 2, 0), (2, 0, 1))  # A≻B≻C, B≻C≻A, C≻A≻B
NAMES = "ABC"


@dataclasses.dataclass(frozen=True)
class Config:
    group_sizes: tuple[float, float, float] = (4.0, 3.0, 3.0)  # sizes of the three groups
    start: tuple[float, float, float] = (0.1, 0.8, 0.1)  # self-play start on the simplex
    num_steps: int = 5000  # self-play iterations T
    step_size: float = 0.5  # INPO / MNPO step s
    onpo_step_size: float = 1.0  # ONPO step: its last iterate is fast at 1, very slow at ≤ 1/8
    onpo_sweep: tuple[float, ...] = (0.125, 0.5, 1.0, 2.0)  # ONPO steps for the summary sweep
    num_betas: int = 60  # points of the KL-regularised RLHF path
    report_beta: float = 0.05  # β of the RLHF-BT policy shown on the testbed
    annotator_scale: float = 2.0  # testbed: BT sharpness of each group's reward
    position_weight: float = 3.0  # testbed: first-token weight (3: lexicographic rankings)
    # transformer panel: a tiny transformer (vocabulary = the testbed alphabet) trained online
    # on the training engine, pairs labelled by the annotator-mixture oracle; () turns it off
    transformer_algorithms: tuple[str, ...] = ("inpo", "onpo")  # among inpo, onpo, mnpo
    transformer_iterations: int = 30  # engine steps (outer iterations)
    transformer_step_size: float = (
        4.0  # s of INPO (τ = 0) / ONPO / MNPO, and of their tabular twins
    )
    transformer_batch_size: int = 256  # sampled pairs per iteration
    transformer_soft_labels: bool = False  # True: the oracle's P(a ≻ b), not Bernoulli draws
    transformer_inner_steps: int = 30  # Adam steps per fit
    transformer_learning_rate: float = 0.03
    transformer_hidden_size: int = 32
    transformer_init_scale: float = 0.2  # initializer_range: a π_0 far from the lottery
    transformer_seed: int = 0  # run.seed: π_0, sampling and labels


SOLVERS = (
    ("INPO ($\\tau=0$), average", "avg", "C0"),
    ("ONPO, last iterate", "last", "C1"),
    ("MNPO ($n=3$), average", "avg", "C2"),
)


def _solvers(cfg: Config):
    return (
        G.inpo(cfg.step_size, tau=0.0),
        G.onpo(cfg.onpo_step_size),
        G.mnpo(cfg.step_size, num_players=3),
    )


def _iterates(solver, game, log_start, num_steps):
    """[T, K] probabilities of the last iterates π_1..π_T and of their running averages."""

    def body(state, _):
        state = solver.step(game, state)
        return state, jnp.exp(state.log_policy)

    _, last = jax.lax.scan(body, solver.init(game, log_start), None, length=num_steps)
    counts = jnp.arange(1, num_steps + 1, dtype=last.dtype)[:, None]
    return last, jnp.cumsum(last, axis=0) / counts


def _self_play(cfg: Config, game, log_start, lottery):
    """Per solver: (probabilities of the tracked iterate [T, K], its gap [T], KL(p*‖·) [T])."""
    gap = jax.vmap(lambda p: G.duality_gap(game, jnp.log(p)))
    out = []
    for solver, (_, which, _) in zip(_solvers(cfg), SOLVERS):
        last, avg = jax.jit(_iterates, static_argnums=(0, 3))(
            solver, game, log_start, cfg.num_steps
        )
        tracked = avg if which == "avg" else last
        kl = jax.vmap(lambda p: G.kl_divergence(jnp.log(lottery), jnp.log(p)))(tracked)
        out.append(
            (np.asarray(tracked), np.asarray(gap(tracked)), np.asarray(kl), np.asarray(last))
        )
    return out


def _gap(game, p):
    return G.duality_gap(game, jnp.log(p))


def _onpo_sweep(cfg: Config, game, log_start) -> dict[str, float]:
    """Last-iterate gap of ONPO after T steps for each step size of ``cfg.onpo_sweep``."""
    out = {}
    for s in cfg.onpo_sweep:
        last, _ = jax.jit(_iterates, static_argnums=(0, 3))(
            G.onpo(s), game, log_start, cfg.num_steps
        )
        out[f"{s:g}"] = float(_gap(game, last[-1]))
    return out


def _simplex_xy(p: np.ndarray) -> np.ndarray:
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    return np.asarray(p) @ corners


def _rlhf_path(scores: jax.Array, log_ref: jax.Array, betas: np.ndarray) -> np.ndarray:
    return np.asarray(jax.vmap(lambda b: jax.nn.softmax(log_ref + scores / b))(jnp.asarray(betas)))


def _testbed_game(cfg: Config):
    testbed = Testbed(alphabet_size=3, response_length=2)
    utilities = np.zeros((3, 3))
    for g, ranking in enumerate(CYCLE):
        for place, token in enumerate(ranking):
            utilities[g, token] = 2 - place
    token_rewards = cfg.annotator_scale * np.stack(
        [np.stack([cfg.position_weight * u, u]) for u in utilities]
    )
    sizes = np.asarray(cfg.group_sizes, float)
    game = annotator_mixture_preference(
        testbed, jnp.asarray(token_rewards), jnp.asarray(sizes / sizes.sum())
    )
    labels = ["".join(NAMES[t] for t in row) for row in np.asarray(testbed.responses())]
    return game, labels


TRANSFORMER_ALGORITHMS = {  # name: (label, colour)
    "inpo": ("INPO ($\\tau=0$)", "C0"),
    "onpo": ("ONPO", "C1"),
    "mnpo": ("MNPO ($n=3$)", "C2"),
}


def _transformer_config(cfg: Config, algorithm: str, out_dir):
    """The engine config of one transformer run (light: no checkpoints, logs or model)."""
    from jaxalign.train import testbed_run_config

    section: dict = {"name": algorithm, "step_size": cfg.transformer_step_size}
    if algorithm != "onpo":  # ONPO has no KL weight; INPO and MNPO at τ = 0
        section["tau"] = 0.0
    return testbed_run_config(
        section,
        alphabet_size=3,
        response_length=2,
        hidden_size=cfg.transformer_hidden_size,
        init_scale=cfg.transformer_init_scale,
        steps=cfg.transformer_iterations,
        seed=cfg.transformer_seed,
        out_dir=out_dir,
        online={
            "batch_size": cfg.transformer_batch_size,
            "inner_steps": cfg.transformer_inner_steps,
            "learning_rate": cfg.transformer_learning_rate,
        },
        oracle={"sample": not cfg.transformer_soft_labels},
    )


def _train_transformers(cfg: Config, track) -> dict[str, dict]:
    """One engine run of the online Nash task per algorithm, against the annotator-mixture
    oracle of the experiment's testbed game (the config's own ``testbed.preference`` draws
    random annotators: the task gets this game and its oracle instead). Per algorithm: the
    exact log-policies of π_0..π_T and the wall time."""
    import tempfile
    import time
    from pathlib import Path

    from jaxalign.train import oracles
    from jaxalign.train.engine import run as engine_run
    from jaxalign.train.tasks.nash import NashTask

    for a in cfg.transformer_algorithms:
        if a not in TRANSFORMER_ALGORITHMS:
            raise ValueError(
                f"transformer_algorithms must be among {tuple(TRANSFORMER_ALGORITHMS)}, got {a!r}"
            )
    game, _ = _testbed_game(cfg)  # float32, as the engine trains
    testbed = Testbed(alphabet_size=3, response_length=2)

    def factory(ctx):
        oracle = oracles.testbed_oracle(testbed, game, sample=ctx.config.oracle.sample)
        task = NashTask(ctx, oracle=oracle)
        task.setup.game = game  # scored exactly on the same game (the history starts at init)
        return task

    out = {}
    with tempfile.TemporaryDirectory(prefix="condorcet-") as tmp:
        for algorithm in track(cfg.transformer_algorithms, "transformer runs"):
            t0 = time.perf_counter()
            result = engine_run(
                _transformer_config(cfg, algorithm, Path(tmp) / algorithm), factory, quiet=True
            )
            h = result.task.exact_history.history()
            out[algorithm] = {
                "log_policies": np.asarray(h.log_policies, np.float64),
                "algorithm": result.task.algorithm,  # its tabular solver is the twin
                "runtime_s": time.perf_counter() - t0,
            }
    return out


def _score_transformers(cfg: Config, runs: dict[str, dict], game, lottery) -> dict:
    """Exact gaps and distances to the lottery of every transformer iterate (last and running
    average), and of the tabular twin of the same algorithm run from the transformer's π_0."""
    gap = jax.jit(jax.vmap(lambda p: G.duality_gap(game, jnp.log(p))))
    out = {}
    for algorithm, r in runs.items():
        probs = np.exp(r["log_policies"])
        probs /= probs.sum(axis=1, keepdims=True)
        log_start = jnp.log(jnp.asarray(probs[0]))  # π_0 = π_ref of the run
        solver = r["algorithm"].solver(log_start)  # holds arrays: closed over, not static
        tabular = functools.partial(_iterates, solver, game, num_steps=cfg.transformer_iterations)
        last_tab, _ = jax.jit(tabular)(log_start)
        tab = np.concatenate([probs[:1], np.asarray(last_tab)])
        series = {
            "llm_last": probs,
            "llm_avg": _running_average(probs),
            "tab_last": tab,
            "tab_avg": _running_average(tab),
        }
        out[algorithm] = {
            "probs": series,
            "gap": {k: np.asarray(gap(jnp.asarray(v))) for k, v in series.items()},
            "tv": {k: 0.5 * np.abs(v - lottery).sum(axis=1) for k, v in series.items()},
            "runtime_s": r["runtime_s"],
        }
    return out


def _running_average(probs: np.ndarray) -> np.ndarray:
    """[T+1, K] averages of π_0..π_t (entry t = the average of the first t + 1 iterates)."""
    return np.cumsum(probs, axis=0) / np.arange(1, len(probs) + 1)[:, None]


def run(cfg: Config, track) -> Result:
    # The transformers train in float32 on the engine; everything exact is float64 (the
    # last-iterate gaps fall below float32 resolution).
    trained = _train_transformers(cfg, track) if cfg.transformer_algorithms else None
    with jax.enable_x64(True):
        return _run(cfg, track, trained)


def _run(cfg: Config, track, trained: dict | None) -> Result:
    import matplotlib.pyplot as plt

    summary: dict = {}
    table: dict[str, list] = {}
    rows = 2 if trained is None else 3
    fig, axes = plt.subplots(
        rows,
        2,
        figsize=(13, 5.25 * rows + (1.5 if trained else 0.0)),
        layout="constrained",
        gridspec_kw={"height_ratios": [1.0] * 2 + [1.3] * (rows - 2)},
    )
    ts = np.arange(1, cfg.num_steps + 1)
    betas = np.geomspace(10.0, 0.005, cfg.num_betas)
    stages = track(["three responses", "testbed"], "games")

    for stage in stages:
        if stage == "three responses":
            game = G.voting_game(np.asarray(CYCLE), np.asarray(cfg.group_sizes))
            labels = list(NAMES)
            start = np.asarray(cfg.start, float)
            log_start = jnp.log(jnp.asarray(start / start.sum()))
            ax_main, ax_gap = axes[0]
        else:
            game, labels = _testbed_game(cfg)
            log_start = None
            ax_main, ax_gap = axes[1]
        k = game.preference.shape[0]
        pref = np.asarray(game.preference)
        lottery_j = G.maximal_lottery(G.majority_margins(game))
        lottery = np.asarray(lottery_j)
        scores = G.bradley_terry_fit(game)
        bt_winner = int(np.argmax(np.asarray(scores)))
        challenger, rate = G.strongest_challenger(game, np.eye(k)[bt_winner])
        log_ref = jnp.full((k,), -np.log(k), scores.dtype)
        path = _rlhf_path(scores, log_ref, betas)
        path_gaps = np.asarray(jax.vmap(functools.partial(_gap, game))(path))
        runs = _self_play(cfg, game, log_start, lottery_j)
        key = "three" if stage == "three responses" else "testbed"
        info = {
            "condorcet_winner": int(G.condorcet_winner(game)),
            "maximal_lottery": {labels[i]: float(lottery[i]) for i in range(k) if lottery[i] > 0},
            "lottery_max_win_rate_against_it": float(np.max(pref @ lottery)),
            "bt_scores": [float(v) for v in np.asarray(scores)],
            "bt_winner": labels[bt_winner],
            "bt_winner_beaten_by": labels[int(challenger)],
            "bt_winner_beaten_with_rate": float(rate),
            "rlhf_path_min_gap": float(path_gaps.min()),
            "final_gap": {name: float(r[1][-1]) for (name, _, _), r in zip(SOLVERS, runs)},
            "final_kl_to_lottery": {
                name: float(r[2][-1]) for (name, _, _), r in zip(SOLVERS, runs)
            },
        }
        if stage == "three responses":
            info["pairwise_rates"] = {
                "P(A>B)": float(pref[0, 1]),
                "P(B>C)": float(pref[1, 2]),
                "P(C>A)": float(pref[2, 0]),
            }
            info["closed_form_lottery"] = [
                float(v) for v in np.asarray(G.three_cycle_lottery(game))
            ]
            info["borda_points"] = [
                float(v) for v in np.asarray(G.borda_scores(game)) * sum(cfg.group_sizes)
            ]
            _plot_simplex(ax_main, runs, lottery, path, bt_winner, start / start.sum())
            info["onpo_last_iterate_gap_by_step_size"] = _onpo_sweep(cfg, game, log_start)
        else:
            _plot_bars(ax_main, labels, lottery, runs, path, betas, cfg.report_beta)
            rb = int(np.argmin(np.abs(betas - cfg.report_beta)))
            info["rlhf_gap_at_report_beta"] = float(path_gaps[rb])
            if trained is not None:
                scored = _score_transformers(cfg, trained, game, lottery)
                rlhf = {
                    "beta": float(betas[rb]),
                    "gap": float(path_gaps[rb]),
                    "tv": float(0.5 * np.abs(path[rb] - lottery).sum()),
                    "probs": path[rb],
                    "min_gap": float(path_gaps.min()),
                }
                summary["transformer"] = _transformer_summary(scored, labels, rlhf)
                table.update(_transformer_table(scored))
                _plot_transformer_gaps(axes[2, 0], cfg, scored, rlhf)
                _plot_transformer_mass(axes[2, 1], labels, lottery, scored, rlhf)
        summary[key] = info
        for (name, which, colour), (_, gaps, _, _) in zip(SOLVERS, runs):
            ax_gap.loglog(ts, np.maximum(gaps, 1e-12), color=colour, label=f"{name}")
            table[f"{key}_gap_{name.split()[0].lower()}_{which}"] = [float(v) for v in gaps]
        ax_gap.axhline(
            2 * float(rate) - 1,
            color="k",
            ls="--",
            lw=1,
            label=f"RLHF-BT vertex {labels[bt_winner]}",
        )
        ax_gap.axhline(
            path_gaps.min(), color="0.5", ls=":", lw=1.5, label="best point of the RLHF-BT path"
        )
        ax_gap.set_xlabel("self-play iterations $t$")
        ax_gap.set_ylabel("duality gap $2\\max_y P(y \\succ \\pi) - 1$")
        ax_gap.set_ylim(1e-7, 2)
        ax_gap.grid(True, which="both", alpha=0.3)
        ax_gap.legend(fontsize=8, loc="lower left")
    axes[0, 1].set_title("(b) three responses: exact gap of the self-play iterates", fontsize=10)
    axes[1, 1].set_title(
        "(d) testbed (9 sequences): exact gap of the self-play iterates", fontsize=10
    )
    table = _pad_columns({"t": [int(t) for t in ts], **table})
    sizes = "/".join(f"{n:g}" for n in cfg.group_sizes)
    fig.suptitle(
        f"Condorcet cycle: groups A≻B≻C, B≻C≻A, C≻A≻B of sizes {sizes}; maximal lottery vs "
        "RLHF-BT, and Nash self-play (tabular, and a transformer trained online)",
        fontsize=11,
    )
    return Result(figure=fig, table=table, summary=summary)


def _pad_columns(table: dict[str, list]) -> dict[str, list]:
    """Columns of different lengths (self-play steps, transformer iterations) padded with
    empty cells to one length."""
    n = max(len(v) for v in table.values())
    return {k: list(v) + [""] * (n - len(v)) for k, v in table.items()}


def _transformer_summary(scored: dict, labels: list[str], rlhf: dict) -> dict:
    def per(kind: str, series: str, i: int = -1):
        return {a: float(r[kind][series][i]) for a, r in scored.items()}

    first = next(iter(scored.values()))
    return {
        "algorithms": list(scored),
        "initial_gap": float(first["gap"]["llm_last"][0]),
        "final_gap": per("gap", "llm_last"),
        "min_gap": {a: float(r["gap"]["llm_last"].min()) for a, r in scored.items()},
        "final_average_gap": per("gap", "llm_avg"),
        "tabular_final_gap": per("gap", "tab_last"),
        "tabular_final_average_gap": per("gap", "tab_avg"),
        "rlhf_gap": rlhf["gap"],
        "initial_tv_to_lottery": float(first["tv"]["llm_last"][0]),
        "final_tv_to_lottery": per("tv", "llm_last"),
        "final_average_tv_to_lottery": per("tv", "llm_avg"),
        "tabular_final_tv_to_lottery": per("tv", "tab_last"),
        "rlhf_tv_to_lottery": rlhf["tv"],
        "final_mass": {
            a: {lab: float(v) for lab, v in zip(labels, r["probs"]["llm_last"][-1])}
            for a, r in scored.items()
        },
        "final_average_mass": {
            a: {lab: float(v) for lab, v in zip(labels, r["probs"]["llm_avg"][-1])}
            for a, r in scored.items()
        },
        "initial_mass": {lab: float(v) for lab, v in zip(labels, first["probs"]["llm_last"][0])},
        "runtime_s": {a: float(r["runtime_s"]) for a, r in scored.items()},
    }


def _transformer_table(scored: dict) -> dict[str, list]:
    first = next(iter(scored.values()))
    table = {"transformer_t": list(range(len(first["gap"]["llm_last"])))}
    for a, r in scored.items():
        for series in ("llm_last", "llm_avg", "tab_last", "tab_avg"):
            table[f"transformer_{a}_{series}_gap"] = [float(v) for v in r["gap"][series]]
            table[f"transformer_{a}_{series}_tv"] = [float(v) for v in r["tv"][series]]
    return table


def _plot_transformer_gaps(ax, cfg: Config, scored: dict, rlhf: dict) -> None:
    """(e) exact gap of the transformer's iterates (running average and last) vs the
    running average of its tabular twin from the same π_0."""
    for a, r in scored.items():
        name, colour = TRANSFORMER_ALGORITHMS[a]
        ts = np.arange(len(r["gap"]["llm_last"]))
        ax.plot(
            ts,
            r["gap"]["llm_last"],
            "-",
            color=colour,
            lw=0.8,
            alpha=0.45,
            label=f"{name}, transformer, last iterate",
        )
        ax.plot(
            ts,
            r["gap"]["llm_avg"],
            "-o",
            ms=3,
            color=colour,
            label=f"{name}, transformer, average of iterates",
        )
        ax.plot(
            ts,
            r["gap"]["tab_avg"],
            "--",
            color=colour,
            label=f"{name}, tabular from the same $\\pi_0$, average",
        )
    plotting.reference_line(
        ax, y=rlhf["gap"], horizontal=True, ls=":", label=f"RLHF-BT, $\\beta$={rlhf['beta']:.2g}"
    )
    plotting.reference_line(
        ax, y=rlhf["min_gap"], horizontal=True, ls="-.", label="best point of the RLHF-BT path"
    )
    ax.set_xlabel("online iteration $t$ (engine step)")
    ax.set_ylabel("exact duality gap $2\\max_y P(y \\succ \\pi_t) - 1$")
    ax.set_ylim(bottom=0)
    plotting.expand_to(ax, rlhf["gap"])
    # below the axes: no legend over the data
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2)
    ax.set_title(
        f"(e) testbed: transformer trained online ($s={cfg.transformer_step_size:g}$, "
        f"$B={cfg.transformer_batch_size}$ pairs), annotator-mixture oracle",
        fontsize=10,
    )


def _plot_transformer_mass(ax, labels, lottery, scored: dict, rlhf: dict) -> None:
    """(f) the transformer policies' mass on each sequence vs the lottery's."""
    first = next(iter(scored.values()))
    series = [("maximal lottery", lottery, "gold", None)]
    series += [("transformer $\\pi_0$", first["probs"]["llm_last"][0], "0.75", None)]
    for a, r in scored.items():
        name, colour = TRANSFORMER_ALGORITHMS[a]
        series += [
            (
                f"{name}, average of the transformer iterates",
                r["probs"]["llm_avg"][-1],
                colour,
                None,
            ),
            (f"{name}, final transformer (last iterate)", r["probs"]["llm_last"][-1], "w", colour),
        ]
    series += [(f"RLHF-BT, $\\beta$={rlhf['beta']:.2g}", rlhf["probs"], "C3", None)]
    width = 0.84 / len(series)
    x = np.arange(len(labels))
    for i, (name, probs, colour, edge) in enumerate(series):
        ax.bar(
            x + (i - len(series) / 2 + 0.5) * width,
            probs,
            width,
            color=colour,
            label=name,
            edgecolor=edge or "k",
            lw=0.9 if edge else 0.3,
            hatch="////" if edge else None,
        )
    ax.set_xticks(x, labels)
    ax.set_xlabel("response (token sequence)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, None)
    # below the axes: no legend over the data
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2)
    ax.set_title("(f) testbed: transformer policies vs the maximal lottery", fontsize=10)


def _plot_simplex(ax, runs, lottery, path, bt_winner, start):
    corners = _simplex_xy(np.eye(3))
    ax.plot(*np.vstack([corners, corners[:1]]).T, color="k", lw=1)
    for i, name in enumerate(NAMES):
        dx = -0.05 if i == 0 else (0.05 if i == 1 else 0.0)
        dy = -0.05 if i < 2 else 0.04
        ax.text(corners[i, 0] + dx, corners[i, 1] + dy, name, ha="center", va="center", fontsize=12)
    last_inpo = runs[0][3]
    xy = _simplex_xy(last_inpo)
    ax.plot(*xy.T, color="C0", lw=0.5, alpha=0.35, label="INPO ($\\tau=0$), last iterate (cycles)")
    for (name, _, colour), (tracked, _, _, _) in zip(SOLVERS, runs):
        ax.plot(*_simplex_xy(tracked).T, color=colour, lw=1.4, label=name)
    ax.plot(
        *_simplex_xy(path).T,
        "k--",
        lw=1.5,
        label="KL-regularised RLHF-BT path ($\\beta\\downarrow$)",
    )
    ax.plot(*_simplex_xy(start), "ko", ms=5, mfc="w", label="self-play start")
    ax.plot(*_simplex_xy(np.eye(3)[bt_winner]), "s", color="C3", ms=9, label="RLHF-BT winner")
    lx, ly = _simplex_xy(lottery)
    ax.plot(lx, ly, "*", color="gold", mec="k", ms=16, label="maximal lottery", zorder=5)
    ax.set_xlim(-0.08, 1.08)
    ax.set_ylim(-0.42, 0.92)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(fontsize=8, loc="lower center", ncol=2, frameon=False)
    p = ", ".join(f"{v:.2f}" for v in lottery)
    ax.set_title(f"(a) three responses: simplex, maximal lottery $p^*$ = ({p})", fontsize=10)


def _plot_bars(ax, labels, lottery, runs, path, betas, report_beta):
    k = len(labels)
    rb = int(np.argmin(np.abs(betas - report_beta)))
    series = [("maximal lottery", lottery, "gold")]
    series += [(name, r[0][-1], colour) for (name, _, colour), r in zip(SOLVERS, runs)]
    series += [(f"RLHF-BT, $\\beta$={betas[rb]:.2g}", path[rb], "C3")]
    width = 0.8 / len(series)
    x = np.arange(k)
    for i, (name, probs, colour) in enumerate(series):
        ax.bar(
            x + (i - len(series) / 2 + 0.5) * width,
            probs,
            width,
            color=colour,
            label=name,
            edgecolor="k",
            lw=0.3,
        )
    ax.set_xticks(x, labels)
    ax.set_xlabel("response (token sequence)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(
        "(c) testbed: annotator-mixture game over 9 sequences, final policies", fontsize=10
    )


EXPERIMENT = Experiment(
    "condorcet",
    "Condorcet cycle (Mishra 2023): maximal lottery vs BT winner; INPO/ONPO/MNPO self-play, "
    "tabular and with an online-trained transformer",
    Config,
    run,
    headline=(
        "three.maximal_lottery",
        "three.bt_winner_beaten_with_rate",
        "three.final_gap",
        "testbed.final_gap",
        "testbed.rlhf_gap_at_report_beta",
        "testbed.rlhf_path_min_gap",
        "transformer.initial_gap",
        "transformer.final_average_gap",
        "transformer.tabular_final_average_gap",
        "transformer.final_gap",
        "transformer.initial_tv_to_lottery",
        "transformer.final_average_tv_to_lottery",
        "transformer.final_tv_to_lottery",
        "transformer.rlhf_tv_to_lottery",
    ),
)


def main(argv=None):
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
