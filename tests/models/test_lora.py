"""LoRA adapters: B = 0 leaves the model unchanged; the adapted forward is the model with
kernels ``W + (α/r)·A B`` built by hand; the merged export loads in transformers and the
PEFT-format adapter loads in ``peft`` with the same logits; the trainable fraction and
optimizer-state bytes come from shapes alone."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxalign.models import CausalLM, ModelConfig, save_pretrained
from jaxalign.models.layers import Dense
from jaxalign.models.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoRAConfig,
    LoRAParam,
    adapted,
    lora_report,
    merge_adapters,
    save_adapter,
)

CFG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=8, initializer_range=0.3)  # fmt: skip
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA = LoRAConfig(rank=4, alpha=8.0, targets=ALL)
TOKENS = np.asarray([[1, 5, 9, 13, 2, 7, 30, 11], [3, 4, 8, 60, 22, 0, 0, 0]], np.int32)
MASK = (TOKENS > 0).astype(np.int32) | (np.arange(8)[None] < 5)


def _models(lora=LORA, seed=0):
    base = CausalLM.create(CFG, key=jax.random.key(seed))
    model = adapted(nnx.clone(base), lora, key=jax.random.key(seed + 100))
    return base, model


def _randomise_b(model, seed=1):
    """Non-zero B (as after training), so the adapters change the outputs."""
    key = jax.random.key(seed)
    for i, (_, node) in enumerate(nnx.iter_graph(model)):
        if isinstance(node, Dense) and getattr(node, "lora_b", None) is not None:
            b = node.lora_b.get_value()
            node.lora_b.set_value(0.2 * jax.random.normal(jax.random.fold_in(key, i), b.shape))
    return model


def _logits(model):
    return np.asarray(model(jnp.asarray(TOKENS), attention_mask=jnp.asarray(MASK)))


@pytest.mark.parametrize(
    "changes, key",
    [({"rank": 0}, "lora.rank"), ({"alpha": 0.0}, "lora.alpha"), ({"dropout": 1.0}, "lora.dropout"),
     ({"targets": ("q_proj", "qkv")}, "lora.targets"), ({"targets": ()}, "lora.targets"),
     ({"base_dtype": "int8"}, "lora.base_dtype")],
)  # fmt: skip
def test_bad_lora_config_names_the_key(changes, key):
    with pytest.raises(ValueError, match=key):
        LoRAConfig(**{"rank": 2, **changes})


def test_adapters_are_stacked_per_layer_and_fresh_ones_change_nothing():
    base, model = _models()
    attn = model.model.layers.self_attn
    # A: (layers, in..., r), B: (layers, r, out...), like the stacked kernels.
    assert attn.q_proj.lora_a.get_value().shape == (2, 32, 4)
    assert attn.q_proj.lora_b.get_value().shape == (2, 4, 4, 8)
    assert attn.o_proj.lora_a.get_value().shape == (2, 4, 8, 4)
    assert attn.o_proj.lora_b.get_value().shape == (2, 4, 32)
    assert float(jnp.abs(attn.q_proj.lora_a.get_value()).max()) > 0
    # B = 0 at init: the adapted model is exactly the base model.
    np.testing.assert_array_equal(_logits(model), _logits(base))


def test_adapted_forward_is_the_hand_merged_kernel():
    """y = x W + (α/r)·x A B: compare with a plain model whose kernels are merged by hand."""
    base, model = _models()
    _randomise_b(model)
    by_hand = nnx.clone(base)
    adapted_dense = {p: d for p, d in nnx.iter_graph(model) if isinstance(d, Dense)}
    for path, dense in nnx.iter_graph(by_hand):
        if not isinstance(dense, Dense) or str(path[-1]) not in ALL:
            continue
        src = adapted_dense[path]
        a, b = np.asarray(src.lora_a.get_value()), np.asarray(src.lora_b.get_value())
        n_in = dense.n_in
        a2 = a.reshape(a.shape[0], -1, a.shape[-1])  # (L, in, r)
        b2 = b.reshape(b.shape[0], b.shape[1], -1)  # (L, r, out)
        delta = (8.0 / 4) * np.einsum("lir,lro->lio", a2, b2)
        w = np.asarray(dense.kernel.get_value())
        dense.kernel.set_value(jnp.asarray(w + delta.reshape(w.shape)))
        assert n_in in (1, 2)
    out = _logits(model)
    assert np.abs(out - _logits(base)).max() > 1e-2  # the adapters matter
    np.testing.assert_allclose(out, _logits(by_hand), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out, _logits(merge_adapters(model)), atol=1e-5, rtol=1e-5)


def test_bf16_base_keeps_float32_adapters():
    _, model = _models(LoRAConfig(rank=2, base_dtype="bfloat16"))
    params = nnx.state(model, nnx.Param)
    for path, var in nnx.to_flat_state(params):
        want = jnp.float32 if isinstance(var, LoRAParam) else jnp.bfloat16
        assert var.get_value().dtype == want, path


def _hf_logits(hf_model):
    import torch

    with torch.no_grad():
        out = hf_model(torch.tensor(TOKENS, dtype=torch.long),
                       attention_mask=torch.tensor(MASK, dtype=torch.long))  # fmt: skip
    return out.logits.float().numpy()


def _masked_close(a, b, atol=1e-4):
    real = MASK.astype(bool)
    np.testing.assert_allclose(a[real], b[real], atol=atol, rtol=1e-4)


def test_merged_export_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    _, model = _models()
    _randomise_b(model)
    save_pretrained(merge_adapters(model), tmp_path / "model")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    _masked_close(_hf_logits(hf), _logits(model))


def test_peft_adapter_loads_on_the_hf_base(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    base, model = _models()
    _randomise_b(model)
    save_pretrained(base, tmp_path / "base")
    save_adapter(model, LORA, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "base"))
    config = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8.0 and config["peft_type"] == "LORA"
    assert (tmp_path / "adapter" / ADAPTER_WEIGHTS).exists()
    hf_base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    before = _hf_logits(hf_base)
    _masked_close(before, _logits(base))
    peft_model = peft.PeftModel.from_pretrained(hf_base, str(tmp_path / "adapter")).eval()
    _masked_close(_hf_logits(peft_model), _logits(model))
    assert np.abs(_hf_logits(peft_model) - before).max() > 1e-2  # the adapters were applied


QWEN_05B = ModelConfig(model_type="qwen2", vocab_size=151936, hidden_size=896,
                       intermediate_size=4864, num_layers=24, num_heads=14, num_kv_heads=2,
                       head_dim=64, qkv_bias=True, tie_word_embeddings=True)  # fmt: skip


@pytest.mark.parametrize("name, config", [("tiny", CFG), ("qwen2.5-0.5b", QWEN_05B)])
def test_lora_report_shapes_only(name, config):
    """Trainable fraction and AdamW state bytes, full vs LoRA (rank 8, all projections)."""
    tx = optax.adamw(1e-3)
    full = lora_report(config, None, tx)
    lora = lora_report(config, LoRAConfig(rank=8, targets=ALL), tx)
    print(f"\n{name}: full fine-tune {full['trainable_params']:,} params, optimizer state "
          f"{full['optimizer_state_bytes']:,} B; LoRA r=8 {lora['trainable_params']:,} params "
          f"({100 * lora['trainable_fraction']:.3f}%), optimizer state "
          f"{lora['optimizer_state_bytes']:,} B")  # fmt: skip
    assert full["trainable_fraction"] == 1.0
    # AdamW keeps two float32 moments per trainable parameter (+ a step counter).
    assert 8 * full["trainable_params"] <= full["optimizer_state_bytes"]
    assert 8 * lora["trainable_params"] <= lora["optimizer_state_bytes"]
    assert lora["optimizer_state_bytes"] < 8 * lora["trainable_params"] + 64
    # r·(in + out) per projection and layer.
    c = config
    e, q, kv, m = (
        c.hidden_size,
        c.num_heads * c.head_dim,
        c.num_kv_heads * c.head_dim,
        c.intermediate_size,
    )
    per_layer = (e + q) + 2 * (e + kv) + (q + e) + 2 * (e + m) + (m + e)
    assert lora["trainable_params"] == 8 * per_layer * c.num_layers
    if name == "qwen2.5-0.5b":
        assert 4.9e8 < full["total_params"] < 5.0e8  # 494M parameters
        assert lora["trainable_fraction"] < 0.02
