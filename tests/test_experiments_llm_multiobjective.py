"""`llm-multiobjective`: multi-objective DPO runs and every trained point is finite."""

import csv
import json
import math

from jaxalign import cli

NAME = "llm-multiobjective"


def test_llm_multiobjective_quick(tmp_path):
    args = ["reproduce", NAME, "--out", str(tmp_path), "--profile", "quick"]
    args += ["pairs=64", "steps=10", "hidden_size=8", "weights=[0.2,0.8]", "front_points=5"]
    assert cli.main(args) == 0
    assert (tmp_path / f"{NAME}.png").stat().st_size > 0
    summary = json.loads((tmp_path / f"{NAME}.json").read_text())["summary"]
    rows = list(csv.DictReader((tmp_path / f"{NAME}.csv").open()))
    assert {r["aggregator"] for r in rows} == {"weighted_sum", "mgda", "cagrad", "raco"}
    assert len(rows) == 6  # weighted_sum and raco at 2 weights, mgda and cagrad once
    assert summary["all_finite"]
    for r in rows:
        assert math.isfinite(float(r["reward_1"])) and math.isfinite(float(r["reward_2"]))
        assert float(r["kl"]) >= -1e-9
    assert summary["reward_correlation"] < 0  # the objectives conflict
