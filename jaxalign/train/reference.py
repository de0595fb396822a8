"""Reference log-probabilities computed once per dataset, not in every step.

With a frozen reference π_ref, ``log π_ref(y | x)`` of every response is a constant of
the data. :func:`precompute_reference_logps` runs the reference over the whole dataset
once (in dataset order, global batches of the training batch size, padded exactly as the
training batches are) and returns one value per row and side; the loader then attaches
them to each batch (:meth:`jaxalign.data.PreferenceLoader.attach_reference_logps`) and the
step skips its reference forward pass. The values are the ones the step itself would
compute (the same function, :func:`jaxalign.train.step.reference_sequence_logprobs`), so
the losses are the same. The result is cached in the run directory so a resumed or
multi-epoch run never recomputes it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxalign.data import PreferenceBatch, collate_preference_batch
from jaxalign.data.loader import PreferenceDataset, process_slice
from jaxalign.parallel import shard_batch
from jaxalign.train.step import reference_sequence_logprobs

CACHE_NAME = "reference_logps.npz"


def precompute_reference_logps(
    dataset: PreferenceDataset,
    reference: nnx.State,
    graphdef: nnx.GraphDef,
    *,
    batch_size: int,
    length: int,
    pad_id: int,
    mesh: jax.sharding.Mesh,
    rules: Any,
    reference_sharding: Any,
    batch_sharding: Any,
    example_sharding: Any,
    shard: tuple[int, int] = (0, 1),
    cache: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(log π_ref(chosen), log π_ref(rejected))`` for every row of ``dataset`` (float32).

    Args:
      dataset: the tokenised pairs.
      reference, graphdef: the frozen reference parameters and the model's graph.
      batch_size: global pairs per forward pass (the training batch size).
      length: the padded sequence length (the training batches' ``max_length``).
      pad_id: padding token id.
      mesh, rules: the run's mesh and logical rules (``shard_batch``).
      reference_sharding, batch_sharding, example_sharding: the run's shardings.
      shard: ``(index, count)`` of this process's data shard (``data_shard_info``).
      cache: an ``.npz`` file: read when it holds as many rows as ``dataset``, else
        written (by process 0) after computing.
    """
    n = len(dataset)
    if cache is not None and Path(cache).exists():
        saved = np.load(cache)
        if saved["chosen"].shape == (n,):
            return saved["chosen"], saved["rejected"]
    batch_sh = PreferenceBatch(*(batch_sharding,) * 6, example_sharding)
    fn = jax.jit(
        functools.partial(reference_sequence_logprobs, graphdef=graphdef),
        in_shardings=(reference_sharding, batch_sh),
        out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
    )
    local = process_slice(batch_size, *shard)
    chosen, rejected = np.zeros(n, np.float32), np.zeros(n, np.float32)
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        real = len(rows)
        rows = np.concatenate([rows, np.full(batch_size - real, rows[0])])
        weights = (np.arange(batch_size) < real).astype(np.float32)
        pairs = [dataset[int(i)] for i in rows]
        local_batch = collate_preference_batch(
            pairs[local], length, pad_id=pad_id, example_mask=weights[local]
        )
        batch = shard_batch(local_batch, mesh, rules, logical_axes=("batch",))
        with jax.set_mesh(mesh):
            c, r = jax.device_get(fn(reference, batch))
        chosen[rows[:real]] = np.asarray(c)[:real]
        rejected[rows[:real]] = np.asarray(r)[:real]
    if cache is not None and jax.process_index() == 0:
        np.savez(cache, chosen=chosen, rejected=rejected)
    return chosen, rejected


__all__ = ["CACHE_NAME", "precompute_reference_logps"]
