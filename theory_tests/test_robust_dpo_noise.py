"""Robust DPO under label noise (ALGORITHMS_2.md, robust DPO): exact identities and scaling.

* (a) rDPO is unbiased: (1−ε)ℓ_ε(z) + εℓ_ε(−z) = ℓ(z), values and gradients; cDPO and an
  rDPO with denominator (1−ε) are not.
* (b) The population minimisers, found numerically: σ(βh*) = P̃ (DPO), (1−2ε)P̃ + ε (cDPO),
  P* (rDPO). The issue text's cDPO formula agrees with the design notes; this test decides.
* (c) Gradient weights: autodiff equals σ(−z) + ε/(1−2ε) (rDPO), σ(−z) − ε (cDPO); at ε = 0
  rDPO is DPO bit for bit.
* (d) The "robust" variant ((1−ε)ℓ − εℓ)/(1−2ε) that some trainers ship is DPO in disguise.
* Tabular policies: the rDPO population minimiser on a Bradley–Terry game is π_ref e^{r/β} for
  every ε; DPO's and cDPO's are flatter (smaller KL to π_ref, lower reward).
* Log-linear policies: the rDPO estimation error is √(d/n)/(1−2ε)-shaped — exactly
  2√(d/n)/(1−2ε) at small margins by the sandwich formula, and the Monte Carlo error matches
  the sandwich with fitted slope ≈ −½ in n; DPO on noisy labels is biased (no decay).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxalign import kl
from jaxalign.losses import label_noise as LN
from jaxalign.losses import pairwise as PW
from theory_tests.strategies import examples

EPS = st.floats(0.0, 0.49)
# One compilation per method (and shape); flip rate and β are traced.
_tabular = jax.jit(
    LN.tabular_population_minimiser, static_argnames=("method", "num_steps", "max_step")
)


def _margins(seed, n=32, scale=4.0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal(n) * scale)


def _clean(z):
    return jax.nn.softplus(-z)


def _flip_average(loss, z, eps):
    """E over one flip of the observed orientation: (1−ε)L(z) + εL(−z)."""
    return (1 - eps) * loss(z) + eps * loss(-z)


def _wrong_rdpo_denominator(z, eps):
    """Plausible bug: rDPO normalised by (1−ε) instead of (1−2ε)."""
    return ((1 - eps) * _clean(z) - eps * _clean(-z)) / (1 - eps)


def _wrong_rdpo_same_orientation(z, eps):
    """A third-party 'robust' loss: ((1−ε)ℓ − εℓ)/(1−2ε), both terms the same orientation."""
    return ((1 - eps) * _clean(z) - eps * _clean(z)) / (1 - 2 * eps)


# ----------------------------------------------------------------------------- (a) unbiased


@settings(max_examples=examples(30))
@given(seed=st.integers(0, 2**31 - 1), eps=EPS)
def test_rdpo_expected_loss_and_gradient_equal_the_clean_ones(seed, eps):
    z = _margins(seed)
    rdpo = lambda m: LN.noisy_pair_loss(m, method="rdpo", flip_rate=eps)
    np.testing.assert_allclose(_flip_average(rdpo, z, eps), _clean(z), rtol=1e-10, atol=1e-12)
    grad = jax.grad(lambda m: jnp.sum(_flip_average(rdpo, m, eps)))(z)
    clean_grad = jax.grad(lambda m: jnp.sum(_clean(m)))(z)
    np.testing.assert_allclose(grad, clean_grad, rtol=1e-10, atol=1e-12)


@settings(max_examples=examples(20))
@given(seed=st.integers(0, 2**31 - 1), eps=st.floats(0.05, 0.49))
def test_cdpo_and_wrong_denominator_are_biased(seed, eps):
    """Deliberately wrong variants must fail the identity the true rDPO passes."""
    z = _margins(seed)
    cdpo = lambda m: LN.noisy_pair_loss(m, method="cdpo", flip_rate=eps)
    for loss in (cdpo, lambda m: _wrong_rdpo_denominator(m, eps)):
        gap = jnp.max(jnp.abs(_flip_average(loss, z, eps) - _clean(z)))
        assert float(gap) > 1e-3 * eps


# ----------------------------------------------------------------------------- (b) minimisers


@functools.partial(jax.jit, static_argnames="method")
def _minimise_1d(p_true, method, eps, beta):
    """Newton on the population noisy loss, one margin per pair, to machine precision.
    Returns (h*, max |gradient|)."""

    def obj(h):
        return jnp.sum(LN.population_noisy_loss(beta * h, p_true, method=method, flip_rate=eps))

    g = jax.grad(obj)

    def newton(_, h):
        curv = jax.jvp(g, (h,), (jnp.ones_like(h),))[1]  # separable: the Hessian is diagonal
        return h - jnp.clip(g(h) / curv, -2.0, 2.0)

    h = jax.lax.fori_loop(0, 60, newton, jnp.zeros_like(p_true))
    return h, jnp.max(jnp.abs(g(h)))


@settings(max_examples=examples(20))
@given(seed=st.integers(0, 2**31 - 1), eps=st.floats(0.0, 0.45), beta=st.floats(0.1, 5.0))
def test_population_minimisers_match_the_closed_forms(seed, eps, beta):
    rng = np.random.default_rng(seed)
    p = jnp.asarray(rng.uniform(0.02, 0.98, size=16))
    pn = eps + (1 - 2 * eps) * p
    expected = {"dpo": pn, "cdpo": (1 - 2 * eps) * pn + eps, "rdpo": p}
    for method, target in expected.items():
        h, g = _minimise_1d(p, method, eps, beta)
        assert float(g) < 1e-12
        np.testing.assert_allclose(jax.nn.sigmoid(beta * h), target, atol=1e-9)
        np.testing.assert_allclose(
            LN.population_target(p, method=method, flip_rate=eps), target, atol=1e-14
        )
        np.testing.assert_allclose(
            LN.population_minimiser(p, method=method, flip_rate=eps, beta=beta), h, atol=1e-8
        )
    if eps > 0.05:
        # Wrong claims rejected: cDPO is not unbiased, DPO is not unbiased, cDPO ≠ DPO.
        away = np.abs(np.asarray(p) - 0.5) > 0.1
        for method in ("dpo", "cdpo"):
            h, _ = _minimise_1d(p, method, eps, beta)
            err = np.abs(np.asarray(jax.nn.sigmoid(beta * h)) - np.asarray(p))
            assert np.all(err[away] > 0.19 * eps)
        # cDPO shrinks twice: strictly closer to ½ than DPO wherever P* ≠ ½.
        tc = LN.population_target(p, method="cdpo", flip_rate=eps)
        assert np.all(np.abs(np.asarray(tc - 0.5))[away] < np.abs(np.asarray(pn - 0.5))[away])


def test_worked_example_and_monotone_shrinkage():
    p = jnp.asarray([0.8])
    got = [float(LN.population_target(p, method=m, flip_rate=0.2)[0]) for m in LN.METHODS]
    np.testing.assert_allclose(got, [0.68, 0.608, 0.8], atol=1e-12)
    # The bias of DPO grows with ε: σ(βh*) − ½ = (1−2ε)(P* − ½), and cDPO's is (1−2ε)².
    eps = jnp.linspace(0.0, 0.45, 10)
    dpo = jax.vmap(lambda e: LN.population_target(p, method="dpo", flip_rate=e)[0])(eps)
    cdpo = jax.vmap(lambda e: LN.population_target(p, method="cdpo", flip_rate=e)[0])(eps)
    np.testing.assert_allclose(dpo - 0.5, (1 - 2 * eps) * 0.3, atol=1e-14)
    np.testing.assert_allclose(cdpo - 0.5, (1 - 2 * eps) ** 2 * 0.3, atol=1e-14)


# ----------------------------------------------------------------------------- (c), (d)


@settings(max_examples=examples(20))
@given(seed=st.integers(0, 2**31 - 1), eps=EPS)
def test_gradient_weights_autodiff_and_rdpo_floor(seed, eps):
    z = _margins(seed)
    for method in LN.METHODS:

        def total(m, method=method):
            return jnp.sum(LN.noisy_pair_loss(m, method=method, flip_rate=eps))

        auto = -jax.grad(total)(z)
        closed = LN.gradient_weight(z, method=method, flip_rate=eps)
        np.testing.assert_allclose(auto, closed, rtol=1e-10, atol=1e-13)
    rdpo = LN.gradient_weight(z, method="rdpo", flip_rate=eps)
    assert float(jnp.min(rdpo)) >= eps / (1 - 2 * eps) - 1e-15
    # The robust loss of the library's unified family is the same function.
    lib = PW.robust_dpo_loss(
        z, jnp.zeros_like(z), jnp.zeros_like(z), jnp.zeros_like(z), beta=1.0, flip_rate=eps
    ).loss
    np.testing.assert_array_equal(lib, LN.noisy_pair_loss(z, method="rdpo", flip_rate=eps))


@settings(max_examples=examples(10))
@given(seed=st.integers(0, 2**31 - 1))
def test_at_zero_flip_rate_all_three_are_dpo_bit_for_bit(seed):
    z = _margins(seed)
    dpo = LN.noisy_pair_loss(z, method="dpo", flip_rate=0.0)
    for method in ("cdpo", "rdpo"):
        np.testing.assert_array_equal(LN.noisy_pair_loss(z, method=method, flip_rate=0.0), dpo)


@settings(max_examples=examples(10))
@given(seed=st.integers(0, 2**31 - 1), eps=st.floats(0.05, 0.45))
def test_same_orientation_robust_variant_is_flagged_as_dpo(seed, eps):
    """Regression test: ((1−ε)ℓ − εℓ)/(1−2ε) equals DPO, so it fails the unbiasedness check."""
    z = _margins(seed)
    bad = _wrong_rdpo_same_orientation(z, eps)
    np.testing.assert_allclose(bad, _clean(z), rtol=1e-12)
    bad_avg = _flip_average(lambda m: _wrong_rdpo_same_orientation(m, eps), z, eps)
    assert float(jnp.max(jnp.abs(bad_avg - _clean(z)))) > 1e-3 * eps


def test_bad_input_raises():
    z = jnp.zeros(3)
    with pytest.raises(ValueError, match="flip_rate"):
        LN.noisy_pair_loss(z, method="rdpo", flip_rate=0.5)
    with pytest.raises(ValueError, match="flip_rate"):
        LN.population_target(jnp.asarray([0.3]), method="rdpo", flip_rate=-0.1)
    with pytest.raises(ValueError, match="p_true"):
        LN.noisy_preference(jnp.asarray([1.2]), 0.1)
    with pytest.raises(ValueError, match="method"):
        LN.noisy_pair_loss(z, method="ipo", flip_rate=0.1)
    with pytest.raises(ValueError, match="shape mismatch"):
        LN.population_noisy_loss(z, jnp.full(4, 0.5), method="dpo", flip_rate=0.1)
    with pytest.raises(ValueError, match="labels"):
        LN.fit_loglinear(jnp.ones((5, 2)), jnp.ones(4), method="rdpo", flip_rate=0.1)
    with pytest.raises(ValueError, match="beta"):
        LN.population_minimiser(jnp.asarray([0.3]), method="dpo", flip_rate=0.1, beta=0.0)


# ----------------------------------------------------------------------------- tabular


def _bt_instance(seed, k=6):
    rng = np.random.default_rng(seed)
    log_ref = jax.nn.log_softmax(jnp.asarray(rng.standard_normal(k)))
    r = jnp.asarray(rng.standard_normal(k) * 1.5)
    return log_ref, r, jax.nn.sigmoid(r[:, None] - r[None, :])


@settings(max_examples=examples(6))
@given(seed=st.integers(0, 2**31 - 1), eps=st.sampled_from([0.1, 0.25, 0.4]))
def test_tabular_rdpo_recovers_the_clean_tilt_and_dpo_does_not(seed, eps):
    log_ref, r, p = _bt_instance(seed)
    beta = 0.5
    target = kl.tilted_policy(log_ref, r, beta)
    fits = {}
    mu = jnp.exp(log_ref)
    for method in LN.METHODS:
        lp, g = _tabular(log_ref, p, method=method, flip_rate=eps, beta=beta)
        assert float(g) < 1e-9
        fits[method] = lp

        # Independent check: autodiff of the explicit population loss (the library's
        # per-pair losses, both orientations, pairs ~ π_ref²) vanishes at the minimiser.
        def population(f, method=method):
            z = beta * (f[:, None] - f[None, :]).ravel()
            val = LN.population_noisy_loss(z, p.ravel(), method=method, flip_rate=eps)
            return jnp.sum((mu[:, None] * mu[None, :]).ravel() * val)

        assert float(jnp.max(jnp.abs(jax.grad(population)(lp - log_ref)))) < 1e-9
    assert float(kl.kl_divergence(fits["rdpo"], target)) < 1e-12
    kls = {m: float(kl.kl_divergence(lp, log_ref)) for m, lp in fits.items()}
    rewards = {m: float(kl.expected_reward(lp, r)) for m, lp in fits.items()}
    # DPO and cDPO fit a flatter policy: less KL, less reward, cDPO the flattest.
    assert float(kl.kl_divergence(fits["dpo"], target)) > 1e-4
    assert kls["cdpo"] < kls["dpo"] < kls["rdpo"]
    assert rewards["cdpo"] < rewards["dpo"] < rewards["rdpo"]
    # At ε = 0 the three minimisers coincide.
    for method in LN.METHODS:
        lp0, _ = _tabular(log_ref, p, method=method, flip_rate=0.0, beta=beta)
        assert float(kl.kl_divergence(lp0, target)) < 1e-12


# ----------------------------------------------------------------------------- log-linear


@settings(max_examples=examples(10))
@given(seed=st.integers(0, 2**31 - 1), eps=st.floats(0.0, 0.45), d=st.integers(2, 6))
def test_sandwich_error_is_sqrt_d_over_n_times_one_over_one_minus_two_eps(seed, eps, d):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((400, d)))
    sigma = x.T @ x / x.shape[0]

    def sq_error(w, e):  # n E‖ŵ − w*‖²_Σ
        return float(jnp.trace(sigma @ LN.rdpo_asymptotic_covariance(x, w, flip_rate=e)))

    zero = jnp.zeros(d)
    # At w* = 0 (small margins) exactly 4d/(1−2ε)²: the √(d/n)/(1−2ε) rate with constant 2.
    np.testing.assert_allclose(sq_error(zero, eps), 4 * d / (1 - 2 * eps) ** 2, rtol=1e-10)
    # For larger margins the noise costs more than 1/(1−2ε) (never less).
    w = jnp.asarray(rng.standard_normal(d))
    ratio = np.sqrt(sq_error(w, eps) / sq_error(w, 0.0))
    assert ratio >= 1 / (1 - 2 * eps) - 1e-9
    # A wrong rate (1/√(1−2ε), as if flips only thinned the data) is rejected for ε ≥ .1.
    if eps >= 0.1:
        assert abs(ratio - 1 / np.sqrt(1 - 2 * eps)) > 0.05


@functools.partial(jax.jit, static_argnames=("n_max", "method", "reps"))
def _simulate(key, x_pool, w_true, n, n_max, eps, method, reps):
    """ŵ on `reps` independent data sets of n ≤ n_max noisy pairs drawn from x_pool (the first
    n of n_max draws, by a 0/1 weight mask: one compilation for every n)."""

    def one(k):
        k1, k2, k3 = jax.random.split(k, 3)
        x = x_pool[jax.random.randint(k1, (n_max,), 0, x_pool.shape[0])]
        clean = jax.random.uniform(k2, (n_max,)) < jax.nn.sigmoid(x @ w_true)
        flip = jax.random.uniform(k3, (n_max,)) < eps
        y = jnp.logical_xor(clean, flip).astype(x.dtype)
        mask = (jnp.arange(n_max) < n).astype(x.dtype)
        # The θ-ball of the theory: rDPO's per-pair loss is unbounded below, and at small n a
        # few data sets would otherwise run off to a huge ŵ.
        return LN.fit_loglinear(
            x, y, method=method, flip_rate=eps, num_steps=15, radius=5.0, weights=mask
        )

    return jax.vmap(one)(jax.random.split(key, reps))


def test_monte_carlo_rdpo_error_scales_like_sandwich_and_dpo_is_biased():
    d, reps = 4, 40
    rng = np.random.default_rng(0)
    x_pool = jnp.asarray(rng.standard_normal((4096, d)))
    sigma = x_pool.T @ x_pool / x_pool.shape[0]
    w_true = jnp.asarray([1.0, -0.5, 0.5, 0.0])
    ns = np.asarray([800, 3200, 12800])
    key = jax.random.key(1)

    def rms_error(w_hat):
        diff = w_hat - w_true[None, :]
        return float(jnp.sqrt(jnp.mean(jnp.einsum("rd,de,re->r", diff, sigma, diff))))

    errs = {}
    for eps in (0.0, 0.3):
        for method in ("rdpo", "dpo"):
            errs[eps, method] = np.asarray(
                [
                    rms_error(
                        _simulate(
                            jax.random.fold_in(key, int(n)),
                            x_pool,
                            w_true,
                            int(n),
                            int(ns[-1]),
                            eps,
                            method,
                            reps,
                        )
                    )
                    for n in ns
                ]
            )
    for eps in (0.0, 0.3):
        cov = LN.rdpo_asymptotic_covariance(x_pool, w_true, flip_rate=eps)
        predicted = np.sqrt(float(jnp.trace(sigma @ cov)) / ns)
        got = errs[eps, "rdpo"]
        # The Monte Carlo RMS error matches the sandwich within sampling error (40 reps).
        np.testing.assert_allclose(got, predicted, rtol=0.3)
        slope = np.polyfit(np.log(ns), np.log(got), 1)[0]
        assert -0.65 < slope < -0.35, slope
    # The noise factor at matched n: at least 1/(1−2ε), roughly (within MC error).
    factor = errs[0.3, "rdpo"] / errs[0.0, "rdpo"]
    assert np.all(factor > 0.8 / (1 - 0.6)), factor
    # Plain DPO on noisy labels is biased: its error stops shrinking (slope ≫ −½).
    slope_dpo = np.polyfit(np.log(ns), np.log(errs[0.3, "dpo"]), 1)[0]
    assert slope_dpo > -0.25, slope_dpo
    assert errs[0.3, "dpo"][-1] > 2 * errs[0.3, "rdpo"][-1]
