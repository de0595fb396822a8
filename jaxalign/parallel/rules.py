"""Logical axis names → mesh axes.

Model parameters and activations are annotated with *logical* dimension names
(``batch``, ``length``, ``embed``, ``mlp``, ``heads``, ``kv_heads``, ``vocab``, …).
A :class:`LogicalRules` table maps each name to zero or more mesh axes
(``data``, ``fsdp``, ``tensor``); changing the parallelism strategy is a change
of table, never of model code.

Resolution of one array's names, dimension by dimension:

1. look the name up in the rules (unknown names are an error: a typo would
   otherwise silently replicate a large tensor);
2. drop mesh axes already used by an earlier dimension — a mesh axis can split
   only one dimension, so for an activation ``(batch, length, embed)`` the batch
   takes ``fsdp`` and ``embed`` stays whole;
3. with a ``mesh``: drop axes of size 1 (they split nothing);
4. with a ``shape``: keep, in order, each remaining axis that still divides the
   dimension together with the axes kept before it, so a 2-head attention on
   ``tensor=4`` replicates the heads instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxalign.config import nearest_key

#: What a logical name maps to: a mesh axis, several mesh axes, or None (replicated).
MeshAxes: TypeAlias = str | Sequence[str] | None


def _normalise_axes(name: str, axes: Any) -> tuple[str, ...] | None:
    if axes is None:
        return None
    if isinstance(axes, str):
        return (axes,)
    if isinstance(axes, Sequence) and all(isinstance(a, str) for a in axes):
        axes = tuple(axes)
        if len(set(axes)) != len(axes):
            raise ValueError(f"logical axis {name!r} maps to repeated mesh axes {list(axes)}")
        return axes or None
    raise ValueError(
        f"logical axis {name!r} must map to a mesh axis name, a list of names or None; got {axes!r}"
    )


class LogicalRules(Mapping[str, "tuple[str, ...] | None"]):
    """An immutable, hashable mapping from logical axis names to mesh axes.

    Values are normalised to a tuple of mesh-axis names, or None for "replicated".
    Being hashable, rules can be closed over or passed as static jit arguments.

    Example::

        rules = DEFAULT_RULES.replace(embed=None)  # pure tensor parallel for params
        rules["batch"]                              # → ("data", "fsdp")
    """

    __slots__ = ("_items",)

    def __init__(self, rules: Mapping[str, MeshAxes] | Iterable[tuple[str, MeshAxes]] = ()):
        pairs = rules.items() if isinstance(rules, Mapping) else rules
        items: dict[str, tuple[str, ...] | None] = {}
        for pair in pairs:
            if not (isinstance(pair, tuple | list) and len(pair) == 2):
                raise ValueError(f"logical rules must be (name, mesh axes) pairs, got {pair!r}")
            name, axes = pair
            if not isinstance(name, str) or not name:
                raise ValueError(f"logical axis names must be non-empty strings, got {name!r}")
            if name in items:
                raise ValueError(f"logical axis {name!r} appears twice in the rules")
            items[name] = _normalise_axes(name, axes)
        self._items = tuple(items.items())

    def __getitem__(self, name: str) -> tuple[str, ...] | None:
        for key, axes in self._items:
            if key == name:
                return axes
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LogicalRules):
            return self._items == other._items
        return NotImplemented

    def __repr__(self) -> str:
        return f"LogicalRules({dict(self._items)!r})"

    def replace(self, rules: Mapping[str, MeshAxes] | None = None, **kwargs: MeshAxes):
        """New rules with some names remapped (or added)."""
        updates = {**(rules or {}), **kwargs}
        merged = dict(self._items)
        merged.update({k: _normalise_axes(k, v) for k, v in updates.items()})
        return LogicalRules(merged)

    def as_pairs(self) -> tuple[tuple[str, tuple[str, ...] | None], ...]:
        """``((name, mesh_axes), ...)``, the form ``flax.nnx.logical_axis_rules`` takes."""
        return self._items

    def mesh_axes(self, name: str) -> tuple[str, ...]:
        """The mesh axes for ``name`` (empty when replicated); clear error when unknown."""
        if name not in self:
            hint = nearest_key(name, list(self))
            extra = f"; did you mean {hint!r}?" if hint else ""
            raise ValueError(
                f"unknown logical axis name {name!r}{extra} Known names: {sorted(self)}. "
                f"Add it to the rules, e.g. rules.replace({name}=None) to replicate it."
            )
        return self[name] or ()


#: Default rules: batch over (data, fsdp); parameters' embed over fsdp; the
#: model-parallel dimensions over tensor; sequence length, head_dim, a scanned
#: layer axis, activations' model dimension (act_embed), the KV-cache length and
#: label dimensions replicated.
DEFAULT_RULES = LogicalRules(
    {
        "batch": ("data", "fsdp"),
        "length": None,
        "embed": "fsdp",
        "mlp": "tensor",
        "heads": "tensor",
        "kv_heads": "tensor",
        "vocab": "tensor",
        "head_dim": None,
        "layers": None,
        "act_embed": None,
        "cache_length": None,
        "labels": None,
        # Inside the LM head and the embedding lookup: the vocabulary split over every
        # model-parallel axis and the batch only over data, so the (vocab, embed) matrix
        # is never all-gathered (each device scores all of a chunk's positions against
        # its slice of the vocabulary; Megatron's vocabulary-parallel cross-entropy).
        "head_batch": "data",
        "head_vocab": ("fsdp", "tensor"),
    }
)

LogicalNames: TypeAlias = Sequence[str | Sequence[str] | None]


def logical_to_pspec(
    names: LogicalNames,
    rules: Mapping[str, MeshAxes] = DEFAULT_RULES,
    *,
    mesh: Mesh | None = None,
    shape: Sequence[int] | None = None,
    strict: bool = True,
) -> PartitionSpec:
    """Translates one array's logical dimension names into a ``PartitionSpec``.

    The one logical-axis resolver of jaxalign: the model's parameter and activation
    shardings (:mod:`jaxalign.models.sharding`) and the batch shardings all come from it.

    Args:
        names: one entry per array dimension: a logical name, a tuple of logical
            names (their mesh axes are concatenated), or None (replicated). A
            ``PartitionSpec`` of logical names (as ``nnx.get_partition_spec``
            returns) works too.
        rules: logical name → mesh axes; :data:`DEFAULT_RULES` by default.
        mesh: if given, mesh axes are checked against it and size-1 axes dropped.
        shape: the array's shape; if given (with ``mesh``), mesh axes that would
            not divide a dimension evenly are skipped (that part replicated), and
            ``names`` shorter than the rank are padded with None.
        strict: unknown logical names and mesh axes the mesh lacks are errors (the
            default, for configs); ``False`` replicates those dimensions instead (for a
            model annotated once and run on meshes of any shape, e.g. a 2-axis test mesh).

    Returns:
        A ``PartitionSpec`` over mesh axis names, one entry per dimension.
    """
    if not isinstance(rules, LogicalRules):
        rules = LogicalRules(rules)
    names = tuple(names)
    if shape is not None:
        shape = tuple(shape)
        if len(names) > len(shape):
            raise ValueError(
                f"logical names {names} have {len(names)} entries but the array has shape "
                f"{shape}; expected at most one name (or None) per dimension"
            )
        # PartitionSpec semantics: missing trailing entries are replicated dimensions.
        names = names + (None,) * (len(shape) - len(names))
        if mesh is None:
            raise ValueError("shape was given without mesh; the mesh sizes are needed to use it")
    mesh_sizes = dict(mesh.shape) if mesh is not None else None
    used: set[str] = set()
    entries: list[str | tuple[str, ...] | None] = []
    for dim, entry in enumerate(names):
        if entry is None:
            entries.append(None)
            continue
        logical = (entry,) if isinstance(entry, str) else tuple(entry)
        axes: list[str] = []
        for name in logical:
            if name is None or (not strict and name not in rules):
                continue
            for axis in rules.mesh_axes(name):
                if mesh_sizes is not None and axis not in mesh_sizes:
                    if not strict:
                        continue
                    raise ValueError(
                        f"logical axis {name!r} maps to mesh axis {axis!r}, which the mesh "
                        f"does not have (mesh axes: {list(mesh_sizes)})"
                    )
                if axis in used or axis in axes:
                    continue
                if mesh_sizes is not None and mesh_sizes[axis] == 1:
                    continue
                axes.append(axis)
        if shape is not None:
            kept: list[str] = []
            for axis in axes:
                if shape[dim] % (math.prod(mesh_sizes[a] for a in kept) * mesh_sizes[axis]) == 0:
                    kept.append(axis)
            axes = kept
        used.update(axes)
        entries.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return PartitionSpec(*entries)


def logical_to_sharding(
    names: LogicalNames,
    mesh: Mesh,
    rules: Mapping[str, MeshAxes] = DEFAULT_RULES,
    *,
    shape: Sequence[int] | None = None,
) -> NamedSharding:
    """``NamedSharding`` on ``mesh`` for an array with logical dimension ``names``.

    See :func:`logical_to_pspec` for the resolution rules; pass ``shape`` to fall
    back to replication where a mesh axis does not divide a dimension.
    """
    return NamedSharding(mesh, logical_to_pspec(names, rules, mesh=mesh, shape=shape))


def _is_spec_leaf(x: Any) -> bool:
    return x is None or isinstance(x, PartitionSpec)


def tree_logical_to_sharding(
    logical_specs: Any,
    mesh: Mesh,
    rules: Mapping[str, MeshAxes] = DEFAULT_RULES,
    *,
    shapes: Any = None,
) -> Any:
    """Maps a pytree of logical ``PartitionSpec`` leaves to ``NamedSharding`` leaves.

    Why: a Flax NNX model's abstract state gives ``nnx.get_partition_spec(state)``
    (leaves are ``PartitionSpec`` of logical names, ``P()`` when unannotated);
    this turns it into the shardings ``jax.jit(init, out_shardings=...)`` needs.

    Args:
        logical_specs: pytree with ``PartitionSpec`` (or None = replicated) leaves.
        mesh: the device mesh.
        rules: logical name → mesh axes.
        shapes: optional pytree of the same structure with arrays or
            ``jax.ShapeDtypeStruct`` leaves, enabling the divisibility fallback.

    Returns:
        A pytree of the same structure with ``NamedSharding`` leaves.
    """
    if not isinstance(rules, LogicalRules):
        rules = LogicalRules(rules)

    def one(spec, shaped=None):
        names = () if spec is None else tuple(spec)
        shape = None if shaped is None else tuple(shaped.shape)
        return logical_to_sharding(names, mesh, rules, shape=shape)

    if shapes is None:
        return jax.tree.map(one, logical_specs, is_leaf=_is_spec_leaf)
    return jax.tree.map(one, logical_specs, shapes, is_leaf=_is_spec_leaf)


def with_logical_constraint(
    x: jax.Array, names: LogicalNames, mesh: Mesh, rules: Mapping[str, MeshAxes] = DEFAULT_RULES
) -> jax.Array:
    """``jax.lax.with_sharding_constraint`` by logical names (for activations in a step)."""
    return jax.lax.with_sharding_constraint(
        x, logical_to_sharding(names, mesh, rules, shape=x.shape)
    )


__all__ = [
    "DEFAULT_RULES",
    "LogicalNames",
    "LogicalRules",
    "MeshAxes",
    "logical_to_pspec",
    "logical_to_sharding",
    "tree_logical_to_sharding",
    "with_logical_constraint",
]
