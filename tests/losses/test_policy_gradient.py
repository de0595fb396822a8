"""KL-regularised policy gradient: estimators, baselines, and unbiasedness against the
exact gradient of E_π r − β KL(π‖π_ref) on a tabular policy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import kl
from jaxalign.losses import policy_gradient as pg


def test_kl_estimators_hand_values():
    logp, ref = jnp.array([[-1.0]]), jnp.array([[-1.5]])  # log ρ = −0.5
    np.testing.assert_allclose(pg.kl_estimate(logp, ref, estimator="k1"), [[0.5]])
    np.testing.assert_allclose(pg.kl_estimate(logp, ref, estimator="k2"), [[0.125]])
    np.testing.assert_allclose(
        pg.kl_estimate(logp, ref, estimator="k3"), [[np.expm1(-0.5) + 0.5]], rtol=1e-6
    )


def test_k1_and_k3_are_unbiased_and_k3_nonnegative():
    with jax.enable_x64(True):
        log_pi = jax.nn.log_softmax(jnp.array([0.3, -1.0, 2.0, 0.5]))
        log_ref = jax.nn.log_softmax(jnp.array([1.0, 0.0, -0.5, 0.2]))
        exact = float(kl.kl_divergence(log_pi, log_ref))
        pi = jnp.exp(log_pi)
        for est in ("k1", "k3"):
            values = pg.kl_estimate(log_pi[:, None], log_ref[:, None], estimator=est)[:, 0]
            assert abs(float(pi @ values) - exact) < 1e-12
        assert float(jnp.min(pg.kl_estimate(log_pi, log_ref, estimator="k3"))) >= 0


def test_leave_one_out_and_group_mean_baselines():
    r = jnp.array([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    np.testing.assert_allclose(
        pg.advantages(r, group_size=3, baseline="leave_one_out"), [-1.5, 0.0, 1.5, 0, 0, 0]
    )
    np.testing.assert_allclose(
        pg.advantages(r, group_size=3, baseline="group_mean", normalise=False), [-1, 0, 1, 0, 0, 0]
    )
    with pytest.raises(ValueError, match="group_size must divide"):
        pg.advantages(r, group_size=4, baseline="none")
    with pytest.raises(ValueError, match="baseline must be"):
        pg.advantages(r, group_size=3, baseline="mean")


BETA = 0.5
THETA = jnp.array([0.2, -0.3, 0.8, 0.0])
REF_LOGITS = jnp.array([0.5, 0.1, -0.4, 0.0])
REWARD = jnp.array([1.0, 0.0, 0.5, 2.0])


def _mc_surrogate_gradient(baseline, kl_mode, estimator, groups=40_000, n=4):
    log_ref = jax.nn.log_softmax(REF_LOGITS.astype(jnp.float64))
    ys = jax.random.categorical(jax.random.key(0), THETA, shape=(groups * n,))

    def surrogate(th):
        lp = jax.nn.log_softmax(th)[ys][:, None]
        return pg.kl_regularized_pg_loss(
            lp,
            log_ref[ys][:, None],
            jnp.ones_like(lp),
            REWARD.astype(jnp.float64)[ys],
            beta=BETA,
            group_size=n,
            baseline=baseline,
            estimator=estimator,
            kl_mode=kl_mode,
        ).loss

    return jax.grad(surrogate)(THETA.astype(jnp.float64))


def _exact_gradient(reverse_kl=False, kl_weight=BETA):
    log_ref = jax.nn.log_softmax(REF_LOGITS.astype(jnp.float64))

    def objective(th):
        lp = jax.nn.log_softmax(th)
        div = kl.kl_divergence(log_ref, lp) if reverse_kl else kl.kl_divergence(lp, log_ref)
        return kl.expected_reward(lp, REWARD.astype(jnp.float64)) - kl_weight * div

    return -jax.grad(objective)(THETA.astype(jnp.float64))


@pytest.mark.parametrize(
    ("baseline", "kl_mode", "estimator"),
    [
        ("leave_one_out", "reward", "k1"),
        ("leave_one_out", "loss", "k2"),
        ("none", "loss", "k2"),
    ],
)
def test_surrogate_gradient_is_unbiased_for_the_kl_regularised_objective(
    baseline, kl_mode, estimator
):
    """Monte Carlo mean of ∇L over 40k groups ≈ −∇(E_π r − β KL(π‖π_ref)) (one-token policy)."""
    with jax.enable_x64(True):
        est = _mc_surrogate_gradient(baseline, kl_mode, estimator)
        np.testing.assert_allclose(est, _exact_gradient(), atol=0.02)


def test_k3_as_a_loss_minimises_the_reverse_kl_and_k1_has_no_gradient():
    with jax.enable_x64(True):
        est = _mc_surrogate_gradient("leave_one_out", "loss", "k3")
        np.testing.assert_allclose(est, _exact_gradient(reverse_kl=True), atol=0.02)
        assert np.max(np.abs(est - _exact_gradient())) > 0.03  # not the forward KL's
        est = _mc_surrogate_gradient("leave_one_out", "loss", "k1")
        np.testing.assert_allclose(est, _exact_gradient(kl_weight=0.0), atol=0.02)


def test_best_of_n_select_picks_a_maximum_uniformly():
    rewards = jnp.array([[0.0, 2.0, 2.0, 1.0]] * 4000)
    idx = pg.best_of_n_select(rewards, key=jax.random.key(0))
    assert set(np.unique(idx)) == {1, 2}
    assert abs(float(jnp.mean(idx == 1)) - 0.5) < 0.03
