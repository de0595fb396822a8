"""Tiny HF reference models for the model tests (torch + transformers on CPU, test-only)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # test-only reference (the [torch-parity] extra)
transformers = pytest.importorskip("transformers")

VOCAB = 128
PAD, BOS, EOS = 0, 1, 2
_BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    initializer_range=0.3,  # large enough that logits are far from uniform (clear argmax)
    bos_token_id=BOS,
    eos_token_id=EOS,
    pad_token_id=PAD,
    max_position_embeddings=64,
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # Small so that the three llama3 frequency bands all occur at head_dim 16.
    "original_max_position_embeddings": 16,
}
# name -> (HF config class name, overrides); one tiny model per family/option combination.
FAMILIES = {
    "llama_gqa": (
        "LlamaConfig",
        dict(num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 5000.0}),
    ),
    "llama_tied_bias_llama3rope": (
        "LlamaConfig",
        dict(
            num_key_value_heads=1,
            tie_word_embeddings=True,
            attention_bias=True,
            rope_parameters=LLAMA3_ROPE,
        ),
    ),
    "qwen2_qkvbias_tied": (
        "Qwen2Config",
        dict(
            num_key_value_heads=2,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        ),
    ),
    "qwen3_qknorm_linearrope": (
        "Qwen3Config",
        dict(
            num_key_value_heads=2,
            head_dim=32,
            rope_parameters={"rope_type": "linear", "rope_theta": 1e6, "factor": 2.0},
        ),
    ),
}


def hf_config(name: str, **overrides):
    cls_name, kwargs = FAMILIES[name]
    return getattr(transformers, cls_name)(**{**_BASE, **kwargs, **overrides})


def randomise_norms_and_biases(model, seed: int) -> None:
    """HF initialises norms to 1 and biases to 0; perturb them so parity tests see them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def make_hf_model(name: str, seed: int = 0, cls=None, **overrides):
    torch.manual_seed(seed)
    config = hf_config(name, **overrides)
    cls = cls or transformers.AutoModelForCausalLM
    model = cls.from_config(config).eval()
    randomise_norms_and_biases(model, seed)
    return model


def padded_batch(seed: int = 0, length: int = 9):
    """Tokens and mask for 3 rows: unpadded, left-padded by 2, right-padded by 3."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, VOCAB, size=(3, length))
    mask = np.ones((3, length), np.int32)
    mask[1, :2] = 0
    mask[2, -3:] = 0
    return np.where(mask == 1, tokens, PAD).astype(np.int32), mask


def hf_logits(model, tokens, mask):
    """HF logits with positions counted over real tokens (as jaxalign does)."""
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(tokens, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
            position_ids=torch.as_tensor(positions, dtype=torch.long),
        )
    return out.logits.float().numpy()


def max_diff_at_real_tokens(a, b, mask) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))[np.asarray(mask).astype(bool)]))
