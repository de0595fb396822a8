"""The run's metric writer: JSONL without bare NaN, TensorBoard files that TensorBoard's own
reader reads (also across a resume), W&B offline, and a clear error without the extra."""

import math
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jaxalign.config import ConfigError
from jaxalign.train import train
from jaxalign.train.metric_writer import MetricWriter, jsonable, read_jsonl


def _tensorboard(logdir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of ``logdir`` as TensorBoard shows it."""
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_jsonl_has_one_step_key_and_writes_non_finite_numbers_as_null(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False) as log:
        log.write(1, {"loss": np.float32(0.5), "grad_norm": float("nan"), "kl": -math.inf})
        log.write(2, {"loss": np.array(0.25), "per_k": np.array([1.0, np.inf]), "tag": "x"})
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert read_jsonl(tmp_path / "metrics.jsonl") == [
        {"step": 1, "loss": 0.5, "grad_norm": None, "kl": None},
        {"step": 2, "loss": 0.25, "per_k": [1.0, None], "tag": "x"},
    ]
    assert log.history == read_jsonl(tmp_path / "metrics.jsonl")


def test_metrics_with_their_own_step_key_are_refused(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False) as log:
        with pytest.raises(ValueError, match="must not contain a 'step' key"):
            log.write(1, {"step": 1, "loss": 0.5})


def test_jsonable_names_what_json_cannot_hold():
    assert jsonable({"a": (np.int64(3), np.bool_(True))}) == {"a": [3, True]}
    with pytest.raises(TypeError, match="cannot write a object"):
        jsonable({"a": object()})


def test_tensorboard_files_are_read_by_tensorboard_itself(tmp_path):
    with MetricWriter(tmp_path) as log:
        log.write(1, {"loss": 0.5, "acc": 1.0, "per_k": [0.1, 0.2], "note": "skipped"})
        log.write(2, {"loss": 0.25, "acc": float("nan")})
    series = _tensorboard(tmp_path / "tensorboard")
    assert sorted(series) == ["acc", "loss", "per_k/0", "per_k/1"]
    assert series["loss"] == [(1, 0.5), (2, 0.25)]
    assert series["acc"][0] == (1, 1.0) and math.isnan(series["acc"][1][1])
    np.testing.assert_allclose([v for _, v in series["per_k/1"]], [0.2])


def test_a_resumed_run_replaces_the_steps_it_computes_again(tmp_path):
    with MetricWriter(tmp_path) as log:
        for step in range(1, 6):
            log.write(step, {"loss": float(step)})
    # Killed after step 5, resumed from the checkpoint of step 3: steps 4-5 come again.
    with MetricWriter(tmp_path, resume_step=3) as log:
        assert log.dropped == 2
        assert [r["step"] for r in log.history] == [1, 2, 3]
        for step in range(4, 7):
            log.write(step, {"loss": 10.0 * step})
    expected = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]
    jsonl = read_jsonl(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["loss"]) for r in jsonl] == expected
    assert [(r["step"], r["loss"]) for r in log.history] == expected
    assert _tensorboard(tmp_path / "tensorboard")["loss"] == expected


def test_other_processes_write_nothing_but_keep_the_history(tmp_path):
    with MetricWriter(tmp_path, main_process=False) as log:
        log.write(1, {"loss": 0.5})
    assert list(tmp_path.iterdir()) == []
    assert log.history == [{"step": 1, "loss": 0.5}]


def test_wandb_without_the_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'jaxalign\[wandb\]'"):
        MetricWriter(tmp_path, wandb=True)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_wandb_offline_logs_without_network_and_resumes_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"),
                      ("WANDB_DATA_DIR", "data")):  # fmt: skip
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = tmp_path / "run"
    with MetricWriter(run, wandb=True, run_config={"beta": 0.1}) as log:
        log.write(1, {"loss": 0.625, "wandb_probe_metric": 1.0})
    run_id = (run / "wandb" / "run_id").read_text().strip()
    files = list((run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1
    data = files[0].read_bytes()
    assert b"wandb_probe_metric" in data and b"0.625" in data
    with MetricWriter(run, resume_step=1, wandb=True) as log:
        log.write(2, {"loss": 0.5})
    assert (run / "wandb" / "run_id").read_text().strip() == run_id
    assert len(list((run / "wandb").glob(f"offline-run-*-{run_id}"))) >= 1


def test_unknown_wandb_mode_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"wandb_mode='offlne' is not one of"):
        MetricWriter(tmp_path, wandb=True, wandb_mode="offlne")


def test_training_run_writes_the_metrics_as_tensorboard_scalars(tmp_path, make_config):
    result = train(make_config(tmp_path / "run", "run.steps=3"))
    tb_loss = _tensorboard(result.out_dir / "tensorboard")["loss"]
    jsonl_loss = [r["loss"] for r in read_jsonl(result.out_dir / "metrics.jsonl")]
    assert [s for s, _ in tb_loss] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in tb_loss], np.float32(jsonl_loss), rtol=1e-7)
