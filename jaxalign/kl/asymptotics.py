r"""Memoryless-model asymptotics of KL-constrained RL and best-of-N.

Sequences :math:`y^m = (y_1..y_m)` are i.i.d. under the base policy,
:math:`p(y^m) = \prod_i p(y_i)`, and the reward is additive, :math:`R(y^m) = \sum_i r(y_i)`.
Then

* the KL-RL optimum for budget :math:`\Delta = m\delta` stays i.i.d.: the per-token tilt
  :math:`\phi_\lambda` with :math:`\mathrm{KL}(\phi_\lambda\|p) = \delta`, per-token reward
  :math:`\Lambda'(\lambda)`;
* scaled cumulants: :math:`\frac1m\log\mathbb{E}_{\phi_\lambda^{\otimes m}} e^{tR} =
  \Lambda(\lambda+t) - \Lambda(\lambda)` (exactly, for every m);
* large deviations of :math:`R/m` under :math:`\phi_\lambda^{\otimes m}` with rate
  :math:`I(x) = \Lambda^*(x) - \lambda x + \Lambda(\lambda)`;
* best-of-N with :math:`N = e^{m\delta}`: :math:`\frac1m\mathbb{E}_{BoN} R \to x^*` where
  :math:`\Lambda^*(x^*) = \delta` — the same per-token reward as KL-RL.

The exact sequence-level quantities use the law of R, obtained by an m-fold convolution
of the per-token reward law **in log space** (a plain product underflows long before
m reaches the thousands). Rewards must lie on a lattice ``r_min + k·h``.

References:
  Yang, Salamatian, Sun, Suresh, Beirami, "Asymptotics of Language Model Alignment", 2024.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.kl.best_of_n import best_of_n_unchecked, segment_logsumexp
from jaxalign.kl.tilt import (
    check_log_base_and_reward,
    kl_constrained_policy,
    kl_unchecked,
    max_kl_unchecked,
    normalised_reward,
    num_bisection_steps,
    on_support,
    tilt_unchecked,
)


def tilted_mean(log_base: ArrayLike, reward: ArrayLike, lam: ArrayLike) -> Float[Array, ""]:
    r""":math:`\Lambda'(\lambda) = \mathbb{E}_{\phi_\lambda} r` (λ of any sign)."""
    log_base, reward = check_log_base_and_reward(log_base, reward)
    return _tilted_mean(log_base, reward, jnp.asarray(lam, log_base.dtype))


def _tilted_mean(log_base, reward, lam):
    log_phi = tilt_unchecked(log_base, reward, lam)
    return jnp.sum(jnp.where(on_support(log_phi), jnp.exp(log_phi) * reward, 0))


def _log_mgf(log_base, reward, lam):
    return jax.nn.logsumexp(jnp.where(on_support(log_base), log_base + lam * reward, -jnp.inf))


def legendre_transform(log_base: ArrayLike, reward: ArrayLike, x: ArrayLike) -> Float[Array, ""]:
    r"""Cramér rate :math:`\Lambda^*(x) = \sup_\lambda\, \lambda x - \Lambda(\lambda)` under ``p``.

    Finite on ``[r_min, r_max]`` (the support's reward range), ``+inf`` outside; at the
    end points it equals ``-log p(r = r_min)`` / ``-log p(r = r_max)``. In the interior the
    supremum is attained at the λ with :math:`\Lambda'(\lambda) = x`, found by bisection on a
    compactified λ (monotone, hence safe). Equivalently :math:`\Lambda^*(x) =
    \mathrm{KL}(\phi_\lambda\|p)` for that λ.
    """
    log_base, reward = check_log_base_and_reward(log_base, reward)
    x = jnp.asarray(x, log_base.dtype)
    return _legendre(log_base, reward, x)


def _solve_tilt_for_mean(log_base, reward, x):
    r"""The normalised λ̃ with Λ'(λ̃) = x̃ in normalised reward units (x strictly inside)."""
    r_norm, spread, r_max = normalised_reward(log_base, reward)
    safe = jnp.where(spread > 0, spread, 1)
    x_norm = (x - r_max) / safe

    def mean_at(u):  # u ∈ (-1, 1) ↦ λ̃ = u / (1 - |u|), increasing
        return _tilted_mean(log_base, r_norm, u / (1 - jnp.abs(u)))

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        above = mean_at(mid) > x_norm
        return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

    one = jnp.ones((), log_base.dtype)
    lo, hi = jax.lax.fori_loop(0, num_bisection_steps(log_base.dtype), body, (-one, one))
    u = 0.5 * (lo + hi)
    return u / (1 - jnp.abs(u)), r_norm, spread


@jax.jit  # a whole solver with a static iteration count
def _legendre(log_base, reward, x):
    on = on_support(log_base)
    r_max = jnp.max(jnp.where(on, reward, -jnp.inf))
    r_min = jnp.min(jnp.where(on, reward, jnp.inf))
    lam_norm, r_norm, _ = _solve_tilt_for_mean(log_base, reward, x)
    interior = kl_unchecked(tilt_unchecked(log_base, r_norm, lam_norm), log_base)
    at_max = max_kl_unchecked(log_base, reward)
    at_min = max_kl_unchecked(log_base, -reward)
    inf = jnp.asarray(jnp.inf, log_base.dtype)
    out = jnp.where((x > r_min) & (x < r_max), interior, inf)
    out = jnp.where(x == r_max, at_max, out)
    return jnp.where(x == r_min, at_min, out)


def rate_function(
    log_base: ArrayLike, reward: ArrayLike, lam: ArrayLike, x: ArrayLike
) -> Float[Array, ""]:
    r"""LDP rate of :math:`R/m` under :math:`\phi_\lambda^{\otimes m}`.

    :math:`I(x) = \Lambda^*(x) - \lambda x + \Lambda(\lambda)`, zero at the tilted mean
    :math:`x = \Lambda'(\lambda)`.
    """
    log_base, reward = check_log_base_and_reward(log_base, reward)
    lam = jnp.asarray(lam, log_base.dtype)
    x = jnp.asarray(x, log_base.dtype)
    return _legendre(log_base, reward, x) - lam * x + _log_mgf(log_base, reward, lam)


def scaled_cumulant(
    log_base: ArrayLike, reward: ArrayLike, lam: ArrayLike, t: ArrayLike
) -> Float[Array, ""]:
    r"""Scaled cumulant generating function of R under the tilt.

    :math:`\frac1m \log\mathbb{E}_{\phi_\lambda^{\otimes m}} e^{tR} = \Lambda(\lambda+t) -
    \Lambda(\lambda)`, exact for every m in the memoryless model (hence also the limit).
    """
    log_base, reward = check_log_base_and_reward(log_base, reward)
    lam = jnp.asarray(lam, log_base.dtype)
    t = jnp.asarray(t, log_base.dtype)
    return _log_mgf(log_base, reward, lam + t) - _log_mgf(log_base, reward, lam)


def kl_rl_reward_per_token(
    log_base: ArrayLike, reward: ArrayLike, kl_per_token: ArrayLike
) -> Float[Array, ""]:
    r"""Per-token reward of the KL-RL optimum with budget :math:`m\delta` (independent of m)."""
    log_base, reward = check_log_base_and_reward(log_base, reward)
    log_phi, _ = kl_constrained_policy(log_base, reward, kl_per_token)
    return jnp.sum(jnp.where(on_support(log_phi), jnp.exp(log_phi) * reward, 0))


def best_of_n_limit_per_token(
    log_base: ArrayLike, reward: ArrayLike, kl_per_token: ArrayLike
) -> Float[Array, ""]:
    r"""The limit :math:`x^*` of :math:`\frac1m\mathbb{E}_{BoN}R` for :math:`N = e^{m\delta}`:
    the root of :math:`\Lambda^*(x^*) = \delta` above the mean (equal to
    :func:`kl_rl_reward_per_token`, computed here through Λ* independently)."""
    log_base, reward = check_log_base_and_reward(log_base, reward)
    _checks.check_nonnegative("kl_per_token", kl_per_token)
    return _bon_limit(log_base, reward, jnp.asarray(kl_per_token, log_base.dtype))


@jax.jit
def _bon_limit(log_base, reward, delta):
    on = on_support(log_base)
    r_max = jnp.max(jnp.where(on, reward, -jnp.inf))
    mean = jnp.sum(jnp.where(on, jnp.exp(log_base) * reward, 0))

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        over = _legendre(log_base, reward, mid) > delta
        return jnp.where(over, lo, mid), jnp.where(over, mid, hi)

    lo, hi = jax.lax.fori_loop(0, num_bisection_steps(log_base.dtype), body, (mean, r_max))
    return jnp.where(delta >= max_kl_unchecked(log_base, reward), r_max, 0.5 * (lo + hi))


# ---------------------------------------------------------------------------------------------
# Exact sequence-level laws by log-domain convolution.


def _lattice(reward: np.ndarray, support: np.ndarray, step: float | None) -> tuple[float, float]:
    r = reward[support]
    r_min = float(r.min())
    offsets = r - r_min
    if step is None:
        diffs = np.unique(offsets[offsets > 0])
        if diffs.size == 0:
            return r_min, 1.0
        step = float(diffs.min())
        # The lattice step is the gcd of the offsets; search divisors of the smallest one.
        for d in range(1, 101):
            cand = step / d
            k = offsets / cand
            if np.allclose(k, np.round(k), rtol=0, atol=1e-9 * max(1.0, float(k.max()))):
                return r_min, cand
        raise ValueError(
            f"reward values {np.unique(r)} do not lie on a lattice r_min + k*h with a detectable "
            "step; pass lattice_step=h explicitly"
        )
    if step <= 0:
        raise ValueError(f"lattice_step must be > 0, got {step}")
    k = offsets / step
    if not np.allclose(k, np.round(k), rtol=0, atol=1e-6 * max(1.0, float(k.max()))):
        raise ValueError(
            f"reward values {np.unique(r)} are not on the lattice r_min + k*{step}; "
            "expected (reward - min) / lattice_step to be integers"
        )
    return r_min, float(step)


@functools.partial(jax.jit, static_argnums=(1,))
def _convolve_power(token_law: jax.Array, m: int) -> jax.Array:
    r"""log of the m-fold convolution of a log-law on {0..L-1}, length m(L-1)+1."""
    width = token_law.shape[0]
    size = m * (width - 1) + 1
    neg = jnp.full((size,), -jnp.inf, token_law.dtype)
    start = neg.at[0].set(0.0)

    def step(law, _):
        shifted = [
            jnp.concatenate([jnp.full((j,), -jnp.inf, law.dtype), law[: size - j]]) + token_law[j]
            for j in range(width)
        ]
        return jax.nn.logsumexp(jnp.stack(shifted), axis=0), None

    law, _ = jax.lax.scan(step, start, None, length=m)
    return law


def sequence_reward_law(
    log_base: ArrayLike, reward: ArrayLike, m: int, *, lattice_step: float | None = None
) -> tuple[Float[Array, values], Float[Array, values]]:
    r"""Exact law of :math:`R = \sum_{i\le m} r(y_i)` for i.i.d. tokens from ``p``.

    Runs on the host to find the reward lattice (shapes must be static), then a jitted
    log-domain convolution (``lax.scan`` over m, O(m² L) work for a lattice of L per-token
    values) that does not underflow for m in the thousands.

    Args:
      log_base: ``[K]`` per-token base log-probabilities.
      reward: ``[K]`` per-token rewards on a lattice ``r_min + k h`` (over the support).
      m: sequence length ≥ 1.
      lattice_step: ``h``; inferred when None.

    Returns:
      ``(values [m(L-1)+1], log_probs [m(L-1)+1])``; unreachable values have log-prob -inf.
    """
    log_base, reward = check_log_base_and_reward(log_base, reward)
    if not isinstance(m, int | np.integer) or m < 1:
        raise ValueError(f"m must be an integer >= 1, got {m!r}")
    lp, r = np.asarray(log_base), np.asarray(reward)
    support = np.isfinite(lp)
    r_min, h = _lattice(r, support, lattice_step)
    idx = np.where(support, np.round((r - r_min) / h), 0).astype(np.int32)
    width = int(idx[support].max()) + 1
    token_law = segment_logsumexp(
        jnp.where(jnp.asarray(support), log_base, -jnp.inf), jnp.asarray(idx), width
    )
    law = _convolve_power(token_law, int(m))
    values = m * r_min + h * jnp.arange(law.shape[0], dtype=log_base.dtype)
    return values, law


def best_of_n_sequence(
    log_base: ArrayLike,
    reward: ArrayLike,
    m: int,
    n: ArrayLike,
    *,
    lattice_step: float | None = None,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    r"""Exact expected reward and KL of best-of-N over i.i.d. sequences of length m.

    Best-of-N selects by R only, so (ties uniform) its law over sequences is
    :math:`p(y^m)/q(R)\,[G(R)^N - G^-(R)^N]` and both the expected reward and
    :math:`\mathrm{KL}(\pi_N\|p^{\otimes m})` reduce to the law of R (the within-tie
    factors cancel). Exact for any real N ≥ 1, including :math:`N = e^{m\delta}`.

    Returns:
      ``(E_{π_N} R, KL(π_N ‖ p^{⊗m}))`` — divide by m for per-token values.
    """
    _checks.check_at_least("n", n, 1)
    values, law = sequence_reward_law(log_base, reward, m, lattice_step=lattice_step)
    return _bon_on_law(law, values, jnp.asarray(n, law.dtype))


@jax.jit
def _bon_on_law(law, values, n):
    log_bon = best_of_n_unchecked(law, values, n)
    on = on_support(log_bon)
    return jnp.sum(jnp.where(on, jnp.exp(log_bon) * values, 0)), kl_unchecked(log_bon, law)


def bon_vs_kl_rl_per_token(
    log_base: ArrayLike,
    reward: ArrayLike,
    kl_per_token: float,
    lengths: list[int],
    *,
    lattice_step: float | None = None,
) -> dict[str, np.ndarray]:
    r"""Per-token BoN reward at :math:`N = e^{m\delta}` for each m, next to KL-RL and x*.

    Returns a dict of numpy arrays: ``m``, ``log_n``, ``bon_reward``, ``bon_kl`` (per token),
    and scalars ``kl_rl_reward`` and ``x_star`` (broadcast to the length of ``m``).
    """
    _checks.check_nonnegative("kl_per_token", kl_per_token)
    rows = {"m": [], "log_n": [], "bon_reward": [], "bon_kl": []}
    for m in lengths:
        log_n = m * float(kl_per_token)
        r_bon, kl_bon = best_of_n_sequence(
            log_base, reward, m, math.exp(log_n), lattice_step=lattice_step
        )
        rows["m"].append(m)
        rows["log_n"].append(log_n)
        rows["bon_reward"].append(float(r_bon) / m)
        rows["bon_kl"].append(float(kl_bon) / m)
    out = {k: np.asarray(v) for k, v in rows.items()}
    x_rl = float(kl_rl_reward_per_token(log_base, reward, kl_per_token))
    x_star = float(best_of_n_limit_per_token(log_base, reward, kl_per_token))
    out["kl_rl_reward"] = np.full(len(lengths), x_rl)
    out["x_star"] = np.full(len(lengths), x_star)
    return out
