"""Property tests for KL-constrained RL and best-of-N (ALGORITHMS.md §1).

Each property is written as a checker that takes the implementation under test, so
the same checker is also run against deliberately wrong formulas (the last tests in
this file) to show that it can fail. Best-of-N is checked exactly against an
independent oracle: enumerating all K^N draws with uniform tie-breaking.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jaxalign import kl
from theory_tests.strategies import base_and_reward, examples, lattice_instance, random_policies

# ---------------------------------------------------------------------------------------------
# Checkers (return the worst violation; the tests assert on it).


def gibbs_violation(tilt_fn, log_p, reward, beta, rng) -> tuple[float, float]:
    """(max over random φ of [E_φ r − β KL(φ‖p)] − β Λ(1/β),  |value at tilt − β Λ(1/β)|)."""
    value = beta * float(kl.log_mgf(log_p, reward, 1.0 / beta))
    phis = random_policies(rng, log_p.shape[0], 64)

    def objective(log_phi):
        return kl.expected_reward(log_phi, reward) - beta * kl.kl_divergence(log_phi, log_p)

    worst = float(jnp.max(jax.vmap(objective)(jnp.asarray(phis)))) - value
    at_tilt = abs(float(objective(tilt_fn(log_p, reward, beta))) - value)
    return worst, at_tilt


def bon_mc_error(bon_fn, log_p, reward, n, key, num_samples) -> float:
    """Max over y of |π_N(y) − MC frequency| / (5σ + 1e-3): ≤ 1 passes."""
    p = np.exp(log_p)
    k1, k2 = jax.random.split(key)
    draws = jax.random.choice(k1, p.shape[0], (num_samples, n), p=jnp.asarray(p))
    r = jnp.asarray(reward)[draws]
    best = r == r.max(axis=1, keepdims=True)
    # Uniform choice among the draws tied at the maximum.
    noise = jax.random.uniform(k2, draws.shape)
    pick = jnp.argmax(jnp.where(best, noise, -1.0), axis=1)
    chosen = np.asarray(jnp.take_along_axis(draws, pick[:, None], axis=1)[:, 0])
    freq = np.bincount(chosen, minlength=p.shape[0]) / num_samples
    exact = np.exp(np.asarray(bon_fn(log_p, reward, n)))
    sigma = np.sqrt(exact * (1 - exact) / num_samples)
    return float(np.max(np.abs(exact - freq) / (5 * sigma + 1e-3)))


def bon_by_enumeration(log_p, reward, n) -> tuple[np.ndarray, float]:
    """Exact best-of-N law and its win rate against p (ties ½), from all K^N draws.

    The draw with the highest reward is kept, uniformly among the draws tied at the top;
    independent of the CDF formula it checks (numpy, no sorting, no log space).
    """
    p, k = np.exp(log_p), len(log_p)
    law = np.zeros(k)
    for draws in itertools.product(range(k), repeat=n):
        r = reward[list(draws)]
        top = [y for y, v in zip(draws, r) if v == r.max()]
        mass = np.prod(p[list(draws)])
        for y in top:
            law[y] += mass / len(top)
    beats = (reward[:, None] > reward[None, :]) + 0.5 * (reward[:, None] == reward[None, :])
    return law, float(law @ beats @ p)


def bon_kl_bound_excess(bon_fn, log_p, reward, n) -> float:
    """KL(π_N‖p) − (log N − (N−1)/N) for a BoN law given by ``bon_fn``; ≤ 0 passes."""
    log_bon = np.asarray(bon_fn(log_p, reward, n))
    assert abs(float(jax.nn.logsumexp(log_bon))) < 1e-10  # a distribution
    return float(kl.kl_divergence(log_bon, log_p)) - float(kl.best_of_n_kl_bound(n))


# ---------------------------------------------------------------------------------------------
# The tilt and the budget solver.


@given(base_and_reward(), st.sampled_from([0.05, 0.5, 2.0, 20.0]), st.integers(0, 2**31 - 1))
def test_tilt_satisfies_gibbs_variational_principle(inst, beta, seed):
    log_p, reward = inst
    worst, at_tilt = gibbs_violation(
        kl.tilted_policy, log_p, reward, beta, np.random.default_rng(seed)
    )
    scale = 1 + beta * abs(float(kl.log_mgf(log_p, reward, 1 / beta)))
    assert worst <= 1e-10 * scale
    assert at_tilt <= 1e-10 * scale


@given(base_and_reward(), st.floats(0.01, 10.0), st.integers(0, 2**31 - 1))
def test_near_optimality_identity(inst, lam, seed):
    """KL(φ‖φ_λ) = KL(φ‖p) − Δ + λ(E_{φ_λ} r − E_φ r) with Δ = KL(φ_λ‖p), for every φ."""
    log_p, reward = inst
    log_tilt = kl.tilted_policy(log_p, reward, 1 / lam)
    delta = kl.kl_divergence(log_tilt, log_p)
    r_tilt = kl.expected_reward(log_tilt, reward)
    phis = jnp.asarray(random_policies(np.random.default_rng(seed), log_p.shape[0], 32))

    def residual(log_phi):
        lhs = kl.kl_divergence(log_phi, log_tilt)
        rhs = (
            kl.kl_divergence(log_phi, log_p)
            - delta
            + lam * (r_tilt - kl.expected_reward(log_phi, reward))
        )
        return jnp.abs(lhs - rhs) / (1 + jnp.abs(lhs))

    assert float(jnp.max(jax.vmap(residual)(phis))) < 1e-9


@given(base_and_reward(), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
def test_no_feasible_policy_beats_the_tilt(inst, budget_fraction, seed):
    log_p, reward = inst
    budget = budget_fraction * float(kl.max_kl(log_p, reward))
    log_opt, _ = kl.kl_constrained_policy(log_p, reward, budget)
    best = float(kl.expected_reward(log_opt, reward))
    rng = np.random.default_rng(seed)
    p = np.exp(log_p)
    # Random directions, and perturbations of the optimum itself, pulled into the feasible set
    # by mixing with p (KL is convex along the segment, so bisection finds the boundary).
    candidates = list(np.exp(random_policies(rng, p.shape[0], 24)))
    opt = np.exp(np.asarray(log_opt))
    for _ in range(24):
        q = opt * np.exp(0.05 * rng.standard_normal(p.shape[0]))
        candidates.append(q / q.sum())
    q = np.stack(candidates)

    def np_kl(a):  # KL(a‖p) row-wise, numpy
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sum(np.where(a > 0, a * (np.log(a) - log_p), 0.0), axis=-1)

    lo, hi = np.zeros(len(q)), np.ones(len(q))
    for _ in range(60):
        t = 0.5 * (lo + hi)
        ok = np_kl((1 - t[:, None]) * p + t[:, None] * q) <= budget
        lo, hi = np.where(ok, t, lo), np.where(ok, hi, t)
    mixes = np.log((1 - lo[:, None]) * p + lo[:, None] * q)
    rewards = np.asarray(jax.vmap(kl.expected_reward, in_axes=(0, None))(mixes, reward))
    kls = np.asarray(jax.vmap(kl.kl_divergence, in_axes=(0, None))(mixes, log_p))
    assert np.all(kls <= budget + 1e-12)
    assert np.max(rewards) <= best + 1e-9 * (1 + abs(best))


@given(base_and_reward(), st.floats(0.0, 1.0))
def test_budget_solver_hits_the_budget(inst, fraction):
    log_p, reward = inst
    top = float(kl.max_kl(log_p, reward))
    budget = fraction * top
    log_opt, beta = kl.kl_constrained_policy(log_p, reward, budget)
    if budget < top:
        assert abs(float(kl.kl_divergence(log_opt, log_p)) - budget) <= 1e-6
        assert float(beta) > 0
        # The solution is the tilt at the returned temperature.
        if np.isfinite(float(beta)):
            np.testing.assert_allclose(
                np.exp(log_opt), np.exp(kl.tilted_policy(log_p, reward, beta)), atol=1e-6
            )
    else:  # not binding: the argmax restriction of p, beta = 0
        assert float(beta) == 0.0
        top_set = reward == reward.max()
        np.testing.assert_allclose(
            np.exp(log_opt),
            np.where(top_set, np.exp(log_p), 0) / np.exp(log_p)[top_set].sum(),
            atol=1e-12,
        )


@given(base_and_reward(), st.booleans())
def test_max_kl_is_never_negative_and_a_valid_budget(inst, constant):
    """max_kl = −log p(argmax set) ≥ 0 — also for a constant reward, where it is −log 1 and
    a rounding error used to make it −1e-16 and the budget solver reject it."""
    log_p, reward = inst
    if constant:
        reward = np.full_like(reward, reward[0])
    top = float(kl.max_kl(log_p, reward))
    assert top >= 0
    if constant:  # exactly −log 1: a rounding ±1e-16 made budgets negative or "binding"
        assert top == 0.0
    top_set = reward == reward.max()
    np.testing.assert_allclose(top, -np.log(np.exp(log_p)[top_set].sum()), atol=1e-12)
    # Every budget up to it is accepted; the largest returns the argmax restriction, β = 0.
    assert np.isfinite(np.asarray(kl.kl_constrained_policy(log_p, reward, 0.875 * top)[0])).any()
    log_opt, beta = kl.kl_constrained_policy(log_p, reward, top)
    assert float(beta) == 0.0
    np.testing.assert_allclose(
        np.exp(log_opt),
        np.where(top_set, np.exp(log_p), 0) / np.exp(log_p)[top_set].sum(),
        atol=1e-12,
    )


def test_budget_solver_is_jittable_and_vmappable():
    rng = np.random.default_rng(0)
    log_p = np.stack([np.log(rng.dirichlet(np.ones(6))) for _ in range(16)])
    reward = rng.standard_normal((16, 6))
    budgets = np.linspace(0.01, 0.3, 16)
    log_opt, _ = jax.jit(jax.vmap(kl.kl_constrained_policy))(log_p, reward, budgets)
    kls = jax.vmap(kl.kl_divergence)(log_opt, log_p)
    np.testing.assert_allclose(kls, budgets, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Best-of-N.


@given(base_and_reward(), st.sampled_from([1, 2, 3, 7, 50, 1000, 10**6, 1e12]))
def test_bon_kl_is_below_log_n_minus_n_minus_1_over_n(inst, n):
    log_p, reward = inst
    assert bon_kl_bound_excess(_bon_jit, log_p, reward, float(n)) <= 1e-10


_bon_jit = jax.jit(kl.best_of_n_policy)


@settings(max_examples=examples(10))
@given(st.integers(1, 20), st.integers(0, 2**31 - 1))
def test_bon_kl_bound_is_tight_without_atoms(n, seed):
    k = 20_000
    reward = np.random.default_rng(seed).permutation(k).astype(np.float64)
    log_p = np.full(k, -math.log(k))
    gap = float(kl.best_of_n_kl_bound(n)) - float(kl.best_of_n_kl(log_p, reward, n))
    assert -1e-12 <= gap <= 1e-3


@given(base_and_reward(), st.sampled_from([1, 2, 5, 30, 10**4]))
def test_bon_win_rate_is_at_most_n_over_n_plus_1(inst, n):
    log_p, reward = inst
    assert float(kl.best_of_n_win_rate(log_p, reward, n)) <= n / (n + 1) + 1e-12


@settings(max_examples=examples(10))
@given(st.integers(1, 50), st.integers(0, 2**31 - 1))
def test_bon_win_rate_equals_n_over_n_plus_1_without_atoms(n, seed):
    k = 400
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(k))
    reward = rng.standard_normal(k)
    got = float(kl.best_of_n_win_rate(np.log(p), reward, n))
    # Distinct rewards: with F_i the CDF in reward order, π_N(i) = F_i^N − F_{i−1}^N and a
    # draw from p beats or ties response i with probability (F_{i−1} + F_i)/2 (a response
    # ties only with itself), so the win rate is N/(N+1) minus the trapezoid-rule error of
    # ∫ N u^N du on the grid F (computed here in numpy, in reward order).
    cdf = np.cumsum(p[np.argsort(reward)])
    lo = np.concatenate([[0.0], cdf[:-1]])
    exact = np.sum((cdf**n - lo**n) * (cdf + lo) / 2)
    deficit = np.sum(
        n / (n + 1) * (cdf ** (n + 1) - lo ** (n + 1)) - (cdf**n - lo**n) * (cdf + lo) / 2
    )
    assert abs(got - exact) <= 1e-12
    assert abs((n / (n + 1) - got) - deficit) <= 1e-12
    # The deficit vanishes as the atoms do: at most ½·N·Σ p² (the tie mass).
    assert -1e-15 <= deficit <= 0.5 * n * np.sum(p**2) + 1e-15


@settings(max_examples=examples(15))
@given(base_and_reward(max_size=5), st.integers(1, 4))
def test_bon_law_and_win_rate_match_enumeration_of_all_draws(inst, n):
    """Exact π_N and its win rate (ties ½) equal the enumeration of all K^N draws."""
    log_p, reward = inst
    if np.unique(reward).size == reward.size:  # make ties: round the rewards
        reward = np.round(reward)
    law, win = bon_by_enumeration(log_p, reward, n)
    np.testing.assert_allclose(np.exp(np.asarray(_bon_jit(log_p, reward, n))), law, atol=1e-12)
    assert abs(float(kl.best_of_n_win_rate(log_p, reward, n)) - win) <= 1e-12
    assert win <= n / (n + 1) + 1e-12
    # The exact win rate is kl.win_rate of π_N against p, which is antisymmetric.
    log_law = np.log(np.maximum(law, 1e-300))
    assert abs(float(kl.win_rate(log_law, log_p, reward)) - win) <= 1e-12
    assert abs(float(kl.win_rate(log_p, log_law, reward)) - (1 - win)) <= 1e-12
    assert abs(float(kl.win_rate(log_p, log_p, reward)) - 0.5) <= 1e-12


@settings(max_examples=examples(6))
@given(base_and_reward(max_size=6, ties=True), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_exact_bon_with_ties_matches_monte_carlo(inst, n, seed):
    """Tolerance: 5 binomial standard deviations + 1e-3 per response, 100k samples."""
    log_p, reward = inst
    err = bon_mc_error(kl.best_of_n_policy, log_p, reward, n, jax.random.key(seed), 100_000)
    assert err <= 1.0


# ---------------------------------------------------------------------------------------------
# Memoryless-model asymptotics.


def test_bon_per_token_reward_approaches_x_star_reference_example():
    """ALGORITHMS.md §1: p=[.6,.3,.1], r=[0,1,2], δ=0.1 → 0.667, 0.763, 0.800, 0.812 → 0.8185."""
    log_p, reward = np.log([0.6, 0.3, 0.1]), np.array([0.0, 1.0, 2.0])
    out = kl.bon_vs_kl_rl_per_token(log_p, reward, 0.1, [10, 50, 200, 800])
    # The published values are rounded; the exact m = 10 value is 0.66638.
    np.testing.assert_allclose(out["bon_reward"], [0.667, 0.763, 0.800, 0.812], atol=1e-3)
    assert abs(out["x_star"][0] - 0.8185) < 1e-4
    gap = out["x_star"] - out["bon_reward"]
    assert np.all(np.diff(gap) < 0) and np.all(gap > 0)
    # The gap shrinks like log m / m: m·gap/log m stays within a constant band.
    m = out["m"]
    scaled = gap * m / np.log(m)
    assert scaled.max() / scaled.min() < 1.5


@settings(max_examples=examples(8))
@given(lattice_instance(), st.floats(0.02, 0.4))
def test_bon_never_beats_kl_rl_and_its_gap_shrinks_with_m(inst, frac):
    log_p, reward = inst
    delta = frac * float(kl.max_kl(log_p, reward))
    out = kl.bon_vs_kl_rl_per_token(log_p, reward, delta, [8, 32, 128])
    # BoN's KL ≤ log N = mδ, and KL-RL is optimal at that budget.
    assert np.all(out["bon_reward"] <= out["kl_rl_reward"] + 1e-9)
    assert np.all(out["bon_kl"] <= delta + 1e-9)
    gap = out["x_star"] - out["bon_reward"]
    assert np.all(np.diff(gap) < 0)
    # x* from Λ*(x*) = δ equals the KL-RL per-token reward.
    np.testing.assert_allclose(out["x_star"], out["kl_rl_reward"], atol=1e-8)


def test_sequence_law_does_not_underflow_for_long_sequences():
    log_p, reward = np.log([0.6, 0.3, 0.1]), np.array([0.0, 1.0, 2.0])
    _, law = kl.sequence_reward_law(log_p, reward, 3000)
    assert abs(float(jax.nn.logsumexp(law))) < 1e-9
    # The top value has probability 0.1^3000 = e^{-6907.8}: representable only in log space.
    assert abs(float(law[-1]) - 3000 * math.log(0.1)) < 1e-6
    r_bon, _ = kl.best_of_n_sequence(log_p, reward, 3000, math.exp(300.0))
    assert np.isfinite(float(r_bon))


@settings(max_examples=examples(10))
@given(lattice_instance(), st.floats(-2.0, 2.0), st.floats(-1.0, 1.0), st.integers(1, 9))
def test_scaled_cumulant_is_exact_for_every_m(inst, lam, t, m):
    log_p, reward = inst
    log_tilt = jax.nn.log_softmax(log_p + lam * reward)
    values, law = kl.sequence_reward_law(log_tilt, reward, m)
    finite_m = float(jax.nn.logsumexp(law + t * values)) / m
    assert abs(finite_m - float(kl.scaled_cumulant(log_p, reward, lam, t))) < 1e-9


@given(base_and_reward(), st.floats(-5.0, 5.0), st.floats(0.05, 0.95))
def test_legendre_transform_is_the_supremum(inst, lam, where):
    log_p, reward = inst
    assume(reward.max() > reward.min())
    x = reward.min() + where * (reward.max() - reward.min())
    star = float(kl.legendre_transform(log_p, reward, x))
    # Supremum: above every affine minorant, and attained at the tilt whose mean is x.
    assert star >= lam * x - float(kl.log_mgf(log_p, reward, lam)) - 1e-9
    assert star >= -1e-12
    # The rate function under the tilt vanishes at its mean and is positive elsewhere.
    mean = float(np.clip(kl.tilted_mean(log_p, reward, lam), reward.min(), reward.max()))
    assert abs(float(kl.rate_function(log_p, reward, lam, mean))) < 1e-7
    if abs(x - mean) > 1e-3 * (reward.max() - reward.min()):
        assert float(kl.rate_function(log_p, reward, lam, x)) > 0


# ---------------------------------------------------------------------------------------------
# The checkers have teeth: deliberately wrong formulas fail them.


def _tilt_with_beta_not_inverted(log_p, reward, beta):
    return jax.nn.log_softmax(log_p + beta * reward)


def _bon_ignoring_ties(log_p, reward, n):
    # F(y)^N − F⁻(y)^N with ties ordered by index, i.e. treating equal rewards as distinct.
    order = np.lexsort((np.arange(len(reward)), reward))
    p = np.exp(log_p)[order]
    cdf = np.cumsum(p)
    law = cdf**n - np.concatenate([[0.0], cdf[:-1]]) ** n
    out = np.empty_like(law)
    out[order] = law
    return np.log(np.maximum(out, 1e-300))


def test_gibbs_checker_rejects_a_wrong_tilt():
    log_p, reward = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0])
    _, at_tilt = gibbs_violation(
        _tilt_with_beta_not_inverted, log_p, reward, 0.5, np.random.default_rng(0)
    )
    assert at_tilt > 1e-3


def test_monte_carlo_checker_rejects_bon_without_tie_handling():
    log_p, reward = np.log([0.25, 0.25, 0.25, 0.25]), np.array([0.0, 1.0, 1.0, 2.0])
    assert bon_mc_error(_bon_ignoring_ties, log_p, reward, 3, jax.random.key(0), 100_000) > 1.0
    assert bon_mc_error(kl.best_of_n_policy, log_p, reward, 3, jax.random.key(0), 100_000) <= 1.0


def _bon_one_draw_too_many(log_p, reward, n):
    return kl.best_of_n_policy(log_p, reward, n + 1)


def test_bon_bound_rejects_a_wrong_bon_formula():
    """BoN with N + 1 draws is a distribution with the right log N growth and the wrong
    constant: the tight bound rejects it (atomless p), and accepts the correct π_N."""
    k = 2000
    log_p = np.full(k, -math.log(k))
    reward = np.random.default_rng(0).permutation(k).astype(np.float64)
    for n in (2, 8, 100):
        assert bon_kl_bound_excess(_bon_one_draw_too_many, log_p, reward, n) > 1e-3
        assert bon_kl_bound_excess(kl.best_of_n_policy, log_p, reward, n) <= 1e-12


def test_enumeration_oracle_rejects_wrong_tie_credit():
    """The win-rate oracle separates ties credited ½ from ties credited 0 or 1."""
    log_p, reward = np.log([0.4, 0.3, 0.2, 0.1]), np.array([0.0, 1.0, 1.0, 2.0])
    law, win = bon_by_enumeration(log_p, reward, 3)
    p = np.exp(log_p)
    for credit in (0.0, 1.0):
        beats = (reward[:, None] > reward[None, :]) + credit * (reward[:, None] == reward[None, :])
        assert abs(float(law @ beats @ p) - win) > 1e-2


@pytest.mark.parametrize("n", [2, 10])
def test_tie_free_bon_reduces_to_cdf_power_difference(n):
    rng = np.random.default_rng(n)
    log_p = np.log(rng.dirichlet(np.ones(7)))
    reward = rng.standard_normal(7)
    np.testing.assert_allclose(
        np.exp(kl.best_of_n_policy(log_p, reward, n)),
        np.exp(_bon_ignoring_ties(log_p, reward, n)),
        atol=1e-12,
    )
