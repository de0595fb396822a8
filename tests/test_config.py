"""jaxalign.config: typed configs from YAML and dotted overrides, with clear errors."""

import dataclasses
from typing import Literal

import pytest

from jaxalign.config import ConfigError, apply_overrides, from_dict, load, to_dict


@dataclasses.dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    schedule: Literal["cosine", "linear"] = "cosine"


@dataclasses.dataclass(frozen=True)
class Run:
    steps: int = 10
    sizes: tuple[int, ...] = (1, 2)
    name: str | None = None
    optimizer: Optim = Optim()


def test_nested_build_and_roundtrip():
    cfg = from_dict(Run, {"steps": 5, "sizes": [3, 4], "optimizer": {"lr": 1}})
    assert cfg == Run(steps=5, sizes=(3, 4), optimizer=Optim(lr=1.0))
    assert from_dict(Run, to_dict(cfg)) == cfg


def test_unknown_key_names_the_nearest_valid_key():
    with pytest.raises(ConfigError, match=r"optimizer\.lrr.*did you mean 'lr'"):
        from_dict(Run, {"optimizer": {"lrr": 0.1}})


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"steps": "ten"}, r"steps: expected an integer, got 'ten'"),
        ({"steps": True}, "steps: expected an integer"),
        ({"sizes": 3}, "sizes: expected a list"),
        ({"optimizer": {"schedule": "cosin"}}, r"not one of.*did you mean 'cosine'"),
        ({"optimizer": 3}, "expected a mapping"),
    ],
)
def test_wrong_types_and_values(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Run, data)


def test_yaml_and_dotted_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: 3\noptimizer:\n  lr: 0.5\n")
    cfg = load(Run, path, ["optimizer.lr=1e-5", "name=exp", "sizes=[7]"])
    assert cfg == Run(steps=3, sizes=(7,), name="exp", optimizer=Optim(lr=1e-5))
    with pytest.raises(ConfigError, match=r"must look like key\.sub=value"):
        apply_overrides({}, ["optimizer.lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        load(Run, tmp_path / "missing.yaml")
