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
* :func:`read_unpaired_rows` / :class:`UnpairedLoader` — unpaired (KTO) rows ``prompt``,
  ``completion``, ``label`` → :class:`UnpairedBatch` es with mismatched KL sequences;
  :func:`make_tiny_unpaired_dataset` its synthetic dataset.
* :func:`read_sft_rows` / :class:`SFTLoader` — SFT rows (prompt/completion or chat
  ``messages``) → :class:`SFTBatch` / :class:`PackedSFTBatch` es with the loss on completion
  tokens only; :func:`make_tiny_sft_dataset` its synthetic dataset.
"""

from jaxalign.data.config import DataConfig
from jaxalign.data.hf_datasets import arrow_files, read_arrow
from jaxalign.data.loader import (
    LoaderState,
    PreferenceBatch,
    PreferenceDataset,
    PreferenceLoader,
    TokenizedDataset,
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
from jaxalign.data.sft import (
    PackedSFTBatch,
    SFTBatch,
    SFTDataset,
    SFTLoader,
    SFTRow,
    TokenizedSFTExample,
    build_sft_loader,
    collate_sft_batch,
    format_sft_stats,
    load_sft_dataset,
    make_tiny_sft_dataset,
    pack_sft_examples,
    packed_sft_rows_needed,
    parse_sft_row,
    read_sft_rows,
    tokenize_sft_row,
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
from jaxalign.data.unpaired import (
    TokenizedExample,
    UnpairedBatch,
    UnpairedDataset,
    UnpairedLoader,
    UnpairedRow,
    build_unpaired_loader,
    collate_unpaired_batch,
    format_unpaired_stats,
    load_unpaired_dataset,
    make_tiny_unpaired_dataset,
    parse_unpaired_row,
    read_unpaired_rows,
)

__all__ = [
    "TINY_RULES",
    "TINY_WORDS",
    "DataConfig",
    "LoaderState",
    "MalformedRowError",
    "PackedPreferenceBatch",
    "PackedSFTBatch",
    "PreferenceBatch",
    "PreferenceDataset",
    "PreferenceLoader",
    "PreferenceRow",
    "PromptBatch",
    "PromptDataset",
    "SFTBatch",
    "SFTDataset",
    "SFTLoader",
    "SFTRow",
    "TokenizedDataset",
    "TokenizedExample",
    "TokenizedPair",
    "TokenizedSFTExample",
    "UnpairedBatch",
    "UnpairedDataset",
    "UnpairedLoader",
    "UnpairedRow",
    "arrow_files",
    "bucket_length",
    "build_preference_loader",
    "build_sft_loader",
    "build_unpaired_loader",
    "collate_preference_batch",
    "collate_sft_batch",
    "collate_unpaired_batch",
    "dataset_files",
    "epoch_permutation",
    "format_data_stats",
    "format_sft_stats",
    "format_unpaired_stats",
    "iter_prompt_rows",
    "load_preference_dataset",
    "load_prompt_dataset",
    "load_sft_dataset",
    "load_unpaired_dataset",
    "local_prompt_batch",
    "make_tiny_preference_dataset",
    "make_tiny_sft_dataset",
    "make_tiny_unpaired_dataset",
    "pack_preference_pairs",
    "pack_sft_examples",
    "packed_rows_needed",
    "packed_sft_rows_needed",
    "pad_token_id",
    "parse_preference_row",
    "parse_prompt_row",
    "parse_sft_row",
    "parse_unpaired_row",
    "process_slice",
    "read_arrow",
    "read_preference_rows",
    "read_prompts",
    "read_sft_rows",
    "read_unpaired_rows",
    "render_text",
    "tiny_preference_score",
    "tokenize_preference_row",
    "tokenize_prompt",
    "tokenize_sft_row",
]
