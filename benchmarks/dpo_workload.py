"""What the DPO speed benchmarks share: model shapes, batches, optimizer, the jaxalign side.

Every side of ``dpo_step_vs_trl.py`` and ``dpo_step_vs_tunix.py`` trains the *same*
work, built here once per row:

* the same initial weights — a jaxalign :class:`~jaxalign.models.CausalLM` with a fixed
  seed, written as an HF checkpoint that transformers (TRL) and Tunix load;
* the same token ids — the tiny synthetic preference rows
  (:func:`jaxalign.data.make_tiny_preference_dataset`) through the tiny BPE tokenizer,
  tokenised once by :func:`jaxalign.data.load_preference_dataset`; each side only lays
  these ids out in its own batch format (outside the timed step);
* the same optimizer — AdamW (β₁ 0.9, β₂ 0.999, ε 1e-8, no weight decay), constant
  learning rate, global-norm clipping at 1.0, DPO β 0.1 (:class:`Hyper`).

The timed unit on every side is **one optimizer step on a batch that is already collated
and in memory**: policy and reference forward passes (the reference log-probs are part
of the step unless an option precomputes them, which the result then says), backward,
clipping, AdamW, ending with a host sync of the loss. ``step()`` cycles through
``num_batches`` batches, so all sides see the same batches in the same order.

The jaxalign side is built by :func:`make_jaxalign_step` alone, through jaxalign's
public train-step API; new jaxalign options (packing, precomputed reference log-probs,
remat) are wired in there, behind :class:`JaxalignOptions`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import harness
import numpy as np

#: Model shapes (jaxalign ``ModelConfig`` fields). ``rope_theta`` is 1e6 because Tunix
#: 0.1.7's Llama applies RoPE with its default θ = 1e6 whatever the config says; with the
#: same θ everywhere all sides compute the same function (checked through the losses).
SHAPES: dict[str, dict[str, Any]] = {
    # The tiny Llama of the earlier benchmark: d 128, 4 layers, GQA 4/2 heads.
    "tiny": dict(
        model_type="llama",
        vocab_size=384,
        hidden_size=128,
        intermediate_size=352,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        rope_theta=1_000_000.0,
    ),
    # d 512, 8 layers: 8 query / 4 key-value heads of 64 (GQA like the tiny shape),
    # SwiGLU 1408 (≈ 8/3 · 512, rounded up to a multiple of 128, as Llama does).
    "d512": dict(
        model_type="llama",
        vocab_size=384,
        hidden_size=512,
        intermediate_size=1408,
        num_layers=8,
        num_heads=8,
        num_kv_heads=4,
        head_dim=64,
        rope_theta=1_000_000.0,
    ),
}
SMOKE_SHAPE = dict(SHAPES["tiny"], hidden_size=32, intermediate_size=64, num_layers=1, head_dim=16)


@dataclasses.dataclass(frozen=True)
class Hyper:
    """Optimizer and loss settings, identical on every side."""

    lr: float = 1e-4  # constant learning rate (no warmup, no decay)
    beta: float = 0.1  # DPO β
    clip_norm: float = 1.0  # global gradient-norm clipping
    b1: float = 0.9  # AdamW β₁
    b2: float = 0.999  # AdamW β₂
    eps: float = 1e-8  # AdamW ε
    weight_decay: float = 0.0  # AdamW decoupled weight decay


@dataclasses.dataclass(frozen=True)
class Workload:
    """The shared work of one benchmark row."""

    model: dict[str, Any]  # jaxalign ModelConfig fields (float32 parameters in the checkpoint)
    checkpoint: Path  # HF directory with the initial weights (π_ref = initial policy)
    tokenizer_dir: Path  # the tiny BPE tokenizer
    data_path: Path  # the JSONL rows the batches were tokenised from
    pad_id: int
    max_length: int  # tokens per sequence (prompt + response) after truncation
    batches: tuple[tuple[Any, ...], ...]  # num_batches × batch_size jaxalign TokenizedPairs

    @property
    def batch_size(self) -> int:
        return len(self.batches[0])

    def real_tokens(self) -> list[int]:
        """Non-padding tokens of each batch: prompt + response, chosen and rejected rows."""
        return [
            sum(2 * len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)
            for pairs in self.batches
        ]

    def mean_real_tokens(self) -> float:
        return float(np.mean(self.real_tokens()))

    def real_token_flops(self) -> float:
        """Model FLOPs of one step on the real tokens (mean over the batches).

        :func:`jaxalign.train.dpo_step_flops` per sequence at its own length: policy
        forward + backward and the reference forward, no padding.
        """
        from jaxalign.models import ModelConfig
        from jaxalign.train import dpo_step_flops

        config = ModelConfig(**self.model)
        per_batch = [
            sum(
                dpo_step_flops(config, 1, len(p.prompt) + len(r)) / 2
                for p in pairs
                for r in (p.chosen, p.rejected)
            )
            for pairs in self.batches
        ]
        return float(np.mean(per_batch))


def build_workload(
    work: Path,
    model: dict[str, Any],
    *,
    batch_size: int,
    num_batches: int,
    max_length: int,
    seed: int = 0,
) -> Workload:
    """Tokenizer, dataset, batches of token ids and the initial checkpoint, under ``work``."""
    from flax import nnx
    from transformers import PreTrainedTokenizerFast

    from jaxalign.data import DataConfig, load_preference_dataset, make_tiny_preference_dataset
    from jaxalign.data import pad_token_id as tokenizer_pad_id
    from jaxalign.models import CausalLM, ModelConfig, build_tiny_tokenizer, save_pretrained

    work.mkdir(parents=True, exist_ok=True)
    tok_dir = build_tiny_tokenizer(work / "tokenizer")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir), local_files_only=True)
    rows = max(512, batch_size * num_batches)
    data = make_tiny_preference_dataset(work / "data.jsonl", rows, seed)
    dataset = load_preference_dataset(
        DataConfig(path=str(data), max_length=max_length, max_prompt_length=max_length // 2),
        tokenizer,
    )
    examples = dataset.examples[: batch_size * num_batches]
    batches = tuple(
        tuple(examples[i * batch_size : (i + 1) * batch_size]) for i in range(num_batches)
    )
    pad = tokenizer_pad_id(tokenizer)
    config = ModelConfig(**model, pad_token_id=pad)
    save_pretrained(CausalLM(config, rngs=nnx.Rngs(seed)), work / "policy")
    return Workload(dict(model), work / "policy", tok_dir, data, pad, max_length, batches)


# ----------------------------------------------------------------------------- jaxalign side


@dataclasses.dataclass(frozen=True)
class JaxalignOptions:
    """How the jaxalign side runs; recorded with every result."""

    # Activations/computation dtype ("float32" or "bfloat16"; bf16 keeps float32 softmax,
    # norms and log-softmax).
    dtype: str = "float32"
    # Stored parameters and AdamW moments ("float32": mixed precision under bf16).
    param_dtype: str = "float32"
    # "max_length": every batch padded to max_length, the trainer's default static shape;
    # "bucket": to the smallest of the trainer's bucket lengths (powers of 2, then
    # max_length) that holds the batch, one compile per bucket (DataConfig.padding).
    padding: str = "max_length"
    # Reference log-probs computed once per dataset pass, outside the step, and read from
    # the batch (TRL: precompute_ref_log_probs; data.precompute_reference in jaxalign).
    precompute_ref: bool = False
    # The 2B sequences of a batch packed end to end into rows of max_length tokens, no
    # compute on padding (TRL: padding_free; data.packing in jaxalign).
    packing: bool = False
    # Tokens per packed row (None: max_length); data.packing_length in jaxalign.
    packing_length: int | None = None
    # With packing, each pair's prompt computed once for both responses (data.share_prompt).
    share_prompt: bool = False
    # Decoder layers per scan step (model.scan_unroll; the layer count unrolls fully).
    scan_unroll: int = 1
    # Rematerialisation of the scanned layers in the backward pass ("none", "full", ...;
    # TRL/HF: gradient checkpointing).
    remat: str = "none"

    def __post_init__(self):
        if self.padding not in ("max_length", "bucket"):
            raise ValueError(f"padding must be 'max_length' or 'bucket', got {self.padding!r}")


def make_jaxalign_step(
    workload: Workload, options: JaxalignOptions = JaxalignOptions(), hyper: Hyper = Hyper()
) -> tuple[Callable[[], float], dict[str, Any]]:
    """jaxalign's DPO step on the workload: ``(step, info)``.

    Built with the public train-step API exactly as :func:`jaxalign.train.train` builds
    it: shape-first sharded state (:func:`~jaxalign.train.abstract_model`,
    :func:`~jaxalign.train.train_shardings`, :func:`~jaxalign.train.init_train_state`)
    from the workload's checkpoint, AdamW from :func:`~jaxalign.train.make_optimizer`,
    :func:`~jaxalign.train.preference_train_step` jitted once per batch shape with
    explicit shardings and the state donated, on a one-device mesh.

    ``step()`` runs one optimizer step on the next prepared batch (already collated
    and on the device) and returns the loss as a Python float (the host sync).
    ``info`` records the options, the padded and real tokens per step and the
    compile time.

    Extending it: a new option becomes a :class:`JaxalignOptions` field; what it changes
    in the batch goes into ``_collate`` (e.g. packed rows or stored reference log-probs,
    computed once here, outside ``step``), what it changes in the step goes into the
    ``functools.partial`` of the step function below.
    """
    import time

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxalign.data import PackedPreferenceBatch, PreferenceBatch
    from jaxalign.models import axis_rules, from_pretrained
    from jaxalign.parallel import DEFAULT_RULES, MeshConfig, make_mesh
    from jaxalign.train import (
        OptimizerConfig,
        ScheduleConfig,
        abstract_model,
        init_train_state,
        make_optimizer,
        preference_train_step,
        train_shardings,
    )
    from jaxalign.train.step import reference_sequence_logprobs, shard_preference_batch

    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    rules = DEFAULT_RULES.as_pairs()
    loaded = from_pretrained(
        workload.checkpoint,
        dtype=options.dtype,
        param_dtype=options.param_dtype,
        mesh=mesh,
        rules=rules,
        config_overrides={"remat": options.remat, "scan_unroll": options.scan_unroll},
    )
    model_config = loaded.config
    params = nnx.split(loaded)[1]
    graphdef, abstract_params = abstract_model(model_config, rules)
    steps = 10**6  # the schedule is constant; the horizon only matters for decays
    tx, lr_schedule = make_optimizer(
        OptimizerConfig(
            lr=hyper.lr,
            b1=hyper.b1,
            b2=hyper.b2,
            eps=hyper.eps,
            weight_decay=hyper.weight_decay,
            clip_norm=hyper.clip_norm,
        ),
        ScheduleConfig(kind="constant"),
        steps,
    )
    sh = train_shardings(abstract_params, tx, mesh, rules)
    with jax.numpy_dtype_promotion("standard"):
        state = init_train_state(
            model_config, tx, sh, key=jax.random.key(0), rules=rules, params=params
        )
    copy = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=sh.reference)
    reference = copy(state.params)  # frozen π_ref = the initial policy

    step_fn = functools.partial(
        preference_train_step,
        graphdef=graphdef,
        tx=tx,
        lr_schedule=lr_schedule,
        algorithm="dpo",
        beta=hyper.beta,
        batch_sharding=sh.batch,
        kl_metric=False,  # the peers compute no full-vocabulary KL metric either
    )
    refs = (sh.example, sh.example) if options.precompute_ref else (None, None)
    if options.packing:
        batch_sh = PackedPreferenceBatch(*(sh.batch,) * 6, sh.example, *refs)
    else:
        batch_sh = PreferenceBatch(*(sh.batch,) * 6, sh.example, *refs)
    jitted = jax.jit(
        step_fn,
        in_shardings=(sh.state, sh.reference, batch_sh),
        out_shardings=(sh.state, sh.replicated),
        donate_argnums=(0,),
    )
    local = [_collate(pairs, workload, options) for pairs in workload.batches]
    batches = [shard_preference_batch(b, mesh, DEFAULT_RULES) for b in local]
    precompute_s = 0.0
    if options.precompute_ref:
        # Once per batch of the dataset pass, before (and outside) the timed steps.
        ref_fn = jax.jit(functools.partial(reference_sequence_logprobs, graphdef=graphdef))
        start = time.perf_counter()
        with jax.set_mesh(mesh), axis_rules(rules):
            for i, b in enumerate(batches):
                rc, rr = jax.block_until_ready(ref_fn(reference, b))
                batches[i] = b._replace(reference_chosen_logp=rc, reference_rejected_logp=rr)
        precompute_s = (time.perf_counter() - start) / len(batches)

    compiled: dict[tuple[int, ...], Any] = {}
    start = time.perf_counter()
    with jax.set_mesh(mesh), axis_rules(rules), jax.numpy_dtype_promotion("standard"):
        for batch in batches:
            shape = tuple(batch[0].shape)
            if shape not in compiled:
                compiled[shape] = jitted.lower(state, reference, batch).compile()
    compile_s = time.perf_counter() - start
    _check_dtype_stable(state, next(iter(compiled.values())))
    programs = [compiled[tuple(b[0].shape)] for b in batches]
    counter = {"calls": 0}
    holder = {"state": state}

    def step() -> float:
        i = counter["calls"] % len(batches)
        counter["calls"] += 1
        holder["state"], metrics = programs[i](holder["state"], reference, batches[i])
        return float(metrics["loss"])  # host sync of the loss

    if options.packing:
        padded = [b.input_ids.size for b in local]
        # The pairs' own tokens: a shared prompt counts once per response, as unpacked.
        attended = [
            int((b.segment_ids > 0).sum())
            + (
                int(((b.segment_ids > 0) & (b.branch_ids == 0)).sum())
                if options.share_prompt
                else 0
            )
            for b in local
        ]
    else:
        padded = [2 * b.chosen_input_ids.size for b in local]
        attended = [
            int(b.chosen_attention_mask.sum() + b.rejected_attention_mask.sum()) for b in local
        ]
    if attended != workload.real_tokens():
        raise AssertionError(f"jaxalign batches hold {attended} real tokens, expected "
                             f"{workload.real_tokens()}")  # fmt: skip
    info = {
        "options": dataclasses.asdict(options),
        "step": "jaxalign.train.preference_train_step (algorithm dpo, kl_ref metric off), "
        "jitted once per batch shape, state donated; reference log-probs "
        + (
            "precomputed once per batch before timing"
            if options.precompute_ref
            else "computed in the step"
        ),
        "reference_precompute_s_per_batch": round(precompute_s, 4),
        "padded_tokens_per_step": float(np.mean(padded)),
        "real_tokens_per_step": workload.mean_real_tokens(),
        "batch_shapes": sorted({tuple(b[0].shape) for b in local}),
        "compile_s": round(compile_s, 2),
        "compiled_shapes": len(compiled),
    }
    return step, info


class UnstableStateError(TypeError):
    """jaxalign's step returns a state whose dtypes differ from its input's."""


def _check_dtype_stable(state, compiled) -> None:
    """The step must return the state with the dtypes it was given, or step 2 cannot run.

    The trainer calls the compiled step again with its own output; a promoted leaf (e.g.
    bfloat16 Adam moments coming back as float32) makes that call fail.
    """
    import jax

    given = jax.tree_util.tree_leaves_with_path(state)
    returned = jax.tree.leaves(compiled.out_info[0])
    bad = [
        f"{jax.tree_util.keystr(path)}: {x.dtype} → {y.dtype}"
        for (path, x), y in zip(given, returned)
        if x.dtype != y.dtype
    ]
    if bad:
        raise UnstableStateError(
            f"jaxalign's train step changes {len(bad)} state dtypes, e.g. {bad[:2]}"
        )


def _collate(pairs: Sequence[Any], workload: Workload, options: JaxalignOptions):
    """A right-padded :class:`~jaxalign.data.PreferenceBatch` (or, with ``packing``, a
    :class:`~jaxalign.data.PackedPreferenceBatch`), as the trainer's loader makes."""
    from jaxalign.data import (
        DataConfig,
        bucket_length,
        collate_preference_batch,
        pack_preference_pairs,
    )

    if options.packing:
        width = options.packing_length or workload.max_length
        return pack_preference_pairs(
            pairs, width, pad_id=workload.pad_id, share_prompt=options.share_prompt
        )

    if options.padding == "max_length":
        length = workload.max_length
    else:
        longest = max(len(p.prompt) + max(len(p.chosen), len(p.rejected)) for p in pairs)
        buckets = DataConfig(
            max_length=workload.max_length,
            max_prompt_length=workload.max_length // 2,
            padding="bucket",
        ).resolved_bucket_sizes()
        length = bucket_length(longest, buckets)
    return collate_preference_batch(pairs, length, pad_id=workload.pad_id)


# ----------------------------------------------------------------------------- rows


def add_row_args(parser: argparse.ArgumentParser) -> None:
    """The options both DPO benchmarks share: rows, batches, protocol, output."""
    parser.add_argument("--smoke", action="store_true", help="tiny, jaxalign only, seconds")
    parser.add_argument("--shapes", nargs="+", default=["tiny", "d512"], choices=sorted(SHAPES))
    parser.add_argument(
        "--precisions", nargs="+", default=["float32", "bf16"], choices=["float32", "bf16"]
    )
    parser.add_argument("--batch-size", type=int, default=16, help="preference pairs per step")
    parser.add_argument("--max-length", type=int, default=48, help="tokens per sequence")
    parser.add_argument("--num-batches", type=int, default=4, help="distinct batches, cycled")
    parser.add_argument(
        "--jaxalign-padding",
        default="max_length",
        choices=["max_length", "bucket"],
        help="jaxalign's data.padding: pad to --max-length, or to the batch's bucket",
    )
    parser.add_argument(
        "--jaxalign-packing",
        action="store_true",
        help="jaxalign's data.packing: sequences packed end to end, no compute on padding",
    )
    parser.add_argument(
        "--jaxalign-precompute-ref",
        action="store_true",
        help="jaxalign's data.precompute_reference: reference log-probs computed once per "
        "batch before timing (the step then has no reference forward pass)",
    )
    parser.add_argument(
        "--jaxalign-packing-length",
        type=int,
        default=None,
        help="jaxalign's data.packing_length: tokens per packed row (default --max-length)",
    )
    parser.add_argument(
        "--jaxalign-share-prompt",
        action="store_true",
        help="jaxalign's data.share_prompt: with packing, each pair's prompt computed once",
    )
    parser.add_argument(
        "--jaxalign-scan-unroll",
        type=int,
        default=1,
        help="jaxalign's model.scan_unroll: decoder layers per scan step",
    )
    parser.add_argument(
        "--jaxalign-remat", default="none", help="jaxalign's model.remat policy (none, full, ...)"
    )
    harness.add_protocol_args(parser, repeats=6, warmup=3)


@dataclasses.dataclass(frozen=True)
class Peer:
    """One peer of a DPO benchmark, as the shared driver :func:`run_benchmark` needs it."""

    name: str  # side name in tables and JSON ("trl", "tunix")
    title: str  # first printed line
    packages: tuple[str, ...]  # versions to record
    missing: Callable[[], str | None]  # why the peer cannot run here, or None
    # (workload, precision, work dir) → (step, info)
    make_step: Callable[[Workload, str, Path], tuple[Callable[[], float], dict[str, Any]]]
    # precision → the jaxalign options that match the peer's settings
    jaxalign_options: Callable[[str], JaxalignOptions]
    overrides: tuple[tuple[str, str, str, str], ...]  # (setting, default, value, why)
    kept: str  # the peer defaults kept, in words


def run_benchmark(args: argparse.Namespace, peer: Peer, out: Path) -> dict[str, Any]:
    """Every row (shape × precision) interleaved, printed and written to ``out`` as JSON."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local
    if args.smoke:
        args.shapes, args.precisions = ["tiny"], ["float32"]
        args.batch_size, args.max_length, args.num_batches = 4, 32, 2
        args.repeats, args.warmup = 2, 1
    missing = "skipped (--smoke)" if args.smoke else peer.missing()
    with_peer = missing is None
    import jax  # noqa: F401  (recorded in the machine line)

    hyper = Hyper()
    record = harness.machine(peer.packages if with_peer else ())
    peaks = _matmul_peaks(args.precisions, size=512 if args.smoke else 2048)
    print(peer.title)
    print(harness.describe_machine(record))
    print(f"shared settings: {hyper}")
    print("matmul peak (jitted JAX square matmul, best of 5): "
          + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()))  # fmt: skip
    if with_peer:
        print(f"{peer.name} defaults overridden:")
        for setting, default, value, why in peer.overrides:
            print(f"  {setting}: {default} → {value} ({why})")
        print(f"{peer.name} defaults kept: {peer.kept}")
    else:
        print(f"{peer.name}: {missing}")
    rows = [
        _run_row(args, peer if with_peer else None, shape, precision, hyper, peaks[precision])
        for shape in args.shapes
        for precision in args.precisions
    ]
    result = {
        "benchmark": out.stem,
        "smoke": args.smoke,
        "label": next(
            (r["conditions"]["label"] for r in rows if r["conditions"]["label"] != harness.QUIET),
            harness.QUIET,
        ),
        "timed_unit": "one optimizer step on a collated, in-memory batch, reference log-probs "
        "included (unless an option precomputes them), ending with a host sync of the loss",
        "headline": f"real (non-padding) tokens/s; ratio jaxalign / {peer.name} of the medians "
        "and of the mins",
        "hyper": dataclasses.asdict(hyper),
        "peer": peer.name,
        "peer_status": "measured" if with_peer else missing,
        "peer_overrides": [dict(zip(("setting", "default", "value", "why"), o))
                           for o in peer.overrides] if with_peer else None,
        "peer_kept_defaults": peer.kept if with_peer else None,
        "machine": record,
        "matmul_peak_flops": peaks,
        "rows": rows,
    }  # fmt: skip
    path = harness.write_json(out, result)
    print(f"wrote {path}")
    return result


def _matmul_peaks(precisions: Sequence[str], *, size: int) -> dict[str, float]:
    """This machine's measured matmul FLOP/s per precision: the denominator of MFU."""
    from jaxalign.train import measure_matmul_peak

    dtypes = {"float32": "float32", "bf16": "bfloat16"}
    return {p: measure_matmul_peak(size, dtype=dtypes[p]) for p in dict.fromkeys(precisions)}


def _run_row(
    args, peer: Peer | None, shape: str, precision: str, hyper: Hyper, peak: float
) -> dict[str, Any]:
    model = SMOKE_SHAPE if args.smoke else SHAPES[shape]
    options = dataclasses.replace(
        peer.jaxalign_options(precision) if peer else default_options(precision),
        padding=args.jaxalign_padding,
        packing=args.jaxalign_packing,
        precompute_ref=args.jaxalign_precompute_ref,
        packing_length=args.jaxalign_packing_length,
        share_prompt=args.jaxalign_share_prompt,
        scan_unroll=args.jaxalign_scan_unroll,
        remat=args.jaxalign_remat,
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        workload = build_workload(
            work,
            model,
            batch_size=args.batch_size,
            num_batches=args.num_batches,
            max_length=args.max_length,
        )
        sides, infos = {}, {}
        sides["jaxalign"], infos["jaxalign"] = _jaxalign_side(workload, options, hyper)
        if peer:
            sides[peer.name], infos[peer.name] = peer.make_step(workload, precision, work)
        m = harness.run_interleaved(
            sides,
            repeats=args.repeats,
            warmup=args.warmup,
            max_wait=args.max_wait,
            quiet_load=args.quiet_load,
            smoke=args.smoke,
        )
        records = {name: side_record(name, m, infos[name], workload, peak) for name in sides}
    ratio = m.ratio(peer.name, "jaxalign") if peer else None
    agree = loss_agreement(m, "jaxalign", peer.name) if peer else None
    row = {
        "shape": "smoke" if args.smoke else shape,
        "model": model,
        "precision": precision,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "num_batches": args.num_batches,
        "real_tokens_per_step": workload.mean_real_tokens(),
        "sides": records,
        "ratio_jaxalign_over_peer_real_tokens_per_s": ratio,
        "loss_agreement": agree,
        "conditions": m.conditions(),
    }
    print(
        f"{row['shape']} {shape_text(model)}, {precision}, {args.batch_size} pairs, "
        f"≤ {args.max_length} tokens, {workload.mean_real_tokens():.0f} real tokens/step"
    )
    _print_table(records, ratio)
    if agree is not None:
        print(f"  same work: max |loss_jaxalign − loss_{peer.name}| = "
              f"{agree['max_abs_loss_diff']:.2e} over {agree['steps_compared']} steps")  # fmt: skip
    harness.print_verdict(m)
    gc.collect()
    return row


def _jaxalign_side(workload: Workload, options: JaxalignOptions, hyper: Hyper):
    """:func:`make_jaxalign_step`; with float32 parameters if bf16 ones break the step."""
    try:
        return make_jaxalign_step(workload, options, hyper)
    except UnstableStateError as e:
        if options.param_dtype == "float32":
            raise
        # Honest fallback: jaxalign then does more work than asked (float32 master weights
        # and moments), and the row says so.
        note = (
            f"param_dtype={options.param_dtype} does not run: {e}; jaxalign ran with "
            "param_dtype=float32 (bf16 compute, float32 weights and AdamW moments) instead"
        )
        print(f"  note: {note}")
        step, info = make_jaxalign_step(
            workload, dataclasses.replace(options, param_dtype="float32"), hyper
        )
        return step, {**info, "fallback": note}


def default_options(precision: str) -> JaxalignOptions:
    """jaxalign's own mixed precision: bf16 compute, float32 parameters."""
    return JaxalignOptions(dtype="bfloat16" if precision == "bf16" else "float32")


def shape_text(model: dict[str, Any]) -> str:
    return (
        f"(d {model['hidden_size']}, {model['num_layers']} layers, {model['num_heads']}/"
        f"{model['num_kv_heads']} heads × {model['head_dim']}, SwiGLU "
        f"{model['intermediate_size']}, vocab {model['vocab_size']})"
    )


def side_record(
    name: str,
    measurement: harness.Measurement,
    info: dict[str, Any],
    workload: Workload,
    peak: float,
) -> dict[str, Any]:
    """Stats, real tokens/s (the headline) and model FLOP/s (MFU) of one side of a row."""
    stats = measurement.stats(name)
    tokens = workload.mean_real_tokens()
    flops = workload.real_token_flops()
    return {
        **info,
        **stats,
        "real_tokens_per_s_median": tokens / stats["median_s"],
        "real_tokens_per_s_best": tokens / stats["min_s"],
        "real_token_gflops_per_s_median": flops / stats["median_s"] / 1e9,
        "fraction_of_matmul_peak_median": flops / stats["median_s"] / peak,
        "losses": [round(float(x), 6) for x in measurement.outputs[name]],
    }


def loss_agreement(measurement: harness.Measurement, a: str, b: str) -> dict[str, Any]:
    """Largest |loss_a − loss_b| over the calls both made (same batches, same order).

    With the same weights, batches and optimizer the two sides follow the same
    trajectory, so this checks that they do the same work (float32: ≲ 1e-5; bf16: the
    rounding differences grow with the steps).
    """
    la, lb = measurement.outputs[a], measurement.outputs[b]
    diffs = [abs(float(x) - float(y)) for x, y in zip(la, lb)]
    return {
        "steps_compared": len(diffs),
        "first_loss": [round(float(la[0]), 6), round(float(lb[0]), 6)],
        "max_abs_loss_diff": max(diffs),
    }


def _print_table(sides: dict[str, dict[str, Any]], ratio: dict[str, float] | None) -> None:
    print(
        f"  {'side':10} {'median ms':>10} {'min ms':>9} {'real tok/s':>11} "
        f"{'(best)':>9} {'real GFLOP/s':>13} {'of peak':>8} {'padded tok':>11}"
    )
    for name, r in sides.items():
        print(
            f"  {name:10} {r['median_s'] * 1e3:10.1f} {r['min_s'] * 1e3:9.1f} "
            f"{r['real_tokens_per_s_median']:11.0f} {r['real_tokens_per_s_best']:9.0f} "
            f"{r['real_token_gflops_per_s_median']:13.2f} "
            f"{r['fraction_of_matmul_peak_median']:8.1%} {r['padded_tokens_per_step']:11.0f}"
        )
    if ratio is not None:
        print(
            f"  jaxalign / peer real tokens/s: {ratio['ratio_of_medians']:.2f}x (medians), "
            f"{ratio['ratio_of_mins']:.2f}x (mins)"
        )


__all__ = [
    "SHAPES",
    "SMOKE_SHAPE",
    "Hyper",
    "JaxalignOptions",
    "Peer",
    "UnstableStateError",
    "Workload",
    "add_row_args",
    "build_workload",
    "default_options",
    "loss_agreement",
    "make_jaxalign_step",
    "run_benchmark",
    "shape_text",
    "side_record",
]
