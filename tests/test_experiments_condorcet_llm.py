"""The condorcet study's transformer panel: a tiny transformer trained online on the training
engine against the testbed's annotator-mixture oracle approaches the maximal lottery."""

import csv
import json

import pytest

from jaxalign import experiment

TINY = ["num_steps=100", "num_betas=10", "onpo_sweep=[1.0]"]


def _run(tmp_path, overrides):
    exp = experiment.get("condorcet")
    paths = experiment.reproduce(exp, out=tmp_path, overrides=TINY + overrides, quiet=True)
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0
    summary = json.loads(paths["json"].read_text())["summary"]
    with paths["csv"].open() as f:
        columns = next(csv.reader(f))
    return summary, columns


def test_online_transformer_approaches_the_maximal_lottery(tmp_path):
    s, columns = _run(
        tmp_path,
        [
            "transformer_algorithms=[onpo]",
            "transformer_iterations=15",
            "transformer_step_size=4",
            "transformer_batch_size=128",
            "transformer_inner_steps=20",
        ],
    )
    t = s["transformer"]
    assert t["algorithms"] == ["onpo"]
    start, avg = t["initial_gap"], t["final_average_gap"]["onpo"]
    assert start > 0.15  # π_0 is far from the lottery
    # the average of the transformer's iterates: gap cut by more than half, below the
    # RLHF-BT policy's and below the best point of the whole RLHF-BT path
    assert avg < 0.5 * start
    assert avg < t["rlhf_gap"]
    assert avg < s["testbed"]["rlhf_path_min_gap"]
    # ... and it tracks the tabular ONPO run from the transformer's own π_0
    assert abs(avg - t["tabular_final_average_gap"]["onpo"]) < 0.05
    # mass: closer to the lottery than π_0 and than the RLHF-BT policy
    tv_avg, tv_last = t["final_average_tv_to_lottery"]["onpo"], t["final_tv_to_lottery"]["onpo"]
    assert tv_avg < t["initial_tv_to_lottery"] - 0.2
    assert max(tv_avg, tv_last) < t["rlhf_tv_to_lottery"] - 0.15
    assert abs(sum(t["final_mass"]["onpo"].values()) - 1) < 1e-4
    assert "transformer_onpo_llm_avg_gap" in columns and "transformer_onpo_tab_avg_gap" in columns


def test_transformer_panel_switches_off_and_rejects_unknown_algorithms(tmp_path):
    s, columns = _run(tmp_path / "off", ["transformer_algorithms=[]"])
    assert "transformer" not in s and not any(c.startswith("transformer") for c in columns)
    assert s["testbed"]["condorcet_winner"] == -1
    with pytest.raises(ValueError, match="transformer_algorithms"):
        _run(tmp_path / "bad", ["transformer_algorithms=[dpo]"])
