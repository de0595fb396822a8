"""The online-vs-offline experiment runs end to end (tiny overrides) and respects the frontier,
tabular and transformer (training engine) alike."""

import json

from jaxalign import experiment

_TINY = [
    "response_length=2",
    "num_seeds=2",
    "num_pairs=64",
    "num_val_pairs=100",
    "taus=[0.25,1.0]",
    "steps=100",
    "eval_every=20",
]


def _summary(tmp_path, overrides):
    exp = experiment.get("online-vs-offline")
    paths = experiment.reproduce(exp, out=tmp_path, overrides=overrides, quiet=True)
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0
    return json.loads(paths["json"].read_text())["summary"]


def test_online_vs_offline_tiny_points_stay_below_the_frontier(tmp_path):
    summary = _summary(tmp_path, [*_TINY, "transformer_algorithms=[]"])
    assert "transformer" not in summary
    assert summary["all_points_below_frontier"]
    assert summary["max_frontier_excess"] <= 1e-9
    for t in summary["population_targets"].values():
        assert abs(t["offline_ipo_gap"]) < 1e-9  # offline IPO's target is on the frontier
        assert t["online_ipo_gap"] > 0  # the regularised Nash is below it
    for mode in ("offline", "online_gold", "online_proxy"):
        assert summary[f"ipo.{mode}"]["best_win_rate_within_budget"] > 0.5


def test_online_vs_offline_transformer_iterates_stay_below_its_frontier(tmp_path):
    overrides = [
        *_TINY,
        "num_seeds=1",
        "losses=[ipo]",
        "transformer_algorithms=[online_ipo]",
        "transformer_iterations=4",
    ]
    t = _summary(tmp_path, overrides)["transformer"]
    # Every iterate of the engine-trained transformer lies under the exact Gibbs frontier of
    # its own π_ref; it moved off π_ref and wins against it.
    assert t["all_points_below_frontier"]
    assert t["max_frontier_excess"] <= 1e-9
    for algorithm in ("online_ipo",):
        assert t["final_frontier_gap"][algorithm] >= -1e-9
        assert t["final_kl"][algorithm] > 0.05
        assert t["final_win_rate"][algorithm] > 0.55
    # The population targets: offline IPO's on the frontier, online IPO's (regularised Nash)
    # at a larger KL.
    assert t["targets"]["regularised Nash"]["kl"] > t["targets"]["offline IPO"]["kl"]
