"""The multi-objective DPO step on a (data, fsdp, tensor) = (2, 2, 2) mesh matches one device.

Parameters are sharded by the model's logical rules (FSDP over ``embed``, tensor over
``mlp``/heads, as the training engine does), the K stacked preference batches along their
batch axis; the new parameters, optimizer state and metrics agree with the unsharded step,
and the outputs keep the inputs' shardings (no silent re-layout between steps).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxalign.models import CausalLM, ModelConfig, axis_rules, logical_sharding
from jaxalign.parallel import DEFAULT_RULES, MeshConfig, make_mesh
from jaxalign.train.multiobjective import (
    AGGREGATORS,
    PreferenceBatches,
    multiobjective_dpo_step,
    reference_logprobs,
)
from jaxalign.train.state import abstract_model, train_shardings

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
    reference = CausalLM.create(CONFIG, key=jax.random.key(1))  # π ≠ π_ref: h ≠ 0
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, CONFIG.vocab_size, (2, K, B, L)), jnp.int32)
    mask = jnp.broadcast_to((jnp.arange(L) >= 4).astype(jnp.int32), (2, K, B, L))
    # Objective 2 prefers objective 1's rejected responses for half the prompts: conflict.
    ct = tokens[0].at[1, : B // 2].set(tokens[1, 0, : B // 2])
    rt = tokens[1].at[1, : B // 2].set(tokens[0, 0, : B // 2])
    refs = reference_logprobs(reference, ct, mask[0], rt, mask[1])
    batches = PreferenceBatches(ct, mask[0], rt, mask[1], *refs)
    opt_state = tx.init(params)
    # The same values, laid out as the training engine lays them out.
    tokens_sh = logical_sharding((None, "batch", "length"), mesh, rules)
    rows_sh = logical_sharding((None, "batch"), mesh, rules)
    batch_sh = PreferenceBatches(*(tokens_sh,) * 4, rows_sh, rows_sh)
    sharded = (
        jax.device_put(params, sh.reference),
        jax.device_put(opt_state, sh.state.opt_state),
        jax.device_put(batches, batch_sh),
    )
    return graphdef, tx, mesh, rules, (params, opt_state, batches), sharded


def _jit_step(graphdef, tx, aggregator):
    weights = jnp.asarray(WEIGHTS) if aggregator in ("weighted_sum", "raco") else None
    return jax.jit(functools.partial(multiobjective_dpo_step, graphdef=graphdef, tx=tx, beta=BETA,
                                     aggregator=aggregator, weights=weights, c=0.4))  # fmt: skip


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_sharded_multiobjective_step_matches_one_device(setup, aggregator):
    assert jax.device_count() == 8
    graphdef, tx, mesh, rules, single, sharded = setup
    step = _jit_step(graphdef, tx, aggregator)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int and float scalars
        p1, s1, m1 = step(*single)
        with jax.set_mesh(mesh), axis_rules(rules):
            p8, s8, m8 = step(*sharded)

    # The weights really are spread over the 8 devices (FSDP × tensor) and stay so.
    kernel = sharded[0]["model"]["layers"]["mlp"]["gate_proj"]["kernel"]
    assert kernel.sharding.num_devices == 8
    assert kernel.addressable_shards[0].data.shape == (1, 16, 32)  # (layers, 32/fsdp, 64/tensor)
    for name, out, inp in (("params", p8, sharded[0]), ("opt_state", s8, sharded[1])):
        for path_out, path_in in zip(jax.tree.leaves_with_path(out), jax.tree.leaves_with_path(inp),
                                     strict=True):  # fmt: skip
            (path, a), (_, b) = path_out, path_in
            assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (
                f"{name}{jax.tree_util.keystr(path)}: output sharding {a.sharding.spec} "
                f"!= input sharding {b.sharding.spec}"
            )

    # Sharded == unsharded: new parameters, optimizer state and every metric.
    for a, b in zip(jax.tree.leaves((p8, s8)), jax.tree.leaves((p1, s1)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(m8), jax.tree.leaves(m1), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    # The step moved the parameters, and the objectives conflict (so the aggregators' sharded
    # Gram-matrix solves are exercised away from the trivial agreeing case).
    moved = max(float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(single[0])))  # fmt: skip
    assert moved > 1e-3
    assert bool(m1.info.conflict)
    assert bool(jnp.all(jnp.isfinite(m1.losses)))
