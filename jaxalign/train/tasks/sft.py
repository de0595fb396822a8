"""Supervised fine-tuning (``algorithm.name: sft``): the token NLL of completions, prompts masked.

The loss of a global batch is the mean negative log-likelihood over its completion
(assistant) tokens,

.. math::
    \\mathcal{L}(\\theta) = -\\frac{\\sum_{b,t} m_{bt} \\log \\pi_\\theta(y_{bt} \\mid y_{b,<t})}
                             {\\sum_{b,t} m_{bt}},

with ``m`` the batch's ``loss_mask`` (1 on completion tokens only: the prompt, other roles'
turns and padding carry no loss; :mod:`jaxalign.data.sft`). One step:

1. split the batch into ``k = grad_accum_steps`` micro-batches (row ``i`` → micro-batch
   ``i mod k``, so each stays spread over the batch shards) and accumulate the gradient of
   the *summed* token NLL;
2. divide by the batch's number of completion tokens (counted before the split): the
   gradient of the mean above, independent of ``k`` and of how the sequences are laid out
   (padded or packed) up to float rounding;
3. clip and apply AdamW; a non-finite loss or gradient keeps the old state (the engine then
   stops naming the step).

Packed batches (``data.packing``) put several sequences in one row; attention is restricted
to each sequence and positions restart per sequence (``segment_ids`` / ``positions``), so a
packed batch has exactly the per-token log-probs, and the loss, of its unpadded sequences.

Metrics: ``loss`` (the mean token NLL), ``perplexity`` (``exp(loss)``), ``target_tokens``,
``tokens`` (real tokens), ``computed_tokens`` (positions computed, padding included),
``grad_norm``, ``param_norm``, ``update_norm``, ``lr``; every ``logging.eval_every`` steps
(and at the end) ``eval_loss`` / ``eval_perplexity`` on the held-out rows
(``data.eval_path``, or the tiny held-out file).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxalign.data import (
    PackedSFTBatch,
    SFTBatch,
    build_sft_loader,
    format_sft_stats,
    load_sft_dataset,
    make_tiny_sft_dataset,
)
from jaxalign.models.logprobs import chunked_token_logprobs
from jaxalign.parallel import data_shard_info, shard_batch
from jaxalign.train.metrics import dpo_step_flops
from jaxalign.train.state import TrainState, apply_gradients
from jaxalign.train.tasks import common
from jaxalign.train.tasks.base import RunContext, Task


def sft_token_logprobs(model, batch: SFTBatch | PackedSFTBatch) -> jax.Array:
    """``log π(x_t | x_<t)`` of every position of a padded or packed batch, ``(rows, L)``
    float32 (chunked over the vocabulary: no ``(rows, L, V)`` logits)."""
    if isinstance(batch, PackedSFTBatch):
        hidden = model.model.encode(
            batch.input_ids, positions=batch.positions, segment_ids=batch.segment_ids
        )
    else:
        hidden = model.model.encode(batch.input_ids, batch.attention_mask)
    weight, tied = model.head_weights()
    return chunked_token_logprobs(
        hidden, weight, tied, batch.input_ids, model.config.logprob_chunk_size
    )


def sft_nll_sum(
    params: nnx.State,
    batch,
    *,
    graphdef: nnx.GraphDef,
    frozen: nnx.State | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
) -> jax.Array:
    """``Σ_{b,t} m_bt · (−log π(x_bt | x_b,<t))``: the summed completion-token NLL (LoRA:
    ``params`` the adapters on the frozen base weights ``frozen``, adapter dropout
    ``dropout`` drawn from ``key``)."""
    model = common.policy_model(graphdef, params, frozen, dropout=dropout, key=key)
    logp = sft_token_logprobs(model, batch)
    mask = batch.loss_mask.astype(jnp.float32)
    # where, not a product alone: a padding position's log-prob may be -inf.
    return -jnp.sum(jnp.where(mask != 0, logp, jnp.zeros((), jnp.float32)) * mask)


def split_micro_batches(batch, k: int):
    """``k`` micro-batches stacked on a leading axis (row ``i`` → micro-batch ``i mod k``)."""

    def split(x):
        return x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


def constrain_micro_batch(mb, batch_sharding):
    """A micro-batch kept spread over the batch shards (``(rows, L)`` and ``(rows,)`` arrays)."""
    if batch_sharding is None:
        return mb
    spec = jax.sharding.PartitionSpec(*batch_sharding.spec[:1])
    rows = jax.sharding.NamedSharding(batch_sharding.mesh, spec)
    return jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, batch_sharding if x.ndim == 2 else rows),
        mb,
    )


def sft_gradient(
    params: nnx.State,
    batch: SFTBatch | PackedSFTBatch,
    *,
    graphdef: nnx.GraphDef,
    grad_accum_steps: int = 1,
    batch_sharding: Any = None,
    frozen: nnx.State | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
) -> tuple[nnx.State, jax.Array, jax.Array]:
    """``(∇ mean token NLL, mean token NLL, completion tokens)`` of a global batch (steps 1-2
    of the module docstring); LoRA: the gradient over the adapters ``params`` only, with
    adapter dropout ``dropout`` (micro-batch ``i`` draws from ``fold_in(key, i)``)."""
    k = grad_accum_steps
    nll_sum = functools.partial(sft_nll_sum, graphdef=graphdef, frozen=frozen, dropout=dropout)
    grad_fn = jax.value_and_grad(lambda p, mb, mb_key: nll_sum(p, mb, key=mb_key))
    if k == 1:
        nll, grads = grad_fn(params, batch, key)
    else:
        micro = split_micro_batches(batch, k)

        def body(carry, xs):
            mb, i = xs if key is not None else (xs, None)
            mb_key = common.micro_key(key, i)
            nll, g = grad_fn(params, constrain_micro_batch(mb, batch_sharding), mb_key)
            g = jax.tree.map(lambda x: x.astype(jnp.float32), g)  # accumulate in float32
            return jax.tree.map(jnp.add, carry, (nll, g)), None

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        init = (jnp.zeros((), jnp.float32), zeros)
        xs = micro if key is None else (micro, jnp.arange(k))
        (nll, grads), _ = jax.lax.scan(body, init, xs)
    targets = jnp.sum(batch.loss_mask.astype(jnp.float32))
    count = jnp.maximum(targets, jnp.ones((), jnp.float32))
    grads = jax.tree.map(
        lambda g, p: (g.astype(jnp.float32) / count).astype(p.dtype), grads, params
    )
    return grads, nll / count, targets


def sft_train_step(
    state: TrainState,
    batch: SFTBatch | PackedSFTBatch,
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    lr_schedule: optax.Schedule,
    grad_accum_steps: int = 1,
    batch_sharding: Any = None,
    frozen: nnx.State | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SFT optimizer step (pure; jit it with ``state`` donated).

    Args:
        state: the current :class:`~jaxalign.train.state.TrainState`.
        batch: a global :class:`~jaxalign.data.SFTBatch` or
            :class:`~jaxalign.data.PackedSFTBatch`.
        graphdef: the policy's graph definition (static).
        tx: the optimizer; ``lr_schedule`` only feeds the ``lr`` metric.
        grad_accum_steps: micro-batches ``k`` (rows divisible by ``k``).
        batch_sharding: sharding of a ``(rows, length)`` micro-batch array (None: no
            constraint).
        frozen: LoRA: the frozen base weights; ``state.params`` are then the adapters
            (the only arrays with optimizer state) and ``graphdef`` the adapted graph.
        dropout, key: LoRA dropout rate on the adapters' input and this step's key (None:
            no dropout, bitwise the dropout-free step).

    Returns:
        ``(new_state, metrics)``; see the module docstring.
    """
    grads, loss, targets = sft_gradient(
        state.params,
        batch,
        graphdef=graphdef,
        grad_accum_steps=grad_accum_steps,
        batch_sharding=batch_sharding,
        frozen=frozen,
        dropout=dropout,
        key=key,
    )
    new_state, update_metrics = apply_gradients(
        state, grads, tx, lr_schedule, ok=jnp.isfinite(loss)
    )
    if isinstance(batch, PackedSFTBatch):
        tokens = jnp.sum(batch.segment_ids > 0)
    else:
        tokens = jnp.sum(batch.attention_mask)
    metrics = {
        "loss": loss,
        "perplexity": jnp.exp(loss),
        "target_tokens": targets,
        **update_metrics,
        "tokens": tokens.astype(jnp.float32),
        "computed_tokens": jnp.asarray(batch.input_ids.size, jnp.float32),
    }
    return new_state, metrics


def shard_sft_batch(batch, mesh, rules):
    """Global arrays from a process-local batch; a packed batch's row and example arrays
    have different leading sizes, so they are placed apart."""
    if isinstance(batch, SFTBatch):
        return shard_batch(batch, mesh, rules, logical_axes=("batch",))
    rows = shard_batch(tuple(batch[:4]), mesh, rules, logical_axes=("batch",))
    (examples,) = shard_batch((batch.example_mask,), mesh, rules, logical_axes=("batch",))
    return PackedSFTBatch(*rows, examples)


def eval_every(config, step: int) -> bool:
    """Whether step ``step`` (1-based) is an evaluation step: every ``logging.eval_every``
    steps and at the last step."""
    return step % config.logging.eval_every == 0 or step == config.run.steps


def heldout_config(ctx: RunContext, write_tiny) -> Any:
    """The data config of the held-out rows (``data.eval_path``, else the tiny held-out
    file ``write_tiny(path, rows, seed)`` when training on tiny data, else None), read in
    order, once, the last batch padded with masked rows."""
    config = ctx.config
    data, tiny = config.data, config.tiny_data
    if data.eval_path:
        path = data.eval_path
    elif not data.path and tiny.eval_rows:
        name = f"tiny-eval-p{jax.process_index()}.jsonl"
        # Another seed than the training rows: held-out prompts (and orders).
        path = str(write_tiny(ctx.out / "data" / name, tiny.eval_rows, tiny.seed + 1))
    else:
        return None
    return dataclasses.replace(
        data, path=path, eval_path="", shuffle=False, drop_last=False, num_epochs=1,
        packing=False,
    )  # fmt: skip


def row_multiple(ctx: RunContext, batch_sharding) -> tuple[int, int, int]:
    """``(shard, count, rows)``: this process's data shard of ``count`` and the multiple
    its packed rows per micro-batch must be (its share of the batch shards)."""
    shard, count = data_shard_info(ctx.config.data.batch_size, ctx.mesh, ctx.rules)
    axes = batch_sharding.spec[0] if len(batch_sharding.spec) else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
    shards = int(np.prod([ctx.mesh.shape[a] for a in axes]))
    return shard, count, max(1, shards // count)


class SFTTask(Task):
    """``algorithm.name: sft`` on prompt/completion or chat rows (padded or packed)."""

    name = "sft"
    reports_flops = True

    def __init__(self, ctx: RunContext):
        config = self.config = ctx.config
        self.ctx = ctx
        self.tokenizer = common.load_run_tokenizer(ctx)
        self.policy = common.build_policy(ctx, config.run.steps)
        common.check_vocab(self.tokenizer, self.policy.config)
        self.model_config = self.policy.config
        sh = self.policy.shardings
        self.state_shardings = sh.state
        self.lora = self.policy.lora
        # LoRA: the frozen base weights the adapters run on (no reference model otherwise).
        self.frozen_shardings = sh.reference if self.lora is not None else None
        data = config.data
        if not data.path:
            tiny = config.tiny_data
            path = make_tiny_sft_dataset(
                ctx.out / "data" / f"tiny-sft-p{jax.process_index()}.jsonl",
                tiny.num_rows,
                tiny.seed,
                num_words=tiny.num_words,
                rule=tiny.objectives[0],
            )
            data = dataclasses.replace(data, path=str(path))
        shard, count, multiple = row_multiple(ctx, sh.batch)
        self.loader = build_sft_loader(
            data,
            self.tokenizer,
            process_index=shard,
            process_count=count,
            micro_batches=config.optimizer.grad_accum_steps,
            row_multiple=multiple,
        )
        self.eval_loader = None
        tiny_eval = functools.partial(
            make_tiny_sft_dataset,
            num_words=config.tiny_data.num_words,
            rule=config.tiny_data.objectives[0],
        )
        eval_data = heldout_config(ctx, tiny_eval)
        if eval_data is not None:
            dataset = load_sft_dataset(eval_data, self.tokenizer)
            self._eval_args = (eval_data, dataset, shard, count)
            self.eval_loader = self._fresh_eval_loader()
        if data.packing:
            self.batch_shardings = PackedSFTBatch(*(sh.batch,) * 4, sh.example)
        else:
            self.batch_shardings = SFTBatch(*(sh.batch,) * 3, sh.example)
        self._step = functools.partial(
            sft_train_step,
            graphdef=self.policy.graphdef,
            tx=self.policy.tx,
            lr_schedule=self.policy.lr_schedule,
            grad_accum_steps=config.optimizer.grad_accum_steps,
            batch_sharding=sh.batch,
            dropout=common.lora_dropout(config),
        )
        self._eval = jax.jit(functools.partial(_eval_sums, graphdef=self.policy.graphdef))

    def _fresh_eval_loader(self):
        config, dataset, shard, count = self._eval_args
        return build_sft_loader(
            config, self.tokenizer, process_index=shard, process_count=count, dataset=dataset
        )

    def init(self, key: jax.Array):
        if self.lora is not None:
            state, self.frozen = self.policy.init_lora(key, self.ctx.rule_pairs)
            return state
        return self.policy.init_state(key, self.ctx.rule_pairs)

    def batch(self, step: int, key: jax.Array):
        return shard_sft_batch(next(self.loader), self.ctx.mesh, self.ctx.rules)

    def batch_signature(self, batch) -> tuple:
        return tuple(batch.input_ids.shape)

    def poison(self, batch):
        return batch._replace(loss_mask=batch.loss_mask * np.float32(np.nan))

    def step(self, state, frozen, batch, key):
        # frozen: the LoRA base, or None; the key only feeds the LoRA dropout (if any).
        return self._step(state, batch, frozen=frozen, key=common.dropout_key(self.config, key))

    def flops(self, batch) -> float:
        rows, length = batch.input_ids.shape
        return dpo_step_flops(self.policy.config, rows / 2, length, reference_forward=False)

    def score(self, state, step: int) -> dict[str, float]:
        """``eval_loss`` / ``eval_perplexity`` on the held-out rows (evaluation steps)."""
        if self.eval_loader is None or not eval_every(self.config, step):
            return {}
        nll = count = 0.0
        for batch in self._fresh_eval_loader():
            batch = shard_sft_batch(batch, self.ctx.mesh, self.ctx.rules)
            sums = jax.device_get(self._eval(state.params, self.frozen, batch))
            nll, count = nll + float(sums[0]), count + float(sums[1])
        loss = nll / max(count, 1.0)
        return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 80.0))}

    def position(self) -> dict[str, Any]:
        return {"data": self.loader.state_dict()}

    def restore(self, position: dict[str, Any]) -> None:
        if "data" in position:
            self.loader.restore(position["data"])

    def describe(self) -> list[str]:
        lines = [*common.lora_describe(self.policy.report)]
        lines.append(format_sft_stats(self.loader.dataset.stats))
        if self.eval_loader is not None:
            lines.append("held-out " + format_sft_stats(self.eval_loader.dataset.stats))
        return lines

    def summary(self, history) -> dict[str, Any]:
        out = {
            **common.loss_summary(history, "eval_loss"),
            **common.lora_summary(self.policy.report),
            "data": self.loader.dataset.stats,
        }
        evals = [r["eval_loss"] for r in history if "eval_loss" in r]
        if evals:
            out["first_eval_loss"] = evals[0]
        return out

    def export(self, state, directory: Path) -> Path:
        """The HF checkpoint with the tokenizer; LoRA: merged, plus ``<out>/adapter/``."""
        return common.export_model(
            self.ctx, self.policy.graphdef, state.params, self.frozen, self.lora, directory,
            tokenizer=self.tokenizer,
        )  # fmt: skip


def _eval_sums(params, frozen, batch, *, graphdef) -> tuple[jax.Array, jax.Array]:
    """(summed completion-token NLL, completion tokens) of one held-out batch."""
    nll = sft_nll_sum(params, batch, graphdef=graphdef, frozen=frozen)
    return nll, jnp.sum(batch.loss_mask)


__all__ = [
    "SFTTask",
    "constrain_micro_batch",
    "eval_every",
    "heldout_config",
    "sft_gradient",
    "sft_nll_sum",
    "sft_token_logprobs",
    "sft_train_step",
    "shard_sft_batch",
    "split_micro_batches",
]
