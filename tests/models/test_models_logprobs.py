"""sequence_logprobs: parity with HF log-softmax, padding-side invariance, jit + grad, checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hf_reference import hf_logits, padded_batch

from jaxalign.models import from_pretrained, sequence_logprobs


def _response_mask(mask, k=3):
    """The last k real tokens of each row are the response."""
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    cols = np.arange(mask.shape[1])[None, :]
    return ((cols > (last - k)[:, None]) & (cols <= last[:, None])).astype(np.int32)


def test_sequence_logprobs_match_hf_are_padding_safe_and_differentiable(hf_checkpoints):
    directory, hf = hf_checkpoints["llama_gqa"]
    model = from_pretrained(directory)
    tokens, mask = padded_batch(seed=8)
    response = _response_mask(mask)
    graphdef, state = nnx.split(model)

    @jax.jit
    def value_and_grad(state, tokens, response, mask):
        def total(state):
            out = sequence_logprobs(nnx.merge(graphdef, state), tokens, response, mask)
            return out.sequence.sum(), out

        return jax.value_and_grad(total, has_aux=True)(state)

    (_, out), grads = value_and_grad(state, tokens, response, mask)
    ref_logits = hf_logits(hf, tokens, mask).astype(np.float64)
    ref_logp = ref_logits - np.log(np.exp(ref_logits).sum(-1, keepdims=True))
    per_token = np.zeros(tokens.shape)
    per_token[:, 1:] = np.take_along_axis(ref_logp[:, :-1], tokens[:, 1:, None], -1)[..., 0]
    per_token *= response
    np.testing.assert_allclose(np.asarray(out.tokens), per_token, atol=1e-4)
    np.testing.assert_allclose(np.asarray(out.sequence), per_token.sum(1), atol=3e-4)
    assert (np.asarray(out.tokens)[response == 0] == 0).all()

    # Moving row 1's left padding to the right changes nothing (same shapes: no recompile).
    tokens_r, mask_r, response_r = tokens.copy(), mask.copy(), response.copy()
    for a, src in ((tokens_r, tokens), (mask_r, mask), (response_r, response)):
        a[1] = np.roll(src[1], -2)
    (_, moved), _ = value_and_grad(state, tokens_r, response_r, mask_r)
    np.testing.assert_allclose(np.asarray(moved.sequence), np.asarray(out.sequence), atol=1e-5)

    leaves = jax.tree.leaves(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


def test_sequence_logprobs_rejects_bad_masks(hf_checkpoints):
    model = from_pretrained(hf_checkpoints["llama_gqa"][0])
    tokens, mask = padded_batch(seed=9)
    response = _response_mask(mask)
    bad = response.copy()
    bad[0, 0] = 1
    with pytest.raises(ValueError, match=r"response_mask\[:, 0\] must be 0"):
        sequence_logprobs(model, tokens, bad, mask)
    bad = response.copy()
    bad[1, 1] = 1  # a left-padding position of row 1
    with pytest.raises(ValueError, match=r"marks padding tokens .* rows \[1\]"):
        sequence_logprobs(model, tokens, bad, mask)
    with pytest.raises(ValueError, match=r"response_mask\.shape"):
        sequence_logprobs(model, tokens, response[:, 1:], mask)
    with pytest.raises(ValueError, match="integer token ids"):
        sequence_logprobs(model, tokens.astype(np.float32), response, mask)
