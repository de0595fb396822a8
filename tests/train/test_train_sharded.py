"""A run sharded over a (data, fsdp, tensor) = (2, 2, 2) mesh matches one device."""

import jax
import numpy as np
import pytest

from jaxalign.train import train

STEPS = 4


def _run(make_config, path, *extra):
    result = train(make_config(path, f"run.steps={STEPS}", "checkpoint.enabled=false", *extra),
                   quiet=True)  # fmt: skip
    losses = np.array([r["loss"] for r in result.history])
    params = jax.tree.map(np.asarray, jax.device_get(result.state.params))
    return result, losses, params


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    from tiny_models import tiny_config

    return _run(tiny_config, tmp_path_factory.mktemp("single"))


def test_sharded_run_matches_single_device(single, tmp_path, make_config):
    assert jax.device_count() == 8
    _, losses_1, params_1 = single
    result, losses_8, params_8 = _run(
        make_config, tmp_path, "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"
    )
    # The state really is spread over 8 devices: FSDP and tensor axes both split weights.
    kernel = result.state.params["model"]["layers"]["mlp"]["gate_proj"]["kernel"]
    assert result.compilations == 1  # one jitted step for all steps
    assert kernel.sharding.num_devices == 8
    assert kernel.addressable_shards[0].data.shape == (1, 16, 32)  # (layers, 32/fsdp, 64/tensor)
    assert losses_8.shape == (STEPS,)
    assert losses_8[-1] < losses_8[0]  # it learns
    kl = [r["kl_ref"] for r in result.history]
    assert abs(kl[0]) < 1e-6 < kl[-1]  # π = π_ref before the first update, then it drifts
    np.testing.assert_allclose(losses_8, losses_1, rtol=2e-5, atol=2e-6)
    for a, b in zip(jax.tree.leaves(params_8), jax.tree.leaves(params_1)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_sharded_check_has_teeth(single, tmp_path, make_config):
    # Another run (a different init seed, same program) must NOT pass the same comparison.
    _, losses_1, _ = single
    _, losses_other, _ = _run(make_config, tmp_path, "run.seed=1")
    assert not np.allclose(losses_other[1:], losses_1[1:], rtol=2e-5, atol=2e-6)


def test_gradient_accumulation_matches_one_big_batch(single, tmp_path, make_config):
    _, losses_1, params_1 = single
    _, losses_acc, params_acc = _run(
        make_config, tmp_path, "optimizer.grad_accum_steps=4", "mesh.data=2", "mesh.fsdp=2"
    )
    np.testing.assert_allclose(losses_acc, losses_1, rtol=2e-5, atol=2e-6)
    for a, b in zip(jax.tree.leaves(params_acc), jax.tree.leaves(params_1)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
