"""InfAlign: inference-aware alignment, exactly, on the enumerable testbed.

A reference policy π_ref over every response of the testbed (A tokens, length L: A^L
responses; a seeded Markov chain over tokens) and a reward additive over positions. For a
sweep of KL budgets Δ, the policies

* raw-reward RLHF               π ∝ π_ref·e^{r/β},
* calibrated RLHF               π ∝ π_ref·e^{C/β},  C = mid-rank win rate against π_ref,
* calibrate-and-transform       π ∝ π_ref·e^{Φ_t(C)/β},  Φ_t = e^{tu} (best-of-N) or
                                −e^{−tu} (worst-of-N), for fixed t and for t*(N, Δ) chosen
                                in calibrated space (the same for every model and reward),
* the exact optimum             of W^T − β·KL by mirror ascent (one run per β),

are scored EXACTLY by their inference-time win rate W^T (T = best-of-N / worst-of-N of π
against T(π_ref), ties ½) and KL(π‖π_ref). Panel (a) is the standard win rate (N = 1),
where calibrated RLHF is the optimum; (b) best-of-N; (c) worst-of-N; (d) the transform
parameter t* that the calibrated-space tool picks per budget.

    jaxalign reproduce infalign --out results/infalign

References: Balashankar, Sun et al., "InfAlign: Inference-aware language model
alignment", ICML 2025 (arXiv 2412.19792).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import kl
from jaxalign.experiment import Experiment, Result
from jaxalign.kl import infalign
from jaxalign.testbed import Testbed, additive_reward

_METHODS = ("raw", "calibrated", "tuned")  # the rewards KL-PG is trained on in panel (e)


@dataclasses.dataclass(frozen=True)
class Config:
    alphabet_size: int = 3  # tokens A
    response_length: int = 3  # L; A^L responses are enumerated
    seed: int = 0  # π_ref and the reward
    reference_concentration: float = 0.7  # Dirichlet α of π_ref's next-token conditionals
    reward_scale: float = 1.0  # std of the per-position token rewards
    reward_step: float = 0.0  # > 0: round rewards to multiples of this (reward ties)
    n: int = 4  # draws of best-of-N / worst-of-N
    max_kl: float = 1.5  # right end of the KL axis (capped below max_kl(π_ref, r))
    num_budgets: int = 41  # KL budgets on the curves
    show_ts: tuple[float, ...] = (2.0, 5.0, 10.0)  # fixed-t transforms drawn
    tune_ts: tuple[float, ...] = (0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30)
    num_points: int = 2049  # quadrature nodes of the calibrated-space tool
    optimum_betas: int = 40  # β values of the exact optimum (log-spaced)
    optimum_beta_range: tuple[float, float] = (0.01, 20.0)
    optimum_steps: int = 20000  # mirror-ascent steps per β
    headline_kl: float = 0.5  # the budget the summary reports
    # Panel (e): a tiny transformer π_ref on the same testbed, trained by KL-PG (the training
    # engine's PolicyGradientTask) on each method's reward, β solved for each budget.
    transformer_budgets: tuple[float, ...] = (0.5,)  # empty: no transformer panel
    transformer_methods: tuple[str, ...] = ("raw", "calibrated", "tuned")
    hidden_size: int = 32  # model width
    num_layers: int = 1  # model depth
    init_scale: float = 0.1  # weight std of the random reference (0.5: π_ref puts ~0.9 on one
    # response, and KL-PG's nearly constant groups let Adam drift onto that mode)
    pg_steps: int = 300  # engine steps per run
    pg_group_size: int = 32  # responses sampled per step (RLOO group)
    pg_learning_rate: float = 0.003

    def __post_init__(self):
        if self.n < 2:
            raise ValueError(f"n must be >= 2 (N = 1 is panel (a) already), got {self.n}")
        if self.max_kl <= 0 or self.headline_kl <= 0:
            raise ValueError(
                f"max_kl and headline_kl must be > 0, got {self.max_kl}, {self.headline_kl}"
            )
        if self.num_budgets < 3 or self.optimum_betas < 3:
            raise ValueError("num_budgets and optimum_betas must be >= 3")
        if self.reference_concentration <= 0 or self.reward_scale <= 0 or self.reward_step < 0:
            raise ValueError(
                "reference_concentration and reward_scale must be > 0 and reward_step >= 0"
            )
        if min(self.show_ts + self.tune_ts, default=1.0) <= 0 or not self.tune_ts:
            raise ValueError("show_ts and tune_ts must be non-empty and > 0")
        unknown = set(self.transformer_methods) - set(_METHODS)
        if unknown:
            raise ValueError(
                f"transformer_methods has unknown {sorted(unknown)}; expected some of {_METHODS}"
            )
        if min(self.transformer_budgets, default=1.0) <= 0 or self.pg_steps < 1:
            raise ValueError("transformer_budgets must be > 0 and pg_steps >= 1")
        lo, hi = self.optimum_beta_range
        if not 0 < lo < hi:
            raise ValueError(f"optimum_beta_range must satisfy 0 < lo < hi, got {lo, hi}")


def reference_and_reward(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """π_ref (a seeded Markov chain over tokens) and the additive reward, over all A^L responses."""
    testbed = Testbed(config.alphabet_size, config.response_length)
    rng = np.random.default_rng(config.seed)
    a = config.alphabet_size
    first = rng.dirichlet(np.full(a, config.reference_concentration))
    transition = rng.dirichlet(np.full(a, config.reference_concentration), size=a)
    seqs = np.asarray(testbed.responses())
    log_ref = np.log(first[seqs[:, 0]])
    for i in range(1, config.response_length):
        log_ref = log_ref + np.log(transition[seqs[:, i - 1], seqs[:, i]])
    log_ref = log_ref - np.logaddexp.reduce(log_ref)
    token_rewards = config.reward_scale * rng.standard_normal((config.response_length, a))
    reward = np.asarray(additive_reward(testbed, token_rewards), np.float64)
    if config.reward_step > 0:
        reward = np.round(reward / config.reward_step) * config.reward_step
    return log_ref, reward


def run(config: Config, track) -> Result:
    import matplotlib.pyplot as plt

    with jax.enable_x64(True):
        exact = _run(config, track)
    transformer = None
    if config.transformer_budgets and config.transformer_methods:
        t_of = dict(zip(exact["budgets"].tolist(), exact["tool"]["best"][0].tolist()))
        t_star = [t_of.get(float(d)) for d in config.transformer_budgets]
        if None in t_star:
            raise ValueError(
                f"transformer_budgets {config.transformer_budgets} must be below the KL axis end "
                f"{exact['budgets'][-1]:.3g} (max_kl and 0.95·max_kl(π_ref, r))"
            )
        # float32 training, the engine's own precision; exact scoring in float64.
        runs = _train_transformers(config, track, t_star)
        with jax.enable_x64(True):
            transformer = _score_transformers(config, runs, exact)
        exact["rows"] += transformer["rows"]
    fig = _figure(plt, config, exact, transformer)
    summary = _summary(config, exact)
    if transformer is not None:
        summary["transformer_best_of_n"] = transformer["summary"]
    return Result(figure=fig, table=exact["rows"], summary=summary)


# Module-level jitted pieces with static options: each compiles once per shape and option,
# whatever the number of series drawn.


@functools.partial(jax.jit, static_argnames="n")
def _scores(log_pis, log_ref, reward, n):
    """[P, 4] (KL, W₁, W_BoN, W_WoN) of a stack of policies."""

    def one(log_pi):
        return jnp.stack(
            [
                kl.kl_divergence(log_pi, log_ref),
                infalign.inference_win_rate(log_pi, log_ref, reward, 1),
                infalign.inference_win_rate(log_pi, log_ref, reward, n, "best"),
                infalign.inference_win_rate(log_pi, log_ref, reward, n, "worst"),
            ]
        )

    return jax.vmap(one)(log_pis)


@jax.jit
def _raw_rlhf(log_ref, reward, budgets):
    return jax.vmap(lambda d: kl.kl_constrained_policy(log_ref, reward, d)[0])(budgets)


@functools.partial(jax.jit, static_argnames="transform")
def _transformed(log_ref, reward, budgets, ts, transform):
    """Calibrate-and-transform policies, one per (budget, t) pair."""
    fn = lambda d, t: infalign.calibrate_and_transform_policy(log_ref, reward, d, transform, t)[0]
    return jax.vmap(fn)(budgets, ts)


@functools.partial(jax.jit, static_argnames=("n", "procedure", "transform", "ts", "num_points"))
def _calibrated_space_tool(budgets, n, procedure, transform, ts, num_points):
    """Per budget: t* and its calibrated-space W, and calibrated RLHF's calibrated-space W."""

    def one(d):
        tuned = infalign.tune_transform(d, n, procedure, transform, ts, num_points=num_points)
        ident = infalign.calibrated_space_win_rate(d, n, procedure, num_points=num_points)
        return tuned.t, tuned.win_rate, ident.win_rate

    return jax.vmap(one)(budgets)


@functools.partial(jax.jit, static_argnames=("n", "procedure", "steps"))
def _optimum_curve(log_ref, reward, betas, n, procedure, steps):
    """(KL, W, residual) of the exact optimum per β, one mirror-ascent run each."""

    def one(beta):
        opt = infalign.inference_optimal_policy(
            log_ref, reward, beta, n, procedure, num_steps=steps
        )
        w = infalign.inference_win_rate(opt.log_policy, log_ref, reward, n, procedure)
        return kl.kl_divergence(opt.log_policy, log_ref), w, opt.residual

    return jax.vmap(one)(betas)


def _optimum_at(log_ref, reward, betas, budget, n, procedure, steps):
    """The β sweep, then the same number of β inside the bracket of ``budget`` (a concave
    frontier: interpolating on the refined grid is accurate to ~1e-6)."""
    kls, wins, res = map(np.asarray, _optimum_curve(log_ref, reward, betas, n, procedure, steps))
    above = np.flatnonzero(kls >= budget)  # KL decreases with β
    if above.size and above[-1] + 1 < len(betas):
        j = above[-1]
        fine = jnp.asarray(np.geomspace(betas[j], betas[j + 1], len(betas)))
        f_kls, f_wins, f_res = map(
            np.asarray, _optimum_curve(log_ref, reward, fine, n, procedure, steps)
        )
        order = np.argsort(f_kls)
        at = float(np.interp(budget, f_kls[order], f_wins[order]))
        res = np.concatenate([res, f_res])
    else:
        at = float("nan")
    return (kls, wins, res), at


def _curves(config: Config, log_ref, reward, budgets, tool):
    """Every policy on the curves (raw, calibrated, Φ_t for fixed and tuned t), scored in one
    call: ``(series [(name, ts)], {name: [B, 4] (KL, W₁, W_BoN, W_WoN)})``."""
    nb = budgets.shape[0]
    budgets_j = jnp.asarray(budgets)
    series: list[tuple[str, np.ndarray | None]] = [("raw-reward RLHF", None)]
    stacks = [_raw_rlhf(log_ref, reward, budgets_j)]
    series.append(("calibrated RLHF", np.ones(nb)))
    stacks.append(_transformed(log_ref, reward, budgets_j, jnp.ones(nb), "identity"))
    for procedure, transform in (("best", "exp"), ("worst", "neg_exp")):
        ts = [np.full(nb, t) for t in config.show_ts] + [tool[procedure][0]]
        names = [f"{transform} t={t:g}" for t in config.show_ts]
        names.append(f"tuned {transform}, {procedure}-of-N")
        series += list(zip(names, ts))
        stacks.append(
            _transformed(
                log_ref,
                reward,
                jnp.tile(budgets_j, len(ts)),
                jnp.asarray(np.concatenate(ts)),
                transform,
            )
        )
    scores = np.asarray(_scores(jnp.concatenate(stacks), log_ref, reward, config.n))
    return series, {name: scores[i * nb : (i + 1) * nb] for i, (name, _) in enumerate(series)}


def _run(config: Config, track) -> dict:
    n = config.n
    log_ref, reward = reference_and_reward(config)
    log_ref_j, reward_j = jnp.asarray(log_ref), jnp.asarray(reward)
    top = float(kl.max_kl(log_ref, reward))
    kl_end = min(config.max_kl, 0.95 * top)
    headline = min(config.headline_kl, kl_end)
    # The transformer panel's budgets join the grid: its t* and curves then reuse this part's
    # compiled functions (same shapes) — t* does not depend on the model or the reward.
    extra = [headline, *(d for d in config.transformer_budgets if d <= kl_end)]
    budgets = np.unique(np.append(np.linspace(0.0, kl_end, config.num_budgets), extra))
    budgets_j = jnp.asarray(budgets)

    # t*(N, Δ) from the calibrated-space tool (model- and reward-free).
    tool = {}
    for procedure, transform in track((("best", "exp"), ("worst", "neg_exp")), "tuning t"):
        out = _calibrated_space_tool(
            budgets_j, n, procedure, transform, tuple(config.tune_ts), config.num_points
        )
        tool[procedure] = tuple(map(np.asarray, out))  # (t*, W tuned, W identity)
    series, curves = _curves(config, log_ref_j, reward_j, budgets, tool)
    rows: list[dict] = []
    for name, ts in series:
        for b, (d, w1, wb, ww) in enumerate(curves[name]):
            t_val = "" if ts is None else float(ts[b])
            rows.append(
                {"series": name, "t": t_val, "kl": d, "win_n1": w1, "win_bon": wb, "win_won": ww}
            )

    betas = np.geomspace(*config.optimum_beta_range, config.optimum_betas)
    optimum, optimum_at = {}, {}
    for procedure in track(("best", "worst"), "exact optimum"):
        optimum[procedure], optimum_at[procedure] = _optimum_at(
            log_ref_j, reward_j, betas, headline, n, procedure, config.optimum_steps
        )
        kls, wins, res = optimum[procedure]
        col = "win_bon" if procedure == "best" else "win_won"
        for beta, d, w, r in zip(betas, kls, wins, res):
            rows.append(
                {
                    "series": f"optimum {procedure}-of-N",
                    "beta": beta,
                    "kl": d,
                    col: w,
                    "residual": r,
                }
            )

    return dict(budgets=budgets, headline=headline, curves=curves, optimum=optimum,
                optimum_at=optimum_at, tool=tool, top=top, betas=betas, rows=rows)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Panel (e): a transformer trained by KL-PG on each method's reward (the training engine).


def _pg_config(config: Config, out_dir):
    from jaxalign.train import testbed_run_config

    return testbed_run_config(
        {"name": "kl_pg", "beta": 1.0,  # replaced once π_ref is known
         "group_size": config.pg_group_size, "baseline": "leave_one_out", "estimator": "k2",
         "kl_mode": "loss"},
        alphabet_size=config.alphabet_size, response_length=config.response_length,
        hidden_size=config.hidden_size, num_layers=config.num_layers,
        init_scale=config.init_scale, steps=config.pg_steps, seed=config.seed, out_dir=out_dir,
        online={"batch_size": 1, "learning_rate": config.pg_learning_rate, "adam_eps": 1e-8},
        testbed={"preference": "bradley_terry", "reward_scale": config.reward_scale,
                 "seed": config.seed},
    )  # fmt: skip


def _method_reward(method: str, log_ref, raw, budget: float, t_star: float):
    """The reward KL-PG is trained on, rescaled to [0, 1] (an affine map: the same tilts),
    and the β whose tilt of π_ref has KL = ``budget``."""
    if method == "raw":
        phi = raw
    else:
        c = np.asarray(infalign.calibrated_reward(log_ref, raw))
        phi = c if method == "calibrated" else np.exp(t_star * c)
    phi = (phi - phi.min()) / (phi.max() - phi.min())
    _, beta = kl.kl_constrained_policy(log_ref, phi, budget)
    return phi, float(beta)


def _train_transformers(config: Config, track, t_star) -> list[dict]:
    """One engine run of KL-PG per (method, budget) from the same random π_ref."""
    import tempfile
    from pathlib import Path

    from jaxalign.train.engine import run as engine_run
    from jaxalign.train.tasks.policy_gradient import PolicyGradientTask

    def reward_from_reference(method, budget, t, info):
        """KL-PG's reward (and β) from π_ref's exact distribution, recorded in ``info``."""

        def make(log_ref32, raw32):
            with jax.enable_x64(True):
                log_ref = np.asarray(jax.nn.log_softmax(jnp.asarray(log_ref32, jnp.float64)))
                raw = np.asarray(raw32, np.float64)
                phi, beta = _method_reward(method, log_ref, raw, budget, t)
            info.update(log_ref=log_ref, raw=raw, phi=phi, beta=beta)
            return phi, beta

        return make

    runs = []
    jobs = [(m, b, t) for b, t in zip(config.transformer_budgets, t_star)
            for m in config.transformer_methods]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="infalign-") as tmp:
        for i, (method, budget, t) in enumerate(track(jobs, "KL-PG runs")):
            info = {}
            make = reward_from_reference(method, budget, float(t), info)
            factory = lambda ctx, make=make: PolicyGradientTask(ctx, testbed_reward=make)
            result = engine_run(_pg_config(config, Path(tmp) / f"run-{i}"), factory, quiet=True)
            log_pi = np.asarray(result.task.exact_log_probs(result.state.params), np.float64)
            runs.append(dict(method=method, budget=float(budget), t=float(t), log_pi=log_pi,
                             **info))  # fmt: skip
    return runs


def _score_transformers(config: Config, runs: list[dict], exact: dict) -> dict:
    """Exact BoN_N win rate and KL of every trained policy, next to the exact curves of the
    same (transformer) π_ref: raw, calibrated, tuned e^{tu}, and the exact optimum."""
    n = config.n
    log_ref, raw = runs[0]["log_ref"], runs[0]["raw"]
    log_ref_j, raw_j = jnp.asarray(log_ref), jnp.asarray(raw)
    budgets = exact["budgets"]
    _, all_curves = _curves(config, log_ref_j, raw_j, budgets, exact["tool"])
    curves = {
        "raw": all_curves["raw-reward RLHF"],
        "calibrated": all_curves["calibrated RLHF"],
        "tuned": all_curves["tuned exp, best-of-N"],
    }
    betas = np.geomspace(*config.optimum_beta_range, config.optimum_betas)
    kls, wins, _ = map(
        np.asarray, _optimum_curve(log_ref_j, raw_j, betas, n, "best", config.optimum_steps)
    )
    trained = []
    rows = []
    for r in runs:
        log_pi = np.asarray(jax.nn.log_softmax(jnp.asarray(r["log_pi"])))
        target = np.asarray(kl.tilted_policy(log_ref, r["phi"], r["beta"]))
        out = dict(
            method=r["method"],
            budget=r["budget"],
            kl=float(kl.kl_divergence(log_pi, log_ref)),
            win_bon=float(infalign.inference_win_rate(log_pi, log_ref, raw, n)),
            target_win_bon=float(infalign.inference_win_rate(target, log_ref, raw, n)),
            kl_to_target=float(kl.kl_divergence(log_pi, target)),
        )
        trained.append(out)
        rows.append({"series": f"transformer {r['method']}", "t": r["t"], "beta": r["beta"],
                     "kl": out["kl"], "win_bon": out["win_bon"],
                     "kl_to_target": out["kl_to_target"]})  # fmt: skip
    summary = {
        f"{o['method']} @ {o['budget']:g}": {
            k: round(o[k], 4) for k in ("kl", "win_bon", "target_win_bon", "kl_to_target")
        }
        for o in trained
    }
    return dict(curves=curves, optimum=(kls, wins), trained=trained, rows=rows,
                summary=summary, budgets=budgets)  # fmt: skip


def _summary(config, exact):
    n = config.n
    budgets, headline, curves = exact["budgets"], exact["headline"], exact["curves"]
    optimum, optimum_at, tool = exact["optimum"], exact["optimum_at"], exact["tool"]
    top, betas = exact["top"], exact["betas"]
    i = int(np.argmin(np.abs(budgets - headline)))
    col = {"n1": 1, "best": 2, "worst": 3}

    def at(name, which):
        return round(float(curves[name][i, col[which]]), 4)

    out = {"kl": round(float(budgets[i]), 4), "max_kl_of_reference": round(top, 4)}
    out["standard_win_rate_n1"] = {
        "raw_reward_rlhf": at("raw-reward RLHF", "n1"),
        "calibrated_rlhf": at("calibrated RLHF", "n1"),
    }
    gains, excess = {}, {}
    for procedure, transform in (("best", "exp"), ("worst", "neg_exp")):
        kls, wins, res = optimum[procedure]
        m = len(betas)
        # Weak duality: W(π) ≤ W(π*_β) + β (KL(π) − KL(π*_β)) for every β and every π.
        worst_excess = -np.inf
        for curve in curves.values():
            bound = np.min(wins[None, :m] + betas[None, :] * (curve[:, :1] - kls[None, :m]), axis=1)
            worst_excess = max(worst_excess, float(np.max(curve[:, col[procedure]] - bound)))
        excess[procedure] = worst_excess
        tuned = at(f"tuned {transform}, {procedure}-of-N", procedure)
        calibrated = at("calibrated RLHF", procedure)
        out[f"{procedure}_of_{n}"] = {
            "raw_reward_rlhf": at("raw-reward RLHF", procedure),
            "calibrated_rlhf": calibrated,
            **{
                f"{transform} t={t:g}": at(f"{transform} t={t:g}", procedure)
                for t in config.show_ts
            },
            "tuned_t": float(tool[procedure][0][i]),
            "tuned": tuned,
            "exact_optimum": round(optimum_at[procedure], 4),
            "calibrated_space_identity": round(float(tool[procedure][2][i]), 4),
            "calibrated_space_tuned": round(float(tool[procedure][1][i]), 4),
            "optimum_max_residual": float(np.max(res)),
        }
        gains[procedure] = round(100 * (tuned - calibrated), 2)
        out[f"{procedure}_of_{n}"]["optimum_minus_tuned"] = float(
            optimum_at[procedure]
            - curves[f"tuned {transform}, {procedure}-of-N"][i, col[procedure]]
        )
    out["tuned_minus_calibrated_points"] = gains
    out["max_excess_over_optimum_duality_bound"] = excess
    return out


def _figure(plt, config, exact, transformer):
    n = config.n
    budgets, curves, optimum, tool = (exact[k] for k in ("budgets", "curves", "optimum", "tool"))
    cols = 3 if transformer is not None else 2
    fig, axes = plt.subplots(2, cols, figsize=(6.2 * cols, 9.5))
    styles = {
        "raw-reward RLHF": dict(color="tab:red", ls="--", lw=2),
        "calibrated RLHF": dict(color="tab:blue", lw=2),
    }
    tex = {"exp": r"$e^{tu}$", "neg_exp": r"$-e^{-tu}$"}

    def base(ax, col):
        for name, st in styles.items():
            ax.plot(curves[name][:, 0], curves[name][:, col], label=name, **st)

    # (a) Standard win rate: calibrated RLHF is the exact optimum.
    ax = axes[0, 0]
    base(ax, 1)
    t0 = config.show_ts[len(config.show_ts) // 2]
    for transform, c in (("exp", "tab:green"), ("neg_exp", "tab:purple")):
        curve = curves[f"{transform} t={t0:g}"]
        ax.plot(curve[:, 0], curve[:, 1], color=c, lw=1.2, label=f"{tex[transform]}, t={t0:g}")
    ax.set_title("(a) standard win rate (N = 1): calibrated RLHF is optimal")
    ax.set_ylabel(r"win rate of $\pi$ vs $\pi_{\mathrm{ref}}$")

    for ax, procedure, transform, col, label in (
        (axes[0, 1], "best", "exp", 2, "BoN"),
        (axes[1, 0], "worst", "neg_exp", 3, "WoN"),
    ):
        base(ax, col)
        shades = plt.cm.Greens if transform == "exp" else plt.cm.Purples
        for k, t in enumerate(config.show_ts):
            c = shades(0.4 + 0.4 * k / max(1, len(config.show_ts) - 1))
            curve = curves[f"{transform} t={t:g}"]
            ax.plot(curve[:, 0], curve[:, col], color=c, lw=1.2, label=f"{tex[transform]}, t={t:g}")
        tuned = curves[f"tuned {transform}, {procedure}-of-N"]
        ax.plot(
            tuned[:, 0],
            tuned[:, col],
            color="tab:orange",
            lw=2.5,
            label=f"{tex[transform]}, tuned $t^*$",
        )
        kls, wins, _ = optimum[procedure]
        keep = kls <= budgets[-1] * 1.02
        order = np.argsort(kls[keep])
        ax.plot(kls[keep][order], wins[keep][order], "k:", lw=2.2, label="exact optimum")
        what = "best" if procedure == "best" else "worst"
        ax.set_title(f"({'b' if procedure == 'best' else 'c'}) {what}-of-{n} win rate")
        ax.set_ylabel(
            rf"win rate of $\mathrm{{{label}}}_{n}(\pi)$ vs $\mathrm{{{label}}}_{n}"
            r"(\pi_{\mathrm{ref}})$"
        )

    for ax in (axes[0, 0], axes[0, 1], axes[1, 0]):
        ax.set_xlabel(r"KL$(\pi\,\|\,\pi_{\mathrm{ref}})$ (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")

    # (d) The calibrated-space tool: t* per budget (Δ = 0 left out: every t gives π_ref).
    ax = axes[1, 1]
    pos = budgets > 0
    for procedure, transform, marker, c in (
        ("best", "exp", "o-", "tab:green"),
        ("worst", "neg_exp", "s-", "tab:purple"),
    ):
        ax.plot(
            budgets[pos],
            tool[procedure][0][pos],
            marker,
            ms=3,
            color=c,
            label=f"{procedure}-of-{n}: {tex[transform]}",
        )
    ax.set_xlabel(r"KL budget $\Delta$ (nats)")
    ax.set_ylabel(r"tuned $t^*(N, \Delta)$")
    ax.set_title("(d) the transform the calibrated-space tool picks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if transformer is not None:
        _transformer_panels(plt, config, axes[0, 2], axes[1, 2], transformer)
    a, length = config.alphabet_size, config.response_length
    fig.suptitle(
        f"InfAlign on the testbed (${a}^{{{length}}} = {a**length}$ responses), all scores exact"
    )
    fig.tight_layout()
    return fig


_METHOD_STYLE = {
    "raw": ("raw-reward RLHF", "tab:red"),
    "calibrated": ("calibrated RLHF", "tab:blue"),
    "tuned": (r"$e^{tu}$, tuned $t^*$", "tab:orange"),
}


def _transformer_panels(plt, config, ax, ax_fit, transformer):
    n = config.n
    for method, (label, color) in _METHOD_STYLE.items():
        curve = transformer["curves"][method]
        ls = "--" if method == "raw" else "-"
        ax.plot(curve[:, 0], curve[:, 2], ls, color=color, lw=1.8, label=f"{label} (exact)")
    kls, wins = transformer["optimum"]
    keep = kls <= transformer["budgets"][-1] * 1.02
    order = np.argsort(kls[keep])
    ax.plot(kls[keep][order], wins[keep][order], "k:", lw=2.2, label="exact optimum")
    for o in transformer["trained"]:
        ax.plot(o["kl"], o["win_bon"], "o", ms=9, color=_METHOD_STYLE[o["method"]][1], mec="k")
    ax.plot(
        [], [], "o", ms=9, color="0.7", mec="k", label="transformer after KL-PG (colour: reward)"
    )
    ax.set_title(f"(e) transformer π_ref: KL-PG on each reward, best-of-{n}")
    ax.set_xlabel(r"KL$(\pi\,\|\,\pi_{\mathrm{ref}})$ (nats)")
    ax.set_ylabel(
        rf"win rate of $\mathrm{{BoN}}_{n}(\pi)$ vs $\mathrm{{BoN}}_{n}(\pi_{{\mathrm{{ref}}}})$"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")

    trained = transformer["trained"]
    labels = [f"{o['method']}\nΔ={o['budget']:g}" for o in trained]
    x = np.arange(len(trained))
    gains = [o["win_bon"] - o["target_win_bon"] for o in trained]
    ax_fit.bar(x, [o["kl_to_target"] for o in trained],
               color=[_METHOD_STYLE[o["method"]][1] for o in trained])  # fmt: skip
    ax_fit.set_xticks(x, labels, fontsize=8)
    ax_fit.set_ylabel(r"KL$(\pi_{\mathrm{trained}}\,\|\,\pi^*_\beta)$ (nats)")
    ax_fit.set_title(r"(f) trained vs its Gibbs target $\pi^*_\beta$ (ΔW: trained − target)")
    ax_fit.set_xlabel(f"reward and KL budget Δ ({config.pg_steps} KL-PG steps each)")
    for xi, o, g in zip(x, trained, gains):
        ax_fit.annotate(f"ΔW={g:+.3f}", (xi, o["kl_to_target"]), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")  # fmt: skip
    ax_fit.grid(alpha=0.3, axis="y")


EXPERIMENT = Experiment(
    name="infalign",
    description=(
        "InfAlign: best-of-N / worst-of-N win rate vs KL for raw, calibrated and transformed "
        "RLHF and the exact optimum (Balashankar, Sun et al. 2025)"
    ),
    config_cls=Config,
    run=run,
)


def main(argv=None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
