"""Checkpoints: exact resume after SIGKILL, SIGTERM saves, NaN stops, damaged checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from jaxalign.train import (
    Checkpointer,
    NonFiniteError,
    config_to_dict,
    read_jsonl,
    train,
)

ROOT = Path(__file__).resolve().parents[2]


def _cli(config, *extra: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    """``jaxalign train`` on ``config`` in a fresh process."""
    path = Path(config.run.out_dir).with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "jaxalign.cli", "train", str(path), *extra],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def _losses(run_dir) -> list[float]:
    records = read_jsonl(Path(run_dir) / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    return [r["loss"] for r in records]


def test_sigkilled_run_resumes_to_the_same_losses_bitwise(tmp_path, make_config):
    common = ("run.steps=6", "checkpoint.every_steps=2", "checkpoint.async_save=true")
    killed_cfg = make_config(tmp_path / "killed", *common)
    proc = _cli(killed_cfg, "debug.sigkill_after_step=5")  # runs while we compute the reference
    reference = train(make_config(tmp_path / "reference", *common), quiet=True)
    ref_losses = [r["loss"] for r in reference.history]
    assert ref_losses == _losses(tmp_path / "reference")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    assert len(_losses(tmp_path / "killed")) == 5  # it died after logging step 5

    resumed = train(make_config(tmp_path / "killed", *common, "run.resume=true"), quiet=True)
    assert resumed.resumed_from in (2, 4)  # 4 unless the kill beat the async save
    assert resumed.step == 6
    assert _losses(tmp_path / "killed") == ref_losses  # bitwise, every step
    assert ref_losses[-1] < ref_losses[0]
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(reference.state)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_sigterm_writes_a_checkpoint_of_the_current_step(tmp_path, make_config):
    cfg = make_config(tmp_path / "run", "run.steps=100000", "checkpoint.every_steps=100000")
    proc = _cli(cfg, stdout=subprocess.DEVNULL)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    last = _losses(tmp_path / "run")
    steps = Checkpointer(tmp_path / "run" / "checkpoints", cfg.checkpoint).all_steps()
    assert steps == [len(last)]  # saved exactly where it stopped
    meta = json.loads(
        (tmp_path / "run" / "checkpoints" / str(steps[0]) / "meta" / "metadata").read_text()
    )
    assert meta["step"] == steps[0]
    assert meta["data"]["index"] == (steps[0] * 8) % 64


def test_nan_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, make_config):
    cfg = make_config(tmp_path / "run", "run.steps=6", "checkpoint.every_steps=2",
                      "debug.nan_at_step=4")  # fmt: skip
    with pytest.raises(NonFiniteError, match=r"at step 4 \(loss=nan.*last good checkpoint: step 2"):
        train(cfg, quiet=True)
    ckpt = Checkpointer(tmp_path / "run" / "checkpoints", cfg.checkpoint)
    assert ckpt.all_steps() == [2]
    assert len(_losses(tmp_path / "run")) == 3  # steps 1-3 logged, the NaN step not
    resumed = train(
        make_config(tmp_path / "run", "run.steps=3", "checkpoint.every_steps=2", "run.resume=true"),
        quiet=True,
    )
    assert resumed.resumed_from == 2
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(resumed.state.params))


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, make_config, capfd):
    common = ("checkpoint.every_steps=2",)
    first = train(make_config(tmp_path / "run", "run.steps=4", *common), quiet=True)
    ref_losses = [r["loss"] for r in first.history]
    damaged = 0
    for f in (tmp_path / "run" / "checkpoints" / "4" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
            damaged += 1
    assert damaged
    resumed = train(make_config(tmp_path / "run", "run.steps=4", *common, "run.resume=true"),
                    quiet=True)  # fmt: skip
    err = capfd.readouterr().err
    assert "checkpoints/4 is unreadable" in err and "falling back" in err
    assert resumed.resumed_from == 2
    assert _losses(tmp_path / "run") == ref_losses


def test_non_empty_run_directory_is_not_overwritten_silently(tmp_path, make_config):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not empty; resume it with --resume"):
        train(make_config(tmp_path / "run", "run.steps=1"), quiet=True)
    assert (tmp_path / "run" / "notes.txt").read_text() == "keep me"
