"""Multi-objective DPO: K preference datasets, one conflict-averse update.

Each objective ``k`` has its own preference batch (chosen/rejected sequences labelled by
its own reward) and its own DPO loss ``L_k(θ)``. One step computes the K per-objective
gradients ``g_k = ∇L_k(θ)`` (``jax.vmap`` of ``jax.value_and_grad`` over the objective
axis, so leaves come stacked ``[K, ...]``), combines them with a
:mod:`jaxalign.multiobjective` aggregator and applies an optax update:

.. math::
    d = \\mathrm{agg}(g_1, …, g_K),\\qquad
    (u, s') = \\mathrm{tx.update}(d, s, θ),\\qquad θ' = θ + u.

``"weighted_sum"`` is exactly DPO on ``Σ_k w_k L_k`` (the gradient is linear);
``"mgda"`` takes the min-norm element of the gradients' convex hull (no objective
increases to first order); ``"cagrad"`` / ``"raco"`` interpolate with radius ``c``
(RACO anchored at, and clipped by, the user weights ``w``).

References:
  Rafailov et al., "Direct Preference Optimization", NeurIPS 2023; Zhou et al.,
  "Beyond One-Preference-Fits-All Alignment: Multi-Objective DPO", 2024; Désidéri 2012;
  Liu et al., CAGrad, NeurIPS 2021.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jaxtyping import Array, Float, Int

from jaxalign import multiobjective as mo
from jaxalign.losses import dpo_loss
from jaxalign.models import sequence_logprobs

AGGREGATORS = ("weighted_sum", "mgda", "cagrad", "raco")


class PreferenceBatches(NamedTuple):
    """K preference batches stacked on a leading objective axis (same ``b``, ``l``).

    Attributes:
      chosen_tokens, rejected_tokens: ``[K, b, l]`` int32 prompt + response ids.
      chosen_mask, rejected_mask: ``[K, b, l]`` 1 at response tokens.
      ref_chosen, ref_rejected: ``[K, b]`` float32 sequence log-probs under π_ref.
    """

    chosen_tokens: Int[Array, "K b l"]
    chosen_mask: Int[Array, "K b l"]
    rejected_tokens: Int[Array, "K b l"]
    rejected_mask: Int[Array, "K b l"]
    ref_chosen: Float[Array, "K b"]
    ref_rejected: Float[Array, "K b"]


class MultiObjectiveMetrics(NamedTuple):
    """Diagnostics of one step.

    Attributes:
      losses: ``[K]`` per-objective mean DPO losses at the pre-update parameters.
      info: the aggregator's :class:`~jaxalign.multiobjective.AggregationInfo`
        (``weights``, ``coefficients``, ``cosines``, ``conflict``, ``direction_norm``).
    """

    losses: Float[Array, " K"]
    info: mo.AggregationInfo


def reference_logprobs(model, chosen_tokens, chosen_mask, rejected_tokens, rejected_mask):
    """``(ref_chosen [K, b], ref_rejected [K, b])`` of stacked ``[K, b, l]`` sequences."""
    k, b, n = chosen_tokens.shape

    def seq(tokens, mask):
        out = sequence_logprobs(model, tokens.reshape(k * b, n), mask.reshape(k * b, n))
        return out.sequence.reshape(k, b)

    return seq(chosen_tokens, chosen_mask), seq(rejected_tokens, rejected_mask)


def per_objective_dpo_grads(params, graphdef, batches: PreferenceBatches, *, beta):
    """Per-objective mean DPO losses ``[K]`` and gradients (leaves ``[K, ...]``)."""

    def loss_fn(p, batch: PreferenceBatches):
        model = nnx.merge(graphdef, p)
        pc = sequence_logprobs(model, batch.chosen_tokens, batch.chosen_mask).sequence
        pr = sequence_logprobs(model, batch.rejected_tokens, batch.rejected_mask).sequence
        return jnp.mean(dpo_loss(pc, pr, batch.ref_chosen, batch.ref_rejected, beta=beta).loss)

    return jax.vmap(jax.value_and_grad(loss_fn), in_axes=(None, 0))(params, batches)


def aggregate(grads, *, aggregator: str, weights=None, c: float = 0.5):
    """Combine stacked gradients with the named :mod:`jaxalign.multiobjective` rule."""
    if aggregator == "weighted_sum":
        return mo.weighted_sum_direction(grads, weights)
    if aggregator == "mgda":
        return mo.mgda_direction(grads)
    if aggregator == "cagrad":
        return mo.cagrad_direction(grads, c)
    if aggregator == "raco":
        return mo.raco_direction(grads, c, weights)
    raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {aggregator!r}")


def multiobjective_dpo_step(
    params,
    opt_state,
    batches: PreferenceBatches,
    *,
    graphdef,
    tx: optax.GradientTransformation,
    beta: float,
    aggregator: str = "weighted_sum",
    weights: Float[Array, " K"] | None = None,
    c: float = 0.5,
):
    r"""One multi-objective DPO step (pure; jit it with the keyword args static/closed over).

    .. math::
        L_k(θ) = \tfrac1b\textstyle\sum_j -\log σ\big(β[Δ_θ(y_w^{kj}) - Δ_θ(y_l^{kj})]\big),
        \quad Δ_θ(y) = \log π_θ(y|x) - \log π_{ref}(y|x),

    ``g_k = ∇L_k``, ``d = agg(g)``, then ``tx``'s update along ``d``.

    Args:
      params: ``nnx.State`` of the policy (``nnx.split(model)[1]``).
      opt_state: ``tx.init(params)``.
      batches: :class:`PreferenceBatches` with a leading objective axis ``K``.
      graphdef: the model's ``nnx.GraphDef`` (static).
      tx: optax transformation (e.g. ``optax.adam(lr)``).
      beta: DPO β > 0.
      aggregator: ``"weighted_sum"``, ``"mgda"``, ``"cagrad"`` or ``"raco"``.
      weights: ``[K]`` user weights on the simplex (``weighted_sum`` and ``raco``).
      c: conflict-aversion radius (``cagrad``, ``raco``; RACO needs ``0 ≤ c < 1``).

    Returns:
      ``(params, opt_state, MultiObjectiveMetrics)``.

    Raises:
      ValueError: for an unknown aggregator or missing weights.
    """
    if aggregator not in AGGREGATORS:
        raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {aggregator!r}")
    if aggregator in ("weighted_sum", "raco") and weights is None:
        raise ValueError(f"aggregator={aggregator!r} needs weights ([K] on the simplex)")
    losses, grads = per_objective_dpo_grads(params, graphdef, batches, beta=beta)
    direction, info = aggregate(grads, aggregator=aggregator, weights=weights, c=c)
    updates, opt_state = tx.update(direction, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, MultiObjectiveMetrics(losses, info)


__all__ = [
    "AGGREGATORS",
    "MultiObjectiveMetrics",
    "PreferenceBatches",
    "aggregate",
    "multiobjective_dpo_step",
    "per_objective_dpo_grads",
    "reference_logprobs",
]
