r"""Preference games over a finite response set, and their constructors.

A **two-player preference game** is a matrix :math:`P` with
:math:`P(y, y') = \Pr(y \succ y') \in [0, 1]` and :math:`P + P^\top = 1` (so the
diagonal is ½). The game :math:`J(\pi_1, \pi_2) = \pi_1^\top P \pi_2` is symmetric and
constant-sum with value ½; its KL-regularised version subtracts
:math:`\tau\,\mathrm{KL}(\pi_1\|\pi_{\rm ref})` and adds
:math:`\tau\,\mathrm{KL}(\pi_2\|\pi_{\rm ref})`.

An **n-player preference game** is a tensor :math:`T[y_1, y_2, \dots, y_n] =
\Pr(y_1 \succ \{y_2, \dots, y_n\})` (the first response beats all the others),
symmetric in the opponents' axes; player :math:`i`'s payoff against opponents
:math:`\{\pi_j\}` is :math:`\mathbb{E}\, T[y_i, y_{-i}]` (MNPO's
:math:`P(y_i \succ \{y_j\}_{j\ne i})`). With :math:`n = 2` it is a two-player game.

Both are ``NamedTuple`` pytrees, so they batch with :func:`jax.vmap` (stack the fields
with a leading axis). Build them with the validating constructors below; the raw
``NamedTuple`` constructor does no checks.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.types import PRNGKey

# Tolerance on P + Pᵀ = 1, entries in [0, 1] and opponent symmetry, by dtype.
_TOL = {np.dtype("float16"): 1e-2, np.dtype("float32"): 1e-5, np.dtype("float64"): 1e-10}


class PreferenceGame(NamedTuple):
    """A two-player preference game.

    Attributes:
      preference: ``[K, K]`` matrix, ``preference[y, y'] = P(y ≻ y')``;
        ``P + Pᵀ = 1``, entries in ``[0, 1]``.
    """

    preference: Float[Array, "K K"]

    @property
    def num_responses(self) -> int:
        return self.preference.shape[-1]


class MultiplayerGame(NamedTuple):
    """An n-player preference game (one response against many).

    Attributes:
      payoff: ``[K] * n`` tensor, ``payoff[y1, y2, ..., yn] = P(y1 ≻ {y2, ..., yn})``,
        entries in ``[0, 1]``, symmetric under permutations of axes ``1..n-1``.
    """

    payoff: Float[Array, "..."]

    @property
    def num_players(self) -> int:
        return self.payoff.ndim

    @property
    def num_responses(self) -> int:
        return self.payoff.shape[-1]


def _tol(x) -> float:
    return _TOL.get(np.dtype(x.dtype), 1e-5)


def check_game(game: PreferenceGame, name: str = "game", *, tol: float | None = None) -> jax.Array:
    """Validates a two-player game; returns its preference matrix (shape checks always run).

    ``tol``: allowed violation of 0 ≤ P ≤ 1 and P + Pᵀ = 1 (default: from the dtype).
    """
    if not isinstance(game, PreferenceGame):
        raise ValueError(f"{name} must be a PreferenceGame, got {type(game).__name__}")
    p = _checks.as_float_array(f"{name}.preference", game.preference, ndim=2)
    if p.shape[0] != p.shape[1] or p.shape[0] == 0:
        raise ValueError(
            f"{name}.preference must be a non-empty square [K, K] matrix, got {p.shape}"
        )
    if _checks.is_concrete(p):
        a = np.asarray(p, dtype=np.float64)
        tol = _tol(p) if tol is None else tol
        if not np.isfinite(a).all() or a.min() < -tol or a.max() > 1 + tol:
            raise ValueError(
                f"{name}.preference entries must lie in [0, 1]; found min {a.min():.6g}, "
                f"max {a.max():.6g}"
            )
        err = np.abs(a + a.T - 1.0)
        if err.max() > tol:
            i, j = np.unravel_index(np.argmax(err), err.shape)
            raise ValueError(
                f"{name}.preference must satisfy P + Pᵀ = 1, i.e. P(a≻b) + P(b≻a) must be 1; "
                f"P[{i},{j}] + P[{j},{i}] = {a[i, j] + a[j, i]:.6g} (tolerance {tol})"
            )
    return p


def check_multiplayer_game(game: MultiplayerGame, name: str = "game") -> jax.Array:
    """Validates an n-player game; returns its payoff tensor."""
    if not isinstance(game, MultiplayerGame):
        raise ValueError(f"{name} must be a MultiplayerGame, got {type(game).__name__}")
    t = _checks.as_float_array(f"{name}.payoff", game.payoff)
    if t.ndim < 2 or len(set(t.shape)) != 1 or t.shape[0] == 0:
        raise ValueError(
            f"{name}.payoff must have n >= 2 equal non-empty axes [K] * n, got shape {t.shape}"
        )
    if _checks.is_concrete(t):
        a = np.asarray(t, dtype=np.float64)
        tol = _tol(t)
        if not np.isfinite(a).all() or a.min() < -tol or a.max() > 1 + tol:
            raise ValueError(
                f"{name}.payoff entries must lie in [0, 1]; found min {a.min():.6g}, "
                f"max {a.max():.6g}"
            )
        for ax in range(1, a.ndim - 1):
            err = np.abs(a - np.swapaxes(a, ax, ax + 1)).max()
            if err > tol:
                raise ValueError(
                    f"{name}.payoff must be symmetric in the opponents' axes; swapping axes "
                    f"{ax} and {ax + 1} changes it by {err:.3g}"
                )
    return t


# --------------------------------------------------------------------------- two players


def preference_game(preference: Float[ArrayLike, "K K"]) -> PreferenceGame:
    """A validated :class:`PreferenceGame` from a ``[K, K]`` preference matrix.

    Raises:
      ValueError: if ``preference`` is not square, has entries outside ``[0, 1]`` or
        violates ``P + Pᵀ = 1``.
    """
    game = PreferenceGame(_checks.as_float_array("preference", preference, ndim=2))
    check_game(game, "preference")
    return game


def bradley_terry_game(rewards: Float[ArrayLike, "K"]) -> PreferenceGame:
    r"""The transitive game of a Bradley–Terry model: :math:`P(y,y') = \sigma(r_y - r_{y'})`.

    Its Nash equilibrium (τ = 0) is any policy on :math:`\arg\max r`.
    """
    r = _checks.as_float_array("rewards", rewards, ndim=1)
    _checks.check_nonempty("rewards", r)
    _checks.check_finite("rewards", r)
    return PreferenceGame(jax.nn.sigmoid(r[:, None] - r[None, :]))


def _skew_sigmoid(a: jax.Array) -> jax.Array:
    """σ of the skew-symmetric part of ``a``: exactly P + Pᵀ = 1 and diag ½."""
    skew = (a - a.T) / jnp.asarray(2, a.dtype)
    return jax.nn.sigmoid(skew)


def random_game(
    num_responses: int, *, key: PRNGKey, scale: float = 2.0, dtype=None
) -> PreferenceGame:
    r"""A random general (typically non-transitive) preference game.

    :math:`P = \sigma(A)` with :math:`A` skew-symmetric, :math:`A_{ij} \sim
    \mathcal N(0, \text{scale}^2/2)` for :math:`i < j`.

    Args:
      num_responses: K ≥ 1.
      key: PRNG key.
      scale: spread of the logits; larger means more decisive preferences.
      dtype: float dtype (default: jax's default float).
    """
    if num_responses < 1:
        raise ValueError(f"num_responses must be >= 1, got {num_responses}")
    _checks.check_positive("scale", scale)
    dtype = dtype or jnp.result_type(float)
    a = jax.random.normal(key, (num_responses, num_responses), dtype) * jnp.asarray(scale, dtype)
    return PreferenceGame(_skew_sigmoid(a))


def cyclic_game(
    num_responses: int = 3,
    *,
    strength: float = 1.0,
    perturbation: float = 0.0,
    key: PRNGKey | None = None,
    dtype=None,
) -> PreferenceGame:
    r"""A Condorcet cycle: rock–paper–scissors generalised to K responses, optionally perturbed.

    Response :math:`i` beats :math:`j` when :math:`(j - i) \bmod K \in \{1, \dots,
    \lceil K/2\rceil - 1\}`: :math:`P(i, j) = \tfrac12 + \tfrac{\text{strength}}2
    s_{ij}` with :math:`s_{ij} \in \{-1, 0, 1\}` (ties at distance K/2 for even K).
    For odd K the unique Nash equilibrium is uniform. ``perturbation > 0`` adds a
    random skew-symmetric logit perturbation (needs ``key``), which moves the Nash away
    from uniform while keeping it full-support for small perturbations.

    Args:
      num_responses: K ≥ 2.
      strength: in ``(0, 1]``: how decisively each response beats the next.
      perturbation: standard deviation of the logit perturbation (≥ 0).
      key: PRNG key, required when ``perturbation > 0``.
    """
    k = int(num_responses)
    if k < 2:
        raise ValueError(f"num_responses must be >= 2 for a cycle, got {num_responses}")
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    _checks.check_nonnegative("perturbation", perturbation)
    if perturbation > 0 and key is None:
        raise ValueError("cyclic_game with perturbation > 0 needs a PRNG key=")
    dtype = dtype or jnp.result_type(float)
    d = (np.arange(k)[None, :] - np.arange(k)[:, None]) % k
    sign = np.where((d >= 1) & (2 * d < k), 1.0, np.where((d > 0) & (2 * d > k), -1.0, 0.0))
    p = jnp.asarray(0.5 + 0.5 * strength * sign, dtype)
    if perturbation > 0:
        logits = jnp.log(jnp.clip(p, 1e-6, 1 - 1e-6)) - jnp.log(jnp.clip(1 - p, 1e-6, 1 - 1e-6))
        noise = jax.random.normal(key, (k, k), dtype) * jnp.asarray(perturbation, dtype)
        p = _skew_sigmoid(logits + noise - noise.T)
    return PreferenceGame(p)


def annotator_mixture_game(
    rewards: Float[ArrayLike, "A K"], weights: Float[ArrayLike, "A"] | None = None
) -> PreferenceGame:
    r"""Heterogeneous annotators: a mixture of Bradley–Terry models.

    :math:`P(y, y') = \sum_a w_a\, \sigma(R_a(y) - R_a(y'))`. Each annotator is
    transitive, but the mixture can be cyclic (the Condorcet paradox), so no single
    reward explains it.

    Args:
      rewards: ``[A, K]`` one reward vector per annotator.
      weights: ``[A]`` mixture weights on the simplex (default uniform).
    """
    r = _checks.as_float_array("rewards", rewards, ndim=2)
    _checks.check_nonempty("rewards", r)
    _checks.check_finite("rewards", r)
    w = _mixture_weights(weights, r.shape[0], r.dtype)
    p = jnp.einsum("a,aij->ij", w, jax.nn.sigmoid(r[:, :, None] - r[:, None, :]))
    return PreferenceGame(p)


def random_annotator_mixture_game(
    num_responses: int, num_annotators: int = 3, *, key: PRNGKey, scale: float = 3.0, dtype=None
) -> PreferenceGame:
    """:func:`annotator_mixture_game` with Gaussian rewards (std ``scale``) and uniform weights."""
    if num_annotators < 1:
        raise ValueError(f"num_annotators must be >= 1, got {num_annotators}")
    dtype = dtype or jnp.result_type(float)
    r = jax.random.normal(key, (num_annotators, num_responses), dtype) * jnp.asarray(scale, dtype)
    return annotator_mixture_game(r)


def _mixture_weights(weights, num: int, dtype) -> jax.Array:
    if weights is None:
        return jnp.full((num,), 1.0 / num, dtype)
    w = _checks.as_float_array("weights", weights, ndim=1).astype(dtype)
    if w.shape[0] != num:
        raise ValueError(f"weights must have shape ({num},) (one per annotator), got {w.shape}")
    _checks.check_nonnegative("weights", w)
    if _checks.is_concrete(w) and abs(float(np.sum(np.asarray(w))) - 1.0) > 1e-6:
        raise ValueError(f"weights must sum to 1, got sum {float(np.sum(np.asarray(w))):.6g}")
    return w


# --------------------------------------------------------------------------- n players


def multiplayer_game(payoff: Float[ArrayLike, "..."]) -> MultiplayerGame:
    """A validated :class:`MultiplayerGame` from a ``[K] * n`` payoff tensor."""
    game = MultiplayerGame(_checks.as_float_array("payoff", payoff))
    check_multiplayer_game(game, "payoff")
    return game


def plackett_luce_game(
    rewards: Float[ArrayLike, "A K"] | Float[ArrayLike, "K"],
    num_players: int,
    weights: Float[ArrayLike, "A"] | None = None,
) -> MultiplayerGame:
    r"""n-player one-vs-many game of a (mixture of) Plackett–Luce annotators.

    .. math:: P(y_1 \succ \{y_2..y_n\}) = \sum_a w_a
       \frac{e^{R_a(y_1)}}{\sum_{i=1}^n e^{R_a(y_i)}}

    — the probability that annotator :math:`a` ranks :math:`y_1` first among the n
    responses. One annotator (``rewards`` of shape ``[K]``) is homogeneous and
    transitive; several are heterogeneous. With ``num_players = 2`` this is the
    Bradley–Terry mixture of :func:`annotator_mixture_game`.

    Args:
      rewards: ``[K]`` or ``[A, K]`` rewards.
      num_players: n ≥ 2 (the tensor has ``K ** n`` entries).
      weights: ``[A]`` annotator weights (default uniform).
    """
    r = _checks.as_float_array("rewards", rewards)
    if r.ndim == 1:
        r = r[None, :]
    if r.ndim != 2:
        raise ValueError(f"rewards must have shape [K] or [A, K], got {r.shape}")
    _checks.check_nonempty("rewards", r)
    _checks.check_finite("rewards", r)
    n = int(num_players)
    if n < 2:
        raise ValueError(f"num_players must be >= 2, got {num_players}")
    w = _mixture_weights(weights, r.shape[0], r.dtype)
    k = r.shape[1]
    # log-sum-exp over the n players of R_a(y_i), built by broadcasting one axis per player.
    z = r.reshape((r.shape[0],) + (k,) + (1,) * (n - 1))
    total = z
    for i in range(1, n):
        shape = [r.shape[0]] + [1] * n
        shape[1 + i] = k
        total = jnp.logaddexp(total, r.reshape(shape))
    probs = jnp.exp(z - total)  # [A, K, ..., K]
    return MultiplayerGame(jnp.tensordot(w, probs, axes=1))


def pairwise_multiplayer_game(game: PreferenceGame, num_players: int) -> MultiplayerGame:
    r"""The n-player game whose one-vs-many preference is the average pairwise one.

    .. math:: P(y_1 \succ \{y_2..y_n\}) = \frac{1}{n-1}\sum_{j=2}^n P(y_1 \succ y_j)

    Player :math:`i`'s payoff is then :math:`\frac{1}{n-1}\sum_{j\ne i} P(y \succ
    \pi_j)`, the form used by MNPO's update.
    """
    p = check_game(game)
    n = int(num_players)
    if n < 2:
        raise ValueError(f"num_players must be >= 2, got {num_players}")
    k = p.shape[0]
    total = jnp.zeros((k,) * n, p.dtype)
    for j in range(1, n):
        shape = [1] * n
        shape[0], shape[j] = k, k
        total = total + p.reshape(shape)
    return MultiplayerGame(total / jnp.asarray(n - 1, p.dtype))


__all__ = [
    "MultiplayerGame",
    "PreferenceGame",
    "annotator_mixture_game",
    "bradley_terry_game",
    "check_game",
    "check_multiplayer_game",
    "cyclic_game",
    "multiplayer_game",
    "pairwise_multiplayer_game",
    "plackett_luce_game",
    "preference_game",
    "random_annotator_mixture_game",
    "random_game",
]
