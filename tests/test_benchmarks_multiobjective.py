"""The multi-objective benchmark's smoke mode runs and reports sane numbers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "multiobjective_vs_reference.py"


def test_multiobjective_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("multiobjective_vs_reference", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "mo.json"
    assert bench.main(["--smoke", "--out", str(out)]) == 0
    meta = json.loads(out.read_text())
    assert meta["smoke"] and meta["rows"]
    for row in meta["rows"]:
        assert row["jaxalign_ms"] > 0 and row["reference_ms"] > 0
        assert row["ratio_reference_over_jaxalign"] > 0
        # Same direction as the reference (SLSQP's tolerance), and jaxalign's dual
        # solution is at least as good as SLSQP's.
        assert row["direction_rel_diff"] < 1e-2
        assert row["dual_jaxalign"] <= row["dual_reference"] + 1e-6 * abs(row["dual_reference"])
    assert "ratio" in capsys.readouterr().out
