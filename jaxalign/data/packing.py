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

With ``share_prompt``, a pair is one segment laid out ``[prompt[:-1] | prompt[-1], chosen |
prompt[-1], rejected]``: the prompt (but its last token) is computed once for both
responses. ``branch_ids`` mark the shared prefix (0), the chosen branch (1) and the
rejected branch (2); a token sees the earlier tokens of its segment that are in the prefix
or in its own branch, and each branch restarts its positions where the prompt's last
token sits. Every token then has exactly the context it has in the unshared sequence
``[prompt, response]``, and the first response token of each branch is predicted from
the branch's copy of the last prompt token.

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
    segment_ids: np.ndarray  # (R, W) int32, 1, 2, … per sequence (pair) of the row; 0 = pad
    positions: np.ndarray  # (R, W) int32, position ids (restart per sequence / branch)
    branch_ids: np.ndarray  # (R, W) int32, 0 shared prefix, 1 chosen, 2 rejected (share_prompt)
    loss_mask: np.ndarray  # (R, W) float32, 1 on response tokens (prediction targets)
    sequence_index: np.ndarray  # (R, W) int32, i (chosen) or b + i (rejected), b per micro-batch
    example_mask: np.ndarray  # (B,) float32, 0 for filler pairs of a partial last batch
    # log π_ref of each response when precomputed (the step then skips the reference).
    reference_chosen_logp: np.ndarray | None = None  # (B,) float32
    reference_rejected_logp: np.ndarray | None = None  # (B,) float32


def first_fit_decreasing(lengths: Sequence[int], width: int) -> list[list[int]]:
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
    pairs: Sequence[TokenizedPair],
    width: int,
    *,
    micro_batches: int = 1,
    pair_offset: int = 0,
    share_prompt: bool = False,
) -> int:
    """Rows per micro-batch that :func:`pack_preference_pairs` needs for ``pairs``."""
    groups = micro_batch_groups(len(pairs), micro_batches, pair_offset)
    return max(len(first_fit_decreasing(_items(pairs, g, share_prompt)[1], width)) for g in groups)


def _pieces(pair: TokenizedPair, side: str | None) -> list[tuple[np.ndarray, int, int, bool]]:
    """``(tokens, branch, first position, is response)`` runs of one packed item: a whole
    sequence (``side``), or a pair with its prompt shared (``side=None``)."""
    prompt = np.asarray(pair.prompt, np.int32)
    if side is not None:
        return [
            (prompt, 0, 0, False),
            (np.asarray(getattr(pair, side), np.int32), 0, len(prompt), True),
        ]
    n = len(prompt)
    shared, last = prompt[: max(n - 1, 0)], prompt[max(n - 1, 0) :]
    out = [(shared, 0, 0, False)]
    for branch, side_ in ((1, "chosen"), (2, "rejected")):
        out += [(last, branch, len(shared), False),
                (np.asarray(getattr(pair, side_), np.int32), branch, n, True)]  # fmt: skip
    return out


def _items(pairs, group, share_prompt: bool) -> tuple[list[tuple[int, str | None]], list[int]]:
    """The packed items of a micro-batch (``(local pair, side)``) and their lengths."""
    if share_prompt:
        items = [(j, None) for j in group]
    else:
        items = [(j, "chosen") for j in group] + [(j, "rejected") for j in group]
    lengths = [sum(len(t) for t, *_ in _pieces(pairs[j], side)) for j, side in items]
    return items, lengths


def micro_batch_groups(num_pairs: int, micro_batches: int, offset: int) -> list[list[int]]:
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
    share_prompt: bool = False,
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
      share_prompt: one segment per pair with its prompt computed once (module docstring).

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
    groups = micro_batch_groups(b, k, pair_offset)
    packed = [_items(pairs, g, share_prompt) for g in groups]
    bins = [first_fit_decreasing(lengths, width) for _, lengths in packed]
    need = max(len(x) for x in bins)
    rows = need if rows is None else int(rows)
    if rows < need:
        raise ValueError(f"the pairs need {need} packed rows per micro-batch, only {rows} given")
    shape = (rows * k, width)
    ids = np.full(shape, pad_id, np.int32)
    segments, positions, branches, index = (np.zeros(shape, np.int32) for _ in range(4))
    loss = np.zeros(shape, np.float32)
    for m, ((items, _), row_bins) in enumerate(zip(packed, bins)):
        for r, members in enumerate(row_bins):
            row = r * k + m  # row r of micro-batch m (rows interleave like pairs)
            start = 0
            for segment, item in enumerate(members, start=1):
                j, side = items[item]
                local = (pair_offset + j) // k
                for tokens, branch, first, response in _pieces(pairs[j], side):
                    stop = start + len(tokens)
                    ids[row, start:stop] = tokens
                    segments[row, start:stop] = segment
                    positions[row, start:stop] = np.arange(first, first + len(tokens))
                    branches[row, start:stop] = branch
                    rejected = side == "rejected" or branch == 2
                    index[row, start:stop] = local + (per_micro if rejected else 0)
                    if response and weights[j]:
                        # Position 0 has no prefix: never a target.
                        targets = np.arange(first, first + len(tokens)) >= 1
                        loss[row, start:stop] = targets
                    start = stop
    return PackedPreferenceBatch(
        ids, segments, positions, branches, loss, index, weights.astype(np.float32)
    )


__all__ = ["PackedPreferenceBatch", "pack_preference_pairs", "packed_rows_needed"]
