"""Bad data files: pairs made identical by truncation (counted, reported, all refused),
compressed or binary files named .jsonl and non-UTF-8 lines (reported as file:line)."""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxalign.data import (
    DataConfig,
    MalformedRowError,
    PreferenceDataset,
    TokenizedPair,
    format_data_stats,
    load_preference_dataset,
    load_prompt_dataset,
    read_preference_rows,
    read_prompts,
)

SHARED = " the cat sat on the mat. the cat sat on the mat."  # longer than the budget below


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _config(path, **changes) -> DataConfig:
    return DataConfig(path=str(path), batch_size=1, max_length=8, max_prompt_length=4, **changes)


# ----------------------------------------------------------------------------- (a)


def test_pairs_identical_after_truncation_are_counted_and_reported(tmp_path, tokenizer):
    path = _jsonl(tmp_path / "d.jsonl", [
        {"prompt": "2+2=", "chosen": " 4", "rejected": " 5"},
        {"prompt": "p", "chosen": SHARED + " yes", "rejected": SHARED + " no"},  # cut equal
        {"prompt": "q", "chosen": " same", "rejected": " same"},  # equal in the file
        {"prompt": "r", "rejected": " x"},  # malformed
    ])  # fmt: skip
    ds = load_preference_dataset(_config(path, skip_malformed=True), tokenizer)
    assert (len(ds), ds.num_identical, ds.num_skipped, ds.num_response_truncated) == (3, 2, 1, 1)
    stats = ds.stats
    assert stats["num_identical"] == 2 and stats["max_length"] == 8
    assert stats["num_skipped"] == 1 and stats["num_response_truncated"] == 1
    assert stats["first_identical"] == f"{path}:2"
    json.dumps(stats)  # goes into summary.json as it is
    assert format_data_stats(stats) == (
        f"data {path}: 3 pairs; 1 malformed row skipped (first: {path}:4: missing key "
        f"'chosen'); 1 pair with responses truncated to max_length=8; 2 pairs identical "
        f"after truncation to max_length=8 (first: {path}:2), no preference to learn"
    )


def test_loading_refuses_when_every_pair_is_identical(tmp_path, tokenizer):
    path = _jsonl(tmp_path / "d.jsonl", [
        {"prompt": "p", "chosen": SHARED + " yes", "rejected": SHARED + " no"},
        {"prompt": "q", "chosen": SHARED + " a", "rejected": SHARED + " b"},
    ])  # fmt: skip
    with pytest.raises(
        ValueError,
        match=(
            r"all 2 pairs of preference dataset '.*d.jsonl' are identical after truncation to "
            r"max_length=8 \(e.g. .*d.jsonl:1\): .* raise data.max_length"
        ),
    ):
        load_preference_dataset(_config(path), tokenizer)
    # With room for the words where they differ, the same file loads.
    wide = DataConfig(path=path, batch_size=1, max_length=64, max_prompt_length=4)
    assert load_preference_dataset(wide, tokenizer).num_identical == 0


def test_a_dataset_built_from_identical_pairs_is_refused():
    same = np.array([5, 6], np.int32)
    pair = TokenizedPair(np.array([1], np.int32), same, same.copy(), False, False)
    with pytest.raises(ValueError, match=r"all 1 pairs of preference dataset 'mem' are identical:"):
        PreferenceDataset([pair], source="mem")


def test_clean_data_and_prompt_stats_format_in_one_line(tmp_path, tokenizer):
    path = _jsonl(tmp_path / "d.jsonl", [{"prompt": "2+2=", "chosen": " 4", "rejected": " 5"}])
    ds = load_preference_dataset(_config(path), tokenizer)
    assert format_data_stats(ds.stats) == f"data {path}: 1 pair; no rows skipped or truncated"
    prompts = load_prompt_dataset(path, tokenizer, max_prompt_length=2)
    line = format_data_stats(prompts.stats)
    assert line.startswith(f"prompts {path}: 1 prompt; 1 prompt truncated to max_prompt_length=2")


# ----------------------------------------------------------------------------- (d)


def test_a_gzip_file_named_jsonl_is_reported_at_line_one(tmp_path, tokenizer):
    path = tmp_path / "d.jsonl"
    path.write_bytes(gzip.compress(b'{"prompt": "p", "chosen": " a", "rejected": " b"}\n'))
    expected = rf"^{path}:1: the file holds gzip-compressed data \(first bytes 1f 8b .*gunzip"
    with pytest.raises(MalformedRowError, match=expected):
        list(read_preference_rows(path))
    with pytest.raises(MalformedRowError, match=expected):  # skipping rows does not hide it
        load_preference_dataset(_config(path, skip_malformed=True), tokenizer)
    with pytest.raises(MalformedRowError, match=expected):
        read_prompts(path, skip_malformed=True)


def test_a_parquet_file_named_jsonl_says_so(tmp_path):
    path = tmp_path / "d.jsonl"
    pq.write_table(pa.table({"prompt": ["p"], "chosen": [" a"], "rejected": [" b"]}), path)
    with pytest.raises(MalformedRowError, match=r":1: the file holds a Parquet file .*parquet"):
        list(read_preference_rows(path))
    rows = list(read_preference_rows(path, "parquet"))
    assert len(rows) == 1 and not isinstance(rows[0][1], MalformedRowError)


def test_a_damaged_parquet_file_is_named(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(MalformedRowError, match=rf"^{path}: cannot read it as Parquet: "):
        list(read_preference_rows(path))


def test_a_non_utf8_line_is_reported_with_its_line_and_can_be_skipped(tmp_path, tokenizer):
    path = tmp_path / "d.jsonl"
    good = json.dumps({"prompt": "p", "chosen": " a", "rejected": " b"}).encode()
    latin1 = '{"prompt": "caf\u00e9", "chosen": " a", "rejected": " b"}'.encode("latin-1")
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\n" + latin1 + b"\n" + good + b"\n")
    rows = list(read_preference_rows(path))
    assert [type(r).__name__ for _, r in rows] == ["PreferenceRow", "MalformedRowError",
                                                   "PreferenceRow"]  # fmt: skip
    assert str(rows[1][1]) == (
        f"{path}:2: not UTF-8 text: byte 0xe9 at column 16; save it as UTF-8"
    )
    with pytest.raises(MalformedRowError, match=rf"^{path}:2: not UTF-8 text"):
        load_preference_dataset(_config(path), tokenizer)
    ds = load_preference_dataset(_config(path, skip_malformed=True), tokenizer)
    assert (len(ds), ds.num_skipped) == (2, 1)
    with pytest.raises(MalformedRowError, match=rf"^{path}:2: not UTF-8 text"):
        read_prompts(path)
    assert len(read_prompts(path, skip_malformed=True)) == 2


def test_a_utf16_file_says_so(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "p", "chosen": " a", "rejected": " b"}\n', encoding="utf-16")
    with pytest.raises(MalformedRowError, match=rf"^{path}:1: the file holds UTF-16 text .*UTF-8"):
        list(read_preference_rows(path))
