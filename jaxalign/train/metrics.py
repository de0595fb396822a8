"""Step metrics on the host: model FLOPs and the measured matmul peak.

The JSONL helpers (``JsonlWriter``, ``read_jsonl``, ``truncate_jsonl``) live in
:mod:`jaxalign.train.metric_writer` and are re-exported here for the existing callers.

MFU (model FLOPs utilisation) = model FLOPs per step / step time / peak FLOP/s.
Model FLOPs of a DPO step over a padded ``(B, L)`` batch of pairs (2B sequences):

* policy forward + backward: ``6·N·T`` plus attention ``12·n_layers·L·H·d_h`` per token;
* reference forward: ``2·N·T`` plus attention ``4·n_layers·L·H·d_h`` per token;

with ``T = 2BL`` tokens and ``N`` the matmul parameters (everything but the
embedding table and norms; the LM head counts, also when tied).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.models import ModelConfig
from jaxalign.train.metric_writer import JsonlWriter, read_jsonl, truncate_jsonl


def matmul_params(config: ModelConfig) -> int:
    """Parameters that take part in a matmul per token (LM head included, embedding not)."""
    c = config
    attn = c.hidden_size * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    return c.num_layers * (attn + mlp) + c.hidden_size * c.vocab_size


def dpo_step_flops(
    config: ModelConfig, batch_size: float, length: int, *, reference_forward: bool = True
) -> float:
    """Model FLOPs of one DPO step on ``batch_size`` pairs padded to ``length`` tokens
    (without the reference forward pass when its log-probs come precomputed)."""
    tokens = 2 * batch_size * length
    n = matmul_params(config)
    attn_fwd = 4 * config.num_layers * length * config.num_heads * config.head_dim
    per_token = 6 * n + 3 * attn_fwd
    if reference_forward:
        per_token += 2 * n + attn_fwd
    return float(per_token) * tokens


def measure_matmul_peak(
    size: int = 1024, *, dtype: str = "float32", repeats: int = 5, device=None
) -> float:
    """FLOP/s of a jitted ``size × size`` matmul on one device (best of ``repeats``).

    A practical "peak" for MFU on machines without a published number (CPUs).
    """
    device = jax.local_devices()[0] if device is None else device
    key = jax.random.key(0)
    a = jax.device_put(jax.random.normal(key, (size, size), jnp.dtype(dtype)), device)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


__all__ = [
    "JsonlWriter",
    "dpo_step_flops",
    "matmul_params",
    "measure_matmul_peak",
    "read_jsonl",
    "truncate_jsonl",
]
