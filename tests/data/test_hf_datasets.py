"""Local Hugging Face ``datasets`` data (save_to_disk directories, Arrow files) read by every
row reader, with ``file:row n: reason`` errors; the layout is written here with pyarrow as
``datasets`` writes it, and checked against ``datasets`` itself when it is installed."""

import json

import pyarrow as pa
import pytest

from jaxalign.data import hf_datasets
from jaxalign.data.preference import MalformedRowError, read_preference_rows
from jaxalign.data.prompts import iter_prompt_rows
from jaxalign.data.sft import read_sft_rows
from jaxalign.data.unpaired import read_unpaired_rows

PAIRS = [
    {"prompt": "2+2=", "chosen": " 4", "rejected": " 5"},
    {"prompt": "3+3=", "chosen": " 6", "rejected": " 7"},
    {"prompt": "hi", "chosen": " hello", "rejected": " go"},
]


def _write_stream(path, rows):
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)


def _save_to_disk(directory, shards):
    """The layout of ``Dataset.save_to_disk``: state.json + data-0000i-of-0000n.arrow."""
    directory.mkdir(parents=True)
    names = [f"data-{i:05d}-of-{len(shards):05d}.arrow" for i in range(len(shards))]
    for name, rows in zip(names, shards, strict=True):
        _write_stream(directory / name, rows)
    state = {"_data_files": [{"filename": n} for n in names], "_split": None}
    (directory / "state.json").write_text(json.dumps(state))
    (directory / "dataset_info.json").write_text("{}")
    return directory


def _rows(reader, path):
    out = list(reader(path))
    for _, r in out:
        if isinstance(r, MalformedRowError):
            raise r
    return out


def test_a_save_to_disk_directory_reads_its_shards_in_order(tmp_path):
    d = _save_to_disk(tmp_path / "ds", [PAIRS[:2], PAIRS[2:]])
    out = _rows(read_preference_rows, d)
    assert [r.prompt for _, r in out] == ["2+2=", "3+3=", "hi"]
    assert [w for w, _ in out] == [
        f"{d}/data-00000-of-00002.arrow:row 1",
        f"{d}/data-00000-of-00002.arrow:row 2",
        f"{d}/data-00001-of-00002.arrow:row 1",
    ]


def test_a_dataset_dict_with_one_split_reads_and_several_splits_are_refused(tmp_path):
    root = tmp_path / "dd"
    _save_to_disk(root / "train", [PAIRS])
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    assert len(_rows(read_preference_rows, root)) == 3
    _save_to_disk(root / "test", [PAIRS[:1]])
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    with pytest.raises(ValueError, match=r"DatasetDict with splits \['train', 'test'\].*dd/train"):
        list(read_preference_rows(root))
    assert len(_rows(read_preference_rows, root / "test")) == 1


def test_single_arrow_files_stream_and_file_format(tmp_path):
    _write_stream(tmp_path / "a.arrow", PAIRS)
    table = pa.Table.from_pylist(PAIRS)
    with pa.OSFile(str(tmp_path / "b.arrow"), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
    for name in ("a.arrow", "b.arrow"):
        out = _rows(read_preference_rows, tmp_path / name)
        assert [r.chosen for _, r in out] == [" 4", " 6", " hello"]


def test_malformed_rows_are_located_by_file_and_row(tmp_path):
    rows = [PAIRS[0], {"prompt": "x", "chosen": " y", "rejected": None}]
    d = _save_to_disk(tmp_path / "ds", [rows])
    out = list(read_preference_rows(d))
    assert not isinstance(out[0][1], MalformedRowError)
    err = out[1][1]
    assert isinstance(err, MalformedRowError)
    assert str(err).startswith(f"{d}/data-00000-of-00001.arrow:row 2: ")
    assert "rejected" in str(err)


def test_damaged_or_incomplete_datasets_name_the_file(tmp_path):
    (tmp_path / "bad.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(MalformedRowError, match=r"bad\.arrow: cannot read it as an Arrow"):
        list(read_preference_rows(tmp_path / "bad.arrow"))
    d = _save_to_disk(tmp_path / "ds", [PAIRS])
    (d / "data-00000-of-00001.arrow").unlink()
    with pytest.raises(ValueError, match=r"state\.json: lists 'data-00000-of-00001\.arrow'"):
        list(read_preference_rows(d))
    (d / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"state\.json: cannot read it as JSON"):
        list(read_preference_rows(d))
    state = {"_data_files": [{"filename": "x.arrow"}], "_indices_data_files": [{"f": 1}]}
    (d / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="flatten_indices"):
        hf_datasets.arrow_files(d)


def test_prompt_sft_and_unpaired_readers_read_arrow_too(tmp_path):
    d = _save_to_disk(tmp_path / "p", [[{"prompt": "a"}, {"prompt": "b"}]])
    assert [p for _, p in _rows(iter_prompt_rows, d)] == ["a", "b"]
    d = _save_to_disk(tmp_path / "s", [[{"prompt": "q", "completion": " a"}]])
    assert len(_rows(read_sft_rows, d)) == 1
    rows = [{"prompt": "q", "completion": " a", "label": True}, {"prompt": "q"}]
    d = _save_to_disk(tmp_path / "u", [rows])
    out = list(read_unpaired_rows(d))
    assert not isinstance(out[0][1], MalformedRowError)
    assert isinstance(out[1][1], MalformedRowError)
    assert str(out[1][1]).startswith(f"{d}/data-00000-of-00001.arrow:row 2: ")


def test_datasets_save_to_disk_round_trip(tmp_path):
    import datasets  # the test extra installs it: a real save_to_disk folder is read

    ds = datasets.Dataset.from_list(PAIRS)
    ds.save_to_disk(str(tmp_path / "ds"), num_shards=2)
    out = _rows(read_preference_rows, tmp_path / "ds")
    assert [r.prompt for _, r in out] == [p["prompt"] for p in PAIRS]
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    assert len(_rows(read_preference_rows, tmp_path / "dd")) == 3
