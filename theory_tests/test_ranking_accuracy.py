"""Ranking accuracy (ALGORITHMS_2.md, "Preference learning algorithms do not learn rankings").

* (a) Tabular DPO on one pair with a soft label α, minimised to convergence, reproduces the
  optimal ratio of Thm 3.1 (exponent 1/β); the exponent-β variant is rejected.
* (b) R = 1 ⇔ L_DPO ≤ −log σ(βc) (Thm 4.1) over random policies, including exact ties
  (≥); a strict-> ranking fails on the ties.
* (c) Prop 2.6 on reference-correct pairs, and a reference-incorrect counterexample.
* (d) R* is non-increasing in β for α > ½ (and the exponent-β variant is not); its limits.
* The flip threshold scales like e^{−βc} for c ≫ 0; γ-scaled DPO interpolates.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxalign.losses import pairwise as PW
from jaxalign.losses import ranking as RK
from theory_tests.strategies import examples


@functools.partial(jax.jit, static_argnames="k")
def _tabular_dpo_one_pair(log_ref, alpha, beta, k):
    """Minimise α ℓ(w ≻ l) + (1−α) ℓ(l ≻ w) over the logits of a K-response tabular policy
    (responses 0 = y_w, 1 = y_l) by Newton's method; returns log π and max |gradient|."""

    def obj(theta):
        lp = jax.nn.log_softmax(theta)
        w, l_ = lp[:1], lp[1:2]
        rw, rl = log_ref[:1], log_ref[1:2]
        fwd = PW.dpo_loss(w, l_, rw, rl, beta=beta).loss
        bwd = PW.dpo_loss(l_, w, rl, rw, beta=beta).loss
        return jnp.sum(alpha * fwd + (1 - alpha) * bwd)

    def newton(_, theta):
        g, h = jax.grad(obj)(theta), jax.hessian(obj)(theta)
        step = jnp.linalg.pinv(h, hermitian=True) @ g
        return theta - step * jnp.minimum(1.0, 2.0 / (jnp.max(jnp.abs(step)) + 1e-30))

    theta = jax.lax.fori_loop(0, 80, newton, log_ref)
    return jax.nn.log_softmax(theta), jnp.max(jnp.abs(jax.grad(obj)(theta)))


@settings(max_examples=examples(15))
@given(
    seed=st.integers(0, 2**31 - 1),
    alpha=st.floats(0.05, 0.95),
    beta=st.sampled_from([0.2, 0.5, 1.0, 3.0]),
)
def test_tabular_dpo_reproduces_the_optimal_ratio(seed, alpha, beta):
    rng = np.random.default_rng(seed)
    log_ref = jax.nn.log_softmax(jnp.asarray(rng.standard_normal(4)))
    lp, g = _tabular_dpo_one_pair(log_ref, alpha, beta, 4)
    assert float(g) < 1e-10
    got = float(lp[0] - lp[1])
    a = jnp.asarray([alpha])
    want = float(RK.optimal_log_ratio(log_ref[:1], log_ref[1:2], a, beta=beta)[0])
    assert abs(got - want) < 1e-8
    # The exponent-β variant (α/(1−α))^β is rejected wherever it differs materially.
    wrong = float(log_ref[0] - log_ref[1]) + beta * math.log(alpha / (1 - alpha))
    if abs(math.log(alpha / (1 - alpha))) * abs(1 / beta - beta) > 1e-3:
        assert abs(got - wrong) > 1e-4


def test_worked_example_ratios_and_thresholds():
    ref_w, ref_l, a = jnp.log(jnp.asarray([0.2])), jnp.log(jnp.asarray([0.3])), jnp.asarray([0.75])
    for beta, ratio in ((0.1, 39366.0), (1.0, 2.0), (5.0, 0.8304873)):
        got = float(jnp.exp(RK.optimal_log_ratio(ref_w, ref_l, a, beta=beta))[0])
        np.testing.assert_allclose(got, ratio, rtol=1e-6)
    lp, _ = _tabular_dpo_one_pair(jnp.log(jnp.asarray([0.2, 0.3, 0.5])), 0.75, 0.5, 3)
    np.testing.assert_allclose(float(jnp.exp(lp[0] - lp[1])), 6.0, rtol=1e-9)
    assert float(RK.idealized_ranking_accuracy(ref_w, ref_l, a, beta=0.1)) == 1.0
    assert float(RK.idealized_ranking_accuracy(ref_w, ref_l, a, beta=5.0)) == 0.0
    c = jnp.log(jnp.asarray([1.5]))
    np.testing.assert_allclose(float(RK.flip_threshold(c, beta=0.1)[0]), 0.6731, atol=1e-4)
    np.testing.assert_allclose(float(RK.flip_threshold(c, beta=1.0)[0]), 0.5108, atol=1e-4)


# ----------------------------------------------------------------------------- (b) flip iff


def _pairs_with_ties(seed, k=12, b=200, tie_frac=0.3):
    rng = np.random.default_rng(seed)
    log_ref = jax.nn.log_softmax(jnp.asarray(rng.standard_normal(k) * 2))
    logits = rng.standard_normal(k) * rng.choice([0.1, 1.0, 5.0])
    # Exact policy ties between responses: copy some logits.
    dup = rng.random(k) < tie_frac
    logits[dup] = logits[0]
    log_pi = jax.nn.log_softmax(jnp.asarray(logits))
    yw, yl = rng.integers(0, k, b), rng.integers(0, k, b)
    return log_pi[yw], log_pi[yl], log_ref[yw], log_ref[yl]


@settings(max_examples=examples(30))
@given(seed=st.integers(0, 2**31 - 1), beta=st.floats(0.01, 10.0))
def test_correct_ranking_iff_dpo_loss_below_threshold_including_ties(seed, beta):
    pw_, pl_, rw, rl = _pairs_with_ties(seed)
    r = RK.ranked_correctly(pw_, pl_)
    cond = RK.dpo_flip_condition(pw_, pl_, rw, rl, beta=beta)
    np.testing.assert_array_equal(r, cond)
    ties = np.asarray(pw_ == pl_)
    assert ties.any()
    # A strict-> ranking disagrees with the theorem on every tie.
    strict = np.asarray(pw_ > pl_, np.float64)
    assert np.all(strict[ties] != np.asarray(cond)[ties])


def test_prop_2_6_and_its_reference_incorrect_counterexample():
    rng = np.random.default_rng(0)
    b = 4000
    rw = jnp.asarray(rng.standard_normal(b) * 3)
    rl = rw - jnp.abs(jnp.asarray(rng.standard_normal(b) * 3))  # reference-correct: rw ≥ rl
    pw_ = jnp.asarray(rng.standard_normal(b) * 3)
    pl_ = jnp.asarray(rng.standard_normal(b) * 3)
    for beta in (0.1, 1.0, 5.0):
        loss = PW.dpo_loss(pw_, pl_, rw, rl, beta=beta).loss
        low = np.asarray(loss <= 0.6)
        assert low.any()
        assert np.all(np.asarray(RK.ranked_correctly(pw_, pl_))[low] == 1)
    # Reference-incorrect: c = 10, Δ = −1, β = 1 gives L = softplus(−9) ≈ 1.2e−4 < 0.6, R = 0.
    one = jnp.ones(1)
    loss = PW.dpo_loss(-one, 0 * one, -10 * one, 0 * one, beta=1.0).loss
    assert float(loss[0]) < 0.6 and float(RK.ranking_accuracy(-one, 0 * one)) == 0.0


# ----------------------------------------------------------------------------- (d) R* in β


@settings(max_examples=examples(20))
@given(seed=st.integers(0, 2**31 - 1))
def test_idealized_accuracy_non_increasing_in_beta(seed):
    rng = np.random.default_rng(seed)
    b = 300
    rw = jnp.asarray(rng.standard_normal(b) * 2)
    rl = jnp.asarray(rng.standard_normal(b) * 2)
    alpha = jnp.asarray(rng.uniform(0.55, 1.0, b))
    alpha = alpha.at[:10].set(1.0)  # unanimous pairs, clipped to 1 − 0.001
    betas = np.geomspace(1e-3, 1e3, 25)
    rstar = np.asarray([float(RK.idealized_ranking_accuracy(rw, rl, alpha, beta=x)) for x in betas])
    assert np.all(np.diff(rstar) <= 1e-15)
    # Limits: β → 0 every pair with α > ½ is ranked correctly; β → ∞ only the reference's.
    assert rstar[0] == 1.0
    ref_strict = float(jnp.mean((rw > rl).astype(rw.dtype)))
    assert abs(rstar[-1] - ref_strict) <= 12 / b
    # The exponent-β variant moves the other way: non-decreasing, and strictly somewhere.
    logit = jnp.log(alpha) - jnp.log1p(-alpha)
    wrong = np.asarray(
        [float(jnp.mean(((rw - rl) + x * logit > 0).astype(rw.dtype))) for x in betas]
    )
    assert np.all(np.diff(wrong) >= 0) and wrong[-1] > wrong[0]


# ----------------------------------------------------------------------------- scaling, γ


def test_flip_threshold_scales_like_exp_minus_beta_c():
    c = jnp.asarray([1.0, 5.0, 20.0, 100.0, 500.0])
    for beta in (0.1, 1.0):
        u = np.exp(-beta * np.asarray(c))
        ratio = np.asarray(RK.flip_threshold(c, beta=beta)) / u
        # −log σ(βc) = log(1 + u), u = e^{−βc}, and 1 − u/2 ≤ log(1 + u)/u ≤ 1: the loss a
        # reference-incorrect pair must reach shrinks like e^{−βc}.
        assert np.all(ratio <= 1 + 1e-12) and np.all(ratio >= 1 - u / 2 - 1e-12)
        assert np.all(np.diff(ratio) > -1e-12) and ratio[-1] > 1 - 1e-9
    np.testing.assert_allclose(
        float(RK.flip_threshold(jnp.asarray([100.0]), beta=0.1)[0]), 4.54e-5, rtol=1e-3
    )
    assert float(RK.flip_threshold(jnp.zeros(1), beta=3.0)[0]) == pytest.approx(math.log(2))


@settings(max_examples=examples(10))
@given(seed=st.integers(0, 2**31 - 1), beta=st.floats(0.05, 5.0))
def test_gamma_scaled_dpo_interpolates(seed, beta):
    pw_, pl_, rw, rl = _pairs_with_ties(seed)
    dpo = PW.dpo_loss(pw_, pl_, rw, rl, beta=beta).loss
    np.testing.assert_array_equal(
        RK.gamma_scaled_dpo_loss(pw_, pl_, rw, rl, beta=beta, gamma=1.0).loss, dpo
    )
    # γ = 0 ignores the reference: R = 1 ⇔ L_0 ≤ log 2 (the threshold at c = 0).
    l0 = RK.gamma_scaled_dpo_loss(pw_, pl_, rw, rl, beta=beta, gamma=0.0).loss
    thr0 = RK.flip_threshold(jnp.zeros_like(l0), beta=beta)
    np.testing.assert_array_equal((l0 <= thr0).astype(l0.dtype), RK.ranked_correctly(pw_, pl_))
    # General γ: L_γ = −log σ(β[Δ + γc]), so R = 1 ⇔ L_γ ≤ −log σ(βγc).
    for gamma in (0.25, 2.0):
        lg = RK.gamma_scaled_dpo_loss(pw_, pl_, rw, rl, beta=beta, gamma=gamma).loss
        thr = RK.flip_threshold(gamma * (rl - rw), beta=beta)
        agree = np.asarray((lg <= thr).astype(lg.dtype) == RK.ranked_correctly(pw_, pl_))
        non_tie = np.asarray(pw_ != pl_)  # γc is rounded, so exact ties may miss by an ulp
        assert agree[non_tie].all()


@settings(max_examples=examples(10))
@given(seed=st.integers(0, 2**31 - 1))
def test_flip_categories_partition_the_pairs(seed):
    pw_, pl_, rw, rl = _pairs_with_ties(seed)
    cats = RK.flip_categories(pw_, pl_, rw, rl)
    np.testing.assert_allclose(sum(float(x) for x in cats), 1.0, atol=1e-12)
    acc = float(RK.ranking_accuracy(pw_, pl_))
    np.testing.assert_allclose(cats.correct_to_correct + cats.incorrect_to_correct, acc)
    ref_acc = float(RK.ranking_accuracy(rw, rl))
    np.testing.assert_allclose(cats.correct_to_correct + cats.correct_to_incorrect, ref_acc)


def test_bad_input_raises():
    x = jnp.zeros(3)
    with pytest.raises(ValueError, match="alpha"):
        RK.optimal_log_ratio(x, x, jnp.full(3, 1.5), beta=1.0)
    with pytest.raises(ValueError, match="beta"):
        RK.idealized_ranking_accuracy(x, x, jnp.full(3, 0.7), beta=-1.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        RK.ranked_correctly(x, jnp.zeros(4))
    with pytest.raises(ValueError, match="gamma"):
        RK.gamma_scaled_dpo_loss(x, x, x, x, beta=1.0, gamma=-0.5)
    with pytest.raises(ValueError, match="alpha_clip"):
        RK.idealized_ranking_accuracy(x, x, jnp.full(3, 0.7), beta=1.0, alpha_clip=0.6)
