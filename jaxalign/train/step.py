"""The preference-optimisation train step: a pure function of (state, reference params,
batch), jitted once. The loss is DPO, IPO or robust DPO (``algorithm.name``).

One step on a global batch of ``B`` preference pairs:

1. split the batch into ``k = grad_accum_steps`` micro-batches (row ``i`` goes to
   micro-batch ``i mod k``, so every micro-batch stays spread over all batch
   shards) and, for each, compute the sequence log-probabilities of chosen and
   rejected responses under the policy and the frozen reference;
2. accumulate the gradient of the *summed* per-pair loss over real pairs
   (``example_mask``), then divide by their number: the result is the gradient
   of the batch-mean loss, independent of ``k`` up to float rounding;
3. clip and apply AdamW;
4. if the loss or the gradient norm is not finite, keep the old parameters and
   optimizer state (the driver then stops and names the step).

The per-pair losses, with ``h = (log π_w − log π_ref,w) − (log π_l − log π_ref,l)``
the anchored log-ratio (:mod:`jaxalign.losses`):

* ``"dpo"`` — :func:`jaxalign.losses.dpo_loss`, ``(1−ε)softplus(−βh) + ε softplus(βh)``;
* ``"ipo"`` — :func:`jaxalign.losses.ipo_loss`, ``(h − 1/(2τ))²``;
* ``"robust_dpo"`` — :func:`jaxalign.losses.robust_dpo_loss`,
  ``[(1−ε)softplus(−βh) − ε softplus(βh)]/(1−2ε)`` (ε = flip rate; not bounded below).

Metrics (all replicated scalars, means over real pairs): ``loss``, ``accuracy``
(``h > 0``), ``chosen_reward``, ``rejected_reward`` — the implicit rewards, the
β-scaled log-ratios ``β(log π − log π_ref)`` for the logistic losses (DPO, robust
DPO) and the plain log-ratios ``log π − log π_ref`` for IPO, which has no β —
``margin`` = ``chosen_reward − rejected_reward`` (``βh``, resp. ``h``),
``kl_ref`` (exact KL(π‖π_ref) of the next-token distributions, summed over the
response positions of the batch's chosen and rejected sequences: the policy's
drift from the reference along the data, computed over the whole vocabulary, so
it needs no on-policy samples), ``log_ratio`` (mean sequence log π/π_ref on the
data), ``policy_chosen_logp``, ``policy_rejected_logp``, ``grad_norm`` (before
clipping), ``param_norm``, ``update_norm``, ``lr``, ``tokens`` (non-padding tokens),
``computed_tokens`` (positions computed, padding included) and ``finite``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxalign.data import PackedPreferenceBatch, PreferenceBatch
from jaxalign.losses import dpo_loss, ipo_loss, robust_dpo_loss
from jaxalign.models.logprobs import chunked_kl, chunked_token_logprobs
from jaxalign.parallel import shard_batch
from jaxalign.train.state import TrainState

_SUMMED = ("loss", "accuracy", "margin", "chosen_reward", "rejected_reward", "kl_ref",
           "log_ratio", "policy_chosen_logp", "policy_rejected_logp")  # fmt: skip


#: Losses :func:`preference_train_step` computes (``algorithm.name`` of the train config).
LOSSES = ("dpo", "ipo", "robust_dpo")


def _pair_losses(algorithm, pc, pr, rc, rr, *, beta, label_smoothing, tau, flip_rate):
    """``(loss, chosen_reward, rejected_reward, margin)`` per pair, each ``(b,)``."""
    if algorithm == "dpo":
        out = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=label_smoothing)
        return out.loss, out.chosen_reward, out.rejected_reward, out.margin
    if algorithm == "ipo":
        out = ipo_loss(pc, pr, rc, rr, tau=tau)
        return out.loss, pc - rc, pr - rr, out.logit
    if algorithm == "robust_dpo":
        out = robust_dpo_loss(pc, pr, rc, rr, beta=beta, flip_rate=flip_rate)
        b = jnp.asarray(beta, pc.dtype)
        return out.loss, b * (pc - rc), b * (pr - rr), b * out.logit
    raise ValueError(f"algorithm must be one of {LOSSES}, got {algorithm!r}")


def _forward(model, batch, sides: int):
    """Per-sequence response log-probs ``(sides·b,)``, hidden states and scoring info.

    A padded batch runs chosen and rejected as one ``(2b, L)`` batch; a packed batch runs
    its rows and sums each sequence's tokens with ``segment_sum``.
    """
    weight, tied = model.head_weights()
    chunk = model.config.logprob_chunk_size
    if isinstance(batch, PackedPreferenceBatch):
        ids, seg = batch.input_ids, batch.segment_ids
        hidden = model.model.encode(
            ids, positions=batch.positions, segment_ids=seg, branch_ids=batch.branch_ids
        )
        per_token = chunked_token_logprobs(hidden, weight, tied, ids, chunk)
        scored = batch.loss_mask.astype(bool)
        per_token = jnp.where(scored, per_token, jnp.zeros((), jnp.float32))
        seq = jax.ops.segment_sum(
            per_token.reshape(-1), batch.sequence_index.reshape(-1), num_segments=sides
        )
        return seq, hidden, scored
    ids = jnp.concatenate([batch.chosen_input_ids, batch.rejected_input_ids])
    attn = jnp.concatenate([batch.chosen_attention_mask, batch.rejected_attention_mask])
    mask = jnp.concatenate([batch.chosen_loss_mask, batch.rejected_loss_mask])
    scored = mask.astype(bool) & attn.astype(bool)
    hidden = model.model.encode(ids, attn)
    per_token = chunked_token_logprobs(hidden, weight, tied, ids, chunk)
    per_token = jnp.where(scored, per_token, jnp.zeros((), jnp.float32))
    return per_token.sum(axis=-1), hidden, scored


def _sequence_kl(policy, reference, hidden, ref_hidden, scored, batch, sides: int):
    """KL(π‖π_ref) of the next-token distributions summed over each sequence's response."""
    chunk = policy.config.logprob_chunk_size
    kl = chunked_kl(hidden, policy.head_weights(), ref_hidden, reference.head_weights(), chunk)
    kl = jnp.where(scored, kl, jnp.zeros((), jnp.float32))
    if isinstance(batch, PackedPreferenceBatch):
        return jax.ops.segment_sum(
            kl.reshape(-1), batch.sequence_index.reshape(-1), num_segments=sides
        )
    return kl.sum(axis=-1)


def reference_sequence_logprobs(
    reference: nnx.State, batch: PreferenceBatch | PackedPreferenceBatch, *, graphdef
) -> tuple[jax.Array, jax.Array]:
    """``(log π_ref(chosen), log π_ref(rejected))``, each ``(B,)``: what the step computes
    for the frozen reference, so it can be computed once and stored with the data
    (``PreferenceBatch.reference_*``) instead of in every step."""
    b = batch.example_mask.shape[0]
    seq, _, _ = _forward(nnx.merge(graphdef, reference), batch, 2 * b)
    return seq[:b], seq[b:]


def _microbatch_sums(params, reference, batch, *, graphdef, loss_fn, kl_metric: bool = True):
    """Summed (over real pairs) loss and metric sums of one micro-batch."""
    policy = nnx.merge(graphdef, params)
    b = batch.example_mask.shape[0]
    seq, hidden, scored = _forward(policy, batch, 2 * b)
    precomputed = batch.reference_chosen_logp is not None
    ref_hidden = None
    if precomputed:
        ref_seq = jnp.concatenate([batch.reference_chosen_logp, batch.reference_rejected_logp])
    if not precomputed or kl_metric:
        # Fenced off from the policy's computation so XLA compiles it exactly as the
        # standalone reference_sequence_logprobs: precomputed values give the same bits.
        ref_params, ref_batch = jax.lax.optimization_barrier((reference, batch))
        ref = nnx.merge(graphdef, ref_params)
        ref_out = jax.lax.stop_gradient(_forward(ref, ref_batch, 2 * b))
        ref_forward, ref_hidden, _ = jax.lax.optimization_barrier(ref_out)
        if not precomputed:
            ref_seq = ref_forward
    pc, pr, rc, rr = seq[:b], seq[b:], ref_seq[:b], ref_seq[b:]
    loss, chosen_reward, rejected_reward, margin = loss_fn(pc, pr, rc, rr)
    w = batch.example_mask
    w2 = jnp.concatenate([w, w]) * jnp.asarray(0.5, w.dtype)  # per pair: mean of both sides
    sums = {
        "loss": jnp.sum(w * loss),
        "accuracy": jnp.sum(w * (margin > 0).astype(w.dtype)),
        "margin": jnp.sum(w * margin),
        "chosen_reward": jnp.sum(w * chosen_reward),
        "rejected_reward": jnp.sum(w * rejected_reward),
        "log_ratio": jnp.sum(w2 * jax.lax.stop_gradient(jnp.concatenate([pc - rc, pr - rr]))),
        "policy_chosen_logp": jnp.sum(w * jax.lax.stop_gradient(pc)),
        "policy_rejected_logp": jnp.sum(w * jax.lax.stop_gradient(pr)),
    }
    if kl_metric:
        ref = nnx.merge(graphdef, reference)
        kl_seq = _sequence_kl(policy, ref, hidden, ref_hidden, scored, batch, 2 * b)
        sums["kl_ref"] = jnp.sum(w2 * kl_seq)
    return sums["loss"], sums


def preference_gradient(
    params: nnx.State,
    reference: nnx.State,
    batch: PreferenceBatch,
    *,
    graphdef: nnx.GraphDef,
    algorithm: str = "dpo",
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    tau: float = 0.1,
    flip_rate: float = 0.0,
    grad_accum_steps: int = 1,
    batch_sharding: Any = None,
    kl_metric: bool = True,
) -> tuple[nnx.State, dict[str, jax.Array]]:
    """Gradient of the batch-mean preference loss and the batch-mean metrics (steps 1-2).

    The gradient of the sum over real pairs, accumulated over ``grad_accum_steps``
    micro-batches, divided by the number of real pairs. Shared by
    :func:`preference_train_step` and the multi-objective step
    (:func:`jaxalign.train.multiobjective.multiobjective_train_step`), which maps it
    over its objectives.

    Returns:
        ``(grads, metrics)``: a gradient shaped like ``params`` and the means of
        ``loss``, ``accuracy``, ``margin``, … (the summed metrics of the module docstring).
    """
    k = grad_accum_steps
    loss_fn = functools.partial(
        _pair_losses,
        algorithm,
        beta=beta,
        label_smoothing=label_smoothing,
        tau=tau,
        flip_rate=flip_rate,
    )
    sums_fn = functools.partial(
        _microbatch_sums, graphdef=graphdef, loss_fn=loss_fn, kl_metric=kl_metric
    )
    summed = _SUMMED if kl_metric else tuple(n for n in _SUMMED if n != "kl_ref")
    grad_fn = jax.grad(sums_fn, has_aux=True)

    if k == 1:
        grads, sums = grad_fn(params, reference, batch)
    else:

        def split(x):
            x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
            return x

        micro = jax.tree.map(split, batch)

        def body(carry, mb):
            if batch_sharding is not None:
                mb = jax.tree.map(
                    lambda x: jax.lax.with_sharding_constraint(
                        x, batch_sharding if x.ndim == 2 else _drop_last(batch_sharding)
                    ),
                    mb,
                )
            g, s = grad_fn(params, reference, mb)
            g = jax.tree.map(lambda x: x.astype(jnp.float32), g)  # accumulate in float32
            return jax.tree.map(jnp.add, carry, (g, s)), None

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        (grads, sums), _ = jax.lax.scan(body, (zeros, _zero_sums(summed)), micro)

    count = jnp.maximum(jnp.sum(batch.example_mask), jnp.ones((), jnp.float32))
    # The gradient of the batch mean, in each parameter's dtype (bf16 parameters keep bf16
    # gradients and Adam moments, so the state's dtypes never change between steps).
    grads = jax.tree.map(
        lambda g, p: (g.astype(jnp.float32) / count).astype(p.dtype), grads, params
    )
    return grads, {name: sums[name] / count for name in summed}


def preference_train_step(
    state: TrainState,
    reference: nnx.State,
    batch: PreferenceBatch,
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    lr_schedule: optax.Schedule,
    algorithm: str = "dpo",
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    tau: float = 0.1,
    flip_rate: float = 0.0,
    grad_accum_steps: int = 1,
    batch_sharding: Any = None,
    kl_metric: bool = True,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step of an offline preference loss (pure; jit it with donation of ``state``).

    Args:
        state: the current :class:`TrainState`.
        reference: frozen reference parameters (same tree and sharding as ``state.params``).
        batch: a global :class:`~jaxalign.data.PreferenceBatch` of ``B`` pairs.
        graphdef: the model's graph definition (static).
        tx: the optimizer; ``lr_schedule`` only feeds the ``lr`` metric.
        algorithm: ``"dpo"``, ``"ipo"`` or ``"robust_dpo"`` (see the module docstring).
        beta: β of DPO and robust DPO (ignored by IPO).
        label_smoothing: DPO's ε (conservative DPO).
        tau: IPO's τ; the log-ratio target is ``1/(2τ)``.
        flip_rate: robust DPO's label-flip rate ε ∈ [0, ½).
        grad_accum_steps: micro-batches ``k`` (``B`` divisible by ``k``).
        batch_sharding: sharding of a ``(batch, length)`` micro-batch array, to keep
            micro-batches spread over the batch shards (None: no constraint).
        kl_metric: compute the ``kl_ref`` metric (a forward pass of the reference and a
            second pass over the vocabulary; needs the reference in the step even when
            its log-probs come precomputed with the batch).

    ``batch`` is a padded :class:`~jaxalign.data.PreferenceBatch` or a
    :class:`~jaxalign.data.PackedPreferenceBatch`; when it carries
    ``reference_chosen_logp`` / ``reference_rejected_logp`` (precomputed once with
    :func:`reference_sequence_logprobs`), the reference forward pass is skipped.

    Returns:
        ``(new_state, metrics)``.

    Raises:
        ValueError: for an unknown ``algorithm`` or an invalid hyperparameter.
    """
    if algorithm not in LOSSES:
        raise ValueError(f"algorithm must be one of {LOSSES}, got {algorithm!r}")
    grads, metrics = preference_gradient(
        state.params,
        reference,
        batch,
        graphdef=graphdef,
        algorithm=algorithm,
        beta=beta,
        label_smoothing=label_smoothing,
        tau=tau,
        flip_rate=flip_rate,
        grad_accum_steps=grad_accum_steps,
        batch_sharding=batch_sharding,
        kl_metric=kl_metric,
    )
    next_step = state.step + 1

    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    new_state = TrainState(next_step, params, opt_state, state.rng)
    # A non-finite step changes nothing, so the last good state can still be saved.
    new_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state, state)
    if isinstance(batch, PackedPreferenceBatch):
        # The pairs' own tokens (a shared prompt counts for both responses), not the
        # packed layout's, so tokens/s compares across layouts.
        real = batch.segment_ids > 0
        prefix = jnp.sum(real & (batch.branch_ids == 0))
        tokens = jnp.sum(real) + jnp.where(jnp.any(batch.branch_ids > 0), prefix, 0)
    else:
        tokens = jnp.sum(batch.chosen_attention_mask) + jnp.sum(batch.rejected_attention_mask)
    metrics.update(
        grad_norm=grad_norm,
        param_norm=optax.tree.norm(new_state.params),
        update_norm=optax.tree.norm(updates),
        lr=jnp.asarray(lr_schedule(state.step), jnp.float32),
        tokens=tokens.astype(jnp.float32),
        # Positions the step computes (real tokens + padding; packed rows × width).
        computed_tokens=jnp.asarray(_computed_tokens(batch), jnp.float32),
        finite=finite.astype(jnp.float32),
    )
    return new_state, metrics


def _computed_tokens(batch) -> int:
    if isinstance(batch, PackedPreferenceBatch):
        return batch.input_ids.size
    return batch.chosen_input_ids.size + batch.rejected_input_ids.size


def dpo_train_step(
    state: TrainState,
    reference: nnx.State,
    batch: PreferenceBatch,
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    lr_schedule: optax.Schedule,
    beta: float,
    label_smoothing: float = 0.0,
    grad_accum_steps: int = 1,
    batch_sharding: Any = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One DPO optimizer step: :func:`preference_train_step` with ``algorithm="dpo"``."""
    return preference_train_step(
        state,
        reference,
        batch,
        graphdef=graphdef,
        tx=tx,
        lr_schedule=lr_schedule,
        algorithm="dpo",
        beta=beta,
        label_smoothing=label_smoothing,
        grad_accum_steps=grad_accum_steps,
        batch_sharding=batch_sharding,
    )


def shard_preference_batch(batch, mesh, rules):
    """Global arrays from a process-local padded or packed batch (``shard_batch``); a packed
    batch's row and pair arrays have different leading sizes, so they are placed apart."""
    if not isinstance(batch, PackedPreferenceBatch):
        return shard_batch(batch, mesh, rules, logical_axes=("batch",))
    rows = shard_batch(tuple(batch[:6]), mesh, rules, logical_axes=("batch",))
    pairs = shard_batch(tuple(batch[6:]), mesh, rules, logical_axes=("batch",))
    return PackedPreferenceBatch(*rows, *pairs)


def _zero_sums(names) -> dict[str, jax.Array]:
    return {name: jnp.zeros((), jnp.float32) for name in names}


def _drop_last(sharding):
    spec = sharding.spec
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec[:1]))


__all__ = [
    "LOSSES",
    "dpo_train_step",
    "preference_gradient",
    "preference_train_step",
    "reference_sequence_logprobs",
    "shard_preference_batch",
]
