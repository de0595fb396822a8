"""Tokenisation of preference pairs: plain text, chat templates, truncation, collation."""

import numpy as np
import pytest

from jaxalign.data import (
    PreferenceRow,
    TokenizedPair,
    collate_preference_batch,
    parse_preference_row,
    tokenize_preference_row,
)


def _ids(tok, text, special=False):
    return list(tok(text, add_special_tokens=special)["input_ids"])


def test_plain_text_is_prompt_then_response_then_eos(tokenizer):
    row = PreferenceRow("sort: owl cat", " cat owl", " owl cat")
    pair = tokenize_preference_row(tokenizer, row, max_length=64, max_prompt_length=32)
    eos = tokenizer.eos_token_id
    assert pair.prompt.tolist() == _ids(tokenizer, "sort: owl cat", special=True)
    assert pair.chosen.tolist() == [*_ids(tokenizer, " cat owl"), eos]
    assert pair.rejected.tolist() == [*_ids(tokenizer, " owl cat"), eos]
    assert (
        tokenizer.decode(np.concatenate([pair.prompt, pair.chosen])) == "sort: owl cat cat owl</s>"
    )
    assert pair.chosen.dtype == np.int32
    assert not pair.prompt_truncated and not pair.response_truncated


def test_add_eos_false_leaves_responses_bare(tokenizer):
    row = PreferenceRow("p", " a", " b")
    pair = tokenize_preference_row(tokenizer, row, max_length=8, max_prompt_length=4, add_eos=False)
    assert pair.chosen.tolist() == _ids(tokenizer, " a")


def test_chat_template_prompt_and_response_reproduce_the_full_conversation(chat_tokenizer):
    tok = chat_tokenizer
    user = [{"role": "user", "content": "sort: owl cat"}]
    good = [{"role": "assistant", "content": "cat owl"}]
    row = parse_preference_row({"prompt": user, "chosen": good, "rejected": "owl cat"})
    pair = tokenize_preference_row(tok, row, max_length=128, max_prompt_length=64)
    prompt_text = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full_text = tok.apply_chat_template(user + good, tokenize=False)
    assert tok.decode(pair.prompt) == prompt_text == "<s>user: sort: owl cat</s><s>assistant:"
    assert tok.decode(np.concatenate([pair.prompt, pair.chosen])) == full_text
    # The template's end-of-turn token closes the response; no extra EOS is appended.
    assert pair.chosen[-1] == tok.eos_token_id and pair.chosen[-2] != tok.eos_token_id
    assert tok.decode(pair.rejected) == " owl cat</s>"


def test_conversation_without_template_uses_role_lines(tokenizer):
    row = parse_preference_row(
        {"prompt": [{"role": "user", "content": "hi"}], "chosen": "yes", "rejected": "no"}
    )
    pair = tokenize_preference_row(tokenizer, row, max_length=64, max_prompt_length=32)
    assert tokenizer.decode(pair.prompt) == "user: hi\nassistant: "
    assert tokenizer.decode(pair.chosen) == "yes</s>"


def test_chat_template_can_be_disabled(chat_tokenizer):
    row = parse_preference_row(
        {"prompt": [{"role": "user", "content": "hi"}], "chosen": "yes", "rejected": "no"}
    )
    pair = tokenize_preference_row(
        chat_tokenizer, row, max_length=64, max_prompt_length=32, use_chat_template=False
    )
    assert chat_tokenizer.decode(pair.prompt) == "user: hi\nassistant: "


def test_truncation_keeps_prompt_end_and_response_start(tokenizer):
    prompt = "sort: " + " ".join(["apple", "bird", "cat", "dog", "egg", "fish"] * 3)
    response = " " + " ".join(["kite", "lamp", "moon", "nut"] * 4)
    full_prompt = _ids(tokenizer, prompt, special=True)
    full_response = [*_ids(tokenizer, response), tokenizer.eos_token_id]
    max_length, max_prompt = 20, 8
    assert len(full_prompt) > max_prompt and len(full_response) > max_length - max_prompt
    pair = tokenize_preference_row(
        tokenizer,
        PreferenceRow(prompt, response, " a"),
        max_length=max_length,
        max_prompt_length=max_prompt,
    )
    assert pair.prompt.tolist() == full_prompt[-max_prompt:]
    assert pair.chosen.tolist() == full_response[: max_length - max_prompt]
    assert pair.rejected.tolist() == [*_ids(tokenizer, " a"), tokenizer.eos_token_id]
    assert pair.prompt_truncated and pair.response_truncated


def test_short_prompt_leaves_its_unused_budget_to_the_response(tokenizer):
    response = " " + " ".join(["kite", "lamp"] * 10)
    pair = tokenize_preference_row(
        tokenizer, PreferenceRow("p", response, " a"), max_length=12, max_prompt_length=6
    )
    assert len(pair.prompt) == 1
    assert len(pair.prompt) + len(pair.chosen) == 12


def test_max_prompt_length_must_leave_room_for_a_response(tokenizer):
    with pytest.raises(ValueError, match="must be < max_length"):
        tokenize_preference_row(
            tokenizer, PreferenceRow("p", " a", " b"), max_length=4, max_prompt_length=4
        )


def _pair(prompt, chosen, rejected):
    as_array = lambda x: np.asarray(x, np.int32)
    return TokenizedPair(as_array(prompt), as_array(chosen), as_array(rejected), False, False)


def test_collate_pads_right_and_masks_response_tokens():
    pairs = [_pair([5, 6], [7, 8, 9], [10]), _pair([11], [12], [13, 14])]
    batch = collate_preference_batch(pairs, 6, pad_id=0)
    np.testing.assert_array_equal(
        batch.chosen_input_ids, [[5, 6, 7, 8, 9, 0], [11, 12, 0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(
        batch.chosen_attention_mask, [[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(batch.chosen_loss_mask, [[0, 0, 1, 1, 1, 0], [0, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(
        batch.rejected_input_ids, [[5, 6, 10, 0, 0, 0], [11, 13, 14, 0, 0, 0]]
    )
    np.testing.assert_array_equal(
        batch.rejected_loss_mask, [[0, 0, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0]]
    )
    assert batch.chosen_input_ids.dtype == np.int32
    assert batch.chosen_attention_mask.dtype == np.int32
    assert batch.chosen_loss_mask.dtype == np.float32
    np.testing.assert_array_equal(batch.example_mask, [1.0, 1.0])


def test_collate_filler_rows_keep_attention_but_have_no_loss():
    pairs = [_pair([5], [7], [8]), _pair([5], [7], [8])]
    batch = collate_preference_batch(pairs, 4, pad_id=1, example_mask=[1.0, 0.0])
    assert batch.chosen_loss_mask[1].sum() == 0 and batch.rejected_loss_mask[1].sum() == 0
    assert batch.chosen_attention_mask[1].sum() == 2
    np.testing.assert_array_equal(batch.example_mask, [1.0, 0.0])


def test_collate_rejects_sequences_longer_than_the_length():
    with pytest.raises(ValueError, match="does not fit in length 2"):
        collate_preference_batch([_pair([1, 2], [3], [4])], 2, pad_id=0)
