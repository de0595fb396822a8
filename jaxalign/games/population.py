r"""Population (infinite-data) forms of the pairwise squared losses behind the solvers.

The LLM losses of IPO / INPO / ONPO / MNPO regress an **anchored log-ratio**

.. math:: h_\theta(y, y') = [\theta(y) - a(y)] - [\theta(y') - a(y')]

onto a constant target :math:`c` on preference-labelled pairs: :math:`y, y' \sim \mu`
i.i.d., then :math:`(y_w, y_l) = (y, y')` with probability :math:`P(y \succ y')`, else
:math:`(y', y)` (the distribution :math:`\lambda_p`). On a tabular policy the
expectation is a finite sum, computed here exactly.

**Population-loss lemma.** For pairs drawn from the same :math:`\mu` that appears in the
win rates,

.. math::

    \mathbb{E}_{\lambda_p}\big[(h(y_w, y_l) - c)^2\big]
    = \mathbb{E}_{y,y'\sim\mu}\big[(h(y, y') - 2c((P\mu)_y - (P\mu)_{y'}))^2\big] + \text{const},

so the minimiser is :math:`\theta \propto a + 2c\,P\mu` — the closed-form update of the
solver whose :class:`PairwiseTarget` gives :math:`(a, c, \mu)`. If the pairs come from
another distribution :math:`\nu`, the minimiser is :math:`a + 2c\,P\nu` instead (MNPO's
caveat: pairs must be drawn from the mixture of the opponents).

**Tabular SGD = mirror descent (EGPO).** For
:math:`L(\theta) = \frac1{N^2}\sum_{y,y'} (u_y - u_{y'})^2` with
:math:`u = \theta - \theta_{\rm ref} - P\pi/\beta`, one SGD step with learning rate
``lr`` gives :math:`(1 - s\beta)\theta + s\beta\theta_{\rm ref} + sP\pi` (up to a
constant) with :math:`s = 4\,\mathrm{lr}/(\beta N)` — see
:func:`egpo_sgd_learning_rate`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.games.game import PreferenceGame, check_game
from jaxalign.games.gaps import as_log_policy, ref_log_policy


class PairwiseTarget(NamedTuple):
    """What a pairwise squared loss regresses, on one instance.

    Attributes:
      anchor: ``[K]`` anchor log-policy :math:`a` (e.g. a geometric mixture of
        :math:`\\pi_t` and :math:`\\pi_{\\rm ref}`).
      target: scalar :math:`c` (IPO/INPO: ``1/(2η)`` in their inverse-step convention,
        i.e. ``step_size / 2``).
      sampling: ``[K]`` log-probs :math:`\\mu` from which both responses of a pair are
        drawn.
    """

    anchor: Float[Array, "K"]
    target: Float[Array, ""]
    sampling: Float[Array, "K"]


def _prepare(logits, game: PreferenceGame, target: PairwiseTarget):
    p = check_game(game)
    k = p.shape[0]
    theta = _checks.as_float_array("logits", logits, ndim=1).astype(p.dtype)
    if theta.shape != (k,):
        raise ValueError(f"logits must have shape ({k},), got {theta.shape}")
    mu = as_log_policy("target.sampling", target.sampling, k, p.dtype)
    anchor = _checks.as_float_array("target.anchor", target.anchor, ndim=1).astype(p.dtype)
    c = jnp.asarray(target.target, p.dtype)
    return p, theta, anchor, c, jnp.exp(mu)


def _log_ratio(theta, anchor):
    f = theta - anchor
    return f[:, None] - f[None, :]


def pairwise_population_loss(
    logits: Float[ArrayLike, "K"], game: PreferenceGame, target: PairwiseTarget
) -> Float[Array, ""]:
    r"""Exact :math:`\mathbb{E}_{y,y'\sim\mu,\,\lambda_p}[(h_\theta(y_w, y_l) - c)^2]`.

    Args:
      logits: ``[K]`` free logits :math:`\theta` of the trained policy (used as log-probs
        in :math:`h`; the loss is invariant to adding a constant).
      game: ``[K, K]`` preference game (labels :math:`P(y \succ y')`).
      target: the :class:`PairwiseTarget` of an algorithm's iteration.

    Returns:
      Scalar loss.
    """
    p, theta, anchor, c, mu = _prepare(logits, game, target)
    h = _log_ratio(theta, anchor)  # h[y, y'] = h(y, y')
    # Summing both label orders over all ordered pairs counts each (winner, loser) twice.
    return jnp.sum(mu[:, None] * mu[None, :] * p * jnp.square(h - c)) * jnp.asarray(2, p.dtype)


def centred_population_loss(
    logits: Float[ArrayLike, "K"],
    game: PreferenceGame,
    target: PairwiseTarget,
    opponent: Float[ArrayLike, "K"] | None = None,
) -> Float[Array, ""]:
    r"""The lemma's regression form of the population loss.

    :math:`\mathbb{E}_{y,y'\sim\mu}[(h - 2c((P\nu)_y - (P\nu)_{y'}))^2]`.

    Args:
      logits, game, target: as in :func:`pairwise_population_loss`.
      opponent: ``[K]`` log-probs :math:`\nu` in the win rates (default: the sampling
        distribution :math:`\mu`, the case where the lemma holds).

    Returns:
      Scalar loss; differs from :func:`pairwise_population_loss` by a constant in
      ``logits`` exactly when ``opponent`` is the sampling distribution.
    """
    p, theta, anchor, c, mu = _prepare(logits, game, target)
    nu = (
        mu
        if opponent is None
        else jnp.exp(as_log_policy("opponent", opponent, p.shape[0], p.dtype))
    )
    g = p @ nu
    two = jnp.asarray(2, p.dtype)
    resid = _log_ratio(theta, anchor) - two * c * (g[:, None] - g[None, :])
    return jnp.sum(mu[:, None] * mu[None, :] * jnp.square(resid))


def population_minimiser(game: PreferenceGame, target: PairwiseTarget) -> Float[Array, "K"]:
    r"""Closed-form minimiser of :func:`pairwise_population_loss`.

    :math:`\log\mathrm{softmax}(a + 2cP\mu)`.

    Unique (up to the constant) when :math:`\mu` has full support.
    """
    p = check_game(game)
    k = p.shape[0]
    mu = as_log_policy("target.sampling", target.sampling, k, p.dtype)
    anchor = _checks.as_float_array("target.anchor", target.anchor, ndim=1).astype(p.dtype)
    c = jnp.asarray(target.target, p.dtype)
    return jax.nn.log_softmax(anchor + jnp.asarray(2, p.dtype) * c * (p @ jnp.exp(mu)))


def egpo_regression_loss(
    logits: Float[ArrayLike, "K"],
    game: PreferenceGame,
    opponent: Float[ArrayLike, "K"],
    tau: float,
    ref: Float[ArrayLike, "K"] | None = None,
) -> Float[Array, ""]:
    r"""EGPO's tabular regression loss.

    :math:`\frac1{N^2}\sum_{y,y'}(u_y - u_{y'})^2` with
    :math:`u = \theta - \theta_{\rm ref} - P\pi/\tau`.

    ``opponent`` is the (stop-gradient) policy :math:`\pi` whose win rates are the
    regression target: :math:`\pi_t` for the extrapolation step, :math:`\pi_{t+1/2}` for
    the correction.
    """
    p = check_game(game)
    k = p.shape[0]
    theta = _checks.as_float_array("logits", logits, ndim=1).astype(p.dtype)
    pi = jnp.exp(as_log_policy("opponent", opponent, k, p.dtype))
    log_ref = ref_log_policy(ref, k, p.dtype)
    _checks.check_positive("tau", tau)
    u = theta - log_ref - (p @ pi) / jnp.asarray(tau, p.dtype)
    return jnp.mean(jnp.square(u[:, None] - u[None, :]))


def egpo_sgd_learning_rate(step_size, tau, num_responses: int):
    r"""SGD learning rate on :func:`egpo_regression_loss` equal to an EGPO step ``step_size``.

    :math:`\mathrm{lr} = s\,\tau N / 4` (re-derived: :math:`\nabla_\theta L = \frac4N(u -
    \bar u)`; the factor 2 in EGPO's code is a different loss normalisation).
    """
    return step_size * tau * num_responses / 4


def sppo_population_loss(
    logits: Float[ArrayLike, "K"],
    game: PreferenceGame,
    log_policy: Float[ArrayLike, "K"],
    step_size,
) -> Float[Array, ""]:
    r"""SPPO's population loss.

    :math:`\mathbb{E}_{y\sim\pi_t}[(\theta(y) - \log\pi_t(y) - s((P\pi_t)_y - \tfrac12))^2]`.

    ``step_size`` :math:`s` is SPPO's :math:`1/\beta`. Its free-logit minimiser is
    :math:`\log\pi_t + s(P\pi_t - \tfrac12)`, whose normalisation is SPPO's update.
    """
    p = check_game(game)
    k = p.shape[0]
    theta = _checks.as_float_array("logits", logits, ndim=1).astype(p.dtype)
    log_pi = as_log_policy("log_policy", log_policy, k, p.dtype)
    half = jnp.asarray(0.5, p.dtype)
    resid = theta - log_pi - jnp.asarray(step_size, p.dtype) * (p @ jnp.exp(log_pi) - half)
    return jnp.sum(jnp.exp(log_pi) * jnp.square(resid))


__all__ = [
    "PairwiseTarget",
    "centred_population_loss",
    "egpo_regression_loss",
    "egpo_sgd_learning_rate",
    "pairwise_population_loss",
    "population_minimiser",
    "sppo_population_loss",
]
