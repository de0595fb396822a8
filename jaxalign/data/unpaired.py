"""Unpaired (KTO) data: ``prompt``, ``completion``, ``label`` rows → fixed-shape batches.

A row is one response with a binary label, in the Hugging Face unpaired-preference format:

* plain text: ``{"prompt": "2+2=", "completion": " 4", "label": true}``;
* conversational: ``{"prompt": [{"role": "user", ...}], "completion": [{"role": "assistant",
  ...}], "label": false}`` (a completion that repeats the prompt messages has them removed).

``label`` must be a JSON boolean (``true`` = desirable). Rows are read from JSONL or Parquet
files (or a directory of them), rendered and truncated exactly as preference rows
(:mod:`jaxalign.data.tokenize`), and every problem is a
:class:`~jaxalign.data.MalformedRowError` starting with ``file:line`` (JSONL) or
``file:row n`` (Parquet), e.g. ``kto.jsonl:3: 'label' must be true or false, got 'yes'``.

Batches (:class:`UnpairedBatch`) carry, besides each example's own sequence, a *mismatched*
sequence for KTO's reference point: prompt ``i`` of the global batch with the completion of
row ``i + 1`` (cyclically), its completion cut to fit ``max_length``
(see :func:`jaxalign.losses.kto_reference_point`). The loader is the resumable
:class:`~jaxalign.data.PreferenceLoader` (same order, state and per-process slices).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxalign.data.config import DataConfig
from jaxalign.data.loader import (
    MAX_REPORTED_SKIPS,
    LoaderState,
    PreferenceLoader,
    TokenizedDataset,
    bucket_length,
    collate_preference_batch,
    format_data_stats,
    pad_token_id,
)
from jaxalign.data.preference import (
    MalformedRowError,
    PreferenceRow,
    Text,
    dataset_files,
    detect_format,
    parse_preference_row,
    row_reader,
)
from jaxalign.data.synthetic import PROMPT_PREFIX, TINY_RULES, TINY_WORDS
from jaxalign.data.tokenize import TokenizedPair, tokenize_preference_row


class UnpairedRow(NamedTuple):
    """One labelled response, normalised like a :class:`~jaxalign.data.PreferenceRow`."""

    prompt: Text
    completion: Text  # the response only (prompt messages removed)
    desirable: bool  # the label


class TokenizedExample(NamedTuple):
    """Token ids of one labelled response after truncation."""

    prompt: np.ndarray  # (prompt_len,) int32
    completion: np.ndarray  # (completion_len,) int32
    desirable: bool
    prompt_truncated: bool
    response_truncated: bool


class UnpairedBatch(NamedTuple):
    """A batch of right-padded labelled responses and their mismatched KL sequences."""

    input_ids: np.ndarray  # (B, L) int32, prompt_i ++ completion_i ++ pad
    attention_mask: np.ndarray  # (B, L) int32
    loss_mask: np.ndarray  # (B, L) float32, 1 on completion tokens
    kl_input_ids: np.ndarray  # (B, L) int32, prompt_i ++ completion_{i+1 mod B} ++ pad
    kl_attention_mask: np.ndarray  # (B, L) int32
    kl_loss_mask: np.ndarray  # (B, L) float32
    desirable: np.ndarray  # (B,) float32, 1 = desirable, 0 = undesirable
    example_mask: np.ndarray  # (B,) float32, 0 for filler rows of a partial last batch


def parse_unpaired_row(row: Any) -> UnpairedRow:
    """Validates one raw row (a mapping) and normalises it to an :class:`UnpairedRow`.

    Raises:
        MalformedRowError: naming the problem (without location; readers add it).
    """
    if not isinstance(row, Mapping):
        raise MalformedRowError(f"row must be a JSON object, got {type(row).__name__}")
    for key in ("completion", "label"):
        if key not in row:
            raise MalformedRowError(f"missing key {key!r}")
    label = row["label"]
    if not isinstance(label, bool | np.bool_):
        raise MalformedRowError(f"'label' must be true or false (desirable or not), got {label!r}")
    pair = {"chosen": row["completion"], "rejected": row["completion"]}
    if "prompt" in row:
        pair["prompt"] = row["prompt"]
    try:
        parsed = parse_preference_row(pair)
    except MalformedRowError as e:  # the preference parser names chosen/rejected
        message = (
            str(e).replace("'chosen'/'rejected'", "'completion'").replace("chosen", "completion")
        )
        raise MalformedRowError(message) from None
    return UnpairedRow(parsed.prompt, parsed.chosen, bool(label))


def read_unpaired_rows(
    path: str | Path, fmt: str = "auto"
) -> Iterator[tuple[str, UnpairedRow | MalformedRowError]]:
    """Yields ``(location, row_or_error)`` for every row of the file(s) at ``path`` (as
    :func:`~jaxalign.data.read_preference_rows`)."""
    if fmt not in ("auto", "jsonl", "parquet"):
        raise ValueError(f"format must be 'auto', 'jsonl' or 'parquet', got {fmt!r}")
    for file in dataset_files(path, fmt):
        reader = row_reader(detect_format(file, fmt))
        for where, raw in reader(file):
            if isinstance(raw, MalformedRowError):
                yield where, MalformedRowError(f"{where}: {raw}")
                continue
            try:
                yield where, parse_unpaired_row(raw)
            except MalformedRowError as e:
                yield where, MalformedRowError(f"{where}: {e}")


class UnpairedDataset(TokenizedDataset):
    """Tokenised labelled responses held in memory, plus what loading skipped.

    Raises:
        ValueError: no valid rows.
    """

    kind = "unpaired dataset"

    def __init__(self, examples: Sequence[TokenizedExample], **kwargs: Any):
        super().__init__(examples, **kwargs)
        self.num_desirable = sum(e.desirable for e in self.examples)

    def max_length(self) -> int:
        """Longest prompt + completion in the dataset (tokens)."""
        return max(len(e.prompt) + len(e.completion) for e in self.examples)

    @property
    def stats(self) -> dict[str, Any]:
        """What loading found (JSON-able), as :attr:`PreferenceDataset.stats`."""
        return self._stats(
            num_desirable=self.num_desirable,
            num_undesirable=len(self) - self.num_desirable,
            num_prompt_truncated=sum(e.prompt_truncated for e in self.examples),
            num_response_truncated=sum(e.response_truncated for e in self.examples),
        )


def format_unpaired_stats(stats: Mapping[str, Any]) -> str:
    """One line for the start of a run, e.g. ``data k.jsonl: 512 examples (260 desirable,
    252 undesirable); no rows skipped or truncated``."""
    head = (
        f"data {stats['source']}: {stats['num_examples']} examples ({stats['num_desirable']} "
        f"desirable, {stats['num_undesirable']} undesirable)"
    )
    rest = format_data_stats(stats).split("; ", 1)[1].replace(" pairs with", " examples with")
    return f"{head}; {rest}"


def load_unpaired_dataset(config: DataConfig, tokenizer: Any) -> UnpairedDataset:
    """Reads, validates and tokenises the unpaired dataset at ``config.path``.

    Raises:
        MalformedRowError: at the first malformed row (``file:line: reason``), unless
            ``config.skip_malformed`` (then skipped and counted).
    """
    examples, skipped = [], []
    num_skipped = 0

    def skip(error: MalformedRowError) -> None:
        nonlocal num_skipped
        if not config.skip_malformed:
            raise error
        num_skipped += 1
        if len(skipped) < MAX_REPORTED_SKIPS:
            skipped.append(str(error))

    for where, row in read_unpaired_rows(config.path, config.format):
        if isinstance(row, MalformedRowError):
            skip(row)
            continue
        try:
            pair = tokenize_preference_row(
                tokenizer,
                _as_pair(row),
                max_length=config.max_length,
                max_prompt_length=config.max_prompt_length,
                use_chat_template=config.use_chat_template,
                add_eos=config.add_eos,
            )
        except Exception as e:  # tokenizers and chat templates raise many kinds
            skip(MalformedRowError(f"{where}: cannot tokenise row: {type(e).__name__}: {e}"))
            continue
        examples.append(
            TokenizedExample(
                pair.prompt,
                pair.chosen,
                row.desirable,
                pair.prompt_truncated,
                pair.response_truncated,
            )
        )
    return UnpairedDataset(
        examples,
        source=str(config.path),
        num_skipped=num_skipped,
        skipped=skipped,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
    )


def _as_pair(row: UnpairedRow) -> PreferenceRow:
    return PreferenceRow(row.prompt, row.completion, row.completion)


def collate_unpaired_batch(
    examples: Sequence[TokenizedExample],
    kl_completions: Sequence[np.ndarray],
    length: int,
    *,
    pad_id: int,
    example_mask: Sequence[float] | None = None,
) -> UnpairedBatch:
    """Right-pads each example and its mismatched KL sequence (``prompt_i ++
    kl_completions[i]``) to ``length``."""
    pairs = [TokenizedPair(e.prompt, e.completion, kl, False, False)
             for e, kl in zip(examples, kl_completions, strict=True)]  # fmt: skip
    padded = collate_preference_batch(pairs, length, pad_id=pad_id, example_mask=example_mask)
    desirable = np.asarray([e.desirable for e in examples], np.float32)
    return UnpairedBatch(*padded[:6], desirable, padded.example_mask)


class UnpairedLoader(PreferenceLoader):
    """The resumable :class:`~jaxalign.data.PreferenceLoader` over an
    :class:`UnpairedDataset`: same order, state and slices, :class:`UnpairedBatch` es out
    (padded to ``max_length`` or a bucket; no packing, no precomputed reference)."""

    def __init__(self, dataset: UnpairedDataset, **kwargs):
        if kwargs.get("packing"):
            raise ValueError("unpaired (KTO) batches are padded; packing=True is not supported")
        super().__init__(dataset, **kwargs)

    def attach_reference_logps(self, chosen, rejected) -> None:
        raise ValueError("unpaired (KTO) batches compute the reference in the step")

    def __next__(self) -> UnpairedBatch:
        state = self._state
        if self.num_epochs is not None and state.epoch >= self.num_epochs:
            raise StopIteration
        rows, num_real = self.global_batch_indices(state)
        examples = [self.dataset[int(i)] for i in rows]
        weights = (np.arange(self.batch_size) < num_real).astype(np.float32)
        # KTO's mismatched pairs over the global batch (every process agrees on them).
        width = self.bucket_sizes[-1]
        kl = [examples[(i + 1) % len(examples)].completion[: width - len(e.prompt)]
              for i, e in enumerate(examples)]  # fmt: skip
        longest = max(len(e.prompt) + max(len(e.completion), len(c))
                      for e, c in zip(examples, kl))  # fmt: skip
        local = self._local
        batch = collate_unpaired_batch(
            examples[local],
            kl[local],
            bucket_length(longest, self.bucket_sizes),
            pad_id=self.pad_id,
            example_mask=weights[local],
        )
        self._state = self._roll_over(
            LoaderState(state.epoch, state.index + self.batch_size, state.seed)
        )
        return batch


def build_unpaired_loader(
    config: DataConfig,
    tokenizer: Any,
    *,
    process_index: int = 0,
    process_count: int = 1,
    state: Mapping[str, Any] | None = None,
    dataset: UnpairedDataset | None = None,
    micro_batches: int = 1,
) -> UnpairedLoader:
    """Loads (unless ``dataset`` is given) and wraps an unpaired dataset per ``config``."""
    if config.packing:
        raise ValueError("data.packing=true is not supported for unpaired (KTO) data")
    dataset = load_unpaired_dataset(config, tokenizer) if dataset is None else dataset
    return UnpairedLoader(
        dataset,
        batch_size=config.batch_size,
        seed=config.seed,
        shuffle=config.shuffle,
        drop_last=config.drop_last,
        bucket_sizes=config.resolved_bucket_sizes(),
        pad_id=pad_token_id(tokenizer),
        process_index=process_index,
        process_count=process_count,
        num_epochs=config.num_epochs,
        state=state,
        micro_batches=micro_batches,
    )


def make_tiny_unpaired_dataset(
    path: str | Path, num_rows: int, seed: int, *, num_words: int = 4, rule: str = "sorted"
) -> Path:
    """Writes ``num_rows`` labelled sorting answers as JSONL and returns the path.

    The task of :func:`~jaxalign.data.make_tiny_preference_dataset` without pairs: each row
    is a prompt ``"sort: w1 w2 …"`` and one answer, desirable (``label: true``) when it lists
    the words in the rule's order, else a random other order (``label: false``); labels
    alternate so the two kinds are balanced.
    """
    if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows < 1:
        raise ValueError(f"num_rows must be a positive integer, got {num_rows!r}")
    if not 2 <= num_words <= len(TINY_WORDS):
        raise ValueError(f"num_words must be in [2, {len(TINY_WORDS)}], got {num_words}")
    if rule not in TINY_RULES:
        raise ValueError(f"rule must be one of {TINY_RULES}, got {rule!r}")
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i in range(num_rows):
            words = [TINY_WORDS[j] for j in rng.choice(len(TINY_WORDS), num_words, replace=False)]
            target = sorted(words, reverse=rule == "reversed")
            desirable = i % 2 == 0
            answer = target
            while not desirable and answer == target:
                answer = [words[j] for j in rng.permutation(num_words)]
            row = {
                "prompt": f"{PROMPT_PREFIX} {' '.join(words)}",
                "completion": " " + " ".join(answer),
                "label": desirable,
            }
            f.write(json.dumps(row) + "\n")
    return path


__all__ = [
    "TokenizedExample",
    "UnpairedBatch",
    "UnpairedDataset",
    "UnpairedLoader",
    "UnpairedRow",
    "build_unpaired_loader",
    "collate_unpaired_batch",
    "format_unpaired_stats",
    "load_unpaired_dataset",
    "make_tiny_unpaired_dataset",
    "parse_unpaired_row",
    "read_unpaired_rows",
]
