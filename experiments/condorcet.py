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

    jaxalign reproduce condorcet --out results/condorcet
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import games as G
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


def run(cfg: Config, track) -> Result:
    # float64: the last-iterate gaps fall below float32 resolution.
    with jax.enable_x64(True):
        return _run(cfg, track)


def _run(cfg: Config, track) -> Result:
    import matplotlib.pyplot as plt

    summary: dict = {}
    table: dict[str, list] = {}
    fig, axes = plt.subplots(2, 2, figsize=(13, 10.5))
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
    table = {"t": [int(t) for t in ts], **table}
    sizes = "/".join(f"{n:g}" for n in cfg.group_sizes)
    fig.suptitle(
        f"Condorcet cycle: groups A≻B≻C, B≻C≻A, C≻A≻B of sizes {sizes}; maximal lottery vs "
        "RLHF-BT, and Nash self-play",
        fontsize=11,
    )
    fig.tight_layout()
    return Result(figure=fig, table=table, summary=summary)


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
    "Condorcet cycle (Mishra 2023): maximal lottery vs BT winner; INPO/ONPO/MNPO self-play",
    Config,
    run,
)


def main(argv=None):
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
