"""The InfAlign experiment runs end to end (tiny overrides) and supports the paper's claims."""

import json

import pytest

from jaxalign import experiment

_TINY = [
    "num_budgets=7",
    "num_points=513",
    "tune_ts=[2.0,5.0,10.0,15.0]",
    "show_ts=[5.0]",
    "optimum_betas=8",
    "optimum_beta_range=[0.1,20.0]",
    "optimum_steps=5000",
    "max_kl=1.0",
    # One short KL-PG run on the tuned reward (the transformer panel's code path).
    "transformer_budgets=[0.5]",
    "transformer_methods=[tuned]",
    "pg_steps=30",
    "hidden_size=16",
]


def test_infalign_quick_supports_the_claims(tmp_path):
    exp = experiment.get("infalign")
    paths = experiment.reproduce(exp, out=tmp_path, overrides=_TINY, quiet=True)
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0
    summary = json.loads(paths["json"].read_text())["summary"]
    n1 = summary["standard_win_rate_n1"]
    # N = 1: calibrated RLHF is the exact optimum, so it beats raw-reward RLHF.
    assert n1["calibrated_rlhf"] >= n1["raw_reward_rlhf"]
    for key in ("best_of_4", "worst_of_4"):
        row = summary[key]
        # The tuned transform improves on calibrated RLHF and stays below the exact optimum.
        assert row["tuned"] > row["calibrated_rlhf"] + 0.01
        assert row["optimum_minus_tuned"] >= -1e-6
        assert row["optimum_minus_tuned"] <= 0.01
        assert row["optimum_max_residual"] <= 1e-6
    # Weak duality: no policy drawn lies above the optimum's tangents.
    for excess in summary["max_excess_over_optimum_duality_bound"].values():
        assert excess <= 1e-8
    # The transformer moved from π_ref towards its Gibbs target (KL-PG with the engine).
    run = summary["transformer_best_of_n"]["tuned @ 0.5"]
    assert 0 < run["kl"] < 3 and run["win_bon"] > 0.5 and run["kl_to_target"] >= 0


def test_infalign_config_rejects_bad_values():
    exp = experiment.get("infalign")
    with pytest.raises(ValueError, match="n must be >= 2"):
        experiment.load_config(exp, overrides=["n=1"])
    with pytest.raises(ValueError, match="optimum_beta_range"):
        experiment.load_config(exp, overrides=["optimum_beta_range=[1.0,0.5]"])
