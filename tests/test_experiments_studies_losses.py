"""The robust-DPO-noise and ranking-accuracy experiments run end to end (tiny overrides) and
support their claims, in the exact/tabular form and for a transformer trained by the engine."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import experiment
from jaxalign.losses import dpo_loss
from jaxalign.losses import pairwise as pw


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
            "transformer_flip_rates=[]",
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
            "transformer=false",
        ],
    )
    assert summary["flip_condition_matches_ranking"]
    ideal = [summary["per_beta"][b]["idealized"] for b in ("0.1", "1", "10")]
    assert ideal[0] >= ideal[1] >= ideal[2]
    cats = summary["categories_final"]
    assert sum(cats.values()) == pytest.approx(1.0)


_TINY_TABULAR = [
    "response_length=2",
    "beta_grid=8",
    "flip_rates=[0.0,0.2]",
    "sample_sizes=[100,200,400,800]",
    "replicates=2",
    "dpo_contrast_flip_rate=0.0",
]


def test_robust_dpo_noise_transformer_rdpo_stays_at_the_clean_target(tmp_path):
    # Two engine runs at ε = 0.3 and the same β: DPO's fit of the noisy labels is flat (its
    # exact population minimiser is ~0.7 nats from π*), rDPO's is π* up to sampling error.
    summary = _run(
        "robust-dpo-noise",
        tmp_path,
        [
            *_TINY_TABULAR,
            "transformer_flip_rates=[0.3]",
            "transformer_methods=[dpo,rdpo]",
            "transformer_settings=[same_beta]",
        ],
    )["transformer"]
    assert summary["engine_runs"] == 2
    dist = {m: summary["kl_to_target_same_beta"][m]["0.3"] for m in ("dpo", "rdpo")}
    assert summary["population_kl_to_target_same_beta"]["dpo"]["0.3"] > 0.3
    assert summary["population_kl_to_target_same_beta"]["rdpo"]["0.3"] < 1e-10
    assert dist["rdpo"] < 0.4 * dist["dpo"]
    reward = {m: summary["reward_same_beta"][m]["0.3"] for m in ("dpo", "rdpo")}
    assert summary["reference_reward"] < reward["dpo"] < reward["rdpo"]
    assert summary["kl_to_ref_same_beta"]["dpo"]["0.3"] < 0.5 * summary["target_kl"]


def test_cdpo_is_dpo_on_smoothed_labels_and_rdpo_on_unbiased_labels():
    # The engine's testbed pair loss is w ℓ(a, b) + (1 − w) ℓ(b, a): cDPO
    # (label_smoothing = ε) is that with w = ε + (1 − 2ε) ỹ, rDPO with w = (ỹ − ε) / (1 − 2ε).
    k = jax.random.split(jax.random.key(0), 4)
    pa, pb, ra, rb = (jax.random.normal(ki, (16,)) for ki in k)
    eps, beta = 0.3, 0.5
    fwd = dpo_loss(pa, pb, ra, rb, beta=beta).loss
    bwd = dpo_loss(pb, pa, rb, ra, beta=beta).loss
    w = eps + (1 - 2 * eps) * 1.0
    smoothed = dpo_loss(pa, pb, ra, rb, beta=beta, label_smoothing=eps).loss
    np.testing.assert_allclose(w * fwd + (1 - w) * bwd, smoothed, rtol=1e-5, atol=1e-6)
    w = (1.0 - eps) / (1 - 2 * eps)
    robust = pw.robust_dpo_loss(pa, pb, ra, rb, beta=beta, flip_rate=eps).loss
    np.testing.assert_allclose(w * fwd + (1 - w) * bwd, robust, rtol=1e-5, atol=1e-5)
    assert jnp.all(jnp.isfinite(robust))


def test_ranking_accuracy_transformer_flips_toward_the_idealized_accuracy(tmp_path):
    summary = _run(
        "ranking-accuracy",
        tmp_path,
        [
            "num_pairs=50",
            "num_val_pairs=20",
            "steps=5",
            "betas=[0.1]",
            "gammas=[1.0]",
            "transformer_iterations=12",
        ],
    )["transformer"]
    cats = summary["categories_final"]
    assert sum(cats.values()) == pytest.approx(1.0)
    ref = summary["reference_accuracy"]
    assert cats["correct_to_correct"] + cats["correct_to_incorrect"] == pytest.approx(ref)
    acc = summary["accuracy_final"]
    assert acc == pytest.approx(cats["correct_to_correct"] + cats["incorrect_to_correct"])
    # DPO flips a good share of the wrongly ranked pairs, but never beats the idealized R*
    # by more than the few pairs the transformer's finite fit gets right by chance.
    assert cats["incorrect_to_correct"] > 0.05 and acc > ref + 0.05
    assert acc < summary["idealized_accuracy"] + 0.03


def test_bad_configs_raise():
    from jaxalign.experiment import get

    with pytest.raises(ValueError, match="flip_rates"):
        get("robust-dpo-noise").config_cls(flip_rates=(0.0, 0.5))
    with pytest.raises(ValueError, match="betas"):
        get("ranking-accuracy").config_cls(betas=(0.0,))
    with pytest.raises(ValueError, match="transformer_flip_rates"):
        get("robust-dpo-noise").config_cls(transformer_flip_rates=(0.5,))
    with pytest.raises(ValueError, match="transformer_methods"):
        get("robust-dpo-noise").config_cls(transformer_methods=("ipo",))
    with pytest.raises(ValueError, match="transformer_settings"):
        get("robust-dpo-noise").config_cls(transformer_settings=("best",))
    with pytest.raises(ValueError, match="transformer_beta"):
        get("ranking-accuracy").config_cls(transformer_beta=0.0)
