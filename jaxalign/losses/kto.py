r"""KTO: alignment from unpaired desirable / undesirable responses (prospect-theoretic loss).

KTO needs no preference pairs: each example is one response labelled *desirable* or
*undesirable*. With the implicit reward :math:`r_\theta(x, y) = \log\pi_\theta(y|x) -
\log\pi_{ref}(y|x)` and a reference point :math:`z_0` (the policy's KL from the reference),
the Kahneman–Tversky value of a response is

.. math::

    v(x, y) = \begin{cases}
        \lambda_D\,\sigma\big(\beta(r_\theta(x, y) - z_0)\big) & y \text{ desirable},\\
        \lambda_U\,\sigma\big(\beta(z_0 - r_\theta(x, y))\big) & y \text{ undesirable},
    \end{cases}
    \qquad \ell_{KTO}(x, y) = \lambda_y - v(x, y),

i.e. :math:`\lambda_D(1 - \sigma(\beta(r - z_0)))` for a desirable response and
:math:`\lambda_U(1 - \sigma(\beta(z_0 - r)))` for an undesirable one. A desirable response
gains only by beating the reference point, an undesirable one only by falling below it.

**Reference point estimator** (:func:`kto_reference_point`): as in the paper,
:math:`z_0 = \max\big(0, \tfrac1m\sum_i [\log\pi_\theta(y'_i|x_i) - \log\pi_{ref}(y'_i|x_i)]\big)`
over *mismatched* pairs :math:`(x_i, y'_i)` of the same batch — prompt ``i`` with the
completion of another row (``jaxalign.data.unpaired`` pairs row ``i`` with row ``i+1``
of the global batch, cyclically) — a Monte-Carlo estimate of
:math:`\mathrm{KL}(\pi_\theta\|\pi_{ref})` on responses the prompt did not produce, clamped
at 0 (a KL is non-negative) and detached: no gradient flows through :math:`z_0`.

λ_D, λ_U weigh the two kinds; the paper recommends
:math:`\lambda_D n_D / (\lambda_U n_U) \in [1, 4/3]` for :math:`n_D` desirable and
:math:`n_U` undesirable examples. KTO is a *pointwise* member of the pairwise family (like
SPPO): the anchor is π_ref, the "opponent" is the reference point instead of a second
response.

References:
  Ethayarajh, Xu, Muennighoff, Jurafsky, Kiela, "KTO: Model Alignment as Prospect
  Theoretic Optimization", ICML 2024 (eq. 8 and §4.1 for the KL estimate).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks

Vec = Float[Array, "b"]


class KTOOutput(NamedTuple):
    """Per-example KTO results."""

    loss: Vec  # λ_y − v(x, y), [b]
    reward: Vec  # β·r_θ(x, y) = β(log π − log π_ref), [b]
    reference_point: Float[Array, ""]  # z₀ (detached), scalar


def kto_reference_point(
    mismatched_policy: Float[ArrayLike, "b"],
    mismatched_reference: Float[ArrayLike, "b"],
    weights: Float[ArrayLike, "b"] | None = None,
) -> Float[Array, ""]:
    r""":math:`z_0 = \max(0, \text{weighted mean}_i[\log\pi_\theta(y'_i|x_i) -
    \log\pi_{ref}(y'_i|x_i)])`, detached.

    Args:
      mismatched_policy, mismatched_reference: ``[b]`` sequence log-probs of mismatched
        prompt/completion pairs under the policy and the reference.
      weights: ``[b]`` non-negative weights (the example mask: 0 for filler rows); None = 1.

    Returns:
      A scalar, with no gradient (``stop_gradient``); 0 when every weight is 0.
    """
    kl_policy = _checks.as_float_array("mismatched_policy", mismatched_policy, ndim=1)
    kl_ref = jnp.asarray(mismatched_reference, kl_policy.dtype)
    _checks.check_same_shape(("mismatched_policy", "mismatched_reference"), kl_policy, kl_ref)
    w = jnp.ones_like(kl_policy) if weights is None else jnp.asarray(weights, kl_policy.dtype)
    _checks.check_same_shape(("mismatched_policy", "weights"), kl_policy, w)
    total = jnp.maximum(jnp.sum(w), jnp.ones((), w.dtype))
    mean = jnp.sum(w * (kl_policy - kl_ref)) / total
    return jax.lax.stop_gradient(jnp.maximum(mean, jnp.zeros((), mean.dtype)))


def kto_loss(
    policy_logp: Float[ArrayLike, "b"],
    reference_logp: Float[ArrayLike, "b"],
    desirable: ArrayLike,
    reference_point: Float[ArrayLike, ""],
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> KTOOutput:
    r"""The KTO loss of each example (see the module docstring).

    Args:
      policy_logp, reference_logp: ``[b]`` :math:`\log\pi_\theta(y|x)`,
        :math:`\log\pi_{ref}(y|x)` of each example's completion.
      desirable: ``[b]`` bool (or 0/1): the label of each completion.
      reference_point: :math:`z_0` (scalar), e.g. from :func:`kto_reference_point`; it is
        treated as a constant (no gradient).
      beta: β > 0.
      desirable_weight, undesirable_weight: λ_D, λ_U > 0.

    Returns:
      :class:`KTOOutput`: per-example ``loss`` and ``reward`` ``β r_θ``, and ``z₀``.

    Example::

        z0 = kto_reference_point(kl_logp, kl_ref_logp, mask)
        out = kto_loss(logp, ref_logp, labels, z0, beta=0.1)
        loss = (mask * out.loss).sum() / mask.sum()
    """
    _checks.check_positive("beta", beta)
    _checks.check_positive("desirable_weight", desirable_weight)
    _checks.check_positive("undesirable_weight", undesirable_weight)
    logp = _checks.as_float_array("policy_logp", policy_logp, ndim=1)
    ref = jax.lax.stop_gradient(jnp.asarray(reference_logp, logp.dtype))
    label = jnp.asarray(desirable)
    _checks.check_same_shape(("policy_logp", "reference_logp", "desirable"), logp, ref, label)
    z0 = jax.lax.stop_gradient(jnp.asarray(reference_point, logp.dtype))
    b = jnp.asarray(beta, logp.dtype)
    reward = b * (logp - ref)
    good = label.astype(bool)
    # 1 − σ(t) = σ(−t): the desirable branch has t = β(r − z₀), the undesirable t = β(z₀ − r).
    sign = jnp.where(good, jnp.ones((), logp.dtype), -jnp.ones((), logp.dtype))
    weight = jnp.where(
        good, jnp.asarray(desirable_weight, logp.dtype), jnp.asarray(undesirable_weight, logp.dtype)
    )
    loss = weight * jax.nn.sigmoid(-sign * (reward - b * z0))
    return KTOOutput(loss, reward, z0)


__all__ = ["KTOOutput", "kto_loss", "kto_reference_point"]
