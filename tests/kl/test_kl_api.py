"""Unit tests of jaxalign.kl's public API: closed forms, conventions, float32, jit/vmap, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import kl

LOG_P = jnp.log(jnp.array([0.6, 0.3, 0.1]))
R = jnp.array([0.0, 1.0, 2.0])


def test_tilt_closed_form_float32():
    beta = 0.5
    expected = np.array([0.6, 0.3 * math.e**2, 0.1 * math.e**4])
    expected /= expected.sum()
    out = kl.tilted_policy(LOG_P, R, beta)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.exp(out), expected, rtol=1e-5)


def test_budget_solver_float32_hits_budget():
    log_opt, beta = kl.kl_constrained_policy(LOG_P, R, 0.1)
    assert log_opt.dtype == jnp.float32
    assert abs(float(kl.kl_divergence(log_opt, LOG_P)) - 0.1) < 1e-5
    np.testing.assert_allclose(np.exp(kl.tilted_policy(LOG_P, R, beta)), np.exp(log_opt), atol=1e-5)


def test_budget_conventions():
    _, beta0 = kl.kl_constrained_policy(LOG_P, R, 0.0)
    assert float(beta0) == math.inf
    log_opt, beta = kl.kl_constrained_policy(LOG_P, R, 5.0)  # > -log 0.1: not binding
    assert float(beta) == 0.0
    np.testing.assert_allclose(np.exp(log_opt), [0, 0, 1], atol=1e-7)
    # Ties at the top: the restriction keeps p's proportions on the argmax set.
    log_opt, beta = kl.kl_constrained_policy(LOG_P, jnp.array([0.0, 2.0, 2.0]), 10.0)
    np.testing.assert_allclose(np.exp(log_opt), [0, 0.75, 0.25], atol=1e-6)


def test_zero_probability_responses_stay_zero():
    log_p = jnp.log(jnp.array([0.5, 0.0, 0.5]))
    r = jnp.array([0.0, 100.0, 1.0])
    for out in (
        kl.tilted_policy(log_p, r, 1.0),
        kl.kl_constrained_policy(log_p, r, 0.2)[0],
        kl.best_of_n_policy(log_p, r, 4),
    ):
        assert float(out[1]) == -math.inf
        assert not np.isnan(np.asarray(out)).any()


def test_best_of_n_small_case_by_enumeration():
    # p uniform on 3, rewards distinct: P(best = y) = (k/3)^N - ((k-1)/3)^N.
    out = np.exp(kl.best_of_n_policy(jnp.log(jnp.ones(3) / 3), jnp.array([3.0, 1.0, 2.0]), 2))
    np.testing.assert_allclose(out, [5 / 9, 1 / 9, 3 / 9], atol=1e-6)


def test_functions_jit_and_vmap():
    keys = jax.random.split(jax.random.key(0), 8)
    log_p = jax.vmap(lambda k: jax.nn.log_softmax(jax.random.normal(k, (5,))))(keys)
    r = jax.random.normal(jax.random.key(1), (8, 5))
    bon = jax.jit(jax.vmap(kl.best_of_n_policy, in_axes=(0, 0, None)))(log_p, r, 4.0)
    assert bon.shape == (8, 5)
    kls = jax.jit(jax.vmap(kl.best_of_n_kl, in_axes=(0, 0, None)))(log_p, r, 4.0)
    assert np.all(np.asarray(kls) <= float(kl.best_of_n_kl_bound(4)) + 1e-5)


def test_win_rate_of_identical_policies_is_half():
    assert abs(float(kl.win_rate(LOG_P, LOG_P, R)) - 0.5) < 1e-6


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: kl.tilted_policy(jnp.log(jnp.array([0.5, 0.6])), jnp.zeros(2), 1.0),
            "not normalised",
        ),
        (
            lambda: kl.tilted_policy(LOG_P, jnp.array([0.0, jnp.nan, 1.0]), 1.0),
            "reward must be finite",
        ),
        (lambda: kl.tilted_policy(LOG_P, R, 0.0), "beta must be > 0"),
        (lambda: kl.tilted_policy(LOG_P, R, -1.0), "beta must be > 0"),
        (lambda: kl.kl_constrained_policy(LOG_P, R, -0.1), "kl_budget must be >= 0"),
        (lambda: kl.best_of_n_policy(LOG_P, R, 0), "n must be >= 1"),
        (lambda: kl.best_of_n_policy(LOG_P, jnp.zeros(4), 2), "shape mismatch"),
        (lambda: kl.tilted_policy(jnp.zeros((0,)), jnp.zeros((0,)), 1.0), "empty"),
        (lambda: kl.tilted_policy(LOG_P[None], R[None], 1.0), "1-D"),
        (lambda: kl.kl_divergence(LOG_P, jnp.array([0.0, jnp.nan, 0.0])), "log_q contains NaN"),
        (lambda: kl.sequence_reward_law(LOG_P, jnp.array([0.0, 1.0, math.pi]), 3), "lattice"),
        (lambda: kl.sequence_reward_law(LOG_P, R, 0), "m must be an integer"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sequence_law_of_two_tokens():
    values, law = kl.sequence_reward_law(LOG_P, R, 2)
    p = np.array([0.6, 0.3, 0.1])
    expected = np.convolve(p, p)
    np.testing.assert_allclose(np.asarray(values), [0, 1, 2, 3, 4])
    np.testing.assert_allclose(np.exp(law), expected, rtol=1e-5)
