"""One metrics writer for every run: JSONL, TensorBoard and (optionally) Weights & Biases.

:class:`MetricWriter` takes one ``write(step, metrics)`` per logged step and sends it to

* ``<run dir>/metrics.jsonl`` — one JSON object per logged step with a single ``step`` key.
  JSON has no NaN or Infinity: a non-finite number is written as ``null`` (Python's
  ``json`` would write bare ``NaN``, which strict readers such as ``jq`` and browsers
  reject). Each line is flushed, so a killed run keeps what it logged.
* ``<run dir>/tensorboard/`` — TensorBoard event files through **tensorboardX**. It is the
  maintained standalone writer (pure Python on numpy and protobuf, no TensorFlow) and its
  ``purge_step`` marks a resumed run's restart, so TensorBoard hides the steps the resumed
  run computes again. clu's ``metric_writers`` were the other candidate: their TensorBoard
  writer goes through ``tf.summary`` (TensorFlow, or the stub inside ``tensorboard``), and
  the package's last release is from 2024.
* Weights & Biases (``wandb=True``), an optional extra (``pip install 'jaxalign[wandb]'``).
  ``wandb_mode="offline"`` (or ``WANDB_MODE=offline`` in the environment) needs no network
  and no account: the run is written under ``<run dir>/wandb/`` for a later ``wandb sync``.
  A resumed run continues the same W&B run (its id is kept in ``<run dir>/wandb/run_id``);
  W&B ignores the steps it already has, which a resume computes again.

Only the main process (``main_process=True``, process 0) writes; the others keep the
history in memory so every process can summarise the run alike.

Example::

    with MetricWriter(out, resume_step=start, tensorboard=True) as log:
        for step in range(start + 1, steps + 1):
            log.write(step, {"loss": loss, "accuracy": acc})
    summary = summarise(log.history)   # every logged step, also those before a resume
"""

from __future__ import annotations

import json
import math
import os
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxalign.config import ConfigError

#: The pip extra that installs Weights & Biases.
WANDB_EXTRA = "jaxalign[wandb]"


# ----------------------------------------------------------------------------- JSON


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: numpy/JAX scalars and arrays become numbers and lists,
    non-finite floats become ``None`` (JSON ``null``).

    Raises:
        TypeError: for a value JSON cannot hold (naming its type).
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic) or hasattr(value, "__array__"):
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            return jsonable(array.item() if array.ndim == 0 else array.tolist())
    raise TypeError(f"cannot write a {type(value).__name__} ({value!r:.80}) as JSON")


def json_line(record: Mapping[str, Any]) -> str:
    """One JSONL line (with the newline) of ``record``; never contains NaN or Infinity."""
    try:
        return json.dumps(jsonable(record), allow_nan=False) + "\n"
    except TypeError as e:
        raise TypeError(f"record {dict(record)!r:.200}: {e}") from None


class JsonlWriter:
    """Appends one JSON object per line; flushed per record so a killed run keeps its log.

    Non-finite numbers are written as ``null`` (see :func:`jsonable`).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json_line(record))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a JSONL file (a torn last line is ignored)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def truncate_jsonl(path: str | Path, last_step: int, *, key: str = "step") -> int:
    """Keeps records with ``record[key] <= last_step``; returns how many were dropped.

    The file is replaced atomically, so a kill during the rewrite keeps the old log.
    """
    path = Path(path)
    if not path.exists():
        return 0
    records = read_jsonl(path)
    kept = [r for r in records if r.get(key, 0) <= last_step]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("".join(json_line(r) for r in kept))
    os.replace(tmp, path)
    return len(records) - len(kept)


# ----------------------------------------------------------------------------- scalars


def scalar_items(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(tag, float)`` for every number in ``values``; nested mappings and lists become
    ``parent/child`` and ``parent/<index>`` tags; strings and ``None`` are left out."""
    for key, value in values.items():
        tag = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from scalar_items(value, tag + "/")
        elif isinstance(value, list | tuple):
            yield from scalar_items(dict(enumerate(value)), tag + "/")
        elif value is None or isinstance(value, str):
            continue
        else:
            array = np.asarray(value)
            if array.dtype.kind not in "biuf":
                continue
            if array.ndim == 0:
                yield tag, float(array)
            else:
                yield from scalar_items(dict(enumerate(array.tolist())), tag + "/")


class TensorBoardWriter:
    """Scalars as TensorBoard event files in ``logdir`` (tensorboardX).

    Args:
        logdir: the directory (created if missing); each writer adds one event file.
        purge_step: when resuming, the first step the run computes again: TensorBoard then
            hides the events of steps ``>= purge_step`` from earlier event files.
    """

    def __init__(self, logdir: str | Path, *, purge_step: int | None = None):
        from tensorboardX import SummaryWriter

        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        # tensorboardX names files by the second it opens them; a suffix in nanoseconds keeps
        # a quickly restarted run from overwriting the previous file (and sorts after it).
        self._writer = SummaryWriter(
            str(self.logdir), purge_step=purge_step, filename_suffix=f".{time.time_ns()}"
        )

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        """Writes every number of ``values`` at ``step`` (NaN/Inf included: TensorBoard
        shows them) and flushes, so a killed run keeps its curves."""
        for tag, value in scalar_items(values):
            self._writer.add_scalar(tag, value, int(step))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _import_wandb():
    try:
        import wandb
    except ImportError as e:
        raise ConfigError(
            f"logging.wandb=true needs the wandb package, which is not installed "
            f"({e}); install the extra: pip install '{WANDB_EXTRA}', or set "
            "logging.wandb=false"
        ) from None
    return wandb


class WandbWriter:
    """Scalars to a Weights & Biases run whose files live in ``<run_dir>/wandb/``.

    Args:
        run_dir: the run directory; the W&B run id is kept in ``wandb/run_id`` so a resumed
            run continues the same W&B run.
        project: the W&B project.
        mode: ``"online"``, ``"offline"`` (no network, no account) or ``"disabled"``;
            ``None`` = ``WANDB_MODE`` from the environment, else W&B's default (online).
        config: the run's configuration, shown with the run.

    Raises:
        ConfigError: wandb is not installed (naming the extra), or ``mode`` is unknown.
    """

    MODES = ("online", "offline", "disabled")

    def __init__(
        self,
        run_dir: str | Path,
        *,
        project: str = "jaxalign",
        mode: str | None = None,
        config: Mapping[str, Any] | None = None,
    ):
        if mode is not None and mode not in self.MODES:
            raise ConfigError(f"logging.wandb_mode={mode!r} is not one of {list(self.MODES)}")
        wandb = _import_wandb()
        run_dir = Path(run_dir)
        directory = run_dir / "wandb"
        directory.mkdir(parents=True, exist_ok=True)
        id_file = directory / "run_id"
        if id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            run_id = secrets.token_hex(6)  # W&B ids: short, lowercase letters and digits
            id_file.write_text(run_id + "\n")
        # console="off": W&B would otherwise wrap stdout/stderr (the progress bar, errors).
        self.run = wandb.init(
            project=project,
            name=run_dir.name,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            mode=mode,
            config=jsonable(dict(config or {})),
            settings=wandb.Settings(console="off", silent=True),
        )

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        self.run.log(dict(scalar_items(values)), step=int(step))

    def close(self) -> None:
        self.run.finish()


# ----------------------------------------------------------------------------- the writer


class MetricWriter:
    """The run's metrics: ``metrics.jsonl`` + TensorBoard + optional W&B, and the history.

    Args:
        run_dir: the run directory (``metrics.jsonl``, ``tensorboard/``, ``wandb/``).
        resume_step: the step the run (re)starts after: 0 for a fresh run, the restored
            checkpoint's step on resume. Records of later steps (computed again now) are
            dropped from ``metrics.jsonl`` and hidden in TensorBoard; earlier ones stay in
            :attr:`history`.
        tensorboard: also write TensorBoard event files.
        wandb: also log to Weights & Biases (needs the ``jaxalign[wandb]`` extra).
        wandb_project / wandb_mode: see :class:`WandbWriter`.
        run_config: the run's configuration (a plain dict) for W&B.
        main_process: write files (process 0); other processes only keep the history.

    Attributes:
        history: every record of the run so far (``{"step": s, **metrics}``), non-finite
            numbers as ``None`` — the same values ``metrics.jsonl`` holds.
        dropped: records removed from ``metrics.jsonl`` because they came after
            ``resume_step``.

    Raises:
        ConfigError: ``wandb=True`` without the wandb package (naming the extra).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        resume_step: int = 0,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_project: str = "jaxalign",
        wandb_mode: str | None = None,
        run_config: Mapping[str, Any] | None = None,
        main_process: bool = True,
    ):
        if isinstance(resume_step, bool) or not isinstance(resume_step, int) or resume_step < 0:
            raise ValueError(f"resume_step must be a non-negative integer, got {resume_step!r}")
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.history: list[dict[str, Any]] = []
        self.dropped = 0
        if self.path.exists():
            self.history = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step]
            if main_process:
                self.dropped = truncate_jsonl(self.path, resume_step)
        self._jsonl: JsonlWriter | None = None
        self._sinks: list[Any] = []
        if not main_process:
            return
        if wandb:  # first: a missing extra fails before any file is opened
            self._sinks.append(
                WandbWriter(self.run_dir, project=wandb_project, mode=wandb_mode, config=run_config)
            )
        self._jsonl = JsonlWriter(self.path)
        if tensorboard:
            purge = resume_step + 1 if resume_step else None
            self._sinks.append(TensorBoardWriter(self.run_dir / "tensorboard", purge_step=purge))

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Logs ``metrics`` at ``step`` everywhere; returns the record (as JSONL holds it).

        Raises:
            ValueError: ``metrics`` has its own ``step`` key (the record has one only).
        """
        if "step" in metrics:
            raise ValueError(
                f"metrics must not contain a 'step' key (got step={metrics['step']!r}); the "
                f"writer adds step={step}"
            )
        record = jsonable({"step": int(step), **metrics})
        self.history.append(record)
        if self._jsonl is not None:
            self._jsonl.write(record)
        for sink in self._sinks:
            sink.scalars(step, metrics)
        return record

    def close(self) -> None:
        """Flushes and closes every sink (safe to call twice)."""
        sinks, self._sinks = self._sinks, []
        jsonl, self._jsonl = self._jsonl, None
        if jsonl is not None:
            jsonl.close()
        for sink in sinks:
            sink.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = [
    "WANDB_EXTRA",
    "JsonlWriter",
    "MetricWriter",
    "TensorBoardWriter",
    "WandbWriter",
    "json_line",
    "jsonable",
    "read_jsonl",
    "scalar_items",
    "truncate_jsonl",
]
