"""generate: EOS handling, log-prob bookkeeping, top-p and temperature semantics."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hf_reference import PAD, padded_batch

from jaxalign.models import from_pretrained, generate, logits, token_logprobs

NEW = 6


@pytest.fixture(scope="module")
def model(hf_checkpoints):
    return from_pretrained(hf_checkpoints["llama_gqa"][0])


def _prompts():
    return padded_batch(seed=2, length=5)  # same shapes as the parity test: compiled once


def test_rows_stop_at_eos_and_are_padded_after(model):
    tokens, mask = _prompts()
    key = jax.random.key(0)
    free = generate(
        model,
        tokens,
        prompt_mask=mask,
        key=key,
        max_new_tokens=NEW,
        temperature=0.0,
        eos_token_id=[],
    )
    free_tokens = np.asarray(free.tokens)
    assert np.asarray(free.response_mask).all()
    eos = int(free_tokens[0, 2])
    stopped = generate(
        model,
        tokens,
        prompt_mask=mask,
        key=key,
        max_new_tokens=NEW,
        temperature=0.0,
        eos_token_id=eos,
    )
    got, alive = np.asarray(stopped.tokens), np.asarray(stopped.response_mask)
    for row in range(tokens.shape[0]):
        hits = np.flatnonzero(free_tokens[row] == eos)
        end = hits[0] + 1 if hits.size else NEW
        np.testing.assert_array_equal(got[row, :end], free_tokens[row, :end])
        assert alive[row, :end].all() and not alive[row, end:].any()
        assert (got[row, end:] == PAD).all()
        assert (np.asarray(stopped.logprobs)[row, end:] == 0).all()
    assert not alive[0, 3:].any()  # row 0 really stopped early


def test_logprobs_are_the_models_and_sampling_logprobs_follow_the_sampler(model):
    tokens, mask = _prompts()
    out = generate(
        model,
        tokens,
        prompt_mask=mask,
        key=jax.random.key(1),
        max_new_tokens=NEW,
        temperature=1.0,
        eos_token_id=[],
    )
    np.testing.assert_allclose(
        np.asarray(out.sampling_logprobs), np.asarray(out.logprobs), atol=1e-5
    )
    recomputed = token_logprobs(logits(model, out.sequences, out.attention_mask), out.sequences)
    np.testing.assert_allclose(
        np.asarray(recomputed)[:, tokens.shape[1] :], np.asarray(out.logprobs), atol=1e-4
    )
    again = generate(
        model,
        tokens,
        prompt_mask=mask,
        key=jax.random.key(1),
        max_new_tokens=NEW,
        temperature=1.0,
        eos_token_id=[],
    )
    np.testing.assert_array_equal(np.asarray(again.tokens), np.asarray(out.tokens))
    other = generate(
        model,
        tokens,
        prompt_mask=mask,
        key=jax.random.key(2),
        max_new_tokens=NEW,
        temperature=1.0,
        eos_token_id=[],
    )
    assert (np.asarray(other.tokens) != np.asarray(out.tokens)).any()


def test_first_token_frequencies_follow_the_tempered_nucleus(model):
    n, temperature, top_p = 4096, 0.7, 0.8
    prompt = np.tile(np.array([[5, 17, 33, 9]], np.int32), (n, 1))
    out = generate(
        model, prompt, key=jax.random.key(4), max_new_tokens=1, temperature=temperature, top_p=top_p
    )
    counts = np.bincount(np.asarray(out.tokens)[:, 0], minlength=model.config.vocab_size)
    freq = counts / n
    row = np.asarray(logits(model, prompt[:1]))[0, -1].astype(np.float64)

    def target(t, p):
        probs = np.exp(row / t - np.max(row / t))
        probs /= probs.sum()
        order = np.argsort(-probs)
        before = np.cumsum(probs[order]) - probs[order]
        keep = np.zeros_like(probs, bool)
        keep[order[before < p]] = True  # smallest top set reaching mass p
        return np.where(keep, probs, 0.0) / probs[keep].sum(), keep

    expected, keep = target(temperature, top_p)
    assert 1 < keep.sum() < model.config.vocab_size  # the nucleus really truncates
    assert (freq[~keep] == 0).all()
    sigma = np.sqrt(expected * (1 - expected) / n) + 1e-3
    assert (np.abs(freq - expected) <= 5 * sigma).all()
    # The recorded sampling log-probs are those of the truncated, tempered distribution.
    np.testing.assert_allclose(
        np.asarray(out.sampling_logprobs)[:, 0],
        np.log(expected[np.asarray(out.tokens)[:, 0]]),
        atol=1e-4,
    )
    # Teeth: neither the untempered nor the untruncated distribution passes the same test.
    for t, p in ((1.0, top_p), (temperature, 1.0)):
        other, _ = target(t, p)
        assert (np.abs(freq - other) > 5 * sigma).any()


def test_generate_validates_arguments(model):
    tokens, mask = _prompts()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate(model, tokens, key=key, max_new_tokens=2, temperature=-1.0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        generate(model, tokens, key=key, max_new_tokens=2, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, tokens, key=key, max_new_tokens=0)
    empty = mask.copy()
    empty[0] = 0
    with pytest.raises(ValueError, match="at least one real token"):
        generate(model, tokens, prompt_mask=empty, key=key, max_new_tokens=2)
