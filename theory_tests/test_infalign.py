"""Property tests for InfAlign: calibration, inference-time laws and their optimum.

Statements (the notes' InfAlign section; tags there are [derived]/[unverified], and these
tests settle them):

(a) the mid-rank calibrated reward has mean exactly ½ under π_ref, ties included; the
    ≤-CDF (ties credited 1) and <-CDF (ties credited 0) variants are off by ±½Σ_s π_ref(S_s)²;
(b) the worst-of-N law equals the enumeration of all K^N draws and a 10⁶-draw Monte-Carlo;
    BoN_N(π_ref) beats π_ref at most N/(N+1), WoN_N(π_ref) at least 1/(N+1);
(c) for N = 1 the calibrated tilt π_ref·e^{C/β} is the exact optimum of win rate − β·KL:
    no policy at the same KL wins more, raw-reward RLHF included;
(d) for best-of-N the mirror-ascent optimum is a fixed point of the transformed-reward tilt
    π ∝ π_ref·e^{R/β}, R = ∂W/∂π, with R a monotone function of the reward; and the 1-D
    calibrated-space formula is the atomless limit of the exact finite win rate, with an
    O(h²) error in the largest atom h.

Every checker is run against a deliberately wrong variant too (the tests at the end).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxalign import kl
from jaxalign.kl import infalign
from theory_tests.strategies import base_and_reward, examples, random_policies

# Few distinct sizes: every new K compiles the jitted cores again, and compilation, not the
# examples, dominates the run time.
SIZES = (4, 7)  # 4: the reference example's size


def instances(ties: bool | None = None, sizes=SIZES):
    """(log_p [K], reward [K]) from :func:`base_and_reward` with K drawn from ``sizes``."""
    return st.sampled_from(sizes).flatmap(
        lambda k: base_and_reward(min_size=k, max_size=k, ties=ties)
    )


# ---------------------------------------------------------------------------------------------
# Oracles and checkers (numpy, independent of the implementation's sorting and log space).


def calibration_mean_error(calibrate, log_ref, reward) -> float:
    """|E_{π_ref} C − ½| for a calibration ``calibrate(log_ref, reward)``; ~0 passes."""
    c = np.asarray(calibrate(log_ref, reward))
    return abs(float(np.exp(log_ref) @ c) - 0.5)


def level_masses(log_p, reward) -> np.ndarray:
    return np.array([np.exp(log_p)[reward == v].sum() for v in np.unique(reward)])


def decode_by_enumeration(log_p, reward, n, procedure) -> np.ndarray:
    """Exact best/worst-of-N law from all K^N draws, uniform among the draws tied at the top."""
    p, k = np.exp(log_p), len(log_p)
    key = reward if procedure == "best" else -reward
    law = np.zeros(k)
    for draws in itertools.product(range(k), repeat=n):
        vals = key[list(draws)]
        top = [y for y, v in zip(draws, vals) if v == vals.max()]
        mass = np.prod(p[list(draws)])
        for y in top:
            law[y] += mass / len(top)
    return law


def decode_by_monte_carlo(log_p, reward, n, procedure, key, num_samples) -> np.ndarray:
    p = np.exp(log_p)
    k1, k2 = jax.random.split(key)
    draws = jax.random.choice(k1, p.shape[0], (num_samples, n), p=jnp.asarray(p))
    sign = 1.0 if procedure == "best" else -1.0
    vals = sign * jnp.asarray(reward)[draws]
    top = vals == vals.max(axis=1, keepdims=True)
    pick = jnp.argmax(jnp.where(top, jax.random.uniform(k2, draws.shape), -1.0), axis=1)
    chosen = np.asarray(jnp.take_along_axis(draws, pick[:, None], axis=1)[:, 0])
    return np.bincount(chosen, minlength=p.shape[0]) / num_samples


def win_matrix(reward) -> np.ndarray:
    return (reward[:, None] > reward[None, :]) + 0.5 * (reward[:, None] == reward[None, :])


def gradient_closed_form(log_p, log_ref, reward, n, procedure) -> np.ndarray:
    """R(y) = N v_s F_s^{N−1} + N Σ_{s'>s} v_{s'} (F_{s'}^{N−1} − F_{s'−1}^{N−1}), in numpy."""
    value = win_matrix(reward) @ decode_by_formula(log_ref, reward, n, procedure)
    return level_gradient(log_p, reward, value, n, procedure)


def level_gradient(log_p, reward, value, n, procedure) -> np.ndarray:
    """The closed form of ∂/∂π Σ_s (F_s^N − F_{s−1}^N) v_s for a given level value v."""
    key = reward if procedure == "best" else -reward
    levels = np.unique(key)
    a = np.array([np.exp(log_p)[key == v].sum() for v in levels])
    v = np.array([value[key == lv][0] for lv in levels])
    cdf = np.cumsum(a)
    below = cdf - a
    tail = n * v * (cdf ** (n - 1) - below ** (n - 1))
    per_level = n * v * cdf ** (n - 1) + (np.cumsum(tail[::-1])[::-1] - tail)
    return per_level[np.searchsorted(levels, key)]


def decode_by_formula(log_p, reward, n, procedure) -> np.ndarray:
    """The level form of the law in numpy: π(y)/π(S) · (F_s^N − F_{s−1}^N)."""
    p = np.exp(log_p)
    key = reward if procedure == "best" else -reward
    cdf = np.array([p[key <= v].sum() for v in key])
    below = np.array([p[key < v].sum() for v in key])
    atom = cdf - below
    return p / atom * (cdf**n - below**n)


def objective(log_pi, log_ref, reward, beta, n, procedure) -> float:
    """W^T(π) − β KL(π‖π_ref)."""
    w = float(infalign.inference_win_rate(log_pi, log_ref, reward, n, procedure))
    return w - beta * float(kl.kl_divergence(log_pi, log_ref))


# ---------------------------------------------------------------------------------------------
# (a) Calibration.


@given(instances(ties=True, sizes=(4, 7, 11)))
def test_calibrated_reward_has_mean_one_half_with_ties(inst):
    log_ref, reward = inst
    assert calibration_mean_error(infalign.calibrated_reward, log_ref, reward) <= 1e-12


@given(instances())
def test_calibrated_reward_is_the_win_rate_of_each_response(inst):
    """C(y) = kl.win_rate(δ_y, π_ref) for every y, and C is invariant to monotone maps of r."""
    log_ref, reward = inst
    c = np.asarray(infalign.calibrated_reward(log_ref, reward))
    eye = np.where(np.eye(len(reward)) > 0, 0.0, -np.inf)
    oracle = np.asarray(jax.vmap(kl.win_rate, in_axes=(0, None, None))(eye, log_ref, reward))
    np.testing.assert_allclose(c, oracle, atol=1e-12)
    assert np.all((c >= 0) & (c <= 1))
    for monotone in (lambda x: np.exp(x / 3) * 5 - 2, lambda x: x**3 + x, np.arctan):
        np.testing.assert_allclose(
            infalign.calibrated_reward(log_ref, monotone(reward)), c, atol=1e-12
        )


@given(instances(ties=True, sizes=(4, 7, 11)))
def test_cdf_calibrations_are_biased_by_half_the_sum_of_squared_atoms(inst):
    """E_{π_ref} P(r(z) ≤ r(y)) = ½ + ½Σ_s a_s² and E P(r(z) < r(y)) = ½ − ½Σ_s a_s²."""
    log_ref, reward = inst
    bias = 0.5 * np.sum(level_masses(log_ref, reward) ** 2)
    for calibrate, sign in ((_calibrate_ties_win, 1.0), (_calibrate_ties_lose, -1.0)):
        mean = float(np.exp(log_ref) @ calibrate(log_ref, reward))
        assert abs(mean - (0.5 + sign * bias)) <= 1e-12
        # The checker rejects it on every finite set (the largest atom alone is ≥ 1/K).
        assert calibration_mean_error(calibrate, log_ref, reward) >= bias - 1e-12 > 0


@pytest.mark.parametrize("k", [50, 200, 800])
def test_calibrated_reward_is_uniform_without_atoms(k):
    """C(Y) for Y ~ π_ref is within the largest atom of U[0,1] in Kolmogorov distance."""
    rng = np.random.default_rng(k)
    log_ref = np.log(rng.dirichlet(np.full(k, 5.0)))
    reward = rng.standard_normal(k)
    c = np.asarray(infalign.calibrated_reward(log_ref, reward))
    order = np.argsort(c)
    cdf = np.cumsum(np.exp(log_ref)[order])
    ks = np.max(np.maximum(np.abs(cdf - c[order]), np.abs(cdf - np.exp(log_ref)[order] - c[order])))
    h = np.exp(log_ref).max()
    assert ks <= 0.5 * h + 1e-12


# ---------------------------------------------------------------------------------------------
# (b) Best-of-N and worst-of-N laws.


@settings(max_examples=examples(15))
@given(instances(), st.integers(1, 4), st.sampled_from(["best", "worst"]))
def test_decoded_laws_match_enumeration_of_all_draws(inst, n, procedure):
    log_p, reward = inst
    if np.unique(reward).size == reward.size:
        reward = np.round(reward)  # ties
    law = np.exp(np.asarray(infalign.inference_time_policy(log_p, reward, n, procedure)))
    np.testing.assert_allclose(law, decode_by_enumeration(log_p, reward, n, procedure), atol=1e-12)
    assert abs(law.sum() - 1) <= 1e-12
    if n == 1:
        np.testing.assert_allclose(law, np.exp(log_p), atol=1e-12)
    if procedure == "worst":
        np.testing.assert_allclose(
            law, np.exp(np.asarray(infalign.worst_of_n_policy(log_p, reward, n))), atol=0
        )


@settings(max_examples=examples(2))
@given(instances(ties=True), st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_worst_of_n_law_matches_monte_carlo(inst, n, seed):
    """10⁶ draws, uniform tie-break; every response within 4σ (+1e-5) of the exact law."""
    log_p, reward = inst
    exact = np.exp(np.asarray(infalign.worst_of_n_policy(log_p, reward, n)))
    freq = decode_by_monte_carlo(log_p, reward, n, "worst", jax.random.key(seed), 1_000_000)
    sigma = np.sqrt(exact * (1 - exact) / 1_000_000)
    assert np.all(np.abs(freq - exact) <= 4 * sigma + 1e-5)


@given(instances(), st.sampled_from([1, 2, 4, 16]))
def test_inference_win_rates_of_the_reference_are_bounded(inst, n):
    """W(BoN_N(π_ref) vs π_ref) ≤ N/(N+1), W(WoN_N(π_ref) vs π_ref) ≥ 1/(N+1), W^T(π_ref) = ½."""
    log_ref, reward = inst
    for procedure, sign, bound in (("best", 1.0, n / (n + 1)), ("worst", -1.0, 1 / (n + 1))):
        log_t = np.asarray(infalign.inference_time_policy(log_ref, reward, n, procedure))
        win = float(kl.win_rate(log_t, log_ref, reward))
        assert sign * (win - 0.5) <= sign * (bound - 0.5) + 1e-12
        assert sign * (win - 0.5) >= -1e-12
        assert (
            abs(float(infalign.inference_win_rate(log_ref, log_ref, reward, n, procedure)) - 0.5)
            <= 1e-12
        )


@settings(max_examples=examples(15))
@given(instances(), st.sampled_from([1, 2, 4]), st.sampled_from(["best", "worst"]))
def test_inference_win_rate_is_the_double_sum(inst, n, procedure):
    """W^T(π) = T(π)ᵀ w T(π_ref) (O(K²) oracle), and W^T(π) + W^T_{π vs π_ref swapped} = 1."""
    log_ref, reward = inst
    log_pi = random_policies(np.random.default_rng(len(reward) + n), len(reward), 1)[0]
    t_pi = decode_by_formula(log_pi, reward, n, procedure)
    t_ref = decode_by_formula(log_ref, reward, n, procedure)
    got = float(infalign.inference_win_rate(log_pi, log_ref, reward, n, procedure))
    assert abs(got - t_pi @ win_matrix(reward) @ t_ref) <= 1e-12
    swapped = float(infalign.inference_win_rate(log_ref, log_pi, reward, n, procedure))
    assert abs(got + swapped - 1) <= 1e-12


# ---------------------------------------------------------------------------------------------
# (c) N = 1: calibrated RLHF is the exact optimum of win rate − β·KL.


def n1_optimality_violation(candidate, log_ref, reward, budget, rng) -> float:
    """max over competitors at KL ≤ budget of W₁(competitor) − W₁(candidate); ≤ 0 passes.

    Competitors: raw-reward RLHF, the exponential transforms of C, tilts of random rewards
    (all at the same budget), and random policies pulled into the KL ball along the segment
    to π_ref (KL is convex along it, so bisection finds the boundary).
    """
    log_cand = candidate(log_ref, reward, budget)
    assert float(kl.kl_divergence(log_cand, log_ref)) <= budget + 1e-9
    w_cand = float(infalign.inference_win_rate(log_cand, log_ref, reward, 1))
    rivals = [kl.kl_constrained_policy(log_ref, reward, budget)[0]]
    for transform, t in (("identity", 1.0), ("exp", 2.0), ("exp", 8.0), ("neg_exp", 8.0)):
        rivals.append(
            infalign.calibrate_and_transform_policy(log_ref, reward, budget, transform, t)[0]
        )
    for _ in range(8):
        rivals.append(
            kl.kl_constrained_policy(log_ref, rng.standard_normal(len(reward)), budget)[0]
        )
    p = np.exp(log_ref)
    q = np.exp(random_policies(rng, len(reward), 16))
    lo, hi = np.zeros(len(q)), np.ones(len(q))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        mix = (1 - mid[:, None]) * p + mid[:, None] * q
        kls = np.sum(np.where(mix > 0, mix * (np.log(mix) - log_ref), 0.0), axis=1)
        lo, hi = np.where(kls <= budget, mid, lo), np.where(kls <= budget, hi, mid)
    rivals += list(np.log((1 - lo[:, None]) * p + lo[:, None] * q))
    wins = _win_rates(jnp.asarray(np.stack([np.asarray(r) for r in rivals])), log_ref, reward, 1)
    return float(np.max(wins)) - w_cand


def _win_rates(log_pis, log_ref, reward, n, procedure="best"):
    """W^T of each row of ``log_pis`` (one vmapped call instead of one dispatch per policy)."""
    one = lambda lp: infalign.inference_win_rate(lp, log_ref, reward, n, procedure)
    return np.asarray(jax.vmap(one)(log_pis))


def _calibrated_rlhf(log_ref, reward, budget):
    return infalign.calibrate_and_transform_policy(log_ref, reward, budget)[0]


@settings(max_examples=examples(5))
@given(instances(), st.floats(0.05, 0.9), st.integers(0, 2**31 - 1))
def test_calibrated_tilt_is_the_exact_standard_win_rate_optimum(inst, fraction, seed):
    log_ref, reward = inst
    budget = fraction * float(kl.max_kl(log_ref, reward))
    violation = n1_optimality_violation(
        _calibrated_rlhf, log_ref, reward, budget, np.random.default_rng(seed)
    )
    assert violation <= 1e-9


@given(instances(sizes=(4,)), st.sampled_from([0.1, 1.0, 10.0]))
def test_n1_transformed_reward_is_the_calibrated_reward(inst, beta):
    """R = ∂W₁/∂π = C exactly, so the mirror-ascent optimum is π_ref·e^{C/β} in one step."""
    log_ref, reward = inst
    c = infalign.calibrated_reward(log_ref, reward)
    pi = random_policies(np.random.default_rng(0), len(reward), 1)[0]
    np.testing.assert_allclose(
        infalign.inference_win_rate_gradient(pi, log_ref, reward, 1), c, atol=1e-12
    )
    opt = infalign.inference_optimal_policy(log_ref, reward, beta, 1, num_steps=1)
    np.testing.assert_allclose(
        np.exp(opt.log_policy), np.exp(kl.tilted_policy(log_ref, c, beta)), atol=1e-12
    )
    assert float(opt.residual) <= 1e-9


# ---------------------------------------------------------------------------------------------
# (d) Best-of-N: the exact optimum is a fixed point of a transformed-reward tilt.


@settings(max_examples=examples(15))
@given(instances(), st.sampled_from([1, 2, 4]), st.sampled_from(["best", "worst"]))
def test_transformed_reward_is_the_gradient(inst, n, procedure):
    """R equals the closed form, the directional derivatives of the log-space W, and is
    constant on ties and non-decreasing in r."""
    log_ref, reward = inst
    log_pi = random_policies(np.random.default_rng(n), len(reward), 1)[0]
    grad = np.asarray(infalign.inference_win_rate_gradient(log_pi, log_ref, reward, n, procedure))
    np.testing.assert_allclose(
        grad, gradient_closed_form(log_pi, log_ref, reward, n, procedure), atol=1e-10
    )
    pi = np.exp(log_pi)
    rng = np.random.default_rng(len(reward))
    for _ in range(3):
        d = rng.standard_normal(len(reward)) * pi
        d -= pi * d.sum()  # tangent to the simplex, support kept
        eps = 1e-5 / np.max(np.abs(d) / pi)
        plus = infalign.inference_win_rate(np.log(pi + eps * d), log_ref, reward, n, procedure)
        minus = infalign.inference_win_rate(np.log(pi - eps * d), log_ref, reward, n, procedure)
        fd = (float(plus) - float(minus)) / (2 * eps)
        assert abs(fd - grad @ d) <= 1e-6 * (1 + abs(fd))
    order = np.argsort(reward, kind="stable")
    assert np.all(np.diff(grad[order]) >= -1e-12)
    for v in np.unique(reward):
        assert np.ptp(grad[reward == v]) <= 1e-12


def fixed_point_violation(candidate, log_ref, reward, beta, n) -> dict:
    """How far ``candidate`` is from being the exact optimum of W^{BoN_N} − β KL.

    ``residual``: spread of log(π/π_ref) − R(π)/β over the support (0 at a fixed point);
    ``excess``: max over rival policies of [objective(rival) − objective(candidate)].
    """
    log_pi = np.asarray(candidate(log_ref, reward, beta, n))
    r_pi = np.asarray(infalign.inference_win_rate_gradient(log_pi, log_ref, reward, n))
    gap = log_pi - log_ref - r_pi / beta
    j = objective(log_pi, log_ref, reward, beta, n, "best")
    rivals = [kl.tilted_policy(log_ref, reward, beta / s) for s in (0.3, 1.0, 3.0)]
    for transform in ("identity", "exp", "neg_exp"):
        for t in (1.0, 4.0, 12.0):
            phi = infalign.reward_transform(
                infalign.calibrated_reward(log_ref, reward), transform, t
            )
            rivals += [kl.tilted_policy(log_ref, phi, beta * s) for s in (0.1, 1.0, 10.0)]
    rivals += list(random_policies(np.random.default_rng(n), len(reward), 16))
    rivals = jnp.asarray(np.stack([np.asarray(r) for r in rivals]))
    kls = np.asarray(jax.vmap(kl.kl_divergence, in_axes=(0, None))(rivals, log_ref))
    excess = float(np.max(_win_rates(rivals, log_ref, reward, n) - beta * kls)) - j
    return {"residual": float(np.ptp(gap)), "excess": excess}


def _mirror_ascent_optimum(log_ref, reward, beta, n):
    return infalign.inference_optimal_policy(log_ref, reward, beta, n, "best").log_policy


@settings(max_examples=examples(6))
@given(instances(), st.sampled_from([0.05, 0.3, 2.0]))
def test_bon_optimum_is_a_fixed_point_of_the_transformed_reward_tilt(inst, beta):
    log_ref, reward = inst
    n = 4
    opt = infalign.inference_optimal_policy(log_ref, reward, beta, n, "best")
    assert float(opt.residual) <= 1e-9
    out = fixed_point_violation(_mirror_ascent_optimum, log_ref, reward, beta, n)
    assert out["residual"] <= 1e-9
    assert out["excess"] <= 1e-10
    # π* is the KL-RL tilt of its own transformed reward R*, a monotone function of r.
    np.testing.assert_allclose(
        np.exp(opt.log_policy),
        np.exp(kl.tilted_policy(log_ref, opt.transformed_reward, beta)),
        atol=1e-9,
    )
    order = np.argsort(reward, kind="stable")
    assert np.all(np.diff(np.asarray(opt.transformed_reward)[order]) >= -1e-12)


@settings(max_examples=examples(4))
@given(instances(), st.sampled_from([0.1, 1.0]))
def test_every_transform_lies_below_the_optimums_duality_bound(inst, budget_fraction):
    """Weak duality: any π with KL(π) = κ has W(π) ≤ W(π*_β) + β(κ − KL(π*_β)) for every β,
    so every calibrate-and-transform policy is below the optimum's tangents."""
    log_ref, reward = inst
    n = 4
    betas = (0.02, 0.1, 0.5, 2.0)
    tangents = []
    for beta in betas:
        opt = infalign.inference_optimal_policy(log_ref, reward, beta, n)
        w = float(infalign.inference_win_rate(opt.log_policy, log_ref, reward, n))
        tangents.append((w, float(kl.kl_divergence(opt.log_policy, log_ref)), beta))
    budget = budget_fraction * float(kl.max_kl(log_ref, reward))
    for transform, t in (("identity", 1.0), ("exp", 4.0), ("exp", 12.0), ("neg_exp", 4.0)):
        log_pi, _ = infalign.calibrate_and_transform_policy(log_ref, reward, budget, transform, t)
        w = float(infalign.inference_win_rate(log_pi, log_ref, reward, n))
        kappa = float(kl.kl_divergence(log_pi, log_ref))
        bound = min(wi + bi * (kappa - ki) for wi, ki, bi in tangents)
        assert w <= bound + 1e-9


def test_worst_of_n_mirror_ascent_reaches_a_stationary_point():
    """WoN's W is convex: mirror ascent still reaches a fixed point, with R monotone in r."""
    rng = np.random.default_rng(3)
    log_ref = np.log(rng.dirichlet(np.ones(7)))
    reward = np.round(rng.standard_normal(7), 1)
    for beta in (0.05, 0.5):
        opt = infalign.inference_optimal_policy(log_ref, reward, beta, 4, "worst")
        assert float(opt.residual) <= 1e-9
        order = np.argsort(reward, kind="stable")
        assert np.all(np.diff(np.asarray(opt.transformed_reward)[order]) >= -1e-12)


# ---------------------------------------------------------------------------------------------
# The calibrated-space reduction.


# The notes' table at KL = 0.5 (four digits; the global optimum is checked below).
_TABLE = [
    (1, "best", "identity", 1.0, 0.7737),
    (1, "best", "exp", 4.0, 0.7541),
    (1, "best", "neg_exp", 4.0, 0.7587),
    (4, "best", "identity", 1.0, 0.7998),
    (4, "best", "exp", 4.0, 0.8497),
    (4, "best", "exp", 12.0, 0.8726),
    (4, "worst", "identity", 1.0, 0.8860),
    (4, "worst", "neg_exp", 4.0, 0.9407),
    (4, "worst", "neg_exp", 10.0, 0.9476),
    (4, "worst", "exp", 4.0, 0.7699),
]


@pytest.mark.parametrize(("n", "procedure", "transform", "t", "expected"), _TABLE)
def test_calibrated_space_reproduces_the_reference_table(n, procedure, transform, t, expected):
    point = infalign.calibrated_space_win_rate(0.5, n, procedure, transform, t)
    assert abs(float(point.kl) - 0.5) <= 1e-9
    assert abs(float(point.win_rate) - expected) <= 6e-5


def test_tuned_exponential_transform_is_near_the_calibrated_space_optimum():
    """BoN₄ at KL 0.5: id .7998 < e^{12u} .8726 ≤ optimum .8732 (400 bins, duality bound)."""
    m = 400
    u = (np.arange(m) + 0.5) / m
    log_u = np.full(m, -np.log(m))
    tangents = []
    for beta in (0.21, 0.215, 0.22):  # KL ≈ 0.513, 0.503, 0.493
        opt = infalign.inference_optimal_policy(log_u, u, beta, 4)
        assert float(opt.residual) <= 1e-9
        w = float(infalign.inference_win_rate(opt.log_policy, log_u, u, 4))
        tangents.append((w, float(kl.kl_divergence(opt.log_policy, log_u)), beta))
    upper = min(w + b * (0.5 - k) for w, k, b in tangents)  # weak duality: ≥ the optimum
    kls = [k for _, k, _ in tangents]
    assert min(kls) < 0.5 < max(kls)
    below = max((t for t in tangents if t[1] <= 0.5), key=lambda t: t[1])
    above = min((t for t in tangents if t[1] >= 0.5), key=lambda t: t[1])
    frac = (0.5 - below[1]) / (above[1] - below[1])
    lower = below[0] + frac * (above[0] - below[0])  # chord of the concave frontier
    assert upper - lower <= 2e-4 and abs(lower - 0.8732) <= 2e-4
    tuned = infalign.tune_transform(0.5, 4, "best", "exp", np.arange(1.0, 21.0))
    identity = float(infalign.calibrated_space_win_rate(0.5, 4).win_rate)
    assert identity < float(tuned.win_rate) <= upper + 1e-6
    assert upper - float(tuned.win_rate) <= 2e-3


def finite_minus_calibrated_space(k, n, procedure, transform, t, budget=0.5) -> float:
    """Exact W on K equal-mass responses minus the 1-D calibrated-space W at the same KL."""
    reward = np.random.default_rng(k).permutation(k).astype(np.float64)
    log_ref = np.full(k, -np.log(k))
    log_pi, _ = infalign.calibrate_and_transform_policy(log_ref, reward, budget, transform, t)
    finite = float(infalign.inference_win_rate(log_pi, log_ref, reward, n, procedure))
    one_d = infalign.calibrated_space_win_rate(budget, n, procedure, transform, t).win_rate
    return finite - float(one_d)


@pytest.mark.parametrize(
    ("n", "procedure", "transform", "t"),
    [(4, "best", "exp", 8.0), (4, "worst", "neg_exp", 6.0), (2, "best", "identity", 1.0)],
)
def test_calibrated_space_formula_is_the_atomless_limit_of_enumeration(n, procedure, transform, t):
    """Error O(h²) in the atom size h = 1/K: small, and ×~16 smaller when K grows ×4."""
    # Measured: K = 32 → 128 shrinks the error 15-16× (quadrature error ~1e-6 at 4097 nodes).
    errors = [abs(finite_minus_calibrated_space(k, n, procedure, transform, t)) for k in (32, 128)]
    assert errors[1] <= 1e-3
    assert errors[0] / errors[1] >= 10


# ---------------------------------------------------------------------------------------------
# The checkers have teeth: deliberately wrong variants fail them.


def _calibrate_ties_win(log_ref, reward):
    p = np.exp(log_ref)
    return np.array([p[reward <= v].sum() for v in reward])


def _calibrate_ties_lose(log_ref, reward):
    p = np.exp(log_ref)
    return np.array([p[reward < v].sum() for v in reward])


def test_reference_example_and_wrong_tie_credits():
    """r = (1,2,2,3), π_ref = (.4,.3,.2,.1): C = (.2,.65,.65,.95), mean ½; the ≤-CDF gives .71."""
    log_ref, reward = np.log([0.4, 0.3, 0.2, 0.1]), np.array([1.0, 2.0, 2.0, 3.0])
    np.testing.assert_allclose(
        infalign.calibrated_reward(log_ref, reward), [0.2, 0.65, 0.65, 0.95], atol=1e-12
    )
    assert abs(float(np.exp(log_ref) @ _calibrate_ties_win(log_ref, reward)) - 0.71) <= 1e-12
    assert calibration_mean_error(_calibrate_ties_win, log_ref, reward) > 0.2
    assert calibration_mean_error(_calibrate_ties_lose, log_ref, reward) > 0.2
    np.testing.assert_allclose(
        np.exp(infalign.inference_time_policy(log_ref, reward, 2)),
        [0.16, 0.39, 0.26, 0.19],
        atol=1e-12,
    )
    assert abs(float(kl.best_of_n_win_rate(log_ref, reward, 2)) - 0.635) <= 1e-12
    assert abs(float(kl.best_of_n_win_rate(log_ref, reward, 4)) - 0.74165) <= 1e-12
    log_pi = np.log([0.1, 0.2, 0.3, 0.4])
    assert abs(float(infalign.inference_win_rate(log_pi, log_ref, reward, 1)) - 0.725) <= 1e-12
    assert abs(float(infalign.inference_win_rate(log_pi, log_ref, reward, 2)) - 0.74975) <= 1e-12


def _worst_as_reversed_best(log_p, reward, n):
    # A plausible bug: "worst-of-N = best-of-N with the CDF read from the other end" that
    # forgets to re-split the ties (credits the whole level to its first response).
    law = np.exp(np.asarray(kl.best_of_n_policy(log_p, -reward, n)))
    out = np.zeros_like(law)
    for v in np.unique(reward):
        idx = np.flatnonzero(reward == v)
        out[idx[0]] = law[idx].sum()
    return out


def test_enumeration_rejects_a_worst_of_n_that_mishandles_ties():
    log_p, reward = np.log([0.25, 0.25, 0.25, 0.25]), np.array([0.0, 1.0, 1.0, 2.0])
    oracle = decode_by_enumeration(log_p, reward, 3, "worst")
    assert np.max(np.abs(_worst_as_reversed_best(log_p, reward, 3) - oracle)) > 1e-2
    freq = decode_by_monte_carlo(log_p, reward, 3, "worst", jax.random.key(0), 200_000)
    assert np.max(np.abs(freq - _worst_as_reversed_best(log_p, reward, 3))) > 1e-2


def _raw_reward_rlhf(log_ref, reward, budget):
    return kl.kl_constrained_policy(log_ref, reward, budget)[0]


def test_n1_checker_rejects_raw_reward_rlhf():
    """Raw-reward RLHF is not the N = 1 optimum when r is not affine in C (here C steps
    .45 then .30 for unit steps of r); the calibrated tilt beats it by > 1e-3."""
    log_ref, reward = np.log([0.4, 0.3, 0.2, 0.1]), np.array([1.0, 2.0, 2.0, 3.0])
    rng = np.random.default_rng(0)
    assert n1_optimality_violation(_raw_reward_rlhf, log_ref, reward, 0.3, rng) > 1e-3
    assert n1_optimality_violation(_calibrated_rlhf, log_ref, reward, 0.3, rng) <= 1e-12


def _calibrated_tilt_as_bon_optimum(log_ref, reward, beta, n):
    # The N = 1 optimum, wrongly used for best-of-N.
    return kl.tilted_policy(log_ref, infalign.calibrated_reward(log_ref, reward), beta)


def _fixed_point_of_the_undecoded_reference(log_ref, reward, beta, n):
    # A plausible bug: R computed against π_ref instead of BoN_N(π_ref) (v = C), then the
    # same damped mirror ascent to its fixed point.
    c = np.asarray(infalign.calibrated_reward(log_ref, reward))
    alpha = beta / (beta + n * (n - 1))
    log_pi = np.asarray(log_ref)
    for _ in range(3000):
        r = level_gradient(log_pi, reward, c, n, "best")
        logits = (1 - alpha) * log_pi + alpha * (log_ref + r / beta)
        log_pi = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
    return log_pi


@pytest.mark.parametrize(
    "wrong", [_calibrated_tilt_as_bon_optimum, _fixed_point_of_the_undecoded_reference]
)
def test_fixed_point_checker_rejects_wrong_bon_optima(wrong):
    log_ref, reward = np.log([0.4, 0.3, 0.2, 0.1]), np.array([1.0, 2.0, 2.0, 3.0])
    good = fixed_point_violation(_mirror_ascent_optimum, log_ref, reward, 0.2, 4)
    bad = fixed_point_violation(wrong, log_ref, reward, 0.2, 4)
    assert good["residual"] <= 1e-9 and good["excess"] <= 1e-10
    assert bad["residual"] > 1e-2
    assert objective(wrong(log_ref, reward, 0.2, 4), log_ref, reward, 0.2, 4, "best") < (
        objective(_mirror_ascent_optimum(log_ref, reward, 0.2, 4), log_ref, reward, 0.2, 4, "best")
        - 1e-4
    )


def _calibrated_space_without_decoding_pi(kl_budget, n, procedure, transform, t):
    # A plausible bug: A = Q (the policy's own CDF) instead of Q^N.
    point = infalign.calibrated_space_win_rate(kl_budget, 1, procedure, transform, t)
    reference_term = 1 - n / (n + 1) if procedure == "best" else 1 / (n + 1)
    return float(point.win_rate) - 0.5 + reference_term


def test_atomless_limit_rejects_a_formula_that_forgets_to_decode_pi():
    k, n = 128, 4
    reward = np.random.default_rng(k).permutation(k).astype(np.float64)
    log_ref = np.full(k, -np.log(k))
    log_pi, _ = infalign.calibrate_and_transform_policy(log_ref, reward, 0.5, "exp", 8.0)
    finite = float(infalign.inference_win_rate(log_pi, log_ref, reward, n))
    wrong = _calibrated_space_without_decoding_pi(0.5, n, "best", "exp", 8.0)
    assert abs(finite - wrong) > 1e-2
    assert abs(finite_minus_calibrated_space(k, n, "best", "exp", 8.0)) <= 1e-3


# ---------------------------------------------------------------------------------------------
# Bad input.


def test_bad_input_raises_value_errors_naming_the_argument():
    log_ref, reward = np.log([0.5, 0.5]), np.array([0.0, 1.0])
    with pytest.raises(ValueError, match="log_ref is not normalised"):
        infalign.calibrated_reward(np.log([0.5, 0.6]), reward)
    with pytest.raises(ValueError, match="log_policy"):
        infalign.inference_win_rate(np.log([0.5, 0.6]), log_ref, reward, 2)
    with pytest.raises(ValueError, match="shape mismatch"):
        infalign.calibrated_reward(log_ref, np.zeros(3))
    with pytest.raises(ValueError, match="procedure"):
        infalign.inference_win_rate(log_ref, log_ref, reward, 2, "median")
    with pytest.raises(ValueError, match="n must be"):
        infalign.inference_win_rate(log_ref, log_ref, reward, 0)
    with pytest.raises(ValueError, match="n must be an integer"):
        infalign.inference_win_rate_gradient(log_ref, log_ref, reward, 2.5)
    with pytest.raises(ValueError, match="kl_budget"):
        infalign.calibrate_and_transform_policy(log_ref, reward, -0.1)
    with pytest.raises(ValueError, match="transform"):
        infalign.calibrate_and_transform_policy(log_ref, reward, 0.1, "square")
    with pytest.raises(ValueError, match="t must be > 0"):
        infalign.reward_transform(np.array([0.5]), "exp", 0.0)
    with pytest.raises(ValueError, match="beta"):
        infalign.inference_optimal_policy(log_ref, reward, 0.0, 2)
    with pytest.raises(ValueError, match="damping"):
        infalign.inference_optimal_policy(log_ref, reward, 1.0, 2, damping=1.5)
    with pytest.raises(ValueError, match="identity"):
        infalign.tune_transform(0.5, 4, "best", "identity")
    with pytest.raises(ValueError, match="num_points"):
        infalign.calibrated_space_win_rate(0.5, 4, num_points=2)
