"""Logit and greedy-decoding parity with HF transformers for every supported family."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hf_reference import EOS, FAMILIES, PAD, hf_logits, max_diff_at_real_tokens, padded_batch

from jaxalign.models import CausalLM, from_pretrained, generate, logits, save_pretrained

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

TOL = 1e-4


@pytest.mark.parametrize("name", list(FAMILIES))
def test_logits_match_hf_with_left_and_right_padding(name, hf_checkpoints):
    directory, hf = hf_checkpoints[name]
    model = from_pretrained(directory)
    assert isinstance(model, CausalLM)
    tokens, mask = padded_batch(seed=1)
    ours = logits(model, tokens, mask)
    diff = max_diff_at_real_tokens(ours, hf_logits(hf, tokens, mask), mask)
    print(f"{name}: max |logit diff| = {diff:.2e}")
    assert diff <= TOL
    # Padding side must not change a real token's logits: row 1 left- vs right-padded
    # (same shapes, so no recompilation).
    tokens_r, mask_r = tokens.copy(), mask.copy()
    tokens_r[1], mask_r[1] = np.roll(tokens[1], -2), np.roll(mask[1], -2)
    moved = logits(model, tokens_r, mask_r)
    assert np.max(np.abs(np.asarray(moved[1, :-2]) - np.asarray(ours[1, 2:]))) <= TOL


@pytest.mark.parametrize("name", list(FAMILIES))
def test_greedy_generate_equals_hf_generate(name, hf_checkpoints):
    directory, hf = hf_checkpoints[name]
    model = from_pretrained(directory)
    tokens, mask = padded_batch(seed=2, length=5)
    new = 6
    ours = generate(
        model, tokens, prompt_mask=mask, key=jax.random.key(0), max_new_tokens=new, temperature=0.0
    )
    # HF wants left padding for generation; jaxalign left-aligns internally.
    order = np.argsort(mask, axis=1, kind="stable")
    left_tokens = np.take_along_axis(tokens, order, 1)
    left_mask = np.take_along_axis(mask, order, 1)
    np.testing.assert_array_equal(np.asarray(ours.prompt_tokens), left_tokens)
    with torch.no_grad():
        ref = hf.generate(
            torch.as_tensor(left_tokens, dtype=torch.long),
            attention_mask=torch.as_tensor(left_mask, dtype=torch.long),
            max_new_tokens=new,
            do_sample=False,
            eos_token_id=EOS,
            pad_token_id=PAD,
        )[:, tokens.shape[1] :].numpy()
    got = np.asarray(ours.tokens)
    np.testing.assert_array_equal(got[:, : ref.shape[1]], ref)
    assert (got[:, ref.shape[1] :] == PAD).all()


@pytest.mark.parametrize("name", ["llama_gqa", "qwen3_qknorm_linearrope"])
def test_save_pretrained_loads_in_transformers_with_same_logits(name, hf_checkpoints, tmp_path):
    directory, _ = hf_checkpoints[name]
    model = from_pretrained(directory)
    save_pretrained(model, tmp_path)
    reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    tokens, mask = padded_batch(seed=3)
    diff = max_diff_at_real_tokens(
        logits(model, tokens, mask), hf_logits(reloaded.eval(), tokens, mask), mask
    )
    assert diff <= TOL
