"""Orbax checkpoints of a run: train state + JSON metadata (data position, config, step).

Layout: ``<run dir>/checkpoints/<step>/{state,meta}``. Orbax writes each save
into a temporary directory and renames it when complete, so a run killed in the
middle of a save leaves no half-written step behind. A step that is present but
unreadable (e.g. damaged on disk) is reported and skipped on restore: the newest
readable checkpoint wins.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from jaxalign.train.config import CheckpointConfig


class CheckpointError(RuntimeError):
    """No readable checkpoint could be restored."""


class Checkpointer:
    """Saves and restores ``(TrainState, metadata)`` pairs with an Orbax CheckpointManager."""

    def __init__(self, directory: str | Path, config: CheckpointConfig):
        self.directory = Path(directory).absolute()
        self.config = config
        options = ocp.CheckpointManagerOptions(
            max_to_keep=config.keep,
            enable_async_checkpointing=config.async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def all_steps(self) -> list[int]:
        """Steps with a complete checkpoint, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> bool:
        """Starts saving (asynchronously if configured); returns whether a save started."""
        if step in self._manager.all_steps():
            return False
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=force,
        )

    def wait(self) -> None:
        """Blocks until background saves are on disk."""
        self._manager.wait_until_finished()

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """``(step, state, meta)`` of the newest readable checkpoint, or None if there is none.

        Unreadable checkpoints are reported on stderr and skipped.

        Raises:
            CheckpointError: if checkpoints exist but none can be read.
        """
        steps = self.all_steps()
        if not steps:
            return None
        failures = []
        for step in reversed(steps):
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
                meta = dict(restored["meta"])
                if int(meta.get("step", -1)) != step:
                    raise ValueError(f"metadata says step {meta.get('step')!r}")
            except Exception as e:  # orbax/tensorstore raise many kinds on damaged files
                reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                failures.append(f"step {step}: {reason}")
                print(
                    f"jaxalign: checkpoint {self.directory / str(step)} is unreadable "
                    f"({reason}); falling back to the previous one",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            return step, restored["state"], meta
        raise CheckpointError(f"no readable checkpoint in {self.directory}: " + "; ".join(failures))

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


__all__ = ["CheckpointError", "Checkpointer"]
