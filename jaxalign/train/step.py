"""The preference-optimisation train step: a pure function of (state, reference params,
batch), jitted once. The loss is DPO, IPO, robust DPO, RPO, SimPO, ORPO or KTO
(``algorithm.name``).

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
  ``[(1−ε)softplus(−βh) − ε softplus(βh)]/(1−2ε)`` (ε = flip rate; not bounded below);
* ``"rpo"`` — :func:`jaxalign.losses.rpo_loss`, DPO ``+ α·(−log π_w/|y_w|)``;
* ``"simpo"`` — :func:`jaxalign.losses.simpo_loss`, ``softplus(−(β ā_w − β ā_l − γ))`` with
  ``ā = log π/|y|`` (``|y|`` = the response's scored tokens);
* ``"orpo"`` — :func:`jaxalign.losses.orpo_loss`,
  ``−ā_w + λ·softplus(−(log odds ā_w − log odds ā_l))``;
* ``"kto"`` — :func:`jaxalign.losses.kto_loss` on an :class:`~jaxalign.data.UnpairedBatch`
  (one labelled completion per row): ``λ_D σ(−β(r − z₀))`` (desirable) or ``λ_U σ(β(r − z₀))``
  (undesirable), ``r = log π − log π_ref``, ``z₀`` the clamped, detached mean log-ratio of the
  batch's mismatched sequences (:func:`jaxalign.losses.kto_reference_point`, per micro-batch).

SimPO and ORPO are reference-free (:data:`REFERENCE_FREE_LOSSES`): the step takes
``reference=None`` and runs no reference forward pass.

LoRA dropout (``dropout`` > 0 with a step ``key``): the policy's forwards drop the adapters'
inputs (:func:`jaxalign.models.lora.with_dropout`), micro-batch ``i`` drawing its masks from
``fold_in(key, i)`` (the whole batch from ``key`` when ``k = 1``); KTO's forward-only pass
over the mismatched sequences draws from ``fold_in(micro-batch key, 1)``. π_ref — the base
with adapters off, or the log-probs precomputed with the batch — never sees dropout, nor
does :func:`reference_sequence_logprobs`. ``dropout = 0`` or no key is bitwise the
dropout-free step.

Metrics (all replicated scalars, means over real pairs): ``loss``, ``accuracy``
(``h > 0``), ``chosen_reward``, ``rejected_reward`` — the implicit rewards, the
β-scaled log-ratios ``β(log π − log π_ref)`` for the logistic losses (DPO, robust
DPO) and the plain log-ratios ``log π − log π_ref`` for IPO, which has no β —
``margin`` = ``chosen_reward − rejected_reward`` (``βh``, resp. ``h``; SimPO: ``β ā``, ORPO:
the log odds, RPO: DPO's, plus the mean ``nll`` of the chosen responses, ORPO also its
``odds_ratio_loss``),
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

from jaxalign.data import PackedPreferenceBatch, PreferenceBatch, UnpairedBatch
from jaxalign.losses import (
    dpo_loss,
    ipo_loss,
    kto_loss,
    kto_reference_point,
    length_normalised_logp,
    orpo_loss,
    robust_dpo_loss,
    rpo_loss,
    simpo_loss,
)
from jaxalign.models.logprobs import chunked_kl, chunked_token_logprobs
from jaxalign.models.lora import with_dropout
from jaxalign.parallel import shard_batch
from jaxalign.train.state import TrainState, apply_gradients

_SUMMED = ("loss", "accuracy", "margin", "chosen_reward", "rejected_reward", "kl_ref",
           "log_ratio", "policy_chosen_logp", "policy_rejected_logp")  # fmt: skip


#: Losses :func:`preference_train_step` computes (``algorithm.name`` of the train config).
LOSSES = ("dpo", "ipo", "robust_dpo", "rpo", "simpo", "orpo", "kto")
#: Losses that never read the reference model: the step runs no reference forward pass.
REFERENCE_FREE_LOSSES = ("simpo", "orpo")
# Per-pair metrics some losses add (means over real pairs, like the others).
_EXTRA_METRICS = {"rpo": ("nll",), "orpo": ("nll", "odds_ratio_loss")}
# KTO's metrics (means over real examples; desirable_/undesirable_reward are finished as
# means over each kind in preference_gradient).
_KTO_SUMMED = ("loss", "reward", "desirable", "desirable_reward", "undesirable_reward",
               "reference_point", "log_ratio", "policy_logp", "kl_ref")  # fmt: skip


def _pair_losses(algorithm, pc, pr, rc, rr, nc, nr, *, beta, label_smoothing, tau, flip_rate,
                 gamma, nll_weight, odds_ratio_weight):  # fmt: skip
    """``(loss, chosen_reward, rejected_reward, margin, extras)`` per pair, each ``(b,)``;
    ``nc``/``nr`` are the responses' token counts, ``rc``/``rr`` None when reference-free."""
    b = jnp.asarray(beta, pc.dtype)
    if algorithm == "dpo":
        out = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=label_smoothing)
        return out.loss, out.chosen_reward, out.rejected_reward, out.margin, {}
    if algorithm == "ipo":
        out = ipo_loss(pc, pr, rc, rr, tau=tau)
        return out.loss, pc - rc, pr - rr, out.logit, {}
    if algorithm == "robust_dpo":
        out = robust_dpo_loss(pc, pr, rc, rr, beta=beta, flip_rate=flip_rate)
        return out.loss, b * (pc - rc), b * (pr - rr), b * out.logit, {}
    if algorithm == "rpo":
        out = rpo_loss(pc, pr, rc, rr, nc, beta=beta, nll_weight=nll_weight)
        return out.loss, b * (pc - rc), b * (pr - rr), b * out.logit, {"nll": out.nll}
    if algorithm == "simpo":
        out = simpo_loss(pc, pr, nc, nr, beta=beta, gamma=gamma)
        chosen, rejected = b * length_normalised_logp(pc, nc), b * length_normalised_logp(pr, nr)
        return out.loss, chosen, rejected, chosen - rejected, {}
    if algorithm == "orpo":
        out = orpo_loss(pc, pr, nc, nr, odds_ratio_weight=odds_ratio_weight)
        extras = {"nll": out.nll, "odds_ratio_loss": out.odds_ratio_loss}
        return out.loss, out.log_odds_w, out.log_odds_l, out.log_odds_w - out.log_odds_l, extras
    raise ValueError(f"algorithm must be one of {LOSSES}, got {algorithm!r}")


def _metric_names(algorithm: str, kl_metric: bool) -> tuple[str, ...]:
    """The summed metrics of ``algorithm``'s step."""
    base = _KTO_SUMMED if algorithm == "kto" else _SUMMED
    drop = {"kl_ref"} if not kl_metric else set()
    if algorithm in REFERENCE_FREE_LOSSES:
        drop.add("log_ratio")
    return (*(n for n in base if n not in drop), *_EXTRA_METRICS.get(algorithm, ()))


def _forward(model, batch, sides: int):
    """Per-sequence response log-probs ``(sides·b,)``, hidden states and scoring info.

    A padded batch runs chosen and rejected as one ``(2b, L)`` batch; a packed batch runs
    its rows and sums each sequence's tokens with ``segment_sum``.
    """
    if isinstance(batch, PackedPreferenceBatch):
        weight, tied = model.head_weights()
        chunk = model.config.logprob_chunk_size
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
    return _padded_forward(model, ids, attn, mask)


def _padded_forward(model, ids, attn, mask):
    """Response log-probs ``(rows,)``, hidden states and scored positions of padded rows."""
    weight, tied = model.head_weights()
    chunk = model.config.logprob_chunk_size
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


def _token_counts(scored, batch, sides: int) -> jax.Array:
    """Scored (response) tokens of each sequence, ``(sides,)`` float32: SimPO's and ORPO's
    ``|y|``."""
    ones = scored.astype(jnp.float32)
    if isinstance(batch, PackedPreferenceBatch):
        return jax.ops.segment_sum(
            ones.reshape(-1), batch.sequence_index.reshape(-1), num_segments=sides
        )
    return ones.sum(axis=-1)


def _policy_model(graphdef, params, reference, base_graphdef, dropout=0.0, key=None):
    """The policy: ``params`` alone, or with LoRA (``base_graphdef`` given) the adapters
    ``params`` on the frozen base weights ``reference``, their inputs dropped at rate
    ``dropout`` with masks from ``key`` (none when either is off)."""
    if base_graphdef is None:
        model = nnx.merge(graphdef, params)
    else:
        model = nnx.merge(graphdef, params, reference)
    return with_dropout(model, dropout, key=key)


def _reference_model(graphdef, reference, base_graphdef):
    """π_ref: the frozen parameters; with LoRA the base graph (adapters off) on them."""
    return nnx.merge(graphdef if base_graphdef is None else base_graphdef, reference)


def _microbatch_sums(
    params,
    reference,
    batch,
    *,
    graphdef,
    loss_fn,
    kl_metric: bool = True,
    uses_reference: bool = True,
    extras: tuple[str, ...] = (),
    base_graphdef=None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
):
    """Summed (over real pairs) loss and metric sums of one micro-batch (the policy's
    adapter dropout drawn from ``key``; the reference runs without it)."""
    policy = _policy_model(graphdef, params, reference, base_graphdef, dropout, key)
    b = batch.example_mask.shape[0]
    seq, hidden, scored = _forward(policy, batch, 2 * b)
    counts = _token_counts(scored, batch, 2 * b)
    precomputed = uses_reference and batch.reference_chosen_logp is not None
    ref_hidden = ref_seq = None
    if precomputed:
        ref_seq = jnp.concatenate([batch.reference_chosen_logp, batch.reference_rejected_logp])
    if uses_reference and (not precomputed or kl_metric):
        # Fenced off from the policy's computation so XLA compiles it exactly as the
        # standalone reference_sequence_logprobs: precomputed values give the same bits.
        ref_params, ref_batch = jax.lax.optimization_barrier((reference, batch))
        ref = _reference_model(graphdef, ref_params, base_graphdef)
        ref_out = jax.lax.stop_gradient(_forward(ref, ref_batch, 2 * b))
        ref_forward, ref_hidden, _ = jax.lax.optimization_barrier(ref_out)
        if not precomputed:
            ref_seq = ref_forward
    pc, pr = seq[:b], seq[b:]
    rc, rr = (None, None) if ref_seq is None else (ref_seq[:b], ref_seq[b:])
    loss, chosen_reward, rejected_reward, margin, more = loss_fn(pc, pr, rc, rr, counts[:b],
                                                                 counts[b:])  # fmt: skip
    w = batch.example_mask
    w2 = jnp.concatenate([w, w]) * jnp.asarray(0.5, w.dtype)  # per pair: mean of both sides
    sums = {
        "loss": jnp.sum(w * loss),
        "accuracy": jnp.sum(w * (margin > 0).astype(w.dtype)),
        "margin": jnp.sum(w * margin),
        "chosen_reward": jnp.sum(w * chosen_reward),
        "rejected_reward": jnp.sum(w * rejected_reward),
        "policy_chosen_logp": jnp.sum(w * jax.lax.stop_gradient(pc)),
        "policy_rejected_logp": jnp.sum(w * jax.lax.stop_gradient(pr)),
    }
    if uses_reference:
        log_ratio = jax.lax.stop_gradient(jnp.concatenate([pc - rc, pr - rr]))
        sums["log_ratio"] = jnp.sum(w2 * log_ratio)
    for name in extras:
        sums[name] = jnp.sum(w * jax.lax.stop_gradient(more[name]))
    if kl_metric:
        ref = _reference_model(graphdef, reference, base_graphdef)
        kl_seq = _sequence_kl(policy, ref, hidden, ref_hidden, scored, batch, 2 * b)
        sums["kl_ref"] = jnp.sum(w2 * kl_seq)
    return sums["loss"], sums


def _kto_microbatch_sums(
    params,
    reference,
    batch,
    *,
    graphdef,
    loss_fn,
    kl_metric: bool = True,
    base_graphdef=None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
):
    """KTO's summed loss and metric sums of one micro-batch of an :class:`UnpairedBatch`.

    The completions run with gradients; the mismatched sequences only feed the detached
    reference point z₀, so the policy sees them through ``stop_gradient`` (no backward pass).
    LoRA dropout: the completions draw from ``key``, the mismatched pass from
    ``fold_in(key, 1)``; the reference runs without it.
    """
    policy = _policy_model(graphdef, params, reference, base_graphdef, dropout, key)
    ref = _reference_model(graphdef, reference, base_graphdef)
    own = (batch.input_ids, batch.attention_mask, batch.loss_mask)
    mismatched = (batch.kl_input_ids, batch.kl_attention_mask, batch.kl_loss_mask)
    logp, hidden, scored = _padded_forward(policy, *own)
    frozen_policy = _policy_model(graphdef, jax.lax.stop_gradient(params), reference,
                                  base_graphdef, dropout, _micro_key(key, 1))  # fmt: skip
    kl_logp, _, _ = _padded_forward(frozen_policy, *mismatched)
    ref_logp, ref_hidden, _ = jax.lax.stop_gradient(_padded_forward(ref, *own))
    ref_kl_logp, _, _ = jax.lax.stop_gradient(_padded_forward(ref, *mismatched))
    w = batch.example_mask
    z0 = kto_reference_point(kl_logp, ref_kl_logp, w)
    out = loss_fn(logp, ref_logp, batch.desirable, z0)
    reward = jax.lax.stop_gradient(out.reward)
    good = w * batch.desirable
    sums = {
        "loss": jnp.sum(w * out.loss),
        "reward": jnp.sum(w * reward),
        "desirable": jnp.sum(good),
        "desirable_reward": jnp.sum(good * reward),
        "undesirable_reward": jnp.sum((w - good) * reward),
        "reference_point": jnp.sum(w) * out.reference_point,
        "log_ratio": jnp.sum(w * jax.lax.stop_gradient(logp - ref_logp)),
        "policy_logp": jnp.sum(w * jax.lax.stop_gradient(logp)),
    }
    if kl_metric:
        kl_seq = _sequence_kl(policy, ref, hidden, ref_hidden, scored, batch, 0)
        sums["kl_ref"] = jnp.sum(w * kl_seq)
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
    gamma: float = 0.0,
    nll_weight: float = 0.0,
    odds_ratio_weight: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    grad_accum_steps: int = 1,
    batch_sharding: Any = None,
    kl_metric: bool = True,
    base_graphdef: nnx.GraphDef | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
) -> tuple[nnx.State, dict[str, jax.Array]]:
    """Gradient of the batch-mean preference loss and the batch-mean metrics (steps 1-2).

    The gradient of the sum over real pairs, accumulated over ``grad_accum_steps``
    micro-batches, divided by the number of real pairs. Shared by
    :func:`preference_train_step` and the multi-objective step
    (:func:`jaxalign.train.multiobjective.multiobjective_train_step`), which maps it
    over its objectives.

    With LoRA (``base_graphdef``: the model's graph without adapters) ``params`` are the
    adapters only and ``reference`` the frozen base weights: the policy is the adapted
    model on them, π_ref the base model (adapters off) — one copy of the weights, and a
    gradient for the adapters alone. ``dropout`` > 0 with a ``key``: the policy's adapter
    dropout, micro-batch ``i`` drawing from ``fold_in(key, i)`` (``key`` itself when
    ``grad_accum_steps == 1``); π_ref never sees it; no key (or rate 0) is bitwise the
    dropout-free gradient.

    Returns:
        ``(grads, metrics)``: a gradient shaped like ``params`` and the means of
        ``loss``, ``accuracy``, ``margin``, … (the summed metrics of the module docstring).
    """
    k = grad_accum_steps
    if algorithm in REFERENCE_FREE_LOSSES and kl_metric:
        raise ValueError(
            f"kl_metric=True needs the reference model, which {algorithm} does not use; "
            "pass kl_metric=False"
        )
    if algorithm == "kto":
        loss_fn = functools.partial(kto_loss, beta=beta, desirable_weight=desirable_weight,
                                    undesirable_weight=undesirable_weight)  # fmt: skip
        sums_fn = functools.partial(
            _kto_microbatch_sums,
            graphdef=graphdef,
            loss_fn=loss_fn,
            kl_metric=kl_metric,
            base_graphdef=base_graphdef,
            dropout=dropout,
        )
    else:
        loss_fn = functools.partial(
            _pair_losses,
            algorithm,
            beta=beta,
            label_smoothing=label_smoothing,
            tau=tau,
            flip_rate=flip_rate,
            gamma=gamma,
            nll_weight=nll_weight,
            odds_ratio_weight=odds_ratio_weight,
        )
        sums_fn = functools.partial(
            _microbatch_sums,
            graphdef=graphdef,
            loss_fn=loss_fn,
            kl_metric=kl_metric,
            uses_reference=algorithm not in REFERENCE_FREE_LOSSES,
            extras=_EXTRA_METRICS.get(algorithm, ()),
            base_graphdef=base_graphdef,
            dropout=dropout,
        )
    summed = _metric_names(algorithm, kl_metric)
    grad_fn = jax.grad(lambda p, ref, mb, mb_key: sums_fn(p, ref, mb, key=mb_key), has_aux=True)

    if k == 1:
        grads, sums = grad_fn(params, reference, batch, key)
    else:

        def split(x):
            x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
            return x

        micro = jax.tree.map(split, batch)

        def body(carry, xs):
            mb, i = xs if key is not None else (xs, None)
            if batch_sharding is not None:
                mb = jax.tree.map(
                    lambda x: jax.lax.with_sharding_constraint(
                        x, batch_sharding if x.ndim == 2 else _drop_last(batch_sharding)
                    ),
                    mb,
                )
            g, s = grad_fn(params, reference, mb, _micro_key(key, i))
            g = jax.tree.map(lambda x: x.astype(jnp.float32), g)  # accumulate in float32
            return jax.tree.map(jnp.add, carry, (g, s)), None

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        # No key: the scan runs over the micro-batches alone (bitwise the dropout-free step).
        xs = micro if key is None else (micro, jnp.arange(k))
        (grads, sums), _ = jax.lax.scan(body, (zeros, _zero_sums(summed)), xs)

    count = jnp.maximum(jnp.sum(batch.example_mask), jnp.ones((), jnp.float32))
    # The gradient of the batch mean, in each parameter's dtype (bf16 parameters keep bf16
    # gradients and Adam moments, so the state's dtypes never change between steps).
    grads = jax.tree.map(
        lambda g, p: (g.astype(jnp.float32) / count).astype(p.dtype), grads, params
    )
    metrics = {name: sums[name] / count for name in summed}
    if algorithm == "kto":  # means over each kind (0 when a kind is absent)
        frac = metrics["desirable"]
        for name, share in (("desirable_reward", frac), ("undesirable_reward", 1 - frac)):
            safe = jnp.where(share > 0, share, jnp.ones((), share.dtype))
            metrics[name] = jnp.where(share > 0, metrics[name] / safe, jnp.zeros((), share.dtype))
    return grads, metrics


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
    gamma: float = 0.0,
    nll_weight: float = 0.0,
    odds_ratio_weight: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    grad_accum_steps: int = 1,
    batch_sharding: Any = None,
    kl_metric: bool = True,
    base_graphdef: nnx.GraphDef | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step of an offline preference loss (pure; jit it with donation of ``state``).

    Args:
        state: the current :class:`TrainState`.
        reference: frozen reference parameters (same tree and sharding as ``state.params``);
            None for the reference-free losses (:data:`REFERENCE_FREE_LOSSES`).
        batch: a global :class:`~jaxalign.data.PreferenceBatch` of ``B`` pairs (KTO: an
            :class:`~jaxalign.data.UnpairedBatch` of ``B`` labelled completions).
        graphdef: the model's graph definition (static).
        tx: the optimizer; ``lr_schedule`` only feeds the ``lr`` metric.
        algorithm: one of :data:`LOSSES` (see the module docstring).
        beta: β of DPO, robust DPO, RPO, SimPO and KTO (ignored by IPO and ORPO).
        label_smoothing: DPO's ε (conservative DPO).
        tau: IPO's τ; the log-ratio target is ``1/(2τ)``.
        flip_rate: robust DPO's label-flip rate ε ∈ [0, ½).
        gamma: SimPO's target reward margin γ ≥ 0.
        nll_weight: RPO's α ≥ 0, the weight of the chosen responses' mean token NLL.
        odds_ratio_weight: ORPO's λ ≥ 0, the weight of its odds-ratio term.
        desirable_weight, undesirable_weight: KTO's λ_D, λ_U > 0.
        grad_accum_steps: micro-batches ``k`` (``B`` divisible by ``k``).
        batch_sharding: sharding of a ``(batch, length)`` micro-batch array, to keep
            micro-batches spread over the batch shards (None: no constraint).
        kl_metric: compute the ``kl_ref`` metric (a forward pass of the reference and a
            second pass over the vocabulary; needs the reference in the step even when
            its log-probs come precomputed with the batch).
        base_graphdef: LoRA: the graph of the model without adapters; ``state.params``
            are then the adapters (the only arrays with optimizer state) and ``reference``
            the frozen base weights, π_ref = the base with adapters off (see
            :func:`preference_gradient`).
        dropout, key: LoRA dropout rate on the adapters' input and this step's key (the
            policy's forwards only, a mask per micro-batch; None: no dropout, bitwise the
            dropout-free step).

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
        gamma=gamma,
        nll_weight=nll_weight,
        odds_ratio_weight=odds_ratio_weight,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
        grad_accum_steps=grad_accum_steps,
        batch_sharding=batch_sharding,
        kl_metric=kl_metric,
        base_graphdef=base_graphdef,
        dropout=dropout,
        key=key,
    )
    new_state, update_metrics = apply_gradients(
        state, grads, tx, lr_schedule, ok=jnp.isfinite(metrics["loss"])
    )
    if isinstance(batch, PackedPreferenceBatch):
        # The pairs' own tokens (a shared prompt counts for both responses), not the
        # packed layout's, so tokens/s compares across layouts.
        real = batch.segment_ids > 0
        prefix = jnp.sum(real & (batch.branch_ids == 0))
        tokens = jnp.sum(real) + jnp.where(jnp.any(batch.branch_ids > 0), prefix, 0)
    elif isinstance(batch, UnpairedBatch):
        tokens = jnp.sum(batch.attention_mask) + jnp.sum(batch.kl_attention_mask)
    else:
        tokens = jnp.sum(batch.chosen_attention_mask) + jnp.sum(batch.rejected_attention_mask)
    metrics.update(
        update_metrics,
        tokens=tokens.astype(jnp.float32),
        # Positions the step computes (real tokens + padding; packed rows × width).
        computed_tokens=jnp.asarray(_computed_tokens(batch), jnp.float32),
    )
    return new_state, metrics


def _computed_tokens(batch) -> int:
    if isinstance(batch, PackedPreferenceBatch):
        return batch.input_ids.size
    if isinstance(batch, UnpairedBatch):
        return batch.input_ids.size + batch.kl_input_ids.size
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


def _micro_key(key: jax.Array | None, index) -> jax.Array | None:
    """Micro-batch ``index``'s dropout key (None stays None)."""
    return None if key is None else jax.random.fold_in(key, index)


def _zero_sums(names) -> dict[str, jax.Array]:
    return {name: jnp.zeros((), jnp.float32) for name in names}


def _drop_last(sharding):
    spec = sharding.spec
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec[:1]))


__all__ = [
    "LOSSES",
    "REFERENCE_FREE_LOSSES",
    "dpo_train_step",
    "preference_gradient",
    "preference_train_step",
    "reference_sequence_logprobs",
    "shard_preference_batch",
]
