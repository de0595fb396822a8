"""Supervised fine-tuning (SFT) data: rows → token sequences with a completion-only loss mask.

Accepted rows (JSONL or Parquet, a file or a directory of them; extra keys are ignored):

* prompt / completion, plain text: ``{"prompt": "2+2=", "completion": " 4"}`` — the prompt
  is tokenised with the tokenizer's special tokens (BOS where it adds one), the completion
  without, plus EOS (``add_eos``), exactly as a preference row's prompt and response
  (:func:`~jaxalign.data.tokenize_preference_row`);
* prompt / completion, conversational: ``{"prompt": [messages], "completion": [messages]}``;
* chat: ``{"messages": [{"role": "system" | "user" | "assistant", "content": ...}, ...]}`` —
  every ``assistant`` message is trained, everything else is context.

Only completion (assistant) tokens are prediction targets: ``loss_mask[t] = 1`` iff token
``t`` belongs to a trained part, so the prompt, the other roles' turns and the chat
template's role markers carry no loss. A conversation is rendered with the tokenizer's chat
template (``use_chat_template``) by prefix differences: the text that the template adds for
message ``i`` is ``template(m[:i+1]) − template(m[:i])``, and for an assistant message the
generation prompt (``template(m[:i], add_generation_prompt=True)``) is context while the rest
(content and end-of-turn tokens) is trained. Without a template, messages are rendered as
``role: content`` lines and an assistant turn trains its content plus EOS. Adjacent pieces
of the same kind are tokenised together, so a single-turn conversation has exactly the
tokens of the preference path.

Truncation: the context before the first trained token keeps its last ``max_prompt_length``
tokens; then the sequence keeps its first ``max_length`` tokens. A row with no trained token
left is malformed. Every problem is a :class:`~jaxalign.data.MalformedRowError` starting
with ``file:line`` (JSONL) or ``file:row n`` (Parquet), e.g.
``sft.jsonl:3: 'messages' has no assistant message to train on``.

Batches: :class:`SFTBatch` (right-padded rows) or :class:`PackedSFTBatch` (several sequences
per row; attention and positions restart per sequence, see :mod:`jaxalign.data.packing`), from
the resumable :class:`SFTLoader` (the :class:`~jaxalign.data.PreferenceLoader`'s order, state
and per-process slices).
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
    pad_token_id,
    process_slice,
)
from jaxalign.data.packing import first_fit_decreasing, micro_batch_groups
from jaxalign.data.preference import (
    MalformedRowError,
    Message,
    as_messages,
    dataset_files,
    detect_format,
    row_reader,
)
from jaxalign.data.synthetic import PROMPT_PREFIX, TINY_RULES, TINY_WORDS


class SFTRow(NamedTuple):
    """One SFT example, normalised: a plain prompt and completion (strings), or a
    conversation whose messages marked in ``trained`` carry the loss."""

    prompt: str  # plain rows ("" for conversations)
    completion: str  # plain rows ("" for conversations)
    messages: tuple[Message, ...] = ()  # conversations
    trained: tuple[bool, ...] = ()  # per message: its tokens are prediction targets

    @property
    def conversational(self) -> bool:
        return bool(self.messages)


class TokenizedSFTExample(NamedTuple):
    """One tokenised example after truncation."""

    input_ids: np.ndarray  # (n,) int32
    targets: np.ndarray  # (n,) bool, True on completion (assistant) tokens
    prompt_truncated: bool  # the context before the first completion token lost tokens
    truncated: bool  # the sequence was cut to max_length


class SFTBatch(NamedTuple):
    """Right-padded SFT sequences (numpy; a pytree for ``shard_batch``).

    ``loss_mask[b, t] = 1`` iff token ``t`` of row ``b`` is a completion token and ``t ≥ 1``
    (its log-prob comes from the logits at ``t − 1``).
    """

    input_ids: np.ndarray  # (B, L) int32, sequence ++ pad
    attention_mask: np.ndarray  # (B, L) int32, 1 on real tokens
    loss_mask: np.ndarray  # (B, L) float32, 1 on completion tokens (targets)
    example_mask: np.ndarray  # (B,) float32, 0 for filler rows of a partial last batch


class PackedSFTBatch(NamedTuple):
    """SFT sequences packed end to end into rows of ``W`` tokens (``R`` rows)."""

    input_ids: np.ndarray  # (R, W) int32, sequences end to end, pad id after them
    segment_ids: np.ndarray  # (R, W) int32, 1, 2, … per sequence of the row; 0 = padding
    positions: np.ndarray  # (R, W) int32, restart at 0 for every sequence
    loss_mask: np.ndarray  # (R, W) float32, 1 on completion tokens (never a segment's first)
    example_mask: np.ndarray  # (B,) float32, 0 for filler examples of a partial last batch


# ----------------------------------------------------------------------------- rows


def parse_sft_row(row: Any) -> SFTRow:
    """Validates one raw row (a mapping) and normalises it to an :class:`SFTRow`.

    Raises:
        MalformedRowError: naming the problem (without location; readers add it).
    """
    if not isinstance(row, Mapping):
        raise MalformedRowError(f"row must be a JSON object, got {type(row).__name__}")
    if row.get("messages") is not None:
        if row.get("completion") is not None:
            raise MalformedRowError("give 'messages' (a chat) or 'prompt'/'completion', not both")
        messages = as_messages(row["messages"], "messages")
        if isinstance(messages, str) or not messages:
            raise MalformedRowError("'messages' must be a non-empty list of {role, content}")
        trained = tuple(m["role"] == "assistant" for m in messages)
        if not any(trained):
            raise MalformedRowError("'messages' has no assistant message to train on")
        return SFTRow("", "", tuple(messages), trained)
    for key in ("prompt", "completion"):
        if row.get(key) is None:
            raise MalformedRowError(
                f"missing key {key!r} (rows are prompt/completion pairs or 'messages' chats)"
            )
    prompt = as_messages(row["prompt"], "prompt")
    completion = as_messages(row["completion"], "completion")
    if not completion:
        raise MalformedRowError("'completion' is empty")
    if isinstance(prompt, str) and isinstance(completion, str):
        return SFTRow(prompt, completion)
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}] if prompt else []
    if isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    if not prompt:
        raise MalformedRowError("'prompt' is an empty conversation")
    messages = (*prompt, *completion)
    return SFTRow("", "", messages, (False,) * len(prompt) + (True,) * len(completion))


def read_sft_rows(
    path: str | Path, fmt: str = "auto"
) -> Iterator[tuple[str, SFTRow | MalformedRowError]]:
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
                yield where, parse_sft_row(raw)
            except MalformedRowError as e:
                yield where, MalformedRowError(f"{where}: {e}")


# ----------------------------------------------------------------------------- tokenising


def _pieces(tokenizer: Any, row: SFTRow, *, use_chat_template: bool, add_eos: bool):
    """``(text, trained)`` pieces of a conversation, in order (see the module docstring)."""
    messages = [dict(m) for m in row.messages]
    eos = getattr(tokenizer, "eos_token", None) or ""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        render = lambda ms, gen=False: tokenizer.apply_chat_template(
            ms, tokenize=False, add_generation_prompt=gen
        )
        pieces, done = [], ""
        for i, trained in enumerate(row.trained):
            full = render(messages[: i + 1])
            head = render(messages[:i], True) if trained else done
            if not (head.startswith(done) and full.startswith(head)):
                raise MalformedRowError(
                    "the tokenizer's chat template rewrites earlier turns, so the tokens of "
                    f"message {i} cannot be told apart; set data.use_chat_template=false"
                )
            pieces += [(head[len(done) :], False), (full[len(head) :], trained)]
            done = full
        return pieces
    pieces = []
    for i, (m, trained) in enumerate(zip(messages, row.trained)):
        if trained:
            end = eos if add_eos else ""
            pieces += [(f"{m['role']}: ", False), (m["content"] + end, True)]
            pieces.append(("\n", False) if i + 1 < len(messages) else ("", False))
        else:
            pieces.append((f"{m['role']}: {m['content']}\n", False))
    return pieces


def _tokenize_pieces(tokenizer: Any, pieces) -> tuple[list[int], list[bool]]:
    """Adjacent pieces of one kind merged and tokenised; the first with special tokens."""
    merged: list[list] = []
    for text, trained in pieces:
        if not text:
            continue
        if merged and merged[-1][1] == trained:
            merged[-1][0] += text
        else:
            merged.append([text, trained])
    ids: list[int] = []
    targets: list[bool] = []
    for k, (text, trained) in enumerate(merged):
        # Special tokens (BOS) with the first piece only, and only when it is context.
        special = k == 0 and not trained
        part = list(tokenizer(text, add_special_tokens=special)["input_ids"])
        ids += part
        targets += [trained] * len(part)
    return ids, targets


def tokenize_sft_row(
    tokenizer: Any,
    row: SFTRow,
    *,
    max_length: int,
    max_prompt_length: int,
    use_chat_template: bool = True,
    add_eos: bool = True,
) -> TokenizedSFTExample:
    """Tokenises and truncates one :class:`SFTRow` (see the module docstring).

    Raises:
        MalformedRowError: no completion token is left within ``max_length`` (or the chat
            template rewrites earlier turns).
    """
    if max_prompt_length >= max_length:
        raise ValueError(f"max_prompt_length={max_prompt_length} must be < max_length={max_length}")
    if row.conversational:
        pieces = _pieces(tokenizer, row, use_chat_template=use_chat_template, add_eos=add_eos)
        ids, targets = _tokenize_pieces(tokenizer, pieces)
    else:
        prompt = list(tokenizer(row.prompt, add_special_tokens=True)["input_ids"])
        eos = getattr(tokenizer, "eos_token_id", None)
        completion = list(tokenizer(row.completion, add_special_tokens=False)["input_ids"])
        completion += [int(eos)] if add_eos and eos is not None else []
        ids, targets = prompt + completion, [False] * len(prompt) + [True] * len(completion)
    first = targets.index(True) if True in targets else len(targets)
    prompt_truncated = first > max_prompt_length
    if prompt_truncated:
        cut = first - max_prompt_length
        ids, targets = ids[cut:], targets[cut:]
    truncated = len(ids) > max_length
    ids, targets = ids[:max_length], targets[:max_length]
    # Position 0 has no preceding logits: it can never be a target.
    if not any(targets[1:]):
        raise MalformedRowError(
            f"no completion token left within max_length={max_length} (max_prompt_length="
            f"{max_prompt_length}); raise data.max_length"
        )
    return TokenizedSFTExample(
        np.asarray(ids, np.int32), np.asarray(targets, bool), prompt_truncated, truncated
    )


# ----------------------------------------------------------------------------- datasets


class SFTDataset(TokenizedDataset):
    """Tokenised SFT examples held in memory, plus what loading skipped.

    Raises:
        ValueError: no valid rows.
    """

    kind = "SFT dataset"

    def max_length(self) -> int:
        """Longest sequence in the dataset (tokens)."""
        return max(len(e.input_ids) for e in self.examples)

    @property
    def stats(self) -> dict[str, Any]:
        """What loading found (JSON-able), as :attr:`PreferenceDataset.stats`."""
        return self._stats(
            num_target_tokens=int(sum(int(e.targets[1:].sum()) for e in self.examples)),
            num_prompt_truncated=sum(e.prompt_truncated for e in self.examples),
            num_truncated=sum(e.truncated for e in self.examples),
        )


def format_sft_stats(stats: Mapping[str, Any]) -> str:
    """One line for the start of a run, e.g. ``data s.jsonl: 512 examples (3072 completion
    tokens); no rows skipped or truncated``."""
    parts = []
    if stats.get("num_skipped"):
        first = f" (first: {stats['first_skipped']})" if stats.get("first_skipped") else ""
        parts.append(f"{stats['num_skipped']} malformed rows skipped{first}")
    if stats.get("num_prompt_truncated"):
        n, limit = stats["num_prompt_truncated"], stats.get("max_prompt_length")
        parts.append(f"{n} prompts truncated to max_prompt_length={limit}")
    if stats.get("num_truncated"):
        parts.append(f"{stats['num_truncated']} examples cut to max_length={stats['max_length']}")
    head = (
        f"data {stats['source']}: {stats['num_examples']} examples "
        f"({stats['num_target_tokens']} completion tokens)"
    )
    return "; ".join([head, *(parts or ["no rows skipped or truncated"])])


def load_sft_dataset(config: DataConfig, tokenizer: Any, path: str | None = None) -> SFTDataset:
    """Reads, validates and tokenises the SFT rows at ``path`` (default ``config.path``).

    Raises:
        MalformedRowError: at the first malformed row (``file:line: reason``), unless
            ``config.skip_malformed`` (then skipped and counted).
    """
    path = config.path if path is None else path
    examples, skipped = [], []
    num_skipped = 0

    def skip(error: MalformedRowError) -> None:
        nonlocal num_skipped
        if not config.skip_malformed:
            raise error
        num_skipped += 1
        if len(skipped) < MAX_REPORTED_SKIPS:
            skipped.append(str(error))

    for where, row in read_sft_rows(path, config.format):
        if isinstance(row, MalformedRowError):
            skip(row)
            continue
        try:
            example = tokenize_sft_row(
                tokenizer,
                row,
                max_length=config.max_length,
                max_prompt_length=config.max_prompt_length,
                use_chat_template=config.use_chat_template,
                add_eos=config.add_eos,
            )
        except MalformedRowError as e:
            skip(MalformedRowError(f"{where}: {e}"))
            continue
        except Exception as e:  # tokenizers and chat templates raise many kinds
            skip(MalformedRowError(f"{where}: cannot tokenise row: {type(e).__name__}: {e}"))
            continue
        examples.append(example)
    return SFTDataset(
        examples,
        source=str(path),
        num_skipped=num_skipped,
        skipped=skipped,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
    )


# ----------------------------------------------------------------------------- batches


def collate_sft_batch(
    examples: Sequence[TokenizedSFTExample],
    length: int,
    *,
    pad_id: int,
    example_mask: Sequence[float] | None = None,
) -> SFTBatch:
    """Right-pads examples to ``length``; filler rows (``example_mask`` 0) keep their tokens
    (a finite forward pass) but get an all-zero loss mask."""
    b = len(examples)
    weights = np.ones(b, np.float32) if example_mask is None else np.asarray(example_mask)
    ids = np.full((b, length), pad_id, np.int32)
    attention = np.zeros((b, length), np.int32)
    loss = np.zeros((b, length), np.float32)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        if n > length:
            raise ValueError(f"sequence of {n} tokens does not fit in length {length}")
        ids[i, :n] = e.input_ids
        attention[i, :n] = 1
        if weights[i]:
            loss[i, 1:n] = e.targets[1:]
    return SFTBatch(ids, attention, loss, weights.astype(np.float32))


def packed_sft_rows_needed(
    examples: Sequence[TokenizedSFTExample],
    width: int,
    *,
    micro_batches: int = 1,
    offset: int = 0,
) -> int:
    """Rows per micro-batch that :func:`pack_sft_examples` needs for ``examples``."""
    groups = micro_batch_groups(len(examples), micro_batches, offset)
    lengths = [len(e.input_ids) for e in examples]
    return max(len(first_fit_decreasing([lengths[j] for j in g], width)) for g in groups)


def pack_sft_examples(
    examples: Sequence[TokenizedSFTExample],
    width: int,
    *,
    pad_id: int,
    example_mask: Sequence[float] | None = None,
    micro_batches: int = 1,
    rows: int | None = None,
    offset: int = 0,
) -> PackedSFTBatch:
    """Packs examples first-fit decreasing into ``micro_batches × rows`` rows of ``width``.

    Example ``j`` (global index ``offset + j``) belongs to micro-batch ``(offset + j) mod k``
    and row ``r·k + m`` to micro-batch ``m``, as in
    :func:`~jaxalign.data.pack_preference_pairs`; ``segment_ids`` number a row's sequences
    (1, 2, …; 0 = padding) so each attends only to itself, ``positions`` restart at 0, and a
    segment's first token is never a target.

    Raises:
        ValueError: a sequence longer than ``width``, or ``rows`` too few.
    """
    k = int(micro_batches)
    weights = np.ones(len(examples), np.float32) if example_mask is None else example_mask
    weights = np.asarray(weights, np.float32)
    groups = micro_batch_groups(len(examples), k, offset)
    lengths = [len(e.input_ids) for e in examples]
    bins = [[[g[i] for i in b] for b in first_fit_decreasing([lengths[j] for j in g], width)]
            for g in groups]  # fmt: skip
    need = max(len(x) for x in bins)
    rows = need if rows is None else int(rows)
    if rows < need:
        raise ValueError(f"the examples need {need} packed rows per micro-batch, only {rows} given")
    shape = (rows * k, width)
    ids = np.full(shape, pad_id, np.int32)
    segments, positions = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    loss = np.zeros(shape, np.float32)
    for m, row_bins in enumerate(bins):
        for r, members in enumerate(row_bins):
            row, start = r * k + m, 0
            for segment, j in enumerate(members, start=1):
                e = examples[j]
                stop = start + len(e.input_ids)
                ids[row, start:stop] = e.input_ids
                segments[row, start:stop] = segment
                positions[row, start:stop] = np.arange(stop - start)
                if weights[j]:
                    loss[row, start + 1 : stop] = e.targets[1:]
                start = stop
    return PackedSFTBatch(ids, segments, positions, loss, weights)


class SFTLoader(PreferenceLoader):
    """The resumable :class:`~jaxalign.data.PreferenceLoader` over an :class:`SFTDataset`:
    same order, state and per-process slices; :class:`SFTBatch` es (padded to one length
    for the whole global batch) or, with ``packing``, :class:`PackedSFTBatch` es."""

    def attach_reference_logps(self, chosen, rejected) -> None:
        raise ValueError("SFT batches have no reference model")

    def __next__(self) -> SFTBatch | PackedSFTBatch:
        state = self._state
        if self.num_epochs is not None and state.epoch >= self.num_epochs:
            raise StopIteration
        rows, num_real = self.global_batch_indices(state)
        examples = [self.dataset[int(i)] for i in rows]
        weights = (np.arange(self.batch_size) < num_real).astype(np.float32)
        local = self._local
        if self.packing:
            batch = self._pack_sft(examples, weights)
        else:
            longest = max(len(e.input_ids) for e in examples)
            batch = collate_sft_batch(
                examples[local],
                bucket_length(longest, self.bucket_sizes),
                pad_id=self.pad_id,
                example_mask=weights[local],
            )
        self._state = self._roll_over(
            LoaderState(state.epoch, state.index + self.batch_size, state.seed)
        )
        return batch

    def _pack_sft(self, examples, weights) -> PackedSFTBatch:
        """As many rows per micro-batch as the fullest process needs (every process computes
        them all, so shapes agree without talking), rounded up to ``row_multiple``."""
        width, k = self.packing_length, self.micro_batches
        need = max(
            packed_sft_rows_needed(examples[s], width, micro_batches=k, offset=s.start)
            for s in (process_slice(self.batch_size, p, self.process_count)
                      for p in range(self.process_count))
        )  # fmt: skip
        rows = -(-need // self.row_multiple) * self.row_multiple
        local = self._local
        return pack_sft_examples(
            examples[local],
            width,
            pad_id=self.pad_id,
            example_mask=weights[local],
            micro_batches=k,
            rows=rows,
            offset=local.start,
        )


def build_sft_loader(
    config: DataConfig,
    tokenizer: Any,
    *,
    process_index: int = 0,
    process_count: int = 1,
    state: LoaderState | Mapping[str, Any] | None = None,
    dataset: SFTDataset | None = None,
    micro_batches: int = 1,
    row_multiple: int = 1,
) -> SFTLoader:
    """Loads (unless ``dataset`` is given) and wraps an SFT dataset per ``config``."""
    dataset = load_sft_dataset(config, tokenizer) if dataset is None else dataset
    return SFTLoader.from_config(
        dataset,
        config,
        pad_id=pad_token_id(tokenizer),
        process_index=process_index,
        process_count=process_count,
        state=state,
        micro_batches=micro_batches,
        row_multiple=row_multiple,
    )


def make_tiny_sft_dataset(
    path: str | Path,
    num_rows: int,
    seed: int,
    *,
    num_words: int = 4,
    rule: str = "sorted",
    chat: bool = False,
) -> Path:
    """Writes ``num_rows`` sorting demonstrations as JSONL and returns the path.

    The task of :func:`~jaxalign.data.make_tiny_preference_dataset` as supervised data: the
    prompt ``"sort: w1 w2 …"`` and the completion listing the words in the rule's order
    (``chat``: ``messages`` rows, a user turn and an assistant turn, instead).
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
        for _ in range(num_rows):
            words = [TINY_WORDS[j] for j in rng.choice(len(TINY_WORDS), num_words, replace=False)]
            prompt = f"{PROMPT_PREFIX} {' '.join(words)}"
            answer = " ".join(sorted(words, reverse=rule == "reversed"))
            if chat:
                row = {"messages": [{"role": "user", "content": prompt},
                                    {"role": "assistant", "content": answer}]}  # fmt: skip
            else:
                row = {"prompt": prompt, "completion": " " + answer}
            f.write(json.dumps(row) + "\n")
    return path


__all__ = [
    "PackedSFTBatch",
    "SFTBatch",
    "SFTDataset",
    "SFTLoader",
    "SFTRow",
    "TokenizedSFTExample",
    "build_sft_loader",
    "collate_sft_batch",
    "format_sft_stats",
    "load_sft_dataset",
    "make_tiny_sft_dataset",
    "pack_sft_examples",
    "packed_sft_rows_needed",
    "parse_sft_row",
    "read_sft_rows",
    "tokenize_sft_row",
]
