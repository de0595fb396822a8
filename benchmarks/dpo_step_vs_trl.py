"""DPO step throughput: jaxalign vs TRL 1.16's ``DPOTrainer`` (PyTorch, CPU), interleaved.

Per row (shape × precision) both sides train the same work (``dpo_workload.py``): the
same initial weights, the same batches of token ids in the same order, AdamW with the
same settings, DPO β 0.1. The timed unit on both sides is one optimizer step on a batch
that is already collated and in memory, reference log-probs included, ending with a
host sync of the loss:

* **jaxalign** — ``dpo_workload.make_jaxalign_step``: the jitted
  ``jaxalign.train.preference_train_step`` on a prepared ``PreferenceBatch``;
  ``float(loss)``.
* **TRL** — what ``Trainer._run_epoch`` does for one step, on a batch from TRL's own
  ``DataCollatorForPreference``: ``trainer.training_step`` (policy and reference
  forward, backward, under accelerate's autocast when bf16), ``_clip_grad_norm``,
  ``optimizer.step()``, ``lr_scheduler.step()``, ``model.zero_grad()``;
  ``loss.item()``. The model, optimizer and scheduler are those of
  ``trainer._prepare_for_training`` (what ``trainer.train()`` prepares).

Rows: shapes ``tiny`` (d 128, 4 layers) and ``d512`` (d 512, 8 layers); precisions
``float32`` (TRL ``bf16=False``; jaxalign float32) and ``bf16`` (TRL ``bf16=True``:
autocast, float32 master weights; jaxalign ``dtype=bfloat16``, ``param_dtype=float32``).
Gradient checkpointing is off on both sides in every row (on for both with
``--gradient-checkpointing``: jaxalign ``model.remat = "full"``).
Headline: real (non-padding) tokens/s per side and their ratio (of medians and of
mins); the losses of both sides are compared step by step as a same-work check.

TRL 1.16 defaults overridden (and why) are listed in ``TRL_OVERRIDES`` and printed.

    /work/bench-venv/bin/python benchmarks/dpo_step_vs_trl.py      # needs trl (bench venv)
    .venv/bin/python benchmarks/dpo_step_vs_trl.py --smoke          # seconds, jaxalign only
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dpo_workload as dw

RESULTS = Path(__file__).resolve().parent / "results" / "dpo_step_vs_trl.json"
PEER_PACKAGES = ("trl", "transformers", "accelerate", "torch")

#: (TRL 1.16 setting, its default, the value used here, why).
TRL_OVERRIDES = (
    ("bf16", "True (DPOConfig)", "False in float32 rows, True in bf16 rows",
     "the same dtype on both sides"),
    ("gradient_checkpointing (activation_checkpointing)", "True (DPOConfig)",
     "False (True with --gradient-checkpointing)",
     "the same on both sides: off, or on for both (jaxalign model.remat = full)"),
    ("learning_rate", "1e-6 (DPOConfig)", "1e-4", "the shared learning rate"),
    ("lr_scheduler_type", "linear", "constant", "the shared constant schedule"),
    ("max_length", "1024", "--max-length (48)",
     "jaxalign's truncation; no row is truncated on either side"),
    ("use_cpu", "False", "True", "a CPU benchmark"),
    ("save_strategy", "steps", "no", "no checkpoint I/O (outside the step anyway)"),
)  # fmt: skip
#: TRL 1.16 defaults kept (equal to the jaxalign side's settings, or TRL's own choice).
TRL_KEPT = (
    "optim adamw_torch_fused; adam β₁ 0.9, β₂ 0.999, ε 1e-8; weight_decay 0.0; "
    "max_grad_norm 1.0; loss_type sigmoid; beta 0.1; label_smoothing 0; disable_dropout True; "
    "torch_compile False; pad_to_multiple_of None (pads each batch to its longest row); "
    "report_to none; precompute_ref_log_probs False and padding_free False unless the flags "
    "say otherwise"
)


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    dw.add_row_args(p)
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="on for both sides (jaxalign: model.remat = full)",
    )
    p.add_argument(
        "--trl-precompute-ref",
        action="store_true",
        help="TRL precompute_ref_log_probs=True (reference log-probs before timing)",
    )
    p.add_argument(
        "--trl-padding-free",
        action="store_true",
        help="TRL padding_free=True (TRL 1.16 warns and falls back to padding)",
    )
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch intra-op threads; 0 = torch's default")  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON output")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- TRL side


def make_trl_step(
    workload: dw.Workload,
    *,
    bf16: bool,
    gradient_checkpointing: bool,
    precompute_ref: bool,
    padding_free: bool,
    hyper: dw.Hyper,
    work: Path,
):
    """TRL's DPO step on the workload: ``(step, info)``; ``step()`` returns the loss."""
    import json
    import time

    import datasets
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(
        str(workload.tokenizer_dir), local_files_only=True
    )
    load = dict(dtype=torch.float32, local_files_only=True)
    policy = AutoModelForCausalLM.from_pretrained(str(workload.checkpoint), **load)
    # With precomputed reference log-probs TRL keeps no reference model (its recommended
    # set-up); they come from the initial policy, which is the reference.
    reference = (
        None
        if precompute_ref
        else AutoModelForCausalLM.from_pretrained(str(workload.checkpoint), **load)
    )
    config = DPOConfig(
        output_dir=str(work / "trl-run"),
        per_device_train_batch_size=workload.batch_size,
        learning_rate=hyper.lr,
        lr_scheduler_type="constant",
        adam_beta1=hyper.b1,
        adam_beta2=hyper.b2,
        adam_epsilon=hyper.eps,
        weight_decay=hyper.weight_decay,
        max_grad_norm=hyper.clip_norm,
        beta=hyper.beta,
        max_length=workload.max_length,
        bf16=bf16,
        activation_checkpointing=gradient_checkpointing,
        precompute_ref_log_probs=precompute_ref,
        padding_free=padding_free,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )
    rows = [json.loads(line) for line in workload.data_path.read_text().splitlines()]
    trainer = DPOTrainer(
        model=policy,
        ref_model=reference,
        args=config,
        processing_class=tokenizer,
        # Only for the constructor; the timed steps use the batches below.
        train_dataset=datasets.Dataset.from_list(rows),
    )
    model, _ = trainer._prepare_for_training(10**6, None, None)
    # What _run_epoch sets before each step of one batch without gradient accumulation.
    trainer.current_gradient_accumulation_steps = 1
    trainer.accelerator.gradient_state._set_sync_gradients(True)

    collator = DataCollatorForPreference(pad_token_id=workload.pad_id, max_length=config.max_length)
    batches = [
        collator(
            [
                {
                    "prompt_ids": p.prompt.tolist(),
                    "chosen_ids": p.chosen.tolist(),
                    "rejected_ids": p.rejected.tolist(),
                }
                for p in pairs
            ]
        )
        for pairs in workload.batches
    ]
    attended = [int(b["attention_mask"].sum()) for b in batches]
    if attended != workload.real_tokens():
        raise AssertionError(f"TRL batches hold {attended} real tokens, "
                             f"expected {workload.real_tokens()}")  # fmt: skip
    precompute_s = None
    if precompute_ref:
        start = time.perf_counter()
        for batch in batches:
            chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)
            batch["ref_chosen_logps"], batch["ref_rejected_logps"] = chosen, rejected
        precompute_s = (time.perf_counter() - start) / len(batches)

    counter = {"calls": 0}

    def step() -> float:
        inputs = batches[counter["calls"] % len(batches)]
        counter["calls"] += 1
        loss = trainer.training_step(model, inputs)
        trainer._clip_grad_norm(model)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        model.zero_grad()
        return loss.item()  # host sync of the loss

    groups = trainer.optimizer.optimizer.param_groups
    info = {
        "options": {
            "bf16": bool(config.bf16),
            "mixed_precision": str(trainer.accelerator.mixed_precision),
            "gradient_checkpointing": bool(trainer.model.is_gradient_checkpointing),
            "precompute_ref_log_probs": bool(trainer.precompute_ref_logps),
            "padding_free_requested": padding_free,
            "padding_free": bool(trainer.padding_free),
            "optimizer": f"{type(trainer.optimizer.optimizer).__name__} "
            f"(fused={groups[0].get('fused')}, weight_decay="
            f"{sorted({g['weight_decay'] for g in groups})})",
            "lr_scheduler": type(trainer.lr_scheduler).__name__,
            "torch_threads": torch.get_num_threads(),
        },
        "step": "trainer.training_step + _clip_grad_norm + optimizer.step + lr_scheduler.step "
        "+ zero_grad on a DataCollatorForPreference batch; loss.item()",
        "padded_tokens_per_step": float(sum(b["input_ids"].numel() for b in batches))
        / len(batches),
        "real_tokens_per_step": workload.mean_real_tokens(),
        "ref_precompute_s_per_batch": precompute_s,
    }
    return step, info


# ----------------------------------------------------------------------------- driver


def _missing() -> str | None:
    try:
        import trl  # noqa: F401
    except ImportError:
        return "trl is not installed (set up the bench venv: benchmarks/README.md)"
    return None


def main(argv=None) -> dict:
    args = _parse(argv)
    if not args.smoke and _missing() is None:
        import torch

        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
    remat = "full" if args.gradient_checkpointing else "none"
    peer = dw.Peer(
        name="trl",
        title="DPO step: jaxalign vs TRL DPOTrainer — one optimizer step on a collated "
        "in-memory batch, reference log-probs included, ending with a host sync of the loss; "
        f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'} on both sides",
        packages=PEER_PACKAGES,
        missing=_missing,
        make_step=lambda workload, precision, work: make_trl_step(
            workload,
            bf16=precision == "bf16",
            gradient_checkpointing=args.gradient_checkpointing,
            precompute_ref=args.trl_precompute_ref,
            padding_free=args.trl_padding_free,
            hyper=dw.Hyper(),
            work=work,
        ),
        # TRL's bf16 is autocast over float32 weights: jaxalign's mixed precision.
        jaxalign_options=lambda precision: dataclasses.replace(
            dw.default_options(precision), remat=remat
        ),
        overrides=TRL_OVERRIDES,
        kept=TRL_KEPT,
    )
    return dw.run_benchmark(args, peer, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
