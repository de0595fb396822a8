"""Multi-host initialisation through ``jax.distributed``.

Every process of a multi-host run calls :func:`initialize_distributed` once,
before any JAX computation. Settings come from the arguments, else from a
:class:`DistributedConfig`, else from environment variables:

=============================  =========================================
``JAXALIGN_COORDINATOR``       ``host:port`` of process 0's coordinator
``JAXALIGN_NUM_PROCESSES``     number of processes
``JAXALIGN_PROCESS_ID``        this process's id in ``[0, num_processes)``
``JAXALIGN_LOCAL_DEVICE_IDS``  comma-separated local device ids (optional)
``JAXALIGN_DISTRIBUTED``       ``auto``: let JAX detect the cluster
                               (Cloud TPU, SLURM, Open MPI, ...)
=============================  =========================================

With none of these set (or one process), it does nothing: single-process runs
need no coordinator.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import jax

ENV_COORDINATOR = "JAXALIGN_COORDINATOR"
ENV_NUM_PROCESSES = "JAXALIGN_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXALIGN_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "JAXALIGN_LOCAL_DEVICE_IDS"
ENV_DISTRIBUTED = "JAXALIGN_DISTRIBUTED"


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Multi-host settings; every field None means "use the environment"."""

    coordinator_address: str | None = None  # "host:port" of process 0
    num_processes: int | None = None  # total processes; None/1 = single process
    process_id: int | None = None  # this process, 0-based
    local_device_ids: tuple[int, ...] | None = None  # devices this process uses
    auto: bool = False  # let jax detect the cluster (TPU pod, SLURM, MPI)
    initialization_timeout: int = 300  # seconds to wait for all processes


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer") from None


def _env_ids(env: Mapping[str, str], name: str) -> tuple[int, ...] | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return tuple(int(x) for x in raw.split(",") if x.strip())
    except ValueError:
        raise ValueError(
            f"environment variable {name}={raw!r} must be comma-separated integers, e.g. '0,1'"
        ) from None


def resolve_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: int | Sequence[int] | None = None,
    *,
    config: DistributedConfig | None = None,
    env: Mapping[str, str] | None = None,
) -> DistributedConfig:
    """Merges arguments > ``config`` > environment into one validated config."""
    env = os.environ if env is None else env
    config = DistributedConfig() if config is None else config

    def pick(arg, cfg, env_value):
        return arg if arg is not None else cfg if cfg is not None else env_value

    address = pick(
        coordinator_address, config.coordinator_address, env.get(ENV_COORDINATOR) or None
    )
    n = pick(num_processes, config.num_processes, _env_int(env, ENV_NUM_PROCESSES))
    pid = pick(process_id, config.process_id, _env_int(env, ENV_PROCESS_ID))
    ids = pick(local_device_ids, config.local_device_ids, _env_ids(env, ENV_LOCAL_DEVICE_IDS))
    if isinstance(ids, int):
        ids = (ids,)
    auto_env = env.get(ENV_DISTRIBUTED, "").strip().lower()
    if auto_env not in ("", "auto", "0", "off", "false"):
        raise ValueError(f"environment variable {ENV_DISTRIBUTED}={auto_env!r}; expected 'auto'")
    auto = config.auto or auto_env == "auto"

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"num_processes must be a positive integer, got {n!r}")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid < 0):
        raise ValueError(f"process_id must be a non-negative integer, got {pid!r}")
    if n is not None and pid is not None and pid >= n:
        raise ValueError(f"process_id={pid} must be < num_processes={n}")
    if address is not None:
        host, sep, port = str(address).rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(
                f"coordinator_address must look like 'host:port', got {address!r} "
                f"(argument, config or {ENV_COORDINATOR})"
            )
    if not auto and n is not None and n > 1:
        missing = [
            name
            for name, value in (
                (f"coordinator_address ({ENV_COORDINATOR})", address),
                (f"process_id ({ENV_PROCESS_ID})", pid),
            )
            if value is None
        ]
        if missing:
            raise ValueError(
                f"num_processes={n} needs {' and '.join(missing)}; set them as arguments, "
                "in the config, or in the environment"
            )
    return DistributedConfig(
        coordinator_address=address,
        num_processes=n,
        process_id=pid,
        local_device_ids=None if ids is None else tuple(ids),
        auto=auto,
        initialization_timeout=config.initialization_timeout,
    )


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: int | Sequence[int] | None = None,
    *,
    config: DistributedConfig | None = None,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Joins a multi-host run via ``jax.distributed.initialize``; no-op for one process.

    Must run before any JAX computation in the process (JAX's own requirement).
    Calling it again after a successful initialisation does nothing.

    Args:
        coordinator_address: ``"host:port"`` of process 0.
        num_processes: total number of processes.
        process_id: this process's id.
        local_device_ids: devices visible to this process (default all local).
        config: defaults for any argument left None.
        env: environment to read (``os.environ`` by default).

    Returns:
        True if this process is part of a multi-process run, False if it runs alone.
    """
    cfg = resolve_distributed(
        coordinator_address,
        num_processes,
        process_id,
        local_device_ids,
        config=config,
        env=env,
    )
    if jax.distributed.is_initialized():
        return True
    if not cfg.auto and (cfg.num_processes is None or cfg.num_processes == 1):
        return False
    jax.distributed.initialize(
        coordinator_address=cfg.coordinator_address,
        num_processes=cfg.num_processes,
        process_id=cfg.process_id,
        local_device_ids=cfg.local_device_ids,
        initialization_timeout=cfg.initialization_timeout,
    )
    return True


__all__ = [
    "ENV_COORDINATOR",
    "ENV_DISTRIBUTED",
    "ENV_LOCAL_DEVICE_IDS",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "DistributedConfig",
    "initialize_distributed",
    "resolve_distributed",
]
