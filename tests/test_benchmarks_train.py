"""The DPO-vs-TRL benchmark's smoke mode runs (jaxalign only) and writes its JSON."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "dpo_step_vs_trl.py"


def test_dpo_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("dpo_step_vs_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "dpo.json"
    result = module.main(["--smoke", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "trl: skipped (--smoke)" in printed
    saved = json.loads(out.read_text())
    assert saved["ratio_jaxalign_over_trl"] is None
    row = saved["results"]["jaxalign"]
    assert row["tokens_per_s"] > 0 and 0 < row["fraction_of_matmul_peak"]
    assert abs(result["results"]["jaxalign"]["first_loss"] - 0.6931472) < 1e-5  # log 2 at π = π_ref
