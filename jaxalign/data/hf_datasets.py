"""Reading local Hugging Face ``datasets`` data: ``save_to_disk`` directories and Arrow files.

``datasets.Dataset.save_to_disk(d)`` writes ``d/state.json`` (which lists the data files
under ``_data_files``), ``d/dataset_info.json`` and ``d/data-0000i-of-0000n.arrow``: Arrow
IPC *stream* files, one table split into shards. ``DatasetDict.save_to_disk(d)`` writes
``d/dataset_dict.json`` (``{"splits": [...]}``) and one such directory per split. This
module reads both with pyarrow alone (no ``datasets`` import, no network, no cache), so
every reader of :mod:`jaxalign.data` accepts, besides JSONL and Parquet:

* a ``save_to_disk`` directory of one dataset (its shards in ``state.json`` order);
* a ``DatasetDict`` directory with exactly one split (else: point the path at a split);
* a single ``.arrow`` file (IPC stream, as ``datasets`` writes, or IPC file format).

Rows are located like Parquet rows, ``file:row n`` (1-based within the shard file), so a
malformed row reads e.g. ``d/data-00000-of-00001.arrow:row 3: missing key 'rejected'``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
DATASET_DICT_FILE = "dataset_dict.json"


def is_hf_dataset_dir(path: Path) -> bool:
    """Whether ``path`` is a ``save_to_disk`` directory (of a Dataset or a DatasetDict)."""
    return path.is_dir() and ((path / STATE_FILE).is_file() or (path / DATASET_DICT_FILE).is_file())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read it as JSON: {e}") from None


def arrow_files(path: str | Path) -> list[Path]:
    """The Arrow shard files of a ``save_to_disk`` directory, in the dataset's row order.

    Raises:
      ValueError: naming the directory or its metadata file when it is not a readable
        single-dataset directory (a ``DatasetDict`` with several splits, a missing shard).
    """
    path = Path(path)
    if (path / DATASET_DICT_FILE).is_file() and not (path / STATE_FILE).is_file():
        meta = _read_json(path / DATASET_DICT_FILE)
        splits = meta.get("splits") if isinstance(meta, dict) else None
        if not isinstance(splits, list) or not splits:
            raise ValueError(f"{path / DATASET_DICT_FILE}: expected a non-empty 'splits' list")
        if len(splits) != 1:
            raise ValueError(
                f"{str(path)!r} is a DatasetDict with splits {splits}; set the data path to one "
                f"split's directory, e.g. {str(path / str(splits[0]))!r}"
            )
        return arrow_files(path / str(splits[0]))
    state_path = path / STATE_FILE
    if not state_path.is_file():
        raise ValueError(
            f"{str(path)!r} is not a datasets save_to_disk directory (no {STATE_FILE})"
        )
    state = _read_json(state_path)
    entries = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{state_path}: expected a non-empty '_data_files' list of shard files")
    if state.get("_indices_data_files"):
        raise ValueError(
            f"{state_path}: the dataset has an indices mapping (a lazy select/shuffle); save it "
            "with dataset.flatten_indices().save_to_disk(...) first"
        )
    files = []
    for entry in entries:
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(name, str) or Path(name).name != name:
            raise ValueError(f"{state_path}: bad _data_files entry {entry!r}")
        if not (path / name).is_file():
            raise ValueError(f"{state_path}: lists {name!r}, which is missing from {str(path)!r}")
        files.append(path / name)
    return files


def _open_table(path: Path):
    import pyarrow as pa

    try:  # datasets writes the IPC stream format; also accept the IPC file format
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_stream(source).read_all()
    except (pa.ArrowInvalid, OSError):
        pass
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def read_arrow(path: Path) -> Iterator[tuple[str, Any]]:
    """``(file:row n, row dict)`` per row of an Arrow IPC stream or file (1-based rows).

    Raises:
      MalformedRowError: ``file: cannot read it as Arrow …`` for a damaged or non-Arrow file.
    """
    from jaxalign.data.preference import MalformedRowError

    try:
        import pyarrow  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading {str(path)!r} needs pyarrow (pip install pyarrow), which is not installed"
        ) from e
    try:
        table = _open_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise MalformedRowError(
            f"{path}: cannot read it as an Arrow stream or file: {type(e).__name__}: {e}"
        ) from None
    number = 0
    for batch in table.to_batches():
        for row in batch.to_pylist():
            number += 1
            yield f"{path}:row {number}", row


__all__ = ["arrow_files", "is_hf_dataset_dir", "read_arrow"]
