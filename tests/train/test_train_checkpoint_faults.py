"""Checkpoint faults: a corrupt latest step is written again after the fallback, an
unwritable directory fails at once, and another model on resume is named field by field."""

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.models import ModelConfig
from jaxalign.train.checkpoint import (
    Checkpointer,
    CheckpointError,
    CheckpointMismatchError,
    check_checkpoint_model,
    checkpoint_model_differences,
)
from jaxalign.train.config import CheckpointConfig

CONFIG = CheckpointConfig(every_steps=1, keep=10, async_save=False)
ROOT = Path(__file__).resolve().parents[2]


def _state(step: int, size: int = 4) -> dict:
    return {"w": jnp.arange(size, dtype=jnp.float32) * step}


def _abstract(size: int = 4):
    return jax.eval_shape(lambda: _state(1, size))


def _damage(step_dir: Path) -> None:
    files = [f for f in (step_dir / "state").rglob("*") if f.is_file()]
    assert files
    for f in files:
        f.write_bytes(b"garbage")


def test_a_step_resume_fell_back_from_is_saved_again(tmp_path, capfd):
    ckpt = Checkpointer(tmp_path, CONFIG)
    for step in (2, 4):
        ckpt.save(step, _state(step), {"step": step})
    ckpt.close()
    _damage(tmp_path / "4")

    ckpt = Checkpointer(tmp_path, CONFIG)
    step, state, _ = ckpt.restore_latest(_abstract())
    err = capfd.readouterr().err
    assert step == 2
    assert f"checkpoint {tmp_path / '4'} is unreadable" in err and "falling back" in err
    assert f"moved unreadable checkpoint {tmp_path / '4'}" in err
    # The resumed run checkpoints step 3 and then step 4 again, both readable.
    assert ckpt.save(3, _state(3), {"step": 3})
    assert ckpt.save(4, _state(4), {"step": 4}, force=True)
    ckpt.close()

    ckpt = Checkpointer(tmp_path, CONFIG)
    assert ckpt.all_steps() == [2, 3, 4]
    step, state, meta = ckpt.restore_latest(_abstract())
    assert (step, meta["step"]) == (4, 4)
    np.testing.assert_array_equal(state["w"], _state(4)["w"])
    ckpt.close()
    assert (tmp_path / "unreadable-4" / "state").is_dir()  # kept for inspection


def test_no_readable_checkpoint_moves_nothing(tmp_path):
    ckpt = Checkpointer(tmp_path, CONFIG)
    ckpt.save(2, _state(2), {"step": 2})
    ckpt.close()
    _damage(tmp_path / "2")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint in .*step 2"):
        Checkpointer(tmp_path, CONFIG).restore_latest(_abstract())
    assert (tmp_path / "2").is_dir() and not (tmp_path / "unreadable-2").exists()


def test_a_checkpoint_path_that_is_a_file_fails_at_once(tmp_path):
    (tmp_path / "checkpoints").write_text("not a directory")
    with pytest.raises(CheckpointError, match=r"checkpoint directory '.*checkpoints' is not wr"):
        Checkpointer(tmp_path / "checkpoints", CONFIG)


_READ_ONLY_PROBE = """
import sys
from jaxalign.train.checkpoint import Checkpointer, CheckpointError
from jaxalign.train.config import CheckpointConfig
try:
    Checkpointer(sys.argv[1], CheckpointConfig())
except CheckpointError as e:
    print("CheckpointError:", e)
else:
    print("no error")
"""


def test_a_read_only_checkpoint_directory_fails_at_once_naming_it(tmp_path):
    read_only = tmp_path / "checkpoints"
    read_only.mkdir()
    read_only.chmod(0o555)
    expected = (
        f"checkpoint directory '{read_only}' is not writable (Permission denied); choose a "
        "writable run.out_dir or fix the directory's permissions"
    )
    try:
        if os.geteuid() != 0:
            with pytest.raises(CheckpointError) as e:
                Checkpointer(read_only, CONFIG)
            assert str(e.value) == expected
            return
        # root writes anywhere: check in a subprocess without the capability to override
        # file permissions (as a read-only mount would refuse it).
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to drop root's CAP_DAC_OVERRIDE")
        drop = ["setpriv", "--bounding-set=-dac_override", "--inh-caps=-dac_override"]
        proc = subprocess.run(
            [*drop, sys.executable, "-c", _READ_ONLY_PROBE, str(read_only)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.stdout.strip() == f"CheckpointError: {expected}", proc.stderr[-2000:]
    finally:
        read_only.chmod(0o755)


def test_resume_with_another_model_names_every_differing_field(tmp_path, capfd):
    saved = dataclasses.replace(ModelConfig(), hidden_size=32, num_layers=2)
    ckpt = Checkpointer(tmp_path, CONFIG)
    meta = {"step": 2, "config": {"model": dataclasses.asdict(saved)}}
    ckpt.save(2, _state(2, size=32), meta)
    ckpt.close()
    wanted = dataclasses.replace(saved, hidden_size=64, num_layers=4)
    ckpt = Checkpointer(tmp_path, CONFIG)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"^checkpoint has hidden_size=32, config asks 64; num_layers=2, config asks 4 \(",
    ):
        ckpt.restore_latest(_abstract(size=64), model=wanted)
    assert "unreadable" not in capfd.readouterr().err
    assert ckpt.all_steps() == [2]  # nothing moved aside
    step, _, _ = ckpt.restore_latest(_abstract(size=32), model=saved)
    assert step == 2


def test_model_differences_cover_architecture_fields_only():
    a = ModelConfig()
    b = dataclasses.replace(a, head_dim=8, param_dtype="bfloat16", remat="full", rope_theta=1.0)
    assert checkpoint_model_differences(a, b) == [
        "head_dim=16, config asks 8",
        "param_dtype='float32', config asks 'bfloat16'",
    ]
    assert checkpoint_model_differences(dataclasses.asdict(a), a) == []


def test_a_pretrained_run_config_does_not_tell_the_model():
    meta = {"config": {"init": {"pretrained": "/models/x"}, "model": {"hidden_size": 64}}}
    check_checkpoint_model(meta, {"hidden_size": 896})  # the shape came from the files
    meta["model"] = {"hidden_size": 64}  # the resolved model, when the engine records it
    with pytest.raises(CheckpointMismatchError, match="hidden_size=64, config asks 896"):
        check_checkpoint_model(meta, {"hidden_size": 896})
