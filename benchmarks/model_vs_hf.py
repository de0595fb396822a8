"""Prefill and KV-cache decode throughput: jaxalign CausalLM vs HF transformers (torch CPU).

Both sides run the *same weights* (a random HF Llama checkpoint written to a temporary
directory and read back with ``jaxalign.models.from_pretrained``) in the same process,
and the greedy continuations are compared token for token before timing. Reported:

* prefill tokens/s — one forward pass over a (batch, prompt) block of tokens;
* decode tokens/s — greedy ``generate`` of ``new_tokens`` per row with a KV cache
  (jaxalign: one jitted ``lax.while_loop``; HF: ``model.generate``);

and the ratios jaxalign / transformers (> 1 means jaxalign is faster). Compilation is
excluded (one warm-up call); each figure is the median of ``--repeats`` runs.

Usage::

    .venv/bin/python benchmarks/model_vs_hf.py            # full run (~1-2 min on CPU)
    .venv/bin/python benchmarks/model_vs_hf.py --smoke    # seconds; jaxalign only
    .venv/bin/python benchmarks/model_vs_hf.py --single-thread   # 1 thread each
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

if "--single-thread" in sys.argv:
    # Must precede the first jax import: XLA reads its flags once.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    ).strip()

import jax
import numpy as np

from jaxalign.models import CausalLM, ModelConfig, from_pretrained, generate, logits

FULL = dict(
    layers=4,
    hidden=256,
    heads=8,
    kv_heads=4,
    mlp=688,
    vocab=2048,
    batch=8,
    prompt=256,
    decode_batch=8,
    decode_prompt=32,
    new_tokens=128,
)
SMOKE = dict(
    layers=2,
    hidden=64,
    heads=4,
    kv_heads=2,
    mlp=128,
    vocab=256,
    batch=2,
    prompt=32,
    decode_batch=2,
    decode_prompt=8,
    new_tokens=8,
)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved_medians(workloads: dict, repeats: int) -> dict:
    """Median seconds per workload; one warm-up each (compilation), then round-robin runs.

    Interleaving makes both libraries see the same machine conditions on a shared,
    noisy machine.
    """
    for fn in workloads.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in workloads}
    for _ in range(repeats):
        for name, fn in workloads.items():
            times[name].append(_timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def _jaxalign_workloads(model, prefill_tokens, decode_prompts, new_tokens, out):
    def prefill():
        jax.block_until_ready(logits(model, prefill_tokens))

    def decode():
        gen = generate(
            model,
            decode_prompts,
            key=jax.random.key(0),
            max_new_tokens=new_tokens,
            temperature=0.0,
            eos_token_id=[],
        )
        out["jaxalign"] = np.asarray(jax.block_until_ready(gen.tokens))

    return {"jaxalign/prefill": prefill, "jaxalign/decode": decode}


def _torch_workloads(hf, prefill_tokens, decode_prompts, new_tokens, out):
    import torch

    ids = torch.as_tensor(np.asarray(prefill_tokens), dtype=torch.long)
    prompts = torch.as_tensor(np.asarray(decode_prompts), dtype=torch.long)

    def prefill():
        with torch.inference_mode():
            hf(input_ids=ids, use_cache=False)

    def decode():
        with torch.inference_mode():
            gen = hf.generate(
                prompts,
                attention_mask=torch.ones_like(prompts),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
        out["transformers"] = gen[:, prompts.shape[1] :].numpy()

    return {"transformers/prefill": prefill, "transformers/decode": decode}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no transformers peer")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--single-thread",
        action="store_true",
        help="one compute thread for both (torch.set_num_threads(1), XLA without Eigen "
        "threads): a fair comparison on an oversubscribed machine",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "model_vs_hf.json",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    repeats = args.repeats or (1 if args.smoke else 5)
    config = ModelConfig(
        vocab_size=sizes["vocab"],
        hidden_size=sizes["hidden"],
        intermediate_size=sizes["mlp"],
        num_layers=sizes["layers"],
        num_heads=sizes["heads"],
        num_kv_heads=sizes["kv_heads"],
        head_dim=sizes["hidden"] // sizes["heads"],
        initializer_range=0.1,
    )
    rng = np.random.default_rng(0)
    prefill_tokens = rng.integers(0, config.vocab_size, (sizes["batch"], sizes["prompt"]), np.int32)
    decode_prompts = rng.integers(
        0, config.vocab_size, (sizes["decode_batch"], sizes["decode_prompt"]), np.int32
    )
    hf = None
    if args.smoke:
        print("smoke mode: transformers peer skipped (run without --smoke for the comparison)")
        model = CausalLM.create(config, key=jax.random.key(0))
    else:
        import torch
        import transformers

        torch.manual_seed(0)
        if args.single_thread:
            torch.set_num_threads(1)
        hf_config = transformers.LlamaConfig(**config.to_hf_config())
        hf = transformers.LlamaForCausalLM(hf_config).eval()
        with tempfile.TemporaryDirectory() as directory:
            hf.save_pretrained(directory)
            model = from_pretrained(directory)

    tokens_out: dict[str, np.ndarray] = {}
    workloads = _jaxalign_workloads(
        model, prefill_tokens, decode_prompts, sizes["new_tokens"], tokens_out
    )
    if hf is not None:
        workloads |= _torch_workloads(
            hf, prefill_tokens, decode_prompts, sizes["new_tokens"], tokens_out
        )
    seconds = _interleaved_medians(workloads, repeats)
    prefill_count = prefill_tokens.size
    decode_count = sizes["decode_batch"] * sizes["new_tokens"]
    rows = {
        name: {
            "prefill_tokens_per_s": prefill_count / seconds[f"{name}/prefill"],
            "decode_tokens_per_s": decode_count / seconds[f"{name}/decode"],
        }
        for name in ("jaxalign", "transformers")
        if f"{name}/prefill" in seconds
    }
    result = {
        "benchmark": "model_vs_hf",
        "mode": "smoke" if args.smoke else "full",
        "sizes": sizes,
        "repeats": repeats,
        "single_thread": args.single_thread,
        "median_seconds": seconds,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "jax": jax.__version__,
            "jax_backend": jax.default_backend(),
        },
        "results": rows,
    }
    if hf is not None:
        import torch
        import transformers

        result["ratios"] = {
            "prefill": seconds["transformers/prefill"] / seconds["jaxalign/prefill"],
            "decode": seconds["transformers/decode"] / seconds["jaxalign/decode"],
        }
        result["greedy_tokens_match"] = bool(
            np.array_equal(tokens_out["jaxalign"], tokens_out["transformers"])
        )
        result["machine"] |= {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(),
        }

    print(f"{'':14}{'prefill tok/s':>16}{'decode tok/s':>16}")
    for name, row in rows.items():
        print(f"{name:14}{row['prefill_tokens_per_s']:16.0f}{row['decode_tokens_per_s']:16.0f}")
    if "ratios" in result:
        r = result["ratios"]
        print(f"{'ratio':14}{r['prefill']:15.2f}x{r['decode']:15.2f}x   (jaxalign / transformers)")
        print(f"greedy tokens identical: {result['greedy_tokens_match']}")
    else:
        print("transformers: skipped (smoke mode)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
