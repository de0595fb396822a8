"""The task protocol: what one kind of training run computes, for the engine to run.

A task is built once per run from a :class:`RunContext` (config, run directory, mesh,
logical rules) and gives the engine (:func:`jaxalign.train.engine.run`):

* ``init(key) -> state`` — the initial train state from the run key, sharded as
  ``state_shardings`` (shape-first, every array born on its devices: :func:`sharded_init`);
* ``frozen`` / ``frozen_shardings`` — arrays the step reads but never changes (the
  reference model, an oracle, the anchors' fixed parameters), rebuilt when a run resumes;
* ``batch(step, key) -> batch`` — the host-side input of step ``step`` (a data batch,
  drawn prompts, …), placed as global arrays matching ``batch_shardings``; raises
  ``StopIteration`` when the data is exhausted; ``position()`` / ``restore(meta)`` save and
  restore what ``batch`` depends on (loader positions, exact-score history) as JSON;
* ``step(state, frozen, batch, key) -> (state, metrics)`` — the pure step the engine jits
  once (state donated); ``metrics`` are replicated scalars and include ``loss`` (and, when
  the step updates parameters, ``grad_norm`` / ``update_norm`` / ``param_norm``, which the
  engine checks for NaN/Inf); ``key`` is ``fold_in(run key, step)``, also given to
  ``batch``;
* optionally ``score(state, step)`` — an exact evaluation on the host (the enumerable
  testbed), ``flops(batch)`` (for MFU), ``summary(history)``, ``export(state, dir)``.

In the spirit of optax's ``(init, update)``: the task holds no mutable training state;
everything that changes from step to step is in ``state`` (checkpointed by the engine) or
in ``position()`` (checkpoint metadata).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from jaxalign.parallel import LogicalRules


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What a task is built from."""

    config: Any  # the run's TrainConfig
    out: Path  # the run directory
    mesh: jax.sharding.Mesh
    rules: LogicalRules  # logical axis → mesh axes
    say: Callable[..., None]  # prints on process 0 unless quiet
    is_main: bool  # process 0

    @property
    def rule_pairs(self):
        return self.rules.as_pairs()


class Task:
    """Base class of the training tasks (see the module docstring for the protocol)."""

    name: str = "task"
    #: Whether :meth:`flops` gives model FLOPs per step (then the engine logs MFU).
    reports_flops: bool = False
    model_config: Any = None  # the policy's ModelConfig (checked against a checkpoint's)
    state_shardings: Any = None
    frozen: Any = None
    frozen_shardings: Any = None
    batch_shardings: Any = None

    def init(self, key: jax.Array) -> Any:
        raise NotImplementedError

    def batch(self, step: int, key: jax.Array) -> Any:
        raise NotImplementedError

    def step(
        self, state: Any, frozen: Any, batch: Any, key: jax.Array
    ) -> tuple[Any, dict[str, jax.Array]]:
        raise NotImplementedError

    def batch_signature(self, batch: Any) -> tuple:
        """Shapes that select a compiled step (one compilation per distinct value)."""
        return tuple(tuple(x.shape) for x in jax.tree.leaves(batch))

    def poison(self, batch: Any) -> Any:
        """The batch with a NaN planted (``debug.nan_at_step``); the step must then report
        a non-finite loss."""
        raise NotImplementedError(f"{self.name} has no NaN fault injection")

    def flops(self, batch: Any) -> float:
        return 0.0

    def score(self, state: Any, step: int) -> dict[str, float]:
        return {}

    def position(self) -> dict[str, Any]:
        return {}

    def restore(self, position: dict[str, Any]) -> None:
        del position

    def describe(self) -> list[str]:
        """Lines printed at the start of a run (data statistics, settings)."""
        return []

    def summary(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        if not history:
            return {}
        first, last = history[0], history[-1]
        return {"first_loss": first.get("loss"), "last_loss": last.get("loss")}

    def export(self, state: Any, directory: Path) -> Path | None:
        """Writes the final policy (HF format); returns the directory, or None."""
        return None


def sharded_init(fn: Callable[..., Any], shardings: Any, *args: Any) -> Any:
    """``fn(*args)`` jitted with ``out_shardings=shardings``: the result is created directly
    in its shardings (no host or single-device copy of a large state)."""
    return jax.jit(fn, out_shardings=shardings)(*args)


__all__ = ["RunContext", "Task", "sharded_init"]
