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

Timed unit: one iteration. jaxalign: the training engine's online step, one jitted
:class:`~jaxalign.train.tasks.nash.NashIteration` (state donated), after drawing the
batch's prompts on the host as the engine's task does; it ends in a host read of the step's
metrics. TRL: what
``Trainer._run_epoch`` does for one step, on a ready batch of prompt strings (TRL
tokenises them inside ``training_step``): ``trainer.training_step`` (generate, judge,
log-probs, loss, backward), ``optimizer.step()``, ``lr_scheduler.step()``,
``model.zero_grad()``; ``loss.item()``. All sides run interleaved in one loop
(``benchmarks/harness.py``: ``--warmup`` untimed iterations each, a wait for a quiet
machine, ``--repeats`` rounds). Reported per side: median and min iteration time,
pairs/s and generated tokens/s, and for jaxalign the one-off compile time (first
iteration minus the median). The ratio jaxalign Nash-MD / TRL pairs/s (of the medians
and of the mins) is the headline.

    python benchmarks/online_nash_md_vs_trl.py            # needs trl (benchmark venv)
    python benchmarks/online_nash_md_vs_trl.py --smoke    # a few seconds, jaxalign only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

RESULTS = Path(__file__).resolve().parent / "results" / "online_nash_md_vs_trl.json"
PEER_PACKAGES = ("trl", "transformers", "accelerate", "torch")

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
    p.add_argument("--batch-size", type=int, default=8, help="prompts (pairs) per iteration")
    p.add_argument("--max-new-tokens", type=int, default=24, help="tokens per response")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch intra-op threads; 0 = torch's default")  # fmt: skip
    harness.add_protocol_args(p, repeats=10, warmup=2)
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON output")
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


def jaxalign_calls(args, algorithms, policy, judge, prompts) -> dict:
    """One jitted :class:`~jaxalign.train.tasks.nash.NashIteration` (the training engine's
    online step) per algorithm; name → a call that draws a batch of prompts on the host (as
    the engine's task does), runs one iteration and reads its metrics (plus its wall time)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxalign.games.algorithms import NashAlgorithm
    from jaxalign.train.oracles import oracle_params, reward_model_oracle
    from jaxalign.train.rollout import Sampler
    from jaxalign.train.tasks.nash import FitSettings, NashIteration, PromptBatch

    graphdef, params = nnx.split(policy)
    oracle = reward_model_oracle(judge)
    sampler = Sampler(graphdef, args.max_new_tokens, temperature=1.0, top_p=1.0,
                      eos_token_id=(), pad_token_id=int(prompts.pad_token_id))  # fmt: skip
    frozen = {"reference": jax.tree.map(jnp.copy, params), "oracle": oracle_params(oracle)}
    fit = FitSettings(batch_size=args.batch_size, inner_steps=1, learning_rate=LR,
                      adam_eps=1e-3, mixture="token")  # fmt: skip
    calls = {}
    for name in algorithms:
        iterate = NashIteration(name, NashAlgorithm(name, STEP_SIZE, TAU), fit, sampler, oracle)
        step = jax.jit(iterate, donate_argnums=0)  # as the engine: the state is donated
        run = {"state": iterate.initial_state(jax.tree.map(jnp.copy, params)), "t": 0}

        def call(step=step, run=run):
            start = time.perf_counter()
            key = jax.random.fold_in(jax.random.key(0), run["t"])
            tokens, mask = prompts.sample(jax.random.split(key)[0], args.batch_size)
            batch = PromptBatch(jnp.asarray(tokens), jnp.asarray(mask), jnp.ones((), jnp.float32))
            with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and floats
                run["state"], metrics = step(run["state"], frozen, batch, key)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}  # host sync
            run["t"] += 1
            return {**metrics, "wall_s": time.perf_counter() - start}

        calls[f"jaxalign {name}"] = call
    return calls


def make_trl_step(args, rows: list[dict], tokenizer, work: Path):
    """TRL OnlineDPOTrainer's step on ready prompt batches: ``(step, info)``."""
    import datasets
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.manual_seed(0)
    load = dict(dtype=torch.float32, local_files_only=True)
    policy = AutoModelForCausalLM.from_pretrained(str(work / "policy"), **load)
    reference = AutoModelForCausalLM.from_pretrained(str(work / "policy"), **load)
    judge = AutoModelForSequenceClassification.from_pretrained(str(work / "judge"), **load)
    config = OnlineDPOConfig(
        output_dir=str(work / "trl-run"),
        per_device_train_batch_size=args.batch_size,
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
        activation_checkpointing=False,
        bf16=False,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_dropout=True,
        seed=0,
    )
    prompts = [r["prompt"] for r in rows]
    trainer = OnlineDPOTrainer(
        model=policy,
        ref_model=reference,
        reward_funcs=judge,
        args=config,
        train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=tokenizer,
        reward_processing_classes=tokenizer,
    )
    model, _ = trainer._prepare_for_training(10**6, None, None)
    trainer.current_gradient_accumulation_steps = 1
    trainer.accelerator.gradient_state._set_sync_gradients(True)
    lengths: list[float] = []
    generate = trainer._generate

    def counted(*a, **k):  # records the sampled response lengths (no EOS ⇒ all full)
        out = generate(*a, **k)
        lengths.append(float(out[3].sum(1).float().mean()))
        return out

    trainer._generate = counted
    b = args.batch_size
    batches = [{"prompt": prompts[i : i + b]} for i in range(0, len(prompts) - b + 1, b)]
    counter = {"calls": 0}

    def step() -> float:
        inputs = batches[counter["calls"] % len(batches)]
        counter["calls"] += 1
        loss = trainer.training_step(model, inputs)
        # max_grad_norm = 0: _run_epoch does not clip.
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        model.zero_grad()
        return loss.item()  # host sync of the loss

    info = {
        "step": "trainer.training_step (generate, judge, log-probs, loss, backward) + "
        "optimizer.step + lr_scheduler.step + zero_grad on a batch of prompt strings",
        "torch_threads": torch.get_num_threads(),
        "lengths": lengths,
    }
    return step, info


def _missing() -> str | None:
    try:
        import trl  # noqa: F401
    except ImportError:
        return "trl is not installed (see benchmarks/README.md)"
    return None


def main(argv=None) -> dict:
    args = _parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local
    if args.smoke:
        args.repeats, args.warmup = 3, 1
        args.batch_size, args.max_new_tokens = min(args.batch_size, 4), min(args.max_new_tokens, 8)
    args.warmup = max(args.warmup, 1)  # the first iteration compiles
    model = SMOKE_MODEL if args.smoke else MODEL
    algorithms = ("nash_md",) if args.smoke else ("nash_md", "online_ipo")
    trl_note = "skipped (--smoke)" if args.smoke else _missing()
    if trl_note is None and args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)

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

        sides = jaxalign_calls(args, algorithms, policy, judge, prompts)
        trl_info = None
        if trl_note is None:
            sides["trl online_dpo"], trl_info = make_trl_step(args, rows, tokenizer, work)
        m = harness.run_interleaved(
            sides,
            repeats=args.repeats,
            warmup=args.warmup,
            max_wait=args.max_wait,
            quiet_load=args.quiet_load,
            smoke=args.smoke,
        )

    tokens = 2 * args.batch_size * args.max_new_tokens
    table = {}
    for name in sides:
        stats = m.stats(name)
        row = {
            **stats,
            "iteration_time_s": stats["median_s"],
            "pairs_per_s": args.batch_size / stats["median_s"],
            "pairs_per_s_best": args.batch_size / stats["min_s"],
            "generated_tokens_per_s": tokens / stats["median_s"],
        }
        outs = m.outputs[name]
        if name.startswith("jaxalign"):
            row.update(
                first_iteration_s=outs[0]["wall_s"],
                compile_s=outs[0]["wall_s"] - stats["median_s"],
                first_loss=outs[0]["loss"],
                last_loss=outs[-1]["loss"],
                response_length=outs[-1]["response_length"],
            )
        else:
            lengths = trl_info["lengths"]
            row.update(
                torch_threads=trl_info["torch_threads"],
                first_loss=float(outs[0]),
                last_loss=float(outs[-1]),
                response_length=sum(lengths) / len(lengths),
            )
        table[name] = row
    ratios = {}
    if "trl online_dpo" in sides:
        ratios = {
            name: m.ratio("trl online_dpo", name) for name in sides if name != "trl online_dpo"
        }
    ratio = ratios.get("jaxalign nash_md")

    record = harness.machine(PEER_PACKAGES if trl_note is None else ())
    print(f"online iteration throughput, tiny Llama {model}, {args.batch_size} pairs × "
          f"{args.max_new_tokens} new tokens, prompts ≤ {width} tokens, 1 Adam step")  # fmt: skip
    print(harness.describe_machine(record))
    print("iteration ms and pairs/s: median (best) of the interleaved rounds")
    print(f"{'':22} {'iter ms':>17} {'pairs/s':>17} {'tokens/s':>9} {'compile s':>10}")
    for name, row in table.items():
        compile_s = f"{row['compile_s']:10.1f}" if "compile_s" in row else f"{'-':>10}"
        iter_ms = f"{row['median_s'] * 1e3:.1f} ({row['min_s'] * 1e3:.1f})"
        pairs = f"{row['pairs_per_s']:.1f} ({row['pairs_per_s_best']:.1f})"
        print(
            f"{name:22} {iter_ms:>17} {pairs:>17} {row['generated_tokens_per_s']:9.0f} {compile_s}"
        )
    if ratio is None:
        print(f"trl: {trl_note}")
    else:
        for name, r in ratios.items():
            print(f"{name} / TRL OnlineDPO pairs/s: {r['ratio_of_medians']:.2f}x (medians), "
                  f"{r['ratio_of_mins']:.2f}x (mins)")  # fmt: skip
    harness.print_verdict(m)
    result = {
        "benchmark": "online_nash_md_vs_trl",
        "peer": "trl.experimental.online_dpo.OnlineDPOTrainer (TRL 1.16 has no NashMDTrainer)",
        "smoke": args.smoke,
        "label": m.label,
        "model": model,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "prompt_width": width,
        "step_size": STEP_SIZE,
        "tau": TAU,
        "learning_rate": LR,
        "results": table,
        "ratios_over_trl": ratios,
        "ratio_jaxalign_over_trl": ratio,
        "trl": trl_note or "measured",
        "conditions": m.conditions(),
        "machine": record,
    }
    path = harness.write_json(args.out, result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
