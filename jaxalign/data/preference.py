"""Reading preference rows from JSONL and Parquet, in the Hugging Face format.

A row has ``prompt``, ``chosen`` and ``rejected``. Each is either a plain string
or a conversation: a list of ``{"role": ..., "content": ...}`` messages.
Accepted shapes (extra keys such as ``id`` or scores are ignored):

* plain text: ``{"prompt": "2+2=", "chosen": " 4", "rejected": " 5"}``;
* conversational: ``{"prompt": [{"role": "user", ...}], "chosen":
  [{"role": "assistant", ...}], "rejected": [...]}``;
* full conversations with the prompt inside: no ``prompt`` key (or a prompt
  that ``chosen``/``rejected`` start with); the shared leading messages are the
  prompt and the rest is the response;
* mixed: a string on one side of a conversation is read as a ``user`` message
  (prompt) or an ``assistant`` message (response).

Local Hugging Face ``datasets`` data (a ``save_to_disk`` directory or an ``.arrow``
file) is read too, by :mod:`jaxalign.data.hf_datasets`, when the format is ``auto``.

Every problem is a :class:`MalformedRowError` with the file and line (JSONL) or
row (Parquet, Arrow), e.g. ``data.jsonl:17: missing key 'rejected'``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

Message: TypeAlias = dict[str, str]
Text: TypeAlias = str | list[Message]


class MalformedRowError(ValueError):
    """A dataset row does not follow the preference format."""


class PreferenceRow(NamedTuple):
    """One preference pair, normalised.

    ``prompt``, ``chosen`` and ``rejected`` are all strings (plain text) or all
    message lists (conversation); ``chosen``/``rejected`` hold only the response
    (the prompt removed).
    """

    prompt: Text
    chosen: Text
    rejected: Text

    @property
    def conversational(self) -> bool:
        return isinstance(self.chosen, list)


def as_messages(value: Any, key: str) -> list[Message] | str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise MalformedRowError(
            f"{key!r} must be a string or a list of {{role, content}} messages, "
            f"got {type(value).__name__}"
        )
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping):
            raise MalformedRowError(f"{key}[{i}] must be a {{role, content}} message, got {m!r}")
        for field in ("role", "content"):
            if field not in m:
                raise MalformedRowError(f"{key}[{i}] is missing {field!r}")
            if not isinstance(m[field], str):
                raise MalformedRowError(
                    f"{key}[{i}].{field} must be a string, got {type(m[field]).__name__}"
                )
        messages.append({"role": m["role"], "content": m["content"]})
    return messages


def parse_preference_row(row: Any) -> PreferenceRow:
    """Validates one raw row (a mapping) and normalises it to a :class:`PreferenceRow`.

    Raises:
        MalformedRowError: naming the problem (without location; readers add it).
    """
    if not isinstance(row, Mapping):
        raise MalformedRowError(f"row must be a JSON object, got {type(row).__name__}")
    for key in ("chosen", "rejected"):
        if key not in row:
            raise MalformedRowError(f"missing key {key!r}")
    chosen = as_messages(row["chosen"], "chosen")
    rejected = as_messages(row["rejected"], "rejected")
    has_prompt = row.get("prompt") is not None
    prompt = as_messages(row["prompt"], "prompt") if has_prompt else None
    conversational = any(isinstance(x, list) for x in (prompt, chosen, rejected))

    if not conversational:
        if prompt is None:
            raise MalformedRowError(
                "missing key 'prompt' (plain-text rows need a prompt; only conversations "
                "may carry it inside 'chosen'/'rejected')"
            )
        for key, value in (("chosen", chosen), ("rejected", rejected)):
            if not value:
                raise MalformedRowError(f"{key!r} is empty")
        return PreferenceRow(prompt, chosen, rejected)

    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if isinstance(chosen, str):
        chosen = [{"role": "assistant", "content": chosen}]
    if isinstance(rejected, str):
        rejected = [{"role": "assistant", "content": rejected}]
    if prompt is None:
        shared = 0
        limit = min(len(chosen), len(rejected)) - 1
        while shared < limit and chosen[shared] == rejected[shared]:
            shared += 1
        if shared == 0:
            raise MalformedRowError(
                "missing key 'prompt' and 'chosen'/'rejected' share no leading messages to "
                "use as the prompt"
            )
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    else:
        n = len(prompt)
        if chosen[:n] == prompt:
            chosen = chosen[n:]
        if rejected[:n] == prompt:
            rejected = rejected[n:]
    if not prompt:
        raise MalformedRowError("'prompt' is an empty conversation")
    for key, value in (("chosen", chosen), ("rejected", rejected)):
        if not value:
            raise MalformedRowError(f"{key!r} has no response messages")
    return PreferenceRow(prompt, chosen, rejected)


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".arrow":  # a datasets shard (Arrow IPC)
        return "arrow"
    raise ValueError(
        f"cannot tell the format of {str(path)!r} from its suffix {suffix!r}; expected "
        ".jsonl, .parquet or .arrow (or a datasets save_to_disk directory), or set "
        "format='jsonl'/'parquet'"
    )


def row_reader(kind: str):
    """The ``(location, raw row)`` reader of a format from :func:`detect_format`."""
    if kind == "jsonl":
        return read_jsonl
    if kind == "arrow":
        from jaxalign.data.hf_datasets import read_arrow

        return read_arrow
    return read_parquet


def dataset_files(path: str | Path, fmt: str = "auto") -> list[Path]:
    """The data files at ``path``: the file itself, or a directory's data files sorted."""
    if not str(path):
        raise ValueError("dataset path is empty; set the data path to a JSONL or Parquet file")
    p = Path(path)
    if fmt == "auto":
        from jaxalign.data import hf_datasets

        if hf_datasets.is_hf_dataset_dir(p):
            return hf_datasets.arrow_files(p)
    if p.is_dir():
        suffixes = {
            "auto": (".jsonl", ".ndjson", ".parquet", ".pq"),
            "jsonl": (".jsonl", ".ndjson", ".json"),
            "parquet": (".parquet", ".pq"),
        }[fmt]
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
        if not files:
            raise ValueError(f"directory {str(p)!r} contains no {'/'.join(suffixes)} files")
        return files
    if not p.is_file():
        raise ValueError(f"dataset path {str(p)!r} does not exist")
    return [p]


# Leading bytes of files that are not JSONL text, with what to do about them.
_NOT_TEXT = (
    (b"\x1f\x8b", "gzip-compressed data", "decompress it first (gunzip)"),
    (b"PAR1", "a Parquet file", "name it .parquet or set format: parquet"),
    (b"\xfd7zXZ", "xz-compressed data", "decompress it first (unxz)"),
    (b"(\xb5/\xfd", "zstd-compressed data", "decompress it first (unzstd)"),
    (b"BZh", "bzip2-compressed data", "decompress it first (bunzip2)"),
    (b"PK\x03\x04", "a zip archive", "extract it first (unzip)"),
    (b"\xff\xfe", "UTF-16 text", "save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text", "save it as UTF-8"),
)


def _check_jsonl_text(path: Path, head: bytes) -> None:
    """Refuses, as ``file:1: …``, a file whose first bytes show it is not JSONL text."""
    for magic, what, fix in _NOT_TEXT:
        if head.startswith(magic):
            raise MalformedRowError(
                f"{path}:1: the file holds {what} (first bytes {head[:4].hex(' ')}), not "
                f"JSON lines; {fix}"
            )


def read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """``(file:line, value or MalformedRowError)`` per non-blank line.

    Lines are decoded one by one, so a line that is not UTF-8 is reported with its
    number (and can be skipped) instead of failing the whole file.

    Raises:
        MalformedRowError: the file is compressed or binary (``file:1: …``).
    """
    with path.open("rb") as f:
        _check_jsonl_text(path, f.read(8))
        f.seek(0)
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                byte = f"0x{raw[e.start]:02x}"
                error = f"not UTF-8 text: byte {byte} at column {e.start + 1}; save it as UTF-8"
                yield where, MalformedRowError(error)
                continue
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                yield where, MalformedRowError(f"invalid JSON: {e.msg} (column {e.colno})")


def read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading {str(path)!r} needs pyarrow (pip install pyarrow), which is not installed"
        ) from e
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise MalformedRowError(
            f"{path}: cannot read it as Parquet: {type(e).__name__}: {e}"
        ) from None
    for number, row in enumerate(table.to_pylist(), start=1):
        yield f"{path}:row {number}", row


def read_preference_rows(
    path: str | Path, fmt: str = "auto"
) -> Iterator[tuple[str, PreferenceRow | MalformedRowError]]:
    """Yields ``(location, row_or_error)`` for every row of the file(s) at ``path``.

    ``location`` is ``"file:line"`` (JSONL, 1-based, blank lines skipped) or
    ``"file:row n"`` (Parquet). Malformed rows come back as a
    :class:`MalformedRowError` whose message starts with the location, so the
    caller decides whether to raise or skip.
    """
    if fmt not in ("auto", "jsonl", "parquet"):
        raise ValueError(f"format must be 'auto', 'jsonl' or 'parquet', got {fmt!r}")
    for file in dataset_files(path, fmt):
        for where, raw in row_reader(detect_format(file, fmt))(file):
            if isinstance(raw, MalformedRowError):
                yield where, MalformedRowError(f"{where}: {raw}")
                continue
            try:
                yield where, parse_preference_row(raw)
            except MalformedRowError as e:
                yield where, MalformedRowError(f"{where}: {e}")


__all__ = [
    "MalformedRowError",
    "Message",
    "PreferenceRow",
    "Text",
    "dataset_files",
    "parse_preference_row",
    "read_preference_rows",
    "row_reader",
]
