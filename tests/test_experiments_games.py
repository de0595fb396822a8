"""The games experiments run end to end (tiny overrides) and support their claims."""

import json

from jaxalign import experiment


def _run(name, tmp_path, overrides):
    exp = experiment.get(name)
    paths = experiment.reproduce(exp, out=tmp_path, overrides=overrides, quiet=True)
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0
    return json.loads(paths["json"].read_text())["summary"]


def test_onpo_duality_gap_quick_shows_optimistic_speedup(tmp_path):
    summary = _run(
        "onpo-duality-gap", tmp_path, ["num_games=4", "num_steps=300", "num_responses=4"]
    )
    slopes = summary["slopes"]
    # ONPO's average iterate decays faster than OMD's (≈ -1 vs ≈ -1/2).
    assert slopes["ONPO"] < -0.8
    assert slopes["ONPO"] < slopes["OMD"] - 0.2
    assert summary["onpo_max_ratio_to_2D_over_etaT"] <= 1.0


def test_mnpo_multiplayer_quick_gap_decreases(tmp_path):
    summary = _run(
        "mnpo-multiplayer",
        tmp_path,
        ["num_games=2", "num_steps=100", "num_responses=3", "players=[2,3]"],
    )
    for key, slope in summary["avg_slope"].items():
        assert slope < -0.4, (key, slope)
