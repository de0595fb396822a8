"""Prompt sets for on-policy training: prompts only, tokenised once, drawn with a PRNG key.

Online methods (online Nash/mirror-descent, online DPO, RLHF) sample prompts
``x ~ ρ``, generate responses with the current policy and query an oracle, so
they need prompts and nothing else. Any preference file works as a prompt set:
``chosen``/``rejected`` are ignored when a row has a ``prompt``.

* :func:`read_prompts` — the ``prompt`` of every row of a JSONL/Parquet file
  (or a directory of them), a plain string or chat messages; malformed rows are
  reported as ``file:line``.
* :class:`PromptDataset` — every prompt tokenised exactly as
  :func:`~jaxalign.data.tokenize_preference_row` renders a prompt (shared
  :func:`~jaxalign.data.tokenize_prompt`), cut from the left to its last
  ``max_prompt_length`` tokens (the end is what the response continues) and
  stored LEFT-padded to the fixed width ``max_prompt_length``: one static shape,
  one compilation of the generation step.
* :meth:`PromptDataset.sample` — ``n`` prompts drawn uniformly (with
  replacement by default) from a ``jax.random`` key: the same global draw on
  every process; :func:`local_prompt_batch` keeps this process's rows, as
  :class:`~jaxalign.data.PreferenceLoader` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.data.loader import pad_token_id as _tokenizer_pad_id
from jaxalign.data.loader import process_slice
from jaxalign.data.preference import (
    MalformedRowError,
    Text,
    as_messages,
    dataset_files,
    detect_format,
    parse_preference_row,
    row_reader,
)
from jaxalign.data.tokenize import tokenize_prompt

MAX_REPORTED_SKIPS = 20


def parse_prompt_row(row: Any) -> Text:
    """The prompt of one raw row (a mapping), normalised like :func:`parse_preference_row`.

    A ``prompt`` that is a string stays a string, unless ``chosen`` or
    ``rejected`` is a conversation, in which case it becomes a ``user``
    message (as the preference reader does, so both render the same tokens).
    Without a ``prompt`` the row must be a full preference conversation whose
    shared leading messages are the prompt. Other keys are ignored.

    Raises:
        MalformedRowError: naming the problem (without location; readers add it).
    """
    if not isinstance(row, Mapping):
        raise MalformedRowError(f"row must be a JSON object, got {type(row).__name__}")
    if row.get("prompt") is None:
        if "chosen" in row and "rejected" in row:
            return parse_preference_row(row).prompt
        raise MalformedRowError("missing key 'prompt'")
    prompt = as_messages(row["prompt"], "prompt")
    if isinstance(prompt, str):
        if not prompt:
            raise MalformedRowError("'prompt' is empty")
        if any(isinstance(row.get(k), list) for k in ("chosen", "rejected")):
            return [{"role": "user", "content": prompt}]
        return prompt
    if not prompt:
        raise MalformedRowError("'prompt' is an empty conversation")
    return prompt


def iter_prompt_rows(
    path: str | Path, fmt: str = "auto"
) -> Iterator[tuple[str, Text | MalformedRowError]]:
    """Yields ``(location, prompt_or_error)`` for every row of the file(s) at ``path``.

    ``location`` is ``"file:line"`` (JSONL) or ``"file:row n"`` (Parquet); an
    error's message starts with it.
    """
    if fmt not in ("auto", "jsonl", "parquet"):
        raise ValueError(f"format must be 'auto', 'jsonl' or 'parquet', got {fmt!r}")
    for file in dataset_files(path, fmt):
        reader = row_reader(detect_format(file, fmt))
        for where, raw in reader(file):
            if isinstance(raw, MalformedRowError):
                yield where, MalformedRowError(f"{where}: {raw}")
                continue
            try:
                yield where, parse_prompt_row(raw)
            except MalformedRowError as e:
                yield where, MalformedRowError(f"{where}: {e}")


def read_prompts(
    path: str | Path, fmt: str = "auto", *, skip_malformed: bool = False
) -> list[Text]:
    """The prompts of every row of a JSONL/Parquet file or a directory of them.

    Args:
        path: a file, or a directory whose data files are read in name order.
        fmt: ``"auto"`` (by suffix), ``"jsonl"`` or ``"parquet"``.
        skip_malformed: skip malformed rows instead of raising (count them with
            :func:`iter_prompt_rows` or :func:`load_prompt_dataset`).

    Returns:
        The prompts in file order: strings or lists of ``{role, content}`` messages.

    Raises:
        MalformedRowError: ``file:line: reason`` at the first malformed row
            (unless ``skip_malformed``), or when no row is valid.
    """
    prompts = []
    for _, prompt in iter_prompt_rows(path, fmt):
        if isinstance(prompt, MalformedRowError):
            if not skip_malformed:
                raise prompt
            continue
        prompts.append(prompt)
    if not prompts:
        raise MalformedRowError(f"{str(path)!r} has no valid prompt rows")
    return prompts


class PromptBatch(NamedTuple):
    """Left-padded prompts: ``tokens, mask = batch``."""

    tokens: np.ndarray  # (n, P) int32, pad ids then the prompt
    mask: np.ndarray  # (n, P) int32, 1 on real prompt tokens


def local_prompt_batch(
    batch: PromptBatch, *, process_index: int, process_count: int
) -> PromptBatch:
    """The rows of a global draw that process ``p`` of ``P`` feeds: ``[p·n/P, (p+1)·n/P)``.

    Matches :func:`~jaxalign.data.process_slice` and
    :func:`jaxalign.parallel.shard_batch` on the standard mesh.
    """
    rows = process_slice(int(batch.tokens.shape[0]), process_index, process_count)
    return PromptBatch(batch.tokens[rows], batch.mask[rows])


class PromptDataset:
    """Tokenised, left-padded prompts of one static width, sampled with a PRNG key.

    Row ``i`` is ``[pad … pad, prompt_i]``: ``tokens[i, P - len_i:]`` holds the
    (possibly left-truncated) prompt ids and ``mask[i]`` is 1 exactly there, so
    generation continues every prompt from the last column.

    Args:
        prompts: strings or chat-message lists (e.g. from :func:`read_prompts`).
        tokenizer: a Hugging Face tokenizer.
        max_prompt_length: the width ``P``; longer prompts keep their last ``P`` tokens.
        use_chat_template: render conversations with the tokenizer's chat
            template (with the generation prompt) when it has one.
        pad_token_id: padding id (default: the tokenizer's pad id, else EOS, else 0).
        locations: one label per prompt for error messages (default ``prompt i``).
        skip_malformed: skip prompts that fail to tokenise or give no token,
            instead of raising.
        source / num_skipped / skipped: provenance and rows skipped while reading.

    Attributes:
        tokens, mask: ``(N, P)`` int32 numpy arrays.
        lengths: ``(N,)`` int32 real tokens per prompt (after truncation).
        prompts: the kept prompt texts (for text-based oracles and logs).
        num_truncated: prompts that lost leading tokens.
        num_skipped, skipped: skipped rows/prompts and the first messages.
    """

    def __init__(
        self,
        prompts: Sequence[Text],
        tokenizer: Any,
        *,
        max_prompt_length: int,
        use_chat_template: bool = True,
        pad_token_id: int | None = None,
        locations: Sequence[str] | None = None,
        skip_malformed: bool = False,
        source: str = "",
        num_skipped: int = 0,
        skipped: Sequence[str] = (),
    ):
        if (
            isinstance(max_prompt_length, bool)
            or not isinstance(max_prompt_length, int | np.integer)
            or max_prompt_length < 1
        ):
            raise ValueError(
                f"max_prompt_length must be a positive integer, got {max_prompt_length!r}"
            )
        if isinstance(prompts, str | Mapping):
            raise ValueError(
                f"prompts must be a sequence of prompts, got a single {type(prompts).__name__}"
            )
        prompts = list(prompts)
        if locations is not None and len(locations) != len(prompts):
            raise ValueError(
                f"locations has {len(locations)} entries but there are {len(prompts)} prompts"
            )
        width = int(max_prompt_length)
        self.pad_token_id = int(
            _tokenizer_pad_id(tokenizer) if pad_token_id is None else pad_token_id
        )
        skipped = list(skipped)
        kept, ids_list = [], []
        num_truncated = 0
        for i, prompt in enumerate(prompts):
            where = f"prompt {i}" if locations is None else locations[i]
            try:
                ids = tokenize_prompt(tokenizer, prompt, use_chat_template=use_chat_template)
                if not ids:
                    raise MalformedRowError("the prompt has no tokens")
            except Exception as e:  # tokenizers and chat templates raise many kinds
                error = MalformedRowError(f"{where}: cannot tokenise prompt: {e}")
                if not skip_malformed:
                    raise error from e
                num_skipped += 1
                if len(skipped) < MAX_REPORTED_SKIPS:
                    skipped.append(str(error))
                continue
            if len(ids) > width:
                num_truncated += 1
                ids = ids[len(ids) - width :]
            kept.append(prompt)
            ids_list.append(ids)
        if not ids_list:
            raise ValueError(f"prompt dataset {source!r} has no valid prompts")
        n = len(ids_list)
        tokens = np.full((n, width), self.pad_token_id, np.int32)
        mask = np.zeros((n, width), np.int32)
        for i, ids in enumerate(ids_list):
            tokens[i, width - len(ids) :] = ids
            mask[i, width - len(ids) :] = 1
        self.tokens = tokens
        self.mask = mask
        self.lengths = mask.sum(axis=1, dtype=np.int32)
        self.prompts = tuple(kept)
        self.num_truncated = num_truncated
        self.source = source
        self.num_skipped = num_skipped
        self.skipped = tuple(skipped)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def prompt_length(self) -> int:
        """The fixed width ``P`` of every prompt row (``max_prompt_length``)."""
        return int(self.tokens.shape[1])

    @property
    def stats(self) -> dict[str, Any]:
        """Counts for logs (:func:`~jaxalign.data.format_data_stats`) and ``summary.json``:
        prompts, skipped rows, truncations, lengths."""
        return {
            "source": self.source,
            "num_prompts": len(self),
            "num_skipped": self.num_skipped,
            "num_prompt_truncated": self.num_truncated,
            "max_prompt_length": self.prompt_length,
            "first_skipped": self.skipped[0] if self.skipped else None,
            "max_prompt_tokens": int(self.lengths.max()),
            "mean_prompt_tokens": float(self.lengths.mean()),
        }

    def batch_indices(self, key: jax.Array, n: int, *, replace: bool = True) -> jax.Array:
        """``n`` prompt indices drawn uniformly from ``key``: int32 ``(n,)``.

        A pure function of ``(key, n, len(self))``, so every process draws the
        same global indices; traceable under ``jit``.

        Args:
            key: a ``jax.random`` key.
            n: number of prompts (static).
            replace: i.i.d. draws (default); ``False`` draws ``n <= len(self)``
                distinct prompts (a uniformly random subset in random order).
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        size = len(self)
        if replace:
            return jax.random.randint(key, (int(n),), 0, size, dtype=jnp.int32)
        if n > size:
            raise ValueError(f"cannot draw n={n} distinct prompts from {size} (replace=False)")
        return jax.random.permutation(key, size)[: int(n)].astype(jnp.int32)

    def take(self, indices: Any) -> PromptBatch:
        """The prompts at ``indices`` (host numpy arrays)."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"indices must be in [0, {len(self)}), got {idx.min()}..{idx.max()}")
        return PromptBatch(self.tokens[idx], self.mask[idx])

    def sample(self, key: jax.Array, n: int, *, replace: bool = True) -> PromptBatch:
        """``n`` prompts drawn uniformly with ``key``: ``(tokens, mask)``, int32 ``(n, P)``.

        Deterministic given the key and identical on every process (slice with
        :func:`local_prompt_batch`). Host-side; inside ``jit`` gather from
        ``jnp.asarray(self.tokens)`` with :meth:`batch_indices` instead.
        """
        return self.take(self.batch_indices(key, n, replace=replace))


def load_prompt_dataset(
    path: str | Path,
    tokenizer: Any,
    *,
    max_prompt_length: int,
    fmt: str = "auto",
    skip_malformed: bool = False,
    use_chat_template: bool = True,
    pad_token_id: int | None = None,
) -> PromptDataset:
    """Reads the prompts at ``path`` and tokenises them into a :class:`PromptDataset`.

    With a :class:`~jaxalign.data.DataConfig` ``c``:
    ``load_prompt_dataset(c.path, tok, max_prompt_length=c.max_prompt_length,
    fmt=c.format, skip_malformed=c.skip_malformed, use_chat_template=c.use_chat_template)``.

    Raises:
        MalformedRowError: ``file:line: reason`` at the first malformed row or
            prompt that fails to tokenise, unless ``skip_malformed`` (then such
            rows are counted in ``num_skipped``).
    """
    prompts, locations, skipped = [], [], []
    num_skipped = 0
    for where, prompt in iter_prompt_rows(path, fmt):
        if isinstance(prompt, MalformedRowError):
            if not skip_malformed:
                raise prompt
            num_skipped += 1
            if len(skipped) < MAX_REPORTED_SKIPS:
                skipped.append(str(prompt))
            continue
        prompts.append(prompt)
        locations.append(where)
    return PromptDataset(
        prompts,
        tokenizer,
        max_prompt_length=max_prompt_length,
        use_chat_template=use_chat_template,
        pad_token_id=pad_token_id,
        locations=locations,
        skip_malformed=skip_malformed,
        source=str(path),
        num_skipped=num_skipped,
        skipped=skipped,
    )


__all__ = [
    "PromptBatch",
    "PromptDataset",
    "iter_prompt_rows",
    "load_prompt_dataset",
    "local_prompt_batch",
    "parse_prompt_row",
    "read_prompts",
]
