"""The training engine: the one loop every ``jaxalign train`` run goes through.

A :class:`~jaxalign.train.tasks.Task` says *what* a step computes (offline pairwise
losses, multi-objective DPO, online Nash preference optimisation, KL-regularised policy
gradient); the engine owns *how a run runs*, identically for all of them:

1. **run directory** — ``run.out_dir``, refused when not empty unless resumed or
   overwritten; a lock file (``.lock``) refuses a second process on the same directory
   while the first runs;
2. **config snapshot** — ``config.yaml``; on resume a changed config is reported by key
   (keys that change the trajectory) and the old one is kept as ``config.<step>.yaml``;
   an incompatible checkpoint (another model shape) is refused *before* anything is
   rewritten;
3. **mesh and shape-first init** — the task's state shardings, then one
   ``jax.jit(task.init, out_shardings=…)``: every array born on its devices;
4. **one jit** of the task's pure ``step(state, frozen, batch, key)`` with explicit in/out
   shardings and the state donated (``frozen``: what never changes — the reference model,
   an oracle — passed, not donated, not checkpointed), compiled once per batch shape;
   step ``t`` gets ``fold_in(key, t)``;
5. **checkpoints** — Orbax (state + JSON metadata: data position, task extras, config),
   every ``checkpoint.every_steps`` and at the end; exact resume (a killed and resumed run
   repeats the uninterrupted run's steps bitwise on CPU);
6. **signals** — SIGTERM/SIGINT finish the current step, write a checkpoint and end the
   run with status ``interrupted`` (the CLI exits 130);
7. **NaN/Inf stop** — a step whose loss, parameters or update norm is not finite stops the
   run with :class:`NonFiniteError` naming the step; it is never checkpointed, so the last
   checkpoint on disk is the last good one;
8. **metrics** — one JSONL record per logged step (one ``step`` key), TensorBoard scalars,
   a progress bar with the loss and ETA, the task's exact scores (every step on the
   testbed; a judged win rate every ``logging.eval_every`` steps on prompts), and
   ``summary.json`` over the whole run (a resumed run's
   summary covers the steps before the resume too).
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import yaml

from jaxalign.models import axis_rules
from jaxalign.parallel import DEFAULT_RULES, initialize_distributed, make_mesh
from jaxalign.train.checkpoint import Checkpointer
from jaxalign.train.config import TrainConfig, config_to_dict
from jaxalign.train.metric_writer import MetricWriter
from jaxalign.train.metrics import measure_matmul_peak
from jaxalign.train.tasks.base import RunContext, Task


class NonFiniteError(RuntimeError):
    """A step produced a NaN/Inf loss, parameter or update; training stopped."""


class RunLockedError(RuntimeError):
    """Another process is running in the same run directory."""


class TrainResult(NamedTuple):
    """What :func:`run` returns."""

    out_dir: Path  # the run directory
    step: int  # steps done (counting those before a resume)
    status: str  # "completed", "interrupted" (SIGTERM/SIGINT) or "data_exhausted"
    history: list[dict[str, Any]]  # every logged record of the run (also before a resume)
    state: Any  # the final task state (sharded arrays)
    resumed_from: int | None  # checkpoint step restored, or None for a fresh start
    compilations: int  # compiled steps (one per batch shape)
    summary: dict[str, Any]  # what summary.json holds
    task: Task  # the task (its exact-score history, tokenizer, …)


# Config sections whose change does not alter the run's trajectory.
_FREE_ON_RESUME = ("run.resume", "run.overwrite", "logging", "debug", "checkpoint")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ, leaving out those that cannot change the trajectory."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [k for k in keys if not any(k == f or k.startswith(f + ".") for f in _FREE_ON_RESUME)]


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


class RunDirectory:
    """The run directory and its lock (held by process 0 for the whole run)."""

    LOCK = ".lock"

    def __init__(self, config: TrainConfig):
        self.path = Path(config.run.out_dir)
        self._lock_file = None
        out = self.path
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"run.out_dir={str(out)!r} exists and is not a directory")
        nonempty = out.is_dir() and any(p.name != self.LOCK for p in out.iterdir())
        if nonempty and not (config.run.resume or config.run.overwrite):
            raise FileExistsError(
                f"run directory {str(out)!r} is not empty; resume it with --resume "
                "(run.resume=true) or replace it with --overwrite (run.overwrite=true)"
            )
        _barrier("jaxalign-run-dir-checked")
        if jax.process_index() == 0:
            out.mkdir(parents=True, exist_ok=True)
            self._lock()
            if nonempty and config.run.overwrite:
                print(f"jaxalign: --overwrite: deleting existing run directory {out}", flush=True)
                for child in out.iterdir():
                    if child.name != self.LOCK:
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
        _barrier("jaxalign-run-dir-ready")

    def _lock(self) -> None:
        path = self.path / self.LOCK
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(
                f"run directory {str(self.path)!r} is in use by {holder}; wait for it to "
                f"finish or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self._lock_file = handle

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
            (self.path / self.LOCK).unlink(missing_ok=True)


def _snapshot_config(out: Path, config: TrainConfig, step: int | None, say: Callable) -> None:
    """Writes ``config.yaml``; a changed config keeps the old one as ``config.<step>.yaml``."""
    path = out / "config.yaml"
    new = config_to_dict(config)
    if path.exists():
        old = yaml.safe_load(path.read_text()) or {}
        changed = changed_keys(old, new)
        if changed:
            kept = out / f"config.{step or 0}.yaml"
            print(
                f"jaxalign: warning: the config differs from the run's saved config in "
                f"{changed}; the old one is kept as {kept.name}",
                file=sys.stderr,
                flush=True,
            )
            shutil.copyfile(path, kept)
    path.write_text(yaml.safe_dump(new, sort_keys=False))


def make_run_mesh(config: TrainConfig) -> jax.sharding.Mesh:
    """The mesh; fixed sizes multiplying to fewer than the local devices use the first ones."""
    sizes = config.mesh.sizes
    wanted = int(np.prod(sizes))
    if -1 not in sizes and wanted < jax.device_count() and jax.process_count() == 1:
        return make_mesh(config.mesh, devices=jax.devices()[:wanted])
    return make_mesh(config.mesh)


def _host_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def _is_good(metrics: dict[str, float]) -> bool:
    """Loss, and the parameter/update norms when reported, all finite."""
    keys = ("loss", "param_norm", "update_norm", "grad_norm")
    finite = all(math.isfinite(metrics[k]) for k in keys if k in metrics)
    return finite and metrics.get("finite", 1.0) == 1.0


class _Signals:
    """SIGTERM/SIGINT set a flag the loop checks between steps (main thread only)."""

    def __init__(self):
        self.received: str | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run(config: TrainConfig, task_factory: Callable[[RunContext], Task], *, quiet: bool = False):
    """Runs (or resumes) one training run of the task ``task_factory(ctx)`` builds.

    Returns:
        :class:`TrainResult`.

    Raises:
        FileExistsError: non-empty run directory without resume/overwrite.
        RunLockedError: another process holds the run directory.
        NonFiniteError: a NaN/Inf loss, parameter or update norm (the step is named).
        jaxalign.train.CheckpointError: checkpoints exist but none is readable, or the
            checkpoint belongs to another model shape.
    """
    initialize_distributed(config=config.distributed)
    is_main = jax.process_index() == 0
    say = (lambda *a: None) if quiet or not is_main else functools.partial(print, flush=True)
    run_dir = RunDirectory(config)
    out = run_dir.path
    try:
        return _run(config, task_factory, out, say, is_main, quiet)
    finally:
        run_dir.release()


def _run(config, task_factory, out: Path, say, is_main: bool, quiet: bool) -> TrainResult:
    t_start = time.perf_counter()
    mesh = make_run_mesh(config)
    logical_rules = DEFAULT_RULES.replace(dict(config.sharding.rules))
    rules = logical_rules.as_pairs()
    ctx = RunContext(config, out, mesh, logical_rules, say, is_main)
    with jax.set_mesh(mesh), axis_rules(rules):
        task = task_factory(ctx)
    key = jax.random.key(config.run.seed)
    step_key = jax.random.split(key)[1]  # step t: fold_in(step_key, t); init gets ``key``

    # Shape-first sharded init (restored over when resuming).
    with jax.set_mesh(mesh), axis_rules(rules), jax.numpy_dtype_promotion("standard"):
        state = task.init(key)

    checkpointer = (
        Checkpointer(out / "checkpoints", config.checkpoint) if config.checkpoint.enabled else None
    )
    resumed_from = None
    if config.run.resume and checkpointer is not None:
        abstract = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            state,
            task.state_shardings,
        )
        restored = checkpointer.restore_latest(abstract, model=task.model_config)
        if restored is None:
            say(f"jaxalign: no checkpoint in {out / 'checkpoints'}; starting from step 0")
        else:
            resumed_from, state, meta = restored
            task.restore(meta.get("task", {}))
            say(f"jaxalign: resumed from checkpoint step {resumed_from}")
    start = resumed_from or 0
    log = MetricWriter(
        out,
        resume_step=start,
        tensorboard=config.logging.tensorboard,
        wandb=config.logging.wandb,
        wandb_project=config.logging.wandb_project,
        wandb_mode=config.logging.wandb_mode,
        run_config=config_to_dict(config),
        main_process=is_main,
    )
    if log.dropped:
        say(f"jaxalign: dropped {log.dropped} logged steps after step {start} (recomputed now)")
    if is_main:
        _snapshot_config(out, config, resumed_from, say)
    _barrier("jaxalign-run-started")
    for line in task.describe():
        say(f"jaxalign: {line}")

    jitted = jax.jit(
        task.step,
        in_shardings=(task.state_shardings, task.frozen_shardings, task.batch_shardings, None),
        out_shardings=(task.state_shardings, None),
        donate_argnums=(0,),
    )
    frozen = task.frozen
    compiled: dict[Any, Any] = {}
    peak = None
    if task.reports_flops:
        peak = (config.logging.peak_flops or measure_matmul_peak()) * mesh.devices.size

    bar = None
    total = config.run.steps
    if is_main and config.logging.progress_bar and not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc=f"train {task.name}", unit="step")

    def save(step: int, state, *, force: bool = False) -> None:
        if checkpointer is None:
            return
        meta = {
            "step": step,
            "task": task.position(),
            "config": config_to_dict(config),
            "model": dataclasses.asdict(task.model_config),
        }
        checkpointer.save(step, state, meta, force=force)

    status, step = "completed", start
    try:
        with _Signals() as signals, jax.set_mesh(mesh), axis_rules(rules):
            while step < total:
                if signals.received is not None:
                    status = "interrupted"
                    say(f"jaxalign: {signals.received} received; checkpointing step {step}")
                    break
                t0 = time.perf_counter()
                key = jax.random.fold_in(step_key, step)
                try:
                    batch = task.batch(step, key)
                except StopIteration:
                    status = "data_exhausted"
                    say(f"jaxalign: data exhausted after step {step} (data.num_epochs)")
                    break
                if config.debug.nan_at_step == step + 1:
                    batch = task.poison(batch)  # fault injection on the host: same program
                shape = task.batch_signature(batch)
                if shape not in compiled:
                    if compiled:
                        say(f"jaxalign: compiling the step for a new batch shape {shape}")
                    with jax.numpy_dtype_promotion("standard"):
                        compiled[shape] = jitted.lower(state, frozen, batch, key).compile()
                    t0 = time.perf_counter()
                new_state, metrics = compiled[shape](state, frozen, batch, key)
                metrics = _host_metrics(metrics)
                dt = time.perf_counter() - t0
                if not _is_good(metrics):
                    saved = checkpointer.all_steps() if checkpointer else []
                    last = saved[-1] if saved else None
                    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)} or metrics
                    values = ", ".join(f"{k}={v}" for k, v in bad.items())
                    raise NonFiniteError(
                        f"non-finite values at step {step + 1} ({values}); training "
                        f"stopped and the step was not saved; last good checkpoint: "
                        f"{'none' if last is None else f'step {last}'} in {out / 'checkpoints'}"
                    )
                state = new_state
                step += 1
                record = {k: v for k, v in metrics.items() if k != "finite"}
                record["step_time_s"] = dt
                if "tokens" in metrics:
                    record["tokens_per_s"] = metrics["tokens"] / dt
                if peak is not None:
                    flops = task.flops(batch)
                    record["flops_per_s"] = flops / dt
                    record["mfu"] = flops / dt / peak
                record.update(task.score(state, step))  # the task keeps its own schedule
                if step % config.logging.every_steps == 0 or step == total:
                    log.write(step, record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                if step % config.checkpoint.every_steps == 0:
                    save(step, state)
                if config.debug.sigkill_after_step == step:
                    if checkpointer is not None:
                        checkpointer.wait()
                    os.kill(os.getpid(), signal.SIGKILL)
            save(step, state, force=True)
    finally:
        log.close()
        if bar is not None:
            bar.close()
        if checkpointer is not None:
            checkpointer.close()
    if checkpointer is not None and status == "interrupted":
        say(f"jaxalign: checkpoint of step {step} written to {out / 'checkpoints'}")
    summary = {
        "status": status,
        "step": step,
        "algorithm": config.algorithm.name,
        "resumed_from": resumed_from,
        "compilations": len(compiled),
        "runtime_s": time.perf_counter() - t_start,
        **task.summary(log.history),
    }
    if status == "completed" and config.run.save_model:
        with jax.set_mesh(mesh), axis_rules(rules):
            model_dir = task.export(state, out / "model")
        if model_dir is not None:
            summary["model_dir"] = str(model_dir)
    if is_main:
        (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2))
    return TrainResult(
        out, step, status, log.history, state, resumed_from, len(compiled), summary, task
    )


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    return value


__all__ = [
    "NonFiniteError",
    "RunDirectory",
    "RunLockedError",
    "TrainResult",
    "changed_keys",
    "make_run_mesh",
    "run",
]
