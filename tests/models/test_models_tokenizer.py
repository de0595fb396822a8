"""Tiny offline BPE tokenizer, local AutoTokenizer loading, chat template, batch padding."""

from __future__ import annotations

import numpy as np
import pytest

from jaxalign.models import (
    build_tiny_tokenizer,
    chat_token_ids,
    encode_batch,
    load_tokenizer,
    pad_batch,
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"), vocab_size=320)


def test_tiny_tokenizer_round_trips_text_and_has_special_tokens(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    assert (tok.pad_token, tok.pad_token_id, tok.eos_token, tok.eos_token_id) == (
        "<|pad|>",
        0,
        "<|endoftext|>",
        1,
    )
    assert len(tok) <= 320
    text = "The policy prefers naïve answers — 42 times! ✓"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text  # byte-level: no unknown tokens
    assert len(ids) < len(text.encode())  # merges were learned


def test_chat_template_renders_roles_and_generation_prompt(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    messages = [{"role": "user", "content": "hello"}]
    ids = chat_token_ids(tok, messages)
    assert ids[0] == tok.convert_tokens_to_ids("<|user|>")
    assert ids[-2:] == [tok.eos_token_id, tok.convert_tokens_to_ids("<|assistant|>")]
    assert tok.decode(ids) == "<|user|>hello<|endoftext|><|assistant|>"
    assert chat_token_ids(tok, messages, add_generation_prompt=False) == ids[:-1]


def test_padding_and_missing_directory(tokenizer_dir, tmp_path):
    tokens, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    np.testing.assert_array_equal(tokens, [[5, 6, 7], [0, 0, 8]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1]])
    tokens, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")
    np.testing.assert_array_equal(tokens, [[5, 6, 7], [8, 0, 0]])
    tok = load_tokenizer(tokenizer_dir)
    tokens, mask = encode_batch(tok, ["a longer prompt", "hi"])
    assert tokens.shape == mask.shape and mask[1, 0] == 0 and mask[:, -1].all()
    with pytest.raises(ValueError, match="not a local directory"):
        load_tokenizer(tmp_path / "absent")
    with pytest.raises(ValueError, match="vocab_size must be >="):
        build_tiny_tokenizer(tmp_path / "small", vocab_size=100)
