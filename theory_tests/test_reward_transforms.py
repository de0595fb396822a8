"""Property tests of the LSC reward transform and AND-combination (ALGORITHMS_2.md, LSC section).

Statements (tags from ALGORITHMS_2.md; the [derived]/[unverified] ones are settled here):

(a) π_LSC ∝ π₀ σ(r − r_ref)^{1/γ} maximises E_π u − γ KL(π‖π₀) — checked against exact
    entropic mirror ascent and against random policies; at γ = 1 it is the Bayes posterior
    π₀ σ / P(G = 1), computed here independently. Wrong variant: the exponent γ instead of 1/γ.
(b) AND: on the worked example LSC prefers the balanced y₂ = (1, 1) over the one-sided
    y₁ = (6, −3) (u_AND = −0.627 vs −3.051) and its policy puts less mass on y₁ for every γ;
    more generally, at a fixed raw sum u_AND is maximal at the balanced split. Wrong variant:
    LSC of the summed raw rewards, log σ(r₁ + r₂ − r_ref), ranks y₁ first and cannot see the
    split. The AND reading needs conditional independence: under a comonotone coupling the
    all-good probability is min σ_i, not the product.
(c) ∂u/∂r = σ(r_ref − r) (autodiff), u ≤ 0, scaling −u e^{r − r_ref} → 1 (so pushing r
    far above r_ref buys ~e^{−(r − r_ref)}); per-prompt shift invariance holds when r_ref is
    the quantile of the *shifted* rewards and fails with a stale r_ref; scale is not
    invariant. r_ref is the reference-policy quantile: the quantile inequalities hold under
    π₀; the quantile taken under the trained policy, and the Gaussian shortcut
    mean + 1.0364·std on a spiked reward, are rejected.
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
from theory_tests.strategies import base_and_reward, examples, log_softmax, random_policies

QUANTILES = st.sampled_from([0.1, 0.5, 0.85, 0.9, 1.0])


# ---------------------------------------------------------------------------------------------
# Checkers (return violations; each is also run on a wrong variant that it must reject).


def optimum_violation(policy_fn, log_p, reward, r_ref, gamma, rng) -> tuple[float, float]:
    """(max |π − mirror-ascent optimum|, max over random φ of F(φ) − F(π)) with
    F(π) = E_π u − γ KL(π‖π₀)."""
    u = np.asarray(jax.nn.log_sigmoid(jnp.asarray(reward - r_ref)))
    # Entropic mirror ascent on F with step s = 1/(2γ): the logit error halves every step.
    s = 0.5 / gamma
    theta = np.log(np.full(log_p.shape[0], 1.0 / log_p.shape[0]))
    for _ in range(200):
        theta = log_softmax((1 - s * gamma) * theta + s * gamma * log_p + s * u)
    log_pi = np.asarray(policy_fn(log_p, reward, r_ref, gamma))
    err = float(np.max(np.abs(np.exp(log_pi) - np.exp(theta))))

    def objective(lq):  # [n, K] log-policies -> [n] values of F, in numpy
        q = np.exp(lq)
        return q @ u - gamma * np.sum(q * (lq - log_p), axis=-1)

    others = random_policies(rng, log_p.shape[0], 64)
    excess = float(objective(others).max() - objective(log_pi[None])[0])
    return err, excess


def quantile_violation(r_ref: float, log_ref: np.ndarray, reward: np.ndarray, q: float) -> float:
    """How far r_ref is from Pr_ref[r < r_ref] ≤ q ≤ Pr_ref[r ≤ r_ref] (0: it is a q-quantile)."""
    p = np.exp(log_ref)
    below = float(p[reward < r_ref].sum())
    at_or_below = float(p[reward <= r_ref].sum())
    return max(0.0, below - q, q - at_or_below)


def balance_violation(combine, total: float, offsets) -> float:
    """Splits (total/2 + d, total/2 − d) with growing |d| must strictly lose value; returns the
    worst increase (+1e-12, so "no change" counts as a violation), 0 if strictly decreasing."""
    ds = sorted({0.0, *(abs(d) for d in offsets)})
    values = [float(combine(np.array([[total / 2 + d], [total / 2 - d]]))[0]) for d in ds]
    return max([0.0] + [values[i + 1] - values[i] + 1e-12 for i in range(len(ds) - 1)])


# ---------------------------------------------------------------------------------------------
# (a) the optimum and the posterior.


@settings(max_examples=examples(15))
@given(
    inst=base_and_reward(),
    gamma=st.sampled_from([0.2, 1.0, 3.0]),
    q=QUANTILES,
    seed=st.integers(0, 2**31 - 1),
)
def test_lsc_policy_is_the_kl_regularised_optimum(inst, gamma, q, seed):
    log_p, reward = inst
    r_ref = float(kl.reference_reward(log_p, reward, q))
    err, excess = optimum_violation(
        kl.lsc_policy, log_p, reward, r_ref, gamma, np.random.default_rng(seed)
    )
    assert err < 1e-9
    assert excess <= 1e-10


@settings(max_examples=examples(15))
@given(inst=base_and_reward(), shift=st.sampled_from([-2.0, 0.0, 1.5]))
def test_lsc_policy_at_gamma_one_is_the_bayes_posterior(inst, shift):
    log_p, reward = inst
    r_ref = float(np.median(reward)) + shift
    joint = np.exp(log_p) / (1 + np.exp(-(reward - r_ref)))  # π₀(y) P(G=1 | y)
    posterior = joint / joint.sum()
    got = np.exp(np.asarray(kl.lsc_policy(log_p, reward, r_ref, 1.0)))
    np.testing.assert_allclose(got, posterior, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(
        np.exp(np.asarray(kl.good_posterior(log_p, reward, r_ref))), posterior, rtol=1e-10
    )


def test_optimum_checker_rejects_the_inverted_exponent():
    rng = np.random.default_rng(0)
    log_p = log_softmax(rng.standard_normal(6))
    reward = rng.standard_normal(6) * 2
    r_ref = float(kl.reference_reward(log_p, reward))

    def wrong(lp, r, ref, gamma):  # π ∝ π₀ σ^γ instead of σ^{1/γ}
        return jax.nn.log_softmax(lp + gamma * jax.nn.log_sigmoid(jnp.asarray(r - ref)))

    err, excess = optimum_violation(wrong, log_p, reward, r_ref, 0.25, rng)
    assert err > 1e-3 and excess > 1e-4
    err, _ = optimum_violation(wrong, log_p, reward, r_ref, 1.0, rng)
    assert err < 1e-9  # the two agree at γ = 1 only: the check must use γ ≠ 1


# ---------------------------------------------------------------------------------------------
# (b) AND-combination.


def test_and_worked_example_prefers_the_balanced_response():
    rewards = np.array([[6.0, 1.0], [-3.0, 1.0]])  # columns y₁ (hacker), y₂ (balanced)
    u = np.asarray(kl.and_combination(rewards, np.zeros(2)))
    np.testing.assert_allclose(u, [-3.0511, -0.6265], atol=5e-5)
    log_base = np.log(np.full(2, 0.5))
    for gamma in [0.1, 1.0, 10.0]:
        lsc = np.asarray(kl.tilted_policy(log_base, u, gamma))
        raw = np.asarray(kl.tilted_policy(log_base, rewards.sum(0), gamma))
        assert lsc[0] < lsc[1]  # LSC: less mass on the one-sided y₁
        assert raw[0] > raw[1]  # raw sum: more mass on y₁
    # Wrong variant: LSC of the summed raw rewards ranks y₁ first.
    wrong = np.asarray(jax.nn.log_sigmoid(jnp.asarray(rewards.sum(0))))
    assert wrong[0] > wrong[1]


@settings(max_examples=examples(25))
@given(
    total=st.floats(-6, 6),
    d1=st.floats(0, 5),
    d2=st.floats(0, 5),
    r_ref=st.floats(-2, 2),
)
def test_and_prefers_balanced_splits_of_the_same_raw_sum(total, d1, d2, r_ref):
    assume(min(d1, d2, abs(d1 - d2)) > 1e-2)
    refs = np.array([r_ref, r_ref])
    good = lambda r: kl.and_combination(r, refs)
    assert balance_violation(good, total, (d1, d2)) == 0.0
    # Wrong variant: log σ(r₁ + r₂ − 2 r_ref) sees only the sum (no strict preference).
    summed = lambda r: jax.nn.log_sigmoid(jnp.asarray(r.sum(0) - 2 * r_ref))
    assert balance_violation(summed, total, (d1, d2)) > 0.0


@settings(max_examples=examples(15))
@given(m=st.integers(2, 4), seed=st.integers(0, 2**31 - 1))
def test_and_is_the_all_good_probability_only_under_independence(m, seed):
    rng = np.random.default_rng(seed)
    rewards = rng.standard_normal((m, 5)) * 2
    refs = rng.standard_normal(m)
    u = np.asarray(kl.and_combination(rewards, refs))
    sig = 1 / (1 + np.exp(-(rewards - refs[:, None])))  # [m, K] P(G_i = 1 | y)
    # Independent G_i: enumerate all 2^m outcomes, sum the all-good one.
    all_good = np.zeros(5)
    for outcome in itertools.product([0, 1], repeat=m):
        prob = np.prod([sig[i] if g else 1 - sig[i] for i, g in enumerate(outcome)], axis=0)
        all_good += prob if all(outcome) else 0
    np.testing.assert_allclose(np.exp(u), all_good, rtol=1e-12)
    # Comonotone G_i (one uniform draw decides all): P(all good) = min_i σ_i > product.
    comonotone = sig.min(axis=0)
    assert np.all(comonotone > np.exp(u) * (1 + 1e-6))


# ---------------------------------------------------------------------------------------------
# (c) slope, bound, scaling, shift invariance, the reference quantile.


@settings(max_examples=examples(25))
@given(r=st.floats(-30, 30), r_ref=st.floats(-5, 5))
def test_lsc_slope_is_sigmoid_of_the_reference_gap_and_u_is_nonpositive(r, r_ref):
    grad = float(jax.grad(lambda x: kl.lsc_transform(x, jnp.asarray(r_ref)))(jnp.asarray(r)))
    expected = 1 / (1 + math.exp(-(r_ref - r)))
    assert grad == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert float(kl.lsc_transform(r, r_ref)) <= 0.0
    # Wrong variant: slope σ(r − r_ref) (increasing in r) disagrees unless r = r_ref.
    wrong = 1 / (1 + math.exp(-(r - r_ref)))
    if abs(r - r_ref) > 1e-3:
        assert abs(grad - wrong) > 1e-6


def test_lsc_saturates_above_the_reference_and_is_linear_far_below():
    gaps = np.array([2.0, 5.0, 10.0, 20.0, 30.0])
    u = np.asarray(kl.lsc_transform(gaps, 0.0))
    ratio = -u * np.exp(gaps)  # → 1: the gain left above r_ref decays like e^{−gap}
    assert np.all(np.diff(np.abs(ratio - 1)) < 0) and abs(ratio[-1] - 1) < 1e-12
    slope = np.polyfit(gaps[2:], np.log(-u[2:]), 1)[0]
    assert slope == pytest.approx(-1.0, abs=1e-4)
    below = np.asarray(kl.lsc_transform(-gaps, 0.0))
    assert np.all(np.abs(below + gaps) <= np.exp(-gaps) + 1e-15)  # u ≈ r − r_ref, slope ≈ 1


@settings(max_examples=examples(20))
@given(inst=base_and_reward(), q=QUANTILES, shift=st.floats(-50, 50))
def test_per_prompt_shift_is_harmless_only_with_recomputed_reference(inst, q, shift):
    log_p, reward = inst
    ref = kl.reference_reward(log_p, reward, q)
    shifted = reward + shift
    ref_shifted = kl.reference_reward(log_p, shifted, q)
    assert float(ref_shifted) == pytest.approx(float(ref) + shift, abs=1e-12 * (1 + abs(shift)))
    u = np.asarray(kl.lsc_transform(reward, ref))
    u_shifted = np.asarray(kl.lsc_transform(shifted, ref_shifted))
    np.testing.assert_allclose(u_shifted, u, atol=1e-12 * (1 + abs(shift)))
    # Wrong variant: the stale r_ref of the unshifted RM.
    if abs(shift) > 1e-3:
        stale = np.asarray(kl.lsc_transform(shifted, ref))
        assert np.max(np.abs(stale - u)) > 1e-6
    # Scale is not a symmetry, even with a recomputed reference.
    if np.ptp(reward) > 1e-3:
        doubled = np.asarray(
            kl.lsc_transform(2 * reward, kl.reference_reward(log_p, 2 * reward, q))
        )
        assert np.max(np.abs(doubled - u)) > 1e-6


@settings(max_examples=examples(20))
@given(inst=base_and_reward(), q=QUANTILES)
def test_reference_reward_is_the_reference_policy_quantile(inst, q):
    log_p, reward = inst
    r_ref = float(kl.reference_reward(log_p, reward, q))
    assert quantile_violation(r_ref, log_p, reward, q) <= 1e-12
    assert r_ref in set(reward[np.exp(log_p) > 0].tolist())  # one of the rewards


@settings(max_examples=examples(20))
@given(
    n=st.sampled_from([1, 2, 7, 20, 60]),
    q=QUANTILES,
    seed=st.integers(0, 2**31 - 1),
    ties=st.booleans(),
)
def test_empirical_reference_reward_is_the_inverted_cdf_quantile(n, q, seed, ties):
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, 4, n).astype(np.float64) if ties else rng.standard_normal(n)
    got = float(kl.empirical_reference_reward(samples, q))
    assert got == np.quantile(samples, q, method="inverted_cdf")
    # The same as the exact quantile of the empirical (uniform) distribution.
    uniform = np.full(n, -np.log(n))
    assert got == float(kl.reference_reward(uniform, samples, q))


def test_quantile_checker_rejects_the_policy_quantile_and_the_gaussian_shortcut():
    rng = np.random.default_rng(3)
    k, q = 64, 0.85
    log_ref = log_softmax(rng.standard_normal(k))
    reward = rng.standard_normal(k)
    # Wrong variant 1: r_ref from the trained (tilted) policy instead of the reference.
    log_pi = np.asarray(kl.lsc_policy(log_ref, reward, float(np.median(reward)), 0.2))
    from_policy = float(kl.reference_reward(log_pi, reward, q))
    assert quantile_violation(from_policy, log_ref, reward, q) > 0.02
    # Wrong variant 2: mean + Φ⁻¹(q)·std on a reward with a spike on 4% of the mass.
    spiked = reward.copy()
    top = np.argsort(reward)[-3:]
    spiked[top] += 8.0
    gauss = float(kl.gaussian_reference_reward(log_ref, spiked, q))
    assert quantile_violation(gauss, log_ref, spiked, q) > 0.02
    exact = float(kl.reference_reward(log_ref, spiked, q))
    assert quantile_violation(exact, log_ref, spiked, q) <= 1e-12
    assert exact == float(kl.reference_reward(log_ref, reward, q))  # the spike is above it


def test_lsc_reward_combines_per_property_reference_quantiles():
    rng = np.random.default_rng(1)
    log_ref = log_softmax(rng.standard_normal(7))
    rewards = rng.standard_normal((3, 7))
    refs = np.array([float(kl.reference_reward(log_ref, r, 0.7)) for r in rewards])
    np.testing.assert_allclose(
        np.asarray(kl.lsc_reward(log_ref, rewards, 0.7)),
        np.sum(np.log(1 / (1 + np.exp(-(rewards - refs[:, None])))), axis=0),
        rtol=1e-12,
    )
    batched = jax.jit(jax.vmap(lambda lr, r: kl.lsc_reward(lr, r, 0.7)))
    out = batched(jnp.stack([jnp.asarray(log_ref)] * 2), jnp.stack([jnp.asarray(rewards)] * 2))
    assert out.shape == (2, 7)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: kl.reference_reward(np.log([0.5, 0.5]), [1.0, 2.0], 0.0), "quantile"),
        (lambda: kl.reference_reward(np.log([0.5, 0.5]), [1.0, 2.0], 1.5), "quantile"),
        (lambda: kl.reference_reward(np.log([0.6, 0.6]), [1.0, 2.0]), "normalised"),
        (lambda: kl.reference_reward(np.log([0.5, 0.5]), [1.0, 2.0, 3.0]), "shape"),
        (lambda: kl.empirical_reference_reward([], 0.5), "empty"),
        (lambda: kl.lsc_transform([1.0, np.nan], 0.0), "finite"),
        (lambda: kl.and_combination(np.ones((2, 3)), [0.0]), "one per property"),
        (lambda: kl.lsc_policy(np.log([0.5, 0.5]), [1.0, 2.0], 0.0, 0.0), "beta"),
        (lambda: kl.lsc_reward(np.log([0.5, 0.5]), np.ones((2, 3))), "shape"),
        (lambda: kl.gaussian_reference_reward(np.log([0.5, 0.5]), [1.0, 2.0], 1.0), "< 1"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
