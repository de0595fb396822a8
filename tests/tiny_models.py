"""Tiny model configurations shared by the model, data and training tests.

One layer, two heads of width 16, hidden size 32: a forward pass, a few generation steps or
a training step compile and run in seconds on CPU.
"""

from __future__ import annotations

from jaxalign.models import ModelConfig

_SHAPE = dict(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, head_dim=16)


def tiny_model_config(
    vocab_size: int = 3, *, num_kv_heads: int = 1, initializer_range: float = 0.5, **changes
) -> ModelConfig:
    """The tiny shape over ``vocab_size`` tokens (the 3-letter testbed by default).

    The large ``initializer_range`` makes a random model's next-token distributions far from
    uniform, so sampling and log-probability tests see distinct probabilities.
    """
    fields = dict(_SHAPE, num_kv_heads=num_kv_heads, initializer_range=initializer_range)
    return ModelConfig(vocab_size=vocab_size, **{**fields, **changes})


def tiny_hf_model_config() -> ModelConfig:
    """The tiny shape over the 384 tokens of ``build_tiny_tokenizer``, with the default
    initialisation: the checkpoint the HF-template runs load."""
    return ModelConfig(vocab_size=384, num_kv_heads=2, **_SHAPE)
