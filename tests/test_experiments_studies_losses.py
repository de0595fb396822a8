"""The robust-DPO-noise and ranking-accuracy experiments run end to end (tiny overrides) and
support their claims."""

import json

import pytest

from jaxalign import experiment


def _run(name, tmp_path, overrides):
    exp = experiment.get(name)
    paths = experiment.reproduce(exp, out=tmp_path, overrides=overrides, quiet=True)
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0
    return json.loads(paths["json"].read_text())["summary"]


def test_robust_dpo_noise_tiny_rdpo_is_unbiased_and_scales(tmp_path):
    summary = _run(
        "robust-dpo-noise",
        tmp_path,
        [
            "response_length=2",
            "beta_grid=8",
            "flip_rates=[0.0,0.2]",
            "sample_sizes=[500,2000,8000]",
            "replicates=16",
        ],
    )
    # rDPO's exact tabular minimiser is the clean target at every ε; DPO's is not.
    for v in summary["kl_to_target_same_beta"]["rdpo"].values():
        assert abs(v) < 1e-12
    assert summary["kl_to_target_same_beta"]["dpo"]["0.2"] > 1e-3
    assert (
        summary["kl_to_target_same_beta"]["cdpo"]["0.2"]
        > summary["kl_to_target_same_beta"]["dpo"]["0.2"]
    )
    assert summary["max_grad_at_beta"] < 1e-8
    for slope in summary["loglinear_slope_in_n"].values():
        assert -0.8 < slope < -0.3
    dpo = summary["loglinear_dpo_error"]["dpo@0.3"]
    assert dpo[-1] > 0.7 * dpo[0]  # biased: no decay


def test_ranking_accuracy_tiny_flip_condition_holds(tmp_path):
    summary = _run(
        "ranking-accuracy",
        tmp_path,
        [
            "num_pairs=200",
            "num_val_pairs=50",
            "steps=60",
            "betas=[0.1,1.0,10.0]",
            "gammas=[0.0,1.0]",
        ],
    )
    assert summary["flip_condition_matches_ranking"]
    ideal = [summary["per_beta"][b]["idealized"] for b in ("0.1", "1", "10")]
    assert ideal[0] >= ideal[1] >= ideal[2]
    cats = summary["categories_final"]
    assert sum(cats.values()) == pytest.approx(1.0)


def test_bad_configs_raise():
    from jaxalign.experiment import get

    with pytest.raises(ValueError, match="flip_rates"):
        get("robust-dpo-noise").config_cls(flip_rates=(0.0, 0.5))
    with pytest.raises(ValueError, match="betas"):
        get("ranking-accuracy").config_cls(betas=(0.0,))
