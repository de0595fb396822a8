"""Trajectories of GD, MGDA, PCGrad, CAGrad and RACO on the two-objective CAGrad toy.

Reproduces the toy figure of Liu et al. 2021 ("Conflict-Averse Gradient Descent for
Multi-task Learning", Fig. 1): two losses on R² whose gradients conflict over most of
the plane. Above the x₂ = 0 ridge each loss is a log-valley (a narrow canyon where
gradient descent on the average crawls); below it both are quadratic bowls
centred at x₁ = ±7, so the Pareto set is a curve through the average loss's
minimiser at x₁ = 0. The paper's claim: gradient descent on the average (with Adam)
can stall on the plateau, MGDA and PCGrad stop at whatever Pareto point the start
leads to, and CAGrad reaches the minimiser of the average loss from every start.
RACO (clipped CAGrad, Chen et al. 2026) with uniform user weights is shown too.

Every method is an optax aggregator chained with Adam (the paper's optimiser),
run for all starts in one jitted ``vmap``-ed ``scan``.

Run: ``jaxalign reproduce cagrad-toy`` (quick ≈ 10 s on a 2-core CPU; ``--profile
full`` uses the paper's 100k steps at learning rate 1e-3, ≈ 30 s).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxalign.multiobjective as mo
from jaxalign import plotting
from jaxalign.experiment import Experiment, Result

Method = Literal["gd", "mgda", "pcgrad", "cagrad", "raco"]
LABELS = {"gd": "GD (Adam)", "mgda": "MGDA", "pcgrad": "PCGrad", "cagrad": "CAGrad", "raco": "RACO"}
COLORS = {
    "gd": "tab:blue",
    "mgda": "tab:purple",
    "pcgrad": "tab:orange",
    "cagrad": "tab:red",
    "raco": "tab:green",
}
# log(max(|u|, FLOOR)) keeps the log-valleys finite, as in the paper's toy.
FLOOR = 5e-6


@dataclasses.dataclass(frozen=True)
class Config:
    num_steps: int = 100_000  # Adam steps per trajectory
    learning_rate: float = 1e-3  # Adam step size (the paper uses 1e-3)
    c: float = 0.5  # CAGrad / RACO radius factor
    rescale: Literal["none", "1+c", "1+c^2"] = "1+c"  # CAGrad direction scaling (paper's toy)
    raco_weights: tuple[float, float] = (0.5, 0.5)  # user weights for RACO
    methods: tuple[Method, ...] = ("gd", "mgda", "pcgrad", "cagrad", "raco")
    starts: tuple[tuple[float, float], ...] = (
        (-8.5, 7.5),
        (0.0, 0.0),
        (9.0, 9.0),
        (-7.5, -0.5),
        (9.0, -1.0),
    )
    record_every: int = 100  # keep every n-th iterate for the figure and the CSV
    tolerance: float = 0.1  # distance to the minimiser of the average that counts as reached
    seed: int = 0  # PCGrad's projection-order key


def toy_losses(x: jax.Array) -> jax.Array:
    """The two objectives ``[L1(x), L2(x)]`` at ``x ∈ R²``."""
    x1, x2 = x[0], x[1]
    valley1 = jnp.log(jnp.maximum(jnp.abs(0.5 * (-x1 - 7) - jnp.tanh(-x2)), FLOOR)) + 6
    valley2 = jnp.log(jnp.maximum(jnp.abs(0.5 * (-x1 + 3) + jnp.tanh(-x2) + 2), FLOOR)) + 6
    bowl1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    bowl2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    upper = jnp.maximum(jnp.tanh(x2 / 2), 0)  # the log-valleys live above x2 = 0
    lower = jnp.maximum(jnp.tanh(-x2 / 2), 0)  # the bowls below
    return jnp.stack([valley1 * upper + bowl1 * lower, valley2 * upper + bowl2 * lower])


def _aggregator(method: str, cfg: Config):
    half = jnp.full((2,), 0.5, jnp.float32)
    if method == "gd":
        return mo.weighted_sum(half)
    if method == "mgda":
        return mo.mgda(num_objectives=2)
    if method == "pcgrad":  # the paper's toy averages the projected gradients
        return mo.pcgrad(num_objectives=2, key=jax.random.key(cfg.seed), reduction="mean")
    if method == "cagrad":
        return mo.cagrad(cfg.c, num_objectives=2, rescale=cfg.rescale)
    return mo.raco(cfg.c, jnp.asarray(cfg.raco_weights, jnp.float32))


def _trajectories(method: str, cfg: Config, starts: jax.Array) -> np.ndarray:
    opt = optax.chain(_aggregator(method, cfg), optax.adam(cfg.learning_rate))
    every = max(1, cfg.record_every)
    chunks = cfg.num_steps // every

    def run_one(x0):
        def step(carry, _):
            x, state = carry
            grads = jax.jacrev(toy_losses)(x)  # [2 objectives, 2 coordinates]
            updates, state = opt.update(grads, state, x)
            return (optax.apply_updates(x, updates), state), None

        def chunk(carry, _):
            carry, _ = jax.lax.scan(step, carry, length=every)
            return carry, carry[0]

        _, xs = jax.lax.scan(chunk, (x0, opt.init(x0)), length=chunks)
        return jnp.concatenate([x0[None], xs])

    return np.asarray(jax.jit(jax.vmap(run_one))(starts))  # [starts, chunks + 1, 2]


def _minimiser() -> tuple[np.ndarray, float]:
    """Minimiser of the average loss (it lies below the ridge, near x = (0, −8.4))."""
    loss = lambda x: jnp.mean(toy_losses(x))
    opt = optax.adam(1e-2)

    def step(carry, _):
        x, s = carry
        u, s = opt.update(jax.grad(loss)(x), s, x)
        return (optax.apply_updates(x, u), s), None

    x0 = jnp.asarray([0.5, -7.0], jnp.float32)
    (x, _), _ = jax.jit(lambda x: jax.lax.scan(step, (x, opt.init(x)), length=3000))(x0)
    return np.asarray(x), float(loss(x))


def _pareto_curve() -> np.ndarray:
    """Pareto set below the ridge: minimisers of w·L1 + (1 − w)·L2 for w ∈ [0, 1]."""
    weights = jnp.linspace(0.0, 1.0, 41, dtype=jnp.float32)
    opt = optax.adam(1e-2)

    def solve(w):
        loss = lambda x: jnp.dot(jnp.stack([w, 1 - w]), toy_losses(x))
        x0 = jnp.asarray([0.0, -8.0], jnp.float32)

        def step(carry, _):
            x, s = carry
            u, s = opt.update(jax.grad(loss)(x), s, x)
            return (optax.apply_updates(x, u), s), None

        (x, _), _ = jax.lax.scan(step, (x0, opt.init(x0)), length=3000)
        return x

    return np.asarray(jax.jit(jax.vmap(solve))(weights))


def run(cfg: Config, track) -> Result:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    if cfg.num_steps < cfg.record_every:
        raise ValueError(
            f"num_steps ({cfg.num_steps}) must be >= record_every ({cfg.record_every})"
        )
    starts = jnp.asarray(cfg.starts, jnp.float32)
    # optax's Adam bias correction mixes a Python float with an int32 step count, which
    # strict dtype promotion (as in the test suite) rejects; the maths is unaffected.
    with jax.numpy_dtype_promotion("standard"):
        x_star, l_star = _minimiser()
        pareto = _pareto_curve()
        trajs = {m: _trajectories(m, cfg, starts) for m in track(cfg.methods, "methods")}
        avg = jax.jit(jax.vmap(jax.vmap(lambda x: jnp.mean(toy_losses(x)))))
        gaps = {m: np.asarray(avg(jnp.asarray(t))) - l_star for m, t in trajs.items()}
        min_norm = jax.jit(
            jax.vmap(lambda x: mo.mgda_direction(jax.jacrev(toy_losses)(x))[1].direction_norm)
        )
        stationarity = {m: np.asarray(min_norm(jnp.asarray(t[:, -1]))) for m, t in trajs.items()}

    steps = np.arange(trajs[cfg.methods[0]].shape[1]) * max(1, cfg.record_every)
    summary: dict = {"minimiser": x_star.round(4).tolist(), "average_loss_min": round(l_star, 5)}
    rows = []
    for m, t in trajs.items():
        dist = np.linalg.norm(t[:, -1] - x_star[None], axis=1)
        summary[f"{m}_reached_minimiser"] = int(np.sum(dist < cfg.tolerance))
        summary[f"{m}_final_gap_mean"] = float(np.mean(gaps[m][:, -1]))
        summary[f"{m}_pareto_stationary"] = int(np.sum(stationarity[m] < 1e-2))
        for s in range(t.shape[0]):
            for i in range(t.shape[1]):
                rows.append(
                    {
                        "method": m,
                        "start": s,
                        "step": int(steps[i]),
                        "x1": float(t[s, i, 0]),
                        "x2": float(t[s, i, 1]),
                        "average_loss_gap": float(gaps[m][s, i]),
                    }
                )
    summary["num_starts"] = len(cfg.starts)

    # Figure: one panel per method over the average loss, plus the gap curves.
    grid = np.linspace(-10, 10, 300)
    xx, yy = np.meshgrid(grid, grid)
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32)
    with jax.numpy_dtype_promotion("standard"):
        zz = np.asarray(jax.jit(jax.vmap(lambda x: jnp.mean(toy_losses(x))))(pts)).reshape(xx.shape)
    n = len(cfg.methods)
    fig, axes = plotting.panel_grid(
        n + 1,
        max_cols=3,
        panel_size=(4.3, 4.0),
        suptitle="CAGrad toy (Liu et al. 2021): trajectories on the contours of the average loss",
    )
    for ax, m in zip(axes, cfg.methods, strict=False):
        ax.contour(xx, yy, zz, levels=20, cmap="viridis", linewidths=0.8, zorder=plotting.Z_BAND)
        ax.plot(pareto[:, 0], pareto[:, 1], color="0.6", lw=4, alpha=0.7, zorder=plotting.Z_BAND)
        for s in range(trajs[m].shape[0]):
            t = trajs[m][s]
            ax.plot(t[:, 0], t[:, 1], color=COLORS[m], lw=1.5)
            ax.plot(t[0, 0], t[0, 1], "ko", ms=5)
            ax.plot(t[-1, 0], t[-1, 1], "o", color=COLORS[m], mec="k", ms=6, zorder=3)
        ax.plot(*x_star, marker="*", color="k", ms=14, ls="", zorder=4)
        reached = summary[f"{m}_reached_minimiser"]
        ax.set_title(f"{LABELS[m]}: {reached}/{len(cfg.starts)} reach the minimiser")
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_xticks(np.arange(-10, 11, 5))
        ax.set_yticks(np.arange(-10, 11, 5))
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.grid(False)
    ax = axes[n]
    for m in cfg.methods:
        ax.semilogy(steps, np.maximum(gaps[m].mean(0), 1e-6), color=COLORS[m], label=LABELS[m])
    ax.set_xlabel("Adam step")
    ax.xaxis.set_major_locator(MaxNLocator(5))  # long step counts: few ticks, no overlap
    ax.set_ylabel("average loss − its minimum\n(mean over starts, floored at $10^{-6}$)")
    ax.set_title(f"$c = {cfg.c}$, learning rate {cfg.learning_rate}")
    plotting.legend(ax)
    keys = [
        Line2D([], [], color="0.6", lw=4, alpha=0.7, label="Pareto set"),
        Line2D([], [], color="k", marker="*", ms=12, ls="", label="minimiser of the average loss"),
        Line2D([], [], color="k", marker="o", ms=5, ls="", label="start"),
        Line2D([], [], color="w", marker="o", mec="k", ms=6, ls="", label="end (method colour)"),
    ]
    fig.legend(handles=keys, loc="outside lower center", ncols=4)
    return Result(figure=fig, table=rows, summary=summary)


EXPERIMENT = Experiment(
    "cagrad-toy",
    "CAGrad toy (Liu et al. 2021 Fig. 1): GD/MGDA/PCGrad/CAGrad/RACO trajectories",
    Config,
    run,
    headline=(
        *(f"{m}_reached_minimiser" for m in LABELS),
        *(f"{m}_final_gap_mean" for m in LABELS),
        "num_starts",
    ),
)


def main(argv=None):
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
