"""The online-vs-offline experiment runs end to end (tiny overrides) and respects the frontier."""

import json

from jaxalign import experiment


def test_online_vs_offline_tiny_points_stay_below_the_frontier(tmp_path):
    exp = experiment.get("online-vs-offline")
    paths = experiment.reproduce(
        exp,
        out=tmp_path,
        overrides=[
            "response_length=2",
            "num_seeds=2",
            "num_pairs=64",
            "num_val_pairs=100",
            "taus=[0.25,1.0]",
            "steps=100",
            "eval_every=20",
        ],
        quiet=True,
    )
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0
    summary = json.loads(paths["json"].read_text())["summary"]
    assert summary["all_points_below_frontier"]
    assert summary["max_frontier_excess"] <= 1e-9
    for t in summary["population_targets"].values():
        assert abs(t["offline_ipo_gap"]) < 1e-9  # offline IPO's target is on the frontier
        assert t["online_ipo_gap"] > 0  # the regularised Nash is below it
    for mode in ("offline", "online_gold", "online_proxy"):
        assert summary[f"ipo.{mode}"]["best_win_rate_within_budget"] > 0.5
