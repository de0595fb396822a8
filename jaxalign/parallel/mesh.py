"""Device meshes from a small, validated config.

A training run names three mesh axes, outermost first:

* ``data``   — pure data parallelism: parameters replicated, batch split.
* ``fsdp``   — fully sharded data parallelism: the batch *and* the parameters
  (their ``embed`` dimension by default) are split; parameters are all-gathered
  inside the step.
* ``tensor`` — tensor (model) parallelism: ``mlp``/``heads``/``vocab`` split.

``tensor`` is innermost so its frequent collectives use the fastest links; on a
multi-host run ``data`` is outermost so only gradient all-reduces cross hosts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
from jax.sharding import AxisType, Mesh

#: Mesh axis names, outermost first.
MESH_AXES: tuple[str, str, str] = ("data", "fsdp", "tensor")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the ``data``, ``fsdp`` and ``tensor`` mesh axes.

    At most one size may be ``-1``, meaning "all remaining devices". The product
    of the resolved sizes must equal the number of devices the mesh is built on
    (all global devices by default, so on a multi-host run the sizes count
    devices of every process).

    Example::

        MeshConfig(data=2, fsdp=-1, tensor=1).resolve(8)   # → (2, 4, 1)
    """

    data: int = 1  # data-parallel replicas (parameters replicated)
    fsdp: int = -1  # fully-sharded data parallel; -1 = the rest of the devices
    tensor: int = 1  # tensor parallelism over mlp / heads / vocab

    def __post_init__(self):
        sizes = self.sizes
        for name, size in zip(MESH_AXES, sizes):
            if isinstance(size, bool) or not isinstance(size, int):
                raise ValueError(f"mesh axis {name!r} size must be an integer, got {size!r}")
            if size == 0 or size < -1:
                raise ValueError(
                    f"mesh axis {name!r} size must be a positive integer or -1 "
                    f"(the rest of the devices), got {size}"
                )
        auto = [name for name, size in zip(MESH_AXES, sizes) if size == -1]
        if len(auto) > 1:
            raise ValueError(
                f"at most one mesh axis may be -1 (the rest of the devices), got -1 for "
                f"{auto} in {self}"
            )

    @property
    def sizes(self) -> tuple[int, int, int]:
        """The configured sizes ``(data, fsdp, tensor)``, ``-1`` unresolved."""
        return (self.data, self.fsdp, self.tensor)

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        """Axis sizes with ``-1`` replaced so that their product is ``num_devices``.

        Raises:
            ValueError: if the fixed sizes do not divide ``num_devices`` (with a
                ``-1``) or do not multiply to it (without one).
        """
        if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
            raise ValueError(f"num_devices must be a positive integer, got {num_devices!r}")
        sizes = self.sizes
        fixed = math.prod(s for s in sizes if s != -1)
        desc = ", ".join(f"{n}={s}" for n, s in zip(MESH_AXES, sizes))
        if -1 in sizes:
            if num_devices % fixed:
                raise ValueError(
                    f"mesh ({desc}): the fixed axis sizes multiply to {fixed}, which does not "
                    f"divide the {num_devices} available devices"
                )
            return tuple(num_devices // fixed if s == -1 else s for s in sizes)  # type: ignore[return-value]
        if fixed != num_devices:
            raise ValueError(
                f"mesh ({desc}) has {fixed} devices but {num_devices} are available; "
                "make the product equal the device count or set one axis to -1"
            )
        return sizes


def make_mesh(config: MeshConfig | None = None, devices: Sequence | None = None) -> Mesh:
    """Builds a ``(data, fsdp, tensor)`` mesh with ``AxisType.Auto`` axes.

    Why: sharding is expressed against these three names everywhere in jaxalign
    (see :mod:`jaxalign.parallel.rules`), so the same code runs on one device,
    8 fake CPU devices, a GPU node or a multi-host TPU pod.

    Args:
        config: axis sizes; ``MeshConfig()`` (all devices on ``fsdp``) if None.
        devices: devices to lay out; all *global* devices (``jax.devices()``,
            every process of a multi-host run) if None. Call
            :func:`jaxalign.parallel.initialize_distributed` first on multi-host.

    Returns:
        A :class:`jax.sharding.Mesh` with axis names ``("data", "fsdp", "tensor")``,
        devices ordered by :func:`jax.make_mesh` for the physical topology.
    """
    config = MeshConfig() if config is None else config
    if not isinstance(config, MeshConfig):
        raise ValueError(f"config must be a MeshConfig, got {type(config).__name__}")
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices is empty; expected at least one device")
    shape = config.resolve(len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


__all__ = ["MESH_AXES", "MeshConfig", "make_mesh"]
