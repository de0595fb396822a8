"""Tokenised preference datasets and a deterministic, resumable batch iterator.

Order of examples: epoch ``e`` visits the rows in the permutation drawn from
``numpy.random.default_rng([seed, e])`` (the epoch folded into the seed), so
any position is reproducible from ``(epoch, index, seed)`` alone. That triple,
:class:`LoaderState`, is the iterator's whole state: save it with a checkpoint
(``loader.state_dict()`` is JSON-able) and a loader restored from it yields
exactly the batches the uninterrupted one would have.

Multi-host: the permutation and batch boundaries are global; process ``p`` of
``P`` keeps rows ``[p·B/P, (p+1)·B/P)`` of every global batch
(:func:`process_slice`), matching :func:`jaxalign.parallel.shard_batch` on the
standard mesh. Padding lengths (buckets) are chosen from the whole global
batch so every process builds arrays of the same shape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxalign.data.config import DataConfig
from jaxalign.data.packing import PackedPreferenceBatch, pack_preference_pairs, packed_rows_needed
from jaxalign.data.preference import MalformedRowError, read_preference_rows
from jaxalign.data.tokenize import TokenizedPair, tokenize_preference_row

MAX_REPORTED_SKIPS = 20


class PreferenceBatch(NamedTuple):
    """A batch of right-padded preference pairs (numpy; a pytree for ``shard_batch``).

    ``loss_mask[b, t] = 1`` iff token ``t`` of row ``b`` is a response token, i.e.
    a prediction target: its log-prob comes from the logits at position ``t-1``.
    """

    chosen_input_ids: np.ndarray  # (B, L) int32, prompt ++ chosen ++ pad
    chosen_attention_mask: np.ndarray  # (B, L) int32, 1 on real tokens
    chosen_loss_mask: np.ndarray  # (B, L) float32, 1 on chosen response tokens
    rejected_input_ids: np.ndarray  # (B, L) int32
    rejected_attention_mask: np.ndarray  # (B, L) int32
    rejected_loss_mask: np.ndarray  # (B, L) float32
    example_mask: np.ndarray  # (B,) float32, 0 for filler rows of a partial last batch
    # log π_ref of each response when precomputed (the step then skips the reference).
    reference_chosen_logp: np.ndarray | None = None  # (B,) float32
    reference_rejected_logp: np.ndarray | None = None  # (B,) float32


class LoaderState(NamedTuple):
    """Position of a :class:`PreferenceLoader`: the next batch starts here."""

    epoch: int  # epochs completed
    index: int  # examples of this epoch's permutation already consumed
    seed: int  # shuffling seed

    def to_dict(self) -> dict[str, int]:
        return {"epoch": int(self.epoch), "index": int(self.index), "seed": int(self.seed)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoaderState:
        try:
            values = {k: data[k] for k in cls._fields}
        except KeyError as e:
            raise ValueError(f"loader state {dict(data)!r} is missing {e.args[0]!r}") from None
        for k, v in values.items():
            if isinstance(v, bool) or not isinstance(v, int) or (k != "seed" and v < 0):
                raise ValueError(f"loader state field {k!r} must be a non-negative int, got {v!r}")
        return cls(**values)


class TokenizedDataset:
    """Tokenised examples held in memory, plus what loading skipped: the part every dataset
    kind (:class:`PreferenceDataset`, SFT, unpaired) shares.

    Attributes:
        examples: the tokenised examples in file order.
        source: where they were read from.
        num_skipped: malformed rows skipped (``skip_malformed=True``).
        skipped: the first skip messages (``file:line: reason``).
        truncation: ``(max_length, max_prompt_length)`` the rows were cut to.

    Raises:
        ValueError: no valid rows.
    """

    kind = "dataset"  # named in the error for an empty dataset

    def __init__(
        self,
        examples: Sequence[Any],
        *,
        source: str = "",
        num_skipped: int = 0,
        skipped: Sequence[str] = (),
        max_length: int | None = None,
        max_prompt_length: int | None = None,
    ):
        if not examples:
            raise ValueError(f"{self.kind} {source!r} has no valid rows")
        self.examples = tuple(examples)
        self.source = source
        self.num_skipped = num_skipped
        self.skipped = tuple(skipped)
        self.truncation = (max_length, max_prompt_length)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Any:
        return self.examples[i]

    def _stats(self, **counts: Any) -> dict[str, Any]:
        """The shared ``stats`` keys with the kind's own ``counts`` after ``num_examples``."""
        return {
            "source": self.source,
            "num_examples": len(self),
            **counts,
            "num_skipped": self.num_skipped,
            "max_length": self.truncation[0],
            "max_prompt_length": self.truncation[1],
            "first_skipped": self.skipped[0] if self.skipped else None,
        }


class PreferenceDataset(TokenizedDataset):
    """Tokenised preference pairs held in memory, plus what loading skipped.

    Attributes:
        examples: the :class:`TokenizedPair` s in file order.
        num_skipped: malformed rows skipped (``skip_malformed=True``).
        skipped: the first skip messages (``file:line: reason``).
        num_prompt_truncated / num_response_truncated: rows that were cut.
        num_identical: pairs whose chosen and rejected tokens are the same (after
            truncation): they carry no preference and give no gradient.
        identical: locations (``file:line``) of the first such pairs, when known.

    Raises:
        ValueError: no examples, or every pair is identical.
    """

    kind = "preference dataset"

    def __init__(
        self,
        examples: Sequence[TokenizedPair],
        *,
        source: str = "",
        num_skipped: int = 0,
        skipped: Sequence[str] = (),
        max_length: int | None = None,
        max_prompt_length: int | None = None,
        identical: Sequence[str] = (),
    ):
        super().__init__(
            examples, source=source, num_skipped=num_skipped, skipped=skipped,
            max_length=max_length, max_prompt_length=max_prompt_length,
        )  # fmt: skip
        self.num_prompt_truncated = sum(e.prompt_truncated for e in self.examples)
        self.num_response_truncated = sum(e.response_truncated for e in self.examples)
        self.num_identical = sum(np.array_equal(e.chosen, e.rejected) for e in self.examples)
        self.identical = tuple(identical[:MAX_REPORTED_SKIPS])
        if self.num_identical == len(self.examples):
            after = "" if max_length is None else f" after truncation to max_length={max_length}"
            where = f" (e.g. {self.identical[0]})" if self.identical else ""
            raise ValueError(
                f"all {len(self)} pairs of preference dataset {source!r} are identical{after}"
                f"{where}: chosen and rejected have the same tokens, so no pair prefers one "
                "response; raise data.max_length (or lower data.max_prompt_length) so the "
                "responses keep the tokens where they differ"
            )

    def max_length(self) -> int:
        """Longest prompt + response in the dataset (tokens)."""
        return max(len(e.prompt) + max(len(e.chosen), len(e.rejected)) for e in self.examples)

    @property
    def stats(self) -> dict[str, Any]:
        """What loading found, for the run-start message (:func:`format_data_stats`) and
        ``summary.json``: rows kept and skipped, truncations, identical pairs (JSON-able)."""
        return {
            **self._stats(
                num_prompt_truncated=self.num_prompt_truncated,
                num_response_truncated=self.num_response_truncated,
                num_identical=self.num_identical,
            ),
            "first_identical": self.identical[0] if self.identical else None,
        }


def format_data_stats(stats: Mapping[str, Any]) -> str:
    """One line for the start of a run from a dataset's ``stats`` (a
    :class:`PreferenceDataset` or a :class:`~jaxalign.data.PromptDataset`), e.g.
    ``data d.jsonl: 512 pairs; 3 malformed rows skipped (first: d.jsonl:4: missing key
    'rejected'); 10 pairs with responses truncated to max_length=256; 4 pairs identical after
    truncation to max_length=256 (first: d.jsonl:9), no preference to learn``."""
    limit = lambda key: f" to {key}={stats[key]}" if stats.get(key) is not None else ""
    plural = lambda n, word: f"{n} {word}{'' if n == 1 else 's'}"
    if "num_prompts" in stats:
        head = f"prompts {stats['source']}: {plural(stats['num_prompts'], 'prompt')}"
    else:
        head = f"data {stats['source']}: {plural(stats['num_examples'], 'pair')}"
    parts = []
    if stats.get("num_skipped"):
        first = f" (first: {stats['first_skipped']})" if stats.get("first_skipped") else ""
        parts.append(f"{plural(stats['num_skipped'], 'malformed row')} skipped{first}")
    if stats.get("num_prompt_truncated"):
        n = stats["num_prompt_truncated"]
        parts.append(f"{plural(n, 'prompt')} truncated{limit('max_prompt_length')}")
    if stats.get("num_response_truncated"):
        n = stats["num_response_truncated"]
        parts.append(f"{plural(n, 'pair')} with responses truncated{limit('max_length')}")
    if stats.get("num_identical"):
        first = f" (first: {stats['first_identical']})" if stats.get("first_identical") else ""
        after = f" after truncation{limit('max_length')}" if stats.get("max_length") else ""
        parts.append(
            f"{plural(stats['num_identical'], 'pair')} identical{after}{first}, "
            "no preference to learn"
        )
    return "; ".join([head, *(parts or ["no rows skipped or truncated"])])


def load_preference_dataset(config: DataConfig, tokenizer: Any) -> PreferenceDataset:
    """Reads, validates and tokenises the dataset described by ``config``.

    Raises:
        MalformedRowError: at the first malformed row (``file:line: reason``),
            unless ``config.skip_malformed``, in which case such rows are
            skipped and counted in ``num_skipped``.
        ValueError: every pair is identical after truncation to ``config.max_length``.
    """
    examples, skipped, identical = [], [], []
    num_skipped = 0
    for where, row in read_preference_rows(config.path, config.format):
        if isinstance(row, MalformedRowError):
            if not config.skip_malformed:
                raise row
            num_skipped += 1
            if len(skipped) < MAX_REPORTED_SKIPS:
                skipped.append(str(row))
            continue
        try:
            pair = tokenize_preference_row(
                tokenizer,
                row,
                max_length=config.max_length,
                max_prompt_length=config.max_prompt_length,
                use_chat_template=config.use_chat_template,
                add_eos=config.add_eos,
            )
        except Exception as e:  # tokenizers and chat templates raise many kinds
            error = MalformedRowError(f"{where}: cannot tokenise row: {type(e).__name__}: {e}")
            if not config.skip_malformed:
                raise error from e
            num_skipped += 1
            if len(skipped) < MAX_REPORTED_SKIPS:
                skipped.append(str(error))
            continue
        if len(identical) < MAX_REPORTED_SKIPS and np.array_equal(pair.chosen, pair.rejected):
            identical.append(where)
        examples.append(pair)
    return PreferenceDataset(
        examples,
        source=str(config.path),
        num_skipped=num_skipped,
        skipped=skipped,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        identical=identical,
    )


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id, else 0 (padding is masked anyway)."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


def epoch_permutation(
    num_examples: int, *, seed: int, epoch: int, shuffle: bool = True
) -> np.ndarray:
    """Order of the examples in ``epoch``: a permutation seeded by ``(seed, epoch)``."""
    if not shuffle:
        return np.arange(num_examples)
    rng = np.random.default_rng(np.random.SeedSequence([seed % 2**63, epoch]))
    return rng.permutation(num_examples)


def process_slice(global_batch_size: int, process_index: int, process_count: int) -> slice:
    """Rows ``[p·B/P, (p+1)·B/P)`` of a global batch that process ``p`` of ``P`` loads."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index={process_index} must be in [0, process_count={process_count})"
        )
    if global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the "
            f"{process_count} processes"
        )
    local = global_batch_size // process_count
    return slice(process_index * local, (process_index + 1) * local)


def bucket_length(longest: int, bucket_sizes: Sequence[int]) -> int:
    """The smallest bucket ``>= longest`` (sequence length to pad a batch to)."""
    for size in bucket_sizes:
        if size >= longest:
            return int(size)
    raise ValueError(
        f"a sequence of {longest} tokens exceeds the largest bucket {bucket_sizes[-1]}"
    )


def collate_preference_batch(
    pairs: Sequence[TokenizedPair],
    length: int,
    *,
    pad_id: int,
    example_mask: Sequence[float] | None = None,
) -> PreferenceBatch:
    """Right-pads pairs to ``length`` and builds masks.

    Rows whose ``example_mask`` is 0 keep their tokens and attention mask (so a
    forward pass stays finite) but get an all-zero loss mask.
    """
    b = len(pairs)
    weights = np.ones(b, np.float32) if example_mask is None else np.asarray(example_mask)
    arrays = {}
    for side in ("chosen", "rejected"):
        ids = np.full((b, length), pad_id, np.int32)
        attention = np.zeros((b, length), np.int32)
        loss = np.zeros((b, length), np.float32)
        for i, pair in enumerate(pairs):
            response = getattr(pair, side)
            n_prompt, n = len(pair.prompt), len(pair.prompt) + len(response)
            if n > length:
                raise ValueError(f"sequence of {n} tokens does not fit in length {length}")
            ids[i, :n_prompt] = pair.prompt
            ids[i, n_prompt:n] = response
            attention[i, :n] = 1
            if weights[i]:
                # Position 0 has no preceding logits, so it can never be a target.
                loss[i, max(n_prompt, 1) : n] = 1.0
        arrays[f"{side}_input_ids"] = ids
        arrays[f"{side}_attention_mask"] = attention
        arrays[f"{side}_loss_mask"] = loss
    return PreferenceBatch(**arrays, example_mask=weights.astype(np.float32))


class PreferenceLoader:
    """Deterministic, resumable iterator of fixed-shape :class:`PreferenceBatch` es.

    Each ``next()`` returns this process's rows of the next global batch.

    Example::

        loader = build_preference_loader(config, tokenizer)
        batch = next(loader)
        saved = loader.state_dict()            # {"epoch": 0, "index": 8, "seed": 0, ...}
        again = build_preference_loader(config, tokenizer, state=saved)
        next(again) == next(loader)            # field by field
    """

    def __init__(
        self,
        dataset: PreferenceDataset,
        *,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        bucket_sizes: Sequence[int],
        pad_id: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        num_epochs: int | None = None,
        state: LoaderState | Mapping[str, Any] | None = None,
        packing: bool = False,
        packing_length: int | None = None,
        share_prompt: bool = False,
        micro_batches: int = 1,
        row_multiple: int = 1,
        reference_logps: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self._local = process_slice(batch_size, process_index, process_count)
        buckets = tuple(int(b) for b in bucket_sizes)
        if not buckets:
            raise ValueError("bucket_sizes is empty; expected at least one sequence length")
        longest = dataset.max_length()
        if longest > buckets[-1]:
            raise ValueError(
                f"the dataset holds a sequence of {longest} tokens, longer than the largest "
                f"bucket {buckets[-1]}; tokenise with the same max_length"
            )
        if drop_last and len(dataset) < batch_size:
            raise ValueError(
                f"dataset has {len(dataset)} examples, fewer than batch_size={batch_size}; "
                "use a smaller batch or drop_last=False"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.bucket_sizes = buckets
        self.pad_id = pad_id
        self.process_index = process_index
        self.process_count = process_count
        self.num_epochs = num_epochs
        self.packing = packing
        self.share_prompt = share_prompt
        self.packing_length = buckets[-1] if packing_length is None else int(packing_length)
        self.micro_batches = int(micro_batches)
        self.row_multiple = int(row_multiple)
        if batch_size % self.micro_batches:
            raise ValueError(
                f"batch_size={batch_size} is not divisible into micro_batches={micro_batches}"
            )
        self.reference_logps = None
        if reference_logps is not None:
            self.attach_reference_logps(*reference_logps)
        self._state = LoaderState(0, 0, int(seed))
        if state is not None:
            self.restore(state)

    def attach_reference_logps(self, chosen: np.ndarray, rejected: np.ndarray) -> None:
        """Per-row log π_ref(chosen), log π_ref(rejected) (dataset order) to attach to every
        batch (``PreferenceBatch.reference_*``), so the step skips the reference model."""
        chosen, rejected = np.asarray(chosen, np.float32), np.asarray(rejected, np.float32)
        n = len(self.dataset)
        if chosen.shape != (n,) or rejected.shape != (n,):
            raise ValueError(
                f"reference log-probs of shapes {chosen.shape}/{rejected.shape} do not match "
                f"the dataset's {n} rows"
            )
        self.reference_logps = (chosen, rejected)

    @classmethod
    def from_config(
        cls,
        dataset: PreferenceDataset,
        config: DataConfig,
        *,
        pad_id: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        state: LoaderState | Mapping[str, Any] | None = None,
        micro_batches: int = 1,
        row_multiple: int = 1,
    ) -> PreferenceLoader:
        return cls(
            dataset,
            batch_size=config.batch_size,
            seed=config.seed,
            shuffle=config.shuffle,
            drop_last=config.drop_last,
            bucket_sizes=config.resolved_bucket_sizes(),
            pad_id=pad_id,
            process_index=process_index,
            process_count=process_count,
            num_epochs=config.num_epochs,
            state=state,
            packing=config.packing,
            packing_length=config.packing_length,
            share_prompt=config.share_prompt,
            micro_batches=micro_batches,
            row_multiple=row_multiple,
        )

    # -- position -----------------------------------------------------------------
    @property
    def local_batch_size(self) -> int:
        return self._local.stop - self._local.start

    @property
    def batches_per_epoch(self) -> int:
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    @property
    def state(self) -> LoaderState:
        return self._state

    def state_dict(self) -> dict[str, int]:
        """JSON-able position (plus the dataset size, checked on restore)."""
        return {**self._state.to_dict(), "num_examples": len(self.dataset)}

    def restore(self, state: LoaderState | Mapping[str, Any] | str) -> None:
        """Moves to a saved position (a :class:`LoaderState`, its dict, or its JSON)."""
        if isinstance(state, str):
            state = json.loads(state)
        if isinstance(state, Mapping):
            size = state.get("num_examples")
            if size is not None and size != len(self.dataset):
                raise ValueError(
                    f"loader state was saved for a dataset of {size} examples but this one has "
                    f"{len(self.dataset)}; the data changed since the checkpoint"
                )
            state = LoaderState.from_dict(state)
        if not isinstance(state, LoaderState):
            raise ValueError(f"expected a LoaderState or its dict, got {type(state).__name__}")
        if state.index > len(self.dataset):
            raise ValueError(
                f"loader state index {state.index} is beyond the dataset size {len(self.dataset)}"
            )
        self._state = self._roll_over(state)

    def _roll_over(self, state: LoaderState) -> LoaderState:
        remaining = len(self.dataset) - state.index
        if remaining <= 0 or (self.drop_last and remaining < self.batch_size):
            return LoaderState(state.epoch + 1, 0, state.seed)
        return state

    def global_batch_indices(self, state: LoaderState | None = None) -> tuple[np.ndarray, int]:
        """Dataset rows of the global batch starting at ``state`` (default: the next one).

        Returns:
            ``(rows, num_real)``: ``batch_size`` row indices, of which the first
            ``num_real`` are real; the rest repeat the first row as filler (only
            in a partial last batch with ``drop_last=False``).
        """
        state = self._state if state is None else state
        order = epoch_permutation(
            len(self.dataset), seed=state.seed, epoch=state.epoch, shuffle=self.shuffle
        )
        rows = order[state.index : state.index + self.batch_size]
        num_real = len(rows)
        if num_real < self.batch_size:
            rows = np.concatenate([rows, np.full(self.batch_size - num_real, rows[0])])
        return rows, num_real

    # -- iteration ----------------------------------------------------------------
    def __iter__(self) -> Iterator[PreferenceBatch]:
        return self

    def __next__(self) -> PreferenceBatch:
        state = self._state
        if self.num_epochs is not None and state.epoch >= self.num_epochs:
            raise StopIteration
        rows, num_real = self.global_batch_indices(state)
        pairs = [self.dataset[int(i)] for i in rows]
        weights = (np.arange(self.batch_size) < num_real).astype(np.float32)
        local = self._local
        if self.packing:
            batch = self._pack(pairs, weights)
        else:
            # One length for the whole global batch so every process agrees on shapes.
            longest = max(len(p.prompt) + max(len(p.chosen), len(p.rejected)) for p in pairs)
            length = bucket_length(longest, self.bucket_sizes)
            batch = collate_preference_batch(
                pairs[local], length, pad_id=self.pad_id, example_mask=weights[local]
            )
        if self.reference_logps is not None:
            chosen, rejected = self.reference_logps
            mine = rows[local]
            batch = batch._replace(
                reference_chosen_logp=chosen[mine], reference_rejected_logp=rejected[mine]
            )
        self._state = self._roll_over(
            LoaderState(state.epoch, state.index + self.batch_size, state.seed)
        )
        return batch

    def _pack(self, pairs, weights) -> PackedPreferenceBatch:
        """This process's pairs packed into as many rows per micro-batch as the fullest
        process needs (every process computes them all, so shapes agree without talking),
        rounded up to ``row_multiple``."""
        width, k = self.packing_length, self.micro_batches
        slices = [process_slice(self.batch_size, p, self.process_count)
                  for p in range(self.process_count)]  # fmt: skip
        need = max(
            packed_rows_needed(
                pairs[s],
                width,
                micro_batches=k,
                pair_offset=s.start,
                share_prompt=self.share_prompt,
            )
            for s in slices
        )
        rows = -(-need // self.row_multiple) * self.row_multiple
        local = self._local
        return pack_preference_pairs(
            pairs[local],
            width,
            pad_id=self.pad_id,
            example_mask=weights[local],
            micro_batches=k,
            rows=rows,
            pair_offset=local.start,
            global_pairs=self.batch_size,
            share_prompt=self.share_prompt,
        )


def build_preference_loader(
    config: DataConfig,
    tokenizer: Any,
    *,
    process_index: int = 0,
    process_count: int = 1,
    state: LoaderState | Mapping[str, Any] | None = None,
    dataset: PreferenceDataset | None = None,
    micro_batches: int = 1,
    row_multiple: int = 1,
) -> PreferenceLoader:
    """Loads (unless ``dataset`` is given) and wraps a dataset in a loader per ``config``.

    For multi-host runs pass the data shard of this process, e.g.
    ``jaxalign.parallel.data_shard_info(config.batch_size, mesh)``. With
    ``config.packing``, batches are :class:`~jaxalign.data.PackedPreferenceBatch` es whose
    rows per micro-batch (``micro_batches`` = gradient-accumulation steps) are a multiple
    of ``row_multiple`` (this process's share of the batch shards).
    """
    dataset = load_preference_dataset(config, tokenizer) if dataset is None else dataset
    return PreferenceLoader.from_config(
        dataset,
        config,
        pad_id=pad_token_id(tokenizer),
        process_index=process_index,
        process_count=process_count,
        state=state,
        micro_batches=micro_batches,
        row_multiple=row_multiple,
    )


__all__ = [
    "LoaderState",
    "PreferenceBatch",
    "PreferenceDataset",
    "PreferenceLoader",
    "TokenizedDataset",
    "bucket_length",
    "build_preference_loader",
    "collate_preference_batch",
    "epoch_permutation",
    "format_data_stats",
    "load_preference_dataset",
    "pad_token_id",
    "process_slice",
]
