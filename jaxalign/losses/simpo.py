r"""SimPO: preference optimisation with a reference-free, length-normalised reward.

SimPO's implicit reward of a response is its mean token log-likelihood scaled by β,
:math:`r(x, y) = \frac{\beta}{|y|}\log\pi_\theta(y|x)` — the quantity likelihood-based
decoding ranks by — so it needs no reference model (no π_ref in memory, one forward pass
per response). A Bradley–Terry fit with a target reward margin γ ≥ 0 gives, per pair,

.. math::

    \ell_{SimPO}(x, y_w, y_l) = -\log\sigma\Big(\frac{\beta}{|y_w|}\log\pi_\theta(y_w|x)
        - \frac{\beta}{|y_l|}\log\pi_\theta(y_l|x) - \gamma\Big).

In the unified pairwise family (:mod:`jaxalign.losses.pairwise`) it is the logistic instance
with no anchors on the length-normalised log-probs :math:`\bar a(y) = \log\pi(y)/|y|`,
target :math:`c = \gamma/\beta` and scale β: :math:`\beta(\bar a_w - \bar a_l - \gamma/\beta)`
is the argument above.

References:
  Meng, Xia, Chen, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
  NeurIPS 2024 (eq. 6).
"""

from __future__ import annotations

from jaxtyping import ArrayLike, Float

from jaxalign import _checks
from jaxalign.losses.pairwise import (
    PairwiseOutput,
    length_normalised_logp,
    pairwise_preference_loss,
)


def simpo_loss(
    policy_w: Float[ArrayLike, "b"],
    policy_l: Float[ArrayLike, "b"],
    tokens_w: Float[ArrayLike, "b"],
    tokens_l: Float[ArrayLike, "b"],
    *,
    beta: float,
    gamma: float = 0.0,
) -> PairwiseOutput:
    r"""The SimPO loss of each pair (see the module docstring).

    Args:
      policy_w, policy_l: ``[b]`` :math:`\log\pi_\theta(y_w|x)`, :math:`\log\pi_\theta(y_l|x)`,
        summed over each response's tokens.
      tokens_w, tokens_l: ``[b]`` :math:`|y_w|`, :math:`|y_l|`, the responses' token counts
        (clamped at 1).
      beta: β > 0, the reward scale (the paper uses 2 – 2.5).
      gamma: γ ≥ 0, the target reward margin (the paper uses γ/β ≈ 0.5).

    Returns:
      :class:`~jaxalign.losses.PairwiseOutput`: ``loss`` ``[b]``, ``logit``
      :math:`\bar a_w - \bar a_l` (mean token log-prob difference) and ``target`` γ/β.

    Example::

        out = simpo_loss(logp_w, logp_l, n_w, n_l, beta=2.0, gamma=1.0)
        loss = out.loss.mean()
    """
    _checks.check_positive("beta", beta)
    _checks.check_nonnegative("gamma", gamma)
    policy_w = _checks.as_float_array("policy_w", policy_w, ndim=1)
    policy_l = _checks.as_float_array("policy_l", policy_l, ndim=1)
    _checks.check_same_shape(("policy_w", "policy_l"), policy_w, policy_l)
    mean_w = length_normalised_logp(policy_w, tokens_w)
    mean_l = length_normalised_logp(policy_l, tokens_l)
    return pairwise_preference_loss(
        mean_w, mean_l, (), target=gamma / beta, distance="logistic", scale=beta
    )


__all__ = ["simpo_loss"]
