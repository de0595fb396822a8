"""Theorems about the mirror-descent transforms, on random instances (float64).

* Hedge (entropic mirror descent) regret: Reg_T ≤ log K / s + s T / 8 for losses in [0, 1].
* Bilinear games min_x max_y xᵀAy: simultaneous gradient descent–ascent spirals out,
  while optimistic GD and extragradient converge for s ≤ 1 / (4 σ_max(A)) — the reason
  ONPO/EGPO need optimism. On this linear problem the rates are exact and derived by hand:
  with g = Jz, J = [[0, A], [−Aᵀ, 0]] (eigenvalues ±iσ_k), one step multiplies the mode
  σ by 1 − isσ (GDA), 1 − s²σ² − isσ (extragradient; J is normal, so ‖z_t‖ lies between
  the slowest and fastest modes' ρ^t‖z_0‖ exactly), and the larger root of
  λ² − (1 − 2isσ)λ − isσ (optimistic: x_{t+1} = x_t − 2s g_t + s g_{t−1}).
* The Euclidean projection onto the simplex satisfies its variational inequality.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxalign import optim
from theory_tests.strategies import examples


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


@settings(max_examples=examples(15))
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


def predicted_norms(which: str, step: float, a: np.ndarray, z0: np.ndarray, num: int):
    """‖z_t‖, t = 1..num, from the hand-derived recursion in SVD coordinates.

    With A = UΣVᵀ and c_k = ⟨x, u_k⟩ + i⟨y, v_k⟩, the gradient field acts on each c_k as
    multiplication by −iσ_k, and the coordinates are orthonormal, so ‖z_t‖² = Σ_k |c_k(t)|²
    with c⁺ = (1 + isσ)c (GDA), c⁺ = (1 + isσ − s²σ²)c (extragradient) and
    c_{t+1} = (1 + 2isσ)c_t − isσ c_{t−1} with no prediction at the first step (optimistic).
    """
    u, sigmas, vt = np.linalg.svd(a)
    d = a.shape[0]
    c = (u.T @ z0[:d] + 1j * (vt @ z0[d:])).astype(complex)
    m = 1j * step * sigmas
    prev, out = np.zeros_like(c), []
    for _ in range(num):
        if which == "gda":
            new = (1 + m) * c
        elif which == "extragradient":
            new = (1 + m + m**2) * c
        else:
            new = (1 + 2 * m) * c - m * prev
        prev, c = c, new
        out.append(np.sqrt(np.sum(np.abs(c) ** 2)))
    return np.asarray(out)


def spectral_radius(which: str, step: float, sigma: float) -> float:
    """Largest |eigenvalue| of the one-step map on the mode σ."""
    m = 1j * step * sigma
    if which == "gda":
        return abs(1 + m)
    if which == "extragradient":
        return abs(1 + m + m**2)
    return float(np.max(np.abs(np.roots([1, -(1 + 2 * m), m]))))


@settings(max_examples=examples(12))
@given(d=st.integers(1, 5), seed=st.integers(0, 2**31 - 1), frac=st.floats(0.05, 1.0))
def test_optimism_and_extragradient_converge_at_the_derived_rate_where_gda_diverges(d, seed, frac):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) + 0.5 * np.eye(d)  # nonsingular: unique equilibrium 0
    sigmas = np.linalg.svd(a, compute_uv=False)
    if sigmas.min() < 1e-2:
        return
    step = frac / (4 * sigmas.max())
    z0 = rng.normal(size=2 * d)
    n0 = float(np.linalg.norm(z0))
    for which in ("gda", "optimistic", "extragradient"):
        norms = np.asarray(
            _bilinear_jit(jnp.asarray(a), jnp.asarray(z0), jnp.asarray(step), which, 400)
        )
        np.testing.assert_allclose(norms, predicted_norms(which, step, a, z0, 400), rtol=1e-9)
        rho = spectral_radius(which, step, sigmas.min())
        if which == "gda":
            assert (np.diff(np.r_[n0, norms]) > 0).all()  # spirals out
            assert rho > 1
        else:  # the slowest mode contracts: linear convergence to the equilibrium
            assert rho < 1 and norms[-1] < n0


def test_derived_trajectory_rejects_a_wrong_step_and_a_missing_prediction():
    """Extragradient at half its step, and optimistic GD without its prediction (plain GDA),
    leave the trajectories derived for optimistic / extragradient at step s."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3)) + 0.5 * np.eye(3)
    step = 0.5 / (4 * np.linalg.svd(a, compute_uv=False).max())
    z0 = rng.normal(size=6)

    def run(s, which):
        return np.asarray(
            _bilinear_jit(jnp.asarray(a), jnp.asarray(z0), jnp.asarray(s), which, 400)
        )

    want = predicted_norms("extragradient", step, a, z0, 400)
    assert np.max(np.abs(run(step / 2, "extragradient") / want - 1)) > 1e-3
    want = predicted_norms("optimistic", step, a, z0, 400)
    assert np.max(np.abs(run(step, "gda") / want - 1)) > 1e-3


_project = jax.jit(optim.project_to_simplex)


@given(
    k=st.sampled_from([1, 2, 3, 5, 10]),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.1, 1.0, 10.0]),
)
def test_simplex_projection_is_the_euclidean_projection(k, seed, scale):
    """p = proj_Δ(x) iff p ∈ Δ and ⟨x − p, q − p⟩ ≤ 0 for all q ∈ Δ (check the vertices)."""
    x = np.random.default_rng(seed).normal(size=k) * scale
    p = np.asarray(_project(jnp.asarray(x)))
    assert p.min() >= 0 and abs(p.sum() - 1) <= 1e-12
    r = x - p
    assert np.max(r - r @ p) <= 1e-12 * (1 + np.abs(x).max())
