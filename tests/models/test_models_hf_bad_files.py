"""Damaged HF directories: a truncated, empty or LFS-pointer ``model.safetensors`` and a
broken ``config.json`` are ValueErrors that name the file, with no chained traceback."""

from __future__ import annotations

import jax
import pytest
from tiny_models import tiny_model_config

from jaxalign.models import CausalLM, from_pretrained, save_pretrained


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_hf")
    model = CausalLM.create(tiny_model_config(vocab_size=16), key=jax.random.key(0))
    save_pretrained(model, directory)
    return directory


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _load_error(directory) -> ValueError:
    with pytest.raises(ValueError) as info:
        from_pretrained(directory)
    error = info.value
    assert error.__cause__ is None and error.__suppress_context__  # no chained traceback
    return error


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda data: data[: len(data) // 2], "truncated or corrupt"),
        (lambda data: b"", "truncated or corrupt"),
        (
            lambda data: b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n",
            "Git LFS pointer",
        ),
    ],
    ids=["truncated", "empty", "lfs-pointer"],
)
def test_a_damaged_safetensors_file_is_named(saved_model, tmp_path, damage, expected):
    directory = _copy(saved_model, tmp_path / "model")
    weights = directory / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    error = _load_error(directory)
    assert str(error).startswith(f"{weights} is not a readable safetensors file (")
    assert expected in str(error)


def test_a_broken_config_json_is_named_with_its_line(saved_model, tmp_path):
    directory = _copy(saved_model, tmp_path / "model")
    (directory / "config.json").write_text('{\n  "hidden_size": 32,\n  oops\n}')
    error = _load_error(directory)
    assert str(error).startswith(f"{directory / 'config.json'}:3: invalid JSON: ")


def test_the_undamaged_copy_still_loads(saved_model, tmp_path):
    model = from_pretrained(_copy(saved_model, tmp_path / "model"))
    assert model.config.vocab_size == 16
