"""ModelConfig: HF config round trips, RoPE parsing (transformers 4 and 5 layouts), validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hf_reference import FAMILIES, hf_config

from jaxalign.models import ModelConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_hf_config_round_trip(name):
    hf = hf_config(name)
    config = ModelConfig.from_hf_config(hf.to_dict())
    assert hash(config) == hash(ModelConfig.from_hf_config(hf.to_dict()))  # hashable, static
    again = ModelConfig.from_hf_config(config.to_hf_config())
    assert again == config
    # transformers accepts what we write and reads back the same architecture.
    reread = transformers.AutoConfig.for_model(**config.to_hf_config())
    assert ModelConfig.from_hf_config(reread.to_dict()) == config


def test_family_specific_options():
    llama3 = ModelConfig.from_hf_config(hf_config("llama_tied_bias_llama3rope").to_dict())
    assert (llama3.rope_type, llama3.rope_factor, llama3.rope_original_max_position) == (
        "llama3",
        8.0,
        16,
    )
    assert (
        llama3.qkv_bias
        and llama3.o_bias
        and llama3.tie_word_embeddings
        and llama3.num_kv_heads == 1
    )
    qwen2 = ModelConfig.from_hf_config(hf_config("qwen2_qkvbias_tied").to_dict())
    assert qwen2.qkv_bias and not qwen2.o_bias and qwen2.rope_theta == 1e6
    qwen3 = ModelConfig.from_hf_config(hf_config("qwen3_qknorm_linearrope").to_dict())
    assert qwen3.qk_norm and qwen3.head_dim == 32 and qwen3.rope_type == "linear"


def test_legacy_rope_keys_are_read():
    base = ModelConfig().to_hf_config()
    del base["rope_parameters"]
    legacy = dict(base, rope_theta=1234.0, rope_scaling={"type": "linear", "factor": 3.0})
    config = ModelConfig.from_hf_config(legacy)
    assert (config.rope_theta, config.rope_type, config.rope_factor) == (1234.0, "linear", 3.0)


@pytest.mark.parametrize("rope_type", ["default", "linear", "llama3"])
def test_rope_frequencies_match_transformers(rope_type):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {"rope_type": rope_type, "rope_theta": 500000.0}
    if rope_type != "default":
        rope["factor"] = 8.0
    if rope_type == "llama3":
        rope |= {
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        }
    hf = transformers.LlamaConfig(
        hidden_size=64, num_attention_heads=2, rope_parameters=rope, max_position_embeddings=64
    )
    if rope_type == "default":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        expected, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(hf)
    else:
        expected, _ = ROPE_INIT_FUNCTIONS[rope_type](hf, "cpu")
    ours = ModelConfig.from_hf_config(hf.to_dict()).rope_inv_freq()
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-6)


def test_unsupported_hf_configs_are_rejected_by_name():
    base = ModelConfig().to_hf_config()
    with pytest.raises(ValueError, match="unsupported model_type='gpt2'"):
        ModelConfig.from_hf_config(dict(base, model_type="gpt2"))
    with pytest.raises(ValueError, match="rope_type='yarn'"):
        ModelConfig.from_hf_config(dict(base, rope_parameters={"rope_type": "yarn", "factor": 2.0}))
    with pytest.raises(ValueError, match="mlp_bias"):
        ModelConfig.from_hf_config(dict(base, mlp_bias=True))


def test_invalid_configs_name_the_field():
    with pytest.raises(ValueError, match="num_kv_heads=3"):
        ModelConfig(num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="qwen2"):
        ModelConfig(model_type="qwen2", qkv_bias=False)
    with pytest.raises(ValueError, match="dtype='float64'"):
        ModelConfig(dtype="float64")
    assert ModelConfig(eos_token_id=[5, 6]).eos_token_id == (5, 6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().vocab_size = 3  # type: ignore[misc]
