"""The scale benchmarks' smoke modes: the compiled-memory report and the accelerator step
script run unchanged on CPU at a tiny shape and write their JSON."""

import importlib.util
import json
from pathlib import Path

import jax

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import model_shapes
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_step_script_runs_on_cpu_at_a_tiny_shape(tmp_path, monkeypatch, capsys):
    out = tmp_path / "gpu.json"
    result = _load("gpu_step", monkeypatch).main(["--smoke", "--out", str(out)])
    (row,) = result["rows"]
    assert row["tokens_per_s"] > 0 and row["peak_memory_gb"] > 0
    assert 0 < row["mfu"] < 1 and abs(row["final_loss"] - 0.693) < 0.05
    assert json.loads(out.read_text())["rows"][0]["shape"] == "smoke"
    assert "tokens/s" in capsys.readouterr().out


def test_memory_scale_smoke_compiles_without_running(tmp_path, monkeypatch):
    out = tmp_path / "mem.json"
    result = _load("memory_scale", monkeypatch).main(["--smoke", "--out", str(out)])
    assert jax.device_count() == 8
    (row,) = result["rows"]
    assert row["measured"] > 0 and row["analytic"]["total"] > 0
    assert [d["num_layers"] for d in result["depth"]] == [1, 2]
    assert json.loads(out.read_text())["settings"]["remat"] == "full"
