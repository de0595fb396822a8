"""``PolicyGradientTask(ctx, testbed_reward=f)``: KL-PG on a reward (and β) computed from
the exact reference distribution at ``init``, and ``exact_log_probs``."""

import jax
import numpy as np
import pytest
from tiny_models import task_config

from jaxalign.train.engine import run
from jaxalign.train.tasks.policy_gradient import PolicyGradientTask


def test_kl_pg_trains_on_the_reward_computed_from_the_reference(tmp_path):
    seen = {}

    def reward(log_ref, testbed_reward):
        seen["log_ref"], seen["default"] = np.asarray(log_ref), np.asarray(testbed_reward)
        target = int(np.argmin(log_ref))  # the reference's least likely response
        return np.eye(log_ref.shape[0], dtype=np.float32)[target], 0.05

    cfg = task_config("policy_gradient", tmp_path / "run", "run.steps=30",
                      "checkpoint.enabled=false", "online.learning_rate=0.05",
                      "model.initializer_range=0.1")  # fmt: skip
    result = run(cfg, lambda ctx: PolicyGradientTask(ctx, testbed_reward=reward), quiet=True)
    task = result.task
    log_ref = seen["log_ref"]
    assert log_ref.shape == seen["default"].shape == (9,)
    np.testing.assert_allclose(np.exp(log_ref).sum(), 1.0, rtol=1e-5)
    assert task.settings.beta == 0.05  # β replaced
    target = int(np.argmin(log_ref))
    np.testing.assert_array_equal(np.asarray(task.frozen["reward"]), np.eye(9)[target])
    log_pi = np.asarray(jax.device_get(task.exact_log_probs(result.state.params)))
    assert log_pi.shape == (9,)
    assert log_pi[target] > log_ref[target] + 0.5  # moved towards the indicated response


def test_testbed_reward_needs_the_testbed(tmp_path):
    cfg = task_config("offline", tmp_path / "run")
    with pytest.raises(ValueError, match="testbed_reward needs a testbed run"):
        PolicyGradientTask(type("Ctx", (), {"config": cfg})(), testbed_reward=lambda *a: a)
