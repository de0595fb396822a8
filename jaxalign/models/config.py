"""Model configuration: one hashable frozen dataclass, convertible to and from HF ``config.json``.

The same :class:`ModelConfig` describes the Llama, Qwen2 and Qwen3 families; the
``model_type`` field only decides the HF names (and which options HF can express).
It is hashable so it can be a static argument of ``jax.jit`` and part of an NNX
``GraphDef``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
_DTYPES = ("float32", "bfloat16", "float16")
#: Remat policies of the scanned layers (see :func:`jaxalign.models.layers.remat_policy`).
REMAT_POLICIES = ("none", "full", "save_dots", "save_qkv_proj", "save_attention", "offload")
#: Attention kernels (see :func:`jaxalign.models.layers.attend`).
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn")

_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "LlamaForSequenceClassification"),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2ForSequenceClassification"),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3ForSequenceClassification"),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder-only transformer (Llama / Qwen2 / Qwen3 families)."""

    # HF family: "llama", "qwen2" or "qwen3"; decides checkpoint names and config keys.
    model_type: str = "llama"
    # Number of token ids (rows of the embedding table, columns of the LM head).
    vocab_size: int = 256
    # Width of the residual stream (d_model).
    hidden_size: int = 64
    # Width of the SwiGLU hidden layer.
    intermediate_size: int = 128
    # Number of decoder blocks.
    num_layers: int = 2
    # Number of query heads.
    num_heads: int = 4
    # Number of key/value heads (grouped-query attention); must divide num_heads.
    num_kv_heads: int = 2
    # Size of one attention head; HF default is hidden_size // num_heads.
    head_dim: int = 16
    # Epsilon inside every RMSNorm.
    rms_norm_eps: float = 1e-6
    # RoPE base wavelength θ (HF: rope_theta, or rope_parameters["rope_theta"]).
    rope_theta: float = 10000.0
    # RoPE variant: "default", "linear" (positions / factor) or "llama3" (frequency-band scaling).
    rope_type: str = "default"
    # RoPE scaling factor (linear and llama3); 1.0 means unscaled.
    rope_factor: float = 1.0
    # llama3 RoPE: wavelengths above original_max / low_freq_factor are divided by factor.
    rope_low_freq_factor: float = 1.0
    # llama3 RoPE: wavelengths below original_max / high_freq_factor are left unchanged.
    rope_high_freq_factor: float = 4.0
    # llama3 RoPE: the context length the model was pretrained with.
    rope_original_max_position: int = 8192
    # Longest sequence the checkpoint claims to support (metadata; not enforced).
    max_position_embeddings: int = 2048
    # Bias on the q/k/v projections (always on in Qwen2, attention_bias in Llama/Qwen3).
    qkv_bias: bool = False
    # Bias on the attention output projection (attention_bias in Llama/Qwen3; off in Qwen2).
    o_bias: bool = False
    # RMSNorm on each query/key head before RoPE (Qwen3).
    qk_norm: bool = False
    # Share the embedding table with the LM head.
    tie_word_embeddings: bool = False
    # Dtype of activations/computation: "float32", "bfloat16" or "float16".
    dtype: str = "float32"
    # Dtype in which parameters are stored.
    param_dtype: str = "float32"
    # Standard deviation of the normal initialiser for fresh (not loaded) weights.
    initializer_range: float = 0.02
    # Token ids, kept for HF round trips and generation defaults (None when unknown).
    bos_token_id: int | None = None
    # End-of-sequence ids (a tuple: Llama 3 checkpoints list several).
    eos_token_id: tuple[int, ...] = ()
    # Padding id; HF sequence classifiers need it to find the last real token.
    pad_token_id: int | None = None
    # --- How to compute (not part of the architecture; never written to HF config.json).
    # Rematerialisation of the scanned decoder layers in the backward pass: "none",
    # "full", "save_dots", "save_qkv_proj", "save_attention" or "offload" (GPU/TPU);
    # see jaxalign.models.layers.remat_policy.
    remat: str = "none"
    # Decoder layers per step of the layer scan: 1 keeps the compiled program (and compile
    # time) independent of depth; num_layers unrolls it fully, which runs small models on
    # CPU ~10 % faster at the cost of a program that grows with depth.
    scan_unroll: int = 1
    # Attention kernel: "auto" (cuDNN flash attention on GPU when possible, else XLA),
    # "xla" or "cudnn".
    attention: str = "auto"
    # Sequence positions per chunk when log-probs are computed from hidden states, so
    # the (batch, length, vocab) float32 logits never exist at once (0: one chunk).
    logprob_chunk_size: int = 256

    def __post_init__(self):
        def bad(field, value, expected):
            raise ValueError(f"ModelConfig.{field}={value!r} is invalid; expected {expected}")

        if self.model_type not in SUPPORTED_MODEL_TYPES:
            bad("model_type", self.model_type, f"one of {SUPPORTED_MODEL_TYPES}")
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value <= 0:
                bad(name, value, "a positive integer")
        if self.num_heads % self.num_kv_heads:
            bad("num_kv_heads", self.num_kv_heads, f"a divisor of num_heads={self.num_heads}")
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            bad("rope_type", self.rope_type, f"one of {SUPPORTED_ROPE_TYPES}")
        if not self.rope_theta > 0:
            bad("rope_theta", self.rope_theta, "> 0")
        if not self.rope_factor > 0:
            bad("rope_factor", self.rope_factor, "> 0")
        if self.rope_type == "llama3" and not (
            self.rope_high_freq_factor > self.rope_low_freq_factor > 0
        ):
            bad(
                "rope_high_freq_factor",
                self.rope_high_freq_factor,
                f"> rope_low_freq_factor={self.rope_low_freq_factor} > 0 for llama3 RoPE",
            )
        if self.remat not in REMAT_POLICIES:
            bad("remat", self.remat, f"one of {REMAT_POLICIES}")
        if not isinstance(self.scan_unroll, int | np.integer) or self.scan_unroll < 1:
            bad("scan_unroll", self.scan_unroll, "a positive integer (1: no unrolling)")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            bad("attention", self.attention, f"one of {ATTENTION_IMPLEMENTATIONS}")
        if not isinstance(self.logprob_chunk_size, int | np.integer) or self.logprob_chunk_size < 0:
            bad("logprob_chunk_size", self.logprob_chunk_size, "an integer >= 0 (0: one chunk)")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in _DTYPES:
                bad(name, getattr(self, name), f"one of {_DTYPES}")
        if not isinstance(self.eos_token_id, tuple):
            # Normalise lists/ints so the config stays hashable.
            eos = self.eos_token_id
            eos = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
            object.__setattr__(self, "eos_token_id", tuple(int(e) for e in eos))
        # Each family can only express some option combinations in its HF config.
        if self.model_type == "qwen2" and (not self.qkv_bias or self.o_bias or self.qk_norm):
            bad(
                "qkv_bias/o_bias/qk_norm",
                (self.qkv_bias, self.o_bias, self.qk_norm),
                "(True, False, False) for model_type='qwen2'",
            )
        if self.model_type in ("llama", "qwen3") and self.qkv_bias != self.o_bias:
            bad("o_bias", self.o_bias, f"equal to qkv_bias={self.qkv_bias} (HF attention_bias)")
        if self.model_type == "llama" and self.qk_norm:
            bad("qk_norm", True, "False for model_type='llama' (use 'qwen3')")
        if self.model_type == "qwen3" and not self.qk_norm:
            bad("qk_norm", False, "True for model_type='qwen3'")

    @property
    def compute_dtype(self) -> jnp.dtype:
        """Activation dtype as a numpy dtype."""
        return jnp.dtype(self.dtype)

    @property
    def weights_dtype(self) -> jnp.dtype:
        """Parameter dtype as a numpy dtype."""
        return jnp.dtype(self.param_dtype)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def rope_inv_freq(self) -> np.ndarray:
        """Inverse RoPE frequencies (head_dim // 2,), float32, as HF computes them."""
        dim = self.head_dim
        inv = 1.0 / (
            self.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim)
        )
        inv = inv.astype(np.float32)
        if self.rope_type == "linear":
            inv = inv / np.float32(self.rope_factor)
        elif self.rope_type == "llama3":
            factor, lo, hi = self.rope_factor, self.rope_low_freq_factor, self.rope_high_freq_factor
            old = self.rope_original_max_position
            low_wavelen, high_wavelen = old / lo, old / hi
            wavelen = 2 * math.pi / inv
            scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
            smooth = (old / wavelen - lo) / (hi - lo)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
            inv = np.where(medium, smoothed, scaled).astype(np.float32)
        return inv

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any], **overrides: Any) -> ModelConfig:
        """Builds a config from an HF ``config.json`` dict (transformers 4 or 5 layout).

        RoPE settings are read from transformers 5's ``rope_parameters`` dict when present,
        else from the legacy ``rope_theta`` / ``rope_scaling`` keys.

        Raises:
            ValueError: for a model type or option this implementation does not support.
        """
        hf = dict(hf)
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unsupported model_type={model_type!r} in HF config; "
                f"expected one of {SUPPORTED_MODEL_TYPES}"
            )
        unsupported = []
        if hf.get("hidden_act", "silu") != "silu":
            unsupported.append(f"hidden_act={hf['hidden_act']!r} (only 'silu')")
        if hf.get("mlp_bias", False):
            unsupported.append("mlp_bias=True")
        if hf.get("use_sliding_window", False):
            unsupported.append("use_sliding_window=True")
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        if any(isinstance(v, Mapping) for v in rope.values()):
            unsupported.append("per-layer-type rope_parameters")
            rope = {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in SUPPORTED_ROPE_TYPES:
            unsupported.append(f"rope_type={rope_type!r} (supported: {SUPPORTED_ROPE_TYPES})")
        partial = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
        if partial not in (None, 1, 1.0):
            unsupported.append(f"partial_rotary_factor={partial}")
        if unsupported:
            raise ValueError(
                f"unsupported HF {model_type} config options: {', '.join(unsupported)}"
            )

        num_heads = int(hf["num_attention_heads"])
        hidden = int(hf["hidden_size"])
        head_dim = hf.get("head_dim") or hidden // num_heads
        attention_bias = bool(hf.get("attention_bias", False))
        max_pos = int(hf.get("max_position_embeddings", 2048))
        kwargs = dict(
            model_type=model_type,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            rope_type=rope_type,
            rope_factor=float(rope.get("factor", 1.0)),
            rope_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
            rope_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
            rope_original_max_position=int(
                rope.get("original_max_position_embeddings")
                or hf.get("original_max_position_embeddings")
                or max_pos
            ),
            max_position_embeddings=max_pos,
            qkv_bias=True if model_type == "qwen2" else attention_bias,
            o_bias=False if model_type == "qwen2" else attention_bias,
            qk_norm=model_type == "qwen3",
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            initializer_range=float(hf.get("initializer_range", 0.02)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"),
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf_config(self, *, sequence_classification: bool = False, num_labels: int = 1) -> dict:
        """The HF ``config.json`` dict that transformers loads into the equivalent model.

        Writes transformers 5's ``rope_parameters`` plus the legacy ``rope_theta`` (and
        ``rope_scaling`` when scaled) so older readers agree.
        """
        arch = _ARCHITECTURES[self.model_type][int(sequence_classification)]
        rope: dict[str, Any] = {"rope_type": self.rope_type, "rope_theta": self.rope_theta}
        if self.rope_type in ("linear", "llama3"):
            rope["factor"] = self.rope_factor
        if self.rope_type == "llama3":
            rope["low_freq_factor"] = self.rope_low_freq_factor
            rope["high_freq_factor"] = self.rope_high_freq_factor
            rope["original_max_position_embeddings"] = self.rope_original_max_position
        eos = self.eos_token_id
        out: dict[str, Any] = {
            "architectures": [arch],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "attention_dropout": 0.0,
            "use_cache": True,
            "dtype": self.param_dtype,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": None if not eos else eos[0] if len(eos) == 1 else list(eos),
            "pad_token_id": self.pad_token_id,
        }
        if self.rope_type != "default":
            out["rope_scaling"] = dict(rope)
        if self.model_type in ("llama", "qwen3"):
            out["attention_bias"] = self.qkv_bias
        if self.model_type == "llama":
            out["mlp_bias"] = False
        if self.model_type == "qwen2":
            out["use_sliding_window"] = False
        if sequence_classification:
            out["num_labels"] = num_labels
            out["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
            out["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
        return out
