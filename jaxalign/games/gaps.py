r"""Exact payoffs, best responses, duality gaps and exploitability of preference games.

Policies are **logits or log-probabilities** over the K responses (normalised here with
``log_softmax``; ``-inf`` marks responses outside the support). ``ref`` is the reference
policy of the KL regulariser (log-probabilities; default uniform); ``tau`` its weight.

Two-player regularised game (ALGORITHMS.md §2):
:math:`J_\tau(\pi_1, \pi_2) = \pi_1^\top P \pi_2 - \tau\mathrm{KL}(\pi_1\|\pi_{\rm ref})
+ \tau\mathrm{KL}(\pi_2\|\pi_{\rm ref})`, with closed-form best responses
:math:`\arg\max_{\pi_1} J_\tau(\pi_1,\pi) \propto \pi_{\rm ref}\, e^{P\pi/\tau}` and
:math:`\arg\min_{\pi_2} J_\tau(\pi,\pi_2) \propto \pi_{\rm ref}\, e^{-P^\top\pi/\tau}`.
"""

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.games.game import (
    MultiplayerGame,
    PreferenceGame,
    check_game,
    check_multiplayer_game,
)
from jaxalign.kl import kl_divergence  # the one KL; re-exported by jaxalign.games

Vec = Float[Array, "K"]


# --------------------------------------------------------------------------- helpers


def as_log_policy(name: str, x, num_responses: int, dtype) -> jax.Array:
    """Checks a ``[K]`` vector of logits / log-probs and returns normalised log-probs."""
    x = _checks.as_float_array(name, x, ndim=1)
    if x.shape[0] != num_responses:
        raise ValueError(
            f"{name} must have shape ({num_responses},) to match the game, got {x.shape}"
        )
    if _checks.is_concrete(x):
        a = np.asarray(x, dtype=np.float64)
        if np.isnan(a).any() or np.isposinf(a).any() or np.isneginf(a).all():
            raise ValueError(
                f"{name} must be logits/log-probabilities without NaN or +inf and with some "
                f"finite entry, got {_checks._short(a)}"
            )
    return jax.nn.log_softmax(x.astype(dtype))


def ref_log_policy(ref, num_responses: int, dtype) -> jax.Array:
    """The reference policy's log-probs (uniform when ``ref`` is None)."""
    if ref is None:
        return jnp.full((num_responses,), -np.log(num_responses), dtype)
    return as_log_policy("ref", ref, num_responses, dtype)


def is_zero(tau) -> bool:
    """True for a concrete tau equal to 0 (the unregularised branch is chosen statically)."""
    if isinstance(tau, numbers.Number):
        return tau == 0
    return _checks.is_concrete(tau) and bool(np.all(np.asarray(tau) == 0))


def check_tau(tau) -> None:
    _checks.check_nonnegative("tau", tau)


def _probs(log_p: jax.Array) -> jax.Array:
    return jnp.exp(log_p)


def _dot_log(log_p: jax.Array, values: jax.Array) -> jax.Array:
    """E_p[values] with 0 * anything = 0."""
    support = log_p > -jnp.inf
    return jnp.sum(jnp.where(support, jnp.exp(log_p) * jnp.where(support, values, 0), 0))


def _regularised_value(log_ref: jax.Array, payoff: jax.Array, tau) -> jax.Array:
    r"""Regularised best-response value.

    :math:`\max_\pi \pi\cdot u - \tau\mathrm{KL}(\pi\|\pi_{\rm ref})
    = \tau\log\sum \pi_{\rm ref} e^{u/\tau}`.
    """
    return tau * jax.nn.logsumexp(log_ref + payoff / tau)


# --------------------------------------------------------------------------- two players


def win_rates(game: PreferenceGame, policy: Float[ArrayLike, "K"]) -> Vec:
    r"""The win-rate vector :math:`(P\pi)_y = P(y \succ \pi)`.

    Args:
      game: a :class:`PreferenceGame` with ``[K, K]`` preference.
      policy: ``[K]`` logits / log-probs of :math:`\pi`.

    Returns:
      ``[K]`` win rates of each response against :math:`\pi`.
    """
    p = check_game(game)
    log_pi = as_log_policy("policy", policy, p.shape[0], p.dtype)
    return p @ _probs(log_pi)


def best_response(
    game: PreferenceGame,
    policy: Float[ArrayLike, "K"],
    tau: float = 0.0,
    ref: Float[ArrayLike, "K"] | None = None,
) -> Vec:
    r"""Log-probs of the (regularised) best response to :math:`\pi`.

    :math:`\tau > 0`: :math:`\mathrm{BR}(\pi) \propto \pi_{\rm ref}\, e^{P\pi/\tau}`.
    :math:`\tau = 0`: uniform over :math:`\arg\max_y (P\pi)_y` (ties within 1e-12·K).

    Args:
      game: ``[K, K]`` preference game.
      policy: ``[K]`` logits / log-probs.
      tau: KL weight ≥ 0.
      ref: ``[K]`` reference log-probs (default uniform).

    Returns:
      ``[K]`` log-probabilities.
    """
    p = check_game(game)
    check_tau(tau)
    k = p.shape[0]
    log_pi = as_log_policy("policy", policy, k, p.dtype)
    u = p @ _probs(log_pi)
    if is_zero(tau):
        tol = jnp.asarray(1e-12 * k if p.dtype == jnp.float64 else 1e-6, p.dtype)
        best = u >= jnp.max(u) - tol
        return jax.nn.log_softmax(jnp.where(best, jnp.asarray(0, p.dtype), -jnp.inf))
    log_ref = ref_log_policy(ref, k, p.dtype)
    tau = jnp.asarray(tau, p.dtype)
    return jax.nn.log_softmax(log_ref + u / tau)


def duality_gap(
    game: PreferenceGame,
    policy: Float[ArrayLike, "K"],
    tau: float = 0.0,
    ref: Float[ArrayLike, "K"] | None = None,
) -> Float[Array, ""]:
    r"""Exact duality gap of a policy in the (KL-regularised) preference game.

    .. math::

        \mathrm{DualGap}(\pi) = \max_{\pi_1} J_\tau(\pi_1, \pi) - \min_{\pi_2} J_\tau(\pi, \pi_2)

    Closed forms: :math:`\tau = 0`: :math:`2\max_y (P\pi)_y - 1`;
    :math:`\tau > 0`: :math:`\tau\log\sum\pi_{\rm ref}e^{P\pi/\tau} +
    \tau\log\sum\pi_{\rm ref}e^{-P^\top\pi/\tau} + 2\tau\mathrm{KL}(\pi\|\pi_{\rm ref})`,
    which equals :math:`2\tau\,\mathrm{KL}(\pi\|\mathrm{BR}_\tau(\pi))`. It is ≥ 0 and 0
    exactly at the Nash equilibrium.

    Args:
      game: ``[K, K]`` preference game.
      policy: ``[K]`` logits / log-probs (the symmetric profile :math:`(\pi, \pi)`).
      tau: KL weight ≥ 0 (static 0 selects the unregularised formula).
      ref: ``[K]`` reference log-probs (default uniform); ignored when ``tau = 0``.

    Returns:
      Scalar gap.
    """
    p = check_game(game)
    check_tau(tau)
    k = p.shape[0]
    log_pi = as_log_policy("policy", policy, k, p.dtype)
    pi = _probs(log_pi)
    if is_zero(tau):
        return jnp.max(p @ pi) - jnp.min(p.T @ pi)
    log_ref = ref_log_policy(ref, k, p.dtype)
    tau = jnp.asarray(tau, p.dtype)
    two = jnp.asarray(2, p.dtype)
    return (
        _regularised_value(log_ref, p @ pi, tau)
        + _regularised_value(log_ref, -(p.T @ pi), tau)
        + two * tau * kl_divergence(log_pi, log_ref)
    )


# --------------------------------------------------------------------------- n players


def multiplayer_payoff(
    game: MultiplayerGame | PreferenceGame, opponents: Float[ArrayLike, "m K"]
) -> Vec:
    r"""Payoff of each response against a set of opponents.

    :math:`u(y) = \mathbb{E}_{y_j\sim\pi_j}\, P(y \succ \{y_j\}_{j})`: the payoff tensor
    contracted with each opponent's policy. For a :class:`PreferenceGame` (n = 2) this
    is :math:`P\pi_1`.

    Args:
      game: an n-player game (or a two-player one).
      opponents: ``[n-1, K]`` logits / log-probs, one row per opponent.

    Returns:
      ``[K]`` payoffs.
    """
    t = _payoff_tensor(game)
    n, k = t.ndim, t.shape[-1]
    opp = _checks.as_float_array("opponents", opponents, ndim=2)
    if opp.shape != (n - 1, k):
        raise ValueError(
            f"opponents must have shape ({n - 1}, {k}) for a {n}-player game over {k} "
            f"responses, got {opp.shape}"
        )
    probs = jax.vmap(lambda o: _probs(as_log_policy("opponents", o, k, t.dtype)))(opp)
    return contract_opponents(t, probs)


def _payoff_tensor(game) -> jax.Array:
    if isinstance(game, PreferenceGame):
        return check_game(game)
    return check_multiplayer_game(game)


def contract_opponents(t: jax.Array, probs: jax.Array) -> jax.Array:
    """Contracts axes 1..n-1 of ``t`` with the rows of ``probs`` (last axis first)."""
    x = t
    for j in range(probs.shape[0] - 1, -1, -1):
        x = x @ probs[j]
    return x


def _one_sided_gap(log_pi, payoff, tau, log_ref) -> jax.Array:
    if is_zero(tau):
        return jnp.max(payoff) - _dot_log(log_pi, payoff)
    value = _dot_log(log_pi, payoff) - tau * kl_divergence(log_pi, log_ref)
    return _regularised_value(log_ref, payoff, tau) - value


def multiplayer_duality_gap(
    game: MultiplayerGame | PreferenceGame,
    policy: Float[ArrayLike, "K"],
    opponents: Float[ArrayLike, "m K"] | None = None,
    tau: float = 0.0,
    ref: Float[ArrayLike, "K"] | None = None,
) -> Float[Array, ""]:
    r"""MNPO's one-sided duality gap of a policy against its opponents.

    .. math::

        \mathrm{DualGap}(\pi) = \max_{\pi'} J(\pi', O) - J(\pi, O), \qquad
        J(\pi, O) = \mathbb{E}_{y\sim\pi} P(y \succ O) - \tau\mathrm{KL}(\pi\|\pi_{\rm ref})

    Args:
      game: an n-player game (a two-player game is n = 2).
      policy: ``[K]`` logits / log-probs.
      opponents: ``[n-1, K]``; default ``n-1`` copies of ``policy`` (symmetric play).
      tau: KL weight ≥ 0.
      ref: reference log-probs (default uniform).

    Returns:
      Scalar gap ≥ 0; for n = 2 and symmetric play it is half the two-player
      :func:`duality_gap`.
    """
    t = _payoff_tensor(game)
    check_tau(tau)
    n, k = t.ndim, t.shape[-1]
    log_pi = as_log_policy("policy", policy, k, t.dtype)
    if opponents is None:
        opponents = jnp.broadcast_to(log_pi, (n - 1, k))
    u = multiplayer_payoff(game, opponents)
    log_ref = ref_log_policy(ref, k, t.dtype)
    tau_arr = tau if is_zero(tau) else jnp.asarray(tau, t.dtype)
    return _one_sided_gap(log_pi, u, tau_arr, log_ref)


def exploitability(
    game: MultiplayerGame | PreferenceGame,
    policies: Float[ArrayLike, "n K"],
    tau: float = 0.0,
    ref: Float[ArrayLike, "K"] | None = None,
) -> Float[Array, ""]:
    r"""Exploitability (NashConv) of a strategy profile: the sum of players' best-response gains.

    .. math:: \sum_i \Big[\max_{\pi'} J_i(\pi', \pi_{-i}) - J_i(\pi_i, \pi_{-i})\Big]

    For a two-player :class:`PreferenceGame` and the profile :math:`(\pi_1, \pi_2)` this
    is :math:`\max_{\pi'} J_\tau(\pi',\pi_2) - \min_{\pi'} J_\tau(\pi_1,\pi')`, the
    duality gap of the pair (equal to :func:`duality_gap` when :math:`\pi_1 = \pi_2`).

    Args:
      game: two-player or n-player game.
      policies: ``[n, K]`` one policy per player.
      tau: KL weight ≥ 0. ref: reference log-probs (default uniform).

    Returns:
      Scalar ≥ 0, zero exactly at a Nash equilibrium.
    """
    t = _payoff_tensor(game)
    check_tau(tau)
    n, k = t.ndim, t.shape[-1]
    pol = _checks.as_float_array("policies", policies, ndim=2)
    if pol.shape != (n, k):
        raise ValueError(f"policies must have shape ({n}, {k}), got {pol.shape}")
    log_pis = jax.vmap(lambda x: as_log_policy("policies", x, k, t.dtype))(pol)
    log_ref = ref_log_policy(ref, k, t.dtype)
    tau_arr = tau if is_zero(tau) else jnp.asarray(tau, t.dtype)
    probs = jnp.exp(log_pis)
    total = jnp.zeros([], t.dtype)
    for i in range(n):
        others = jnp.concatenate([probs[:i], probs[i + 1 :]], axis=0)
        total = total + _one_sided_gap(log_pis[i], contract_opponents(t, others), tau_arr, log_ref)
    return total


__all__ = [
    "best_response",
    "duality_gap",
    "exploitability",
    "kl_divergence",
    "multiplayer_duality_gap",
    "multiplayer_payoff",
    "win_rates",
]
