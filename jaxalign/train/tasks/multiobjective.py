"""Multi-objective DPO: K preference datasets, one DPO loss each, one aggregated update.

Each step reads one global batch from each of the K loaders (advancing together; all K
positions are checkpointed), pads the K batches to one length and runs
:func:`jaxalign.train.multiobjective.multiobjective_train_step` (weighted sum, MGDA,
CAGrad or RACO over the K gradients). Metrics gain the per-objective ``loss_k``,
``accuracy_k``, ``grad_norm_k`` and the aggregator's ``agg_weight_k`` / ``agg_coef_k`` /
``agg_cos_k``. LoRA dropout (``lora.dropout``) draws a distinct mask per objective and
micro-batch from the step's key (the policy's forwards only, never the reference).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.data import PreferenceBatch, format_data_stats
from jaxalign.train.metrics import dpo_step_flops
from jaxalign.train.multiobjective import multiobjective_train_step, uses_weights
from jaxalign.train.step import shard_preference_batch
from jaxalign.train.tasks import common
from jaxalign.train.tasks.base import RunContext


def pad_batch_length(batch: PreferenceBatch, length: int, pad_id: int) -> PreferenceBatch:
    """Right-pads a batch's sequences to ``length`` (padding is masked: results unchanged)."""
    extra = length - batch.chosen_input_ids.shape[1]
    if extra == 0:
        return batch

    def pad(x, value):
        return np.pad(x, ((0, 0), (0, extra)), constant_values=value)

    return batch._replace(
        chosen_input_ids=pad(batch.chosen_input_ids, pad_id),
        chosen_attention_mask=pad(batch.chosen_attention_mask, 0),
        chosen_loss_mask=pad(batch.chosen_loss_mask, 0),
        rejected_input_ids=pad(batch.rejected_input_ids, pad_id),
        rejected_attention_mask=pad(batch.rejected_attention_mask, 0),
        rejected_loss_mask=pad(batch.rejected_loss_mask, 0),
    )


class MultiObjectiveTask(common.PreferenceTask):
    """``algorithm.name: multiobjective_dpo`` on ``data.paths`` (or the tiny datasets)."""

    name = "multiobjective"

    def __init__(self, ctx: RunContext):
        super().__init__(ctx, ctx.config.num_objectives)
        config, sh = self.config, self.policy.shardings
        k = len(self.loaders)
        self.batch_shardings = (PreferenceBatch(*(sh.batch,) * 6, sh.example),) * k
        algo = config.algorithm
        weights = algo.objective_weights(k)
        self._step = functools.partial(
            multiobjective_train_step,
            graphdef=self.policy.graphdef,
            tx=self.policy.tx,
            lr_schedule=self.policy.lr_schedule,
            aggregator=algo.aggregator,
            weights=np.asarray(weights, np.float32) if uses_weights(algo.aggregator) else None,
            c=algo.radius,
            beta=algo.beta,
            label_smoothing=algo.label_smoothing,
            grad_accum_steps=config.optimizer.grad_accum_steps,
            batch_sharding=sh.batch,
            kl_metric=config.logging.kl_ref,
            base_graphdef=self.policy.base_graphdef,
            dropout=common.lora_dropout(config),
        )

    def batch(self, step: int, key: jax.Array):
        # All loaders advance together (their positions stay in step on resume).
        local = [next(loader) for loader in self.loaders]
        length = max(b.chosen_input_ids.shape[1] for b in local)  # one length for the K
        local = [
            pad_batch_length(b, length, loader.pad_id)
            for b, loader in zip(local, self.loaders, strict=True)
        ]
        return tuple(shard_preference_batch(b, self.ctx.mesh, self.ctx.rules) for b in local)

    def batch_signature(self, batch) -> tuple:
        return tuple(batch[0].chosen_input_ids.shape)

    def poison(self, batch):
        return tuple(b._replace(example_mask=b.example_mask * jnp.nan) for b in batch)

    def step(self, state, frozen, batch, key):
        # The key only feeds the LoRA dropout (if any).
        return self._step(state, frozen, batch, key=common.dropout_key(self.config, key))

    def flops(self, batch) -> float:
        rows, length = batch[0].chosen_input_ids.shape
        return dpo_step_flops(self.policy.config, len(batch) * rows, length)

    def position(self) -> dict[str, Any]:
        return {"data": [loader.state_dict() for loader in self.loaders]}

    def restore(self, position: dict[str, Any]) -> None:
        saved = position.get("data")
        if saved is None:
            return
        if not isinstance(saved, list) or len(saved) != len(self.loaders):
            count = len(saved) if isinstance(saved, list) else 1
            raise ValueError(
                f"the checkpoint holds {count} data position(s) but the config reads "
                f"{len(self.loaders)} dataset(s); the data changed since the checkpoint"
            )
        for loader, position_k in zip(self.loaders, saved, strict=True):
            loader.restore(position_k)

    def describe(self) -> list[str]:
        return [*self.lora_lines()] + [
            f"objective {k}: {format_data_stats(loader.dataset.stats)}"
            for k, loader in enumerate(self.loaders)
        ]

    def summary(self, history) -> dict[str, Any]:
        keys = [f"loss_{k}" for k in range(len(self.loaders))]
        out = common.loss_summary(history, "accuracy", *keys)
        out.update(common.lora_summary(self.policy.report))
        out["data"] = [loader.dataset.stats for loader in self.loaders]
        return out


__all__ = ["MultiObjectiveTask", "pad_batch_length"]
