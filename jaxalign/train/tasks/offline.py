"""Offline preference losses on a dataset: DPO, IPO, robust DPO, RPO, SimPO, ORPO, KTO.

The state is a :class:`~jaxalign.train.state.TrainState` (policy, AdamW state); the
frozen reference π_ref is the initial policy (SimPO and ORPO are reference-free: no
reference is built, copied or run); a batch is one global batch of preference pairs from
the resumable loader — padded, or packed (``data.packing``), with the reference log-probs
precomputed once per dataset (``data.precompute_reference``) when asked — or, for KTO, of
labelled completions with their mismatched KL sequences (:class:`~jaxalign.data.UnpairedBatch`).
The step is :func:`jaxalign.train.step.preference_train_step`. LoRA dropout
(``lora.dropout``) drops the policy adapters' inputs with a key drawn from the step's key
(a mask per micro-batch; never in the reference, precomputed or not).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxalign.data import (
    PackedPreferenceBatch,
    PreferenceBatch,
    UnpairedBatch,
    format_data_stats,
    format_unpaired_stats,
)
from jaxalign.train.config import REFERENCE_FREE_ALGORITHMS, UNPAIRED_ALGORITHMS
from jaxalign.train.metrics import dpo_step_flops
from jaxalign.train.reference import CACHE_NAME, precompute_reference_logps
from jaxalign.train.step import preference_train_step, shard_preference_batch
from jaxalign.train.tasks import common
from jaxalign.train.tasks.base import RunContext


class OfflinePairwiseTask(common.PreferenceTask):
    """``algorithm.name`` ∈ {dpo, ipo, robust_dpo, rpo, simpo, orpo} on text preference
    data, or kto on unpaired rows."""

    name = "offline"

    def __init__(self, ctx: RunContext):
        algo = ctx.config.algorithm
        self.unpaired = algo.name in UNPAIRED_ALGORITHMS
        super().__init__(
            ctx, 1, unpaired=self.unpaired, reference=algo.name not in REFERENCE_FREE_ALGORITHMS
        )
        config, sh = self.config, self.policy.shardings
        (self.data_config,), (self.loader,) = self.data_configs, self.loaders
        d = config.data
        refs = (sh.example, sh.example) if d.precompute_reference else (None, None)
        if self.unpaired:
            self.batch_shardings = UnpairedBatch(*(sh.batch,) * 6, sh.example, sh.example)
        elif d.packing:
            self.batch_shardings = PackedPreferenceBatch(*(sh.batch,) * 6, sh.example, *refs)
        else:
            self.batch_shardings = PreferenceBatch(*(sh.batch,) * 6, sh.example, *refs)
        self._step = functools.partial(
            preference_train_step,
            graphdef=self.policy.graphdef,
            tx=self.policy.tx,
            lr_schedule=self.policy.lr_schedule,
            algorithm=algo.name,
            beta=algo.beta,
            label_smoothing=algo.label_smoothing,
            tau=algo.resolved_tau,
            flip_rate=algo.flip_rate,
            gamma=algo.gamma,
            nll_weight=algo.nll_weight,
            odds_ratio_weight=algo.odds_ratio_weight,
            desirable_weight=algo.desirable_weight,
            undesirable_weight=algo.undesirable_weight,
            grad_accum_steps=config.optimizer.grad_accum_steps,
            batch_sharding=sh.batch,
            kl_metric=config.logging.kl_ref,
            base_graphdef=self.policy.base_graphdef,
            dropout=common.lora_dropout(config),
        )

    def init(self, key: jax.Array):
        state = super().init(key)
        if self.config.data.precompute_reference:
            self._precompute_reference()
        return state

    def _precompute_reference(self) -> None:
        ctx, sh, loader = self.ctx, self.policy.shardings, self.loader
        ctx.say("jaxalign: computing reference log-probs over the dataset (once)")
        logps = precompute_reference_logps(
            loader.dataset,
            self.frozen,
            self.policy.reference_graphdef,
            batch_size=self.data_config.batch_size,
            length=self.data_config.max_length,
            pad_id=loader.pad_id,
            mesh=ctx.mesh,
            rules=ctx.rules,
            reference_sharding=sh.reference,
            batch_sharding=sh.batch,
            example_sharding=sh.example,
            shard=(loader.process_index, loader.process_count),
            cache=ctx.out / CACHE_NAME,
        )
        loader.attach_reference_logps(*logps)

    def batch(self, step: int, key: jax.Array):
        return shard_preference_batch(next(self.loader), self.ctx.mesh, self.ctx.rules)

    def batch_signature(self, batch) -> tuple:
        return tuple(batch[0].shape)

    def poison(self, batch):
        return batch._replace(example_mask=batch.example_mask * jnp.nan)

    def step(self, state, frozen, batch, key):
        # The key only feeds the LoRA dropout (if any): the offline losses draw nothing else.
        return self._step(state, frozen, batch, key=common.dropout_key(self.config, key))

    def flops(self, batch) -> float:
        rows, length = batch[0].shape
        cfg = self.policy.config
        if isinstance(batch, UnpairedBatch):
            # B completions trained and run by the reference, plus forward-only passes of
            # the policy and the reference over the B mismatched sequences.
            trained = dpo_step_flops(cfg, rows / 2, length)
            forward = trained - dpo_step_flops(cfg, rows / 2, length, reference_forward=False)
            return trained + 2 * forward
        sequences = rows if isinstance(batch, PackedPreferenceBatch) else 2 * rows
        reference = self.uses_reference and not self.config.data.precompute_reference
        return dpo_step_flops(cfg, sequences / 2, length, reference_forward=reference)

    def position(self) -> dict[str, Any]:
        return {"data": self.loader.state_dict()}

    def restore(self, position: dict[str, Any]) -> None:
        if "data" in position:
            self.loader.restore(position["data"])

    def describe(self) -> list[str]:
        stats = self.loader.dataset.stats
        data = format_unpaired_stats(stats) if self.unpaired else format_data_stats(stats)
        return [*self.lora_lines(), data]

    def summary(self, history) -> dict[str, Any]:
        return {
            **common.loss_summary(history, "accuracy"),
            **common.lora_summary(self.policy.report),
            "data": self.loader.dataset.stats,
        }


__all__ = ["OfflinePairwiseTask"]
