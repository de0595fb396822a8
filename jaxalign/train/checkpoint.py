"""Orbax checkpoints of a run: train state + JSON metadata (data position, config, step).

Layout: ``<run dir>/checkpoints/<step>/{state,meta}``. Orbax writes each save
into a temporary directory and renames it when complete, so a run killed in the
middle of a save leaves no half-written step behind. A step that is present but
unreadable (e.g. damaged on disk) is reported and skipped on restore: the newest
readable checkpoint wins, and the unreadable newer ones are moved aside to
``checkpoints/unreadable-<step>/`` (kept for inspection, never deleted), so the resumed
run writes those steps afresh when it reaches them. Orbax would otherwise refuse every
save up to the newest step it lists, and the run would end "completed" with its last
checkpoint unreadable.

Guards at the boundary:

* an unwritable checkpoint directory fails when the :class:`Checkpointer` is made, naming
  the directory (Orbax would fail in a background thread, or wait on it for minutes);
* :func:`check_checkpoint_model` compares the model a checkpoint was saved with against
  the one a resumed run builds, and names every architecture field that differs, instead
  of a restore that fails on shapes and reads as "unreadable".
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxalign.train.config import CheckpointConfig

#: ModelConfig fields that decide the parameter tree (shapes, structure, storage dtype).
ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "qkv_bias",
    "o_bias",
    "qk_norm",
    "tie_word_embeddings",
    "param_dtype",
)


class CheckpointError(RuntimeError):
    """No readable checkpoint could be restored, or checkpoints cannot be written."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """The checkpoint was saved with a different model than the config asks for."""


def _as_mapping(model: Any) -> Mapping[str, Any]:
    if dataclasses.is_dataclass(model) and not isinstance(model, type):
        return dataclasses.asdict(model)
    if isinstance(model, Mapping):
        return model
    raise TypeError(f"model must be a ModelConfig or a mapping, got {type(model).__name__}")


def _same(a: Any, b: Any) -> bool:
    norm = lambda v: list(v) if isinstance(v, tuple | list) else v
    return norm(a) == norm(b)


def checkpoint_model_differences(
    saved: Mapping[str, Any] | Any, wanted: Mapping[str, Any] | Any
) -> list[str]:
    """``"hidden_size=32, config asks 64"`` for every :data:`ARCHITECTURE_FIELDS` entry
    that differs between the model a checkpoint was saved with and the wanted one
    (``ModelConfig`` or its dict; a field missing from either side is not compared)."""
    a, b = _as_mapping(saved), _as_mapping(wanted)
    return [
        f"{name}={a[name]!r}, config asks {b[name]!r}"
        for name in ARCHITECTURE_FIELDS
        if name in a and name in b and not _same(a[name], b[name])
    ]


def saved_model_config(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The model a checkpoint's metadata records: ``meta["model"]`` (the resolved
    ``ModelConfig``, e.g. read from a pretrained directory) if present, else the run
    config's ``model`` section (``meta["config"]["model"]``) unless that run was initialised
    from ``init.pretrained`` (its shape then came from the files, not the section); None
    when the metadata does not tell."""
    model = meta.get("model")
    if isinstance(model, Mapping):
        return model
    config = meta.get("config")
    if not isinstance(config, Mapping) or not isinstance(config.get("model"), Mapping):
        return None
    init = config.get("init")
    if isinstance(init, Mapping) and init.get("pretrained"):
        return None
    return config["model"]


def check_checkpoint_model(
    meta: Mapping[str, Any], model: Mapping[str, Any] | Any, *, checkpoint: str | Path = ""
) -> None:
    """Raises if the checkpoint's model (from its metadata) has another architecture.

    Args:
        meta: the checkpoint's metadata (``Checkpointer.read_meta`` or ``restore_latest``).
        model: the ``ModelConfig`` (or its dict) the resumed run builds.
        checkpoint: the checkpoint's directory, for the message.

    Raises:
        CheckpointMismatchError: e.g. ``checkpoint has hidden_size=32, config asks 64;
            num_layers=2, config asks 4 (…)``. Metadata without a model is not checked.
    """
    saved = saved_model_config(meta)
    if saved is None:
        return
    differences = checkpoint_model_differences(saved, model)
    if differences:
        where = f" ({checkpoint})" if str(checkpoint) else ""
        raise CheckpointMismatchError(
            f"checkpoint has {'; '.join(differences)}{where}: the run was saved with another "
            "model; resume with the checkpoint's model settings, or start a new run "
            "(--overwrite, or another --out)"
        )


def check_writable(directory: str | Path) -> Path:
    """Creates ``directory`` if needed and checks that a file can be written in it.

    Raises:
        CheckpointError: naming the directory and the reason (read-only, not a
            directory, permission denied, ...).
    """
    directory = Path(directory).absolute()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise CheckpointError(
            f"checkpoint directory {str(directory)!r} is not writable ({reason}); choose a "
            "writable run.out_dir or fix the directory's permissions"
        ) from None
    return directory


def _first_line(e: Exception) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"


class Checkpointer:
    """Saves and restores ``(TrainState, metadata)`` pairs with an Orbax CheckpointManager.

    Raises:
        CheckpointError: the directory cannot be written (at construction).
    """

    def __init__(self, directory: str | Path, config: CheckpointConfig):
        self.directory = check_writable(directory)
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

    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON metadata of checkpoint ``step`` alone (no arrays are read)."""
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def restore_latest(
        self, abstract_state: Any, *, model: Mapping[str, Any] | Any = None
    ) -> tuple[int, Any, dict[str, Any]] | None:
        """``(step, state, meta)`` of the newest readable checkpoint, or None if there is none.

        Unreadable checkpoints are reported on stderr and skipped; once an older one is
        restored, the unreadable newer ones are moved to ``unreadable-<step>/`` so the run
        saves those steps again.

        Args:
            abstract_state: the state's shapes, dtypes and shardings.
            model: the ``ModelConfig`` (or dict) the run builds; when given, each
                checkpoint's recorded model is compared first (:func:`check_checkpoint_model`).

        Raises:
            CheckpointMismatchError: a checkpoint was saved with another architecture.
            CheckpointError: if checkpoints exist but none can be read.
        """
        steps = self.all_steps()
        if not steps:
            return None
        failures, unreadable = [], []
        for step in reversed(steps):
            where = self.directory / str(step)
            try:
                if model is not None:
                    try:
                        meta = self.read_meta(step)
                    except Exception:  # the full restore below reports it
                        meta = {}
                    check_checkpoint_model(meta, model, checkpoint=where)
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
            except CheckpointMismatchError:
                raise
            except Exception as e:  # orbax/tensorstore raise many kinds on damaged files
                reason = _first_line(e)
                failures.append(f"step {step}: {reason}")
                unreadable.append(step)
                print(
                    f"jaxalign: checkpoint {where} is unreadable ({reason}); falling back to "
                    "the previous one",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            self._move_aside(unreadable)
            return step, restored["state"], meta
        raise CheckpointError(f"no readable checkpoint in {self.directory}: " + "; ".join(failures))

    def _move_aside(self, steps: list[int]) -> None:
        """Renames unreadable step directories to ``unreadable-<step>[-n]`` (process 0)."""
        if not steps:
            return
        if jax.process_index() == 0:
            for step in steps:
                target = self.directory / f"unreadable-{step}"
                n = 1
                while target.exists():
                    n += 1
                    target = self.directory / f"unreadable-{step}-{n}"
                os.replace(self.directory / str(step), target)
                print(
                    f"jaxalign: moved unreadable checkpoint {self.directory / str(step)} to "
                    f"{target}; step {step} is saved again when the run reaches it",
                    file=sys.stderr,
                    flush=True,
                )
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jaxalign-checkpoint-move-aside")
        self._manager.reload()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


__all__ = [
    "ARCHITECTURE_FIELDS",
    "CheckpointError",
    "CheckpointMismatchError",
    "Checkpointer",
    "check_checkpoint_model",
    "check_writable",
    "checkpoint_model_differences",
    "saved_model_config",
]
