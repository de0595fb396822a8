"""The model at scale: scanned layers = a per-layer loop, every remat policy gives the same
values and gradients, chunked log-probs and KL = the full-logits versions, packed rows = one
row per sequence, bf16 stays bf16 where it should, and the compiled program does not grow
with depth."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxalign.models import CausalLM, ModelConfig, token_logprobs
from jaxalign.models.layers import remat_policy
from jaxalign.models.logprobs import chunked_kl, chunked_token_logprobs, project_logits
from jaxalign.models.transformer import (
    causal_padding_mask,
    positions_from_mask,
    positions_from_segments,
    segment_causal_mask,
)

CONFIG = ModelConfig(
    vocab_size=50,
    hidden_size=32,
    intermediate_size=48,
    num_layers=3,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    initializer_range=0.3,
)
B, L = 3, 11


def _batch(seed=0, length=L):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CONFIG.vocab_size, (B, length)).astype(np.int32)
    mask = np.ones((B, length), np.int32)
    mask[0, :3] = 0  # left padding
    mask[1, -2:] = 0  # right padding
    return jnp.asarray(tokens), jnp.asarray(mask)


@pytest.fixture(scope="module")
def model():
    return CausalLM.create(CONFIG, key=jax.random.key(1))


def _loop_logits(model, tokens, mask):
    """Reference forward: the decoder layers one by one (slices of the stacked parameters)."""
    trunk = model.model
    graphdef, stacked = nnx.split(trunk.layers)
    x = jnp.take(trunk.embed_tokens[...], tokens, axis=0)
    from jaxalign.models.layers import rope_tables

    rope = rope_tables(positions_from_mask(mask), jnp.asarray(trunk.inv_freq, jnp.float32))
    attention = causal_padding_mask(mask)
    for i in range(CONFIG.num_layers):
        layer = nnx.merge(graphdef, jax.tree.map(lambda p, i=i: p[i], stacked))
        x, _ = layer(x, rope, attention)
    return model.logits_from_hidden(trunk.norm(x))


def test_scanned_layers_equal_a_per_layer_loop(model):
    tokens, mask = _batch()
    got = np.asarray(model(tokens, attention_mask=mask))
    expected = np.asarray(_loop_logits(model, tokens, mask))
    real = np.asarray(mask) == 1
    np.testing.assert_allclose(got[real], expected[real], atol=1e-5, rtol=1e-5)
    # Teeth: the layers are not interchangeable (a scan in the wrong order would differ).
    flipped = nnx.clone(model)
    state = nnx.state(flipped.model.layers)
    nnx.update(flipped.model.layers, jax.tree.map(lambda p: p[::-1], state))
    assert np.abs(np.asarray(flipped(tokens, attention_mask=mask))[real] - got[real]).max() > 1e-3


@pytest.mark.parametrize("policy", ["full", "save_dots", "save_qkv_proj", "save_attention"])
def test_every_remat_policy_gives_the_same_loss_and_gradient(model, policy):
    tokens, mask = _batch(seed=1)
    state = nnx.state(model)

    def make(remat):
        g = nnx.split(CausalLM.create(CONFIG.replace(remat=remat), key=jax.random.key(0)))[0]

        @jax.jit
        def loss_and_grad(state):
            def loss(state):
                lp = nnx.merge(g, state).token_logprobs(tokens, attention_mask=mask)
                return jnp.sum(jnp.where(mask == 1, lp, 0.0))

            return jax.value_and_grad(loss)(state)

        return loss_and_grad

    base_loss, base_grad = make("none")(state)
    loss, grad = make(policy)(state)
    np.testing.assert_allclose(float(loss), float(base_loss), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(base_grad)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=1e-4)


def test_remat_policies_change_what_the_backward_pass_stores(model):
    """'full' keeps less than 'none' (measured from the compiled gradient's buffers)."""
    tokens, mask = _batch(length=64)
    tokens = jnp.tile(tokens, (4, 1))
    mask = jnp.tile(mask, (4, 1))

    def temp_bytes(remat):
        m = CausalLM.create(CONFIG.replace(remat=remat, num_layers=6), key=jax.random.key(0))
        g, state = nnx.split(m)

        def loss(state):
            return jnp.sum(nnx.merge(g, state).token_logprobs(tokens, attention_mask=mask))

        compiled = jax.jit(jax.grad(loss)).lower(state).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes("full") < 0.8 * temp_bytes("none")


def test_remat_policy_names():
    assert remat_policy("none") == (False, None)
    assert remat_policy("full")[0]
    with pytest.raises(ValueError, match="remat policy 'sometimes'"):
        remat_policy("sometimes")
    with pytest.raises(ValueError, match="remat='often'"):
        CONFIG.replace(remat="often")
    if jax.default_backend() == "cpu":
        with pytest.raises(ValueError, match="pinned host memory"):
            remat_policy("offload")


@pytest.mark.parametrize("chunk", [1, 4, 7, 0, 100])
def test_chunked_logprobs_equal_full_logits_in_value_and_gradient(model, chunk):
    tokens, mask = _batch(seed=2)
    hidden = model.model.encode(tokens, mask)
    weight, tied = model.head_weights()

    def full(hidden, weight):
        return token_logprobs(project_logits(hidden, weight, tied), tokens)

    def chunked(hidden, weight):
        return chunked_token_logprobs(hidden, weight, tied, tokens, chunk)

    np.testing.assert_allclose(
        np.asarray(chunked(hidden, weight)), np.asarray(full(hidden, weight)), atol=1e-6
    )
    cot = jax.random.normal(jax.random.key(0), (B, L))
    g_full = jax.grad(lambda h, w: jnp.sum(cot * full(h, w)), argnums=(0, 1))(hidden, weight)
    g_chunk = jax.grad(lambda h, w: jnp.sum(cot * chunked(h, w)), argnums=(0, 1))(hidden, weight)
    for a, b in zip(g_chunk, g_full):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    # The model method is the same function of the same hidden states.
    np.testing.assert_allclose(
        np.asarray(model.token_logprobs(tokens, attention_mask=mask)),
        np.asarray(full(hidden, weight)),
        atol=1e-5,
    )


def test_chunked_logprobs_never_hold_the_full_logits():
    """With chunks of 8 positions the compiled gradient's scratch stays far below one
    (batch, length, vocab) float32 logits tensor; without chunking it exceeds it."""
    b, n, e, v = 4, 256, 32, 8192
    hidden = jax.ShapeDtypeStruct((b, n, e), jnp.float32)
    weight = jax.ShapeDtypeStruct((e, v), jnp.float32)
    tokens = jnp.zeros((b, n), jnp.int32)
    logits_bytes = b * n * v * 4

    def temp_bytes(chunk):
        def loss(h, w):
            return jnp.sum(chunked_token_logprobs(h, w, False, tokens, chunk))

        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(hidden, weight).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes(8) < 0.25 * logits_bytes
    assert temp_bytes(0) > logits_bytes


def test_chunked_kl_equals_the_full_vocabulary_kl(model):
    tokens, mask = _batch(seed=3)
    other = CausalLM.create(CONFIG, key=jax.random.key(2))
    h, r = model.model.encode(tokens, mask), other.model.encode(tokens, mask)
    got = chunked_kl(h, model.head_weights(), r, other.head_weights(), 4)
    logp = jax.nn.log_softmax(model(tokens, attention_mask=mask), axis=-1)
    logq = jax.nn.log_softmax(other(tokens, attention_mask=mask), axis=-1)
    expected = jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)
    expected = jnp.pad(expected[:, :-1], ((0, 0), (1, 0)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)
    assert float(jnp.min(got)) > -1e-6 and float(jnp.max(got)) > 1e-3


def test_packed_rows_equal_one_row_per_sequence(model):
    rng = np.random.default_rng(4)
    lengths = [5, 3, 4]
    seqs = [rng.integers(0, CONFIG.vocab_size, n).astype(np.int32) for n in lengths]
    # Packed: one row [s0 s1 s2 pad pad], segment ids 1 2 3 0 0.
    width = sum(lengths) + 2
    packed = np.zeros((1, width), np.int32)
    segments = np.zeros((1, width), np.int32)
    start = 0
    for i, s in enumerate(seqs):
        packed[0, start : start + len(s)] = s
        segments[0, start : start + len(s)] = i + 1
        start += len(s)
    got = np.asarray(model.token_logprobs(jnp.asarray(packed), segment_ids=jnp.asarray(segments)))
    start = 0
    for s in seqs:
        alone = np.asarray(model.token_logprobs(jnp.asarray(s[None])))[0]
        # The first token of each segment has no prefix: compare the predicted ones.
        np.testing.assert_allclose(got[0, start + 1 : start + len(s)], alone[1:], atol=1e-5)
        start += len(s)
    np.testing.assert_array_equal(
        np.asarray(positions_from_segments(jnp.asarray(segments)))[0],
        [0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 0, 1],
    )
    mask = np.asarray(segment_causal_mask(jnp.asarray(segments)))[0]
    assert mask[6, 5] and not mask[5, 4] and not mask[4, 5] and not mask[13].any()
    # Teeth: without the segment mask the later sequences see the earlier ones.
    leaky = np.asarray(model.token_logprobs(jnp.asarray(packed)))
    assert np.abs(leaky[0, 6:8] - got[0, 6:8]).max() > 1e-3


def test_bf16_model_keeps_bf16_activations_and_float32_logprobs():
    config = CONFIG.replace(dtype="bfloat16", param_dtype="bfloat16")
    m = CausalLM.create(config, key=jax.random.key(0))
    tokens, mask = _batch()
    assert m.model.encode(tokens, mask).dtype == jnp.bfloat16
    lp = m.token_logprobs(tokens, attention_mask=mask)
    assert lp.dtype == jnp.float32
    f32 = CausalLM.create(CONFIG, key=jax.random.key(0))
    nnx.update(f32, jax.tree.map(lambda p: p.astype(jnp.float32), nnx.state(m)))
    np.testing.assert_allclose(
        np.asarray(lp), np.asarray(f32.token_logprobs(tokens, attention_mask=mask)), atol=0.15
    )


def test_compiled_program_does_not_grow_with_depth():
    """The scanned trunk lowers to the same program for 2 and 12 layers (up to the layer
    count in shapes); an unrolled loop would repeat the layer 12 times."""

    def hlo_lines(num_layers):
        m = CausalLM.create(CONFIG.replace(num_layers=num_layers), key=jax.random.key(0))
        g, state = nnx.split(m)
        tokens = jnp.zeros((2, 8), jnp.int32)

        def loss(state):
            return jnp.sum(nnx.merge(g, state).token_logprobs(tokens))

        return len(jax.jit(jax.grad(loss)).lower(state).as_text().splitlines())

    assert abs(hlo_lines(12) - hlo_lines(2)) <= 0.02 * hlo_lines(2)
