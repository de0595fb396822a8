"""Parallelism: device meshes, logical-axis sharding rules, batch sharding, multi-host.

* :class:`MeshConfig` / :func:`make_mesh` — a ``(data, fsdp, tensor)`` mesh.
* :class:`LogicalRules` / :func:`logical_to_sharding` — logical names
  (``batch``, ``embed``, ``mlp``, ``heads``, ``kv_heads``, ``vocab``, ``length``)
  to mesh axes.
* :func:`shard_batch` — process-local numpy batches to global sharded arrays.
* :func:`initialize_distributed` — ``jax.distributed`` from arguments, config or
  ``JAXALIGN_*`` environment variables; a no-op for one process.
"""

from jaxalign.parallel.batch import (
    batch_sharding,
    data_shard_info,
    process_batch_slice,
    shard_batch,
)
from jaxalign.parallel.distributed import (
    DistributedConfig,
    initialize_distributed,
    resolve_distributed,
)
from jaxalign.parallel.mesh import MESH_AXES, MeshConfig, make_mesh
from jaxalign.parallel.rules import (
    DEFAULT_RULES,
    LogicalRules,
    logical_to_pspec,
    logical_to_sharding,
    tree_logical_to_sharding,
    with_logical_constraint,
)

__all__ = [
    "DEFAULT_RULES",
    "MESH_AXES",
    "DistributedConfig",
    "LogicalRules",
    "MeshConfig",
    "batch_sharding",
    "data_shard_info",
    "initialize_distributed",
    "logical_to_pspec",
    "logical_to_sharding",
    "make_mesh",
    "process_batch_slice",
    "resolve_distributed",
    "shard_batch",
    "tree_logical_to_sharding",
    "with_logical_constraint",
]
