"""The training driver: ``train(config)`` runs (or resumes) one preference-optimisation run.

Per run directory (``run.out_dir``):

* ``config.yaml`` — the resolved config (a changed config on resume is saved
  too; the previous file is kept as ``config.<step>.yaml``);
* ``metrics.jsonl`` — one JSON object per logged step;
* ``tensorboard/`` — the same scalars as TensorBoard event files (``logging.tensorboard``);
* ``checkpoints/<step>/`` — Orbax checkpoints (train state, data position, config);
* ``tokenizer/``, ``data/`` — the tiny tokenizer / dataset(s) when built on the fly.

``algorithm.name: multiobjective_dpo`` trains on K datasets (``data.paths``): K loaders
with the same batch size advance together (all their positions are checkpointed),
each step's K batches are padded to one length and fed to
:func:`jaxalign.train.multiobjective.multiobjective_train_step`, and
``metrics.jsonl`` gets the per-objective ``loss_k``, ``accuracy_k``, ``grad_norm_k``
and the aggregator's ``agg_weight_k`` / ``agg_coef_k`` / ``agg_cos_k``.

Guarantees:

* **exact resume** — the state, the optimizer, the PRNG and the data position
  are restored, so a killed and resumed run repeats the uninterrupted run's
  per-step losses (bitwise on CPU);
* **SIGTERM / SIGINT** — the current step finishes, a checkpoint is written and
  the run returns with ``status="interrupted"``;
* **NaN / Inf** — a step whose loss or gradient is not finite changes nothing;
  training stops with :class:`NonFiniteError` naming the step, and the last
  good checkpoint stays on disk;
* **nothing is overwritten silently** — a non-empty run directory is refused
  unless ``run.resume`` or ``run.overwrite`` is set.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from flax import nnx

from jaxalign.data import (
    PackedPreferenceBatch,
    PreferenceBatch,
    build_preference_loader,
    make_tiny_preference_dataset,
)
from jaxalign.data.config import DataConfig
from jaxalign.models import axis_rules, build_tiny_tokenizer, from_pretrained, load_tokenizer
from jaxalign.parallel import (
    DEFAULT_RULES,
    data_shard_info,
    initialize_distributed,
    make_mesh,
)
from jaxalign.train.checkpoint import Checkpointer
from jaxalign.train.config import TrainConfig, config_to_dict
from jaxalign.train.metrics import (
    JsonlWriter,
    dpo_step_flops,
    measure_matmul_peak,
    truncate_jsonl,
)
from jaxalign.train.multiobjective import multiobjective_train_step, uses_weights
from jaxalign.train.optim import make_optimizer
from jaxalign.train.reference import CACHE_NAME as REFERENCE_CACHE
from jaxalign.train.reference import precompute_reference_logps
from jaxalign.train.state import (
    TrainState,
    abstract_model,
    abstract_train_state,
    init_train_state,
    train_shardings,
)
from jaxalign.train.step import preference_train_step, shard_preference_batch
from jaxalign.train.tensorboard import SummaryWriter


class NonFiniteError(RuntimeError):
    """A step produced a NaN/Inf loss or gradient; training stopped."""


class TrainResult(NamedTuple):
    """What :func:`train` returns."""

    out_dir: Path  # the run directory
    step: int  # optimizer steps done (counting those before a resume)
    status: str  # "completed" or "interrupted" (SIGTERM/SIGINT)
    history: list[dict[str, Any]]  # metrics logged by this call
    state: TrainState  # the final train state (sharded arrays)
    resumed_from: int | None  # checkpoint step restored, or None for a fresh start
    compilations: int  # compiled train steps (one per batch shape)


# Config sections whose change does not alter the run's trajectory.
_FREE_ON_RESUME = {"run.resume", "run.overwrite", "logging", "debug", "checkpoint"}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [k for k in keys if not any(k == f or k.startswith(f + ".") for f in _FREE_ON_RESUME)]


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _prepare_run_dir(config: TrainConfig) -> Path:
    out = Path(config.run.out_dir)
    nonempty = out.is_dir() and any(out.iterdir())
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"run.out_dir={str(out)!r} exists and is not a directory")
    if nonempty and not (config.run.resume or config.run.overwrite):
        raise FileExistsError(
            f"run directory {str(out)!r} is not empty; resume it with --resume "
            "(run.resume=true) or replace it with --overwrite (run.overwrite=true)"
        )
    _barrier("jaxalign-train-check-dir")
    if jax.process_index() == 0:
        if nonempty and config.run.overwrite:
            print(f"jaxalign: --overwrite: deleting existing run directory {out}", flush=True)
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
    _barrier("jaxalign-train-made-dir")
    return out


def _write_config(out: Path, config: TrainConfig, step: int | None) -> None:
    path = out / "config.yaml"
    new = config_to_dict(config)
    if path.exists():
        old = yaml.safe_load(path.read_text()) or {}
        changed = _changed_keys(old, new)
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


def _make_mesh(config: TrainConfig):
    """The mesh; fixed sizes multiplying to fewer than the local devices use the first ones."""
    sizes = config.mesh.sizes
    wanted = int(np.prod(sizes))
    if -1 not in sizes and wanted < jax.device_count() and jax.process_count() == 1:
        return make_mesh(config.mesh, devices=jax.devices()[:wanted])
    return make_mesh(config.mesh)


def _tokenizer_and_data(config: TrainConfig, out: Path) -> tuple[Any, list[DataConfig]]:
    """The tokenizer and one data config per objective (one for the single-objective losses)."""
    pid = jax.process_index()
    if config.init.tokenizer:
        tokenizer = load_tokenizer(config.init.tokenizer)
    else:
        directory = out / f"tokenizer-p{pid}"
        build_tiny_tokenizer(directory, vocab_size=config.init.tiny_tokenizer_vocab_size)
        # The fast-tokenizer class directly: AutoTokenizer would import torch (seconds).
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)
    data = config.data
    multi = config.algorithm.name == "multiobjective_dpo"
    if data.paths:
        return tokenizer, [dataclasses.replace(data, path=p, paths=()) for p in data.paths]
    if data.path:
        return tokenizer, [data]
    tiny = config.tiny_data
    rules = tiny.objectives if multi else tiny.objectives[:1]
    configs = []
    for k, rule in enumerate(rules):
        # The single-objective file keeps its historical name (tiny-p<pid>.jsonl).
        name = f"tiny-{k}-{rule}-p{pid}.jsonl" if multi else f"tiny-p{pid}.jsonl"
        path = make_tiny_preference_dataset(
            out / "data" / name, tiny.num_rows, tiny.seed, num_words=tiny.num_words, rule=rule
        )
        configs.append(dataclasses.replace(data, path=str(path)))
    return tokenizer, configs


def _pad_length(batch: PreferenceBatch, length: int, pad_id: int) -> PreferenceBatch:
    """Right-pads a batch's sequences to ``length`` (padding is masked: results unchanged)."""
    extra = length - batch.chosen_input_ids.shape[1]
    if extra == 0:
        return batch

    def pad(x, value):
        return np.pad(x, ((0, 0), (0, extra)), constant_values=value)

    return PreferenceBatch(
        pad(batch.chosen_input_ids, pad_id),
        pad(batch.chosen_attention_mask, 0),
        pad(batch.chosen_loss_mask, 0),
        pad(batch.rejected_input_ids, pad_id),
        pad(batch.rejected_attention_mask, 0),
        pad(batch.rejected_loss_mask, 0),
        batch.example_mask,
    )


def _num_batch_shards(sharding) -> int:
    axes = sharding.spec[0] if len(sharding.spec) else None
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return int(np.prod([sharding.mesh.shape[a] for a in axes]))


def _jsonable(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in metrics.items()}


def train(config: TrainConfig, *, quiet: bool = False) -> TrainResult:
    """Runs (or resumes) a preference-optimisation run (``algorithm``: DPO, IPO, robust DPO
    or multi-objective DPO).

    Args:
        config: the run; see :class:`jaxalign.train.TrainConfig`.
        quiet: no progress bar and no per-run messages on stdout.

    Returns:
        :class:`TrainResult`.

    Raises:
        FileExistsError: non-empty run directory without resume/overwrite.
        NonFiniteError: a NaN/Inf loss or gradient (the step is named).
        jaxalign.train.CheckpointError: checkpoints exist but none is readable.
    """
    initialize_distributed(config=config.distributed)
    say = (
        (lambda *a: None)
        if quiet or jax.process_index() > 0
        else functools.partial(print, flush=True)
    )
    out = _prepare_run_dir(config)
    is_main = jax.process_index() == 0

    mesh = _make_mesh(config)
    logical_rules = DEFAULT_RULES.replace(dict(config.sharding.rules))
    rules = logical_rules.as_pairs()
    tokenizer, data_configs = _tokenizer_and_data(config, out)
    data_config = data_configs[0]
    multi = config.algorithm.name == "multiobjective_dpo"

    # Model: shape first, then shardings, then one jitted init.
    pretrained = None
    model_config = config.model
    if config.init.pretrained:
        m = config.model  # how to compute comes from the run's config, the shape from the files
        loaded = from_pretrained(
            config.init.pretrained,
            dtype=m.dtype,
            param_dtype=m.param_dtype,
            mesh=mesh,
            rules=rules,
            config_overrides={
                "remat": m.remat,
                "attention": m.attention,
                "logprob_chunk_size": m.logprob_chunk_size,
                "scan_unroll": m.scan_unroll,
            },
        )
        model_config = loaded.config
        pretrained = nnx.split(loaded)[1]
    if len(tokenizer) > model_config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but model.vocab_size="
            f"{model_config.vocab_size}; raise model.vocab_size"
        )
    graphdef, abstract_params = abstract_model(model_config, rules)
    tx, lr_schedule = make_optimizer(config.optimizer, config.schedule, config.run.steps)
    sh = train_shardings(abstract_params, tx, mesh, rules)
    key = jax.random.key(config.run.seed)
    with jax.numpy_dtype_promotion("standard"):
        state = init_train_state(model_config, tx, sh, key=key, rules=rules, params=pretrained)
    copy = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=sh.reference)
    reference = copy(state.params)  # frozen π_ref = the initial policy

    # Resume.
    checkpointer = (
        Checkpointer(out / "checkpoints", config.checkpoint) if config.checkpoint.enabled else None
    )
    resumed_from, loader_state = None, None
    if config.run.resume and checkpointer is not None:
        shapes = jax.eval_shape(lambda s: s, state)
        restored = checkpointer.restore_latest(abstract_train_state(shapes, sh.state))
        if restored is None:
            say(f"jaxalign: no checkpoint in {out / 'checkpoints'}; starting from step 0")
        else:
            resumed_from, state, meta = restored
            loader_state = meta["data"]
            say(f"jaxalign: resumed from checkpoint step {resumed_from}")
    start = int(jax.device_get(state.step))
    if is_main:
        dropped = truncate_jsonl(out / "metrics.jsonl", start)
        if dropped:
            say(f"jaxalign: dropped {dropped} logged steps after step {start} (recomputed now)")
        _write_config(out, config, resumed_from)

    shard, count = data_shard_info(data_config.batch_size, mesh, logical_rules)
    num_objectives = len(data_configs)
    # A single-objective checkpoint stores one loader position, a multi-objective one a list.
    if loader_state is None:
        loader_states = [None] * num_objectives
    else:
        loader_states = loader_state if isinstance(loader_state, list) else [loader_state]
        if isinstance(loader_state, list) != multi or len(loader_states) != num_objectives:
            raise ValueError(
                f"the checkpoint holds {len(loader_states)} data position(s) but the config "
                f"reads {num_objectives} dataset(s); the data changed since the checkpoint"
            )
    # Packed rows are split over the batch shards: this process's rows per micro-batch
    # must be a multiple of its share of them.
    row_multiple = max(1, _num_batch_shards(sh.batch) // count)
    loaders = [
        build_preference_loader(
            dc,
            tokenizer,
            process_index=shard,
            process_count=count,
            state=position,
            micro_batches=config.optimizer.grad_accum_steps,
            row_multiple=row_multiple,
        )
        for dc, position in zip(data_configs, loader_states, strict=True)
    ]
    if config.data.precompute_reference:
        say("jaxalign: computing reference log-probs over the dataset (once)")
        logps = precompute_reference_logps(
            loaders[0].dataset,
            reference,
            graphdef,
            batch_size=data_config.batch_size,
            length=data_config.max_length,
            pad_id=loaders[0].pad_id,
            mesh=mesh,
            rules=logical_rules,
            reference_sharding=sh.reference,
            batch_sharding=sh.batch,
            example_sharding=sh.example,
            shard=(shard, count),
            cache=out / REFERENCE_CACHE,
        )
        loaders[0].attach_reference_logps(*logps)

    # The step: jitted once per batch shape, with explicit shardings and donation.
    refs = (sh.example, sh.example) if config.data.precompute_reference else (None, None)
    if config.data.packing:
        batch_sh = PackedPreferenceBatch(*(sh.batch,) * 6, sh.example, *refs)
    else:
        batch_sh = PreferenceBatch(*(sh.batch,) * 6, sh.example, *refs)
    algo = config.algorithm
    if multi:
        weights = algo.objective_weights(num_objectives)
        step_fn = functools.partial(
            multiobjective_train_step,
            graphdef=graphdef,
            tx=tx,
            lr_schedule=lr_schedule,
            aggregator=algo.aggregator,
            weights=np.asarray(weights, np.float32) if uses_weights(algo.aggregator) else None,
            c=algo.radius,
            beta=algo.beta,
            label_smoothing=algo.label_smoothing,
            grad_accum_steps=config.optimizer.grad_accum_steps,
            batch_sharding=sh.batch,
        )
        batch_sh = (batch_sh,) * num_objectives
    else:
        step_fn = functools.partial(
            preference_train_step,
            graphdef=graphdef,
            tx=tx,
            lr_schedule=lr_schedule,
            algorithm=algo.name,
            beta=algo.beta,
            label_smoothing=algo.label_smoothing,
            tau=algo.tau,
            flip_rate=algo.flip_rate,
            grad_accum_steps=config.optimizer.grad_accum_steps,
            batch_sharding=sh.batch,
            kl_metric=config.logging.kl_ref,
        )
    jitted = jax.jit(
        step_fn,
        in_shardings=(sh.state, sh.reference, batch_sh),
        out_shardings=(sh.state, sh.replicated),
        donate_argnums=(0,),
    )
    compiled: dict[tuple[int, ...], Any] = {}

    peak = config.logging.peak_flops or measure_matmul_peak()
    peak_total = peak * mesh.devices.size

    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signal.Signals(signum).name

    handlers = {}
    if threading_is_main():
        for sig in (signal.SIGTERM, signal.SIGINT):
            handlers[sig] = signal.signal(sig, on_signal)

    writer = JsonlWriter(out / "metrics.jsonl") if is_main else None
    tb_writer = (
        SummaryWriter(out / "tensorboard") if is_main and config.logging.tensorboard else None
    )
    bar = None
    if is_main and config.logging.progress_bar and not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.run.steps, initial=start, desc="train", unit="step")

    def save(step: int, *, force: bool = False) -> None:
        if checkpointer is None:
            return
        positions = [loader.state_dict() for loader in loaders]
        data = positions if multi else positions[0]
        meta = {"step": step, "data": data, "config": config_to_dict(config)}
        checkpointer.save(step, state, meta, force=force)

    history: list[dict[str, Any]] = []
    status = "completed"
    step = start
    try:
        with jax.set_mesh(mesh), axis_rules(rules):
            while step < config.run.steps:
                if stop["signal"] is not None:
                    status = "interrupted"
                    say(f"jaxalign: {stop['signal']} received; checkpointing step {step}")
                    break
                t0 = time.perf_counter()
                try:
                    # All loaders advance together (the positions stay in step on resume).
                    locals_ = [next(loader) for loader in loaders]
                except StopIteration:
                    say(f"jaxalign: data exhausted after step {step} (data.num_epochs)")
                    break
                if len(locals_) > 1:  # one length for the K batches (bucket padding)
                    length = max(b.chosen_input_ids.shape[1] for b in locals_)
                    locals_ = [
                        _pad_length(b, length, loader.pad_id)
                        for b, loader in zip(locals_, loaders, strict=True)
                    ]
                if config.debug.nan_at_step == step + 1:
                    # Fault injection on the host, so the compiled step is the usual one.
                    locals_ = [
                        b._replace(example_mask=np.full_like(b.example_mask, np.nan))
                        for b in locals_
                    ]
                batches = [shard_preference_batch(b, mesh, logical_rules) for b in locals_]
                batch = tuple(batches) if multi else batches[0]
                local = locals_[0]
                shape = tuple(local[0].shape)
                if shape not in compiled:
                    if compiled:
                        say(f"jaxalign: compiling the step for a new batch shape {shape}")
                    # optax's Adam mixes int and float scalars: trace with standard promotion.
                    with jax.numpy_dtype_promotion("standard"):
                        compiled[shape] = jitted.lower(state, reference, batch).compile()
                    t0 = time.perf_counter()
                state, metrics = compiled[shape](state, reference, batch)
                metrics = _jsonable(jax.device_get(metrics))
                dt = time.perf_counter() - t0
                if metrics["finite"] != 1.0:
                    last = (
                        checkpointer.all_steps()[-1]
                        if checkpointer and checkpointer.all_steps()
                        else None
                    )
                    raise NonFiniteError(
                        f"non-finite loss or gradient at step {step + 1} "
                        f"(loss={metrics['loss']}, grad_norm={metrics['grad_norm']}); training "
                        f"stopped, the update was not applied; last good checkpoint: "
                        f"{'none' if last is None else f'step {last}'} in {out / 'checkpoints'}"
                    )
                step += 1
                length = shape[1]
                pairs = num_objectives * data_config.batch_size  # K batches in a step
                # Sequences the step computes: 2 per pair, or the packed rows.
                computed = shape[0] * count if config.data.packing else 2 * pairs
                flops = dpo_step_flops(
                    model_config,
                    computed / 2,
                    length,
                    reference_forward=not config.data.precompute_reference,
                )
                record = {
                    "step": step,
                    **{k: v for k, v in metrics.items() if k != "finite"},
                    "step_time_s": dt,
                    "tokens_per_s": metrics["tokens"] / dt,
                    "padded_tokens_per_s": computed * length / dt,
                    "flops_per_s": flops / dt,
                    "mfu": flops / dt / peak_total,
                }
                if step % config.logging.every_steps == 0 or step == config.run.steps:
                    history.append(record)
                    if writer is not None:
                        writer.write(record)
                    if tb_writer is not None:
                        tb_writer.scalars(step, record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['accuracy']:.2f}")
                if step % config.checkpoint.every_steps == 0:
                    save(step)
                if config.debug.sigkill_after_step == step:
                    os.kill(os.getpid(), signal.SIGKILL)
            save(step, force=True)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        if tb_writer is not None:
            tb_writer.close()
        if checkpointer is not None:
            checkpointer.close()
        for sig, old in handlers.items():
            signal.signal(sig, old)
    if checkpointer is not None and status == "interrupted":
        say(f"jaxalign: checkpoint of step {step} written to {out / 'checkpoints'}")
    return TrainResult(out, step, status, history, state, resumed_from, len(compiled))


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def save_run_summary(result: TrainResult) -> None:
    """Writes ``summary.json`` (first/last loss and throughput) into the run directory."""
    h = result.history
    if not h:
        return
    summary = {
        "status": result.status,
        "step": result.step,
        "first_loss": h[0]["loss"],
        "last_loss": h[-1]["loss"],
        "last_accuracy": h[-1]["accuracy"],
        "median_tokens_per_s": float(np.median([r["tokens_per_s"] for r in h])),
        "median_mfu": float(np.median([r["mfu"] for r in h])),
    }
    (result.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))


__all__ = ["NonFiniteError", "TrainResult", "save_run_summary", "train"]
