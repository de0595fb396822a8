"""SimPO, ORPO, RPO (DPO + NLL) and KTO: hand-computed values (the papers' formulas written
out with ``math`` / NumPy, never by calling the losses), gradients against the hand-derived
derivatives, the properties each paper's formula implies (length normalisation, odds from
*averaged* log-probs, a detached and clamped KTO reference point) and bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import losses

RNG = np.random.default_rng(7)
B = 5
LOGP_W = -RNG.uniform(2, 30, B)  # summed sequence log-probs
LOGP_L = -RNG.uniform(2, 30, B)
REF_W = -RNG.uniform(2, 30, B)
REF_L = -RNG.uniform(2, 30, B)
N_W = RNG.integers(1, 20, B).astype(np.float64)  # response token counts
N_L = RNG.integers(1, 20, B).astype(np.float64)


def f32(x):
    return jnp.asarray(x, jnp.float32)


def softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# --------------------------------------------------------------------------------------------
# SimPO


def test_simpo_hand_value():
    # ā_w = −4/2 = −2, ā_l = −9/3 = −3; β(ā_w − ā_l) − γ = 2·1 − 1 = 1 → −log σ(1).
    out = losses.simpo_loss(f32([-4.0]), f32([-9.0]), f32([2]), f32([3]), beta=2.0, gamma=1.0)
    np.testing.assert_allclose(out.loss, [math.log1p(math.exp(-1.0))], rtol=1e-6)
    np.testing.assert_allclose(out.logit, [1.0], rtol=1e-6)  # ā_w − ā_l
    np.testing.assert_allclose(out.target, [0.5])  # γ/β


def test_simpo_matches_the_paper_formula_on_a_batch():
    beta, gamma = 2.5, 1.2
    z = beta / N_W * LOGP_W - beta / N_L * LOGP_L - gamma
    out = losses.simpo_loss(f32(LOGP_W), f32(LOGP_L), f32(N_W), f32(N_L), beta=beta, gamma=gamma)
    np.testing.assert_allclose(out.loss, softplus(-z), rtol=1e-5)


def test_simpo_is_length_normalised():
    # Twice the tokens at the same mean log-prob per token: the same SimPO loss.
    a = losses.simpo_loss(f32([-6.0]), f32([-8.0]), f32([3]), f32([2]), beta=2.0, gamma=0.5)
    b = losses.simpo_loss(f32([-12.0]), f32([-8.0]), f32([6]), f32([2]), beta=2.0, gamma=0.5)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6)
    # ā_w = −2 > ā_l = −4 though log π(y_w) = −12 < log π(y_l) = −8: the loss is below log 2.
    assert float(b.loss[0]) < math.log(2)


def test_simpo_gradient_is_the_hand_derivative():
    beta, gamma = 2.0, 0.7
    fn = lambda w, r: losses.simpo_loss(w, r, f32(N_W), f32(N_L), beta=beta, gamma=gamma).loss.sum()
    gw, gl = jax.grad(fn, argnums=(0, 1))(f32(LOGP_W), f32(LOGP_L))
    z = beta * LOGP_W / N_W - beta * LOGP_L / N_L - gamma
    # d softplus(−z)/dz = −σ(−z); dz/dlogπ_w = β/|y_w|, dz/dlogπ_l = −β/|y_l|.
    np.testing.assert_allclose(gw, -sigmoid(-z) * beta / N_W, rtol=1e-5)
    np.testing.assert_allclose(gl, sigmoid(-z) * beta / N_L, rtol=1e-5)


def test_simpo_needs_no_reference():
    # Its whole input is the policy's log-probs and the lengths (no reference argument).
    out = jax.jit(lambda w, r: losses.simpo_loss(w, r, f32(N_W), f32(N_L), beta=2.0).loss)(
        f32(LOGP_W), f32(LOGP_L)
    )
    assert out.shape == (B,) and np.all(np.isfinite(out))


# --------------------------------------------------------------------------------------------
# ORPO


def _log_odds(mean_logp):
    p = np.exp(mean_logp)
    return np.log(p / (1 - p))


def test_orpo_hand_value():
    # ā_w = −1, ā_l = −2: odds(y_w) = e^{−1}/(1 − e^{−1}), odds(y_l) = e^{−2}/(1 − e^{−2}).
    lor = math.log((math.exp(-1) / (1 - math.exp(-1))) / (math.exp(-2) / (1 - math.exp(-2))))
    expected = 1.0 + 0.5 * math.log1p(math.exp(-lor))  # NLL(y_w) = 1, λ = 0.5
    out = losses.orpo_loss(f32([-3.0]), f32([-8.0]), f32([3]), f32([4]), odds_ratio_weight=0.5)
    np.testing.assert_allclose(out.loss, [expected], rtol=1e-5)
    np.testing.assert_allclose(out.nll, [1.0], rtol=1e-6)
    np.testing.assert_allclose(out.log_odds_w - out.log_odds_l, [lor], rtol=1e-5)


def test_orpo_matches_the_paper_formula_on_a_batch():
    lam = 0.25
    aw, al = LOGP_W / N_W, LOGP_L / N_L
    expected = -aw + lam * softplus(-(_log_odds(aw) - _log_odds(al)))
    out = losses.orpo_loss(f32(LOGP_W), f32(LOGP_L), f32(N_W), f32(N_L), odds_ratio_weight=lam)
    np.testing.assert_allclose(out.loss, expected, rtol=1e-5)


def test_orpo_odds_come_from_length_averaged_log_probs():
    # Same mean token log-prob, different lengths: the same odds, so the odds term is log 2.
    out = losses.orpo_loss(f32([-2.0]), f32([-8.0]), f32([1]), f32([4]), odds_ratio_weight=1.0)
    np.testing.assert_allclose(out.odds_ratio_loss, [math.log(2)], rtol=1e-6)
    np.testing.assert_allclose(out.log_odds_w, [_log_odds(-2.0)], rtol=1e-5)


def test_orpo_with_zero_weight_is_sft_on_the_chosen_response():
    out = losses.orpo_loss(f32(LOGP_W), f32(LOGP_L), f32(N_W), f32(N_L), odds_ratio_weight=0.0)
    np.testing.assert_allclose(out.loss, -LOGP_W / N_W, rtol=1e-6)


def test_orpo_gradient_is_the_hand_derivative():
    lam = 0.3
    fn = lambda w, r: losses.orpo_loss(w, r, f32(N_W), f32(N_L), odds_ratio_weight=lam).loss.sum()
    gw, gl = jax.grad(fn, argnums=(0, 1))(f32(LOGP_W), f32(LOGP_L))
    aw, al = LOGP_W / N_W, LOGP_L / N_L
    lor = _log_odds(aw) - _log_odds(al)
    # d log odds(ā)/dā = 1/(1 − e^ā); dā/dlogπ = 1/|y|.
    dw = -1 / N_W + lam * (-sigmoid(-lor)) / (1 - np.exp(aw)) / N_W
    dl = lam * sigmoid(-lor) / (1 - np.exp(al)) / N_L
    np.testing.assert_allclose(gw, dw, rtol=1e-4)
    np.testing.assert_allclose(gl, dl, rtol=1e-4)


def test_log_odds_is_accurate_near_zero_and_finite_for_empty_responses():
    a = np.array([-1e-4, -0.3, -0.69, -0.7, -5.0, -40.0])
    np.testing.assert_allclose(losses.log_odds(f32(a)), _log_odds(a), rtol=1e-4)
    # ā = 0 (a fully masked filler response): finite, so masked rows cannot poison a batch.
    assert np.isfinite(losses.log_odds(f32([0.0]))).all()
    out = losses.orpo_loss(f32([0.0]), f32([0.0]), f32([0]), f32([0]), odds_ratio_weight=1.0)
    assert np.isfinite(out.loss).all()
    empty = f32([0.0])
    g = jax.grad(
        lambda w: losses.orpo_loss(w, empty, empty, empty, odds_ratio_weight=1.0).loss.sum()
    )(empty)
    assert np.isfinite(g).all()


# --------------------------------------------------------------------------------------------
# RPO (DPO + NLL)


def test_rpo_hand_value():
    # h = (−4 + 5) − (−9 + 8) = 2; DPO = −log σ(0.5·2); NLL = 4/2 = 2; α = 0.5.
    out = losses.rpo_loss(
        f32([-4.0]), f32([-9.0]), f32([-5.0]), f32([-8.0]), f32([2]), beta=0.5, nll_weight=0.5
    )
    np.testing.assert_allclose(out.loss, [math.log1p(math.exp(-1.0)) + 1.0], rtol=1e-6)
    np.testing.assert_allclose(out.nll, [2.0], rtol=1e-6)


def test_rpo_matches_dpo_plus_the_normalised_nll_on_a_batch():
    beta, alpha = 0.3, 1.5
    h = (LOGP_W - REF_W) - (LOGP_L - REF_L)
    expected = softplus(-beta * h) + alpha * (-LOGP_W / N_W)
    args = (f32(LOGP_W), f32(LOGP_L), f32(REF_W), f32(REF_L), f32(N_W))
    out = losses.rpo_loss(*args, beta=beta, nll_weight=alpha)
    np.testing.assert_allclose(out.loss, expected, rtol=1e-5)
    # α = 0 is DPO exactly (the engine's DPO loss).
    dpo = losses.dpo_loss(*args[:4], beta=beta).loss
    np.testing.assert_allclose(losses.rpo_loss(*args, beta=beta, nll_weight=0.0).loss, dpo,
                               rtol=1e-6)  # fmt: skip


def test_rpo_gradient_is_the_hand_derivative_and_skips_the_reference():
    beta, alpha = 0.3, 1.5
    fn = lambda w, r, rw, rl: losses.rpo_loss(
        w, r, rw, rl, f32(N_W), beta=beta, nll_weight=alpha
    ).loss.sum()
    gw, gl, grw, grl = jax.grad(fn, argnums=(0, 1, 2, 3))(
        f32(LOGP_W), f32(LOGP_L), f32(REF_W), f32(REF_L)
    )
    h = (LOGP_W - REF_W) - (LOGP_L - REF_L)
    np.testing.assert_allclose(gw, -beta * sigmoid(-beta * h) - alpha / N_W, rtol=1e-5)
    np.testing.assert_allclose(gl, beta * sigmoid(-beta * h), rtol=1e-5)
    np.testing.assert_array_equal(grw, 0.0)  # the reference is a frozen anchor
    np.testing.assert_array_equal(grl, 0.0)


# --------------------------------------------------------------------------------------------
# KTO


def test_kto_reference_point_is_the_masked_mismatched_mean_clamped_at_zero():
    kl_pol, kl_ref = f32([-3.0, -5.0, -2.0, -100.0]), f32([-4.0, -4.5, -2.5, 0.0])
    mask = f32([1, 1, 1, 0])  # the filler row must not count
    # ((−3+4) + (−5+4.5) + (−2+2.5)) / 3 = 1/3.
    np.testing.assert_allclose(losses.kto_reference_point(kl_pol, kl_ref, mask), 1 / 3, rtol=1e-6)
    # A negative mean is clamped to 0 (a KL is non-negative).
    assert float(losses.kto_reference_point(f32([-5.0]), f32([-4.0]))) == 0.0
    # Detached: no gradient reaches the mismatched log-probs.
    g = jax.grad(lambda x: losses.kto_reference_point(x, kl_ref, mask))(kl_pol)
    np.testing.assert_array_equal(g, 0.0)


def test_kto_hand_value():
    # r = logπ − logπ_ref = (0.5, 0.5), z₀ = 0.2, β = 0.5: desirable λ_D(1 − σ(0.15)),
    # undesirable λ_U(1 − σ(−0.15)) with λ_D = 1.5, λ_U = 0.5.
    out = losses.kto_loss(
        f32([-4.0, -3.0]), f32([-4.5, -3.5]), jnp.array([True, False]), 0.2,
        beta=0.5, desirable_weight=1.5, undesirable_weight=0.5,
    )  # fmt: skip
    s = lambda x: 1 / (1 + math.exp(-x))
    np.testing.assert_allclose(out.loss, [1.5 * (1 - s(0.15)), 0.5 * (1 - s(-0.15))], rtol=1e-6)
    np.testing.assert_allclose(out.reward, [0.25, 0.25], rtol=1e-6)


def test_kto_matches_the_paper_value_function_on_a_batch():
    beta, lam_d, lam_u = 0.2, 1.3, 0.8
    labels = np.array([True, False, True, True, False])
    z0 = max(0.0, float(np.mean(LOGP_L - REF_L)))  # any mismatched log-ratios will do
    r = LOGP_W - REF_W
    value = np.where(labels, lam_d * sigmoid(beta * (r - z0)), lam_u * sigmoid(beta * (z0 - r)))
    expected = np.where(labels, lam_d, lam_u) - value  # λ_y − v(x, y)
    z = losses.kto_reference_point(f32(LOGP_L), f32(REF_L))
    out = losses.kto_loss(f32(LOGP_W), f32(REF_W), jnp.asarray(labels), z, beta=beta,
                          desirable_weight=lam_d, undesirable_weight=lam_u)  # fmt: skip
    np.testing.assert_allclose(out.loss, expected, rtol=1e-5)
    np.testing.assert_allclose(out.reference_point, z0, rtol=1e-5)


def test_kto_gradient_is_the_hand_derivative():
    beta, lam_d, lam_u, z0 = 0.2, 1.3, 0.8, 0.4
    labels = np.array([True, False, True, False, False])

    def fn(logp, ref, z):
        out = losses.kto_loss(logp, ref, jnp.asarray(labels), z, beta=beta,
                              desirable_weight=lam_d, undesirable_weight=lam_u)  # fmt: skip
        return out.loss.sum()

    g, g_ref, g_z = jax.grad(fn, argnums=(0, 1, 2))(f32(LOGP_W), f32(REF_W), f32(z0))
    r = LOGP_W - REF_W
    t = beta * (r - z0)
    # desirable: d[λ_D(1 − σ(t))]/dlogπ = −λ_D β σ(t)σ(−t); undesirable: +λ_U β σ(t)σ(−t).
    slope = beta * sigmoid(t) * sigmoid(-t)
    np.testing.assert_allclose(g, np.where(labels, -lam_d, lam_u) * slope, rtol=1e-5)
    np.testing.assert_array_equal(g_ref, 0.0)  # reference and z₀ are constants
    assert float(g_z) == 0.0


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: losses.simpo_loss(f32([-1.0]), f32([-1.0]), f32([1]), f32([1]), beta=0.0),
         "beta must be > 0"),
        (lambda: losses.simpo_loss(f32([-1.0]), f32([-1.0]), f32([1]), f32([1]), beta=1.0,
                                   gamma=-0.5), "gamma must be >= 0"),
        (lambda: losses.simpo_loss(f32([-1.0]), f32([-1.0, -2.0]), f32([1]), f32([1]), beta=1.0),
         "policy_l"),
        (lambda: losses.orpo_loss(f32([-1.0]), f32([-1.0]), f32([1]), f32([1]),
                                  odds_ratio_weight=-1.0), "odds_ratio_weight must be >= 0"),
        (lambda: losses.orpo_loss(f32([-1.0]), f32([-1.0]), f32([1, 2]), f32([1]),
                                  odds_ratio_weight=1.0), "num_tokens"),
        (lambda: losses.rpo_loss(f32([-1.0]), f32([-1.0]), f32([-1.0]), f32([-1.0]), f32([1]),
                                 beta=0.1, nll_weight=-1.0), "nll_weight must be >= 0"),
        (lambda: losses.kto_loss(f32([-1.0]), f32([-1.0]), jnp.array([True]), 0.0, beta=0.1,
                                 desirable_weight=0.0), "desirable_weight must be > 0"),
        (lambda: losses.kto_loss(f32([-1.0, -2.0]), f32([-1.0]), jnp.array([True, False]), 0.0,
                                 beta=0.1), "reference_logp"),
    ],
)  # fmt: skip
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
