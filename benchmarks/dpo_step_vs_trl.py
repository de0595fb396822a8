"""DPO training throughput: jaxalign vs TRL's DPOTrainer (PyTorch, CPU), in one run.

Both train the same tiny Llama (random init, same config), on the same synthetic
preference rows, tokenised by the same tiny BPE tokenizer, with the same global
batch, maximum length, β, learning rate and AdamW. Each runs ``--warmup`` steps
(compilation, allocator warm-up) and then ``--steps`` timed steps end to end
(data loading, reference and policy passes, backward, optimizer).

Reported per side: median step time, real (non-padding) tokens/s — the dataset's
mean tokens per pair × batch / step time, identical work for both — and model
FLOP/s (jaxalign's padded DPO FLOPs, ``jaxalign.train.dpo_step_flops``) as a
fraction of this machine's measured float32 matmul peak (the faster of a jitted
JAX and a PyTorch 2048² matmul). The ratio jaxalign / TRL is the headline.

    python benchmarks/dpo_step_vs_trl.py            # needs trl (benchmark venv)
    python benchmarks/dpo_step_vs_trl.py --smoke    # a few seconds, jaxalign only
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "dpo_step_vs_trl.json"

MODEL = dict(
    model_type="llama",
    vocab_size=384,
    hidden_size=128,
    intermediate_size=352,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=32,
)
SMOKE_MODEL = dict(MODEL, hidden_size=32, intermediate_size=64, num_layers=1, head_dim=16)


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny, jaxalign only, a few seconds")
    p.add_argument("--steps", type=int, default=30, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side")
    p.add_argument("--batch-size", type=int, default=16, help="preference pairs per step")
    p.add_argument("--max-length", type=int, default=48, help="tokens per sequence")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON output")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="PyTorch intra-op threads; 0 = the faster of 1 and all cores on a probe",
    )
    return p.parse_args(argv)


def _mean_pair_tokens(tokenizer, rows) -> float:
    total = 0
    for r in rows:
        prompt = len(tokenizer(r["prompt"])["input_ids"])
        for side in ("chosen", "rejected"):
            total += prompt + len(tokenizer(r[side])["input_ids"]) + 1  # + EOS
    return total / len(rows)


def matmul_peak() -> dict[str, float]:
    """float32 matmul FLOP/s measured with JAX and (if installed) PyTorch."""
    from jaxalign.train import measure_matmul_peak

    peaks = {"jax": measure_matmul_peak(2048)}
    try:
        import torch
    except ImportError:
        return peaks
    torch.set_num_threads(os.cpu_count() or 1)
    a = torch.randn(2048, 2048)
    a @ a
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    peaks["torch"] = 2 * 2048**3 / best
    return peaks


def run_jaxalign(args, model, data_path, tok_dir, work: Path) -> dict:
    from jaxalign.train import load_train_config, train

    overrides = [f"model.{k}={v}" for k, v in model.items()] + [
        f"init.tokenizer={tok_dir}",
        f"data.path={data_path}",
        f"data.batch_size={args.batch_size}",
        f"data.max_length={args.max_length}",
        f"data.max_prompt_length={args.max_length // 2}",
        "optimizer.lr=1e-4",
        "optimizer.clip_norm=1.0",
        "schedule.kind=constant",
        "algorithm.beta=0.1",
        "checkpoint.enabled=false",
        "logging.progress_bar=false",
        "logging.peak_flops=1.0",
        "mesh.data=1",
        "mesh.fsdp=1",
        "mesh.tensor=1",
        f"run.steps={args.warmup + args.steps}",
        f"run.out_dir={work / 'jaxalign-run'}",
    ]
    result = train(load_train_config(None, overrides), quiet=True)
    timed = result.history[args.warmup :]
    return {
        "step_time_s": statistics.median(r["step_time_s"] for r in timed),
        "flops_per_step": timed[0]["flops_per_s"] * timed[0]["step_time_s"],
        "first_loss": result.history[0]["loss"],
        "last_loss": result.history[-1]["loss"],
    }


def run_trl(args, model, data_path, tokenizer, work: Path) -> dict:
    import datasets
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from jaxalign.models import ModelConfig

    torch.manual_seed(0)
    hf = ModelConfig(**model, pad_token_id=tokenizer.pad_token_id).to_hf_config()
    hf.pop("architectures", None)
    hf.pop("model_type", None)
    policy = LlamaForCausalLM(LlamaConfig(**hf))
    threads = args.torch_threads or _fastest_threads(policy, args)
    torch.set_num_threads(threads)
    reference = copy.deepcopy(policy).eval()  # π_ref = the initial policy, as in jaxalign
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    config = DPOConfig(
        output_dir=str(work / "trl-run"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        beta=0.1,
        max_length=args.max_length,
        logging_steps=10**6,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_dropout=True,
        seed=0,
    )
    trainer = DPOTrainer(
        model=policy,
        ref_model=reference,
        args=config,
        train_dataset=datasets.Dataset.from_json(str(data_path)),
        processing_class=tokenizer,
        callbacks=[Clock()],
    )
    out = trainer.train()
    return {
        "step_time_s": statistics.median(times[args.warmup :]),
        "train_loss": out.training_loss,
        "torch_threads": threads,
    }


def _fastest_threads(model, args) -> int:
    """1 or all cores, whichever runs a forward+backward of the step's size faster.

    OpenMP threads spin at barriers, so on a busy machine one thread can beat many.
    """
    import torch

    ids = torch.randint(0, model.config.vocab_size, (2 * args.batch_size, args.max_length))
    best, best_time = 1, float("inf")
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        elapsed = []
        for _ in range(3):
            t = time.perf_counter()
            model(ids).logits.sum().backward()
            elapsed.append(time.perf_counter() - t)
        model.zero_grad(set_to_none=True)
        if min(elapsed[1:]) < best_time:
            best, best_time = threads, min(elapsed[1:])
    return best


def main(argv=None) -> dict:
    args = _parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local
    if args.smoke:
        args.steps, args.warmup = 3, 1
        args.batch_size, args.max_length = min(args.batch_size, 8), min(args.max_length, 32)
    model = SMOKE_MODEL if args.smoke else MODEL

    from transformers import PreTrainedTokenizerFast

    from jaxalign.data import make_tiny_preference_dataset
    from jaxalign.models import build_tiny_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tok_dir = build_tiny_tokenizer(work / "tokenizer")
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir), local_files_only=True)
        data_path = make_tiny_preference_dataset(work / "data.jsonl", 512, 0)
        rows = [json.loads(line) for line in data_path.read_text().splitlines()]
        pair_tokens = _mean_pair_tokens(tokenizer, rows)
        tokens_per_step = pair_tokens * args.batch_size

        peaks = matmul_peak()
        peak = max(peaks.values())
        table = {"jaxalign": run_jaxalign(args, model, data_path, tok_dir, work)}
        trl_note = None
        if args.smoke:
            trl_note = "skipped (--smoke)"
        else:
            try:
                import trl  # noqa: F401
            except ImportError:
                trl_note = "skipped: trl is not installed (see benchmarks/README_train.md)"
            else:
                table["trl"] = run_trl(args, model, data_path, tokenizer, work)

    flops = table["jaxalign"]["flops_per_step"]
    for row in table.values():
        row["tokens_per_s"] = tokens_per_step / row["step_time_s"]
        row["model_flops_per_s"] = flops / row["step_time_s"]
        row["fraction_of_matmul_peak"] = row["model_flops_per_s"] / peak
    ratio = None
    if "trl" in table:
        ratio = table["jaxalign"]["tokens_per_s"] / table["trl"]["tokens_per_s"]

    print(f"DPO step throughput, tiny Llama {model}, batch {args.batch_size} pairs, "
          f"max_length {args.max_length}, {args.steps} timed steps")  # fmt: skip
    peak_text = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in peaks.items())
    print(f"matmul peak (float32): {peak_text} GFLOP/s")
    print(f"{'':10} {'step ms':>9} {'tokens/s':>10} {'GFLOP/s':>9} {'of peak':>8}")
    for name, row in table.items():
        gflops, frac = row["model_flops_per_s"] / 1e9, row["fraction_of_matmul_peak"]
        print(
            f"{name:10} {row['step_time_s'] * 1e3:9.1f} {row['tokens_per_s']:10.0f} "
            f"{gflops:9.2f} {frac:8.1%}"
        )
    if ratio is None:
        print(f"trl: {trl_note}")
    else:
        print(f"jaxalign / TRL tokens/s: {ratio:.2f}x")
    result = {
        "benchmark": "dpo_step_vs_trl",
        "smoke": args.smoke,
        "model": model,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "steps": args.steps,
        "mean_tokens_per_pair": pair_tokens,
        "matmul_peak_flops": peaks,
        "results": table,
        "ratio_jaxalign_over_trl": ratio,
        "trl": trl_note or "measured",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
