"""Runs a worker script as two ``jax.distributed`` processes on localhost.

The tests of multi-process runs (data loading, offline and online training) start the same
way: two Python processes, told by the ``JAXALIGN_*`` environment variables where the
coordinator listens and which process they are, without this process's 8-device
``XLA_FLAGS`` (each worker sets its own device count). Each worker prints one line
``RESULT <json>``. Output goes to files, so a chatty worker never blocks on a full pipe while
the test computes its single-process reference, and a failure report shows both processes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUM_PROCESSES = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class TwoProcesses:
    """The running workers; as a context manager, kills any still running on exit."""

    def __init__(self, worker: Path, args: Sequence[str], log_dir: Path, env: Mapping[str, str]):
        port = free_port()
        self.procs: list[tuple[subprocess.Popen, Path, Path]] = []
        for pid in range(NUM_PROCESSES):
            proc_env = {
                **os.environ,
                "JAXALIGN_COORDINATOR": f"localhost:{port}",
                "JAXALIGN_NUM_PROCESSES": str(NUM_PROCESSES),
                "JAXALIGN_PROCESS_ID": str(pid),
                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                **env,
            }
            proc_env.pop("XLA_FLAGS", None)
            stdout, stderr = log_dir / f"p{pid}.out", log_dir / f"p{pid}.err"
            with stdout.open("w") as fo, stderr.open("w") as fe:
                cmd = [sys.executable, str(worker), *args]
                proc = subprocess.Popen(cmd, env=proc_env, stdout=fo, stderr=fe)
            self.procs.append((proc, stdout, stderr))

    def __enter__(self) -> TwoProcesses:
        return self

    def __exit__(self, *exc_info) -> None:
        self.kill()

    def kill(self) -> None:
        for p, _, _ in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def stdout(self, pid: int) -> str:
        return self.procs[pid][1].read_text()

    def report(self) -> str:
        parts = []
        for pid, (p, stdout, stderr) in enumerate(self.procs):
            parts.append(
                f"--- process {pid} (exit code {p.returncode}) stdout:\n"
                f"{stdout.read_text()[-2000:]}"
                f"\n--- process {pid} stderr:\n{stderr.read_text()[-6000:]}"
            )
        return "\n".join(parts)

    def wait(self, timeout_s: float) -> list[dict]:
        """Waits for both processes and returns their ``RESULT`` dicts, in process order.

        Once one fails (or time runs out) the other is killed, since it would wait forever on
        a collective, and the test fails with both processes' output.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            codes = [p.poll() for p, _, _ in self.procs]
            if all(c == 0 for c in codes):
                return [_result(self.stdout(pid)) for pid in range(NUM_PROCESSES)]
            if any(c not in (None, 0) for c in codes) or time.monotonic() > deadline:
                self.kill()
                why = "timed out" if all(c in (None, 0) for c in codes) else "a process failed"
                pytest.fail(f"two-process run: {why}\n{self.report()}")
            time.sleep(0.2)


def _result(stdout: str) -> dict:
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def launch(
    worker: Path, args: Sequence[object], log_dir: Path, env: Mapping[str, str] | None = None
) -> TwoProcesses:
    """Starts ``python worker *args`` as processes 0 and 1; their output goes to ``log_dir``.

    ``env`` adds (or overrides) environment variables of both processes.
    """
    return TwoProcesses(worker, [str(a) for a in args], log_dir, env or {})
