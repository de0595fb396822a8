"""LoRA for the reward and preference models: adapters on the trunk, the new heads trained
whole, the trunk's base frozen (bitwise as born); the reward model's export merges the
adapters into a ``*ForSequenceClassification`` checkpoint that transformers loads, and its
PEFT adapter (``SEQ_CLS``, the head as ``modules_to_save``) gives the same rewards in peft."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tiny_models import TINY_TRAIN

from jaxalign.experiment import repo_root
from jaxalign.models import preference_model_from_pretrained, save_pretrained
from jaxalign.models.lora import LoRAParam, merge_adapters
from jaxalign.train import load_train_config, train

CONFIGS = repo_root() / "configs" / "train"
LORA = ["lora.rank=4", "lora.alpha=8",
        "lora.targets=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"]  # fmt: skip


def _run(config, *overrides):
    cfg = load_train_config(
        CONFIGS / config, [*overrides, "checkpoint.enabled=false", "logging.progress_bar=false"]
    )
    return train(cfg, quiet=True)


def _check_split(result, heads):
    """The state holds the adapters and the heads, nothing else; the trunk is frozen."""
    task, params = result.task, result.state.params
    flat = nnx.to_flat_state(params)
    head_paths = {p for p, v in flat if not isinstance(v, LoRAParam)}
    assert head_paths and all(p[0] in heads for p in head_paths)
    assert all(isinstance(v, LoRAParam) or p[0] in heads for p, v in flat)
    assert not any(p[0] in heads for p, _ in nnx.to_flat_state(task.frozen))
    report = result.summary["lora"]
    n = sum(x.size for x in jax.tree.leaves(params))
    assert report["trainable_params"] == n < report["full_trainable_params"] / 4
    assert report["optimizer_state_bytes"] < report["full_optimizer_state_bytes"] / 4


def _frozen_is_born(result):
    """The frozen trunk trained on is bitwise what init makes of the run seed."""
    task = result.task
    trained_on = jax.tree.map(np.asarray, task.frozen)
    task.init(jax.random.key(task.config.run.seed))  # rebuilds task.frozen from the seed
    jax.tree.map(np.testing.assert_array_equal, trained_on, jax.tree.map(np.asarray, task.frozen))


def test_reward_model_lora_trains_trunk_adapters_and_head_and_exports(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    result = _run("reward_model_tiny.yaml", *TINY_TRAIN, *LORA, f"run.out_dir={tmp_path / 'run'}",
                  "data.max_length=48", "data.max_prompt_length=24", "tiny_data.eval_rows=32",
                  "logging.eval_every=4", "run.steps=8", "optimizer.lr=1e-2",
                  "lora.base_dtype=bfloat16")  # fmt: skip
    assert result.status == "completed"
    _check_split(result, ("score",))
    losses = [r["loss"] for r in result.history]
    assert np.all(np.isfinite(losses)) and np.mean(losses[-3:]) < losses[0]
    assert "eval_accuracy" in result.history[-1]
    task, params = result.task, result.state.params
    assert params["score"]["kernel"].get_value().dtype == jnp.float32  # the head stays f32
    assert {x.dtype for x in jax.tree.leaves(task.frozen)} == {jnp.dtype(jnp.bfloat16)}
    ids = np.random.default_rng(0).integers(3, 300, (2, 12)).astype(np.int32)
    model = nnx.merge(task.rm.graphdef, params, task.frozen)
    want = np.asarray(merge_adapters(model)(ids))[:, 0]
    np.testing.assert_allclose(want, np.asarray(model(ids))[:, 0], atol=5e-2)
    out = result.out_dir
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        out / "model", torch_dtype=torch.float32
    ).eval()
    with torch.no_grad():
        got = hf(input_ids=torch.tensor(ids, dtype=torch.long)).logits.float().numpy()[:, 0]
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-3)
    # PEFT: the adapters and the trained head on the base trunk (whose head is scrambled:
    # modules_to_save must replace it).
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and adapter["modules_to_save"] == ["score"]
    off = jax.tree.map(lambda v: -v if v.ndim == 2 and v.shape[-1] == 1 else 0 * v, params)
    base = merge_adapters(nnx.merge(task.rm.graphdef, off, task.frozen))
    save_pretrained(base, tmp_path / "base", extra_config={"pad_token_id": 0})
    hf_base = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "base", torch_dtype=torch.float32
    ).eval()
    peft_model = peft.PeftModel.from_pretrained(hf_base, str(out / "adapter")).eval()
    with torch.no_grad():
        got = peft_model(input_ids=torch.tensor(ids, dtype=torch.long)).logits.float().numpy()
    np.testing.assert_allclose(got[:, 0], np.asarray(model(ids))[:, 0], atol=2e-3, rtol=1e-3)
    _frozen_is_born(result)


def test_preference_model_lora_learns_the_testbed_preference_and_exports(tmp_path):
    result = _run("preference_model_testbed.yaml", *LORA, f"run.out_dir={tmp_path / 'run'}",
                  "run.steps=40", "logging.eval_every=20")  # fmt: skip
    assert result.status == "completed"
    _check_split(result, ("reward", "embedding"))
    errors = [r["eval_mean_abs_error"] for r in result.history if "eval_mean_abs_error" in r]
    first = result.history[0]["loss"]
    assert errors and result.history[-1]["loss"] < first
    task = result.task
    model = nnx.merge(task.pm.graphdef, result.state.params, task.frozen)
    saved = preference_model_from_pretrained(result.out_dir / "model", rank=task.pm.rank)
    ids = np.random.default_rng(0).integers(0, 3, (4, 3)).astype(np.int32)
    np.testing.assert_allclose(np.asarray(saved.logit(ids, ids[::-1])),
                               np.asarray(model.logit(ids, ids[::-1])), atol=1e-4)  # fmt: skip
    _frozen_is_born(result)
