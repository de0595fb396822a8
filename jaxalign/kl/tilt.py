r"""The KL-constrained RL optimum: the exponential tilt of the base policy.

For a base policy ``p`` over a finite response set and a reward ``r``, the problem

.. math::

    \max_\phi \; \mathbb{E}_\phi[r] \quad \text{s.t.} \quad \mathrm{KL}(\phi \| p) \le \Delta

is solved by the tilt :math:`\phi_\lambda(y) = p(y) e^{\lambda r(y) - \Lambda(\lambda)}` with
:math:`\Lambda(\lambda) = \log \mathbb{E}_p e^{\lambda r}` and :math:`\beta = 1/\lambda`, where
:math:`\lambda` solves :math:`\mathrm{KL}(\phi_\lambda\|p) = \lambda\Lambda'(\lambda) -
\Lambda(\lambda) = \Delta`. The left side increases in :math:`\lambda` (its derivative is
:math:`\lambda \mathrm{Var}_{\phi_\lambda} r`) up to :math:`-\log p(\arg\max r)`.

References:
  Yang, Salamatian, Sun, Suresh, Beirami, "Asymptotics of Language Model Alignment", 2024.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks

Vec = Float[Array, "responses"]


def check_log_base_and_reward(
    log_base: ArrayLike, reward: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """Validated ``[K]`` log-probabilities and rewards in one float dtype.

    The functions of this module without a leading underscore but outside
    ``jaxalign.kl.__all__`` (``on_support``, ``kl_unchecked``, ``tilt_unchecked``, …) are
    the package's unchecked kernels: the sibling modules call them on inputs this
    function has validated.
    """
    log_base = _checks.as_float_array("log_base", log_base, ndim=1)
    reward = _checks.as_float_array("reward", reward, ndim=1)
    _checks.check_nonempty("log_base", log_base)
    _checks.check_same_shape(("log_base", "reward"), log_base, reward)
    _checks.check_log_probs("log_base", log_base)
    _checks.check_finite("reward", reward)
    dtype = jnp.result_type(log_base.dtype, reward.dtype)
    return log_base.astype(dtype), reward.astype(dtype)


def on_support(log_p: jax.Array) -> jax.Array:
    return log_p > -jnp.inf


def _xlogy_terms(log_p: jax.Array, values: jax.Array) -> jax.Array:
    r"""p * values with the convention 0 * anything = 0 (no NaN from -inf * 0)."""
    return jnp.where(on_support(log_p), jnp.exp(log_p) * jnp.where(on_support(log_p), values, 0), 0)


def log_mgf(log_base: ArrayLike, reward: ArrayLike, lam: ArrayLike) -> Float[Array, ""]:
    r"""Log moment-generating function of the reward under the base policy.

    .. math:: \Lambda(\lambda) = \log \sum_y p(y) e^{\lambda r(y)}

    Args:
      log_base: ``[K]`` log-probabilities of the base policy ``p``.
      reward: ``[K]`` rewards.
      lam: scalar tilt parameter :math:`\lambda` (any sign).

    Returns:
      Scalar :math:`\Lambda(\lambda)`.
    """
    log_base, reward = check_log_base_and_reward(log_base, reward)
    lam = jnp.asarray(lam, log_base.dtype)
    return jax.nn.logsumexp(jnp.where(on_support(log_base), log_base + lam * reward, -jnp.inf))


def tilted_policy(log_base: ArrayLike, reward: ArrayLike, beta: ArrayLike) -> Vec:
    r"""Log-probabilities of the exponential tilt :math:`\phi \propto p\, e^{r/\beta}`.

    The unique maximiser of :math:`\mathbb{E}_\phi r - \beta\,\mathrm{KL}(\phi\|p)` (Gibbs
    variational principle): the KL-regularised RL optimum with temperature ``beta``.

    Args:
      log_base: ``[K]`` log-probabilities of the base policy ``p``.
      reward: ``[K]`` finite rewards.
      beta: KL coefficient, ``> 0``.

    Returns:
      ``[K]`` log-probabilities of the tilted policy (``-inf`` outside the support of ``p``).

    Example:
      >>> import jax.numpy as jnp
      >>> logp = tilted_policy(jnp.log(jnp.array([0.5, 0.5])), jnp.array([0.0, 1.0]), 1.0)
    """
    log_base, reward = check_log_base_and_reward(log_base, reward)
    _checks.check_positive("beta", beta)
    beta = jnp.asarray(beta, log_base.dtype)
    return tilt_unchecked(log_base, reward, 1.0 / beta)


def tilt_unchecked(log_base: jax.Array, reward: jax.Array, lam: jax.Array) -> jax.Array:
    logits = jnp.where(on_support(log_base), log_base + lam * reward, -jnp.inf)
    return logits - jax.nn.logsumexp(logits)


def kl_divergence(log_p: ArrayLike, log_q: ArrayLike) -> Float[Array, ""]:
    r"""Exact :math:`\mathrm{KL}(p\|q) = \sum_y p(y)\log(p(y)/q(y))` from log-probabilities.

    Terms with ``p(y) = 0`` contribute 0; ``p(y) > 0 = q(y)`` gives ``+inf``.

    Args:
      log_p: ``[K]`` log-probabilities of ``p``.
      log_q: ``[K]`` log-probabilities of ``q``.
    """
    log_p = _checks.as_float_array("log_p", log_p, ndim=1)
    log_q = _checks.as_float_array("log_q", log_q, ndim=1)
    _checks.check_same_shape(("log_p", "log_q"), log_p, log_q)
    _checks.check_log_probs("log_p", log_p)
    _checks.check_log_probs("log_q", log_q)
    dtype = jnp.result_type(log_p.dtype, log_q.dtype)
    log_p, log_q = log_p.astype(dtype), log_q.astype(dtype)
    return kl_unchecked(log_p, log_q)


@jax.jit
def kl_unchecked(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    on = on_support(log_p)
    diff = jnp.where(on, log_p - jnp.where(on, log_q, 0), 0)
    return jnp.sum(jnp.where(on, jnp.exp(log_p) * diff, 0))


def expected_reward(log_policy: ArrayLike, reward: ArrayLike) -> Float[Array, ""]:
    r""":math:`\mathbb{E}_\pi r` for ``[K]`` log-probabilities and ``[K]`` rewards."""
    log_policy, reward = check_log_base_and_reward(log_policy, reward)
    return jnp.sum(_xlogy_terms(log_policy, reward))


def win_rate(log_p: ArrayLike, log_q: ArrayLike, reward: ArrayLike) -> Float[Array, ""]:
    r"""Probability that a draw from ``p`` beats a draw from ``q`` on ``reward`` (ties count ½).

    .. math:: \Pr_{y\sim p, y'\sim q}[r(y) > r(y')] + \tfrac12 \Pr[r(y) = r(y')]
    """
    log_p, reward = check_log_base_and_reward(log_p, reward)
    log_q, _ = check_log_base_and_reward(log_q, reward)
    p, q = jnp.exp(log_p), jnp.exp(log_q)
    gt = (reward[:, None] > reward[None, :]).astype(p.dtype)
    eq = (reward[:, None] == reward[None, :]).astype(p.dtype)
    return p @ (gt + 0.5 * eq) @ q


class RewardKL(NamedTuple):
    """A point of the reward–KL plane."""

    reward: jax.Array  # E_π r, scalar (or [B] when batched)
    kl: jax.Array  # KL(π‖p), scalar (or [B])


def reward_and_kl(log_policy: ArrayLike, log_base: ArrayLike, reward: ArrayLike) -> RewardKL:
    r"""The two coordinates of the reward–KL frontier: :math:`(\mathbb{E}_\pi r, KL(\pi\|p))`."""
    return RewardKL(expected_reward(log_policy, reward), kl_divergence(log_policy, log_base))


# ---------------------------------------------------------------------------------------------
# The budget solver.


def num_bisection_steps(dtype) -> int:
    # Enough halvings of the compactified parameter u ∈ [0, 1) to reach the dtype's resolution.
    return 64 if jnp.finfo(dtype).bits <= 32 else 128


def normalised_reward(log_base: jax.Array, reward: jax.Array):
    r"""Rewards mapped to [-1, 0] on the support (max ↦ 0), with the scale used."""
    on = on_support(log_base)
    r_max = jnp.max(jnp.where(on, reward, -jnp.inf))
    r_min = jnp.min(jnp.where(on, reward, jnp.inf))
    spread = r_max - r_min
    safe = jnp.where(spread > 0, spread, 1)
    return jnp.where(on, (reward - r_max) / safe, 0), spread, r_max


def kl_of_tilt(log_base: jax.Array, reward: jax.Array, lam: jax.Array) -> jax.Array:
    r""":math:`\mathrm{KL}(\phi_\lambda\|p)` computed without cancellation at large λ."""
    log_phi = tilt_unchecked(log_base, reward, lam)
    return kl_unchecked(log_phi, log_base)


def max_kl(log_base: ArrayLike, reward: ArrayLike) -> Float[Array, ""]:
    r"""The largest useful budget :math:`-\log p(\arg\max_y r)` (KL of the argmax restriction)."""
    log_base, reward = check_log_base_and_reward(log_base, reward)
    return max_kl_unchecked(log_base, reward)


def _argmax_restriction(log_base: jax.Array, reward: jax.Array) -> jax.Array:
    on = on_support(log_base)
    r_max = jnp.max(jnp.where(on, reward, -jnp.inf))
    top = on & (reward == r_max)
    masked = jnp.where(top, log_base, -jnp.inf)
    return masked - jax.nn.logsumexp(masked)


def max_kl_unchecked(log_base: jax.Array, reward: jax.Array) -> jax.Array:
    on = on_support(log_base)
    r_max = jnp.max(jnp.where(on, reward, -jnp.inf))
    top = on & (reward == r_max)
    log_top = jax.nn.logsumexp(jnp.where(top, log_base, -jnp.inf))
    log_rest = jax.nn.logsumexp(jnp.where(on & ~top, log_base, -jnp.inf))
    # -log p(top) from the smaller of p(top) and p(rest): a log-sum-exp over (nearly) all of
    # a normalised p rounds to ±1e-16, and a constant reward must give exactly 0 — a
    # negative budget is rejected, a positive one is "binding" with no reward spread (NaN).
    half = jnp.log(jnp.asarray(0.5, log_rest.dtype))
    return jnp.where(log_rest < half, 0.0 - jnp.log1p(-jnp.exp(log_rest)), -log_top)


def kl_constrained_policy(
    log_base: ArrayLike, reward: ArrayLike, kl_budget: ArrayLike
) -> tuple[Vec, Float[Array, ""]]:
    r"""The KL-constrained RL optimum for a KL budget Δ, and its temperature β.

    Solves :math:`\max_\phi \mathbb{E}_\phi r` s.t. :math:`\mathrm{KL}(\phi\|p)\le\Delta`.
    The solution is the tilt :math:`\phi_\lambda` with :math:`\mathrm{KL}(\phi_\lambda\|p) =
    \Delta`; λ is found by bisection on the compactified parameter ``u = λ̃/(1+λ̃)`` (λ̃ = λ times
    the reward spread) to the dtype's resolution, which is monotone and therefore safe for
    near-degenerate ``p`` and reward ties. Jittable and vmappable.

    Conventions for ``beta``:
      * ``beta = inf`` when ``kl_budget == 0`` (the solution is ``p`` itself);
      * ``beta = 0`` when the budget is **not binding**, i.e. ``kl_budget >=``
        :func:`max_kl` ``= -log p(argmax r)``: the solution is then the reward-maximising
        restriction of ``p`` (``p`` conditioned on the argmax set), the β → 0 limit of the tilt.
        This includes the case of a reward that is constant on the support of ``p``.

    Args:
      log_base: ``[K]`` log-probabilities of the base policy ``p``.
      reward: ``[K]`` finite rewards.
      kl_budget: Δ ≥ 0.

    Returns:
      ``(log_probs [K], beta)``.

    References:
      Yang et al., "Asymptotics of Language Model Alignment", 2024 (the tilt as the optimum).
    """
    log_base, reward = check_log_base_and_reward(log_base, reward)
    _checks.check_nonnegative("kl_budget", kl_budget)
    return kl_constrained_unchecked(log_base, reward, jnp.asarray(kl_budget, log_base.dtype))


@jax.jit  # a whole solver with a static iteration count: compiled once per shape/dtype
def kl_constrained_unchecked(log_base: jax.Array, reward: jax.Array, budget: jax.Array):
    r_norm, spread, _ = normalised_reward(log_base, reward)
    kl_top = max_kl_unchecked(log_base, reward)
    binding = budget < kl_top

    def kl_at(u):
        lam = u / (1 - u)
        return kl_of_tilt(log_base, r_norm, lam)

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        too_far = kl_at(mid) > budget
        return jnp.where(too_far, lo, mid), jnp.where(too_far, mid, hi)

    zero, one = jnp.zeros((), log_base.dtype), jnp.ones((), log_base.dtype)
    lo, hi = jax.lax.fori_loop(0, num_bisection_steps(log_base.dtype), body, (zero, one))
    # Pick the bracket end whose KL is closest to the budget.
    pick_lo = jnp.abs(kl_at(lo) - budget) <= jnp.abs(kl_at(hi) - budget)
    u = jnp.where(pick_lo, lo, hi)
    lam_norm = u / (1 - u)
    tilt = tilt_unchecked(log_base, r_norm, lam_norm)
    log_probs = jnp.where(binding, tilt, _argmax_restriction(log_base, reward))
    safe_spread = jnp.where(spread > 0, spread, 1)
    no_budget = budget <= 0
    log_probs = jnp.where(no_budget & binding, log_base, log_probs)
    beta = jnp.where(
        binding,
        jnp.where((lam_norm > 0) & ~no_budget, safe_spread / lam_norm, jnp.inf),
        jnp.zeros((), log_base.dtype),
    )
    return log_probs, beta


def reward_kl_frontier(log_base: ArrayLike, reward: ArrayLike, kl_budgets: ArrayLike) -> RewardKL:
    r"""The exact reward–KL frontier :math:`\Delta \mapsto \max_{KL\le\Delta}\mathbb{E} r`.

    Args:
      log_base: ``[K]`` base log-probabilities.
      reward: ``[K]`` rewards.
      kl_budgets: ``[B]`` budgets.

    Returns:
      ``RewardKL(reward [B], kl [B])`` of the optimal policies (kl = min(Δ, max_kl)).
    """
    log_base, reward = check_log_base_and_reward(log_base, reward)
    budgets = _checks.as_float_array("kl_budgets", kl_budgets, ndim=1)
    _checks.check_nonnegative("kl_budgets", budgets)

    def one(delta):
        log_phi, _ = kl_constrained_policy(log_base, reward, delta)
        return RewardKL(jnp.sum(_xlogy_terms(log_phi, reward)), kl_unchecked(log_phi, log_base))

    return jax.vmap(one)(budgets.astype(log_base.dtype))
