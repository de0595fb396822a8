r"""ORPO: supervised fine-tuning and an odds-ratio preference term in one reference-free loss.

Plain SFT on the chosen responses raises the likelihood of the rejected ones too; ORPO adds,
to the chosen response's negative log-likelihood, a penalty on the *odds ratio* of chosen
over rejected, so one stage both fine-tunes and aligns, with no reference model:

.. math::

    \ell_{ORPO} = \underbrace{-\bar a(y_w)}_{\mathcal L_{SFT}}
        + \lambda\,\underbrace{\Big(-\log\sigma\big(\log\mathrm{odds}(y_w)
        - \log\mathrm{odds}(y_l)\big)\Big)}_{\mathcal L_{OR}},
    \qquad \log\mathrm{odds}(y) = \bar a(y) - \log\big(1 - e^{\bar a(y)}\big),

where :math:`\bar a(y) = \log\pi_\theta(y|x)/|y|` is the *length-averaged* log-prob (the
paper's :math:`\log P_\theta(y|x)`, so :math:`e^{\bar a}` is a geometric-mean token
probability in (0, 1) and the odds :math:`P/(1-P)` are finite) and λ weighs the odds-ratio
term. The odds term is the unified pairwise loss (:mod:`jaxalign.losses.pairwise`) with no
anchors on :math:`\log\mathrm{odds}`, target 0 and scale 1.

References:
  Hong, Lee, Thorne, "ORPO: Monolithic Preference Optimization without Reference Model",
  EMNLP 2024 (eqs. 2 – 7).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.losses.pairwise import length_normalised_logp, pairwise_preference_loss

Vec = Float[Array, "b"]


class ORPOOutput(NamedTuple):
    """Per-pair ORPO results, each ``[b]``."""

    loss: Vec  # L_SFT + λ·L_OR
    nll: Vec  # L_SFT = −log π(y_w)/|y_w|
    odds_ratio_loss: Vec  # L_OR = −log σ(log odds(y_w) − log odds(y_l))
    log_odds_w: Vec  # log odds(y_w)
    log_odds_l: Vec  # log odds(y_l)


def log_odds(mean_logp: Float[ArrayLike, "b"]) -> Vec:
    r"""Log odds :math:`\log\frac{P}{1-P} = \bar a - \log(1 - e^{\bar a})`, :math:`\bar a = \log P`.

    :math:`\log(1 - e^{\bar a})` is computed as ``log(-expm1(ā))`` near 0 and
    ``log1p(-exp(ā))`` below :math:`-\log 2` (accurate on both sides). :math:`\bar a` is
    clamped just below 0, so an empty (masked) response, :math:`\bar a = 0`, stays finite.
    """
    a = jnp.asarray(mean_logp)
    a = jnp.minimum(a, -jnp.finfo(a.dtype).tiny)
    near_zero = a > -jnp.log(jnp.asarray(2.0, a.dtype))
    safe_near = jnp.where(near_zero, a, -jnp.ones((), a.dtype))  # keep both branches finite
    safe_far = jnp.where(near_zero, -jnp.ones((), a.dtype), a)
    log1m = jnp.where(near_zero, jnp.log(-jnp.expm1(safe_near)), jnp.log1p(-jnp.exp(safe_far)))
    return a - log1m


def orpo_loss(
    policy_w: Float[ArrayLike, "b"],
    policy_l: Float[ArrayLike, "b"],
    tokens_w: Float[ArrayLike, "b"],
    tokens_l: Float[ArrayLike, "b"],
    *,
    odds_ratio_weight: float,
) -> ORPOOutput:
    r"""The ORPO loss of each pair (see the module docstring).

    Args:
      policy_w, policy_l: ``[b]`` :math:`\log\pi_\theta(y|x)` of chosen and rejected, summed
        over each response's tokens.
      tokens_w, tokens_l: ``[b]`` :math:`|y_w|`, :math:`|y_l|` (clamped at 1).
      odds_ratio_weight: λ ≥ 0 of the odds-ratio term (the paper uses 0.1 – 1; λ = 0 is
        SFT on the chosen responses).

    Returns:
      :class:`ORPOOutput` with the total loss, the NLL and odds-ratio terms and both log odds.

    Example::

        out = orpo_loss(logp_w, logp_l, n_w, n_l, odds_ratio_weight=0.1)
        loss = out.loss.mean()
    """
    _checks.check_nonnegative("odds_ratio_weight", odds_ratio_weight)
    policy_w = _checks.as_float_array("policy_w", policy_w, ndim=1)
    policy_l = _checks.as_float_array("policy_l", policy_l, ndim=1)
    _checks.check_same_shape(("policy_w", "policy_l"), policy_w, policy_l)
    mean_w = length_normalised_logp(policy_w, tokens_w)
    mean_l = length_normalised_logp(policy_l, tokens_l)
    odds_w, odds_l = log_odds(mean_w), log_odds(mean_l)
    odds_ratio = pairwise_preference_loss(odds_w, odds_l, (), distance="logistic").loss
    nll = -mean_w
    loss = nll + jnp.asarray(odds_ratio_weight, nll.dtype) * odds_ratio
    return ORPOOutput(loss, nll, odds_ratio, odds_w, odds_l)


__all__ = ["ORPOOutput", "log_odds", "orpo_loss"]
