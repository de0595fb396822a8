"""The engine's guarantees, once, for every task kind (offline pairwise, multi-objective,
online Nash, KL-regularised policy gradient, SFT, reward model, preference model):

* a SIGKILLed run resumed with ``--resume`` repeats the uninterrupted run bitwise;
* SIGTERM writes a checkpoint of the current step and the CLI exits 130;
* a NaN stops the run naming the step and keeps the last good checkpoint;
* a (2, 2, 2) data × fsdp × tensor mesh on 8 CPU devices gives the one-device run;
* two ``jax.distributed`` processes give the one-process run;
* a changed config on resume is reported and the old one kept;
* a second process on the same run directory is refused.
"""

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
import two_process
import yaml
from tiny_models import task_config

from jaxalign.train import (
    Checkpointer,
    NonFiniteError,
    RunLockedError,
    config_to_dict,
    read_jsonl,
    train,
)
from jaxalign.train.engine import RunDirectory

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("two_process_engine_worker.py")
KINDS = (
    "offline",
    "multiobjective",
    "nash",
    "policy_gradient",
    "sft",
    "reward_model",
    "preference_model",
)
# A hyperparameter of each kind that changes the trajectory (for the resume check).
TRAJECTORY_KEY = {
    "offline": "optimizer.lr=1e-3",
    "multiobjective": "optimizer.lr=1e-3",
    "nash": "online.learning_rate=0.01",
    "policy_gradient": "online.learning_rate=0.02",
    "sft": "optimizer.lr=1e-3",
    "reward_model": "optimizer.lr=1e-3",
    "preference_model": "optimizer.lr=1e-3",
}


def _write(config) -> Path:
    path = Path(config.run.out_dir).with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    return path


def _cli(config, *extra: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    """``jaxalign train`` on ``config`` in a fresh process."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "jaxalign.cli", "train", str(_write(config)), *extra],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def _losses(run_dir) -> list[float]:
    records = read_jsonl(Path(run_dir) / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    return [r["loss"] for r in records]


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


@pytest.mark.parametrize("kind", KINDS)
def test_sigkilled_run_resumes_to_the_same_run_bitwise(kind, tmp_path):
    common = ("run.steps=5", "checkpoint.every_steps=2")
    proc = _cli(task_config(kind, tmp_path / "killed", *common), "debug.sigkill_after_step=3")
    reference = train(task_config(kind, tmp_path / "reference", *common), quiet=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    assert len(_losses(tmp_path / "killed")) == 3  # it died after logging step 3
    resumed = train(task_config(kind, tmp_path / "killed", *common, "run.resume=true"), quiet=True)
    assert resumed.resumed_from == 2 and resumed.step == 5
    # Every logged value (losses, exact testbed scores, …) and the final state, bitwise.
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith(("_s", "_per_s", "mfu"))}
                          for r in rows]  # fmt: skip
    assert strip(read_jsonl(tmp_path / "killed" / "metrics.jsonl")) == strip(reference.history)
    for a, b in zip(_leaves(resumed.state), _leaves(reference.state), strict=True):
        np.testing.assert_array_equal(a, b)
    # The summary covers the whole run, not only the part after the resume.
    assert resumed.summary["first_loss"] == reference.summary["first_loss"]


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_writes_a_checkpoint_of_the_current_step_and_exits_130(kind, tmp_path):
    cfg = task_config(kind, tmp_path / "run", "run.steps=100000", "checkpoint.every_steps=100000")
    proc = _cli(cfg, stdout=subprocess.DEVNULL)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    logged = len(_losses(tmp_path / "run"))
    steps = Checkpointer(tmp_path / "run" / "checkpoints", cfg.checkpoint).all_steps()
    assert steps == [logged]  # saved exactly where it stopped
    meta = json.loads(
        (tmp_path / "run" / "checkpoints" / str(logged) / "meta" / "metadata").read_text()
    )
    assert meta["step"] == logged and "task" in meta
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["step"] == logged


@pytest.mark.parametrize("kind", KINDS)
def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(kind, tmp_path):
    cfg = task_config(kind, tmp_path / "run", "run.steps=5", "checkpoint.every_steps=2",
                      "debug.nan_at_step=4")  # fmt: skip
    with pytest.raises(NonFiniteError, match=r"at step 4 \(.*nan.*last good checkpoint: step 2"):
        train(cfg, quiet=True)
    assert Checkpointer(tmp_path / "run" / "checkpoints", cfg.checkpoint).all_steps() == [2]
    assert len(_losses(tmp_path / "run")) == 3  # steps 1-3 logged, the NaN step not
    resumed = train(
        task_config(kind, tmp_path / "run", "run.steps=3", "checkpoint.every_steps=2",
                    "run.resume=true"),
        quiet=True,
    )  # fmt: skip
    assert resumed.resumed_from == 2
    assert all(np.isfinite(x).all() for x in _leaves(resumed.state))


@pytest.mark.parametrize("kind", KINDS)
def test_a_222_mesh_on_8_devices_gives_the_one_device_run(kind, tmp_path):
    assert jax.device_count() == 8
    one = train(task_config(kind, tmp_path / "one", "run.steps=3"), quiet=True)
    mesh = ("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2")
    eight = train(task_config(kind, tmp_path / "eight", "run.steps=3", *mesh), quiet=True)
    assert eight.compilations == 1
    spread = [x for x in jax.tree.leaves(eight.state) if x.ndim >= 2]
    assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
               for x in spread)  # fmt: skip
    np.testing.assert_allclose(
        [r["loss"] for r in eight.history], [r["loss"] for r in one.history], rtol=1e-4, atol=1e-5
    )
    for a, b in zip(_leaves(eight.state), _leaves(one.state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_give_the_one_process_run(kind, tmp_path):
    mesh = ("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2")
    common = ("run.steps=3", "checkpoint.every_steps=2", *mesh)
    path = _write(task_config(kind, tmp_path / "two", *common))
    with two_process.launch(WORKER, [path], tmp_path) as procs:
        single = train(task_config(kind, tmp_path / "one", *common), quiet=True)
        outputs = procs.wait(timeout_s=400)
    assert [o["process"] for o in outputs] == [0, 1]
    assert all(o["devices"] == 8 and o["step"] == 3 for o in outputs)
    assert outputs[0]["losses"] == outputs[1]["losses"]
    expected = [r["loss"] for r in single.history]
    np.testing.assert_allclose(outputs[0]["losses"], expected, rtol=1e-4, atol=1e-5)
    assert _losses(tmp_path / "two") == outputs[0]["losses"]  # process 0 logged
    checkpoint = task_config(kind, tmp_path / "two", *common).checkpoint
    assert Checkpointer(tmp_path / "two" / "checkpoints", checkpoint).all_steps() == [2, 3]


@pytest.mark.parametrize("kind", KINDS)
def test_a_changed_config_on_resume_is_reported_and_the_old_one_kept(kind, tmp_path, capfd):
    train(task_config(kind, tmp_path / "run", "run.steps=2", "checkpoint.every_steps=2"),
          quiet=True)  # fmt: skip
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    key, value = TRAJECTORY_KEY[kind].split("=")
    train(task_config(kind, tmp_path / "run", "run.steps=3", "checkpoint.every_steps=2",
                      "run.resume=true", TRAJECTORY_KEY[kind]), quiet=True)  # fmt: skip
    err = capfd.readouterr().err
    assert "differs from the run's saved config" in err and key in err and "config.2.yaml" in err
    assert yaml.safe_load((tmp_path / "run" / "config.2.yaml").read_text()) == saved
    section, name = key.split(".")
    new = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert new[section][name] == float(value) != saved[section][name]


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_process_on_the_same_run_directory_is_refused(kind, tmp_path):
    cfg = task_config(kind, tmp_path / "run", "run.steps=1")
    holder = RunDirectory(cfg)  # what a running process holds for the whole run
    try:
        with pytest.raises(RunLockedError, match=r"is in use by pid \d+"):
            train(task_config(kind, tmp_path / "run", "run.steps=1", "run.resume=true"),
                  quiet=True)  # fmt: skip
    finally:
        holder.release()
    result = train(task_config(kind, tmp_path / "run", "run.steps=1", "run.resume=true"),
                   quiet=True)  # fmt: skip
    assert result.status == "completed"
    assert not (tmp_path / "run" / ".lock").exists()  # released when the run ends


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capfd):
    common = ("checkpoint.every_steps=2",)
    first = train(task_config("offline", tmp_path / "run", "run.steps=4", *common), quiet=True)
    ref_losses = [r["loss"] for r in first.history]
    damaged = 0
    for f in (tmp_path / "run" / "checkpoints" / "4" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
            damaged += 1
    assert damaged
    resumed = train(task_config("offline", tmp_path / "run", "run.steps=4", *common,
                                "run.resume=true"), quiet=True)  # fmt: skip
    err = capfd.readouterr().err
    assert "checkpoints/4 is unreadable" in err and "falling back" in err
    assert resumed.resumed_from == 2
    assert _losses(tmp_path / "run") == ref_losses


def test_non_empty_run_directory_is_not_overwritten_silently(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not empty; resume it with --resume"):
        train(task_config("offline", tmp_path / "run", "run.steps=1"), quiet=True)
    assert (tmp_path / "run" / "notes.txt").read_text() == "keep me"
