"""Theorems about the mirror-descent transforms, on random instances (float64).

* Hedge (entropic mirror descent) regret: Reg_T ≤ log K / s + s T / 8 for losses in [0, 1].
* Bilinear games min_x max_y xᵀAy: simultaneous gradient descent–ascent spirals out
  (‖z_{t+1}‖ > ‖z_t‖ always), while optimistic GD and extragradient converge for
  s ≤ 1 / (4 σ_max(A)) — the reason ONPO/EGPO need optimism.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxalign import optim


def _hedge_regret(losses: jax.Array, step: jax.Array, sign: float = 1.0) -> jax.Array:
    k = losses.shape[1]
    tx = optim.mirror_descent(step)
    theta0 = jnp.full((k,), -jnp.log(jnp.asarray(k, losses.dtype)))

    def body(carry, loss):
        theta, state = carry
        incurred = jnp.exp(theta) @ loss
        upd, state = tx.update(jnp.asarray(sign, loss.dtype) * loss, state, theta)
        return (optax.apply_updates(theta, upd), state), incurred

    _, incurred = jax.lax.scan(body, (theta0, tx.init(theta0)), losses)
    return jnp.sum(incurred) - jnp.min(jnp.sum(losses, axis=0))


_hedge_regret_jit = jax.jit(_hedge_regret, static_argnames="sign")


@settings(max_examples=15)
@given(
    k=st.integers(2, 10),
    seed=st.integers(0, 2**31 - 1),
    step=st.floats(0.01, 1.0),
    adversarial=st.booleans(),
)
def test_hedge_regret_bound(k, seed, step, adversarial):
    t = 300
    rng = np.random.default_rng(seed)
    if adversarial:  # alternating losses that punish any fixed leader
        losses = np.zeros((t, k))
        losses[::2, 0] = 1.0
        losses[1::2, 1:] = 1.0
    else:
        losses = rng.uniform(size=(t, k)) * (rng.uniform(size=k) < 0.5)
    regret = float(_hedge_regret_jit(jnp.asarray(losses), jnp.asarray(step)))
    bound = np.log(k) / step + step * t / 8
    assert regret <= bound + 1e-9


def test_hedge_with_flipped_sign_violates_regret_bound():
    """Sensitivity: ascending the losses instead of descending breaks the bound."""
    t, k, step = 300, 4, 0.2
    losses = np.tile(np.linspace(0, 1, k), (t, 1))
    regret = float(_hedge_regret_jit(jnp.asarray(losses), jnp.asarray(step), sign=-1.0))
    assert regret > np.log(k) / step + step * t / 8


def _bilinear_norms(a: jax.Array, z0: jax.Array, step: jax.Array, which: str, num: int):
    d = a.shape[0]
    tx = {
        "gda": optim.mirror_descent,
        "optimistic": optim.optimistic_mirror_descent,
        "extragradient": optim.extragradient,
    }[which](step, mirror_map=optim.euclidean())
    calls = 2 if which == "extragradient" else 1

    def grad(z):  # descent for x on xᵀAy, ascent for y
        x, y = z[:d], z[d:]
        return jnp.concatenate([a @ y, -(a.T @ x)])

    def body(carry, _):
        z, state = carry
        for _ in range(calls):
            upd, state = tx.update(grad(z), state, z)
            z = z + upd
        return (z, state), jnp.linalg.norm(z)

    _, norms = jax.lax.scan(body, (z0, tx.init(z0)), None, length=num)
    return norms


_bilinear_jit = jax.jit(_bilinear_norms, static_argnames=("which", "num"))


@settings(max_examples=12)
@given(d=st.integers(1, 5), seed=st.integers(0, 2**31 - 1), frac=st.floats(0.05, 1.0))
def test_optimism_and_extragradient_converge_where_gda_diverges(d, seed, frac):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) + 0.5 * np.eye(d)  # nonsingular: unique equilibrium 0
    smax = np.linalg.svd(a, compute_uv=False).max()
    smin = np.linalg.svd(a, compute_uv=False).min()
    if smin < 1e-2:
        return
    step = frac / (4 * smax)
    z0 = jnp.asarray(rng.normal(size=2 * d))
    n0 = float(jnp.linalg.norm(z0))
    num = 400
    gda = np.asarray(_bilinear_jit(jnp.asarray(a), z0, jnp.asarray(step), "gda", num))
    # GDA: ‖z_{t+1}‖² = ‖z_t‖² + s²‖∇‖² — strictly increasing.
    assert (np.diff(np.r_[n0, gda]) > 0).all()
    for which in ("optimistic", "extragradient"):
        norms = np.asarray(_bilinear_jit(jnp.asarray(a), z0, jnp.asarray(step), which, num))
        assert norms[-1] < n0
        # Linear rate: the second half shrinks at least as much as (rate)^(num/2) predicts
        # for the slowest direction, up to a generous constant.
        rate = 1 - (step * smin) ** 2 / 4
        assert norms[-1] <= 4 * n0 * rate ** (num / 2)
