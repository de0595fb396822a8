"""Logical axis names → mesh axes.

Parameters and activations are annotated with *logical* axis names (``embed``,
``mlp``, ``heads``, ``kv_heads``, ``head_dim``, ``vocab``, ``batch``, ``length``);
a rules table maps each name to mesh axes (``data``, ``fsdp``, ``tensor``). The
model never sees a mesh: the same module runs unsharded, on 8 fake CPU devices or
on a pod, and only the rules change.

Resolution is shape-aware: a mesh axis that is absent from the mesh, already used by
another dimension, or does not divide the dimension is dropped (that dimension is
replicated over it), so tiny test models and odd head counts shard without errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import jax
from flax import nnx
from flax.core import spmd as flax_spmd
from jax.sharding import NamedSharding, PartitionSpec

from jaxalign.parallel.rules import DEFAULT_RULES as _PARALLEL_DEFAULT_RULES
from jaxalign.parallel.rules import LogicalRules as ParallelRules
from jaxalign.parallel.rules import logical_to_pspec

LogicalRules: TypeAlias = Sequence[tuple[str, str | tuple[str, ...] | None]]

# Default mapping for a (data, fsdp, tensor) mesh, defined once in jaxalign.parallel:
# FSDP shards the embedding dimension of every weight, tensor parallelism shards heads /
# MLP / vocabulary, batches are split over data and fsdp; activations' model dimension
# (act_embed) stays replicated so each layer's all-gathers are of weights, not activations.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = tuple(
    _PARALLEL_DEFAULT_RULES.as_pairs()
)


@contextlib.contextmanager
def axis_rules(rules: LogicalRules) -> Iterator[None]:
    """Context in which activation constraints use ``rules`` (instead of :data:`DEFAULT_RULES`)."""
    with flax_spmd.logical_axis_rules(tuple(rules)):
        yield


def current_rules() -> LogicalRules:
    """Rules set by :func:`axis_rules` (or flax's ``nnx.logical_axis_rules``), else the defaults."""
    return flax_spmd.get_logical_axis_rules() or DEFAULT_RULES


def logical_to_spec(
    names: Sequence[str | None],
    rules: LogicalRules | None = None,
    *,
    mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh | None = None,
    shape: Sequence[int] | None = None,
) -> PartitionSpec:
    """PartitionSpec for an array whose dimensions carry logical ``names``.

    :func:`jaxalign.parallel.logical_to_pspec` (the one resolver) in its lenient form: a
    name without a rule, or mapped to a mesh axis the mesh lacks, is replicated, so a
    model annotated once runs on any mesh.

    Args:
      names: one logical name (or None = replicated) per dimension.
      rules: (logical name, mesh axis | tuple of mesh axes | None) pairs; the first
        match wins. Defaults to :func:`current_rules`.
      mesh: when given, mesh axes it lacks are dropped and (with ``shape``) so are
        axes whose size does not divide the dimension.
      shape: the array's shape, for the divisibility check (used with ``mesh``).

    Returns:
      A ``PartitionSpec`` with one entry per dimension.
    """
    rules = current_rules() if rules is None else rules
    table: dict[str, Any] = {}
    for logical, physical in rules:
        table.setdefault(logical, physical)  # the first match wins
    return logical_to_pspec(
        names,
        ParallelRules(table),
        mesh=mesh,
        shape=None if mesh is None else shape,
        strict=False,
    )


def logical_sharding(
    names: Sequence[str | None],
    mesh: jax.sharding.Mesh,
    rules: LogicalRules | None = None,
    *,
    shape: Sequence[int] | None = None,
) -> NamedSharding:
    """``NamedSharding`` on ``mesh`` for an array with logical axis ``names``."""
    return NamedSharding(mesh, logical_to_spec(names, rules, mesh=mesh, shape=shape))


def variable_names(variable: nnx.Variable) -> tuple[str | None, ...] | None:
    """The logical axis names a variable was created with (``out_sharding`` metadata)."""
    names = variable.get_metadata().get("out_sharding")
    return tuple(names) if names else None


def state_shardings(
    state: nnx.State, mesh: jax.sharding.Mesh, rules: LogicalRules | None = None
) -> nnx.State:
    """A tree like ``state`` (an ``nnx.State`` or split module state) of ``NamedSharding``s.

    Works on concrete and abstract (``nnx.eval_shape``) states; suitable for
    ``jax.jit(..., out_shardings=...)`` and ``jax.device_put``.
    """

    def one(variable):
        names = variable_names(variable)
        value = variable.get_value()
        if names is None:
            return variable.replace(NamedSharding(mesh, PartitionSpec()))
        return variable.replace(logical_sharding(names, mesh, rules, shape=value.shape))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def model_shardings(
    model: nnx.Module, mesh: jax.sharding.Mesh, rules: LogicalRules | None = None
) -> nnx.State:
    """:func:`state_shardings` of ``nnx.state(model)``."""
    return state_shardings(nnx.state(model), mesh, rules)


def active_spec(names: Sequence[str | None], shape: Sequence[int]) -> PartitionSpec | None:
    """Spec for logical ``names`` under the active (all-``Auto``) mesh, or None without one."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types):
        return None
    return logical_to_spec(names, current_rules(), mesh=mesh, shape=shape)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Sharding constraint from logical ``names`` under the active mesh; identity without one.

    Only meshes whose axes are all ``Auto`` are constrained (explicit-sharding meshes
    carry their shardings in the types already).
    """
    spec = active_spec(names, x.shape)
    return x if spec is None else jax.lax.with_sharding_constraint(x, spec)
