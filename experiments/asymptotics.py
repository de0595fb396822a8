"""Asymptotics of language model alignment: best-of-N vs KL-constrained RL.

Reproduces the central claim of "Asymptotics of Language Model Alignment" (Yang et al.,
2024) in the memoryless model: for sequences of m i.i.d. tokens with an additive reward,

(a) the reward–KL frontier of best-of-N (N = 1 … e^{m δ_max}) approaches the exact
    KL-constrained RL frontier as m grows (both per token), and
(b) at N = e^{mδ} the per-token best-of-N reward converges to x* with Λ*(x*) = δ — the
    per-token reward of the KL-RL optimum at budget mδ — with a gap ~ log m / m.

Everything is exact (log-domain convolution of the per-token reward law); nothing is sampled.

    jaxalign reproduce asymptotics --out results/asymptotics
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from jaxalign import kl, plotting
from jaxalign.experiment import Experiment, Result


@dataclasses.dataclass(frozen=True)
class Config:
    base_probs: tuple[float, ...] = (0.6, 0.3, 0.1)  # per-token base policy p
    token_rewards: tuple[float, ...] = (0.0, 1.0, 2.0)  # per-token reward (lattice)
    kl_per_token: float = 0.1  # δ; BoN uses N = e^{mδ}
    lengths: tuple[int, ...] = (10, 50, 200, 800)  # m values for the convergence panel
    frontier_lengths: tuple[int, ...] = (1, 4, 16, 64)  # m values for the frontier panel
    frontier_max_kl_per_token: float = 0.6  # right end of the frontier
    frontier_points: int = 20  # log-spaced N values per BoN curve

    def __post_init__(self):
        if len(self.base_probs) != len(self.token_rewards):
            raise ValueError(
                f"base_probs has {len(self.base_probs)} entries but token_rewards has "
                f"{len(self.token_rewards)}; expected one reward per token"
            )
        if abs(sum(self.base_probs) - 1) > 1e-9 or min(self.base_probs) < 0:
            raise ValueError(f"base_probs must be a probability vector, got {self.base_probs}")
        if self.kl_per_token <= 0:
            raise ValueError(f"kl_per_token must be > 0, got {self.kl_per_token}")
        if any(m < 1 for m in (*self.lengths, *self.frontier_lengths)):
            raise ValueError("lengths and frontier_lengths must be >= 1")
        if self.frontier_points < 2:
            raise ValueError(f"frontier_points must be >= 2, got {self.frontier_points}")


def run(config: Config, track) -> Result:
    with jax.enable_x64(True):
        return _run(config, track)


def _run(config: Config, track) -> Result:
    import matplotlib.pyplot as plt

    log_p = np.log(np.asarray(config.base_probs, np.float64))
    reward = np.asarray(config.token_rewards, np.float64)
    delta = config.kl_per_token
    rows: list[dict] = []

    # (a) Frontiers, per token. KL-RL's per-token frontier does not depend on m.
    max_kl = float(kl.max_kl(log_p, reward))
    budgets = np.linspace(0.0, min(config.frontier_max_kl_per_token, max_kl), 60)
    frontier = kl.reward_kl_frontier(log_p, reward, budgets)
    for d, r in zip(np.asarray(frontier.kl), np.asarray(frontier.reward)):
        rows.append(
            {"series": "kl_rl", "m": "", "log_n": "", "kl_per_token": d, "reward_per_token": r}
        )
    bon_curves = {}
    bound_excess = -math.inf  # max over frontier points of KL(π_N‖p) − (log N − (N−1)/N)
    for m in track(config.frontier_lengths, "best-of-N frontiers"):
        log_ns = np.linspace(0.0, m * config.frontier_max_kl_per_token, config.frontier_points)
        pts = []
        for log_n in log_ns:
            r_bon, kl_bon = kl.best_of_n_sequence(log_p, reward, m, math.exp(log_n))
            pts.append((float(kl_bon) / m, float(r_bon) / m))
            bound_excess = max(
                bound_excess, float(kl_bon) - float(kl.best_of_n_kl_bound(math.exp(log_n)))
            )
            rows.append(
                {
                    "series": "bon_frontier",
                    "m": m,
                    "log_n": log_n,
                    "kl_per_token": pts[-1][0],
                    "reward_per_token": pts[-1][1],
                }
            )
        bon_curves[m] = np.asarray(pts)

    # (b) Convergence of the per-token BoN reward at N = e^{mδ} to x*.
    conv = {"m": [], "bon_reward": [], "bon_kl": []}
    for m in track(config.lengths, "best-of-N at N = e^{m δ}"):
        r_bon, kl_bon = kl.best_of_n_sequence(log_p, reward, m, math.exp(m * delta))
        conv["m"].append(m)
        conv["bon_reward"].append(float(r_bon) / m)
        conv["bon_kl"].append(float(kl_bon) / m)
    x_star = float(kl.best_of_n_limit_per_token(log_p, reward, delta))
    x_rl = float(kl.kl_rl_reward_per_token(log_p, reward, delta))
    ms = np.asarray(conv["m"])
    gaps = x_star - np.asarray(conv["bon_reward"])
    for m, r, d, g in zip(ms, conv["bon_reward"], conv["bon_kl"], gaps):
        rows.append(
            {
                "series": "bon_at_n_exp_m_delta",
                "m": int(m),
                "log_n": m * delta,
                "kl_per_token": d,
                "reward_per_token": r,
                "gap_to_x_star": g,
            }
        )

    fig, axes = plotting.figure(
        1,
        3,
        panel_size=(5.0, 4.0),
        suptitle="Asymptotics of language model alignment: best-of-N ≈ KL-constrained RL",
    )
    ax = axes[0]
    ax.plot(
        np.asarray(frontier.kl),
        np.asarray(frontier.reward),
        "k-",
        lw=2.5,
        label="KL-RL (exact tilt)",
    )
    colors = plt.cm.viridis(np.linspace(0.1, 0.85, len(bon_curves)))
    for c, (m, pts) in zip(colors, bon_curves.items(), strict=True):
        ax.plot(pts[:, 0], pts[:, 1], "o-", ms=3, color=c, label=f"best-of-N, $m={m}$")
    ax.set_xlabel(r"$\mathrm{KL}(\pi\,\|\,p)\,/\,m$  (nats per token)")
    ax.set_ylabel(r"$E_\pi[R]\,/\,m$  (reward per token)")
    ax.set_title("(a) reward–KL frontier per token")
    plotting.legend(ax, loc="lower right")

    ax = axes[1]
    ax.semilogx(ms, conv["bon_reward"], "o-", label=r"best-of-N, $N = e^{m\delta}$")
    plotting.reference_line(
        ax,
        y=x_star,
        horizontal=True,
        color="k",
        label=rf"$x^* = {x_star:.4f}$, $\Lambda^*(x^*) = \delta$",
    )
    plotting.reference_line(
        ax,
        y=x_rl,
        horizontal=True,
        color="C1",
        ls=":",
        lw=1.6,
        label=rf"KL-RL at budget $m\delta$: {x_rl:.4f}",
    )
    plotting.expand_to(ax, x_star, pad=0.12)  # the limit x* inside the axes, not on the border
    ax.set_xlabel("sequence length $m$")
    ax.set_ylabel("reward per token")
    ax.set_title(rf"(b) per-token BoN reward $\to x^*$  ($\delta$ = {delta})")
    plotting.legend(ax, loc="lower right")

    ax = axes[2]
    ax.loglog(ms, gaps, "o-", label=r"$x^*$ − BoN reward per token")
    ref = gaps[0] * (np.log(ms) / ms) / (np.log(ms[0]) / ms[0])
    plotting.reference_line(ax, ms, ref, label=r"$\propto \log m\,/\,m$ (through the first point)")
    ax.set_xlabel("sequence length $m$")
    ax.set_ylabel("gap")
    ax.set_title("(c) gap to the KL-RL reward")
    plotting.legend(ax)
    ax.grid(True, which="both")

    scaled = gaps * ms / np.log(ms)
    summary = {
        "x_star": x_star,
        "kl_rl_reward_per_token": x_rl,
        "bon_reward_per_token": dict(
            zip(map(str, conv["m"]), np.round(conv["bon_reward"], 5).tolist())
        ),
        "gap_times_m_over_log_m": [float(v) for v in np.round(scaled, 4)],
        "gap_decreasing": bool(np.all(np.diff(gaps) < 0)),
        "max_bon_kl_minus_bound": bound_excess,
    }
    return Result(figure=fig, table=rows, summary=summary)


EXPERIMENT = Experiment(
    name="asymptotics",
    description=(
        "BoN vs KL-RL: reward–KL frontiers and per-token BoN reward → x* (Yang et al. 2024)"
    ),
    config_cls=Config,
    run=run,
    headline=("x_star", "bon_reward_per_token", "gap_times_m_over_log_m", "max_bon_kl_minus_bound"),
)


def main(argv=None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
