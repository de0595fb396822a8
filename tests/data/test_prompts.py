"""Prompt sets for online training: reading, rendering parity, truncation, padding, sampling."""

import json

import jax
import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

from jaxalign.data import (
    MalformedRowError,
    PromptBatch,
    PromptDataset,
    iter_prompt_rows,
    load_prompt_dataset,
    local_prompt_batch,
    make_tiny_preference_dataset,
    parse_preference_row,
    process_slice,
    read_preference_rows,
    read_prompts,
    tokenize_preference_row,
)
from jaxalign.models import build_tiny_tokenizer

USER = [{"role": "user", "content": "sort: owl cat"}]
ROWS = [
    {"prompt": "sort: owl cat jam", "chosen": " cat jam owl", "rejected": " owl cat jam"},
    {"prompt": "What is the capital of France?"},
    {"prompt": USER, "id": 7},
    {"prompt": USER, "chosen": [{"role": "assistant", "content": "cat owl"}], "rejected": "x"},
    # A string prompt next to conversational responses is read as a user message.
    {"prompt": "hello", "chosen": [{"role": "assistant", "content": "hi"}], "rejected": "yo"},
    # No prompt key: the shared leading messages of chosen/rejected are the prompt.
    {
        "chosen": [*USER, {"role": "assistant", "content": "cat owl"}],
        "rejected": [*USER, {"role": "assistant", "content": "owl cat"}],
    },
]


@pytest.fixture(scope="module")
def chat_tok(tmp_path_factory):
    directory = build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _ids(tok, text, special):
    return list(tok(text, add_special_tokens=special)["input_ids"])


def test_read_prompts_plain_and_chat_rows(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", ROWS)
    prompts = read_prompts(path)
    assert prompts == [
        "sort: owl cat jam",
        "What is the capital of France?",
        USER,
        USER,
        [{"role": "user", "content": "hello"}],
        USER,
    ]


def test_tiny_preference_dataset_doubles_as_a_prompt_set(tmp_path):
    for conversational in (False, True):
        path = make_tiny_preference_dataset(
            tmp_path / f"t{conversational}.jsonl", 12, seed=1, conversational=conversational
        )
        expected = [row.prompt for _, row in read_preference_rows(path)]
        assert read_prompts(path) == expected
        assert len(expected) == 12


@pytest.mark.parametrize("use_template", [True, False])
def test_rendering_equals_the_preference_prompt(tmp_path, chat_tok, tokenizer, use_template):
    """A prompt's real tokens are exactly what tokenize_preference_row puts before a response."""
    rows = [r for r in ROWS if "chosen" in r]
    path = _write_jsonl(tmp_path / "pref.jsonl", rows)
    for tok in (chat_tok, tokenizer):  # with a chat template, and without (role lines)
        data = load_prompt_dataset(path, tok, max_prompt_length=64, use_chat_template=use_template)
        assert len(data) == len(rows) and data.num_truncated == 0
        for i, (_, row) in enumerate(read_preference_rows(path)):
            pair = tokenize_preference_row(
                tok, row, max_length=128, max_prompt_length=64, use_chat_template=use_template
            )
            got = data.tokens[i][data.mask[i] == 1]
            np.testing.assert_array_equal(got, pair.prompt)
            assert data.prompts[i] == row.prompt


def test_chat_prompt_ends_with_the_generation_prompt(chat_tok):
    data = PromptDataset([USER, "sort: owl cat"], chat_tok, max_prompt_length=32)
    first = chat_tok.decode(data.tokens[0][data.mask[0] == 1])
    assert first == "<|user|>sort: owl cat<|endoftext|><|assistant|>"
    assert chat_tok.decode(data.tokens[1][data.mask[1] == 1]) == "sort: owl cat"


def test_left_padding_mask_and_pad_id(chat_tok):
    prompts = ["sort: owl", "Count from one to ten: one two three"]
    data = PromptDataset(prompts, chat_tok, max_prompt_length=24)
    assert data.tokens.shape == data.mask.shape == (2, 24) == (len(data), data.prompt_length)
    assert data.tokens.dtype == data.mask.dtype == np.int32
    assert data.pad_token_id == chat_tok.pad_token_id == 0
    for i, text in enumerate(prompts):
        ids = _ids(chat_tok, text, special=True)
        n = len(ids)
        assert data.lengths[i] == n
        np.testing.assert_array_equal(data.tokens[i, 24 - n :], ids)
        np.testing.assert_array_equal(data.tokens[i, : 24 - n], 0)
        np.testing.assert_array_equal(data.mask[i], (np.arange(24) >= 24 - n).astype(np.int32))
    # An explicit pad id fills the padding; the real tokens are unchanged.
    other = PromptDataset(prompts, chat_tok, max_prompt_length=24, pad_token_id=5)
    np.testing.assert_array_equal(other.tokens[other.mask == 0], 5)
    np.testing.assert_array_equal(other.tokens[other.mask == 1], data.tokens[data.mask == 1])


def test_left_truncation_keeps_the_suffix(chat_tok):
    text = "Count from one to ten: one two three four five six seven eight nine ten."
    ids = _ids(chat_tok, text, special=True)
    width = len(ids) - 5
    data = PromptDataset([text, "owl"], chat_tok, max_prompt_length=width)
    assert data.num_truncated == 1 and data.stats["num_prompt_truncated"] == 1
    np.testing.assert_array_equal(data.tokens[0], ids[-width:])
    assert data.mask[0].all()
    assert chat_tok.decode(data.tokens[0]).endswith("nine ten.")
    # The preference tokenizer truncates the same way.
    row = parse_preference_row({"prompt": text, "chosen": " a", "rejected": " b"})
    pair = tokenize_preference_row(chat_tok, row, max_length=width + 4, max_prompt_length=width)
    np.testing.assert_array_equal(data.tokens[0], pair.prompt)


def test_sampling_is_deterministic_and_uniform(chat_tok):
    prompts = [f"sort: {w}" for w in ("owl", "cat", "jam", "egg", "pig")]
    data = PromptDataset(prompts, chat_tok, max_prompt_length=8)
    key = jax.random.key(3)
    a, b = data.sample(key, 16), data.sample(key, 16)
    assert isinstance(a, PromptBatch) and a.tokens.shape == (16, 8)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.mask, b.mask)
    idx = np.asarray(data.batch_indices(key, 16))
    np.testing.assert_array_equal(a.tokens, data.tokens[idx])
    assert not np.array_equal(idx, np.asarray(data.batch_indices(jax.random.key(4), 16)))
    # Raw uint32 keys work and the draw is traceable.
    jitted = jax.jit(lambda k: data.batch_indices(k, 16))
    np.testing.assert_array_equal(jitted(key), idx)
    raw = np.asarray(data.batch_indices(jax.random.PRNGKey(0), 4))
    assert raw.shape == (4,) and raw.dtype == np.int32
    # Uniform: counts over 5 prompts pass a chi-square test (df=4, 0.999 quantile 18.47).
    n = 5000
    counts = np.bincount(np.asarray(data.batch_indices(jax.random.key(0), n)), minlength=5)
    chi2 = ((counts - n / 5) ** 2 / (n / 5)).sum()
    assert chi2 < 18.47, counts
    # A biased sampler (never the last prompt) fails the same test.
    biased = np.bincount(np.minimum(np.arange(n) % 5, 3), minlength=5)
    assert ((biased - n / 5) ** 2 / (n / 5)).sum() > 18.47
    # Without replacement: distinct prompts, all of them when n = N.
    full = np.asarray(data.batch_indices(key, 5, replace=False))
    assert sorted(full.tolist()) == list(range(5))
    with pytest.raises(ValueError, match="distinct"):
        data.batch_indices(key, 6, replace=False)
    with pytest.raises(ValueError, match="positive integer"):
        data.sample(key, 0)


def test_process_slices_tile_the_global_draw(chat_tok):
    data = PromptDataset(
        [f"sort: {w}" for w in ("owl", "cat", "jam")], chat_tok, max_prompt_length=6
    )
    batch = data.sample(jax.random.key(1), 8)
    parts = [local_prompt_batch(batch, process_index=p, process_count=4) for p in range(4)]
    for p, part in enumerate(parts):
        rows = process_slice(8, p, 4)
        np.testing.assert_array_equal(part.tokens, batch.tokens[rows])
        np.testing.assert_array_equal(part.mask, batch.mask[rows])
    np.testing.assert_array_equal(np.concatenate([q.tokens for q in parts]), batch.tokens)
    with pytest.raises(ValueError, match="not divisible"):
        local_prompt_batch(batch, process_index=0, process_count=3)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ({"chosen": " a"}, "missing key 'prompt'"),
        ({"text": "hello"}, "missing key 'prompt'"),
        ({"prompt": 3}, "'prompt' must be a string or a list"),
        ({"prompt": [{"role": "user"}]}, "missing 'content'"),
        ({"prompt": ""}, "'prompt' is empty"),
        ({"prompt": []}, "'prompt' is an empty conversation"),
        ({"chosen": "a", "rejected": "b"}, "plain-text rows need a prompt"),
        ("[1, 2]", "row must be a JSON object"),
        ("{not json", "invalid JSON"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, chat_tok, line, reason):
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, "", line, {"prompt": "fine"}])
    with pytest.raises(MalformedRowError) as err:
        read_prompts(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert reason in str(err.value)
    assert read_prompts(path, skip_malformed=True) == ["ok", "fine"]
    data = load_prompt_dataset(path, chat_tok, max_prompt_length=8, skip_malformed=True)
    assert len(data) == 2 and data.num_skipped == 1
    assert data.skipped[0].startswith(f"{path}:3: ")
    with pytest.raises(MalformedRowError, match=f"{path}:3: "):
        load_prompt_dataset(path, chat_tok, max_prompt_length=8)


def test_untokenisable_prompt_names_its_location(tmp_path, tokenizer):
    class Failing:
        pad_token_id = 0
        chat_template = None

        def __call__(self, text, add_special_tokens):
            if "boom" in text:
                raise RuntimeError("no")
            return tokenizer(text, add_special_tokens=add_special_tokens)

    path = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"prompt": "boom"}])
    with pytest.raises(MalformedRowError, match=f"{path}:2: cannot tokenise prompt"):
        load_prompt_dataset(path, Failing(), max_prompt_length=8)
    data = load_prompt_dataset(path, Failing(), max_prompt_length=8, skip_malformed=True)
    assert len(data) == 1 and data.num_skipped == 1 and data.prompts == ("ok",)
    with pytest.raises(MalformedRowError, match="prompt 1: cannot tokenise"):
        PromptDataset(["ok", "boom"], Failing(), max_prompt_length=8)


def test_parquet_and_directory(tmp_path, chat_tok):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    directory = tmp_path / "d"
    directory.mkdir()
    table = pa.table(
        {"prompt": ["sort: owl cat", "hello"], "chosen": [" cat owl", " hi"], "score": [1, 2]}
    )
    pq.write_table(table, directory / "a.parquet")
    _write_jsonl(directory / "b.jsonl", [{"prompt": USER}])
    assert read_prompts(directory) == ["sort: owl cat", "hello", USER]
    assert read_prompts(directory / "a.parquet", fmt="parquet") == ["sort: owl cat", "hello"]
    pq.write_table(pa.table({"prompt": ["ok", None]}), tmp_path / "bad.parquet")
    with pytest.raises(MalformedRowError, match=r"bad\.parquet:row 2: missing key 'prompt'"):
        read_prompts(tmp_path / "bad.parquet")
    data = load_prompt_dataset(directory, chat_tok, max_prompt_length=16)
    assert len(data) == 3 and data.stats["num_prompts"] == 3
    where = [w for w, _ in iter_prompt_rows(directory)]
    assert where[0].endswith("a.parquet:row 1") and where[2].endswith("b.jsonl:1")


def test_argument_errors(tmp_path, chat_tok):
    with pytest.raises(ValueError, match="max_prompt_length"):
        PromptDataset(["a"], chat_tok, max_prompt_length=0)
    with pytest.raises(ValueError, match="single str"):
        PromptDataset("abc", chat_tok, max_prompt_length=4)
    with pytest.raises(ValueError, match="format"):
        read_prompts(tmp_path, fmt="csv")
    with pytest.raises(ValueError, match="does not exist"):
        read_prompts(tmp_path / "missing.jsonl")
    with pytest.raises(MalformedRowError, match="no valid prompt rows"):
        read_prompts(_write_jsonl(tmp_path / "e.jsonl", [{"x": 1}]), skip_malformed=True)
    data = PromptDataset(["a", "b"], chat_tok, max_prompt_length=4)
    with pytest.raises(ValueError, match="indices"):
        data.take([2])
