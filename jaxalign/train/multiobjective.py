"""Multi-objective DPO: K preference datasets, one conflict-averse update.

Each objective ``k`` has its own preference batch (chosen/rejected sequences labelled by
its own reward) and its own DPO loss ``L_k(θ)``. One step computes the K per-objective
gradients ``g_k = ∇L_k(θ)`` (leaves stacked ``[K, ...]``), combines them with a
:mod:`jaxalign.multiobjective` aggregator and applies an optax update:

.. math::
    d = \\mathrm{agg}(g_1, …, g_K),\\qquad
    (u, s') = \\mathrm{tx.update}(d, s, θ),\\qquad θ' = θ + u.

``"weighted_sum"`` is exactly DPO on ``Σ_k w_k L_k`` (the gradient is linear);
``"mgda"`` takes the min-norm element of the gradients' convex hull (no objective
increases to first order); ``"cagrad"`` / ``"raco"`` interpolate with radius ``c``
(RACO anchored at, and clipped by, the user weights ``w``).

:func:`multiobjective_train_step` is the step (``jaxalign train`` with
``algorithm.name: multiobjective_dpo`` runs it through the training engine): a
:class:`~jaxalign.train.TrainState`, the frozen reference parameters and one padded
:class:`~jaxalign.data.PreferenceBatch` per objective. Each objective's gradient is
exactly the DPO train step's (:func:`jaxalign.train.step.preference_gradient`: attention
masks, filler rows, label smoothing, gradient accumulation, reference log-probs in the
step or precomputed with the batch), mapped over the objectives with ``jax.lax.scan``
(one objective's activations live at a time); the step also skips non-finite updates
like the DPO step.

LoRA dropout (``dropout`` > 0 with a step ``key``): each objective draws its own masks —
objective ``k`` passes ``fold_in(key, k)`` to :func:`~jaxalign.train.step.preference_gradient`,
whose micro-batch ``i`` folds in ``i`` again — so the K gradients are independent dropout
estimates, as if each objective ran its own DPO step. π_ref never sees dropout; no key (or
rate 0) is bitwise the dropout-free step.

References:
  Rafailov et al., "Direct Preference Optimization", NeurIPS 2023; Zhou et al.,
  "Beyond One-Preference-Fits-All Alignment: Multi-Objective DPO", 2024; Désidéri 2012;
  Liu et al., CAGrad, NeurIPS 2021.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jaxtyping import Array, Float

from jaxalign import multiobjective as mo
from jaxalign.data import PreferenceBatch
from jaxalign.train.state import TrainState, apply_gradients
from jaxalign.train.step import preference_gradient

AGGREGATORS = ("weighted_sum", "mgda", "cagrad", "raco")

# Metrics of the DPO train step that are means over pairs (combined over objectives).
_SUMMED = ("loss", "accuracy", "margin", "chosen_reward", "rejected_reward", "kl_ref",
           "log_ratio", "policy_chosen_logp", "policy_rejected_logp")  # fmt: skip


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


#: Per-objective metrics of :func:`multiobjective_train_step` (``<name>_<k>`` for k < K).
PER_OBJECTIVE_METRICS = ("loss", "accuracy", "margin", "chosen_reward", "rejected_reward",
                         "kl_ref", "grad_norm", "agg_weight", "agg_coef", "agg_cos")  # fmt: skip


def uses_weights(aggregator: str) -> bool:
    """Whether ``aggregator`` reads the user weights (``weighted_sum``, ``raco``)."""
    return aggregator in ("weighted_sum", "raco")


def multiobjective_train_step(
    state: TrainState,
    reference: nnx.State,
    batches: tuple[PreferenceBatch, ...],
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    lr_schedule: optax.Schedule,
    aggregator: str = "weighted_sum",
    weights: Float[Array, " K"] | None = None,
    c: float = 0.5,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    grad_accum_steps: int = 1,
    batch_sharding=None,
    kl_metric: bool = True,
    base_graphdef: nnx.GraphDef | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    r"""One multi-objective DPO step of the training engine (pure; jit it, donating ``state``).

    For each objective ``k`` (a ``jax.lax.scan`` over the K batches, stacked on a
    leading axis): ``g_k = ∇_θ L_k`` with ``L_k`` the mean (conservative) DPO loss on
    batch ``k`` against the frozen reference, exactly as in
    :func:`jaxalign.train.step.preference_train_step`; then

    .. math::
        d = \mathrm{agg}(g_1, …, g_K),\qquad (u, s') = \mathrm{tx.update}(d, s, θ),
        \qquad θ' = θ + u,

    skipped (state unchanged, ``finite = 0``) when a loss or gradient is not finite.
    With ``aggregator="weighted_sum"`` and ``weights = e_j`` the step is the DPO step on
    batch ``j`` (``d = 1·g_j + 0·g_{k≠j}`` exactly).

    Args:
      state: the current :class:`~jaxalign.train.TrainState`.
      reference: frozen π_ref parameters (the tree and sharding of ``state.params``).
      batches: K :class:`~jaxalign.data.PreferenceBatch` es of equal shape ``(B, L)``.
      graphdef: the model's graph definition (static).
      tx: the optimizer (clipping included); ``lr_schedule`` only feeds ``lr``.
      aggregator: ``"weighted_sum"``, ``"mgda"``, ``"cagrad"`` or ``"raco"``.
      weights: ``[K]`` user weights on the simplex (``weighted_sum``, ``raco``).
      c: conflict-aversion radius (``cagrad``, ``raco``; RACO needs ``0 ≤ c < 1``).
      beta: DPO β > 0.
      label_smoothing: conservative-DPO ε ∈ [0, ½).
      grad_accum_steps: micro-batches per objective batch (``B`` divisible by it).
      batch_sharding: sharding of a ``(batch, length)`` array (None: no constraint).
      kl_metric: compute ``kl_ref`` and ``kl_ref_k`` (as in
        :func:`~jaxalign.train.step.preference_train_step`: a reference forward pass and a
        second pass over the vocabulary per objective; without it, batches that carry
        precomputed reference log-probs skip the reference entirely).
      base_graphdef: LoRA: the graph of the model without adapters; ``state.params`` are
        the adapters, ``reference`` the frozen base they run on (π_ref = the base with
        adapters off, as in :func:`~jaxalign.train.step.preference_train_step`).
      dropout, key: LoRA dropout rate on the adapters' input and this step's key: objective
        ``k`` draws from ``fold_in(key, k)`` (a distinct mask per objective and micro-batch;
        the policy's forwards only). None: no dropout, bitwise the dropout-free step.

    Returns:
      ``(new_state, metrics)``: replicated scalars. Per objective ``k``: ``loss_k``,
      ``accuracy_k``, ``margin_k``, ``chosen_reward_k``, ``rejected_reward_k``,
      ``kl_ref_k`` (with ``kl_metric``), ``grad_norm_k`` (``‖g_k‖``), ``agg_weight_k`` /
      ``agg_coef_k`` / ``agg_cos_k`` (the aggregator's simplex weights, the coefficients
      of ``d = Σ_k coef_k g_k`` and ``cos(g_k, d)``). Overall: the DPO step's metrics
      (``loss``, ``accuracy``, ``margin``, … as the ``s``-weighted sums of the
      per-objective values, ``s = w`` for weighted_sum / raco and uniform for mgda /
      cagrad), ``grad_norm = ‖d‖`` (before clipping), ``conflict`` (1 when some
      ``⟨g_i, g_j⟩ < 0``), ``param_norm``, ``update_norm``, ``lr``, ``tokens`` (all K
      batches) and ``finite``.

    Raises:
      ValueError: for an unknown aggregator, missing or mis-sized weights, or no batches.
    """
    if aggregator not in AGGREGATORS:
        raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {aggregator!r}")
    k = len(batches)
    if k < 1:
        raise ValueError("batches is empty; expected one PreferenceBatch per objective")
    if uses_weights(aggregator):
        if weights is None:
            raise ValueError(f"aggregator={aggregator!r} needs weights ([K] on the simplex)")
        scal = jnp.asarray(weights, jnp.float32)
        if scal.shape != (k,):
            raise ValueError(f"weights has shape {scal.shape}; expected ({k},), one per batch")
    else:
        scal = jnp.full((k,), 1.0 / k, jnp.float32)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    if batch_sharding is not None:
        spec = jax.sharding.PartitionSpec(None, *batch_sharding.spec)
        stacked_sh = jax.sharding.NamedSharding(batch_sharding.mesh, spec)
        stacked = jax.tree.map(
            lambda x: jax.lax.with_sharding_constraint(
                x, stacked_sh if x.ndim == 3 else _drop_last(stacked_sh)
            ),
            stacked,
        )

    def objective(_, xs):
        batch, index = xs if key is not None else (xs, None)
        return None, preference_gradient(
            state.params,
            reference,
            batch,
            graphdef=graphdef,
            algorithm="dpo",
            beta=beta,
            label_smoothing=label_smoothing,
            grad_accum_steps=grad_accum_steps,
            batch_sharding=batch_sharding,
            kl_metric=kl_metric,
            base_graphdef=base_graphdef,
            dropout=dropout,
            key=None if key is None else jax.random.fold_in(key, index),
        )

    # No key: the scan runs over the batches alone (bitwise the dropout-free step).
    xs = stacked if key is None else (stacked, jnp.arange(k))
    _, (grads, per) = jax.lax.scan(objective, None, xs)  # leaves [K, ...]
    direction, info = aggregate(grads, aggregator=aggregator, weights=weights, c=c)
    sq = sum(
        jnp.sum(jnp.square(g.astype(jnp.float32)).reshape(k, -1), axis=1)
        for g in jax.tree.leaves(grads)
    )
    per = {**per, "grad_norm": jnp.sqrt(sq), "agg_weight": info.weights,
           "agg_coef": info.coefficients, "agg_cos": info.cosines}  # fmt: skip

    ok = jnp.all(jnp.isfinite(per["loss"])) & jnp.all(jnp.isfinite(per["grad_norm"]))
    new_state, update_metrics = apply_gradients(state, direction, tx, lr_schedule, ok=ok)
    metrics = {name: jnp.sum(scal * value) for name, value in per.items() if name in _SUMMED}
    tokens = sum(jnp.sum(b.chosen_attention_mask) + jnp.sum(b.rejected_attention_mask)
                 for b in batches)  # fmt: skip
    metrics.update(
        update_metrics,
        conflict=info.conflict.astype(jnp.float32),
        tokens=tokens.astype(jnp.float32),
    )
    for name in (n for n in PER_OBJECTIVE_METRICS if n in per):
        for i in range(k):
            metrics[f"{name}_{i}"] = per[name][i].astype(jnp.float32)
    return new_state, metrics


def _drop_last(sharding):
    spec = sharding.spec
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec[:2]))


__all__ = [
    "AGGREGATORS",
    "PER_OBJECTIVE_METRICS",
    "aggregate",
    "multiobjective_train_step",
    "uses_weights",
]
