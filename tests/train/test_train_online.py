"""Online Nash preference optimisation of a real transformer on the enumerable testbed:
exact duality gap falls for INPO and ONPO; an uninformative oracle does not move it."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_models import tiny_model_config

from jaxalign import games
from jaxalign.data import testbed as tb
from jaxalign.models import CausalLM
from jaxalign.train import online as ol

TB = tb.Testbed(alphabet_size=3, response_length=2)
MODEL_CONFIG = tiny_model_config(3)
HPARAMS = dict(num_iterations=10, batch_size=256, inner_steps=30, learning_rate=0.03, step_size=2.0)


@pytest.fixture(scope="module")
def setup():
    model = CausalLM.create(MODEL_CONFIG, key=jax.random.key(0))
    game = tb.cyclic_preference(TB, key=jax.random.key(1))
    return model, game


@pytest.mark.parametrize(("algorithm", "tau"), [("inpo", 0.05), ("onpo", 0.0)])
def test_online_training_reduces_the_exact_duality_gap(setup, algorithm, tau):
    model, game = setup
    cfg = ol.OnlineConfig(algorithm=algorithm, tau=tau, **HPARAMS)
    res = ol.online_train(model, TB, game, cfg, key=jax.random.key(2))
    gaps = np.asarray(res.history.duality_gap)
    assert gaps.shape == (11,)
    assert np.all(np.isfinite(gaps)) and np.all(gaps >= -1e-6)
    # Entry 0 is the exact gap of the initial model (π_ref = π_0 by default).
    lp0 = tb.policy_log_probs(model, TB)
    np.testing.assert_allclose(gaps[0], games.duality_gap(game, lp0), rtol=1e-5)
    np.testing.assert_allclose(res.log_ref, lp0, atol=1e-5)
    assert gaps[-1] < 0.7 * gaps[0], gaps
    # The returned model is the last iterate.
    np.testing.assert_allclose(
        tb.policy_log_probs(res.model, TB), res.history.log_policies[-1], atol=1e-4
    )
    # The matching tabular solver from the same start also descends (same game, same s).
    tab = ol.tabular_baseline(cfg, game, res.history.log_policies[0], res.log_ref)
    assert float(tab.avg_gap[-1]) < gaps[0]


def test_an_uninformative_oracle_leaves_the_gap_where_it_was(setup):
    """Teeth: with P(a ≻ b) = ½ for every pair the loss has no signal (h → 0), so the
    policy only drifts by the fitting noise and the gap does not fall as it does above."""
    model, game = setup
    cfg = ol.OnlineConfig(algorithm="onpo", **{**HPARAMS, "num_iterations": 4})

    def coin(key, a, b):
        return jnp.full((a.tokens.shape[0],), 0.5, jnp.float32)

    res = ol.online_train(model, TB, game, cfg, key=jax.random.key(2), oracle=coin)
    gaps = np.asarray(res.history.duality_gap)
    assert gaps[-1] > 0.7 * gaps[0], gaps


def test_testbed_oracle_labels():
    game = tb.cyclic_preference(TB, key=jax.random.key(1))
    task = ol.TestbedTask(TB, game, None, 0.0)
    a, b = task.responses(jnp.array([0, 4, 8])), task.responses(jnp.array([1, 2, 3]))
    soft = ol.testbed_oracle(TB, game, sample=False)(jax.random.key(0), a, b)
    np.testing.assert_allclose(soft, game.preference[jnp.array([0, 4, 8]), jnp.array([1, 2, 3])])
    n = 4000
    aa, bb = task.responses(jnp.zeros(n, jnp.int32)), task.responses(jnp.ones(n, jnp.int32))
    hard = ol.testbed_oracle(TB, game)(jax.random.key(1), aa, bb)
    assert set(np.unique(np.asarray(hard))) <= {0.0, 1.0}
    p = float(game.preference[0, 1])
    assert abs(float(hard.mean()) - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-3


def test_tabular_solver_mapping():
    log_ref = jnp.full((9,), -jnp.log(9.0))
    names = {
        "inpo": "inpo",
        "onpo": "onpo",
        "online_ipo": "inpo",  # online IPO = INPO with s = 1/τ (no π_t anchor)
        "mnpo": "mnpo_history",
        "nash_md": "nash_md",
        "egpo": "egpo",
    }
    for algorithm, name in names.items():
        tau = 0.5 if algorithm == "online_ipo" else 0.1
        solver = ol.tabular_solver(ol.OnlineConfig(algorithm=algorithm, tau=tau), log_ref)
        assert solver.name == name


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(algorithm="sppo"), "algorithm"),
        (dict(algorithm="robust_dpo", flip_rate=0.5), "flip_rate"),
        (dict(algorithm="online_ipo", tau=0.0), "tau > 0"),
        (dict(algorithm="inpo", step_size=2.0, tau=1.0), "step_size \\* tau"),
        (dict(batch_size=0), "batch_size"),
        (dict(algorithm="mnpo", num_players=3, opponent_weights=(1.0,)), "opponent_weights"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ol.OnlineConfig(**kwargs)


def test_vocab_mismatch_is_rejected(setup):
    model, game = setup
    with pytest.raises(ValueError, match="vocab_size"):
        ol.online_train(
            model,
            tb.Testbed(alphabet_size=4, response_length=2),
            game,
            ol.OnlineConfig(),
            key=jax.random.key(0),
        )


@pytest.mark.parametrize(
    ("algorithm", "extra"), [("egpo", {}), ("nash_md", {"mixture": "sequence"})]
)
def test_egpo_and_nash_md_reduce_the_exact_regularised_gap(setup, algorithm, extra):
    """Both target the τ-regularised game: its exact gap falls, as the tabular solver's."""
    model, game = setup
    cfg = ol.OnlineConfig(
        algorithm=algorithm, tau=0.05, **{**HPARAMS, "num_iterations": 6}, **extra
    )
    res = ol.online_train(model, TB, game, cfg, key=jax.random.key(2))
    reg = np.asarray(res.history.regularised_gap)
    assert np.all(np.isfinite(reg)) and np.all(reg >= -1e-6)
    assert reg[-1] < 0.7 * reg[0], reg
    assert float(res.history.kl_to_reference[-1]) > 1e-3  # the policy moved


def test_sharded_online_iterations_equal_unsharded(setup):
    """INPO on a (data, fsdp, tensor) = (2, 2, 2) mesh of 8 devices: the same policies as on
    one device (same prompts, samples, labels; float32 reduction order differs), and the
    parameters stay sharded by their logical axes."""
    from flax import nnx

    from jaxalign.parallel import DEFAULT_RULES

    _, game = setup
    model = CausalLM.create(
        dataclasses.replace(MODEL_CONFIG, num_kv_heads=2), key=jax.random.key(0)
    )
    cfg = ol.OnlineConfig(
        algorithm="inpo", tau=0.05, num_iterations=2, batch_size=64, inner_steps=10,
        learning_rate=0.03, step_size=2.0,
    )  # fmt: skip
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 3)  # fmt: skip
    one = ol.online_train(model, TB, game, cfg, key=jax.random.key(2))
    many = ol.online_train(
        model, TB, game, cfg, key=jax.random.key(2), mesh=mesh, rules=DEFAULT_RULES.as_pairs()
    )
    np.testing.assert_allclose(
        np.exp(many.history.log_policies), np.exp(one.history.log_policies), atol=2e-4
    )
    assert float(np.max(np.abs(np.exp(one.history.log_policies[-1])
                               - np.exp(one.history.log_policies[0])))) > 1e-2  # fmt: skip
    specs = {leaf.sharding.spec for leaf in jax.tree.leaves(nnx.split(many.model)[1])}
    assert any("fsdp" in str(s) for s in specs) and any("tensor" in str(s) for s in specs)
