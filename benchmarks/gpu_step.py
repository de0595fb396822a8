"""The DPO train step on an accelerator: tokens/s, step time, peak device memory and MFU.

One short script for a GPU machine (it runs unchanged on CPU at a tiny shape):

    python benchmarks/gpu_step.py                      # 0.5B and 1.5B, 8 pairs × 2048 tokens
    python benchmarks/gpu_step.py --shapes qwen2.5-0.5b --pairs 16 --length 1024
    python benchmarks/gpu_step.py --smoke              # tiny shape (CPU: seconds)

For each shape: a random-init model (bf16 activations, float32 parameters and AdamW
state, remat ``full``, attention ``auto`` = cuDNN's fused flash attention on a GPU),
FSDP over all local devices, random token batches without padding (every token real),
``--warmup`` untimed steps (compilation), then ``--steps`` timed steps, each ending with a
host read of the loss. Reported: median step time, tokens/s (real tokens = all tokens
here), peak device memory (``device.memory_stats()``; on CPU the compiled step's
arguments + temporaries), and MFU = model FLOPs (``jaxalign.train.dpo_step_flops``:
policy forward + backward and reference forward, without the rematerialised recompute) /
step time / (devices × the chip's dense bf16 peak). The peak comes from a table of known
chips (``--peak-tflops`` overrides it; on CPU a measured float32 matmul stands in).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from model_shapes import SHAPES

from jaxalign.data import PreferenceBatch
from jaxalign.models import ModelConfig
from jaxalign.parallel import DEFAULT_RULES, MeshConfig, make_mesh, shard_batch
from jaxalign.train.config import OptimizerConfig, ScheduleConfig
from jaxalign.train.metrics import dpo_step_flops, measure_matmul_peak
from jaxalign.train.optim import make_optimizer
from jaxalign.train.state import abstract_model, init_train_state, train_shardings
from jaxalign.train.step import preference_train_step

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_step.json"

#: Dense bf16 peak TFLOP/s per chip (vendor data sheets, without sparsity).
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,  # SXM; the PCIe card is 756 (matched first below)
    "H100 PCIe": 756.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
}


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny shape, 2 steps (CPU: seconds)")
    p.add_argument("--shapes", nargs="+", default=["qwen2.5-0.5b", "qwen2.5-1.5b"])
    p.add_argument("--pairs", type=int, default=8, help="preference pairs per step")
    p.add_argument("--length", type=int, default=2048, help="tokens per sequence")
    p.add_argument("--prompt-length", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    p.add_argument("--remat", default="full")
    p.add_argument("--attention", default="auto")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the chip peak")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def chip_peak(device) -> tuple[float | None, str]:
    """(dense bf16 FLOP/s of one device or None, where the number came from)."""
    kind = getattr(device, "device_kind", "")
    for name in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if name.lower() in kind.lower():
            return BF16_PEAK_TFLOPS[name] * 1e12, f"{name} data sheet"
    return None, f"unknown chip {kind!r}"


def _batch(pairs: int, length: int, prompt: int, vocab: int, seed: int) -> PreferenceBatch:
    rng = np.random.default_rng(seed)
    ids = lambda: rng.integers(0, vocab, (pairs, length)).astype(np.int32)
    attention = np.ones((pairs, length), np.int32)
    loss = np.zeros((pairs, length), np.float32)
    loss[:, prompt:] = 1.0
    chosen, rejected = ids(), ids()
    rejected[:, :prompt] = chosen[:, :prompt]  # a shared prompt
    return PreferenceBatch(chosen, attention, loss, rejected, attention, loss.copy(),
                           np.ones(pairs, np.float32))  # fmt: skip


def run_shape(name: str, args, mesh) -> dict:
    config = ModelConfig(
        **SHAPES[name],
        dtype="bfloat16",
        param_dtype="float32",
        remat=args.remat,
        attention=args.attention,
    )
    rules = DEFAULT_RULES.as_pairs()
    graphdef, abstract = abstract_model(config, rules)
    tx, schedule = make_optimizer(OptimizerConfig(lr=1e-6), ScheduleConfig(), 1000)
    sh = train_shardings(abstract, tx, mesh, rules)
    with jax.numpy_dtype_promotion("standard"):
        state = init_train_state(config, tx, sh, key=jax.random.key(0), rules=rules)
    reference = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=sh.reference)(
        state.params
    )
    step = functools.partial(preference_train_step, graphdef=graphdef, tx=tx,
                             lr_schedule=schedule, algorithm="dpo", beta=0.1,
                             batch_sharding=sh.batch, kl_metric=False)  # fmt: skip
    batch_sh = PreferenceBatch(*(sh.batch,) * 6, sh.example)
    jitted = jax.jit(step, in_shardings=(sh.state, sh.reference, batch_sh),
                     out_shardings=(sh.state, sh.replicated), donate_argnums=(0,))  # fmt: skip
    batches = [
        shard_batch(_batch(args.pairs, args.length, args.prompt_length, config.vocab_size, s),
                    mesh, DEFAULT_RULES)
        for s in range(2)
    ]  # fmt: skip
    with jax.set_mesh(mesh), jax.numpy_dtype_promotion("standard"):
        start = time.perf_counter()
        compiled = jitted.lower(state, reference, batches[0]).compile()
        compile_s = time.perf_counter() - start
        times = []
        for i in range(args.warmup + args.steps):
            start = time.perf_counter()
            state, metrics = compiled(state, reference, batches[i % 2])
            loss = float(metrics["loss"])  # host sync
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    if not np.isfinite(loss):
        raise RuntimeError(f"{name}: non-finite loss {loss}")
    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        peak_memory, memory_source = stats["peak_bytes_in_use"], "device.memory_stats()"
    else:
        m = compiled.memory_analysis()
        peak_memory = m.argument_size_in_bytes + m.temp_size_in_bytes
        memory_source = "compiled arguments + temporaries"
    step_s = statistics.median(times)
    tokens = 2 * args.pairs * args.length
    flops = dpo_step_flops(config, args.pairs, args.length)
    peak, peak_source = chip_peak(device)
    if args.peak_tflops:
        peak, peak_source = args.peak_tflops * 1e12, "--peak-tflops"
    if peak is None and device.platform == "cpu":
        peak, peak_source = measure_matmul_peak(1024), "measured float32 matmul (CPU)"
    devices = mesh.devices.size
    mfu = None if peak is None else flops / step_s / (peak * devices)
    return {
        "shape": name,
        "pairs": args.pairs,
        "length": args.length,
        "step_s_median": step_s,
        "step_s_min": min(times),
        "tokens_per_s": tokens / step_s,
        "peak_memory_gb": peak_memory / 1e9,
        "memory_source": memory_source,
        "model_tflops_per_step": flops / 1e12,
        "mfu": mfu,
        "peak_source": peak_source,
        "compile_s": compile_s,
        "final_loss": loss,
    }


def main(argv=None) -> dict:
    args = _parse(argv)
    if args.smoke:
        args.shapes, args.pairs, args.length, args.prompt_length = ["smoke"], 8, 64, 16
        args.steps, args.warmup = 2, 1
    devices = jax.local_devices()
    mesh = make_mesh(MeshConfig(data=1, fsdp=len(devices), tensor=1), devices=devices)
    print(
        f"DPO step on {len(devices)} × {devices[0].device_kind} ({devices[0].platform}), "
        f"{args.pairs} pairs × {args.length} tokens, bf16 activations, float32 params/AdamW, "
        f"remat={args.remat}, attention={args.attention}, FSDP over {len(devices)} device(s)",
        flush=True,
    )
    rows = []
    for name in args.shapes:
        row = run_shape(name, args, mesh)
        rows.append(row)
        mfu = "-" if row["mfu"] is None else f"{100 * row['mfu']:.1f} %"
        print(
            f"{name:<14} step {1000 * row['step_s_median']:8.1f} ms  "
            f"{row['tokens_per_s']:10.0f} tokens/s  peak {row['peak_memory_gb']:6.2f} GB  "
            f"MFU {mfu} ({row['peak_source']})  compile {row['compile_s']:.0f} s",
            flush=True,
        )
    result = {
        "benchmark": "gpu_step",
        "rows": rows,
        "devices": [d.device_kind for d in devices],
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {"platform": platform.platform(), "jax": jax.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
