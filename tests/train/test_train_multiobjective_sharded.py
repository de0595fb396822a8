"""The multi-objective DPO step on a (data, fsdp, tensor) = (2, 2, 2) mesh matches one device.

The train state is laid out as the training engine lays it out (``train_shardings``: FSDP
over ``embed``, tensor over ``mlp``/heads), the frozen reference like the parameters and
the K preference batches along their batch axis; each objective's batch is split into two
micro-batches (gradient accumulation under the batch-sharding constraint) and holds a
filler row and padding. The new train state and every metric agree with the unsharded
step, and the outputs keep the inputs' shardings (no silent re-layout between steps).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxalign.data import PreferenceBatch
from jaxalign.models import CausalLM, ModelConfig, axis_rules
from jaxalign.parallel import DEFAULT_RULES, MeshConfig, make_mesh
from jaxalign.train.multiobjective import AGGREGATORS, multiobjective_train_step, uses_weights
from jaxalign.train.state import TrainState, abstract_model, train_shardings

K, B, L = 2, 8, 10
BETA = 0.5
WEIGHTS = np.asarray([0.3, 0.7], np.float32)
CONFIG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1,
                     num_heads=2, num_kv_heads=2, head_dim=16, initializer_range=0.2)  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    rules = DEFAULT_RULES.as_pairs()
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    graphdef, abstract = abstract_model(CONFIG, rules)
    # SGD with momentum: the update is linear in the gradient, so rounding differences stay
    # rounding-sized (Adam's first step ≈ lr·sign(g) amplifies them where g ≈ 0).
    tx = optax.sgd(0.1, momentum=0.9)
    sh = train_shardings(abstract, tx, mesh, rules)
    _, params = nnx.split(CausalLM.create(CONFIG, key=jax.random.key(0)))
    _, reference = nnx.split(CausalLM.create(CONFIG, key=jax.random.key(1)))  # π ≠ π_ref
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, CONFIG.vocab_size, (2, K, B, L)), jnp.int32)
    # Rows of odd index end one token early (right padding); responses start at 4.
    positions = jnp.arange(L)[None, :]
    attention = (positions < L - (jnp.arange(B)[:, None] % 2)).astype(jnp.int32)
    loss_mask = ((positions >= 4) & (attention > 0)).astype(jnp.float32)
    # Objective 2 prefers objective 1's rejected responses for half the prompts: conflict.
    chosen = tokens[0].at[1, : B // 2].set(tokens[1, 0, : B // 2])
    rejected = tokens[1].at[1, : B // 2].set(tokens[0, 0, : B // 2])
    example = jnp.ones((K, B), jnp.float32).at[1, B - 1].set(0.0)  # a filler row
    batches = tuple(
        PreferenceBatch(chosen[k], attention, loss_mask, rejected[k], attention, loss_mask, e)
        for k, e in enumerate(example)
    )
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params),
                       jax.random.key_data(jax.random.key(2)))  # fmt: skip
    # The same values, laid out as the training engine lays them out.
    batch_sh = PreferenceBatch(*(sh.batch,) * 6, sh.example)
    sharded = (
        jax.device_put(state, sh.state),
        jax.device_put(reference, sh.reference),
        tuple(jax.device_put(b, batch_sh) for b in batches),
    )
    return graphdef, tx, mesh, rules, sh, (state, reference, batches), sharded


def _step(graphdef, tx, aggregator, batch_sharding):
    return functools.partial(
        multiobjective_train_step, graphdef=graphdef, tx=tx,
        lr_schedule=optax.constant_schedule(0.1), aggregator=aggregator,
        weights=jnp.asarray(WEIGHTS) if uses_weights(aggregator) else None, c=0.4, beta=BETA,
        grad_accum_steps=2, batch_sharding=batch_sharding,
    )  # fmt: skip


@pytest.fixture(scope="module")
def one_device(setup):
    """Every aggregator's step on one device (one compilation computes the four)."""
    graphdef, tx, _, _, _, single, _ = setup

    def steps(*args):
        return {name: _step(graphdef, tx, name, None)(*args) for name in AGGREGATORS}

    with jax.numpy_dtype_promotion("standard"):  # optax mixes int and float scalars
        return jax.jit(steps)(*single)


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_sharded_multiobjective_step_matches_one_device(setup, one_device, aggregator):
    assert jax.device_count() == 8
    graphdef, tx, mesh, rules, sh, single, sharded = setup
    s1, m1 = one_device[aggregator]
    # The sharded step is jitted alone, as the training engine jits it.
    with jax.numpy_dtype_promotion("standard"), jax.set_mesh(mesh), axis_rules(rules):
        s8, m8 = jax.jit(_step(graphdef, tx, aggregator, sh.batch))(*sharded)

    # The weights really are spread over the 8 devices (FSDP × tensor) and stay so.
    kernel = sharded[0].params["model"]["layers"]["mlp"]["gate_proj"]["kernel"]
    assert kernel.sharding.num_devices == 8
    assert kernel.addressable_shards[0].data.shape == (1, 16, 32)  # (layers, 32/fsdp, 64/tensor)
    outputs, inputs = jax.tree.leaves_with_path(s8), jax.tree.leaves_with_path(sharded[0])
    for (path, a), (_, b) in zip(outputs, inputs, strict=True):
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (
            f"state{jax.tree_util.keystr(path)}: output sharding {a.sharding.spec} "
            f"!= input sharding {b.sharding.spec}"
        )

    # Sharded == unsharded: the new train state and every metric.
    for a, b in zip(jax.tree.leaves(s8), jax.tree.leaves(s1), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    assert set(m8) == set(m1)
    for name in m1:
        np.testing.assert_allclose(m8[name], m1[name], rtol=1e-4, atol=1e-5, err_msg=name)
    # The step moved the parameters, and the objectives conflict (so the aggregators' sharded
    # Gram-matrix solves are exercised away from the trivial agreeing case).
    pairs = zip(jax.tree.leaves(s1.params), jax.tree.leaves(single[0].params), strict=True)
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in pairs)
    assert moved > 1e-3
    assert float(m1["conflict"]) == 1.0 and float(m1["finite"]) == 1.0
    assert all(np.isfinite(float(m1[f"loss_{k}"])) for k in range(K))
