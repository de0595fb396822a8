"""LoRA beyond the offline losses: SFT and multi-objective DPO through the engine train the
adapters alone (the only optimizer state), leave the frozen (bf16) base bitwise as it was
born, log the trainable fraction and optimizer bytes, and export a merged HF checkpoint
(transformers) and a PEFT adapter (peft) that agree with the trained policy."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tiny_models import TINY_TRAIN

from jaxalign.experiment import repo_root
from jaxalign.models import from_pretrained, save_pretrained
from jaxalign.models.lora import LoRAParam, merge_adapters
from jaxalign.train import load_train_config, train

CONFIGS = repo_root() / "configs" / "train"
IDS = np.random.default_rng(0).integers(3, 300, (2, 12)).astype(np.int32)


def _run(config, out, *extra):
    cfg = load_train_config(
        CONFIGS / config,
        [*TINY_TRAIN, f"run.out_dir={out}", "run.steps=4", "checkpoint.enabled=false", *extra],
    )
    return train(cfg, quiet=True)


def _check_lora_run(result, base_dtype):
    """Adapters alone trained and carry optimizer state; the base is bitwise its init."""
    assert result.status == "completed" and result.step == 4
    task, state = result.task, result.state
    assert all(isinstance(v, LoRAParam) for _, v in nnx.to_flat_state(state.params))
    n_adapters = sum(x.size for x in jax.tree.leaves(state.params))
    n_opt = sum(x.size for x in jax.tree.leaves(state.opt_state))
    assert 2 * n_adapters <= n_opt <= 2 * n_adapters + 4  # AdamW's two moments, no more
    assert {x.dtype for x in jax.tree.leaves(task.frozen)} == {jnp.dtype(base_dtype)}
    _, born = task.policy.init_lora(jax.random.key(task.config.run.seed), task.ctx.rule_pairs)
    jax.tree.map(np.testing.assert_array_equal, born, task.frozen)
    # The B factors left zero: the adapters changed the policy.
    bs = [v.get_value() for p, v in nnx.to_flat_state(state.params) if p[-1] == "lora_b"]
    assert bs and all(float(jnp.abs(b).max()) > 0 for b in bs)
    report = result.summary["lora"]
    assert report["trainable_params"] == n_adapters
    assert 0 < report["trainable_fraction"] < 0.5
    assert report["optimizer_state_bytes"] < report["full_optimizer_state_bytes"] / 4


def _check_exports(result, tmp_path):
    """<out>/model is the merged policy; <out>/adapter on the saved base is the same model
    in peft (both through transformers)."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    task, out = result.task, result.out_dir
    policy = nnx.merge(task.policy.graphdef, result.state.params, task.frozen)
    merged = merge_adapters(policy)
    reloaded = from_pretrained(out / "model", param_dtype="float32")
    np.testing.assert_array_equal(np.asarray(reloaded(IDS)), np.asarray(merged(IDS)))
    np.testing.assert_allclose(np.asarray(merged(IDS)), np.asarray(policy(IDS)), atol=5e-2)
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == task.lora.rank and adapter["task_type"] == "CAUSAL_LM"
    base = nnx.merge(task.policy.base_graphdef, task.frozen)
    save_pretrained(base, tmp_path / "base")
    hf_base = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "base", torch_dtype=torch.float32
    ).eval()
    peft_model = peft.PeftModel.from_pretrained(hf_base, str(out / "adapter")).eval()
    with torch.no_grad():
        got = peft_model(input_ids=torch.tensor(IDS, dtype=torch.long)).logits.float().numpy()
    np.testing.assert_allclose(got, np.asarray(policy(IDS)), atol=2e-3, rtol=1e-3)


def test_sft_lora_trains_the_adapters_alone_and_exports(tmp_path):
    result = _run(
        "sft_lora_tiny.yaml",
        tmp_path / "run",
        "optimizer.lr=3e-2",
        "lora.base_dtype=bfloat16",
        "data.max_length=48",
        "data.max_prompt_length=24",
        "tiny_data.eval_rows=16",
        "logging.eval_every=4",
    )
    _check_lora_run(result, jnp.bfloat16)
    losses = [r["loss"] for r in result.history]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert "eval_loss" in result.history[-1]
    _check_exports(result, tmp_path)


def test_multiobjective_dpo_lora_trains_the_adapters_alone_and_exports(tmp_path):
    result = _run(
        "multiobjective_dpo_tiny.yaml",
        tmp_path / "run",
        "optimizer.lr=3e-2",
        "lora.rank=4",
        "lora.targets=[q_proj,v_proj,o_proj,gate_proj,down_proj]",
        "logging.kl_ref=true",
    )
    _check_lora_run(result, jnp.float32)
    first, last = result.history[0], result.history[-1]
    # B = 0: the policy starts as the reference (the base with adapters off).
    np.testing.assert_allclose(first["loss"], np.log(2.0), rtol=1e-5)
    assert abs(first["kl_ref"]) < 1e-5 and last["kl_ref"] > 0
    assert last["loss"] < first["loss"]
    _check_exports(result, tmp_path)


def test_sft_lora_with_dropout_resumed_repeats_the_uninterrupted_run(tmp_path):
    """The checkpoint holds the adapters alone; the frozen base is rebuilt from the seed and
    the dropout masks from the step keys, so a resumed run repeats the uninterrupted one."""
    extra = ["lora.dropout=0.2", "optimizer.lr=3e-2", "data.max_length=48",
             "data.max_prompt_length=24", "tiny_data.eval_rows=0", "run.save_model=false",
             "checkpoint.every_steps=2"]  # fmt: skip

    def run(out, *more):
        cfg = load_train_config(CONFIGS / "sft_lora_tiny.yaml",
                                [*TINY_TRAIN, f"run.out_dir={out}", *extra, *more])  # fmt: skip
        return train(cfg, quiet=True)

    whole = run(tmp_path / "whole", "run.steps=4")
    run(tmp_path / "cut", "run.steps=2")
    resumed = run(tmp_path / "cut", "run.steps=4", "run.resume=true")
    assert resumed.step == 4 and [r["step"] for r in resumed.history][-2:] == [3, 4]
    assert [r["loss"] for r in resumed.history][-2:] == [r["loss"] for r in whole.history][-2:]
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, resumed.state.params),
                 jax.tree.map(np.asarray, whole.state.params))  # fmt: skip
