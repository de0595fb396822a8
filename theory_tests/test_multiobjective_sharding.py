"""Sharded aggregation (8 CPU devices, params sharded over a 2×4 mesh) equals unsharded
aggregation, and the direction keeps the parameters' sharding."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxalign.multiobjective as mo

K = 3
SPECS = {
    "embed": P("data", "model"),  # [16, 24]
    "bias": P("model"),  # [24]
    "head": P("model", None),  # [24, 4]
    "scale": P(),  # [4]
}


def _mesh():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _params(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "embed": rng.normal(size=(16, 24)) / 4,
        "bias": rng.normal(size=(24,)) / 4,
        "head": rng.normal(size=(24, 4)) / 4,
        "scale": 1.0 + rng.normal(size=(4,)) / 10,
    }


def _data(seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 16))
    base = 3.0 * rng.normal(size=(32, 4))
    # Objectives 0 and 1 want opposite outputs: their gradients conflict.
    targets = np.stack([base, -base, rng.normal(size=(32, 4))])
    return jnp.asarray(x), jnp.asarray(targets)


def _losses(params, x, targets):
    h = jnp.tanh(x @ params["embed"] + params["bias"][None, :])
    out = (h @ params["head"]) * params["scale"][None, :]
    return jnp.mean((out[None] - targets) ** 2, axis=(1, 2))  # [K] conflicting objectives


METHODS = {
    "weighted_sum": lambda g: mo.weighted_sum_direction(g, jnp.asarray([0.2, 0.3, 0.5])),
    "mgda": mo.mgda_direction,
    "pcgrad": lambda g: mo.pcgrad_direction(g, key=jax.random.key(3)),
    "cagrad": lambda g: mo.cagrad_direction(g, 0.5),
    "raco": lambda g: mo.raco_direction(g, 0.5, jnp.asarray([0.2, 0.3, 0.5])),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_sharded_aggregation_matches_unsharded_and_keeps_sharding(name):
    mesh = _mesh()
    x, targets = _data()
    params = jax.tree.map(jnp.asarray, _params())
    grads = jax.jacrev(_losses)(params, x, targets)  # leaves [K, ...], one device
    fn = jax.jit(METHODS[name])
    ref_dir, ref_info = fn(grads)

    stacked_shardings = {k: NamedSharding(mesh, P(None, *spec)) for k, spec in SPECS.items()}
    sharded = jax.device_put(grads, stacked_shardings)
    with jax.set_mesh(mesh):
        direction, info = fn(sharded)
    for key, spec in SPECS.items():
        want = NamedSharding(mesh, spec)
        assert direction[key].sharding.is_equivalent_to(want, direction[key].ndim), (
            key,
            direction[key].sharding,
        )
        np.testing.assert_allclose(
            np.asarray(direction[key]), np.asarray(ref_dir[key]), rtol=1e-12, atol=1e-14
        )
    for got, want in zip(info, ref_info):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-11, atol=1e-14)
    assert bool(info.conflict)  # the three targets pull the shared parameters apart


def test_sharded_training_step_matches_unsharded():
    """A jitted step (K gradients → CAGrad → SGD with momentum) on sharded params equals
    the same step on one device."""
    mesh = _mesh()
    x, targets = _data()
    opt = optax.chain(mo.cagrad(0.4, num_objectives=K), optax.sgd(1e-1, momentum=0.9))

    def step(params, state):
        grads = jax.jacrev(_losses)(params, x, targets)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step)

    def run(params):
        state = opt.init(params)
        for _ in range(5):
            params, state = step(params, state)
        return params, state

    ref, ref_state = run(jax.tree.map(jnp.asarray, _params()))
    shardings = {k: NamedSharding(mesh, s) for k, s in SPECS.items()}
    with jax.set_mesh(mesh):
        got, state = run(jax.device_put(jax.tree.map(jnp.asarray, _params()), shardings))
    for key in SPECS:
        assert got[key].sharding.is_equivalent_to(shardings[key], got[key].ndim)
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(ref[key]), rtol=1e-10)
    agg_state = state[0]
    assert int(agg_state.count) == 5
    np.testing.assert_allclose(
        np.asarray(agg_state.info.weights), np.asarray(ref_state[0].info.weights), rtol=1e-10
    )


def _collectives(fn, grads) -> list[tuple[str, str]]:
    hlo = jax.jit(fn).lower(grads).compile().as_text()
    pattern = r"= (\S+) (all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)\("
    return re.findall(pattern, hlo)


def test_only_the_gram_matrix_crosses_devices():
    """The only collective is an all-reduce of K×K partial Gram sums; flattening the
    gradient pytree (the reference approach) all-gathers the gradients instead."""
    mesh = _mesh()
    x, targets = _data()
    grads = jax.jacrev(_losses)(jax.tree.map(jnp.asarray, _params()), x, targets)
    grads = jax.device_put(
        grads, {k: NamedSharding(mesh, P(None, *spec)) for k, spec in SPECS.items()}
    )
    with jax.set_mesh(mesh):
        ours = _collectives(lambda g: mo.cagrad_direction(g, 0.5)[0], grads)

        def flattened_gram(g):
            flat = jax.vmap(lambda t: ravel_pytree(t)[0])(g)
            return flat @ flat.T

        reference = _collectives(flattened_gram, grads)
    assert ours, "expected an all-reduce of the Gram matrix"
    assert all(op == "all-reduce" and shape.startswith(f"f64[{K},{K}]") for shape, op in ours), ours
    assert any(op == "all-gather" for _, op in reference), reference
