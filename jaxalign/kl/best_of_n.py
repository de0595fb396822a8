r"""Exact best-of-N on a finite response set, with ties broken uniformly.

Draw N i.i.d. responses from ``p`` and keep one with the highest reward, choosing
uniformly among the draws that tie for the maximum. With
:math:`G(v) = P_p(r \le v)`, :math:`G^-(v) = P_p(r < v)` and :math:`q(v) = G(v) - G^-(v)`:

.. math::

    \pi_N(y) = \frac{p(y)}{q(r(y))}\left[G(r(y))^N - G^-(r(y))^N\right].

Without ties this is :math:`F(y)^N - F^-(y)^N`. Computed in log space from the upper
tail :math:`1 - G` where that is more accurate, so N may be astronomically large
(``N = e^{m\delta}`` for sequences of length m in the thousands).

References:
  Beirami et al., "Theoretical guarantees on the best-of-n alignment policy", 2024.
  Yang et al., "Asymptotics of Language Model Alignment", 2024.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.kl.tilt import check_log_base_and_reward, kl_unchecked, on_support

Vec = Float[Array, "responses"]


def _log1mexp(x: jax.Array) -> jax.Array:
    r"""log(1 - exp(x)) for x ≤ 0, accurate over the whole range."""
    return jnp.where(x > -0.6931471805599453, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def segment_logsumexp(values: jax.Array, segment_ids: jax.Array, num_segments: int) -> jax.Array:
    m = jax.ops.segment_max(values, segment_ids, num_segments=num_segments)
    m_safe = jnp.where(jnp.isfinite(m), m, 0)
    s = jax.ops.segment_sum(jnp.exp(values - m_safe[segment_ids]), segment_ids, num_segments)
    return jnp.where(s > 0, m_safe + jnp.log(jnp.where(s > 0, s, 1)), -jnp.inf)


class RewardCDF(NamedTuple):
    """Reward-law terms at each response's own reward, each ``[K]``."""

    log_cdf: jax.Array  # log G(r(y)) = log P_p(r <= r(y))
    log_cdf_strict: jax.Array  # log G⁻(r(y)) = log P_p(r < r(y))
    log_atom: jax.Array  # log q(r(y)) = log P_p(r = r(y))


def reward_cdf(log_base: jax.Array, reward: jax.Array) -> RewardCDF:
    r"""log G(r(y)), log G⁻(r(y)), log q(r(y)) for every y, in O(K log K) and in log space."""
    k = log_base.shape[0]
    order = jnp.argsort(reward)
    r_s, lp_s = reward[order], log_base[order]
    # Tie groups in sorted order.
    new_group = jnp.concatenate([jnp.ones((1,), bool), r_s[1:] != r_s[:-1]])
    group_s = jnp.cumsum(new_group.astype(jnp.int32)) - 1
    log_atom_g = segment_logsumexp(lp_s, group_s, k)  # [K groups], -inf for unused ids
    # Lower and upper cumulative masses per group; the upper tail keeps precision near G = 1.
    log_le = jax.lax.cumlogsumexp(log_atom_g)  # P(r <= v_g)
    log_gt = jnp.concatenate(
        [
            jax.lax.cumlogsumexp(log_atom_g, reverse=True)[1:],
            jnp.full((1,), -jnp.inf, log_base.dtype),
        ]
    )  # P(r > v_g)
    log_lt = jnp.concatenate([jnp.full((1,), -jnp.inf, log_base.dtype), log_le[:-1]])  # P(r < v_g)
    log_ge = jax.lax.cumlogsumexp(log_atom_g, reverse=True)  # P(r >= v_g)
    half = jnp.log(jnp.asarray(0.5, log_base.dtype))
    log_cdf_g = jnp.where(log_gt < half, _log1mexp(jnp.minimum(log_gt, 0)), log_le)
    log_lt_g = jnp.where(log_ge < half, _log1mexp(jnp.minimum(log_ge, 0)), log_lt)
    # Back to the original response order.
    group = jnp.zeros((k,), jnp.int32).at[order].set(group_s)
    return RewardCDF(log_cdf_g[group], log_lt_g[group], log_atom_g[group])


def best_of_n_policy(log_base: ArrayLike, reward: ArrayLike, n: ArrayLike) -> Vec:
    r"""Exact best-of-N distribution over a finite set, ties broken uniformly at random.

    Args:
      log_base: ``[K]`` log-probabilities of the base policy ``p``.
      reward: ``[K]`` finite rewards (ties allowed).
      n: number of draws N ≥ 1. Any real N ≥ 1 is accepted: the formula uses the CDF
        power :math:`G^N`, the exact law of the maximum for integer N and its natural
        interpolation otherwise (used for ``N = e^{m\delta}`` in the asymptotics).

    Returns:
      ``[K]`` log-probabilities of :math:`\pi_N` (``-inf`` outside the support of ``p``).

    Example:
      >>> import jax.numpy as jnp
      >>> logp = best_of_n_policy(jnp.log(jnp.ones(4) / 4), jnp.arange(4.0), 2)
    """
    log_base, reward = check_log_base_and_reward(log_base, reward)
    _checks.check_at_least("n", n, 1)
    n = jnp.asarray(n, log_base.dtype)
    return best_of_n_unchecked(log_base, reward, n)


@jax.jit  # compiled core (one sort + scans) so eager calls don't dispatch op by op
def best_of_n_unchecked(log_base: jax.Array, reward: jax.Array, n: jax.Array) -> jax.Array:
    log_cdf, _, log_atom = reward_cdf(log_base, reward)
    # G^N - G⁻^N = G^N (1 - (1 - q/G)^N); log(1 - q/G) via log1mexp keeps ties and N huge exact.
    log_ratio = _log1mexp(jnp.minimum(log_atom - log_cdf, 0))  # log(G⁻/G) = log(1 - q/G)
    log_max_law = n * log_cdf + _log1mexp(jnp.minimum(n * log_ratio, 0))
    on = on_support(log_base)
    out = jnp.where(on, log_base - jnp.where(on, log_atom, 0) + log_max_law, -jnp.inf)
    return out


def best_of_n_kl_bound(n: ArrayLike) -> Float[Array, ""]:
    r"""The best-of-N KL bound :math:`\log N - (N-1)/N` (tight when ``p`` has no atoms).

    References:
      Beirami et al., "Theoretical guarantees on the best-of-n alignment policy", 2024.
    """
    _checks.check_at_least("n", n, 1)
    n = jnp.asarray(n, jnp.result_type(float))
    return jnp.log(n) - (n - 1) / n


def best_of_n_kl(log_base: ArrayLike, reward: ArrayLike, n: ArrayLike) -> Float[Array, ""]:
    r"""Exact :math:`\mathrm{KL}(\pi_N\|p)` (≤ :func:`best_of_n_kl_bound`)."""
    log_base, reward = check_log_base_and_reward(log_base, reward)
    _checks.check_at_least("n", n, 1)
    log_bon = best_of_n_unchecked(log_base, reward, jnp.asarray(n, log_base.dtype))
    return kl_unchecked(log_bon, log_base)


def best_of_n_win_rate(log_base: ArrayLike, reward: ArrayLike, n: ArrayLike) -> Float[Array, ""]:
    r"""Win rate of :math:`\pi_N` against ``p`` on ``reward`` (ties count ½); ≤ N/(N+1).

    .. math:: \sum_y \pi_N(y)\,[G^-(r(y)) + \tfrac12 q(r(y))]

    Equality with N/(N+1) holds when ``p`` has no reward atoms.
    """
    log_base, reward = check_log_base_and_reward(log_base, reward)
    _checks.check_at_least("n", n, 1)
    return _bon_win_rate(log_base, reward, jnp.asarray(n, log_base.dtype))


@jax.jit
def _bon_win_rate(log_base: jax.Array, reward: jax.Array, n: jax.Array) -> jax.Array:
    log_bon = best_of_n_unchecked(log_base, reward, n)
    _, log_lt, log_atom = reward_cdf(log_base, reward)
    beats = jnp.exp(log_lt) + 0.5 * jnp.exp(log_atom)
    return jnp.sum(jnp.where(on_support(log_bon), jnp.exp(log_bon) * beats, 0))
