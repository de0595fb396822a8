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

(g, h, i) the LLM form: a one-layer transformer policy on its own small testbed (A = 3, L = 2:
    9 responses, a near-uniform π_ref = π_0), trained by the training engine
    (:func:`jaxalign.train.engine.run`, the testbed task of ``algorithm.name: dpo`` /
    ``robust_dpo``): every engine step samples fresh pairs from π_ref, labels them with a noisy
    annotator (the testbed's Bradley–Terry label flipped at rate ε,
    :func:`jaxalign.train.oracles.noisy_oracle`) and refits the loss (warm-started Adam). The
    final policy is scored exactly on the enumerated responses: KL(π_θ‖π*), the true reward
    E_π r and KL(π_θ‖π_ref), next to the exact population minimiser of the same loss and β.

How the three losses run on the engine (config only, ``oracle.flip_rate = ε`` for the noisy
annotator): DPO is ``dpo``; cDPO is ``dpo`` with ``label_smoothing = ε``; rDPO is
``robust_dpo`` with ``flip_rate = ε``.

"Matched KL" for the transformer (setting ``matched``): β of each (loss, ε) is the one whose
exact population minimiser on the transformer's own π_ref has KL(·‖π_ref) = KL(π*‖π_ref), solved
on the same β grid as panels (c, d) (rDPO's is β itself: its minimiser is π* at every ε). The
transformer's own KL then lands near that value up to its sampling and fitting error (panel i).
Setting ``same_beta`` trains every loss at β itself, the comparison of panel (b). At matched KL
the population gap between the losses is ~1e-3 nats on this instance, far below a transformer
run's finite-sample error (~0.1 nats), so the matched-KL transformer points agree within noise;
at the same β the bias of DPO / cDPO under noise is large and the transformer shows it.

The tabular and log-linear parts are exact or Monte Carlo over the closed-form estimators.

    jaxalign reproduce robust-dpo-noise --out results/robust-dpo-noise
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import kl, plotting
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
    # Panels (g–i): a transformer trained by the engine on its own small testbed.
    transformer_flip_rates: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4)  # ε; () = no panels
    transformer_alphabet_size: int = 3  # A of the transformer's testbed
    transformer_response_length: int = 2  # L of the transformer's testbed
    transformer_hidden_size: int = 32  # width of the one-layer transformer
    transformer_init_scale: float = 0.05  # initializer_range: a near-uniform π_ref
    transformer_batch_size: int = 1024  # pairs from π_ref per engine step
    transformer_inner_steps: int = 20  # Adam steps per fit (warm-started)
    transformer_learning_rate: float = 0.01
    transformer_iterations: int = 10  # engine steps (fresh pairs each)
    transformer_methods: tuple[str, ...] = ("dpo", "cdpo", "rdpo")  # losses trained
    # "matched": β per (loss, ε) at matched KL; "same_beta": every loss at β itself
    transformer_settings: tuple[str, ...] = ("matched", "same_beta")

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
        if any(not 0 <= e < 0.5 for e in self.transformer_flip_rates):
            raise ValueError(
                f"transformer_flip_rates must be in [0, 0.5), got {self.transformer_flip_rates}"
            )
        if not set(self.transformer_settings) <= {"matched", "same_beta"} or (
            self.transformer_flip_rates and not self.transformer_settings
        ):
            raise ValueError(
                "transformer_settings must be among ('matched', 'same_beta'), got "
                f"{self.transformer_settings}"
            )
        if not set(self.transformer_methods) <= set(LN.METHODS) or (
            self.transformer_flip_rates and not self.transformer_methods
        ):
            raise ValueError(
                f"transformer_methods must be among {LN.METHODS}, got {self.transformer_methods}"
            )
        if self.transformer_hidden_size % 2 or self.transformer_iterations < 1:
            raise ValueError("need an even transformer_hidden_size and transformer_iterations >= 1")


def run(config: Config, track) -> Result:
    transformer = None
    if config.transformer_flip_rates:
        trained = _train_transformers(config, track)  # float32: the engine's own precision
        with jax.enable_x64(True):
            transformer = _score_transformers(config, trained)
    with jax.enable_x64(True):
        return _run(config, track, transformer)


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


def _run(config: Config, track, transformer) -> Result:
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
    fig, flat = plotting.figure(
        2 if transformer is None else 3,
        3,
        panel_size=(5.4, 4.4),
        suptitle=(
            f"Robust DPO under label flips on the testbed (A={config.alphabet_size}, "
            f"L={config.response_length}, {testbed.num_responses} responses, BT gold reward)"
        ),
    )
    axes = np.asarray(flat, dtype=object).reshape(-1, 3)
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
    if transformer is not None:
        _transformer_panels(config, axes[2], *transformer)
        rows += transformer[1]

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
    if transformer is not None:
        summary["transformer"] = transformer[0]
    return Result(figure=fig, table=rows, summary=summary)


# ---------------------------------------------------------------------------------------------
# Panels (g–i): a transformer trained by the training engine on noisy labels.


def _engine_config(config: Config, method: str, eps: float, beta: float, out_dir):
    """The engine config of one transformer run (light: no checkpoints, TensorBoard or saved
    model): the noisy annotator is ``oracle.flip_rate = ε``; cDPO is ``dpo`` with
    ``label_smoothing = ε``, rDPO ``robust_dpo`` with ``flip_rate = ε``."""
    from jaxalign.train import testbed_run_config

    algorithm = {
        "dpo": {"name": "dpo", "beta": beta},
        "cdpo": {"name": "dpo", "beta": beta, "label_smoothing": eps},
        "rdpo": {"name": "robust_dpo", "beta": beta, "flip_rate": eps},
    }[method]
    return testbed_run_config(
        algorithm,
        alphabet_size=config.transformer_alphabet_size,
        response_length=config.transformer_response_length,
        hidden_size=config.transformer_hidden_size, num_kv_heads=2,
        init_scale=config.transformer_init_scale, steps=config.transformer_iterations,
        seed=config.seed, out_dir=out_dir,
        online={"batch_size": config.transformer_batch_size,
                "inner_steps": config.transformer_inner_steps,
                "learning_rate": config.transformer_learning_rate},
        testbed={"enabled": True, "preference": "bradley_terry",
                 "reward_scale": config.reward_scale, "seed": config.seed},
        oracle={"sample": True, "flip_rate": eps},
        logging={"kl_ref": False},
    )  # fmt: skip


def _engine_run(config: Config, method: str, eps: float, beta: float, out_dir):
    """One engine run; returns its task (exact history, π_ref, game) after training."""
    from jaxalign.train import train

    return train(_engine_config(config, method, eps, beta, out_dir), quiet=True).task


def _train_transformers(config: Config, track) -> dict:
    """Engine runs per (loss, ε, setting): ``same_beta`` at β itself; ``matched`` at the β of
    each (loss, ε) whose exact population minimiser on the transformer's own π_ref has
    KL(·‖π_ref) = KL(π*‖π_ref) (rDPO's is β itself, its minimiser being π* at every ε).

    Runs whose β is known up front go first; the first of them fixes π_ref (every run starts
    from the same seed), from which the other matched β are solved. Identical runs (ε = 0,
    where the three losses coincide; rDPO's two settings) are trained once."""
    import tempfile
    from pathlib import Path

    from jaxalign.testbed import Testbed as _Testbed
    from jaxalign.train.tasks.online_setup import testbed_reward

    beta0, methods, settings = config.beta, config.transformer_methods, config.transformer_settings
    grid = [(m, e, s) for s in settings for e in config.transformer_flip_rates for m in methods]
    known = [j for j in grid if j[2] == "same_beta" or j[0] == "rdpo" or j[1] == 0]
    solved = [j for j in grid if j not in known]
    done: dict[tuple[str, float, float], np.ndarray] = {}  # (loss, ε, β) -> log π_T
    runs, first = {}, []
    with tempfile.TemporaryDirectory(prefix="robust-dpo-noise-") as tmp:

        def train(job, beta):
            method, eps, _ = job
            loss = "dpo" if eps == 0 else method  # ε = 0: the three losses coincide
            if (loss, eps, beta) not in done:
                task = _engine_run(config, loss, eps, beta, Path(tmp) / f"run-{len(done)}")
                done[loss, eps, beta] = np.asarray(task.exact_history.history().log_policies[-1])
                if not first:
                    first.append(task)
            runs[job] = (beta, done[loss, eps, beta])

        jobs = iter(track(known + solved, "transformer runs (engine)"))
        for job in known:
            train(job, beta0)
            next(jobs, None)
        task = first[0] if first else _engine_run(config, "dpo", 0.0, beta0, Path(tmp) / "ref")
        cfg = task.config
        testbed = _Testbed(cfg.testbed.alphabet_size, cfg.testbed.response_length)
        r32 = testbed_reward(cfg.testbed, testbed)  # float32 draws: the game's own reward
        with jax.enable_x64(True):
            log_ref = jax.nn.log_softmax(jnp.asarray(task.log_ref, jnp.float64))
            r = jnp.asarray(r32, jnp.float64)
            p = jnp.asarray(task.setup.game.preference, jnp.float64)
            target_kl = float(kl.kl_divergence(kl.tilted_policy(log_ref, r, beta0), log_ref))
            betas = np.geomspace(beta0 * 0.01, beta0 * 2.0, config.beta_grid)
            beta_m = {}
            for method, eps, _ in solved:
                _, g, kls, _ = _sweep(log_ref, p, r, method, jnp.asarray([eps]), jnp.asarray(betas))
                ok = np.asarray(g[0]) < 1e-8
                log_b = _matched(np.asarray(kls[0])[ok], np.log(betas[ok]), target_kl)
                beta_m[method, eps] = float(np.exp(log_b))
        for job in solved:
            train(job, beta_m[job[:2]])
            next(jobs, None)
    return dict(log_ref=np.asarray(log_ref), r=np.asarray(r), p=np.asarray(p), runs=runs,
                target_kl=target_kl, num_runs=len(done))  # fmt: skip


def _score_transformers(config: Config, trained: dict) -> tuple[dict, list[dict]]:
    """Exact distance to the clean target, true reward and KL to π_ref of every run's final
    policy, next to the exact population minimiser of its loss at its β."""
    log_ref, r, p = (jnp.asarray(trained[k]) for k in ("log_ref", "r", "p"))
    target = kl.tilted_policy(log_ref, r, config.beta)
    out: dict = {}
    rows = []
    for (method, eps, setting), (beta, log_pi) in trained["runs"].items():
        lp = jax.nn.log_softmax(jnp.asarray(log_pi, jnp.float64))
        pop, _ = LN.tabular_population_minimiser(
            log_ref, p, method=method, flip_rate=eps, beta=beta
        )
        rec = {
            "beta": beta,
            "kl_to_target": float(kl.kl_divergence(lp, target)),
            "reward": float(kl.expected_reward(lp, r)),
            "kl_to_ref": float(kl.kl_divergence(lp, log_ref)),
            "population_kl_to_target": float(kl.kl_divergence(pop, target)),
            "population_reward": float(kl.expected_reward(pop, r)),
        }
        out.setdefault(setting, {}).setdefault(method, {})[f"{eps:g}"] = rec
        rows.append({"part": "transformer", "setting": setting, "method": method,
                     "flip_rate": eps, **rec})  # fmt: skip
    summary = {
        "num_responses": int(log_ref.shape[0]),
        "engine_runs": trained["num_runs"],
        "target_kl": trained["target_kl"],
        "target_reward": float(kl.expected_reward(target, r)),
        "reference_reward": float(kl.expected_reward(log_ref, r)),
    }
    for setting, per_method in out.items():
        for key in ("kl_to_target", "reward", "kl_to_ref", "beta", "population_kl_to_target"):
            summary[f"{key}_{setting}"] = {
                m: {e: v[key] for e, v in recs.items()} for m, recs in per_method.items()
            }
    return summary, rows


def _transformer_panels(config: Config, axes, summary: dict, rows: list[dict]) -> None:
    """(g) KL(π‖π*), (h) true reward and (i) KL(π‖π_ref) of the trained transformers vs ε."""
    eps = list(config.transformer_flip_rates)

    def series(setting, method, key):
        by = {
            r["flip_rate"]: r[key]
            for r in rows
            if r["setting"] == setting and r["method"] == method
        }
        return [by[e] for e in eps]

    styles = {
        "matched": ("o-", "matched KL"),
        "same_beta": ("s--", rf"same $\beta={config.beta:g}$"),
    }
    settings = [(s, *styles[s]) for s in config.transformer_settings]
    ax_g, ax_h, ax_i = axes
    for method in config.transformer_methods:
        c = _COLORS[method]
        for setting, fmt, what in settings:
            label = f"{_LABELS[method]}, {what}"
            if method == "rdpo":  # its matched β is β itself: one set of runs, drawn once
                if setting != settings[0][0]:
                    continue
                label = rf"rDPO, $\beta={config.beta:g}$ (= matched KL)"
            ax_g.plot(eps, np.maximum(series(setting, method, "kl_to_target"), 1e-4), fmt,
                      color=c, label=label)  # fmt: skip
            ax_g.plot(eps, np.maximum(series(setting, method, "population_kl_to_target"), 1e-4),
                      ":", color=c, lw=1)  # fmt: skip
            ax_h.plot(eps, series(setting, method, "reward"), fmt, color=c, label=label)
            ax_i.plot(eps, series(setting, method, "kl_to_ref"), fmt, color=c, label=label)
    pop_label = r"exact population minimiser (same loss, $\beta$; floor $10^{-4}$)"
    ax_g.plot([], [], ":", color=plotting.REFERENCE_COLOR, lw=1, label=pop_label)
    ax_g.set_yscale("log")
    ax_g.set_ylabel(r"KL$(\pi_\theta \,\|\, \pi^*)$  [nats]")
    n = summary["num_responses"]
    ax_g.set_title(f"(g) transformer ({n} responses): distance to $\\pi^*$", fontsize=10)
    plotting.reference_line(ax_h, y=summary["target_reward"], horizontal=True,
                            label=r"clean target $\pi^*$")  # fmt: skip
    plotting.reference_line(ax_h, y=summary["reference_reward"], horizontal=True, ls=":",
                            label=r"$\pi_{\rm ref}$")  # fmt: skip
    ax_h.set_ylabel(r"true reward $E_{\pi_\theta}[r]$")
    ax_h.set_title("(h) transformer: true reward", fontsize=10)
    plotting.reference_line(ax_i, y=summary["target_kl"], horizontal=True,
                            label=r"KL$(\pi^* \| \pi_{\rm ref})$ (the matched value)")  # fmt: skip
    ax_i.set_ylabel(r"KL$(\pi_\theta \,\|\, \pi_{\rm ref})$  [nats]")
    ax_i.set_title(
        f"(i) transformer: KL to $\\pi_{{\\rm ref}}$ (engine, {config.transformer_iterations} "
        f"steps of {config.transformer_batch_size} pairs)",
        fontsize=10,
    )
    for ax in axes:
        ax.set_xlim(-0.02, 0.42)
        ax.set_xlabel(r"flip rate $\varepsilon$")
        ax.grid(alpha=0.3, which="both")
    plotting.figure_legend(ax_g.figure, list(axes), ncols=4, fontsize=8)


EXPERIMENT = Experiment(
    name="robust-dpo-noise",
    description=(
        "DPO / cDPO / rDPO under label flips: exact testbed minimisers at matched KL, the "
        "log-linear √(d/n)/(1−2ε) error scaling and transformers trained by the engine on "
        "noisy labels (Chowdhury et al. 2024)"
    ),
    config_cls=Config,
    run=run,
    headline=(
        "kl_to_target_same_beta",
        "kl_to_target_matched_kl",
        "loglinear_slope_in_inv_one_minus_two_eps",
        "transformer.kl_to_target_same_beta",
        "transformer.reward_same_beta",
        "transformer.kl_to_target_matched",
        "transformer.reward_matched",
        "transformer.target_reward",
    ),
)


def main(argv=None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
