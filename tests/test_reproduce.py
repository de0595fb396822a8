"""The experiment registry and `jaxalign reproduce`: outputs, metadata, no silent overwrite."""

import json

import pytest

from jaxalign import cli, experiment


def test_registry_lists_the_asymptotics_experiment():
    reg = experiment.registry()
    assert "asymptotics" in reg
    for name, exp in reg.items():
        assert exp.name == name and exp.description


def test_reproduce_asymptotics_writes_png_csv_json(tmp_path, capsys):
    rc = cli.main(
        [
            "reproduce",
            "asymptotics",
            "--out",
            str(tmp_path),
            "lengths=[10,50]",
            "frontier_lengths=[1,4]",
            "frontier_points=4",
        ]
    )
    assert rc == 0
    for ext in ("png", "csv", "json"):
        assert (tmp_path / f"asymptotics.{ext}").stat().st_size > 0
    meta = json.loads((tmp_path / "asymptotics.json").read_text())
    assert meta["profile"] == "quick"
    assert meta["config"]["lengths"] == [10, 50]
    assert "jax" in meta["versions"]
    # The claim of the figure: per-token BoN reward increases towards x* as m grows.
    rewards = list(meta["summary"]["bon_reward_per_token"].values())
    assert rewards[0] < rewards[1] < meta["summary"]["x_star"]
    assert str(tmp_path / "asymptotics.png") in capsys.readouterr().out
    # A second run into the same directory refuses to overwrite.
    assert cli.main(["reproduce", "asymptotics", "--out", str(tmp_path), "lengths=[10]"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_cli_errors_are_clear(tmp_path, capsys):
    assert cli.main(["reproduce", "asymptotic", "--out", str(tmp_path)]) == 2
    assert "did you mean 'asymptotics'" in capsys.readouterr().err
    assert cli.main(["reproduce", "asymptotics", "--out", str(tmp_path), "lenghts=[3]"]) == 2
    assert "did you mean 'lengths'" in capsys.readouterr().err
    assert cli.main(["reproduce"]) == 2


def test_readme_test_command_is_what_ci_runs():
    root = experiment.repo_root()
    ci = (root / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in (root / "README.md").read_text()
    assert "pytest" in ci


def test_unknown_profile_rejected():
    with pytest.raises(ValueError, match="profile"):
        experiment.load_config(experiment.get("asymptotics"), profile="slow")
