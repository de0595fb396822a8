"""Preference data: JSONL/Parquet rows → tokenised pairs → fixed-shape, resumable batches.

* :class:`DataConfig` — dataset and batching options (embeds in training configs).
* :func:`read_preference_rows` / :func:`parse_preference_row` — HF preference
  format (plain text or chat messages), malformed rows reported as ``file:line``.
* :func:`tokenize_preference_row` — chat template or plain concatenation, with
  keep-end prompt truncation and response truncation.
* :class:`PreferenceLoader` — deterministic shuffling by ``(seed, epoch)``,
  static shapes (``max_length`` or buckets), per-process slices, and a JSON-able
  :class:`LoaderState` for exact resumption.
* :func:`make_tiny_preference_dataset` — a learnable synthetic dataset.
"""

from jaxalign.data.config import DataConfig
from jaxalign.data.loader import (
    LoaderState,
    PreferenceBatch,
    PreferenceDataset,
    PreferenceLoader,
    bucket_length,
    build_preference_loader,
    collate_preference_batch,
    epoch_permutation,
    load_preference_dataset,
    pad_token_id,
    process_slice,
)
from jaxalign.data.preference import (
    MalformedRowError,
    PreferenceRow,
    dataset_files,
    parse_preference_row,
    read_preference_rows,
)
from jaxalign.data.synthetic import (
    TINY_WORDS,
    make_tiny_preference_dataset,
    tiny_preference_score,
)
from jaxalign.data.tokenize import TokenizedPair, render_text, tokenize_preference_row

__all__ = [
    "TINY_WORDS",
    "DataConfig",
    "LoaderState",
    "MalformedRowError",
    "PreferenceBatch",
    "PreferenceDataset",
    "PreferenceLoader",
    "PreferenceRow",
    "TokenizedPair",
    "bucket_length",
    "build_preference_loader",
    "collate_preference_batch",
    "dataset_files",
    "epoch_permutation",
    "load_preference_dataset",
    "make_tiny_preference_dataset",
    "pad_token_id",
    "parse_preference_row",
    "process_slice",
    "read_preference_rows",
    "render_text",
    "tiny_preference_score",
    "tokenize_preference_row",
]
