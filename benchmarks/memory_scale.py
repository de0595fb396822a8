"""Per-device memory of the DPO train step at the model sizes the papers use — compiled, not run.

For each model shape (Qwen2.5-0.5B, Qwen2.5-1.5B, a Llama-3-8B shape) and batch (8 pairs ×
2048 and × 4096 tokens), the jitted DPO step (:func:`jaxalign.train.preference_train_step`)
is lowered with abstract, sharded inputs on a mesh of 8 fake CPU devices (fsdp = 8) and
compiled; nothing is allocated or executed. Reported per device, from XLA's buffer
assignment (``compiled.memory_analysis()``):

* ``measured`` = arguments + temporaries (the outputs alias the donated train state; the
  CPU backend's ``peak_memory_in_bytes`` leaves out temporaries, so they are added);
* the analytic need next to it: sharded parameters, gradients (one copy, float32), Adam's two
  moments, the frozen reference, the batch; activations under the remat policy (each
  layer's saved input for ``full``); and the largest per-layer working set (attention scores
  in float32 on the XLA path, the MLP hidden, one log-prob chunk's logits);
* compile time (and, for the 0.5B shape, compile time at half and full depth: scanned layers
  keep it flat).

Settings: activations bf16, parameters and Adam state float32 (mixed precision), remat
``full``, log-probs in chunks of 256 positions, the reference forward in the step (no
precomputed reference), the full-vocabulary KL metric off.

    python benchmarks/memory_scale.py                  # all shapes (~10 min on 2 cores)
    python benchmarks/memory_scale.py --smoke          # a tiny shape, seconds
    python benchmarks/memory_scale.py --shapes qwen2.5-0.5b --lengths 2048
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    os.environ["XLA_FLAGS"] = flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import functools

import jax
import jax.numpy as jnp
import numpy as np
from model_shapes import SHAPES

from jaxalign.data import PreferenceBatch
from jaxalign.models import ModelConfig
from jaxalign.parallel import DEFAULT_RULES, MeshConfig, make_mesh
from jaxalign.train.config import OptimizerConfig, ScheduleConfig
from jaxalign.train.optim import make_optimizer
from jaxalign.train.state import (
    TrainState,
    abstract_model,
    abstract_train_state,
    train_shardings,
)
from jaxalign.train.step import preference_train_step

RESULTS = Path(__file__).resolve().parent / "results" / "memory_scale.json"
GB = 1e9

#: Per-device targets at 8 pairs × 2048 tokens (GB).
TARGETS = {"qwen2.5-0.5b": 4.0, "qwen2.5-1.5b": 8.0, "llama-3-8b": 40.0}


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="one tiny shape, seconds")
    p.add_argument("--shapes", nargs="+", default=["qwen2.5-0.5b", "qwen2.5-1.5b", "llama-3-8b"])
    p.add_argument("--lengths", nargs="+", type=int, default=[2048, 4096])
    p.add_argument("--pairs", type=int, default=8, help="preference pairs per step")
    p.add_argument("--fsdp", type=int, default=8)
    p.add_argument("--remat", default="full")
    p.add_argument("--chunk", type=int, default=256, help="log-prob chunk (positions)")
    p.add_argument("--depth-check", action="store_true", help="0.5B compile time at 12 vs 24")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def model_config(name: str, *, remat: str, chunk: int, **changes) -> ModelConfig:
    return ModelConfig(
        **{**SHAPES[name], **changes},
        dtype="bfloat16",
        param_dtype="float32",
        remat=remat,
        attention="xla",
        logprob_chunk_size=chunk,
    )


def _params(config: ModelConfig) -> int:
    c = config
    attn = c.hidden_size * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)  # q, o, k, v
    mlp = 3 * c.hidden_size * c.intermediate_size
    norms = 2 * c.hidden_size
    bias = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim if c.qkv_bias else 0
    embed = c.vocab_size * c.hidden_size * (1 if c.tie_word_embeddings else 2)
    return c.num_layers * (attn + mlp + norms + bias) + embed + c.hidden_size


def analytic(config: ModelConfig, pairs: int, length: int, devices: int) -> dict[str, float]:
    """Per-device bytes the step needs, by item (float32 state, bf16 activations)."""
    c = config
    n = _params(c)
    seqs = 2 * pairs / devices  # sequences per device (batch sharded over fsdp)
    state = {
        "params": 4 * n / devices,
        "grads": 4 * n / devices,
        "adam": 8 * n / devices,
        "reference": 4 * n / devices,
    }
    saved = c.num_layers * seqs * length * c.hidden_size * 2  # each layer's bf16 input
    # Working set of one layer being rematerialised / differentiated (the largest item):
    scores = seqs * c.num_heads * length * length * 4  # XLA attention scores, float32
    mlp = seqs * length * c.intermediate_size * 2 * 3  # gate, up, product (bf16)
    logits = seqs * min(length, c.logprob_chunk_size or length) * c.vocab_size * 4 * 2
    # One layer's parameters all-gathered over fsdp (bf16 copy for the matmuls).
    gathered = 2 * (n - c.vocab_size * c.hidden_size) / c.num_layers
    work = {"attention_scores": 2 * scores, "mlp": mlp, "logits_chunk": logits}
    total = sum(state.values()) + saved + max(work.values()) + gathered
    return {
        **{k: v / GB for k, v in state.items()},
        "saved_activations": saved / GB,
        **{k: v / GB for k, v in work.items()},
        "gathered_layer": gathered / GB,
        "total": total / GB,
    }


def measure(config: ModelConfig, pairs: int, length: int, fsdp: int) -> dict[str, float]:
    """Compiles the DPO step for abstract sharded inputs; returns per-device GB and seconds."""
    mesh = make_mesh(MeshConfig(data=1, fsdp=fsdp, tensor=1), devices=jax.devices()[:fsdp])
    rules = DEFAULT_RULES.as_pairs()
    graphdef, abstract_params = abstract_model(config, rules)
    tx, schedule = make_optimizer(OptimizerConfig(lr=1e-6), ScheduleConfig(), 1000)
    sh = train_shardings(abstract_params, tx, mesh, rules)

    def init(p):
        return TrainState(jnp.zeros((), jnp.int32), p, tx.init(p), jnp.zeros((2,), jnp.uint32))

    with jax.numpy_dtype_promotion("standard"):
        shapes = jax.eval_shape(init, abstract_params)
    state = abstract_train_state(shapes, sh.state)
    reference = abstract_train_state(jax.eval_shape(lambda p: p, abstract_params), sh.reference)

    def arr(shape, dtype, sharding):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

    rows = (pairs, length)
    batch = PreferenceBatch(
        *(arr(rows, d, sh.batch) for d in (jnp.int32, jnp.int32, jnp.float32) * 2),
        arr((pairs,), jnp.float32, sh.example),
    )
    batch_sh = PreferenceBatch(*(sh.batch,) * 6, sh.example)
    step = functools.partial(
        preference_train_step,
        graphdef=graphdef,
        tx=tx,
        lr_schedule=schedule,
        algorithm="dpo",
        beta=0.1,
        batch_sharding=sh.batch,
        kl_metric=False,
    )
    jitted = jax.jit(
        step,
        in_shardings=(sh.state, sh.reference, batch_sh),
        out_shardings=(sh.state, sh.replicated),
        donate_argnums=(0,),
    )
    start = time.perf_counter()
    with jax.set_mesh(mesh), jax.numpy_dtype_promotion("standard"):
        compiled = jitted.lower(state, reference, batch).compile()
    seconds = time.perf_counter() - start
    stats = compiled.memory_analysis()
    return {
        "measured": (stats.argument_size_in_bytes + stats.temp_size_in_bytes) / GB,
        "arguments": stats.argument_size_in_bytes / GB,
        "temporaries": stats.temp_size_in_bytes / GB,
        "compile_s": seconds,
    }


def main(argv=None) -> dict:
    args = _parse(argv)
    shapes = ["smoke"] if args.smoke else args.shapes
    lengths = [128] if args.smoke else args.lengths
    fsdp = min(args.fsdp, jax.device_count())
    rows = []
    print(
        f"DPO step per-device memory, compiled on {fsdp} fake CPU devices (fsdp={fsdp}), "
        f"{args.pairs} pairs, bf16 activations, float32 params/Adam, remat={args.remat}, "
        f"log-prob chunk {args.chunk}, KL metric off; nothing executed"
    )
    header = f"{'shape':<14} {'tokens':>6} {'measured GB':>11} {'analytic GB':>11} "
    header += f"{'args GB':>8} {'temp GB':>8} {'target GB':>9} {'compile s':>9}"
    print(header)
    for name in shapes:
        for length in lengths:
            config = model_config(name, remat=args.remat, chunk=args.chunk)
            got = measure(config, args.pairs, length, fsdp)
            need = analytic(config, args.pairs, length, fsdp)
            target = TARGETS.get(name) if length == 2048 else None
            row = {"shape": name, "length": length, **got, "analytic": need, "target": target}
            rows.append(row)
            print(
                f"{name:<14} {length:>6} {got['measured']:>11.2f} {need['total']:>11.2f} "
                f"{got['arguments']:>8.2f} {got['temporaries']:>8.2f} "
                f"{target if target is not None else '-':>9} {got['compile_s']:>9.1f}",
                flush=True,
            )
    depth = []
    if args.depth_check or args.smoke:
        name = "smoke" if args.smoke else "qwen2.5-0.5b"
        full = SHAPES[name]["num_layers"]
        for layers in (max(1, full // 2), full):
            config = model_config(name, remat=args.remat, chunk=args.chunk, num_layers=layers)
            got = measure(config, args.pairs, lengths[0], fsdp)
            depth.append({"shape": name, "num_layers": layers, "compile_s": got["compile_s"]})
            print(f"compile time, {name} with {layers} layers: {got['compile_s']:.1f} s")
    result = {
        "benchmark": "memory_scale",
        "rows": rows,
        "depth": depth,
        "settings": {
            "pairs": args.pairs,
            "fsdp": fsdp,
            "remat": args.remat,
            "logprob_chunk": args.chunk,
            "dtype": "bfloat16 activations, float32 params and Adam",
            "attention": "xla",
            "kl_metric": False,
        },
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "jax": jax.__version__,
            "cpus": os.cpu_count(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main(sys.argv[1:])
