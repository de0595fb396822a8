"""Process-local batches → globally sharded arrays.

On a multi-host run every process loads only its own rows of the global batch
(see :func:`jaxalign.data.process_slice`) and
:func:`jax.make_array_from_process_local_data` stitches the pieces into one
global ``jax.Array`` sharded over the mesh. With one process this is an ordinary
``device_put`` of the whole batch.

Which rows a process must load follows from the batch sharding:
:func:`process_batch_slice` reads it off the mesh, and :func:`data_shard_info`
turns it into the ``(shard_index, shard_count)`` pair the data loader takes. On
the standard ``(data, fsdp, tensor)`` mesh process ``p`` of ``P`` owns the
contiguous block ``[p·B/P, (p+1)·B/P)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from jaxalign.parallel.rules import DEFAULT_RULES, MeshAxes, logical_to_sharding


def batch_sharding(
    mesh: Mesh, rules: Mapping[str, MeshAxes] = DEFAULT_RULES, *, ndim: int = 1
) -> NamedSharding:
    """Sharding of a batch array: dimension 0 is ``batch``, the others replicated."""
    return logical_to_sharding(("batch",) + (None,) * (ndim - 1), mesh, rules)


def process_batch_slice(
    global_batch_size: int,
    mesh: Mesh,
    rules: Mapping[str, MeshAxes] = DEFAULT_RULES,
    *,
    process_index: int | None = None,
) -> slice:
    """Rows of the global batch that process ``process_index`` must supply.

    Args:
        global_batch_size: rows in the global batch (divisible by the number of
            batch shards).
        mesh: the device mesh.
        rules: logical rules (``batch`` decides the split).
        process_index: defaults to ``jax.process_index()``.

    Returns:
        A ``slice`` into the global batch. Processes whose devices hold the same
        rows (e.g. a ``tensor`` axis spanning hosts) get the same slice.

    Raises:
        ValueError: if the rows are not one contiguous block or the batch does
            not split evenly.
    """
    sharding = batch_sharding(mesh, rules)
    num_shards = _num_batch_shards(sharding)
    if global_batch_size < 1 or global_batch_size % num_shards:
        raise ValueError(
            f"global batch size {global_batch_size} must be a positive multiple of the "
            f"{num_shards} batch shards of mesh {dict(mesh.shape)} "
            f"(batch -> {sharding.spec[0]!r})"
        )
    pid = jax.process_index() if process_index is None else process_index
    devices = [d for d in mesh.devices.flat if d.process_index == pid]
    if not devices:
        raise ValueError(f"process {pid} owns no device of the mesh")
    index_map = sharding.devices_indices_map((global_batch_size,))
    rows = sorted({index_map[d][0].indices(global_batch_size)[:2] for d in devices})
    start, stop = rows[0][0], rows[0][1]
    for lo, hi in rows[1:]:
        if lo != stop:
            raise ValueError(
                f"process {pid} holds non-contiguous batch rows {rows}; use a mesh whose "
                "batch axes are outermost (data, fsdp) so each process loads one block"
            )
        stop = hi
    return slice(start, stop)


def data_shard_info(
    global_batch_size: int,
    mesh: Mesh,
    rules: Mapping[str, MeshAxes] = DEFAULT_RULES,
    *,
    process_index: int | None = None,
) -> tuple[int, int]:
    """``(shard_index, shard_count)`` for the data loader of this process.

    The global batch is cut into ``shard_count`` equal blocks and this process
    loads block ``shard_index``; pass both to the data loader (its
    ``process_index``/``process_count``).
    """
    rows = process_batch_slice(global_batch_size, mesh, rules, process_index=process_index)
    size = rows.stop - rows.start
    return rows.start // size, global_batch_size // size


def _num_batch_shards(sharding: NamedSharding) -> int:
    axes = sharding.spec[0] if len(sharding.spec) else None
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return int(np.prod([sharding.mesh.shape[a] for a in axes]))


def shard_batch(
    local_batch: Any,
    mesh: Mesh,
    rules: Mapping[str, MeshAxes] = DEFAULT_RULES,
    *,
    logical_axes: Sequence[str | None] | None = None,
) -> Any:
    """Turns a process-local batch pytree into globally sharded ``jax.Array`` s.

    Why: host data loading is per process; the jitted step wants one global
    array sharded along ``batch``. Every leaf's leading dimension is this
    process's rows (``process_batch_slice``); the global leading size is
    inferred from the sharding (local rows × number of distinct row blocks).

    Args:
        local_batch: pytree of numpy arrays, all with the same leading size.
        mesh: the device mesh.
        rules: logical rules; ``batch`` gives the split of dimension 0.
        logical_axes: logical names for the leading dims of every leaf, e.g.
            ``("batch", "length")``; default ``("batch",)``. Remaining dimensions
            are replicated.

    Returns:
        The same pytree with global ``jax.Array`` leaves.
    """
    leaves, treedef = jax.tree.flatten(local_batch)
    if not leaves:
        raise ValueError("local_batch has no array leaves")
    logical_axes = ("batch",) if logical_axes is None else tuple(logical_axes)
    arrays = [np.asarray(leaf) for leaf in leaves]
    sizes = {a.shape[0] if a.ndim else None for a in arrays}
    if None in sizes or len(sizes) != 1:
        shapes = [a.shape for a in arrays]
        raise ValueError(
            f"every leaf of local_batch must have the same leading (batch) size; got shapes "
            f"{shapes}"
        )
    out = []
    for a in arrays:
        if a.ndim < len(logical_axes):
            raise ValueError(
                f"leaf of shape {a.shape} has fewer dimensions than logical_axes {logical_axes}"
            )
        names = logical_axes + (None,) * (a.ndim - len(logical_axes))
        sharding = logical_to_sharding(names, mesh, rules)
        try:
            out.append(jax.make_array_from_process_local_data(sharding, a))
        except ValueError as e:
            raise ValueError(
                f"cannot shard local batch leaf of shape {a.shape} with {sharding.spec} on "
                f"mesh {dict(mesh.shape)}: {e}"
            ) from e
    return jax.tree.unflatten(treedef, out)


__all__ = ["batch_sharding", "data_shard_info", "process_batch_slice", "shard_batch"]
