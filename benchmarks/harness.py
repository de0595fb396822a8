"""The protocol every speed benchmark in this folder follows, in one place.

One run of a benchmark:

1. builds every side (jaxalign and its peers) and runs each ``--warmup`` times
   (compilation, allocator and thread-pool warm-up), in the order given;
2. waits until the machine is quiet — the 1-minute load average below ``--quiet-load``
   (1.5) — for at most ``--max-wait`` seconds; if it gives up, the result is labelled
   ``busy machine — not a result`` on stdout and in the JSON;
3. runs the sides **interleaved**, ``A B A B …`` for ``--repeats`` (≥ 5) rounds, so that
   load drift hits every side alike; each call is timed with ``time.perf_counter`` and
   must itself end in a host sync (the side's job: ``float(loss)``, ``.item()``,
   ``block_until_ready``);
4. reports per side the min and the median, and between two sides the ratio of the
   medians and the ratio of the mins;
5. records what produced the numbers: machine (CPU model, cores), the load average
   before and after the timed rounds, the CPU time *other* processes used while they
   ran (from ``/proc/stat`` minus this process's own CPU time), package versions and
   thread settings. A run during which other processes used more than a quarter of the
   cores on average is labelled busy as well: a quiet start does not make a quiet run.

Only the standard library here: the scripts import it before jax, torch or a peer.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

#: 1-minute load average below which the machine counts as quiet.
QUIET_LOAD = 1.5
#: Minimum number of interleaved rounds for a result.
MIN_REPEATS = 5
#: Other processes may use at most this fraction of the cores while the rounds run.
MAX_OTHER_FRACTION = 0.25
#: Shortest timed interval over which other processes' CPU use is measured.
MIN_METER_S = 2.0

QUIET = "quiet machine"
BUSY = "busy machine — not a result"
SMOKE = "smoke run — not a result"
SHORT = f"fewer than {MIN_REPEATS} rounds — not a result"

#: Packages whose versions every result records (those installed; others are skipped).
BASE_PACKAGES = ("jaxalign", "jax", "jaxlib", "flax", "optax", "numpy", "scipy")


# ----------------------------------------------------------------------------- arguments


def add_protocol_args(
    parser: argparse.ArgumentParser,
    *,
    repeats: int = MIN_REPEATS,
    warmup: int = 1,
    max_wait: float = 900.0,
) -> None:
    """Adds ``--repeats``, ``--warmup``, ``--max-wait`` and ``--quiet-load``."""
    parser.add_argument(
        "--repeats",
        type=int,
        default=repeats,
        help=f"interleaved timed rounds (A B A B …); ≥ {MIN_REPEATS} for a result",
    )
    parser.add_argument(
        "--warmup", type=int, default=warmup, help="untimed calls per side before the rounds"
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=max_wait,
        help="seconds to wait for a quiet machine before timing anyway (labelled busy)",
    )
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=QUIET_LOAD,
        help="1-minute load average below which the machine counts as quiet",
    )


# ----------------------------------------------------------------------------- machine state


def load_average() -> tuple[float, float, float] | None:
    """``os.getloadavg()`` (1, 5, 15 minutes), None where the OS has none."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]
    except (AttributeError, OSError):
        return None


def _cpu_jiffies() -> tuple[int, int] | None:
    """``(busy, steal)`` jiffies of all CPUs since boot, from ``/proc/stat`` (Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    return user + nice + system + irq + softirq, steal


class CpuMeter:
    """CPU used by other processes (and stolen by the hypervisor) over an interval, in cores."""

    def __init__(self):
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._start = (time.perf_counter(), time.process_time(), _cpu_jiffies())

    def stop(self) -> dict[str, float | None]:
        wall0, own0, jiffies0 = self._start
        wall = time.perf_counter() - wall0
        own = time.process_time() - own0
        jiffies = _cpu_jiffies()
        if jiffies0 is None or jiffies is None or wall < MIN_METER_S:
            # /proc/stat counts in 1/HZ ticks: over a short interval the rounding swamps it.
            return {"other_processes_cores": None, "steal_cores": None, "own_cores": None}
        busy = (jiffies[0] - jiffies0[0]) / self._hz
        steal = (jiffies[1] - jiffies0[1]) / self._hz
        # Interrupt time is nobody's process time, so it counts as "other"; clamp at zero
        # against the tick rounding.
        return {
            "other_processes_cores": round(max(busy - own, 0.0) / wall, 3),
            "steal_cores": round(steal / wall, 3),
            "own_cores": round(own / wall, 3),
        }


@dataclasses.dataclass
class QuietWait:
    """Outcome of :func:`wait_for_quiet`."""

    quiet: bool  # the load average dropped below the threshold in time
    waited_s: float  # seconds spent waiting
    load: tuple[float, float, float] | None  # load average when the wait ended
    threshold: float


def wait_for_quiet(
    threshold: float = QUIET_LOAD,
    max_wait: float = 900.0,
    *,
    poll_s: float = 5.0,
    say: Callable[[str], None] = print,
) -> QuietWait:
    """Waits until the 1-minute load average is below ``threshold``, at most ``max_wait`` s."""
    start = time.perf_counter()
    load = load_average()
    if load is None:  # no load average on this OS: nothing to wait for, nothing to claim
        return QuietWait(False, 0.0, None, threshold)
    told = False
    while load[0] >= threshold:
        waited = time.perf_counter() - start
        if waited >= max_wait:
            say(f"load average {load[0]:.2f} ≥ {threshold} after {waited:.0f} s: timing anyway, "
                f"the result is labelled '{BUSY}'")  # fmt: skip
            return QuietWait(False, waited, load, threshold)
        if not told:
            say(f"waiting for a quiet machine: load average {load[0]:.2f} ≥ {threshold} "
                f"(at most {max_wait:.0f} s, --max-wait)")  # fmt: skip
            told = True
        time.sleep(min(poll_s, max(max_wait - waited, 0.1)))
        load = load_average()
    return QuietWait(True, time.perf_counter() - start, load, threshold)


# ----------------------------------------------------------------------------- timing


@dataclasses.dataclass
class Measurement:
    """Interleaved samples of named sides plus the conditions they were taken in."""

    samples: dict[str, list[float]]  # seconds per timed call, in call order
    outputs: dict[str, list[Any]]  # what each call returned (warm-up calls included)
    wait: QuietWait
    load_before: tuple[float, float, float] | None
    load_after: tuple[float, float, float] | None
    cpu: dict[str, float | None]  # other processes' / stolen / own cores during the rounds
    repeats: int
    warmup: int
    smoke: bool = False

    @property
    def reasons(self) -> list[str]:
        """Why these samples are not a result (empty on a quiet machine)."""
        if self.smoke:
            return ["smoke run"]
        out = []
        if not self.wait.quiet:
            out.append(f"load average stayed ≥ {self.wait.threshold} (--max-wait)")
        other = self.cpu.get("other_processes_cores")
        if other is not None and other > MAX_OTHER_FRACTION * (os.cpu_count() or 1):
            out.append(f"other processes used {other:.2f} cores during the rounds")
        if self.repeats < MIN_REPEATS:
            out.append(f"{self.repeats} < {MIN_REPEATS} rounds")
        return out

    @property
    def label(self) -> str:
        """:data:`QUIET`, or why the numbers are not a result (:data:`SMOKE`, :data:`BUSY`,
        :data:`SHORT`, in that order)."""
        if self.smoke:
            return SMOKE
        reasons = self.reasons
        if not reasons:
            return QUIET
        return SHORT if reasons == [f"{self.repeats} < {MIN_REPEATS} rounds"] else BUSY

    @property
    def is_result(self) -> bool:
        return self.label == QUIET

    def stats(self, side: str) -> dict[str, Any]:
        """``min_s``, ``median_s``, ``n`` and the samples of one side."""
        return summarize(self.samples[side])

    def ratio(self, slower: str, faster: str) -> dict[str, float]:
        """How many times ``faster`` outruns ``slower``: time(slower) / time(faster)."""
        a, b = self.stats(slower), self.stats(faster)
        return {
            "ratio_of_medians": a["median_s"] / b["median_s"],
            "ratio_of_mins": a["min_s"] / b["min_s"],
        }

    def conditions(self) -> dict[str, Any]:
        """The JSON record of how the samples were taken."""
        return {
            "label": self.label,
            "not_a_result_because": self.reasons,
            "protocol": f"{self.warmup} warm-up call(s) per side, then {self.repeats} "
            "interleaved rounds (A B A B …); min and median per side",
            "repeats": self.repeats,
            "warmup": self.warmup,
            "quiet_threshold_load_1min": self.wait.threshold,
            "waited_for_quiet_s": round(self.wait.waited_s, 1),
            "quiet_at_start": self.wait.quiet,
            "load_average_before": self.load_before,
            "load_average_after": self.load_after,
            **self.cpu,
        }

    def describe(self) -> str:
        """One line: label, load before/after, others' CPU during the rounds."""
        other = self.cpu.get("other_processes_cores")
        steal = self.cpu.get("steal_cores")
        parts = [
            f"[{self.label}]",
            f"load average (1/5/15 min) before {_fmt_load(self.load_before)}, "
            f"after {_fmt_load(self.load_after)}",
        ]
        if other is not None:
            parts.append(f"other processes used {other:.2f} cores, steal {steal:.2f}")
        parts.append(f"{self.warmup} warm-up + {self.repeats} interleaved rounds")
        return "; ".join(parts)


def _fmt_load(load) -> str:
    return "n/a" if load is None else "/".join(f"{x:.2f}" for x in load)


def summarize(samples: Iterable[float]) -> dict[str, Any]:
    xs = list(samples)
    return {
        "min_s": min(xs),
        "median_s": statistics.median(xs),
        "n": len(xs),
        "samples_s": [round(x, 6) for x in xs],
    }


def run_interleaved(
    sides: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int,
    max_wait: float,
    quiet_load: float = QUIET_LOAD,
    smoke: bool = False,
    say: Callable[[str], None] = print,
) -> Measurement:
    """Warm-up calls, a wait for a quiet machine, then ``repeats`` rounds ``A B A B …``.

    Args:
        sides: name → a call that does one unit of work and ends in a host sync; what
            it returns is kept in ``Measurement.outputs`` (e.g. the loss, for checks).
        repeats: timed rounds; each round calls every side once, in the given order.
        warmup: untimed calls per side first (compilation).
        max_wait: seconds to wait for the load average to fall below ``quiet_load``.
        smoke: label the result as a smoke run (no waiting either).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    outputs: dict[str, list[Any]] = {name: [] for name in sides}
    for name, fn in sides.items():
        for _ in range(warmup):
            outputs[name].append(fn())
    wait = (
        QuietWait(False, 0.0, load_average(), quiet_load)
        if smoke
        else wait_for_quiet(quiet_load, max_wait, say=say)
    )
    samples: dict[str, list[float]] = {name: [] for name in sides}
    load_before = load_average()
    meter = CpuMeter()
    for _ in range(repeats):
        for name, fn in sides.items():
            start = time.perf_counter()
            out = fn()
            samples[name].append(time.perf_counter() - start)
            outputs[name].append(out)
    cpu = meter.stop()
    return Measurement(
        samples, outputs, wait, load_before, load_average(), cpu, repeats, warmup, smoke
    )


# ----------------------------------------------------------------------------- records


def versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Installed versions of :data:`BASE_PACKAGES` and ``extra`` (missing ones omitted)."""
    out = {"python": platform.python_version()}
    for name in (*BASE_PACKAGES, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(extra_packages: Iterable[str] = ()) -> dict[str, Any]:
    """Machine, thread settings and versions: what every printed number depends on."""
    record: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "env": {k: os.environ[k] for k in ("XLA_FLAGS", "OMP_NUM_THREADS") if k in os.environ},
        "versions": versions(extra_packages),
    }
    if "jax" in sys.modules:
        jax = sys.modules["jax"]
        record["jax_backend"] = jax.default_backend()
        record["jax_devices"] = [str(d) for d in jax.devices()]
    if "torch" in sys.modules:
        record["torch_threads"] = sys.modules["torch"].get_num_threads()
    return record


def describe_machine(record: Mapping[str, Any]) -> str:
    """One line: CPU, cores, backend, versions."""
    vs = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    threads = f", torch threads {record['torch_threads']}" if "torch_threads" in record else ""
    backend = f", jax backend {record['jax_backend']}" if "jax_backend" in record else ""
    return f"machine: {record['cpu_model']}, {record['cpu_count']} cores{backend}{threads}; {vs}"


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    """Writes ``payload`` (plus a UTC timestamp) as indented JSON, creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    stamped = {**payload, "created": now}
    path.write_text(json.dumps(stamped, indent=2, default=str) + "\n")
    return path


def overall_label(measurements: Iterable[Measurement]) -> str:
    """:data:`QUIET` if every measurement is a result, else the first other label."""
    labels = [m.label for m in measurements]
    return next((label for label in labels if label != QUIET), QUIET)


def print_verdict(measurement: Measurement) -> None:
    """The conditions line, and a loud warning when the numbers are not a result."""
    print(measurement.describe())
    if not measurement.is_result:
        print(f"*** {measurement.label} ({'; '.join(measurement.reasons)}): these numbers show "
              "that the script runs, nothing more ***")  # fmt: skip


__all__ = [
    "BUSY",
    "MIN_REPEATS",
    "QUIET",
    "QUIET_LOAD",
    "SHORT",
    "SMOKE",
    "CpuMeter",
    "Measurement",
    "QuietWait",
    "add_protocol_args",
    "describe_machine",
    "load_average",
    "machine",
    "overall_label",
    "print_verdict",
    "run_interleaved",
    "summarize",
    "versions",
    "wait_for_quiet",
    "write_json",
]
