"""PreferenceModel checkpoints: save_pretrained / preference_model_from_pretrained round trip."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tiny_models import tiny_model_config

from jaxalign.models import (
    CausalLM,
    PreferenceModel,
    RewardModel,
    preference_model_from_pretrained,
    save_pretrained,
)

CONFIG = tiny_model_config(16)
logit = nnx.jit(lambda m, x, y: m.logit(x, y))


def _batch():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 16, (2, 4, 6)).astype(np.int32)
    return jnp.asarray(a), jnp.asarray(b)


def _params(model):
    return {
        tuple(map(str, p)): np.asarray(v.get_value())
        for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }


@pytest.mark.parametrize("rank", [0, 2])
def test_preference_model_round_trips_with_its_rank(rank, tmp_path):
    model = PreferenceModel.create(CONFIG, key=jax.random.key(rank), rank=rank)
    save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["preference_model"] == {"rank": rank}
    assert config["architectures"] == ["PreferenceModel"]
    loaded = preference_model_from_pretrained(tmp_path)
    assert loaded.rank == rank
    ours, theirs = _params(model), _params(loaded)
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(theirs[name], ours[name], err_msg=str(name))
    a, b = _batch()
    np.testing.assert_array_equal(np.asarray(logit(loaded, a, b)), np.asarray(logit(model, a, b)))
    assert np.abs(np.asarray(logit(model, a, b))).max() > 1e-3


def test_preference_model_loading_checks_the_rank(tmp_path):
    save_pretrained(PreferenceModel.create(CONFIG, key=jax.random.key(0), rank=2), tmp_path)
    with pytest.raises(ValueError, match=r"rank=1 does not match the saved .* rank 2"):
        preference_model_from_pretrained(tmp_path, rank=1)
    config = json.loads((tmp_path / "config.json").read_text())
    config["preference_model"] = {"rank": "two"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="preference_model="):
        preference_model_from_pretrained(tmp_path)


@pytest.mark.parametrize("trunk", [CausalLM, RewardModel])
def test_fresh_preference_heads_on_another_checkpoint(trunk, tmp_path):
    source = trunk.create(CONFIG, key=jax.random.key(3))
    save_pretrained(source, tmp_path)
    with pytest.raises(ValueError, match="pass rank= and key="):
        preference_model_from_pretrained(tmp_path)
    with pytest.raises(
        ValueError, match=r"missing tensors \['embedding.weight', 'reward.weight'\]"
    ):
        preference_model_from_pretrained(tmp_path, rank=1)
    model = preference_model_from_pretrained(tmp_path, rank=1, key=jax.random.key(4))
    assert model.rank == 1 and model.embedding.kernel.get_value().shape == (32, 2)
    assert float(jnp.abs(model.reward.kernel.get_value()).sum()) > 0
    trunk_params = {k: v for k, v in _params(source).items() if k[0] == "model"}
    loaded = _params(model)
    for name, value in trunk_params.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=str(name))
