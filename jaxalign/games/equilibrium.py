r"""Exact Nash equilibria of two-player preference games.

* :math:`\tau = 0`: the symmetric equilibrium solves the linear program
  :math:`\min_{\pi\in\Delta, v} v` s.t. :math:`P\pi \le v\mathbf 1` (optimal
  :math:`v = \tfrac12`), solved with ``scipy.optimize.linprog`` (HiGHS) on the host —
  not traceable.
* :math:`\tau > 0`: the unique equilibrium is the fixed point
  :math:`\pi^* \propto \pi_{\rm ref}\, e^{P\pi^*/\tau}`. The map is a contraction only for
  large :math:`\tau`, so iterating it is unreliable; instead each iteration takes the
  better (smaller fixed-point residual) of an extragradient step (EGPO; linearly
  convergent for any :math:`\tau`) and a Newton step on
  :math:`F(\theta) = \theta - \mathrm{BR}_\tau(\theta)` (quadratic near the solution),
  inside a ``lax.while_loop`` — jittable and vmappable. The residual
  :math:`\max_y |\log\pi(y) - \log\mathrm{BR}_\tau(\pi)(y)|` is checked on return.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.games.game import PreferenceGame, check_game
from jaxalign.games.gaps import as_log_policy, check_tau, is_zero, ref_log_policy

_DEFAULT_TOL = {np.dtype("float64"): 1e-11, np.dtype("float32"): 2e-5}


def _br_logits(p: jax.Array, log_ref: jax.Array, tau: jax.Array, theta: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(log_ref + (p @ jnp.exp(theta)) / tau)


def _residual(p, log_ref, tau, theta) -> jax.Array:
    return jnp.max(jnp.abs(theta - _br_logits(p, log_ref, tau, theta)))


def nash_residual(
    game: PreferenceGame,
    policy: Float[ArrayLike, "K"],
    tau: float,
    ref: Float[ArrayLike, "K"] | None = None,
) -> Float[Array, ""]:
    r"""Fixed-point residual :math:`\max_y |\log\pi(y) - \log\mathrm{BR}_\tau(\pi)(y)|` (τ > 0)."""
    p = check_game(game)
    check_tau(tau)
    if is_zero(tau):
        raise ValueError("nash_residual needs tau > 0; for tau = 0 use duality_gap(game, policy)")
    k = p.shape[0]
    theta = as_log_policy("policy", policy, k, p.dtype)
    return _residual(p, ref_log_policy(ref, k, p.dtype), jnp.asarray(tau, p.dtype), theta)


def _lp_nash(p: np.ndarray) -> np.ndarray:
    from scipy.optimize import linprog

    k = p.shape[0]
    c = np.zeros(k + 1)
    c[-1] = 1.0
    a_ub = np.concatenate([p, -np.ones((k, 1))], axis=1)
    a_eq = np.concatenate([np.ones((1, k)), np.zeros((1, 1))], axis=1)
    res = linprog(
        c,
        A_ub=a_ub,
        b_ub=np.zeros(k),
        A_eq=a_eq,
        b_eq=np.ones(1),
        bounds=[(0, None)] * k + [(None, None)],
        method="highs",
    )
    if not res.success:  # pragma: no cover - the LP is always feasible and bounded
        raise RuntimeError(f"linprog failed to find the Nash equilibrium: {res.message}")
    pi = np.clip(res.x[:k], 0.0, None)
    pi[pi < 1e-13] = 0.0
    return pi / pi.sum()


@jax.jit
def _solve_regularised(p, log_ref, tau, tol, max_iters):
    # Jitted as a whole solver (arrays only), so repeated calls on same-shaped games reuse
    # one compilation; under an outer jit/vmap it simply inlines.
    dtype = p.dtype
    one = jnp.asarray(1, dtype)
    step = one / (tau + jnp.asarray(2, dtype))  # EGPO step, s * tau < 1

    def eg(theta):
        anchor = (one - step * tau) * theta + step * tau * log_ref
        half = jax.nn.log_softmax(anchor + step * (p @ jnp.exp(theta)))
        return jax.nn.log_softmax(anchor + step * (p @ jnp.exp(half)))

    def fixed_point_map(theta):
        return theta - _br_logits(p, log_ref, tau, theta)

    def newton(theta):
        jac = jax.jacfwd(fixed_point_map)(theta)
        delta = jnp.linalg.solve(jac, -fixed_point_map(theta))
        return jax.nn.log_softmax(theta + delta)

    def residual(theta):
        r = _residual(p, log_ref, tau, theta)
        return jnp.where(jnp.isfinite(r), r, jnp.asarray(jnp.inf, dtype))

    def cond(carry):
        _, res, it = carry
        return (res > tol) & (it < max_iters)

    def body(carry):
        theta, _, it = carry
        t_eg, t_nt = eg(theta), newton(theta)
        r_eg, r_nt = residual(t_eg), residual(t_nt)
        use_newton = r_nt < r_eg
        theta = jnp.where(use_newton, t_nt, t_eg)
        return theta, jnp.minimum(r_nt, r_eg), it + 1

    theta0 = _br_logits(p, log_ref, tau, log_ref)
    init = (theta0, residual(theta0), jnp.zeros([], jnp.int32))
    theta, res, _ = jax.lax.while_loop(cond, body, init)
    return theta, res


def nash_equilibrium(
    game: PreferenceGame,
    tau: float = 0.0,
    ref: Float[ArrayLike, "K"] | None = None,
    *,
    tol: float | None = None,
    max_iters: int = 10_000,
) -> Float[Array, "K"]:
    r"""The symmetric Nash equilibrium of the (KL-regularised) preference game, exactly.

    Args:
      game: ``[K, K]`` preference game.
      tau: KL weight ≥ 0. ``tau = 0`` (a concrete zero) uses the LP and must be called
        outside ``jit``/``vmap`` (loop over a batch on the host); ``tau > 0`` is
        jittable and vmappable.
      ref: ``[K]`` reference log-probs with full support (default uniform); ``tau > 0``.
      tol: fixed-point residual tolerance for ``tau > 0`` (default 1e-11 in float64,
        2e-5 in float32).
      max_iters: iteration cap of the ``tau > 0`` solver.

    Returns:
      ``[K]`` log-probabilities of :math:`\pi^*` (``-inf`` off the support when
      ``tau = 0``). For ``tau = 0`` and a game with several equilibria, one of them.

    Raises:
      ValueError: bad game / tau / ref, or ``tau = 0`` under a transformation.
      RuntimeError: (concrete inputs only) the residual did not reach ``100 * tol``.
    """
    p = check_game(game)
    check_tau(tau)
    k = p.shape[0]
    if is_zero(tau):
        if not _checks.is_concrete(p):
            raise ValueError(
                "nash_equilibrium with tau = 0 solves an LP on the host and cannot run under "
                "jit/vmap; call it on concrete games (loop over a batch) or use tau > 0"
            )
        pi = _lp_nash(np.asarray(p, dtype=np.float64))
        with np.errstate(divide="ignore"):
            return jnp.asarray(np.log(pi), p.dtype)
    log_ref = ref_log_policy(ref, k, p.dtype)
    if _checks.is_concrete(log_ref) and not np.isfinite(np.asarray(log_ref)).all():
        raise ValueError("ref must have full support (no -inf entries) for tau > 0")
    tol_value = tol if tol is not None else _DEFAULT_TOL.get(np.dtype(p.dtype), 2e-5)
    tau_arr = jnp.asarray(tau, p.dtype)
    theta, res = _solve_regularised(
        p, log_ref, tau_arr, jnp.asarray(tol_value, p.dtype), jnp.asarray(max_iters, jnp.int32)
    )
    if _checks.is_concrete(res) and float(res) > 100 * tol_value:
        raise RuntimeError(
            f"nash_equilibrium(tau={float(tau):.3g}) did not converge: fixed-point residual "
            f"{float(res):.3g} > {100 * tol_value:.3g} after {max_iters} iterations"
        )
    return theta


__all__ = ["nash_equilibrium", "nash_residual"]
