"""``testbed_run_config``: the light one-device config of a tiny transformer on the testbed."""

import pytest

from jaxalign.config import ConfigError
from jaxalign.train import TrainConfig, train_config_from_dict
from jaxalign.train import testbed_run_config as run_config  # not collected as a test

_RUN = dict(alphabet_size=3, response_length=2, init_scale=0.5, steps=4, seed=7)


def test_defaults_are_a_light_one_device_run_of_a_tiny_transformer(tmp_path):
    cfg = run_config({"name": "inpo", "tau": 0.0}, out_dir=tmp_path, **_RUN)
    assert isinstance(cfg, TrainConfig)
    assert cfg.task_kind == "nash"
    m = cfg.model
    assert (m.vocab_size, m.hidden_size, m.intermediate_size, m.num_layers) == (3, 32, 64, 1)
    assert (m.num_heads, m.num_kv_heads, m.head_dim, m.initializer_range) == (2, 1, 16, 0.5)
    assert (cfg.testbed.alphabet_size, cfg.testbed.response_length) == (3, 2)
    assert cfg.oracle.kind == "testbed"
    assert (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor) == (1, 1, 1)
    assert (cfg.run.steps, cfg.run.seed, cfg.run.out_dir) == (4, 7, str(tmp_path))
    assert not cfg.run.save_model
    assert not cfg.checkpoint.enabled
    assert not cfg.logging.progress_bar and not cfg.logging.tensorboard


def test_equals_the_mapping_it_abbreviates(tmp_path):
    cfg = run_config(
        {"name": "kl_pg", "beta": 0.5, "group_size": 4},
        hidden_size=16,
        num_layers=2,
        num_kv_heads=2,
        out_dir=tmp_path,
        online={"batch_size": 1, "learning_rate": 0.01},
        testbed={"preference": "bradley_terry", "seed": 3},
        **_RUN,
    )
    assert cfg.task_kind == "policy_gradient"
    assert cfg == train_config_from_dict(
        {
            "algorithm": {"name": "kl_pg", "beta": 0.5, "group_size": 4},
            "online": {"batch_size": 1, "learning_rate": 0.01},
            "model": {"vocab_size": 3, "hidden_size": 16, "intermediate_size": 32,
                      "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "head_dim": 8,
                      "initializer_range": 0.5},
            "testbed": {"alphabet_size": 3, "response_length": 2,
                        "preference": "bradley_terry", "seed": 3},
            "oracle": {"kind": "testbed"},
            "mesh": {"data": 1, "fsdp": 1, "tensor": 1},
            "run": {"steps": 4, "seed": 7, "out_dir": str(tmp_path), "save_model": False},
            "checkpoint": {"enabled": False},
            "logging": {"progress_bar": False, "tensorboard": False},
        }
    )  # fmt: skip


def test_overrides_merge_over_the_defaults_key_by_key(tmp_path):
    cfg = run_config(
        {"name": "dpo", "beta": 0.1},
        out_dir=tmp_path,
        testbed={"enabled": True, "preference": "bradley_terry"},
        oracle={"sample": True, "flip_rate": 0.2},
        logging={"kl_ref": False},
        run={"save_model": True},  # an extra section merges over its defaults
        model={"num_heads": 4, "head_dim": 8},
        **_RUN,
    )
    assert cfg.task_kind == "nash"  # an offline loss on the testbed
    assert cfg.testbed.enabled and cfg.testbed.alphabet_size == 3
    assert (cfg.oracle.kind, cfg.oracle.sample, cfg.oracle.flip_rate) == ("testbed", True, 0.2)
    assert not cfg.logging.kl_ref and not cfg.logging.progress_bar
    assert cfg.run.save_model and cfg.run.steps == 4 and cfg.run.seed == 7
    assert (cfg.model.num_heads, cfg.model.head_dim, cfg.model.hidden_size) == (4, 8, 32)


def test_bad_sections_raise_as_train_config_from_dict_does(tmp_path):
    with pytest.raises(ConfigError, match="alphabet_size"):
        run_config({"name": "inpo"}, out_dir=tmp_path, **{**_RUN, "alphabet_size": 1})
    with pytest.raises(ConfigError):
        run_config({"name": "inpo"}, out_dir=tmp_path, online={"no_such_key": 1}, **_RUN)
