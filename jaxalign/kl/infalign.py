r"""InfAlign: KL-regularised alignment for an *inference-time* win rate, exactly.

A policy ``π`` is rarely used as is: at inference time a procedure ``T`` draws from it,
here best-of-N (keep the highest-reward of N draws) or worst-of-N (keep the lowest: the
"BoN jailbreaking" threat model). The quantity that matters is then the win rate of
``T(π)`` against ``T(π_ref)``,

.. math::

    W^T(\pi) = \sum_{y,z} T(\pi)(y)\, T(\pi_{\rm ref})(z)\, w(y, z), \qquad
    w(y, z) = 1\{r(y) > r(z)\} + \tfrac12 1\{r(y) = r(z)\},

and the alignment problem is :math:`\max_\pi W^T(\pi) - \beta\,\mathrm{KL}(\pi\|\pi_{\rm ref})`.
Everything here is exact on a finite response set (ties in ``r`` allowed).

The pieces, in the order of the method:

1. **Calibration** (:func:`calibrated_reward`): :math:`C(y) = P_{z\sim\pi_{\rm ref}}(r(z) <
   r(y)) + \tfrac12 P(r(z) = r(y))`, the mid-rank win rate of ``y`` against ``π_ref``.
   :math:`\mathbb{E}_{\pi_{\rm ref}} C = \tfrac12` exactly, ties included (the pairs
   ``(y, z)`` and ``(z, y)`` share one unit of win), and ``C`` is invariant to every
   strictly increasing transform of ``r``. The ``≤``-CDF variant
   :math:`P(r(z) \le r(y))` has mean :math:`\tfrac12 + \tfrac12\sum_s \pi_{\rm ref}(S_s)^2`
   instead: it is biased on every finite set.
2. **Inference-time laws** (:func:`inference_time_policy`): best-of-N is
   :func:`jaxalign.kl.best_of_n_policy` (ties broken uniformly); worst-of-N is best-of-N
   of ``−r`` (the same law with :math:`G(s) = P(r \ge s)`, :math:`G^+(s) = P(r > s)`).
3. **Inference-time win rate** (:func:`inference_win_rate`): :math:`W^T(\pi) =
   \mathbb{E}_{T(\pi)}[C_{T(\pi_{\rm ref})}]`, the calibrated reward *of the decoded
   reference*. For ``N = 1`` it is :math:`\mathbb{E}_\pi C`, linear in ``π``.
4. **Calibrate and transform** (:func:`calibrate_and_transform_policy`):
   :math:`\pi \propto \pi_{\rm ref} e^{\Phi(C)/\beta}` with :math:`\Phi(u) = u`,
   :math:`e^{tu}` (for best-of-N) or :math:`-e^{-tu}` (for worst-of-N), β solved for a
   KL budget with :func:`jaxalign.kl.kl_constrained_policy`.
5. **The transform's parameter** (:func:`calibrated_space_win_rate`,
   :func:`tune_transform`): when ``r`` has no atoms under ``π_ref``, ``C(Y) ~ U[0,1]`` and
   the whole problem lives on ``[0,1]``: ``u = C`` has density :math:`q \propto
   e^{\Phi(u)/\beta}`, :math:`\mathrm{KL} = \int q\log q`, and with ``A`` the CDF of
   ``T(π)`` and ``B`` that of ``T(π_ref)`` in calibrated space,

   .. math::

       W = \int_0^1 B\,dA = 1 - \int_0^1 A(u)\, B'(u)\, du,

   with :math:`A = Q^N, B = u^N` (best-of-N) or :math:`A = 1-(1-Q)^N, B = 1-(1-u)^N`
   (worst-of-N). This is the same for every model and reward, so ``t`` is tuned once per
   ``(N, budget)`` on ``[0,1]``. On a finite set with atoms of mass at most ``h`` the exact
   win rate differs from it by ``O(h²)`` (a midpoint/trapezoid rule in calibrated space;
   checked in ``theory_tests/test_infalign.py``).
6. **The exact optimum** (:func:`inference_optimal_policy`): first-order conditions of
   :math:`W^T - \beta\,\mathrm{KL}` on the simplex give :math:`\pi^* \propto \pi_{\rm ref}
   e^{R^*/\beta}` with :math:`R^* = \partial W^T/\partial\pi` *at* :math:`\pi^*`: a fixed
   point, found by mirror ascent (:func:`inference_win_rate_gradient` gives ``R``).
   ``W`` depends on ``π`` only through the masses of the reward levels, and ``R`` is
   constant on ties and non-decreasing in ``r`` — so the optimum *is* KL-RL with a
   monotone transform of the (calibrated) reward, as the paper states.
   For best-of-N, summing by parts, :math:`W = v_{\rm top} - \sum_{s<{\rm top}} F_s^N
   (v_{s+1} - v_s)` with ``v`` increasing: concave in ``π``, so the fixed point is the
   unique global optimum. For worst-of-N the same sum gives a *convex* ``W``, so mirror
   ascent from ``π_ref`` finds a stationary point (the optimum for large β).

Derivations (the notes this follows tag them [derived]/[unverified]; what the tests found):

* ``E_{π_ref} C = ½`` with ties, and the ≤-CDF excess ``½Σ_s π_ref(S_s)²``: exact to 1e-12.
* For ``N = 1``, ``π ∝ π_ref e^{C/β}`` is the exact optimum of win rate − β·KL (``W`` is
  linear with gradient ``C``): it beats every other Gibbs policy at the same KL, raw-reward
  RLHF included; the raw-reward tilt loses whenever ``r`` is not affine in ``C``.
* For best-of-N the mirror-ascent limit satisfies the fixed-point identity to 1e-9 and
  beats every calibrate-and-transform policy at its KL.
* The paper's parameterisation of the transforms (``e^{tu}``, ``−e^{−tu}``) is not
  verified against the paper; any affine rescaling of Φ gives the same policies at a KL
  budget (β absorbs it), so only the shape (``t``) matters.

References:
  Balashankar, Sun, et al., "InfAlign: Inference-aware language model alignment",
  ICML 2025 (arXiv 2412.19792).
  Beirami et al., "Theoretical guarantees on the best-of-n alignment policy", 2024.
"""

from __future__ import annotations

import functools
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.kl.best_of_n import best_of_n_unchecked, reward_cdf
from jaxalign.kl.tilt import kl_constrained_unchecked, kl_unchecked, on_support

Vec = Float[Array, "responses"]

PROCEDURES = ("best", "worst")
TRANSFORMS = ("identity", "exp", "neg_exp")


# ---------------------------------------------------------------------------------------------
# Validation.


# The jitted cores take the procedure as a sign (+1 best-of-N, −1 worst-of-N: the decoding
# key is sign·r) and the transform as an integer code, both traced: one compilation per shape
# serves every procedure and transform.


def _check_procedure(procedure: str) -> float:
    """Validates ``procedure`` and returns its sign (+1.0 best, −1.0 worst)."""
    if procedure not in PROCEDURES:
        raise ValueError(
            f"procedure must be one of {PROCEDURES} (best-of-N or worst-of-N), got {procedure!r}"
        )
    return 1.0 if procedure == "best" else -1.0


def _check_transform(transform: str, t) -> int:
    """Validates ``transform`` (and ``t > 0`` for the exponentials); returns its code."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    if transform != "identity":
        _checks.check_positive("t", t)
    return TRANSFORMS.index(transform)


def _check_integer_n(n) -> int:
    try:
        value = operator.index(n)
    except TypeError:
        value = None
    if value is None or value < 1:
        raise ValueError(f"n must be an integer >= 1 (number of draws), got {n!r}")
    return value


def _checked_inputs(name: str, log_p: ArrayLike, reward: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``(log_p, reward)`` checked (errors name ``name``) and cast to one float dtype."""
    log_p = _checks.as_float_array(name, log_p, ndim=1)
    reward = _checks.as_float_array("reward", reward, ndim=1)
    _checks.check_nonempty(name, log_p)
    _checks.check_same_shape((name, "reward"), log_p, reward)
    _checks.check_log_probs(name, log_p)
    _checks.check_finite("reward", reward)
    dtype = jnp.result_type(log_p.dtype, reward.dtype)
    return log_p.astype(dtype), reward.astype(dtype)


def _prepare_pair(log_policy: ArrayLike, log_ref: ArrayLike, reward: ArrayLike):
    log_policy, reward = _checked_inputs("log_policy", log_policy, reward)
    log_ref, _ = _checked_inputs("log_ref", log_ref, reward)
    dtype = jnp.result_type(log_policy.dtype, log_ref.dtype)
    return log_policy.astype(dtype), log_ref.astype(dtype), reward.astype(dtype)


# ---------------------------------------------------------------------------------------------
# 1. Calibration.


def calibrated_reward(log_ref: ArrayLike, reward: ArrayLike) -> Vec:
    r"""The calibrated reward: the mid-rank win rate of each response against ``π_ref``.

    .. math::

        C(y) = P_{z\sim\pi_{\rm ref}}(r(z) < r(y)) + \tfrac12 P_{z\sim\pi_{\rm ref}}(r(z) = r(y))

    Properties: :math:`\mathbb{E}_{y\sim\pi_{\rm ref}} C(y) = \tfrac12` exactly (ties
    included); ``C`` is unchanged by any strictly increasing transform of ``r``; without
    atoms, ``C(Y)`` is uniform on ``[0, 1]`` for ``Y ~ π_ref``. Defined for every ``y``,
    also outside the support of ``π_ref``.

    Args:
      log_ref: ``[K]`` log-probabilities of the reference policy.
      reward: ``[K]`` finite rewards (ties allowed).

    Returns:
      ``[K]`` values in ``[0, 1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> c = calibrated_reward(jnp.log(jnp.array([.4, .3, .2, .1])), jnp.array([1., 2, 2, 3]))
      >>> # c = [0.2, 0.65, 0.65, 0.95]
    """
    log_ref, reward = _checked_inputs("log_ref", log_ref, reward)
    return _calibrated(log_ref, reward)


@jax.jit
def _calibrated(log_ref: jax.Array, reward: jax.Array) -> jax.Array:
    _, log_lt, log_atom = reward_cdf(log_ref, reward)
    return jnp.exp(log_lt) + 0.5 * jnp.exp(log_atom)


# ---------------------------------------------------------------------------------------------
# 2-3. Inference-time laws and win rate.


def worst_of_n_policy(log_base: ArrayLike, reward: ArrayLike, n: ArrayLike) -> Vec:
    r"""Exact worst-of-N law: keep the lowest-reward of N draws, ties broken uniformly.

    .. math::

        \pi^{\rm WoN}_N(y) = \frac{\pi(y)}{\pi(S_{r(y)})}\left[G(r(y))^N - G^+(r(y))^N\right],
        \quad G(s) = P_\pi(r \ge s),\; G^+(s) = P_\pi(r > s)

    i.e. best-of-N of ``−r`` (:func:`jaxalign.kl.best_of_n_policy`).

    Args:
      log_base: ``[K]`` log-probabilities.
      reward: ``[K]`` finite rewards.
      n: number of draws, ``>= 1``.

    Returns:
      ``[K]`` log-probabilities.
    """
    log_base, reward = _checked_inputs("log_base", log_base, reward)
    _checks.check_at_least("n", n, 1)
    return best_of_n_unchecked(log_base, -reward, jnp.asarray(n, log_base.dtype))


def inference_time_policy(
    log_policy: ArrayLike, reward: ArrayLike, n: ArrayLike, procedure: str = "best"
) -> Vec:
    r"""``T(π)`` for ``T`` = best-of-N (``procedure="best"``) or worst-of-N (``"worst"``).

    ``N = 1`` returns ``π`` itself.
    """
    sign = _check_procedure(procedure)
    log_policy, reward = _checked_inputs("log_policy", log_policy, reward)
    _checks.check_at_least("n", n, 1)
    return best_of_n_unchecked(log_policy, sign * reward, jnp.asarray(n, log_policy.dtype))


def _law(log_policy, reward, n, sign):
    return best_of_n_unchecked(log_policy, sign * reward, n)


def inference_win_rate(
    log_policy: ArrayLike,
    log_ref: ArrayLike,
    reward: ArrayLike,
    n: ArrayLike,
    procedure: str = "best",
) -> Float[Array, ""]:
    r"""The inference-time win rate :math:`W^T(\pi)` of ``T(π)`` against ``T(π_ref)``.

    .. math::

        W^T(\pi) = \sum_{y,z} T(\pi)(y)\,T(\pi_{\rm ref})(z)\,w(y,z)
                 = \mathbb{E}_{y\sim T(\pi)}\big[C_{T(\pi_{\rm ref})}(y)\big]

    with ties counted ½. ``N = 1`` gives the standard win rate
    :math:`\mathbb{E}_\pi C`. Bounds: ``W(π_ref) = ½``; best-of-N of ``π_ref`` against
    ``π_ref`` itself wins at most ``N/(N+1)`` (:func:`jaxalign.kl.best_of_n_win_rate`).

    Args:
      log_policy: ``[K]`` log-probabilities of ``π``.
      log_ref: ``[K]`` log-probabilities of ``π_ref``.
      reward: ``[K]`` rewards (ties allowed).
      n: draws per decode, ``>= 1``.
      procedure: ``"best"`` (best-of-N) or ``"worst"`` (worst-of-N).

    Returns:
      Scalar win rate in ``[0, 1]``.
    """
    sign = _check_procedure(procedure)
    log_policy, log_ref, reward = _prepare_pair(log_policy, log_ref, reward)
    _checks.check_at_least("n", n, 1)
    dtype = log_policy.dtype
    return _inference_win_rate(
        log_policy, log_ref, reward, jnp.asarray(n, dtype), jnp.asarray(sign, dtype)
    )


@jax.jit
def _inference_win_rate(log_policy, log_ref, reward, n, sign):
    value = _calibrated(_law(log_ref, reward, n, sign), reward)
    log_t = _law(log_policy, reward, n, sign)
    return jnp.sum(jnp.where(on_support(log_t), jnp.exp(log_t) * value, 0))


# ---------------------------------------------------------------------------------------------
# The gradient R = ∂W/∂π and the exact optimum.


class _Levels(NamedTuple):
    """The reward levels in decoding order (computed once, outside iterative loops)."""

    order: jax.Array  # [K] argsort of the decoding key (r for best-of-N, −r for worst-of-N)
    level: jax.Array  # [K] level index of each sorted response
    first: jax.Array  # [K] bool: the sorted response opens a new level


def _levels(reward: jax.Array, sign: jax.Array) -> _Levels:
    key = sign * reward
    order = jnp.argsort(key)
    key_s = key[order]
    first = jnp.concatenate([jnp.ones((1,), bool), key_s[1:] != key_s[:-1]])
    return _Levels(order, jnp.cumsum(first.astype(jnp.int32)) - 1, first)


def _level_win_rate(probs, value, levels: _Levels, n: int):
    r"""``W`` as a polynomial in the masses of the reward levels (differentiable in ``probs``).

    With levels sorted in the decoding order and ``F_s`` their cumulative mass,
    ``T(π)(S_s) = F_s^N − F_{s−1}^N`` and ``W = Σ_s T(π)(S_s) v_s`` (``v`` constant on a level).
    No division by a level's mass, so the gradient is finite on every level, empty or not.
    """
    k = probs.shape[0]
    mass = jax.ops.segment_sum(probs[levels.order], levels.level, num_segments=k)
    level_value = jax.ops.segment_sum(
        jnp.where(levels.first, value[levels.order], 0), levels.level, num_segments=k
    )
    cdf = jnp.cumsum(mass)
    below = cdf - mass
    return jnp.sum((cdf**n - below**n) * level_value)


def inference_win_rate_gradient(
    log_policy: ArrayLike,
    log_ref: ArrayLike,
    reward: ArrayLike,
    n: int,
    procedure: str = "best",
) -> Vec:
    r"""The reward the optimum is tilted by: :math:`R(y) = \partial W^T/\partial\pi(y)`.

    ``W^T`` depends on ``π`` only through the masses :math:`a_s = \pi(S_s)` of the reward
    levels. For best-of-N, with ``v_s`` the calibrated value of level ``s`` against
    ``T(π_ref)`` and :math:`F_s = \sum_{s' \le s} a_{s'}`,

    .. math::

        R(y) = N v_s F_s^{N-1} + N\sum_{s' > s} v_{s'}\,(F_{s'}^{N-1} - F_{s'-1}^{N-1}),
        \quad s = r(y),

    constant on ties and non-decreasing in ``r`` (consecutive levels differ by
    :math:`N F_s^{N-1}(v_{s+1} - v_s) \ge 0`); worst-of-N is the same in the reversed order.
    For ``N = 1``, ``R = C`` exactly. ``R`` is the derivative of the homogeneous extension
    ``T(π)(S_s) = F_s^N − F_{s−1}^N`` off the simplex; any other extension changes ``R`` by
    a constant, which a tilt ignores.

    Args:
      log_policy: ``[K]`` log-probabilities of ``π``.
      log_ref: ``[K]`` log-probabilities of ``π_ref``.
      reward: ``[K]`` rewards.
      n: integer number of draws ``>= 1``.
      procedure: ``"best"`` or ``"worst"``.

    Returns:
      ``[K]`` the transformed reward :math:`R` at ``π``.
    """
    sign = _check_procedure(procedure)
    n = _check_integer_n(n)
    log_policy, log_ref, reward = _prepare_pair(log_policy, log_ref, reward)
    return _gradient(log_policy, log_ref, reward, n, jnp.asarray(sign, reward.dtype))


@functools.partial(jax.jit, static_argnames="n")
def _gradient(log_policy, log_ref, reward, n, sign):
    value = _calibrated(_law(log_ref, reward, jnp.asarray(n, log_ref.dtype), sign), reward)
    levels = _levels(reward, sign)
    return jax.grad(_level_win_rate)(jnp.exp(log_policy), value, levels, n)


class InferenceOptimum(NamedTuple):
    """The exact optimum of :math:`W^T - \\beta\\,\\mathrm{KL}` and its fixed-point check."""

    log_policy: jax.Array  # [K] log π*
    transformed_reward: jax.Array  # [K] R* = ∂W/∂π at π* (π* ∝ π_ref e^{R*/β})
    residual: jax.Array  # scalar: max − min over the support of log(π*/π_ref) − R*/β


def inference_optimal_policy(
    log_ref: ArrayLike,
    reward: ArrayLike,
    beta: ArrayLike,
    n: int,
    procedure: str = "best",
    *,
    num_steps: int = 20_000,
    damping: float | None = None,
) -> InferenceOptimum:
    r"""Exact maximiser of :math:`W^T(\pi) - \beta\,\mathrm{KL}(\pi\|\pi_{\rm ref})`.

    Entropic mirror ascent with step ``η``, started at ``π_ref``:

    .. math::

        \log\pi_{k+1} = (1-\alpha)\log\pi_k + \alpha\,(\log\pi_{\rm ref} + R(\pi_k)/\beta)
        - \log Z_k, \qquad \alpha = \eta\beta,

    a damped iteration of the fixed-point map :math:`\pi \mapsto \pi_{\rm ref}
    e^{R(\pi)/\beta}/Z`, whose fixed points are the stationary points of the objective.

    Step size: ``W`` is ``L``-smooth relative to the entropy with ``L = N(N−1)`` (its
    Hessian is :math:`\pm\sum_s c_s 1_{\le s}1_{\le s}^\top` with
    :math:`\sum_s c_s \le N(N-1)`, and Cauchy–Schwarz gives
    :math:`(\sum_{i\le s} d_i)^2 \le \sum_i d_i^2/\pi_i`), so the default is
    ``η = 1/(β + L)``, i.e. ``α = β/(β + N(N−1))`` (``α = 1`` for ``N = 1``: one step
    gives ``π_ref e^{C/β}``). For best-of-N ``W`` is concave, the objective is β-strongly
    concave relative to the entropy, and the last iterate converges linearly, at rate
    ``1 − α`` per step, to the unique optimum. For worst-of-N ``W`` is convex and the
    limit is a stationary point (the optimum when ``β ≥ N(N−1)``). ``residual`` measures
    the distance to the fixed point (0 at convergence): raise ``num_steps`` when it is not
    small (``α`` is small for small β).

    Args:
      log_ref: ``[K]`` reference log-probabilities.
      reward: ``[K]`` rewards.
      beta: KL coefficient ``> 0``.
      n: integer draws ``>= 1``.
      procedure: ``"best"`` or ``"worst"``.
      num_steps: mirror-ascent iterations (static).
      damping: ``α = ηβ`` in ``(0, 1]``; ``None`` for ``β/(β + N(N−1))``.

    Returns:
      :class:`InferenceOptimum`.
    """
    sign = _check_procedure(procedure)
    n = _check_integer_n(n)
    log_ref, reward = _checked_inputs("log_ref", log_ref, reward)
    _checks.check_positive("beta", beta)
    if damping is not None and not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1] or None (automatic), got {damping}")
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    beta = jnp.asarray(beta, log_ref.dtype)
    damping = None if damping is None else float(damping)
    sign = jnp.asarray(sign, log_ref.dtype)
    return _optimum(log_ref, reward, beta, n, sign, int(num_steps), damping)


def _normalise(logits, on):
    logits = jnp.where(on, logits, -jnp.inf)
    return logits - jax.nn.logsumexp(logits)


@functools.partial(jax.jit, static_argnames=("n", "num_steps", "damping"))
def _optimum(log_ref, reward, beta, n, sign, num_steps, damping):
    on = on_support(log_ref)
    value = _calibrated(_law(log_ref, reward, jnp.asarray(n, log_ref.dtype), sign), reward)
    grad = jax.grad(_level_win_rate)
    levels = _levels(reward, sign)
    safe_ref = jnp.where(on, log_ref, 0)
    alpha = damping if damping is not None else beta / (beta + n * (n - 1))

    def transformed(log_p):
        return grad(jnp.exp(log_p), value, levels, n)

    def body(_, log_p):
        target = safe_ref + transformed(log_p) / beta
        return _normalise((1 - alpha) * jnp.where(on, log_p, 0) + alpha * target, on)

    log_p = jax.lax.fori_loop(0, num_steps, body, log_ref)
    r_star = transformed(log_p)
    gap = jnp.where(on, jnp.where(on, log_p, 0) - safe_ref - r_star / beta, 0)
    residual = jnp.max(jnp.where(on, gap, -jnp.inf)) - jnp.min(jnp.where(on, gap, jnp.inf))
    return InferenceOptimum(log_p, r_star, residual)


# ---------------------------------------------------------------------------------------------
# 4. Calibrate and transform.


def reward_transform(u: ArrayLike, transform: str, t: ArrayLike = 1.0) -> Float[Array, "..."]:
    r"""Φ applied to calibrated rewards: ``"identity"`` ``u``, ``"exp"`` :math:`e^{tu}`,
    ``"neg_exp"`` :math:`-e^{-tu}` (``t > 0``).

    ``e^{tu}`` (convex) rewards the top quantiles, for best-of-N; :math:`-e^{-tu}`
    (concave) penalises the bottom ones, for worst-of-N. All are strictly increasing, so
    the order of responses is kept; affine rescalings give the same budgeted policy.
    """
    code = _check_transform(transform, t)
    u = jnp.asarray(u)
    u = u if jnp.issubdtype(u.dtype, jnp.floating) else u.astype(jnp.result_type(float))
    return _phi(u, jnp.asarray(t, u.dtype), code)


def _phi(u, t, code):
    """Φ_t(u) for the transform with index ``code`` in :data:`TRANSFORMS` (traced)."""
    return jnp.select([code == 0, code == 1], [u, jnp.exp(t * u)], -jnp.exp(-t * u))


def calibrate_and_transform_policy(
    log_ref: ArrayLike,
    reward: ArrayLike,
    kl_budget: ArrayLike,
    transform: str = "identity",
    t: ArrayLike = 1.0,
) -> tuple[Vec, Float[Array, ""]]:
    r"""InfAlign's policy :math:`\pi \propto \pi_{\rm ref}\,e^{\Phi(C)/\beta}` at a KL budget.

    ``C`` is :func:`calibrated_reward`, ``Φ`` is :func:`reward_transform`, and β solves
    :math:`\mathrm{KL}(\pi\|\pi_{\rm ref}) = \Delta` (:func:`jaxalign.kl.kl_constrained_policy`,
    whose β conventions apply: ``0`` when the budget is not binding). ``transform="identity"``
    is calibrated RLHF, the exact optimum of the standard (N = 1) win rate at that budget.

    Args:
      log_ref: ``[K]`` reference log-probabilities.
      reward: ``[K]`` rewards.
      kl_budget: Δ ≥ 0.
      transform: ``"identity"``, ``"exp"`` or ``"neg_exp"``.
      t: the transform's parameter, ``> 0`` (ignored for ``"identity"``).

    Returns:
      ``(log_probs [K], beta)``.
    """
    code = _check_transform(transform, t)
    log_ref, reward = _checked_inputs("log_ref", log_ref, reward)
    _checks.check_nonnegative("kl_budget", kl_budget)
    dtype = log_ref.dtype
    return _calibrate_and_transform(
        log_ref, reward, jnp.asarray(kl_budget, dtype), jnp.asarray(t, dtype), code
    )


@jax.jit
def _calibrate_and_transform(log_ref, reward, budget, t, code):
    phi = _phi(_calibrated(log_ref, reward), t, code)
    return kl_constrained_unchecked(log_ref, phi, budget)


# ---------------------------------------------------------------------------------------------
# 5. The one-dimensional reduction in calibrated space, and the choice of t.


class CalibratedSpacePoint(NamedTuple):
    """A calibrate-and-transform policy evaluated in calibrated space (no atoms)."""

    win_rate: jax.Array  # W of T(π) against T(π_ref)
    kl: jax.Array  # ∫ q log q (= the budget when it binds)
    beta: jax.Array  # the temperature that hits the budget


def calibrated_space_win_rate(
    kl_budget: ArrayLike,
    n: ArrayLike,
    procedure: str = "best",
    transform: str = "identity",
    t: ArrayLike = 1.0,
    *,
    num_points: int = 4097,
) -> CalibratedSpacePoint:
    r"""Inference-time win rate of :math:`\pi \propto \pi_{\rm ref} e^{\Phi(C)/\beta}` when
    ``r`` has no atoms under ``π_ref`` — the same for every model and reward.

    In calibrated space ``u = C(y) ~ U[0,1]`` under ``π_ref`` and ``u`` has density
    :math:`q(u) = e^{\Phi(u)/\beta}/Z` under ``π`` (CDF ``Q``), so

    .. math::

        \mathrm{KL}(\pi\|\pi_{\rm ref}) = \int_0^1 q\log q\,du, \qquad
        W = 1 - \int_0^1 A(u)\,B'(u)\,du,

    with :math:`A = Q^N, B = u^N` for best-of-N and :math:`A = 1 - (1-Q)^N,
    B = 1 - (1-u)^N` for worst-of-N (``W = ∫ B dA`` integrated by parts). Integrals use
    the trapezoid rule on ``num_points`` nodes (error ``O(num_points⁻²)``); β is solved on
    the same nodes by :func:`jaxalign.kl.kl_constrained_policy` with the trapezoid weights
    as the base measure, so the reported KL is the trapezoid rule of ``∫ q log q``.
    Jittable and vmappable over ``kl_budget`` and ``t``.

    Args:
      kl_budget: Δ ≥ 0.
      n: draws ``>= 1``.
      procedure: ``"best"`` or ``"worst"``.
      transform: ``"identity"``, ``"exp"`` or ``"neg_exp"``.
      t: the transform's parameter ``> 0``.
      num_points: quadrature nodes (static), ``>= 3``.

    Returns:
      :class:`CalibratedSpacePoint`.
    """
    sign = _check_procedure(procedure)
    code = _check_transform(transform, t)
    _checks.check_nonnegative("kl_budget", kl_budget)
    _checks.check_at_least("n", n, 1)
    if int(num_points) < 3:
        raise ValueError(f"num_points must be >= 3, got {num_points}")
    dtype = jnp.result_type(float)
    return _calibrated_space(
        jnp.asarray(kl_budget, dtype),
        jnp.asarray(n, dtype),
        jnp.asarray(t, dtype),
        jnp.asarray(sign, dtype),
        code,
        int(num_points),
    )


def _trapezoid_weights(num_points: int, dtype) -> jax.Array:
    w = jnp.full((num_points,), 1.0 / (num_points - 1), dtype)
    return w.at[0].multiply(0.5).at[-1].multiply(0.5)


@functools.partial(jax.jit, static_argnames="num_points")
def _calibrated_space(budget, n, t, sign, code, num_points):
    dtype = budget.dtype
    u = jnp.linspace(0.0, 1.0, num_points, dtype=dtype)
    w = _trapezoid_weights(num_points, dtype)
    log_w = jnp.log(w)
    log_pi, beta = kl_constrained_unchecked(log_w, _phi(u, t, code), budget)
    density = jnp.exp(log_pi - log_w)  # q at the nodes: π_j = w_j q(u_j)
    h = 1.0 / (num_points - 1)
    cdf = jnp.concatenate(
        [jnp.zeros((1,), dtype), jnp.cumsum(0.5 * h * (density[1:] + density[:-1]))]
    )
    cdf = jnp.clip(cdf / cdf[-1], 0.0, 1.0)
    best = sign > 0
    a = jnp.where(best, cdf**n, 1 - (1 - cdf) ** n)
    db = jnp.where(best, n * u ** (n - 1), n * (1 - u) ** (n - 1))
    win = 1 - jnp.sum(w * a * db)
    return CalibratedSpacePoint(win, kl_unchecked(log_pi, log_w), beta)


class TunedTransform(NamedTuple):
    """The best transform parameter on a grid, from the calibrated-space win rate."""

    t: jax.Array  # argmax over the grid
    win_rate: jax.Array  # W at that t
    win_rates: jax.Array  # [T] W at every grid t


def tune_transform(
    kl_budget: ArrayLike,
    n: ArrayLike,
    procedure: str = "best",
    transform: str = "exp",
    ts: ArrayLike = (0.5, 1, 2, 4, 6, 8, 10, 12, 15, 20),
    *,
    num_points: int = 4097,
) -> TunedTransform:
    r"""Choose ``t`` for a ``(N, KL budget)`` by maximising :func:`calibrated_space_win_rate`.

    The calibrated-space win rate does not depend on the model or the reward (no atoms),
    so this is done once per ``(N, Δ)`` and the chosen ``t`` is applied to any
    :func:`calibrate_and_transform_policy`. A grid scan (one vmapped evaluation), since
    ``W(t)`` is cheap and need not be unimodal.

    Args:
      kl_budget: Δ ≥ 0.
      n: draws ``>= 1``.
      procedure: ``"best"`` or ``"worst"``.
      transform: ``"exp"`` or ``"neg_exp"`` (``"identity"`` has no parameter).
      ts: ``[T]`` candidate parameters, each ``> 0``.
      num_points: quadrature nodes.

    Returns:
      :class:`TunedTransform`.
    """
    sign = _check_procedure(procedure)
    if transform == "identity":
        raise ValueError("transform 'identity' has no parameter to tune; use 'exp' or 'neg_exp'")
    ts = _checks.as_float_array("ts", ts, ndim=1)
    _checks.check_nonempty("ts", ts)
    code = _check_transform(transform, ts)
    _checks.check_nonnegative("kl_budget", kl_budget)
    _checks.check_at_least("n", n, 1)
    if int(num_points) < 3:
        raise ValueError(f"num_points must be >= 3, got {num_points}")
    dtype = ts.dtype
    budget, n, sign = (jnp.asarray(x, dtype) for x in (kl_budget, n, sign))
    one = lambda t: _calibrated_space(budget, n, t, sign, code, int(num_points)).win_rate
    wins = jax.vmap(one)(ts)
    best = jnp.argmax(wins)
    return TunedTransform(ts[best], wins[best], wins)


__all__ = [
    "PROCEDURES",
    "TRANSFORMS",
    "CalibratedSpacePoint",
    "InferenceOptimum",
    "TunedTransform",
    "calibrate_and_transform_policy",
    "calibrated_reward",
    "calibrated_space_win_rate",
    "inference_optimal_policy",
    "inference_time_policy",
    "inference_win_rate",
    "inference_win_rate_gradient",
    "reward_transform",
    "tune_transform",
    "worst_of_n_policy",
]
