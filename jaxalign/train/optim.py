"""Optimizer and learning-rate schedule from config: optax AdamW, clipping, warmup + decay."""

from __future__ import annotations

import jax
import optax

from jaxalign.train.config import OptimizerConfig, ScheduleConfig


def make_schedule(schedule: ScheduleConfig, peak_lr: float, total_steps: int) -> optax.Schedule:
    """Linear warmup to ``peak_lr`` over ``warmup_steps``, then constant, cosine or linear decay.

    Warmup step ``t`` (0-based) uses ``peak_lr · (t+1) / warmup_steps``, so no step is
    wasted at learning rate 0.

    The decay runs over ``decay_steps`` (default ``total_steps − warmup_steps``) down to
    ``end_lr_ratio · peak_lr`` and stays there.
    """
    warmup = schedule.warmup_steps
    decay = schedule.decay_steps or max(total_steps - warmup, 1)
    end = peak_lr * schedule.end_lr_ratio
    if schedule.kind == "constant":
        after = optax.constant_schedule(peak_lr)
    elif schedule.kind == "cosine":
        after = optax.cosine_decay_schedule(peak_lr, decay, alpha=schedule.end_lr_ratio)
    else:
        after = optax.linear_schedule(peak_lr, end, decay)
    if warmup <= 1:
        return after
    ramp = optax.linear_schedule(peak_lr / warmup, peak_lr, warmup - 1)
    return optax.join_schedules([ramp, after], [warmup])


def _decay_mask(params):
    # No weight decay on vectors (RMSNorm scales, biases): the usual AdamW practice.
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(
    optimizer: OptimizerConfig, schedule: ScheduleConfig, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(tx, lr_schedule)``: optional global-norm clipping chained with AdamW."""
    lr = make_schedule(schedule, optimizer.lr, total_steps)
    adamw = optax.adamw(
        lr,
        b1=optimizer.b1,
        b2=optimizer.b2,
        eps=optimizer.eps,
        weight_decay=optimizer.weight_decay,
        mask=_decay_mask,
    )
    if optimizer.clip_norm is None:
        return adamw, lr
    return optax.chain(optax.clip_by_global_norm(optimizer.clip_norm), adamw), lr


__all__ = ["make_optimizer", "make_schedule"]
