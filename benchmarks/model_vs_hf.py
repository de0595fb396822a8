"""Prefill and KV-cache decode throughput: jaxalign CausalLM vs HF transformers (torch CPU).

Both sides run the *same weights* (a random HF Llama checkpoint written to a temporary
directory and read back with ``jaxalign.models.from_pretrained``) in the same process,
and the greedy continuations of both are compared token for token. Reported:

* prefill tokens/s — one forward pass over a (batch, prompt) block of tokens;
* decode tokens/s — greedy ``generate`` of ``new_tokens`` per row with a KV cache
  (jaxalign: one jitted ``lax.while_loop``; HF: ``model.generate``);

and the ratios jaxalign / transformers (> 1 means jaxalign is faster), of the medians and
of the mins. The four workloads run interleaved in one loop (``benchmarks/harness.py``:
one warm-up call each — compilation —, a wait for a quiet machine, ``--repeats`` rounds);
each call ends in a host sync (``block_until_ready``; torch on CPU is synchronous).

Usage::

    .venv/bin/python benchmarks/model_vs_hf.py            # full run (~1-2 min on CPU)
    .venv/bin/python benchmarks/model_vs_hf.py --smoke    # seconds; jaxalign only
    .venv/bin/python benchmarks/model_vs_hf.py --single-thread   # 1 thread each
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

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
    parser.add_argument(
        "--single-thread",
        action="store_true",
        help="one compute thread for both (torch.set_num_threads(1), XLA without Eigen "
        "threads): a fair comparison on an oversubscribed machine",
    )
    harness.add_protocol_args(parser, repeats=5, warmup=1)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "model_vs_hf.json",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.smoke:
        args.repeats = 1
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
    m = harness.run_interleaved(
        workloads,
        repeats=args.repeats,
        warmup=args.warmup,
        max_wait=args.max_wait,
        quiet_load=args.quiet_load,
        smoke=args.smoke,
    )
    count = {
        "prefill": prefill_tokens.size,
        "decode": sizes["decode_batch"] * sizes["new_tokens"],
    }
    rows = {}
    for name in ("jaxalign", "transformers"):
        if f"{name}/prefill" not in workloads:
            continue
        rows[name] = {}
        for phase, n in count.items():
            stats = m.stats(f"{name}/{phase}")
            rows[name][f"{phase}_tokens_per_s"] = n / stats["median_s"]
            rows[name][f"{phase}_tokens_per_s_best"] = n / stats["min_s"]
            rows[name][phase] = stats
    record = harness.machine(("torch", "transformers") if hf is not None else ())
    result = {
        "benchmark": "model_vs_hf",
        "mode": "smoke" if args.smoke else "full",
        "label": m.label,
        "sizes": sizes,
        "single_thread": args.single_thread,
        "results": rows,
        "conditions": m.conditions(),
        "machine": record,
    }
    if hf is not None:
        result["ratios"] = {
            phase: m.ratio(f"transformers/{phase}", f"jaxalign/{phase}") for phase in count
        }
        result["greedy_tokens_match"] = bool(
            np.array_equal(tokens_out["jaxalign"], tokens_out["transformers"])
        )

    print(harness.describe_machine(record))
    print(f"Llama {sizes['layers']} layers, d {sizes['hidden']}, {sizes['heads']}/"
          f"{sizes['kv_heads']} heads, SwiGLU {sizes['mlp']}, vocab {sizes['vocab']}, float32; "
          f"prefill {sizes['batch']} × {sizes['prompt']} tokens, decode {sizes['decode_batch']} "
          f"× {sizes['new_tokens']} new tokens; single thread: {args.single_thread}")  # fmt: skip
    print("tokens/s: median (best) of the interleaved rounds")
    print(f"{'':14}{'prefill tok/s':>22}{'decode tok/s':>22}")
    for name, row in rows.items():
        prefill = f"{row['prefill_tokens_per_s']:.0f} ({row['prefill_tokens_per_s_best']:.0f})"
        decode = f"{row['decode_tokens_per_s']:.0f} ({row['decode_tokens_per_s_best']:.0f})"
        print(f"{name:14}{prefill:>22}{decode:>22}")
    if "ratios" in result:
        r = result["ratios"]
        cells = [f"{r[p]['ratio_of_medians']:.2f}x / {r[p]['ratio_of_mins']:.2f}x" for p in count]
        print(
            f"{'ratio':14}{cells[0]:>22}{cells[1]:>22}   (jaxalign / transformers: medians / mins)"
        )
        print(f"greedy tokens identical: {result['greedy_tokens_match']}")
    else:
        print("transformers: skipped (smoke mode)")
    harness.print_verdict(m)
    path = harness.write_json(args.out, result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
