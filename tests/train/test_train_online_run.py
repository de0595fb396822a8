"""`jaxalign train` for the online algorithms: configs/train/<algorithm>_testbed.yaml run
end to end through the engine with exact metrics, and the config is validated with clear
errors."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxalign import cli, games
from jaxalign import testbed as tb
from jaxalign.config import ConfigError
from jaxalign.experiment import repo_root
from jaxalign.models import from_pretrained
from jaxalign.testbed import scoring
from jaxalign.train import (
    NASH_ALGORITHMS,
    POLICY_GRADIENT_ALGORITHMS,
    load_train_config,
    train,
)
from jaxalign.train.config import TESTBED_OFFLINE_ALGORITHMS
from jaxalign.train.tasks import online_setup

CONFIGS = repo_root() / "configs" / "train"
SMALL = ["run.steps=2", "online.batch_size=32", "online.inner_steps=5"]


@pytest.mark.parametrize(
    "algorithm", NASH_ALGORITHMS + POLICY_GRADIENT_ALGORITHMS + TESTBED_OFFLINE_ALGORITHMS
)
def test_every_algorithm_has_a_testbed_config(algorithm):
    cfg = load_train_config(CONFIGS / f"{algorithm}_testbed.yaml")
    assert cfg.algorithm.name == algorithm and cfg.testbed_mode
    assert cfg.oracle.kind == "testbed"
    assert cfg.task_kind == ("policy_gradient" if algorithm == "kl_pg" else "nash")


def test_jaxalign_train_runs_an_online_testbed_config_with_exact_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(
        ["train", str(CONFIGS / "inpo_testbed.yaml"), "--out", str(out), *SMALL]
    )  # fmt: skip
    assert rc == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "inpo" and summary["mode"] == "testbed"
    assert (out / "tensorboard").is_dir() and (out / "config.yaml").exists()
    # The saved final policy, reloaded, has exactly the logged duality gap.
    cfg = load_train_config(out / "config.yaml")
    testbed = tb.Testbed(cfg.testbed.alphabet_size, cfg.testbed.response_length)
    game = online_setup.testbed_game(cfg.testbed, testbed)
    lp = tb.policy_log_probs(from_pretrained(out / "model"), testbed)
    np.testing.assert_allclose(games.duality_gap(game, lp), rows[-1]["duality_gap"], rtol=1e-4)
    np.testing.assert_allclose(summary["final_duality_gap"], rows[-1]["duality_gap"])
    # Refuses to overwrite without --overwrite.
    capsys.readouterr()
    assert cli.main(["train", str(CONFIGS / "inpo_testbed.yaml"), "--out", str(out), *SMALL])
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["model.vocab_size=4"], "alphabet_size"),
        (["algorithm.tau=1.0"], "step_size \\* tau"),
        (["oracle.kind=reward_model"], "oracle.path"),
        (["prompts.path=/x.jsonl"], "oracle.kind=testbed"),
        (["run.resume=true", "checkpoint.enabled=false"], "checkpoint.enabled"),
        (["online.batch_sise=3"], "batch_size"),
        (["algorithm.mixture=both"], "mixture"),
    ],
)
def test_online_config_errors(overrides, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        load_train_config(CONFIGS / "inpo_testbed.yaml", overrides)


def test_every_config_selects_its_task():
    kinds = {
        "dpo_tiny.yaml": "offline",
        "dpo_hf.yaml": "offline",
        "multiobjective_dpo_tiny.yaml": "multiobjective",
        "dpo_testbed.yaml": "nash",  # offline pairs from π_ref on the testbed, scored exactly
        "egpo_testbed.yaml": "nash",
        "egpo_hf.yaml": "nash",
        "kl_pg_testbed.yaml": "policy_gradient",
    }
    for name, kind in kinds.items():
        assert load_train_config(CONFIGS / name).task_kind == kind, name
    assert Path(CONFIGS / "egpo_testbed.yaml").exists()


@pytest.mark.parametrize("algorithm", ["onpo", "mnpo", "kl_pg"])
def test_a_resumed_online_run_repeats_the_uninterrupted_one(tmp_path, algorithm):
    """Checkpoints hold the policy and the anchors the algorithm keeps (ONPO's π'_t, MNPO's
    past iterates, KL-PG's optimizer state) and the exact history; iteration t's randomness
    is fold_in(key, t)."""
    config = CONFIGS / f"{algorithm}_testbed.yaml"
    small = [*SMALL, "checkpoint.every_steps=2", "run.save_model=false"]
    straight = load_train_config(config, [*small, "run.steps=4", f"run.out_dir={tmp_path / 'a'}"])
    full = train(straight, quiet=True).summary
    first = load_train_config(config, [*small, "run.steps=2", f"run.out_dir={tmp_path / 'b'}"])
    train(first, quiet=True)
    assert (tmp_path / "b" / "checkpoints" / "2").is_dir()
    resumed_cfg = load_train_config(
        config, [*small, "run.steps=4", f"run.out_dir={tmp_path / 'b'}", "run.resume=true"]
    )
    resumed = train(resumed_cfg, quiet=True).summary
    assert resumed["resumed_from"] == 2 and full["resumed_from"] is None

    def rows(d):
        out = [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in out]

    assert [r["step"] for r in rows("b")] == [1, 2, 3, 4]
    a, b = rows("a"), rows("b")
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            if ra[k] is None:  # NaN in the record (e.g. ONPO's unknown tracking error)
                assert rb[k] is None, k
                continue
            np.testing.assert_allclose(rb[k], ra[k], rtol=1e-6, atol=1e-7, err_msg=k)
    keys = ("final_duality_gap", "final_average_iterate_gap", "tabular_final_duality_gap",
            "final_objective_gap", "final_exact_reward")  # fmt: skip
    for k in keys:
        if k in full:
            np.testing.assert_allclose(resumed[k], full[k], rtol=1e-6)


def test_kl_pg_on_the_testbed_closes_the_exact_objective_gap(tmp_path):
    """J(π*_β) − J(π_t) = β KL(π_t‖π*_β) to the closed-form optimum falls; the logged exact
    reward never exceeds the optimum's by more than the objective allows."""
    cfg = load_train_config(
        CONFIGS / "kl_pg_testbed.yaml",
        ["run.steps=25", f"run.out_dir={tmp_path}", "run.save_model=false"],
    )
    summary = train(cfg, quiet=True).summary
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    gaps = np.array([r["objective_gap"] for r in rows])
    assert np.all(gaps >= -1e-6)
    assert summary["final_objective_gap"] < 0.2 * summary["initial_objective_gap"]
    # The objective identity: J* − J = β KL(π‖π*) with J = E r − β KL(π‖π_ref).
    j_star = summary["optimal_reward"] - cfg.algorithm.beta * summary["optimal_kl_to_reference"]
    last = rows[-1]
    np.testing.assert_allclose(j_star - last["objective"], last["objective_gap"], atol=1e-4)


def test_offline_losses_on_the_testbed_track_their_exact_population_minimiser(tmp_path):
    """IPO's fits land next to π_ref e^{Pπ_ref/τ}; DPO's exact target on a Bradley–Terry game
    is the KL-RL optimum π_ref e^{r/β}; robust DPO with ε = 0 has DPO's target."""
    cfg = load_train_config(
        CONFIGS / "ipo_testbed.yaml",
        ["run.steps=3", f"run.out_dir={tmp_path / 'ipo'}", "run.save_model=false"],
    )
    summary = train(cfg, quiet=True).summary
    assert summary["final_kl_to_target"] < 0.05
    assert "tabular_final_duality_gap" not in summary

    testbed = tb.Testbed(3, 2)
    token_rewards = jax.random.normal(jax.random.key(0), (2, 3))
    game = tb.bradley_terry_preference(testbed, token_rewards)
    r = tb.additive_reward(testbed, token_rewards)
    log_ref = jax.nn.log_softmax(jax.random.normal(jax.random.key(1), (9,)))
    target = scoring.population_minimiser("dpo", game, log_ref, beta=0.7)
    np.testing.assert_allclose(
        np.exp(target), np.exp(jax.nn.log_softmax(log_ref + r / 0.7)), atol=1e-5
    )
    robust = scoring.population_minimiser("robust_dpo", game, log_ref, beta=0.7, flip_rate=0.0)
    np.testing.assert_allclose(np.exp(robust), np.exp(target), atol=1e-5)
    with pytest.raises(ValueError, match="must be one of"):
        games.NashAlgorithm("dpo")  # offline: no iterative tabular solver
