"""Online Nash-MD iteration throughput: jaxalign vs TRL's OnlineDPOTrainer (CPU), in one run.

TRL 1.16 no longer ships ``NashMDTrainer`` or ``XPOTrainer``; its online pairwise
trainer is ``trl.experimental.online_dpo.OnlineDPOTrainer``, the peer here. Both sides
start from the *same weights* (a tiny Llama policy and a tiny Llama reward model built
in jaxalign, written with ``jaxalign.models.save_pretrained`` and loaded by
transformers), read the same synthetic prompts (``make_tiny_preference_dataset``)
through the same tiny BPE tokenizer, and per iteration

* draw ``--batch-size`` prompts and sample two fixed-length responses each
  (``--max-new-tokens`` tokens, no EOS stopping: jaxalign samples with no stop token,
  TRL with ``min_new_tokens = max_new_tokens``), temperature 1, no top-p / top-k;
* judge every pair with the reward model (Bradley–Terry);
* compute the policy's and the frozen anchors' sequence log-probs;
* take one Adam step on the pairwise loss (jaxalign ``inner_steps=1``; TRL one
  ``training_step`` + optimizer step).

Differences that remain (all make jaxalign's Nash-MD iteration do *more* work): it samples
from the token-level geometric mixture π_t^{1-sτ} π_ref^{sτ} (policy and reference
decode in lockstep, two forwards per token; TRL samples π_t alone), it computes π_t's
anchor log-probs in a separate no-grad pass and re-evaluates the loss after the step;
TRL decodes responses to text and re-tokenises them for the judge. A second jaxalign row,
``online_ipo`` (pairs from π_t, anchor π_ref: TRL's online DPO with ``loss_type="ipo"``),
is the closest like-for-like algorithm.

After ``--warmup`` untimed iterations per side (compilation, allocator warm-up), the
sides are *interleaved*: after each timed TRL step (inside a Trainer callback, off TRL's
clock) every jaxalign trainer runs one timed iteration, so the load drift of a shared
machine hits all sides alike. Reported per side: median iteration time, pairs/s and
generated tokens/s, and for jaxalign the one-off compile time (first iteration minus the
median). The ratio jaxalign Nash-MD / TRL pairs/s is the headline.

    python benchmarks/online_nash_md_vs_trl.py            # needs trl (benchmark venv)
    python benchmarks/online_nash_md_vs_trl.py --smoke    # a few seconds, jaxalign only
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

RESULTS = Path(__file__).resolve().parent / "results" / "online_nash_md_vs_trl.json"

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
STEP_SIZE, TAU, LR = 1.0, 0.5, 1e-5  # mixture weight s·τ = ½ (Nash-MD-PG's usual β)


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny, jaxalign only, a few seconds")
    p.add_argument("--iterations", type=int, default=20, help="timed iterations per side")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations per side")
    p.add_argument("--batch-size", type=int, default=8, help="prompts (pairs) per iteration")
    p.add_argument("--max-new-tokens", type=int, default=24, help="tokens per response")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON output")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="PyTorch intra-op threads; 0 = the faster of 1 and all cores on a probe",
    )
    return p.parse_args(argv)


def build_models(model: dict, work: Path):
    """The initial policy and the reward-model judge (random init, fixed seeds), saved as HF
    directories so that both sides start from identical weights."""
    from flax import nnx

    from jaxalign.models import CausalLM, ModelConfig, RewardModel, save_pretrained

    config = ModelConfig(**model, pad_token_id=0)
    policy = CausalLM(config, rngs=nnx.Rngs(0))
    judge = RewardModel(config, rngs=nnx.Rngs(1))
    save_pretrained(policy, work / "policy")
    save_pretrained(judge, work / "judge")
    return policy, judge


class JaxalignSide:
    """One :class:`~jaxalign.train.online.OnlineTrainer` per algorithm, warmed up (compiled)
    at construction; :meth:`step` runs one timed iteration of each."""

    def __init__(self, args, algorithms, policy, judge, prompts):
        import jax

        from jaxalign.train.online import OnlineConfig, OnlineTrainer
        from jaxalign.train.oracles import reward_model_oracle

        self.key = jax.random.key
        self.trainers, self.times, self.history, self.first = {}, {}, {}, {}
        for algorithm in algorithms:
            config = OnlineConfig(
                algorithm=algorithm,
                mixture="token",
                batch_size=args.batch_size,
                inner_steps=1,
                learning_rate=LR,
                step_size=STEP_SIZE,
                tau=TAU,
                temperature=1.0,
                top_p=1.0,
                max_new_tokens=args.max_new_tokens,
            )
            name = f"jaxalign {algorithm}"
            self.trainers[name] = OnlineTrainer(
                policy,
                config,
                prompts=prompts,
                oracle=reward_model_oracle(judge),
                eos_token_id=(),  # fixed-length responses
                pad_token_id=0,
            )
            self.times[name], self.history[name] = [], []
            for _ in range(args.warmup):
                self.first.setdefault(name, self._timed(name))

    def _timed(self, name: str) -> float:
        trainer = self.trainers[name]
        start = time.perf_counter()
        metrics = trainer.iteration(self.key(trainer.state.iteration))  # ends in a host sync
        elapsed = time.perf_counter() - start
        self.history[name].append(metrics)
        return elapsed

    def step(self) -> None:
        for name in self.trainers:
            self.times[name].append(self._timed(name))

    def results(self) -> dict:
        out = {}
        for name, times in self.times.items():
            step, hist = statistics.median(times), self.history[name]
            out[name] = {
                "iteration_time_s": step,
                "first_iteration_s": self.first[name],
                "compile_s": self.first[name] - step,
                "first_loss": hist[0]["loss"],
                "last_loss": hist[-1]["loss"],
                "response_length": hist[-1]["response_length"],
            }
        return out


def run_trl(args, rows: list[dict], tokenizer, work: Path, between) -> dict:
    """TRL's timed steps; ``between()`` runs after each timed step, off TRL's clock."""
    import datasets
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        TrainerCallback,
    )
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    torch.manual_seed(0)
    load = dict(dtype=torch.float32, local_files_only=True)
    policy = AutoModelForCausalLM.from_pretrained(str(work / "policy"), **load)
    reference = AutoModelForCausalLM.from_pretrained(str(work / "policy"), **load)
    judge = AutoModelForSequenceClassification.from_pretrained(str(work / "judge"), **load)
    threads = args.torch_threads or _fastest_threads(policy, args)
    torch.set_num_threads(threads)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)
            if len(times) > args.warmup:
                between()  # interleaved, so load drift hits every side alike

    config = OnlineDPOConfig(
        output_dir=str(work / "trl-run"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.iterations,
        learning_rate=LR,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,  # jaxalign's Adam does not clip
        beta=TAU,
        loss_type="ipo",
        max_new_tokens=args.max_new_tokens,
        generation_kwargs={"min_new_tokens": args.max_new_tokens},  # no EOS stopping
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_length=4096,  # never truncates
        gradient_checkpointing=False,
        bf16=False,
        logging_steps=10**6,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_dropout=True,
        seed=0,
    )
    trainer = OnlineDPOTrainer(
        model=policy,
        ref_model=reference,
        reward_funcs=judge,
        args=config,
        train_dataset=datasets.Dataset.from_list([{"prompt": r["prompt"]} for r in rows]),
        processing_class=tokenizer,
        reward_processing_classes=tokenizer,
        callbacks=[Clock()],
    )
    lengths: list[float] = []
    generate = trainer._generate

    def counted(*a, **k):  # records the sampled response lengths (no EOS ⇒ all full)
        out = generate(*a, **k)
        lengths.append(float(out[3].sum(1).float().mean()))
        return out

    trainer._generate = counted
    out = trainer.train()
    return {
        "iteration_time_s": statistics.median(times[args.warmup :]),
        "train_loss": out.training_loss,
        "torch_threads": threads,
        "response_length": statistics.mean(lengths),
    }


def _fastest_threads(model, args) -> int:
    """1 or all cores, whichever runs a forward+backward of the iteration's size faster.

    OpenMP threads spin at barriers, so on a busy machine one thread can beat many.
    """
    import torch

    ids = torch.randint(0, model.config.vocab_size, (2 * args.batch_size, 24 + args.max_new_tokens))
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
        args.iterations, args.warmup = 3, 1
        args.batch_size, args.max_new_tokens = min(args.batch_size, 4), min(args.max_new_tokens, 8)
    args.warmup = max(args.warmup, 1)  # the first iteration compiles
    model = SMOKE_MODEL if args.smoke else MODEL
    algorithms = ("nash_md",) if args.smoke else ("nash_md", "online_ipo")

    from transformers import PreTrainedTokenizerFast

    from jaxalign.data import PromptDataset, make_tiny_preference_dataset
    from jaxalign.models import build_tiny_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tok_dir = build_tiny_tokenizer(work / "tokenizer")
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir), local_files_only=True)
        data_path = make_tiny_preference_dataset(work / "data.jsonl", 256, 0)
        rows = [json.loads(line) for line in data_path.read_text().splitlines()]
        texts = [r["prompt"] for r in rows]
        width = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        prompts = PromptDataset(texts, tokenizer, max_prompt_length=width, use_chat_template=False)
        policy, judge = build_models(model, work)

        jaxalign = JaxalignSide(args, algorithms, policy, judge, prompts)
        trl_note, peer = None, None
        if args.smoke:
            trl_note = "skipped (--smoke)"
        else:
            try:
                import trl  # noqa: F401
            except ImportError:
                trl_note = "skipped: trl is not installed (see benchmarks/README_online.md)"
            else:
                peer = run_trl(args, rows, tokenizer, work, jaxalign.step)
        if peer is None:
            for _ in range(args.iterations):
                jaxalign.step()
        table = jaxalign.results()
        if peer is not None:
            table["trl online_dpo"] = peer

    tokens = 2 * args.batch_size * args.max_new_tokens
    for row in table.values():
        row["pairs_per_s"] = args.batch_size / row["iteration_time_s"]
        row["generated_tokens_per_s"] = tokens / row["iteration_time_s"]
    ratios = {}
    if "trl online_dpo" in table:
        peer = table["trl online_dpo"]["pairs_per_s"]
        ratios = {
            name: row["pairs_per_s"] / peer
            for name, row in table.items()
            if name != "trl online_dpo"
        }
    ratio = ratios.get("jaxalign nash_md")

    print(f"online iteration throughput, tiny Llama {model}, {args.batch_size} pairs × "
          f"{args.max_new_tokens} new tokens, prompts ≤ {width} tokens, 1 Adam step, "
          f"{args.iterations} timed iterations")  # fmt: skip
    print(f"{'':22} {'iter ms':>9} {'pairs/s':>9} {'tokens/s':>9} {'compile s':>10}")
    for name, row in table.items():
        compile_s = f"{row['compile_s']:10.1f}" if "compile_s" in row else f"{'-':>10}"
        print(
            f"{name:22} {row['iteration_time_s'] * 1e3:9.1f} {row['pairs_per_s']:9.1f} "
            f"{row['generated_tokens_per_s']:9.0f} {compile_s}"
        )
    if ratio is None:
        print(f"trl: {trl_note}")
    else:
        for name, r in ratios.items():
            print(f"{name} / TRL OnlineDPO pairs/s: {r:.2f}x")
    result = {
        "benchmark": "online_nash_md_vs_trl",
        "peer": "trl.experimental.online_dpo.OnlineDPOTrainer (TRL 1.16 has no NashMDTrainer)",
        "smoke": args.smoke,
        "model": model,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "prompt_width": width,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "step_size": STEP_SIZE,
        "tau": TAU,
        "learning_rate": LR,
        "results": table,
        "ratios_over_trl": ratios,
        "ratio_jaxalign_over_trl": ratio,
        "trl": trl_note or "measured",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
