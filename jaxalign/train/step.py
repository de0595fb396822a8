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
clipping), ``param_norm``, ``update_norm``, ``lr``, ``tokens`` (non-padding tokens)
and ``finite``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxalign.data import PreferenceBatch
from jaxalign.losses import dpo_loss, ipo_loss, robust_dpo_loss
from jaxalign.models import token_logprobs
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


def _microbatch_sums(params, reference, batch: PreferenceBatch, *, graphdef, loss_fn):
    """Summed (over real pairs) loss and metric sums of one micro-batch."""
    policy = nnx.merge(graphdef, params)
    ref = nnx.merge(graphdef, reference)

    # Chosen and rejected go through each model as one (2B, L) batch: one forward per model.
    ids = jnp.concatenate([batch.chosen_input_ids, batch.rejected_input_ids])
    attn = jnp.concatenate([batch.chosen_attention_mask, batch.rejected_attention_mask])
    mask = jnp.concatenate([batch.chosen_loss_mask, batch.rejected_loss_mask])
    b = batch.chosen_input_ids.shape[0]

    scored = mask.astype(bool) & attn.astype(bool)

    def forward(model):
        logits = model(ids, attention_mask=attn)
        per_token = jnp.where(scored, token_logprobs(logits, ids), jnp.zeros((), jnp.float32))
        # log-softmax at position t-1 is the distribution that scored token t.
        logp_next = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
        return per_token.sum(axis=-1), logp_next

    seq, logp_next = forward(policy)
    ref_seq, ref_next = jax.tree.map(jax.lax.stop_gradient, forward(ref))
    pc, pr, rc, rr = seq[:b], seq[b:], ref_seq[:b], ref_seq[b:]
    # KL(π‖π_ref) of the next-token distributions, summed over the response positions.
    logp_next = jax.lax.stop_gradient(logp_next)
    kl_tok = jnp.sum(jnp.exp(logp_next) * (logp_next - ref_next), axis=-1)
    kl_seq = jnp.sum(jnp.where(scored[:, 1:], kl_tok, jnp.zeros((), jnp.float32)), axis=-1)
    loss, chosen_reward, rejected_reward, margin = loss_fn(pc, pr, rc, rr)
    w = batch.example_mask
    w2 = jnp.concatenate([w, w]) * jnp.asarray(0.5, w.dtype)  # per pair: mean of both sides
    sums = {
        "loss": jnp.sum(w * loss),
        "accuracy": jnp.sum(w * (margin > 0).astype(w.dtype)),
        "margin": jnp.sum(w * margin),
        "chosen_reward": jnp.sum(w * chosen_reward),
        "rejected_reward": jnp.sum(w * rejected_reward),
        "kl_ref": jnp.sum(w2 * kl_seq),
        "log_ratio": jnp.sum(w2 * jax.lax.stop_gradient(jnp.concatenate([pc - rc, pr - rr]))),
        "policy_chosen_logp": jnp.sum(w * jax.lax.stop_gradient(pc)),
        "policy_rejected_logp": jnp.sum(w * jax.lax.stop_gradient(pr)),
    }
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
    sums_fn = functools.partial(_microbatch_sums, graphdef=graphdef, loss_fn=loss_fn)
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
            return jax.tree.map(jnp.add, carry, (g, s)), None

        zeros = jax.tree.map(jnp.zeros_like, (params, _zero_sums()))
        (grads, sums), _ = jax.lax.scan(body, zeros, micro)

    count = jnp.maximum(jnp.sum(batch.example_mask), jnp.ones((), jnp.float32))
    grads = jax.tree.map(lambda g: g / count, grads)
    return grads, {name: sums[name] / count for name in _SUMMED}


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
    )
    next_step = state.step + 1

    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    new_state = TrainState(next_step, params, opt_state, state.rng)
    # A non-finite step changes nothing, so the last good state can still be saved.
    new_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state, state)
    tokens = jnp.sum(batch.chosen_attention_mask) + jnp.sum(batch.rejected_attention_mask)
    metrics.update(
        grad_norm=grad_norm,
        param_norm=optax.tree.norm(new_state.params),
        update_norm=optax.tree.norm(updates),
        lr=jnp.asarray(lr_schedule(state.step), jnp.float32),
        tokens=tokens.astype(jnp.float32),
        finite=finite.astype(jnp.float32),
    )
    return new_state, metrics


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


def _zero_sums() -> dict[str, jax.Array]:
    return {name: jnp.zeros((), jnp.float32) for name in _SUMMED}


def _drop_last(sharding):
    spec = sharding.spec
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec[:1]))


__all__ = ["LOSSES", "dpo_train_step", "preference_gradient", "preference_train_step"]
