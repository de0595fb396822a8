"""DPO step throughput: jaxalign vs Tunix 0.1.7's ``DPOTrainer`` (JAX, same pins), interleaved.

Tunix is the JAX peer: same jax/flax/optax versions, same process, same device. Per row
(shape × precision) both sides train the same work (``dpo_workload.py``): the same
initial weights (Tunix reads the HF checkpoint with its own
``tunix.models.llama3.params.create_model_from_safe_tensors``), the same batches of
token ids in the same order, the same optimizer —
``optax.chain(clip_by_global_norm(1.0), adamw(1e-4, b1=0.9, b2=0.999, eps=1e-8,
weight_decay=0))`` for Tunix, ``jaxalign.train.make_optimizer`` with the same numbers
for jaxalign — and DPO β 0.1.

The timed unit on both sides is one optimizer step on a batch already laid out and on
the device, ending with a host sync of the loss:

* **jaxalign** — ``dpo_workload.make_jaxalign_step`` (the jitted
  ``jaxalign.train.preference_train_step``); ``float(loss)``.
* **Tunix** — exactly the per-step work of ``PeftTrainer.train``'s loop:
  ``trainer._prepare_inputs(batch)`` (concatenation, attention mask, positions and the
  **reference log-probs**, a separate jitted ``compute_logps`` call on the reference
  model), ``sharding_utils.shard_input``, then the train step from
  ``trainer.jit_train_and_eval_step(cache_nnx_graph=True)`` (loss, gradients,
  ``nnx.Optimizer.update``); ``float(loss)``. Logging, progress bar, checkpointing and
  the in-flight throttler of ``train()`` are left out (they are not the step).

Tunix's batch layout is its own: ``TrainingInput`` with left-padded prompts and
right-padded responses, padded to the longest prompt and the longest response of the
benchmark batches (fixed shapes, one compile); jaxalign pads ``prompt ++ response`` on
the right to ``--max-length``. Real (non-padding) tokens/s is the headline.

Precision rows: ``float32`` (both float32) and ``bf16``. Tunix's Llama has no
mixed-precision option — it computes in the parameters' dtype — so its bf16 is
``create_model_from_safe_tensors(dtype=bfloat16)`` (parameters and AdamW moments in bf16);
jaxalign's bf16 row matches it with ``dtype=param_dtype=bfloat16``. No remat on either
side (Tunix ``remat_config`` default ``NONE``).

    /work/bench-venv/bin/python benchmarks/dpo_step_vs_tunix.py     # needs google-tunix
    .venv/bin/python benchmarks/dpo_step_vs_tunix.py --smoke         # seconds, jaxalign only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dpo_workload as dw

RESULTS = Path(__file__).resolve().parent / "results" / "dpo_step_vs_tunix.json"
PEER_PACKAGES = ("google-tunix", "qwix", "grain")

#: (Tunix 0.1.7 setting, its default, the value used here, why).
TUNIX_OVERRIDES = (
    ("parameter dtype", "float32 (checkpoint dtype)", "bfloat16 in bf16 rows",
     "Tunix's only bf16 mode; jaxalign matches it (dtype = param_dtype = bfloat16)"),
    ("llama3.ModelConfig shape", "presets (1B, 3B, 8B, …)", "the row's shape",
     "the same model as jaxalign's side"),
    ("llama3.ModelConfig.norm_eps", "per preset (1e-5)", "1e-6", "jaxalign's rms_norm_eps"),
    ("optimizer", "none (required argument)",
     "clip_by_global_norm(1.0) + adamw(1e-4, 0.9, 0.999, 1e-8, weight_decay=0)",
     "optax.adamw defaults to weight_decay=1e-4; the shared settings have none"),
    ("DPOTrainingConfig.eval_every_n_steps", "required", "10⁹", "no evaluation"),
)  # fmt: skip
TUNIX_KEPT = (
    "algorithm dpo; beta 0.1; label_smoothing 0; remat_config NONE; gradient_accumulation "
    "None; no checkpointing (checkpoint_root_directory None); data_sharding_axis ('fsdp',) "
    "(no mesh: a no-op); RoPE θ 1e6 (Tunix 0.1.7's llama3 attention ignores the config's "
    "rope_theta, so every side's model uses θ = 1e6)"
)


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    dw.add_row_args(p)
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON output")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- Tunix side


def tunix_batches(workload: dw.Workload):
    """Tunix ``TrainingInput`` s of the workload's token ids, on the device.

    Prompts left-padded to the longest prompt, responses right-padded to the longest
    response over all the batches (Tunix's layout; fixed shapes, one compile).
    """
    import jax.numpy as jnp
    import numpy as np
    from tunix.sft.dpo.dpo_trainer import TrainingInput

    pairs = [p for batch in workload.batches for p in batch]
    width_p = max(len(p.prompt) for p in pairs)
    width_r = max(max(len(p.chosen), len(p.rejected)) for p in pairs)

    def lay(rows, width, *, left):
        ids = np.full((len(rows), width), workload.pad_id, np.int32)
        mask = np.zeros((len(rows), width), np.int32)
        for i, r in enumerate(rows):
            cols = slice(width - len(r), width) if left else slice(0, len(r))
            ids[i, cols], mask[i, cols] = r, 1
        return jnp.asarray(ids), jnp.asarray(mask)

    out = []
    for batch in workload.batches:
        prompt_ids, prompt_mask = lay([p.prompt for p in batch], width_p, left=True)
        chosen_ids, chosen_mask = lay([p.chosen for p in batch], width_r, left=False)
        rejected_ids, rejected_mask = lay([p.rejected for p in batch], width_r, left=False)
        out.append(
            TrainingInput(
                prompt_ids=prompt_ids,
                prompt_mask=prompt_mask,
                chosen_ids=chosen_ids,
                chosen_mask=chosen_mask,
                rejected_ids=rejected_ids,
                rejected_mask=rejected_mask,
            )
        )
    return out, width_p + width_r


def make_tunix_step(workload: dw.Workload, *, bf16: bool, hyper: dw.Hyper):
    """Tunix's DPO step on the workload: ``(step, info)``; ``step()`` returns the loss."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx
    from tunix.models.llama3 import model as llama3
    from tunix.models.llama3 import params as llama3_params
    from tunix.sft import sharding_utils
    from tunix.sft.dpo import dpo_trainer

    m = workload.model
    config = llama3.ModelConfig(
        num_layers=m["num_layers"],
        vocab_size=m["vocab_size"],
        embed_dim=m["hidden_size"],
        hidden_dim=m["intermediate_size"],
        num_heads=m["num_heads"],
        head_dim=m["head_dim"],
        num_kv_heads=m["num_kv_heads"],
        rope_theta=int(m["rope_theta"]),
        norm_eps=1e-6,
    )
    dtype = jnp.bfloat16 if bf16 else None  # None: the checkpoint's float32
    policy = llama3_params.create_model_from_safe_tensors(
        str(workload.checkpoint), config, dtype=dtype
    )
    reference = llama3_params.create_model_from_safe_tensors(
        str(workload.checkpoint), config, dtype=dtype
    )
    tx = optax.chain(
        optax.clip_by_global_norm(hyper.clip_norm),
        optax.adamw(
            hyper.lr, b1=hyper.b1, b2=hyper.b2, eps=hyper.eps, weight_decay=hyper.weight_decay
        ),
    )
    trainer = dpo_trainer.DPOTrainer(
        model=policy,
        ref_model=reference,
        optimizer=tx,
        training_config=dpo_trainer.DPOTrainingConfig(
            eval_every_n_steps=10**9, algorithm="dpo", beta=hyper.beta, label_smoothing=0.0
        ),
    )
    train_step, _ = trainer.jit_train_and_eval_step(cache_nnx_graph=True)
    batches, length = tunix_batches(workload)
    attended = [int(b.prompt_mask.sum()) * 2 + int(b.chosen_mask.sum() + b.rejected_mask.sum())
                for b in batches]  # fmt: skip
    if attended != workload.real_tokens():
        raise AssertionError(f"Tunix batches hold {attended} real tokens, "
                             f"expected {workload.real_tokens()}")  # fmt: skip
    counter = {"calls": 0}

    def step() -> float:
        batch = batches[counter["calls"] % len(batches)]
        counter["calls"] += 1
        # PeftTrainer.train's per-step work: inputs (with the reference log-probs), the
        # (no-op without a mesh) input sharding, the jitted train step.
        example = trainer._prepare_inputs(batch)
        example = sharding_utils.shard_input(example, trainer.config.data_sharding_axis)
        loss, _aux, _grad_norm = train_step(example)
        return float(loss)  # host sync of the loss

    param_dtypes = sorted({str(x.dtype) for x in jax.tree.leaves(nnx.state(policy, nnx.Param))})
    info = {
        "options": {
            "param_dtype": param_dtypes,
            "compute_dtype": "the parameters' dtype (Tunix llama3 has no separate compute dtype)",
            "remat_config": str(config.remat_config),
            "reference_log_probs": "in the step (DPOTrainer._prepare_inputs, jitted compute_logps)",
            "cache_nnx_graph": True,
        },
        "step": "DPOTrainer._prepare_inputs + sharding_utils.shard_input + the jitted train "
        "step of jit_train_and_eval_step; float(loss)",
        "padded_tokens_per_step": float(2 * workload.batch_size * length),
        "real_tokens_per_step": workload.mean_real_tokens(),
    }
    return step, info


# ----------------------------------------------------------------------------- driver


def _missing() -> str | None:
    try:
        import tunix  # noqa: F401
    except ImportError:
        return "google-tunix is not installed (set up the bench venv: benchmarks/README.md)"
    return None


def _jaxalign_options(precision: str) -> dw.JaxalignOptions:
    # Tunix computes in its parameters' dtype, so jaxalign stores bf16 parameters too.
    dtype = "bfloat16" if precision == "bf16" else "float32"
    return dw.JaxalignOptions(dtype=dtype, param_dtype=dtype)


def main(argv=None) -> dict:
    args = _parse(argv)
    peer = dw.Peer(
        name="tunix",
        title="DPO step: jaxalign vs Tunix DPOTrainer — one optimizer step on a prepared "
        "on-device batch, reference log-probs included, ending with a host sync of the loss; "
        "no remat on either side",
        packages=PEER_PACKAGES,
        missing=_missing,
        make_step=lambda workload, precision, _work: make_tunix_step(
            workload, bf16=precision == "bf16", hyper=dw.Hyper()
        ),
        jaxalign_options=_jaxalign_options,
        overrides=TUNIX_OVERRIDES,
        kept=TUNIX_KEPT,
    )
    return dw.run_benchmark(args, peer, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
