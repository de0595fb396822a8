"""MNPO's multiplayer duality gap vs iterations for n ∈ {2, 3, 5} players.

Games are one-vs-many Plackett–Luce preferences over K responses (Wu et al. 2025,
"Multiplayer Nash Preference Optimization"): **homogeneous** (one annotator, transitive)
and **heterogeneous** (a mixture of annotators with independent rewards, typically
non-transitive). MNPO runs in symmetric n-player self-play (n − 1 copies of π_t as
opponents, exact payoffs from the [K]^n tensor), and the one-sided gap
max_π' J(π', O_π) − J(π, O_π) of the average and last iterates is recorded, for a batch
of games in one jitted, vmapped scan.

Run: ``jaxalign reproduce mnpo-multiplayer`` (quick profile: a few seconds on a CPU).
"""

import dataclasses

import jax
import numpy as np

from jaxalign import games as G
from jaxalign import plotting
from jaxalign.experiment import Experiment, Result


@dataclasses.dataclass(frozen=True)
class Config:
    num_games: int = 32  # random games per setting
    num_responses: int = 6  # K (the n-player tensor has K**n entries)
    players: tuple[int, ...] = (2, 3, 5)  # n
    num_annotators: int = 4  # annotators in the heterogeneous mixture
    reward_scale: float = 2.0  # std of annotator rewards
    num_steps: int = 5000  # T
    step_size: float = 0.5  # MNPO's η
    fit_from: float = 0.01  # fit slopes on T ∈ [fit_from·T_max, T_max]
    seed: int = 0


def _games(cfg: Config, n: int, annotators: int):
    keys = jax.random.split(jax.random.key(cfg.seed), cfg.num_games)

    def make(key):
        r = jax.random.normal(key, (annotators, cfg.num_responses)) * cfg.reward_scale
        return G.plackett_luce_game(r, n)

    return jax.vmap(make)(keys)


def run(cfg: Config, track) -> Result:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    settings = [("homogeneous", 1), ("heterogeneous", cfg.num_annotators)]
    ts = np.arange(1, cfg.num_steps + 1)
    idx = np.unique(np.geomspace(1, cfg.num_steps, 300).astype(int)) - 1
    lo = max(1, int(cfg.fit_from * cfg.num_steps))
    fig, axes = plotting.figure(
        1,
        2,
        panel_size=(5.8, 4.4),
        sharey=True,
        suptitle=(
            f"MNPO (step size η = {cfg.step_size:g}, $n-1$ copies of $\\pi_t$ as opponents): "
            f"mean over {cfg.num_games} games, K = {cfg.num_responses}"
        ),
    )
    table: dict[str, list] = {"t": [int(t) for t in ts[idx]]}
    summary: dict[str, dict] = {"final_avg_gap": {}, "final_last_gap": {}, "avg_slope": {}}
    jobs = [(s, a, n) for s, a in settings for n in cfg.players]
    for name, annotators, n in track(jobs, "settings"):
        batch = _games(cfg, n, annotators)
        solver = G.mnpo(cfg.step_size, num_players=n, opponents="current")
        traj = jax.jit(jax.vmap(lambda g, s=solver: G.run(s, g, cfg.num_steps)))(batch)
        avg = np.maximum(np.asarray(traj.avg_gap), 1e-16)
        last = np.maximum(np.asarray(traj.last_gap), 1e-16)
        mean = avg.mean(0)
        slope = float(np.polyfit(np.log(ts[lo - 1 :]), np.log(mean[lo - 1 :]), 1)[0])
        key = f"{name}_n{n}"
        summary["final_avg_gap"][key] = float(mean[-1])
        summary["final_last_gap"][key] = float(last.mean(0)[-1])
        summary["avg_slope"][key] = slope
        table[f"{key}_avg"] = [float(x) for x in mean[idx]]
        table[f"{key}_last"] = [float(x) for x in last.mean(0)[idx]]
        ax = axes[0 if name == "homogeneous" else 1]
        q10, q90 = np.quantile(avg, [0.1, 0.9], axis=0)
        (line,) = ax.loglog(ts[idx], mean[idx], label=f"$n={n}$: slope {slope:+.2f}")
        plotting.band(ax, ts[idx], q10[idx], q90[idx], color=line.get_color())
        ax.loglog(ts[idx], last.mean(0)[idx], ls="--", color=line.get_color(), lw=1)
    fit_t = ts[idx][ts[idx] >= max(lo, ts[-1] // 10)]  # guides over the last decade
    for ax, (name, annotators) in zip(axes, settings, strict=True):
        ref = np.asarray([v for k, v in table.items() if k.startswith(name) and k.endswith("avg")])
        end = 4.0 * float(np.max(ref[:, -1]))  # guides ×4 above the curves, under the data
        plotting.reference_line(ax, fit_t, end * (fit_t / ts[-1]) ** -0.5, ls=":")
        plotting.reference_line(ax, fit_t, end * (fit_t / ts[-1]) ** -1.0, ls="--")
        ax.set_title(f"{name}: {annotators} Plackett–Luce annotator(s)")
        ax.set_ylim(bottom=1e-10)
        ax.set_xlabel("iterations $T$")
        ax.grid(True, which="both", alpha=0.3)
        plotting.legend(ax, loc="lower left", title="average iterate: fitted slope")
    axes[0].set_ylabel("multiplayer one-sided duality gap")
    grey = plotting.REFERENCE_COLOR
    keys = [
        Line2D([], [], color="k", label="average iterate (mean over games)"),
        Line2D([], [], color="k", ls="--", lw=1, label="last iterate (mean over games)"),
        Patch(color=grey, alpha=0.3, lw=0, label="average iterate, 10–90 % of games"),
        Line2D([], [], color=grey, ls=":", lw=1, label="slope $-1/2$ guide"),
        Line2D([], [], color=grey, ls="--", lw=1, label="slope $-1$ guide"),
    ]
    fig.legend(handles=keys, loc="outside lower center", ncols=5)
    return Result(figure=fig, table=table, summary=summary)


EXPERIMENT = Experiment(
    "mnpo-multiplayer",
    "MNPO paper: multiplayer duality gap vs T for n ∈ {2,3,5}, homogeneous vs heterogeneous",
    Config,
    run,
    headline=("avg_slope", "final_avg_gap"),
)


def main(argv=None):
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
