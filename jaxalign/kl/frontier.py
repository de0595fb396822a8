r"""The exact win-rate–KL frontier of a preference, and the IPO targets online and offline.

Alignment against a preference oracle ``P(y ≻ y')`` (any ``[K, K]`` preference game, not
only Bradley–Terry) is judged by the win rate against the reference policy at a KL budget,

.. math::

    W(\pi) = \sum_{y, z} \pi(y)\, P(y \succ z)\, \pi_{\rm ref}(z) = \mathbb{E}_{y\sim\pi} C(y),
    \qquad C(y) = P(y \succ \pi_{\rm ref}),

which is *linear* in ``π`` with gradient the calibrated reward ``C`` (for a Bradley–Terry
oracle ``C`` is a strictly increasing, non-affine function of the reward). Maximising a
linear functional under ``KL(π‖π_ref) ≤ Δ`` is KL-constrained RL with reward ``C``, so

.. math::

    F(\Delta) = \max_{\mathrm{KL}(\pi\|\pi_{\rm ref}) \le \Delta} W(\pi)
              = W(\pi_\beta), \qquad \pi_\beta \propto \pi_{\rm ref}\, e^{C/\beta},
    \quad \mathrm{KL}(\pi_\beta\|\pi_{\rm ref}) = \Delta,

(Lagrangian duality for a linear objective over the simplex; ``β → 0`` past the budget
``−log π_ref(argmax C)``). ``F`` is concave and non-decreasing, and *every* policy obeys
``W(π) ≤ F(KL(π‖π_ref))`` (:func:`frontier_gap` ``≥ 0``). The raw-reward tilt
``π_ref e^{r/β}`` is on this frontier only when ``r`` is affine in ``C`` on the support.

IPO with pairs ``(y, y') ~ μ ⊗ μ``, the winner drawn from ``P`` and loss
``(h − 1/(2τ))²``, ``h = log π/π_ref(y_w) − log π/π_ref(y_l)``, has (for a tabular policy on
the support of ``μ``) the population minimiser

.. math::

    \pi^{\rm off}_\tau \propto \pi_{\rm ref}\, e^{P(y \succ \mu)/\tau}

(the first-order condition of the symmetric least squares
``E_{μ⊗μ}[(h(y,y') − (P(y≻y') − ½)/τ)²]``: ``f(y) − E_μ f = (P(y ≻ μ) − ½)/τ``). With
``μ = π_ref`` it is the frontier policy at ``β = τ``: population offline IPO from the
reference is *win-rate optimal*. Online IPO draws the pairs from the current policy
(stop-gradient), and its fixed point is ``π ∝ π_ref e^{P(y ≻ π)/τ}``, the KL-regularised
Nash equilibrium (:func:`jaxalign.games.nash_equilibrium`): not on the frontier in general.
On a tabular, full-coverage problem the online–offline gap can therefore only come from
finite data, coverage and function approximation, which is what the study measures.

References:
  Tang, Guo, Zheng, Calandriello, Cao, Tarassov, Munos, Ávila Pires, Valko, Cheng, Dabney,
  "Understanding the performance gap between online and offline alignment algorithms",
  2024 (arXiv 2405.08448).
  Azar et al., "A general theoretical paradigm to understand learning from human
  preferences" (IPO), AISTATS 2024.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from jaxalign import _checks
from jaxalign.kl.tilt import kl_constrained_unchecked, kl_unchecked, on_support

if TYPE_CHECKING:  # games imports kl at package level: no runtime import (cycle)
    from jaxalign.games import PreferenceGame

Vec = Float[Array, "responses"]


def _check_game(game) -> jax.Array:
    """The ``[K, K]`` preference matrix of ``game`` (``P + Pᵀ = 1``, entries in [0, 1])."""
    if not hasattr(game, "preference"):
        raise ValueError(f"game must be a PreferenceGame, got {type(game).__name__}")
    p = _checks.as_float_array("game.preference", game.preference, ndim=2)
    if p.shape[0] != p.shape[1] or p.shape[0] == 0:
        raise ValueError(f"game.preference must be a non-empty square matrix, got {p.shape}")
    if _checks.is_concrete(p):
        a = np.asarray(p, dtype=np.float64)
        tol = 1e-9 if a.dtype == p.dtype and p.dtype == jnp.float64 else 1e-5
        if not np.isfinite(a).all() or a.min() < -tol or a.max() > 1 + tol:
            raise ValueError("game.preference entries must be finite and lie in [0, 1]")
        err = float(np.abs(a + a.T - 1).max())
        if err > tol:
            raise ValueError(f"game.preference must satisfy P + Pᵀ = 1; max violation {err:.3g}")
    return p


class WinRateKL(NamedTuple):
    """A point (or ``[B]`` points) of the win-rate–KL plane."""

    win_rate: jax.Array  # W(π) against π_ref, scalar or [B]
    kl: jax.Array  # KL(π‖π_ref), scalar or [B]


def _checked(game: "PreferenceGame", **log_probs: ArrayLike):
    """The preference matrix and each named ``[K]`` log-probability vector, one dtype."""
    p = _check_game(game)
    out = []
    for name, lp in log_probs.items():
        lp = _checks.as_float_array(name, lp, ndim=1)
        if lp.shape != (p.shape[0],):
            raise ValueError(
                f"{name} must have shape ({p.shape[0]},) (one entry per response of the "
                f"game), got {lp.shape}"
            )
        _checks.check_log_probs(name, lp)
        out.append(lp)
    dtype = jnp.result_type(p.dtype, *[x.dtype for x in out])
    return p.astype(dtype), [x.astype(dtype) for x in out]


def _probs(log_p: jax.Array) -> jax.Array:
    return jnp.where(on_support(log_p), jnp.exp(log_p), 0)


def preference_calibrated_reward(game: "PreferenceGame", log_ref: ArrayLike) -> Vec:
    r"""The calibrated reward of a preference: :math:`C(y) = P(y \succ \pi_{\rm ref})`.

    .. math:: C(y) = \sum_z P(y \succ z)\, \pi_{\rm ref}(z)

    :math:`\mathbb{E}_{\pi_{\rm ref}} C = \tfrac12` for every game (``P + Pᵀ = 1``). For a
    Bradley–Terry game and a reward without ties it is strictly increasing in the reward.

    Args:
      game: ``[K, K]`` preference game.
      log_ref: ``[K]`` reference log-probabilities.

    Returns:
      ``[K]`` values in ``[0, 1]``.
    """
    p, (log_ref,) = _checked(game, log_ref=log_ref)
    return p @ _probs(log_ref)


def preference_win_rate(
    game: "PreferenceGame", log_policy: ArrayLike, log_opponent: ArrayLike
) -> Float[Array, ""]:
    r"""Exact win rate :math:`\pi^\top P \pi' = \Pr_{y\sim\pi, y'\sim\pi'}(y \succ y')`.

    ``W(π, π') + W(π', π) = 1`` and ``W(π, π) = ½`` for every game.

    Args:
      game: ``[K, K]`` preference game.
      log_policy: ``[K]`` log-probabilities of ``π``.
      log_opponent: ``[K]`` log-probabilities of ``π'`` (e.g. ``π_ref``).
    """
    p, (lp, lo) = _checked(game, log_policy=log_policy, log_opponent=log_opponent)
    return _probs(lp) @ p @ _probs(lo)


def win_rate_frontier(
    game: "PreferenceGame", log_ref: ArrayLike, kl_budgets: Float[ArrayLike, "B"]
) -> WinRateKL:
    r"""The exact frontier :math:`\Delta \mapsto \max_{\mathrm{KL}(\pi\|\pi_{\rm ref})\le\Delta}
    W(\pi)`, attained by :math:`\pi_{\rm ref} e^{C/\beta}` (module docstring).

    Args:
      game: ``[K, K]`` preference game.
      log_ref: ``[K]`` reference log-probabilities.
      kl_budgets: ``[B]`` budgets Δ ≥ 0.

    Returns:
      ``WinRateKL(win_rate [B], kl [B])`` of the optimal policies
      (``kl = min(Δ, −log π_ref(argmax C))``).

    Example:
      >>> from jaxalign.games import bradley_terry_game
      >>> game = bradley_terry_game(jnp.array([0.0, 1.0, 3.0]))
      >>> w = win_rate_frontier(game, jnp.log(jnp.ones(3) / 3), jnp.array([0.0, 0.1]))
      >>> # w.win_rate[0] == 0.5
    """
    p, (log_ref,) = _checked(game, log_ref=log_ref)
    budgets = _checks.as_float_array("kl_budgets", kl_budgets, ndim=1)
    _checks.check_nonnegative("kl_budgets", budgets)
    return _frontier(p, log_ref, budgets.astype(log_ref.dtype))


@jax.jit
def _frontier(p: jax.Array, log_ref: jax.Array, budgets: jax.Array) -> WinRateKL:
    calibrated = p @ _probs(log_ref)

    def one(delta):
        log_phi, _ = kl_constrained_unchecked(log_ref, calibrated, delta)
        return WinRateKL(_probs(log_phi) @ calibrated, kl_unchecked(log_phi, log_ref))

    return jax.vmap(one)(budgets)


def frontier_gap(
    game: "PreferenceGame", log_policy: ArrayLike, log_ref: ArrayLike
) -> Float[Array, ""]:
    r"""How far ``π`` lies below the frontier at its own KL: :math:`F(\mathrm{KL}(\pi\|\pi_{\rm
    ref})) - W(\pi) \ge 0`.

    Zero exactly on the Gibbs policies :math:`\pi_{\rm ref} e^{C/\beta}`; a negative value
    (beyond rounding, ~1e-12 in float64) would contradict the frontier. Vmap over policies
    for a batch.

    Args:
      game: ``[K, K]`` preference game.
      log_policy: ``[K]`` log-probabilities of ``π``.
      log_ref: ``[K]`` reference log-probabilities.
    """
    p, (lp, log_ref) = _checked(game, log_policy=log_policy, log_ref=log_ref)
    return _gap(p, lp, log_ref)


@jax.jit
def _gap(p: jax.Array, log_policy: jax.Array, log_ref: jax.Array) -> jax.Array:
    calibrated = p @ _probs(log_ref)
    kl = kl_unchecked(log_policy, log_ref)
    log_phi, _ = kl_constrained_unchecked(log_ref, calibrated, kl)
    return (_probs(log_phi) - _probs(log_policy)) @ calibrated


def offline_ipo_target(
    game: "PreferenceGame",
    log_ref: ArrayLike,
    tau: float,
    log_behaviour: ArrayLike | None = None,
) -> Vec:
    r"""Population minimiser of IPO on pairs from ``μ ⊗ μ``: :math:`\pi \propto \pi_{\rm ref}
    e^{P(y \succ \mu)/\tau}`.

    Exact for a tabular policy when ``μ`` has full support (outside it the loss does not
    see ``π``). ``μ = π_ref`` (the default) gives the frontier policy at ``β = τ``.

    Args:
      game: ``[K, K]`` preference game (the labelling oracle).
      log_ref: ``[K]`` reference log-probabilities (the anchor of ``h``).
      tau: IPO's τ > 0 (target margin ``1/(2τ)``).
      log_behaviour: ``[K]`` log-probabilities of the pair distribution μ (default π_ref).

    Returns:
      ``[K]`` log-probabilities.
    """
    _checks.check_positive("tau", tau)
    if log_behaviour is None:
        log_behaviour = log_ref
    p, (log_ref, log_mu) = _checked(game, log_ref=log_ref, log_behaviour=log_behaviour)
    logits = log_ref + (p @ _probs(log_mu)) / tau
    return jax.nn.log_softmax(jnp.where(on_support(log_ref), logits, -jnp.inf))


def ipo_population_loss(
    game: "PreferenceGame",
    log_policy: ArrayLike,
    log_ref: ArrayLike,
    tau: float,
    log_behaviour: ArrayLike | None = None,
) -> Float[Array, ""]:
    r"""The expected IPO loss over pairs ``μ ⊗ μ`` and oracle labels.

    .. math::

        L(\pi) = \sum_{y, y'} \mu(y)\mu(y')\, P(y \succ y')
                 \Big(h(y, y') - \frac{1}{2\tau}\Big)^2,
        \quad h(y, y') = \log\frac{\pi(y)}{\pi_{\rm ref}(y)} - \log\frac{\pi(y')}{\pi_{\rm ref}(y')}

    ``μ = π_ref`` (default) is offline IPO; evaluated at ``μ = π`` with ``μ`` held fixed
    (stop-gradient) its gradient is the online IPO update direction.

    Args:
      game: ``[K, K]`` preference game.
      log_policy: ``[K]`` log-probabilities of π (full support on that of μ).
      log_ref: ``[K]`` reference log-probabilities.
      tau: τ > 0.
      log_behaviour: ``[K]`` pair distribution μ (default π_ref).
    """
    _checks.check_positive("tau", tau)
    if log_behaviour is None:
        log_behaviour = log_ref
    p, (lp, lr, lm) = _checked(
        game, log_policy=log_policy, log_ref=log_ref, log_behaviour=log_behaviour
    )
    mu = _probs(lm)
    f = jnp.where(mu > 0, lp - lr, 0)
    h = f[:, None] - f[None, :]
    return jnp.einsum("a,b,ab,ab->", mu, mu, p, (h - 0.5 / tau) ** 2)


def implicit_reward_accuracy(
    game: "PreferenceGame",
    log_policy: ArrayLike,
    log_ref: ArrayLike,
    pairs: Int[ArrayLike, "M 2"],
) -> Float[Array, ""]:
    r"""Expected pairwise accuracy of the implicit reward :math:`\log\pi/\pi_{\rm ref}` on
    ``M`` pairs, against oracle labels.

    .. math::

        \mathrm{acc} = \frac1M \sum_m P(a_m \succ b_m)\,\mathbb 1[h_m > 0]
          + P(b_m \succ a_m)\,\mathbb 1[h_m < 0] + \tfrac12\,\mathbb 1[h_m = 0]

    with :math:`h_m = \log\pi/\pi_{\rm ref}(a_m) - \log\pi/\pi_{\rm ref}(b_m)` (any positive
    scale β of the implicit reward gives the same signs). Exact in the labels: the
    expectation over the oracle's coin is taken in closed form.

    Args:
      game: ``[K, K]`` preference game.
      log_policy: ``[K]`` log-probabilities of π.
      log_ref: ``[K]`` reference log-probabilities.
      pairs: ``[M, 2]`` integer response indices ``(a_m, b_m)``.
    """
    p, (lp, lr) = _checked(game, log_policy=log_policy, log_ref=log_ref)
    pairs = jnp.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
        raise ValueError(f"pairs must have shape [M, 2] with M >= 1, got {pairs.shape}")
    if not jnp.issubdtype(pairs.dtype, jnp.integer):
        raise ValueError(f"pairs must hold integer response indices, got dtype {pairs.dtype}")
    if _checks.is_concrete(pairs) and (int(pairs.min()) < 0 or int(pairs.max()) >= p.shape[0]):
        raise ValueError(
            f"pairs must index responses in [0, {p.shape[0]}), got range "
            f"[{int(pairs.min())}, {int(pairs.max())}]"
        )
    return _accuracy(p, lp - lr, pairs)


@jax.jit
def _accuracy(p: jax.Array, implicit: jax.Array, pairs: jax.Array) -> jax.Array:
    a, b = pairs[:, 0], pairs[:, 1]
    h = implicit[a] - implicit[b]
    p_ab = p[a, b]
    return jnp.mean(jnp.where(h > 0, p_ab, jnp.where(h < 0, 1 - p_ab, 0.5)))
