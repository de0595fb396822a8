"""Preference rows: formats, normalisation, malformed rows with file:line."""

import json

import pytest

from jaxalign.config import ConfigError, from_dict
from jaxalign.data import (
    DataConfig,
    MalformedRowError,
    PreferenceRow,
    load_preference_dataset,
    parse_preference_row,
    read_preference_rows,
)

USER = {"role": "user", "content": "What is 2+2?"}
GOOD = {"role": "assistant", "content": "4"}
BAD = {"role": "assistant", "content": "5"}


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_plain_text_row_is_kept_as_strings():
    row = parse_preference_row({"prompt": "2+2=", "chosen": " 4", "rejected": " 5", "id": 3})
    assert row == PreferenceRow("2+2=", " 4", " 5")
    assert not row.conversational


def test_conversational_row_keeps_messages():
    row = parse_preference_row({"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]})
    assert row == PreferenceRow([USER], [GOOD], [BAD])
    assert row.conversational


def test_full_conversations_without_prompt_split_at_shared_prefix():
    system = {"role": "system", "content": "Be brief."}
    row = parse_preference_row({"chosen": [system, USER, GOOD], "rejected": [system, USER, BAD]})
    assert row == PreferenceRow([system, USER], [GOOD], [BAD])


def test_prompt_repeated_inside_chosen_and_rejected_is_removed():
    row = parse_preference_row({"prompt": [USER], "chosen": [USER, GOOD], "rejected": [USER, BAD]})
    assert row == PreferenceRow([USER], [GOOD], [BAD])


def test_string_prompt_with_message_responses_becomes_a_user_message():
    row = parse_preference_row({"prompt": "What is 2+2?", "chosen": [GOOD], "rejected": "5"})
    assert row == PreferenceRow([USER], [GOOD], [BAD])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "p", "chosen": "a"}, "missing key 'rejected'"),
        ({"prompt": "p", "rejected": "a"}, "missing key 'chosen'"),
        ({"chosen": "a", "rejected": "b"}, "missing key 'prompt'"),
        ({"prompt": "p", "chosen": "", "rejected": "b"}, "'chosen' is empty"),
        ({"prompt": "p", "chosen": 3, "rejected": "b"}, "'chosen' must be a string or a list"),
        (
            {"prompt": [USER], "chosen": [{"role": "assistant"}], "rejected": [BAD]},
            "missing 'content'",
        ),
        (
            {"prompt": [USER], "chosen": [{"role": 1, "content": "x"}], "rejected": [BAD]},
            "role must be a string",
        ),
        ({"chosen": [GOOD], "rejected": [BAD]}, "share no leading messages"),
        ({"prompt": [USER], "chosen": [USER], "rejected": [USER, BAD]}, "'chosen' has no response"),
        (["not", "a", "mapping"], "must be a JSON object"),
    ],
)
def test_malformed_rows_raise_naming_the_problem(row, message):
    with pytest.raises(MalformedRowError, match=message):
        parse_preference_row(row)


def test_malformed_row_error_names_file_and_line(tmp_path, tokenizer):
    rows = [{"prompt": f"p{i}", "chosen": " a", "rejected": " b"} for i in range(16)]
    rows.append({"prompt": "p", "chosen": " a"})  # line 17
    path = _write_jsonl(tmp_path / "data.jsonl", rows)
    config = DataConfig(path=str(path), batch_size=2, max_length=32, max_prompt_length=16)
    with pytest.raises(ValueError, match=r"data\.jsonl:17: missing key 'rejected'"):
        load_preference_dataset(config, tokenizer)


def test_invalid_json_names_line_and_blank_lines_are_not_counted_as_rows(tmp_path):
    good = json.dumps({"prompt": "p", "chosen": " a", "rejected": " b"})
    path = tmp_path / "d.jsonl"
    path.write_text(f"{good}\n\n{good}\n{{oops\n")
    out = list(read_preference_rows(path))
    assert [w.rsplit(":", 1)[1] for w, _ in out] == ["1", "3", "4"]
    assert isinstance(out[2][1], MalformedRowError)
    assert str(out[2][1]).startswith(f"{path}:4: invalid JSON")


def test_skip_malformed_counts_and_reports_skipped_rows(tmp_path, tokenizer):
    rows = [
        {"prompt": "p", "chosen": " a", "rejected": " b"},
        {"prompt": "p", "chosen": " a"},
        "{broken",
        {"prompt": "q", "chosen": " c", "rejected": " d"},
    ]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    config = DataConfig(
        path=str(path), batch_size=1, max_length=32, max_prompt_length=16, skip_malformed=True
    )
    ds = load_preference_dataset(config, tokenizer)
    assert len(ds) == 2
    assert ds.num_skipped == 2
    assert ds.stats["num_skipped"] == 2
    assert ds.skipped[0].endswith("d.jsonl:2: missing key 'rejected'")
    assert "d.jsonl:3: invalid JSON" in ds.skipped[1]


def test_all_rows_malformed_is_an_error_even_when_skipping(tmp_path, tokenizer):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p"}])
    config = DataConfig(path=str(path), batch_size=1, max_length=8, max_prompt_length=4)
    with pytest.raises(ValueError, match="no valid rows"):
        load_preference_dataset(dataclass_replace(config, skip_malformed=True), tokenizer)


def dataclass_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_parquet_rows_match_jsonl_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]},
        {"prompt": [USER], "chosen": [USER, GOOD], "rejected": [BAD]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    jsonl = _write_jsonl(tmp_path / "d.jsonl", rows)
    from_parquet = [r for _, r in read_preference_rows(tmp_path / "d.parquet")]
    from_jsonl = [r for _, r in read_preference_rows(jsonl)]
    assert from_parquet == from_jsonl == [PreferenceRow([USER], [GOOD], [BAD])] * 2


def test_parquet_malformed_row_names_row_number(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"prompt": ["a", "b"], "chosen": [" x", " y"], "rejected": [" z", None]})
    pq.write_table(table, tmp_path / "d.parquet")
    out = list(read_preference_rows(tmp_path / "d.parquet"))
    assert isinstance(out[0][1], PreferenceRow)
    assert str(out[1][1]).startswith(f"{tmp_path / 'd.parquet'}:row 2: ")


def test_directory_reads_files_in_name_order(tmp_path):
    _write_jsonl(tmp_path / "b.jsonl", [{"prompt": "2", "chosen": " a", "rejected": " b"}])
    _write_jsonl(tmp_path / "a.jsonl", [{"prompt": "1", "chosen": " a", "rejected": " b"}])
    assert [r.prompt for _, r in read_preference_rows(tmp_path)] == ["1", "2"]


@pytest.mark.parametrize(
    ("path", "fmt", "message"),
    [("missing.jsonl", "auto", "does not exist"), ("d.txt", "auto", "cannot tell the format")],
)
def test_bad_paths_are_clear_errors(tmp_path, path, fmt, message):
    (tmp_path / "d.txt").write_text("")
    with pytest.raises(ValueError, match=message):
        list(read_preference_rows(tmp_path / path, fmt))


def test_data_config_builds_from_dict_and_rejects_bad_values():
    cfg = from_dict(
        DataConfig,
        {"max_length": 16, "max_prompt_length": 8, "padding": "bucket", "bucket_sizes": [8, 16]},
    )
    assert cfg.bucket_sizes == (8, 16)
    assert cfg.resolved_bucket_sizes() == (8, 16)
    assert DataConfig(
        max_length=100, max_prompt_length=10, padding="bucket"
    ).resolved_bucket_sizes() == (
        16,
        32,
        64,
        100,
    )
    with pytest.raises(ConfigError, match="max_prompt_length=64 must be < max_length=64"):
        from_dict(DataConfig, {"max_length": 64, "max_prompt_length": 64})
    with pytest.raises(ConfigError, match="bucket_sizes must be strictly increasing"):
        from_dict(
            DataConfig, {"max_length": 64, "max_prompt_length": 8, "bucket_sizes": [32, 16, 64]}
        )
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        from_dict(DataConfig, {"batch_size": 0})
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        from_dict(DataConfig, {"batch_sise": 4})


def test_rows_the_chat_template_rejects_are_malformed_with_location(tmp_path, chat_tokenizer):
    import copy

    strict = copy.deepcopy(chat_tokenizer)
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('system messages are not supported') }}{% endif %}"
        "{{ m['content'] }}</s>{% endfor %}"
    )
    system = [{"role": "system", "content": "x"}, USER]
    rows = [
        {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]},
        {"prompt": system, "chosen": [GOOD], "rejected": [BAD]},
    ]
    path = _write_jsonl(tmp_path / "c.jsonl", rows)
    config = DataConfig(path=str(path), batch_size=1, max_length=64, max_prompt_length=32)
    with pytest.raises(
        MalformedRowError, match=r"c\.jsonl:2: cannot tokenise row: .*system messages"
    ):
        load_preference_dataset(config, strict)
    ds = load_preference_dataset(dataclass_replace(config, skip_malformed=True), strict)
    assert (len(ds), ds.num_skipped) == (1, 1)
