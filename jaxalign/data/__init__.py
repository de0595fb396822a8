"""Preference data: JSONL/Parquet rows → tokenised pairs → fixed-shape, resumable batches.

* :class:`DataConfig` — dataset and batching options (embeds in training configs).
* :func:`read_preference_rows` / :func:`parse_preference_row` — HF preference
  format (plain text or chat messages), malformed rows reported as ``file:line``.
* :func:`tokenize_preference_row` — chat template or plain concatenation, with
  keep-end prompt truncation and response truncation.
* :class:`PreferenceLoader` — deterministic shuffling by ``(seed, epoch)``,
  static shapes (``max_length`` or buckets), per-process slices, and a JSON-able
  :class:`LoaderState` for exact resumption.
* :func:`read_prompts` / :class:`PromptDataset` — prompts only (for online
  training): rendered like preference prompts, left-truncated, left-padded to
  one static width, drawn uniformly with a PRNG key.
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
    format_data_stats,
    load_preference_dataset,
    pad_token_id,
    process_slice,
)
from jaxalign.data.packing import (
    PackedPreferenceBatch,
    pack_preference_pairs,
    packed_rows_needed,
)
from jaxalign.data.preference import (
    MalformedRowError,
    PreferenceRow,
    dataset_files,
    parse_preference_row,
    read_preference_rows,
)
from jaxalign.data.prompts import (
    PromptBatch,
    PromptDataset,
    iter_prompt_rows,
    load_prompt_dataset,
    local_prompt_batch,
    parse_prompt_row,
    read_prompts,
)
from jaxalign.data.synthetic import (
    TINY_RULES,
    TINY_WORDS,
    make_tiny_preference_dataset,
    tiny_preference_score,
)
from jaxalign.data.tokenize import (
    TokenizedPair,
    render_text,
    tokenize_preference_row,
    tokenize_prompt,
)

__all__ = [
    "TINY_RULES",
    "TINY_WORDS",
    "DataConfig",
    "LoaderState",
    "MalformedRowError",
    "PackedPreferenceBatch",
    "PreferenceBatch",
    "PreferenceDataset",
    "PreferenceLoader",
    "PreferenceRow",
    "PromptBatch",
    "PromptDataset",
    "TokenizedPair",
    "bucket_length",
    "build_preference_loader",
    "collate_preference_batch",
    "dataset_files",
    "epoch_permutation",
    "format_data_stats",
    "iter_prompt_rows",
    "load_preference_dataset",
    "load_prompt_dataset",
    "local_prompt_batch",
    "make_tiny_preference_dataset",
    "pack_preference_pairs",
    "packed_rows_needed",
    "pad_token_id",
    "parse_preference_row",
    "parse_prompt_row",
    "process_slice",
    "read_preference_rows",
    "read_prompts",
    "render_text",
    "tiny_preference_score",
    "tokenize_preference_row",
    "tokenize_prompt",
]
