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
    assert meta["smoke"] and meta["rows"] and meta["label"] == "smoke run — not a result"
    for row in meta["rows"]:
        sides = row["sides"]
        assert set(sides) == {"jaxalign", "hybrid", "host_reference", "step_mean", "step_cagrad"}
        assert all(s["min_s"] > 0 and s["min_s"] <= s["median_s"] for s in sides.values())
        assert row["ratio_hybrid_over_jaxalign"]["ratio_of_medians"] > 0
        assert row["ratio_host_reference_over_jaxalign"]["ratio_of_mins"] > 0
        # Same direction as both peers (SLSQP's tolerance), and jaxalign's dual solution is
        # at least as good as SLSQP's.
        assert row["direction_rel_diff_hybrid"] < 1e-2
        assert row["direction_rel_diff_host_reference"] < 1e-2
        for peer in ("hybrid", "host_reference"):
            dual = row[f"dual_{peer}"]
            assert row["dual_jaxalign"] <= dual + 1e-6 * abs(dual)
    assert "ratio" in capsys.readouterr().out
