"""`jaxalign train` for the online algorithms: configs/train/<algorithm>_testbed.yaml run
end to end with exact metrics, and the config is validated with clear errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxalign import cli, games
from jaxalign.config import ConfigError
from jaxalign.data import testbed as tb
from jaxalign.experiment import repo_root
from jaxalign.models import from_pretrained
from jaxalign.train import ONLINE_ALGORITHMS, online_run

CONFIGS = repo_root() / "configs" / "train"
SMALL = ["run.iterations=2", "online.batch_size=32", "online.inner_steps=5"]


@pytest.mark.parametrize("algorithm", ONLINE_ALGORITHMS)
def test_every_online_algorithm_has_a_testbed_config(algorithm):
    cfg = online_run.load_online_config(CONFIGS / f"{algorithm}_testbed.yaml")
    assert cfg.algorithm.name == algorithm and cfg.testbed_mode
    assert cfg.oracle.kind == "testbed"


def test_jaxalign_train_runs_an_online_testbed_config_with_exact_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(
        ["train", str(CONFIGS / "inpo_testbed.yaml"), "--out", str(out), *SMALL]
    )  # fmt: skip
    assert rc == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "inpo" and summary["mode"] == "testbed"
    assert (out / "tensorboard").is_dir() and (out / "config.yaml").exists()
    # The saved final policy, reloaded, has exactly the logged duality gap.
    cfg = online_run.load_online_config(out / "config.yaml")
    testbed = tb.Testbed(cfg.testbed.alphabet_size, cfg.testbed.response_length)
    game = online_run._testbed_game(cfg.testbed, testbed)
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
        (["run.resume=true"], "resume"),
        (["online.batch_sise=3"], "batch_size"),
        (["algorithm.mixture=both"], "mixture"),
    ],
)
def test_online_config_errors(overrides, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        online_run.load_online_config(CONFIGS / "inpo_testbed.yaml", overrides)


def test_offline_configs_are_not_online():
    for name in ("dpo_tiny.yaml", "dpo_hf.yaml"):
        from jaxalign.config import load_yaml

        assert not online_run.is_online_config(load_yaml(CONFIGS / name))
    assert online_run.is_online_config({"algorithm": {"name": "egpo"}})
    assert Path(CONFIGS / "egpo_testbed.yaml").exists()
