"""LoRA dropout: the mask falls on the adapter's input only (``x W + (α/r)·(dropout(x) A) B``,
by hand); the base path never sees it (fresh adapters, B = 0: bitwise the base under any
mask); different keys draw different masks, one key the same; rate 0 or no key is bitwise the
dropout-free forward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.models import CausalLM, ModelConfig
from jaxalign.models.layers import Dense
from jaxalign.models.lora import LoRAConfig, adapted, with_dropout

CFG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=8, initializer_range=0.3)  # fmt: skip
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA = LoRAConfig(rank=4, alpha=8.0, targets=ALL, dropout=0.5)
TOKENS = np.asarray([[1, 5, 9, 13, 2, 7, 30, 11], [3, 4, 8, 60, 22, 1, 2, 3]], np.int32)


class _One(nnx.Module):
    def __init__(self):
        self.q_proj = Dense((8, 6), ("embed", "mlp"), CFG)


def _randomise_b(model, seed=1):
    key = jax.random.key(seed)
    for i, (_, node) in enumerate(nnx.iter_graph(model)):
        if isinstance(node, Dense) and getattr(node, "lora_b", None) is not None:
            b = node.lora_b.get_value()
            node.lora_b.set_value(0.3 * jax.random.normal(jax.random.fold_in(key, i), b.shape))
    return model


def test_dropout_masks_the_adapter_input_only_by_hand():
    one = adapted(_One(), LoRAConfig(rank=2, alpha=4.0, targets=("q_proj",)),
                  key=jax.random.key(0))  # fmt: skip
    dense = one.q_proj
    dense.kernel.set_value(jax.random.normal(jax.random.key(1), (8, 6)))
    dense.lora_b.set_value(jax.random.normal(jax.random.key(2), (2, 6)))
    x = jax.random.normal(jax.random.key(3), (5, 8))
    key = jax.random.key(4)
    got = with_dropout(nnx.clone(one), 0.25, key=key).q_proj(x)
    keep = jax.random.bernoulli(jax.random.fold_in(key, 0), 0.75, x.shape)
    w, a, b = dense.kernel.get_value(), dense.lora_a.get_value(), dense.lora_b.get_value()
    want = x @ w + 2.0 * ((jnp.where(keep, x / 0.75, 0.0) @ a) @ b)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    assert 0 < int(keep.sum()) < keep.size  # some entries dropped, some kept


def _logits(model, key, rate=LORA.dropout):
    return np.asarray(with_dropout(nnx.clone(model), rate, key=key)(TOKENS))


def test_dropout_never_touches_the_base_path():
    base = CausalLM.create(CFG, key=jax.random.key(0))
    fresh = adapted(nnx.clone(base), LORA, key=jax.random.key(1))  # B = 0
    want = np.asarray(base(TOKENS))
    for seed in range(3):
        np.testing.assert_array_equal(_logits(fresh, jax.random.key(seed)), want)


def test_dropout_masks_differ_by_key_and_rate_zero_is_bitwise_off():
    base = CausalLM.create(CFG, key=jax.random.key(0))
    model = _randomise_b(adapted(nnx.clone(base), LORA, key=jax.random.key(1)))
    plain = np.asarray(model(TOKENS))
    k1, k2 = jax.random.key(10), jax.random.key(11)
    a, b = _logits(model, k1), _logits(model, k2)
    assert np.abs(a - b).max() > 1e-3 and np.abs(a - plain).max() > 1e-3
    np.testing.assert_array_equal(_logits(model, k1), a)  # one key, one mask
    np.testing.assert_array_equal(_logits(model, k1, rate=0.0), plain)
    np.testing.assert_array_equal(_logits(model, None), plain)
    # Every stacked layer draws its own mask: the per-layer keys differ.
    q = with_dropout(nnx.clone(model), 0.5, key=k1).model.layers.self_attn.q_proj
    keys = np.asarray(q.lora_dropout_key.get_value())
    assert keys.shape == (CFG.num_layers, 2) and not np.array_equal(keys[0], keys[1])
