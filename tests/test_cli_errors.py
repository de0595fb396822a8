"""``jaxalign`` errors, run as a user runs them (a subprocess): one line on stderr, no
traceback; exit code 2 for usage errors, 1 for a failed run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "train" / "dpo_tiny.yaml")


def _jaxalign(*args: str, cwd: Path, code: str | None = None) -> subprocess.CompletedProcess:
    """``python -m jaxalign.cli ARGS`` (or ``python -c CODE ARGS``) in ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env.pop("JAXALIGN_TRACEBACK", None)
    command = ["-c", code] if code else ["-m", "jaxalign.cli"]
    return subprocess.run(
        [sys.executable, *command, *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The whole of stderr, which must be one ``jaxalign: error:`` line."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jaxalign: error: "), proc.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["trian"], "argument command: invalid choice: 'trian'"),
        ([], "the following arguments are required: command"),
        (["train", CONFIG, "--out", "run", "--resum"], "unrecognized arguments: --resum"),
        (["train", CONFIG, "--out", "run", "optimizer.lrr=1"],
         "unknown config key 'optimizer.lrr' (value 1); did you mean 'lr'?"),
        (["train", CONFIG, "--out", "run", "run.steps=abc"],
         "run.steps: expected an integer, got 'abc'"),
        (["train", "missing.yaml"], "config file 'missing.yaml' does not exist"),
        (["train", "dup.yaml"], "dup.yaml:3: duplicate key 'run' (first set on line 1)"),
        (["train", "."], "config '.' is a directory; expected a YAML file"),
    ],
    ids=["subcommand", "no-subcommand", "flag", "key", "value", "missing", "duplicate", "dir"],
)  # fmt: skip
def test_usage_errors_are_one_line_with_exit_code_2(tmp_path, args, expected):
    (tmp_path / "dup.yaml").write_text("run:\n  steps: 3\nrun:\n  seed: 1\n")
    proc = _jaxalign(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert expected in _one_error_line(proc)
    assert not (tmp_path / "run").exists()  # nothing ran


_FAILING_RUN = """
import sys
from jaxalign import cli, train

def fail(config, **kwargs):
    raise {error}

train.train = fail
sys.exit(cli.main(["train", *sys.argv[1:]]))
"""


@pytest.mark.parametrize(
    "error, expected",
    [
        ("train.CheckpointError('no readable checkpoint in /r/checkpoints: step 4: ...')",
         "jaxalign: error: no readable checkpoint in /r/checkpoints: step 4: ... (set "
         "JAXALIGN_TRACEBACK=1 for the traceback)"),
        ("KeyError('loss')",
         "jaxalign: error: KeyError: 'loss' (set JAXALIGN_TRACEBACK=1 for the traceback)"),
    ],
    ids=["checkpoint", "unexpected"],
)  # fmt: skip
def test_a_failed_run_is_one_line_with_exit_code_1(tmp_path, error, expected):
    code = _FAILING_RUN.format(error=error)
    proc = _jaxalign(CONFIG, "--out", str(tmp_path / "run"), cwd=tmp_path, code=code)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert _one_error_line(proc) == expected
