"""Offline pairwise preference losses on a preference dataset: DPO, IPO, robust DPO.

The state is a :class:`~jaxalign.train.state.TrainState` (policy, AdamW state); the
frozen reference π_ref is the initial policy; a batch is one global batch of preference
pairs from the resumable loader — padded, or packed (``data.packing``), with the reference
log-probs precomputed once per dataset (``data.precompute_reference``) when asked. The step
is :func:`jaxalign.train.step.preference_train_step`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxalign.data import PackedPreferenceBatch, PreferenceBatch, format_data_stats
from jaxalign.train.metrics import dpo_step_flops
from jaxalign.train.reference import CACHE_NAME, precompute_reference_logps
from jaxalign.train.step import preference_train_step, shard_preference_batch
from jaxalign.train.tasks import common
from jaxalign.train.tasks.base import RunContext, Task


class OfflinePairwiseTask(Task):
    """``algorithm.name`` ∈ {dpo, ipo, robust_dpo} on text preference data."""

    name = "offline"
    reports_flops = True

    def __init__(self, ctx: RunContext):
        config = self.config = ctx.config
        self.ctx = ctx
        self.tokenizer = common.load_run_tokenizer(ctx)
        self.policy = common.build_policy(ctx, config.run.steps)
        common.check_vocab(self.tokenizer, self.policy.config)
        self.model_config = self.policy.config
        sh = self.policy.shardings
        self.state_shardings, self.frozen_shardings = sh.state, sh.reference
        self.data_config = common.preference_data_configs(ctx, 1)[0]
        (self.loader,) = common.preference_loaders(
            ctx, self.tokenizer, [self.data_config], sh.batch
        )
        d = config.data
        refs = (sh.example, sh.example) if d.precompute_reference else (None, None)
        if d.packing:
            self.batch_shardings = PackedPreferenceBatch(*(sh.batch,) * 6, sh.example, *refs)
        else:
            self.batch_shardings = PreferenceBatch(*(sh.batch,) * 6, sh.example, *refs)
        algo = config.algorithm
        self._step = functools.partial(
            preference_train_step,
            graphdef=self.policy.graphdef,
            tx=self.policy.tx,
            lr_schedule=self.policy.lr_schedule,
            algorithm=algo.name,
            beta=algo.beta,
            label_smoothing=algo.label_smoothing,
            tau=algo.tau,
            flip_rate=algo.flip_rate,
            grad_accum_steps=config.optimizer.grad_accum_steps,
            batch_sharding=sh.batch,
            kl_metric=config.logging.kl_ref,
        )

    def init(self, key: jax.Array):
        state = self.policy.init_state(key, self.ctx.rule_pairs)
        self.frozen = self.policy.copy_params(state.params)  # π_ref = the initial policy
        if self.config.data.precompute_reference:
            self._precompute_reference()
        return state

    def _precompute_reference(self) -> None:
        ctx, sh, loader = self.ctx, self.policy.shardings, self.loader
        ctx.say("jaxalign: computing reference log-probs over the dataset (once)")
        logps = precompute_reference_logps(
            loader.dataset,
            self.frozen,
            self.policy.graphdef,
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
        del key  # the offline losses draw nothing
        return self._step(state, frozen, batch)

    def flops(self, batch) -> float:
        rows, length = batch[0].shape
        sequences = rows if isinstance(batch, PackedPreferenceBatch) else 2 * rows
        return dpo_step_flops(
            self.policy.config,
            sequences / 2,
            length,
            reference_forward=not self.config.data.precompute_reference,
        )

    def position(self) -> dict[str, Any]:
        return {"data": self.loader.state_dict()}

    def restore(self, position: dict[str, Any]) -> None:
        if "data" in position:
            self.loader.restore(position["data"])

    def describe(self) -> list[str]:
        return [format_data_stats(self.loader.dataset.stats)]

    def summary(self, history) -> dict[str, Any]:
        return {
            **common.loss_summary(history, "accuracy"),
            "data": self.loader.dataset.stats,
        }

    def export(self, state, directory: Path) -> Path:
        return common.save_policy(self.policy.graphdef, state.params, directory)


__all__ = ["OfflinePairwiseTask"]
