"""Smoke run of benchmarks/model_vs_hf.py (tiny sizes, no transformers peer)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "model_vs_hf.py"


def test_model_benchmark_smoke_mode_writes_results(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("model_vs_hf", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "model_vs_hf.json"
    result = module.main(["--smoke", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "transformers peer skipped" in printed
    saved = json.loads(out.read_text())
    assert saved["mode"] == "smoke" and "ratios" not in saved
    assert saved["label"] == "smoke run — not a result"
    row = saved["results"]["jaxalign"]
    assert row["prefill_tokens_per_s"] > 0 and row["decode_tokens_per_s"] > 0
    assert result["results"] == saved["results"]
