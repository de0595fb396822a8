"""The DPO loss: closed form, label smoothing, symmetry, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.losses import dpo_loss, dpo_pair_loss


def _logps(seed, n=6):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(-rng.uniform(1, 20, n), jnp.float32) for _ in range(4)]


def test_dpo_matches_the_closed_form():
    pc, pr, rc, rr = _logps(0)
    out = dpo_loss(pc, pr, rc, rr, beta=0.3)
    z = 0.3 * ((pc - rc) - (pr - rr))
    z64 = np.asarray(z, np.float64)
    np.testing.assert_allclose(out.loss, np.log1p(np.exp(-z64)), rtol=2e-5)
    np.testing.assert_allclose(out.margin, z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.chosen_reward, 0.3 * (pc - rc), rtol=1e-6)
    # At the reference policy every margin is 0 and the loss is log 2.
    at_ref = dpo_loss(rc, rr, rc, rr, beta=0.3)
    np.testing.assert_allclose(at_ref.loss, np.log(2.0), rtol=1e-6)


def test_label_smoothing_is_the_expected_loss_under_label_flips():
    pc, pr, rc, rr = _logps(1)
    eps = 0.2
    smooth = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=eps).loss
    clean = dpo_loss(pc, pr, rc, rr, beta=0.5).loss
    flipped = dpo_loss(pr, pc, rr, rc, beta=0.5).loss
    np.testing.assert_allclose(smooth, (1 - eps) * clean + eps * flipped, rtol=1e-5)
    assert not np.allclose(smooth, clean, rtol=1e-3)  # the smoothing term has an effect


def test_gradient_raises_chosen_and_lowers_rejected():
    pc, pr, rc, rr = (jnp.asarray(x, jnp.float32) for x in (-5.0, -4.0, -5.0, -4.0))
    g = jax.grad(lambda a, b: dpo_pair_loss(a, b, rc, rr, beta=0.1).loss, argnums=(0, 1))(pc, pr)
    assert g[0] < 0 < g[1]  # descent raises log π_w and lowers log π_l
    np.testing.assert_allclose(g[0], -0.05, rtol=1e-5)  # -β σ(-z) at z = 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"beta": 0.0}, "beta must be > 0"), ({"beta": 0.1, "label_smoothing": 0.5}, r"\[0, 0\.5\)")],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dpo_loss(*_logps(2), **kwargs)


def test_mismatched_shapes_are_named():
    pc, pr, rc, rr = _logps(3)
    with pytest.raises(ValueError, match=r"shape mismatch: policy_chosen\.shape"):
        dpo_loss(pc, pr[:3], rc, rr, beta=0.1)
