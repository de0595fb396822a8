"""Direct Preference Optimisation (DPO) loss on sequence log-probabilities.

DPO treats preference learning as KL-regularised RL solved in closed form: the
optimal policy of ``max_π E[r] − β KL(π‖π_ref)`` is ``π* ∝ π_ref e^{r/β}``, so
the implicit reward of a policy is ``r_π(y) = β log π(y)/π_ref(y)`` (plus a
prompt-only term that cancels in a pair). Fitting Bradley–Terry preferences
with that reward gives, for a pair (chosen ``w``, rejected ``l``),

.. math::

    z = β[(\\log π_w − \\log π_{ref,w}) − (\\log π_l − \\log π_{ref,l})],\\qquad
    ℓ_ε(z) = −(1−ε)\\log σ(z) − ε \\log σ(−z),

where ``ε`` is label smoothing (conservative DPO: each label is flipped with
probability ``ε``; ``ε = 0`` is plain DPO).

References:
    Rafailov et al., "Direct Preference Optimization: Your Language Model is
    Secretly a Reward Model", NeurIPS 2023. Label smoothing as in the
    "conservative DPO" note (Mitchell, 2023).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxalign._checks import check_same_shape, is_concrete


class DPOOutput(NamedTuple):
    """Per-pair DPO quantities, each of shape ``(batch,)``."""

    loss: Float[Array, " b"]  # ℓ_ε(z)
    chosen_reward: Float[Array, " b"]  # β (log π_w − log π_ref,w)
    rejected_reward: Float[Array, " b"]  # β (log π_l − log π_ref,l)
    margin: Float[Array, " b"]  # z = chosen_reward − rejected_reward


def dpo_pair_loss(
    policy_chosen: Float[Array, ""],
    policy_rejected: Float[Array, ""],
    reference_chosen: Float[Array, ""],
    reference_rejected: Float[Array, ""],
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """DPO loss of ONE pair from its four sequence log-probabilities (batch with vmap).

    Args:
        policy_chosen, policy_rejected: ``log π(y_w|x)``, ``log π(y_l|x)`` (scalars).
        reference_chosen, reference_rejected: the same under ``π_ref`` (scalars).
        beta: KL-regularisation strength β > 0 (reward scale).
        label_smoothing: ε ∈ [0, ½), probability that a label is flipped.

    Returns:
        :class:`DPOOutput` of scalars. The loss is computed with
        ``log σ(z) = −softplus(−z)``, finite for any finite ``z``. This is the library's
        one DPO: with ``ε = 0`` it is the unified pairwise loss
        (:func:`jaxalign.losses.pairwise.pairwise_preference_loss`) with the reference as
        its anchor, logistic distance and scale β.
    """
    chosen = beta * (policy_chosen - reference_chosen)
    rejected = beta * (policy_rejected - reference_rejected)
    # z = β h with h the unified family's anchored log-ratio (jaxalign.losses.pairwise,
    # one anchor: the reference, held fixed), computed the same way bit for bit.
    h = (policy_chosen - policy_rejected) - jax.lax.stop_gradient(
        reference_chosen - reference_rejected
    )
    margin = beta * h
    eps = jnp.asarray(label_smoothing, margin.dtype)
    loss = (1 - eps) * jax.nn.softplus(-margin) + eps * jax.nn.softplus(margin)
    return DPOOutput(loss, chosen, rejected, margin)


def dpo_loss(
    policy_chosen: Float[Array, " b"],
    policy_rejected: Float[Array, " b"],
    reference_chosen: Float[Array, " b"],
    reference_rejected: Float[Array, " b"],
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """Batched :func:`dpo_pair_loss` (``jax.vmap`` over the leading axis).

    Args:
        policy_chosen, policy_rejected, reference_chosen, reference_rejected:
            sequence log-probabilities, each ``(batch,)``.
        beta: β > 0.
        label_smoothing: ε ∈ [0, ½).

    Returns:
        :class:`DPOOutput` with ``(batch,)`` fields; reduce with the example
        mask (``jaxalign.data.PreferenceBatch.example_mask``) as needed.

    Raises:
        ValueError: for mismatched shapes, a non-1-D input, β ≤ 0 or ε ∉ [0, ½).
    """
    arrays = [jnp.asarray(a) for a in (policy_chosen, policy_rejected, reference_chosen,
                                       reference_rejected)]  # fmt: skip
    names = ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected")
    check_same_shape(names, *arrays)
    if arrays[0].ndim != 1:
        raise ValueError(
            f"policy_chosen must be 1-D (batch,), got shape {arrays[0].shape}; "
            "use dpo_pair_loss for a single pair"
        )
    if is_concrete(beta) and not float(beta) > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    if is_concrete(label_smoothing) and not 0 <= float(label_smoothing) < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing!r}")
    fn = lambda a, b, c, d: dpo_pair_loss(a, b, c, d, beta=beta, label_smoothing=label_smoothing)
    return jax.vmap(fn)(*arrays)


__all__ = ["DPOOutput", "dpo_loss", "dpo_pair_loss"]
