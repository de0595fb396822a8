"""Packed preference batches: several sequences per row, no padding tokens computed.

A padded :class:`~jaxalign.data.PreferenceBatch` spends compute on padding (a batch of
short pairs padded to ``max_length``). Packing places the ``2B`` sequences (chosen and
rejected of each pair) end to end into rows of ``width`` tokens, first-fit decreasing:

* ``segment_ids[r, t]`` numbers the sequences of row ``r`` (1, 2, …; 0 = padding), so the
  model attends only within a sequence and restarts positions per sequence
  (:meth:`jaxalign.models.CausalLM.token_logprobs` with ``segment_ids``);
* ``sequence_index[r, t]`` says which sequence a token belongs to: ``i`` for the chosen
  and ``b + i`` for the rejected response of pair ``i`` of its micro-batch (``b`` pairs
  per micro-batch), so per-sequence log-probabilities are one ``segment_sum``;
* with ``micro_batches = k``, pair ``i`` belongs to micro-batch ``i mod k`` (as in the
  padded step) and row ``r`` to micro-batch ``r mod k``: each micro-batch packs its own
  pairs, so every step of a gradient-accumulation scan holds whole pairs.

The loss of a packed batch equals the loss of the padded batch of the same pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxalign.data.tokenize import TokenizedPair


class PackedPreferenceBatch(NamedTuple):
    """Preference pairs packed into rows (numpy; a pytree for the jitted step).

    Row arrays are ``(R, W)``, pair arrays ``(B,)``; see the module docstring.
    """

    input_ids: np.ndarray  # (R, W) int32, sequences end to end, pad id after them
    segment_ids: np.ndarray  # (R, W) int32, 1, 2, … per sequence of the row; 0 = padding
    loss_mask: np.ndarray  # (R, W) float32, 1 on response tokens (prediction targets)
    sequence_index: np.ndarray  # (R, W) int32, i (chosen) or b + i (rejected), b per micro-batch
    example_mask: np.ndarray  # (B,) float32, 0 for filler pairs of a partial last batch
    # log π_ref of each response when precomputed (the step then skips the reference).
    reference_chosen_logp: np.ndarray | None = None  # (B,) float32
    reference_rejected_logp: np.ndarray | None = None  # (B,) float32


def _first_fit_decreasing(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Bins (lists of item indices) of total length ≤ ``width``; longest items first."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = lengths[i]
        if n > width:
            raise ValueError(f"a sequence of {n} tokens does not fit in a packed row of {width}")
        for b, room in enumerate(free):
            if n <= room:
                bins[b].append(i)
                free[b] -= n
                break
        else:
            bins.append([i])
            free.append(width - n)
    return bins


def packed_rows_needed(
    pairs: Sequence[TokenizedPair], width: int, *, micro_batches: int = 1, pair_offset: int = 0
) -> int:
    """Rows per micro-batch that :func:`pack_preference_pairs` needs for ``pairs``."""
    groups = _micro_batch_groups(len(pairs), micro_batches, pair_offset)
    return max(len(_first_fit_decreasing(_lengths(pairs, g), width)) for g in groups)


def _lengths(pairs: Sequence[TokenizedPair], group: Sequence[int]) -> list[int]:
    chosen = [len(pairs[j].prompt) + len(pairs[j].chosen) for j in group]
    rejected = [len(pairs[j].prompt) + len(pairs[j].rejected) for j in group]
    return chosen + rejected


def _micro_batch_groups(num_pairs: int, micro_batches: int, offset: int) -> list[list[int]]:
    """Local pair indices of each micro-batch (pair with global index g → g mod k)."""
    groups: list[list[int]] = [[] for _ in range(micro_batches)]
    for j in range(num_pairs):
        groups[(offset + j) % micro_batches].append(j)
    return groups


def pack_preference_pairs(
    pairs: Sequence[TokenizedPair],
    width: int,
    *,
    pad_id: int,
    example_mask: Sequence[float] | None = None,
    micro_batches: int = 1,
    rows: int | None = None,
    pair_offset: int = 0,
    global_pairs: int | None = None,
) -> PackedPreferenceBatch:
    """Packs pairs into ``micro_batches × rows`` rows of ``width`` tokens.

    Args:
      pairs: this process's pairs (a slice of the global batch starting at ``pair_offset``).
      width: tokens per row (at least the longest sequence).
      pad_id: token id after the last sequence of a row.
      example_mask: 1 for real pairs, 0 for filler pairs (their loss mask is all zero).
      micro_batches: ``k`` gradient-accumulation micro-batches; pair with global index
        ``g`` goes to micro-batch ``g mod k``.
      rows: rows per micro-batch (default: the fewest that fit, see
        :func:`packed_rows_needed`); every process must use the same value.
      pair_offset: global index of ``pairs[0]``.
      global_pairs: pairs in the global batch (default ``len(pairs)``); sequence indices
        are global within a micro-batch: ``i`` chosen / ``global_pairs / k + i`` rejected.

    Raises:
      ValueError: a sequence longer than ``width``, or ``rows`` too few for the pairs.
    """
    k = int(micro_batches)
    b = len(pairs)
    total = b if global_pairs is None else int(global_pairs)
    if total % k:
        raise ValueError(f"{total} pairs do not split into micro_batches={k}")
    per_micro = total // k
    weights = np.ones(b, np.float32) if example_mask is None else np.asarray(example_mask)
    groups = _micro_batch_groups(b, k, pair_offset)
    bins = [_first_fit_decreasing(_lengths(pairs, g), width) for g in groups]
    need = max(len(x) for x in bins)
    rows = need if rows is None else int(rows)
    if rows < need:
        raise ValueError(f"the pairs need {need} packed rows per micro-batch, only {rows} given")
    shape = (rows * k, width)
    ids = np.full(shape, pad_id, np.int32)
    segments = np.zeros(shape, np.int32)
    loss = np.zeros(shape, np.float32)
    index = np.zeros(shape, np.int32)
    for m, (group, row_bins) in enumerate(zip(groups, bins)):
        n = len(group)
        for r, members in enumerate(row_bins):
            row = r * k + m  # row r of micro-batch m (rows interleave like pairs)
            start = 0
            for segment, item in enumerate(members, start=1):
                j = group[item % n]  # local pair index
                side = "chosen" if item < n else "rejected"
                pair = pairs[j]
                response = getattr(pair, side)
                n_prompt, length = len(pair.prompt), len(pair.prompt) + len(response)
                stop = start + length
                ids[row, start : start + n_prompt] = pair.prompt
                ids[row, start + n_prompt : stop] = response
                segments[row, start:stop] = segment
                local = (pair_offset + j) // k
                index[row, start:stop] = local + (per_micro if side == "rejected" else 0)
                if weights[j]:
                    loss[row, start + max(n_prompt, 1) : stop] = 1.0
                start = stop
    return PackedPreferenceBatch(ids, segments, loss, index, weights.astype(np.float32))


__all__ = ["PackedPreferenceBatch", "pack_preference_pairs", "packed_rows_needed"]
