"""Robust DPO under label noise: DPO, conservative DPO (label smoothing) and robust DPO.

Reproduces the claims of "Provably Robust DPO" (Chowdhury, Kini, Natarajan, ICML 2024) on the
enumerable testbed, exactly where possible:

(a) per pair, the population minimisers σ(βh*) = P̃ (DPO), (1−2ε)P̃ + ε (cDPO), P* (rDPO) —
    closed forms (lines) against the exact tabular population minimiser on the testbed
    (points: every pair of responses, pairs ~ π_ref², a Bradley–Terry gold reward);
(b) the exact distance KL(π‖π*) of each tabular population minimiser to the clean target
    π* = π_ref e^{r/β} at the same β, vs the flip rate ε;
(c, d) at matched KL (β re-tuned per loss and ε so that KL(π‖π_ref) = KL(π*‖π_ref)): the true
    reward E_π r and the distance KL(π‖π*) vs ε;
(e, f) log-linear policies on the testbed's own features (one-hot tokens per position, so the
    additive reward is exactly linear): the rDPO estimation error ‖ŵ − w*‖_Σ from n noisy
    pairs vs n (fitted slopes, ≈ −½) and vs 1/(1−2ε) (fitted slope, ≈ 1), against the exact
    sandwich prediction; plain DPO on noisy labels for contrast (biased: its error plateaus).

The tabular and log-linear parts are exact or Monte Carlo over the closed-form estimators; no
transformer is trained here.

    jaxalign reproduce robust-dpo-noise --out results/robust-dpo-noise
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import kl
from jaxalign.experiment import Experiment, Result
from jaxalign.losses import label_noise as LN
from jaxalign.testbed import Testbed, additive_reward

_LABELS = {"dpo": "DPO", "cdpo": "cDPO (label smoothing)", "rdpo": "rDPO"}
_COLORS = {"dpo": "C0", "cdpo": "C1", "rdpo": "C2"}


@dataclasses.dataclass(frozen=True)
class Config:
    alphabet_size: int = 4  # tokens A
    response_length: int = 3  # L; A^L responses
    reward_scale: float = 1.0  # std of the per-position token rewards R[i, a]
    ref_scale: float = 1.0  # std of π_ref's logits (tabular reference over all responses)
    seed: int = 0  # reward, π_ref and the Monte Carlo draws
    beta: float = 0.5  # β of the clean target π_ref e^{r/β}
    flip_rates: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4)  # ε
    scatter_flip_rate: float = 0.2  # ε of panel (a)
    beta_grid: int = 32  # β values (log-spaced) scanned for the matched-KL panels
    sample_sizes: tuple[int, ...] = (250, 500, 1000, 2000, 4000, 8000)  # n (log-linear)
    replicates: int = 64  # Monte Carlo data sets per (n, ε)
    newton_steps: int = 15  # Newton steps of the log-linear fits
    radius_factor: float = 5.0  # rDPO's θ-ball: ‖ŵ‖ ≤ radius_factor · ‖w*‖
    dpo_contrast_flip_rate: float = 0.3  # ε of the plain-DPO log-linear curve (0: none)

    def __post_init__(self):
        if any(not 0 <= e < 0.5 for e in self.flip_rates) or not self.flip_rates:
            raise ValueError(f"flip_rates must be in [0, 0.5), got {self.flip_rates}")
        if not 0 <= self.scatter_flip_rate < 0.5:
            raise ValueError(f"scatter_flip_rate must be in [0, 0.5), got {self.scatter_flip_rate}")
        if self.beta <= 0 or self.beta_grid < 4:
            raise ValueError("need beta > 0 and beta_grid >= 4")
        if len(self.sample_sizes) < 2 or min(self.sample_sizes) < 10:
            raise ValueError(f"need >= 2 sample_sizes, each >= 10, got {self.sample_sizes}")
        if not 0 <= self.dpo_contrast_flip_rate < 0.5:
            raise ValueError(
                f"dpo_contrast_flip_rate must be in [0, 0.5), got {self.dpo_contrast_flip_rate}"
            )
        if self.replicates < 2:
            raise ValueError(f"replicates must be >= 2, got {self.replicates}")


def run(config: Config, track) -> Result:
    with jax.enable_x64(True):
        return _run(config, track)


def _instance(config: Config):
    """(testbed, log π_ref [K], reward [K], token rewards [L, A], P [K, K])."""
    testbed = Testbed(config.alphabet_size, config.response_length)
    k_r, k_ref = jax.random.split(jax.random.key(config.seed))
    shape = (config.response_length, config.alphabet_size)
    token_rewards = jax.random.normal(k_r, shape, jnp.float64) * config.reward_scale
    r = additive_reward(testbed, token_rewards)
    log_ref = jax.nn.log_softmax(
        jax.random.normal(k_ref, (testbed.num_responses,), jnp.float64) * config.ref_scale
    )
    p = jax.nn.sigmoid(r[:, None] - r[None, :])
    return testbed, log_ref, r, token_rewards, p


@functools.partial(jax.jit, static_argnames="method")
def _sweep(log_ref, p, r, method, flip_rates, betas):
    """Tabular population minimisers over ε × β: (log π, grad max, KL to π_ref, reward)."""

    def one(eps, beta):
        lp, g = LN.tabular_population_minimiser(log_ref, p, method=method, flip_rate=eps, beta=beta)
        return lp, g, kl.kl_divergence(lp, log_ref), kl.expected_reward(lp, r)

    return jax.vmap(lambda e: jax.vmap(lambda b: one(e, b))(betas))(flip_rates)


@functools.partial(jax.jit, static_argnames=("n_max", "method", "reps", "steps"))
def _fits(key, x_pool, pool_cdf, w_true, n, n_max, eps, radius, method, reps, steps):
    """ŵ for `reps` data sets of n ≤ n_max pairs (the first n of n_max draws: one compilation)."""

    def one(k):
        k1, k2, k3 = jax.random.split(k, 3)
        # Inverse-CDF draws (categorical's Gumbel trick would build an [n, pool] array).
        idx = jnp.searchsorted(pool_cdf, jax.random.uniform(k1, (n_max,)) * pool_cdf[-1])
        x = x_pool[jnp.minimum(idx, x_pool.shape[0] - 1)]
        clean = jax.random.uniform(k2, (n_max,)) < jax.nn.sigmoid(x @ w_true)
        y = jnp.logical_xor(clean, jax.random.uniform(k3, (n_max,)) < eps).astype(x.dtype)
        mask = (jnp.arange(n_max) < n).astype(x.dtype)
        return LN.fit_loglinear(
            x, y, method=method, flip_rate=eps, num_steps=steps, radius=radius, weights=mask
        )

    return jax.vmap(one)(jax.random.split(key, reps))


def _matched(kls, values, target):
    """Interpolate values at KL = target along a β scan (KL decreasing in β)."""
    order = np.argsort(kls)
    return float(np.interp(target, kls[order], values[order]))


def _run(config: Config, track) -> Result:
    import matplotlib.pyplot as plt

    testbed, log_ref, r, token_rewards, p = _instance(config)
    eps_all = jnp.asarray(config.flip_rates, jnp.float64)
    beta0 = config.beta
    target = kl.tilted_policy(log_ref, r, beta0)
    target_kl = float(kl.kl_divergence(target, log_ref))
    target_reward = float(kl.expected_reward(target, r))
    ref_reward = float(kl.expected_reward(log_ref, r))
    # cDPO at ε = .4 flattens the fit by about (1 − 2ε)² = .04: scan β well below β0.
    betas = jnp.asarray(np.geomspace(beta0 * 0.01, beta0 * 2.0, config.beta_grid))
    i0 = int(np.argmin(np.abs(np.asarray(betas) - beta0)))
    betas = betas.at[i0].set(beta0)  # β0 itself on the grid: panel (b) reads it exactly

    rows, tab = [], {}
    for method in track(LN.METHODS, "tabular population minimisers"):
        lp, g, kls, rew = _sweep(log_ref, p, r, method, eps_all, betas)
        dist = jax.vmap(jax.vmap(lambda x: kl.kl_divergence(x, target)))(lp)
        tab[method] = dict(
            lp=lp,
            g=np.asarray(g),
            kl=np.asarray(kls),
            reward=np.asarray(rew),
            dist=np.asarray(dist),
        )
    matched = {m: {} for m in LN.METHODS}
    max_grad = 0.0
    for method, t in tab.items():
        for i, eps in enumerate(config.flip_rates):
            ok = t["g"][i] < 1e-8  # converged points only
            max_grad = max(max_grad, float(t["g"][i, i0]))
            rew_m = _matched(t["kl"][i, ok], t["reward"][i, ok], target_kl)
            dist_m = _matched(t["kl"][i, ok], t["dist"][i, ok], target_kl)
            beta_m = float(
                np.exp(_matched(t["kl"][i, ok], np.log(np.asarray(betas)[ok]), target_kl))
            )
            matched[method][eps] = (rew_m, dist_m, beta_m)
            rows.append(
                {
                    "part": "tabular",
                    "method": method,
                    "flip_rate": eps,
                    "kl_to_target_same_beta": float(t["dist"][i, i0]),
                    "kl_to_ref_same_beta": float(t["kl"][i, i0]),
                    "reward_same_beta": float(t["reward"][i, i0]),
                    "reward_matched_kl": rew_m,
                    "kl_to_target_matched_kl": dist_m,
                    "beta_matched_kl": beta_m,
                }
            )

    # (a) learned σ(βh) per pair vs P* at ε_s (tabular minimisers at β0).
    eps_s = config.scatter_flip_rate
    scatter = {}
    for method in LN.METHODS:
        lp, _ = LN.tabular_population_minimiser(
            log_ref, p, method=method, flip_rate=eps_s, beta=beta0
        )
        h = (lp - log_ref)[:, None] - (lp - log_ref)[None, :]
        scatter[method] = np.asarray(jax.nn.sigmoid(beta0 * h)).ravel()
    p_flat = np.asarray(p).ravel()

    # (e, f) log-linear estimation on the testbed's features.
    a, length = config.alphabet_size, config.response_length
    onehot = np.asarray(jax.nn.one_hot(testbed.responses(), a, dtype=jnp.float64))
    phi = onehot[:, :, 1:].reshape(testbed.num_responses, length * (a - 1))  # drop token 0
    w_true = jnp.asarray(
        (np.asarray(token_rewards)[:, 1:] - np.asarray(token_rewards)[:, :1]).ravel()
    )
    x_pool = jnp.asarray((phi[:, None, :] - phi[None, :, :]).reshape(-1, phi.shape[1]))
    pool_w = (np.exp(np.asarray(log_ref))[:, None] * np.exp(np.asarray(log_ref))[None, :]).ravel()
    pool_cdf = jnp.cumsum(jnp.asarray(pool_w))
    np.testing.assert_allclose(
        np.asarray(x_pool @ w_true),
        (np.asarray(r)[:, None] - np.asarray(r)[None, :]).ravel(),
        atol=1e-9,
    )
    sigma = jnp.einsum("m,md,me->de", jnp.asarray(pool_w), x_pool, x_pool)
    d = int(w_true.shape[0])
    ns = np.asarray(config.sample_sizes)
    n_max = int(ns.max())
    radius = config.radius_factor * float(jnp.linalg.norm(w_true))
    key = jax.random.key(config.seed + 1)

    def rms(w_hat):
        diff = w_hat - w_true[None, :]
        return float(jnp.sqrt(jnp.mean(jnp.einsum("rd,de,re->r", diff, sigma, diff))))

    errors, predicted = {}, {}
    jobs = [("rdpo", e) for e in config.flip_rates]
    if config.dpo_contrast_flip_rate > 0:
        jobs.append(("dpo", config.dpo_contrast_flip_rate))
    for method, eps in track(jobs, "log-linear fits"):
        errs = []
        for n in ns:
            k = jax.random.fold_in(jax.random.fold_in(key, int(n)), round(eps * 1000))
            w_hat = _fits(
                k,
                x_pool,
                pool_cdf,
                w_true,
                int(n),
                n_max,
                eps,
                radius,
                method,
                config.replicates,
                config.newton_steps,
            )
            errs.append(rms(w_hat))
        errors[method, eps] = np.asarray(errs)
        if method == "rdpo":
            cov = LN.rdpo_asymptotic_covariance(
                x_pool, w_true, flip_rate=eps, weights=jnp.asarray(pool_w)
            )
            predicted[eps] = np.sqrt(float(jnp.trace(sigma @ cov)) / ns)
        for n, e in zip(ns, errs, strict=True):
            rows.append(
                {
                    "part": "loglinear",
                    "method": method,
                    "flip_rate": eps,
                    "n": int(n),
                    "rms_error_sigma": e,
                    "sandwich_prediction": float(predicted[eps][list(ns).index(n)])
                    if method == "rdpo"
                    else "",
                }
            )
    # Slopes over the larger half of the sample sizes: at small n and large ε the error is
    # pre-asymptotic (heavy-tailed fits held in by the θ-ball), which steepens a full fit.
    upper = slice(len(ns) // 2, None)
    slopes_n = {
        eps: float(np.polyfit(np.log(ns[upper]), np.log(errors["rdpo", eps][upper]), 1)[0])
        for eps in config.flip_rates
    }
    inv = np.asarray([1 / (1 - 2 * e) for e in config.flip_rates])
    err_at_max = np.asarray([errors["rdpo", e][-1] for e in config.flip_rates])
    pred_at_max = np.asarray([predicted[e][-1] for e in config.flip_rates])
    slope_eps = float(np.polyfit(np.log(inv), np.log(err_at_max), 1)[0])
    slope_eps_pred = float(np.polyfit(np.log(inv), np.log(pred_at_max), 1)[0])
    small_margin = 2 * np.sqrt(d / ns)  # the w* → 0 limit of the sandwich at ε = 0

    # ------------------------------------------------------------------ figure
    fig, axes = plt.subplots(2, 3, figsize=(16, 9.2))
    eps_list = list(config.flip_rates)

    ax = axes[0, 0]
    grid = np.linspace(0, 1, 101)
    for method in LN.METHODS:
        closed = np.asarray(LN.population_target(jnp.asarray(grid), method=method, flip_rate=eps_s))
        ax.plot(
            grid, closed, color=_COLORS[method], lw=1.5, label=f"{_LABELS[method]} (closed form)"
        )
        ax.plot(p_flat[::7], scatter[method][::7], ".", color=_COLORS[method], ms=3, alpha=0.5)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel(r"clean preference $P^*(a \succ b)$")
    ax.set_ylabel(r"learned $\sigma(\beta h^*)$")
    ax.set_title(rf"(a) population minimisers, $\varepsilon={eps_s:g}$ (dots: testbed pairs)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)

    ax = axes[0, 1]
    for method in LN.METHODS:
        y = [
            r_["kl_to_target_same_beta"]
            for r_ in rows
            if r_["part"] == "tabular" and r_["method"] == method
        ]
        ax.plot(eps_list, np.maximum(y, 1e-16), "o-", color=_COLORS[method], label=_LABELS[method])
    ax.set_yscale("log")
    ax.set_xlabel(r"flip rate $\varepsilon$")
    ax.set_ylabel(r"KL$(\pi \,\|\, \pi^*)$  [nats]")
    ax.set_title(rf"(b) distance to the clean target, same $\beta={beta0:g}$")
    ax.legend(fontsize=8, loc="center right")
    ax.grid(alpha=0.3, which="both")

    ax = axes[0, 2]
    for method in LN.METHODS:
        ax.plot(
            eps_list,
            [matched[method][e][0] for e in eps_list],
            "o-",
            color=_COLORS[method],
            label=_LABELS[method],
        )
    ax.axhline(target_reward, color="k", ls="--", lw=1, label=r"clean target $\pi^*$")
    ax.set_xlabel(r"flip rate $\varepsilon$")
    ax.set_ylabel(r"true reward $E_\pi[r]$")
    ax.set_title(rf"(c) reward at matched KL $= {target_kl:.3f}$")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)

    ax = axes[1, 0]
    for method in LN.METHODS:
        y = [max(matched[method][e][1], 1e-16) for e in eps_list]
        ax.plot(eps_list, y, "o-", color=_COLORS[method], label=_LABELS[method])
    ax.set_yscale("log")
    ax.set_xlabel(r"flip rate $\varepsilon$")
    ax.set_ylabel(r"KL$(\pi \,\|\, \pi^*)$  [nats]")
    ax.set_title("(d) distance to the clean target at matched KL")
    ax.legend(fontsize=8, loc="center right")
    ax.grid(alpha=0.3, which="both")

    ax = axes[1, 1]
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(eps_list)))
    for c, eps in zip(colors, eps_list, strict=True):
        ax.loglog(
            ns,
            errors["rdpo", eps],
            "o-",
            color=c,
            label=rf"rDPO $\varepsilon={eps:g}$ (slope {slopes_n[eps]:.2f})",
        )
        ax.loglog(ns, predicted[eps], ":", color=c, lw=1)
    for (method, eps), e in errors.items():
        if method == "dpo":
            ax.loglog(ns, e, "s--", color="C3", label=rf"DPO $\varepsilon={eps:g}$ (biased)")
    ax.loglog(ns, small_margin, "k--", lw=1, label=r"$2\sqrt{d/n}$")
    ax.set_xticks(ns, [str(int(n)) for n in ns])
    ax.minorticks_off()
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * 30)  # headroom for the legend above the curves
    ax.set_xlabel("pairs $n$")
    ax.set_ylabel(r"$\|\hat w - w^*\|_\Sigma$ (RMS over data sets)")
    ax.set_title(
        f"(e) log-linear error, d = {d} (dotted: sandwich; slopes: larger half of n)", fontsize=10
    )
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    ax.grid(alpha=0.3, which="both")

    ax = axes[1, 2]
    ax.loglog(inv, err_at_max, "o", color="C2", label=f"rDPO, n = {n_max} (slope {slope_eps:.2f})")
    ax.loglog(inv, pred_at_max, ":", color="C2", label=f"sandwich (slope {slope_eps_pred:.2f})")
    ax.loglog(inv, err_at_max[0] * inv, "k--", lw=1, label=r"$\propto 1/(1-2\varepsilon)$")
    ax.set_xticks(inv, [f"{v:.3g}" for v in inv])
    ax.minorticks_off()
    ax.set_xlabel(r"$1/(1-2\varepsilon)$")
    ax.set_ylabel(r"$\|\hat w - w^*\|_\Sigma$")
    ax.set_title(r"(f) noise factor at the largest $n$")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    fig.suptitle(
        f"Robust DPO under label flips on the testbed (A={config.alphabet_size}, "
        f"L={config.response_length}, {testbed.num_responses} responses, BT gold reward)"
    )
    fig.tight_layout()

    def per(method, key_):
        return {
            f"{e:g}": r_[key_]
            for r_ in rows
            for e in [r_["flip_rate"]]
            if r_["part"] == "tabular" and r_["method"] == method
        }

    summary = {
        "target_kl": target_kl,
        "target_reward": target_reward,
        "reference_reward": ref_reward,
        "max_grad_at_beta": max_grad,
        "kl_to_target_same_beta": {m: per(m, "kl_to_target_same_beta") for m in LN.METHODS},
        "reward_matched_kl": {m: per(m, "reward_matched_kl") for m in LN.METHODS},
        "kl_to_target_matched_kl": {m: per(m, "kl_to_target_matched_kl") for m in LN.METHODS},
        "beta_matched_kl": {m: per(m, "beta_matched_kl") for m in LN.METHODS},
        "loglinear_dim": d,
        "loglinear_slope_in_n": {f"{e:g}": s for e, s in slopes_n.items()},
        "loglinear_slope_in_inv_one_minus_two_eps": slope_eps,
        "loglinear_slope_in_inv_one_minus_two_eps_sandwich": slope_eps_pred,
        "loglinear_error_at_max_n": {f"{e:g}": float(v) for e, v in zip(eps_list, err_at_max)},
        "loglinear_sandwich_at_max_n": {f"{e:g}": float(v) for e, v in zip(eps_list, pred_at_max)},
        "loglinear_dpo_error": {
            f"{m}@{e:g}": v.tolist() for (m, e), v in errors.items() if m == "dpo"
        },
    }
    return Result(figure=fig, table=rows, summary=summary)


EXPERIMENT = Experiment(
    name="robust-dpo-noise",
    description=(
        "DPO / cDPO / rDPO under label flips: exact testbed minimisers at matched KL and the "
        "log-linear √(d/n)/(1−2ε) error scaling (Chowdhury et al. 2024)"
    ),
    config_cls=Config,
    run=run,
)


def main(argv=None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
