"""Training configs: YAML + dotted overrides, clear errors, saved with the run."""

from pathlib import Path

import pytest
import yaml

from jaxalign.cli import main
from jaxalign.config import ConfigError
from jaxalign.train import TrainConfig, load_train_config, train_config_from_dict

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "configs" / "train" / "dpo_tiny.yaml"


def test_default_config_loads_and_overrides_apply():
    cfg = load_train_config(DEFAULT, ["optimizer.lr=1e-5", "model.num_layers=3"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.optimizer.lr == 1e-5  # "1e-5" without a dot is a float, not a string
    assert cfg.model.num_layers == 3
    assert cfg.algorithm.name == "dpo"


def test_unknown_key_names_the_key_the_value_and_the_nearest_key():
    with pytest.raises(ConfigError, match=r"'optimizer\.lrr' \(value 0\.1\); did you mean 'lr'"):
        load_train_config(DEFAULT, ["optimizer.lrr=0.1"])
    with pytest.raises(ConfigError, match="did you mean 'optimizer'"):
        load_train_config(None, ["optimiser.lr=0.1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=fast", r"optimizer\.lr: expected a number, got 'fast'"),
        ("run.steps=1.5", r"run\.steps: expected an integer, got 1\.5"),
        ("checkpoint.async_save=maybe", r"checkpoint\.async_save: expected true/false"),
        ("optimizer.lr=-1", r"optimizer: lr=-1\.0 is invalid; expected > 0"),
        ("algorithm.beta=0", r"algorithm: beta=0\.0 is invalid; expected > 0"),
        (
            "algorithm.name=dpp",
            r"not one of \['dpo', 'ipo', 'robust_dpo', 'rpo', 'simpo', 'orpo', 'kto', "
            r"'multiobjective_dpo', 'inpo', .*'kl_pg', 'sft', 'reward_model', 'preference_model'\] "
            r"\(did you mean 'dpo'\?\)",
        ),
        ("schedule.kind=cosin", r"did you mean 'cosine'"),
        ("optimizer.grad_accum_steps=3", r"batch_size=16 must be divisible"),
        ("checkpoint.enabled=false run.resume=true", r"run\.resume=true needs checkpoint"),
    ],
)
def test_wrong_types_and_values_are_one_config_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(DEFAULT, override.split())


def test_cli_reports_config_errors(capsys):
    assert main(["train", str(DEFAULT), "optimizer.lrr=1"]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err


def test_saved_config_round_trips(tmp_path, make_config):
    from jaxalign.train import train

    cfg = make_config(tmp_path / "run", "run.steps=1", "checkpoint.enabled=false")
    train(cfg, quiet=True)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert train_config_from_dict(saved) == cfg


def test_cli_train_runs_then_refuses_to_overwrite_then_resumes(tmp_path, capsys):
    from tiny_models import tiny_overrides

    run = tmp_path / "run"
    args = ["train", str(DEFAULT), *tiny_overrides(run, "run.steps=2")]
    assert main(args) == 0
    assert "step 2: loss 0.6931" in capsys.readouterr().out
    assert (run / "summary.json").exists() and (run / "checkpoints" / "2").is_dir()
    assert main(args) == 2  # non-empty run directory
    assert "--resume" in capsys.readouterr().err
    assert main([*args[:-1], "run.steps=3", "--resume"]) == 0
    assert "resumed from checkpoint step 2" in capsys.readouterr().out
