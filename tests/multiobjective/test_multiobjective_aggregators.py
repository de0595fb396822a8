"""Aggregators: one contract suite over every method, plus per-method closed forms."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.experimental import aggregating

import jaxalign.multiobjective as mo

K = 3
WEIGHTS = jnp.asarray([0.2, 0.3, 0.5], jnp.float32)

AGGREGATORS = {
    "weighted_sum": lambda: mo.weighted_sum(WEIGHTS),
    "mgda": lambda: mo.mgda(num_objectives=K),
    "pcgrad": lambda: mo.pcgrad(num_objectives=K, key=jax.random.key(0)),
    "cagrad": lambda: mo.cagrad(0.5, num_objectives=K),
    "raco": lambda: mo.raco(0.5, WEIGHTS),
}
PURE = {
    "weighted_sum": lambda g, key: mo.weighted_sum_direction(g, WEIGHTS),
    "mgda": lambda g, key: mo.mgda_direction(g),
    "pcgrad": lambda g, key: mo.pcgrad_direction(g, key=key),
    "cagrad": lambda g, key: mo.cagrad_direction(g, 0.5),
    "cagrad_rescaled": lambda g, key: mo.cagrad_direction(g, 0.5, rescale="1+c^2"),
    "raco": lambda g, key: mo.raco_direction(g, 0.5, WEIGHTS),
    "raco_unclipped": lambda g, key: mo.raco_direction(g, 0.5, WEIGHTS, clip=False),
}


def _params():
    return {"w": jnp.ones((4, 2), jnp.float32), "b": jnp.zeros((2,), jnp.float32)}


def _losses(params, x):
    y = x @ params["w"] + params["b"][None, :]
    targets = jnp.asarray([[1.0, 0.0], [-1.0, 0.5], [0.0, -2.0]], jnp.float32)
    return jnp.stack([jnp.mean((y - t[None, :]) ** 2) for t in targets])  # [K]


def _x():
    return jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)


def _stacked(seed: int = 0, conflict: float = 1.0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(1, 5))
    g = base + conflict * rng.normal(size=(K, 5))
    return {"a": jnp.asarray(g, jnp.float32), "b": jnp.asarray(g[:, :2] * 0.5, jnp.float32)}


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_aggregator_contract(name):
    """init/update are pure, jittable, shape/dtype preserving, count steps, chain with
    optax, and agree with the pure function."""
    agg = AGGREGATORS[name]()
    assert isinstance(agg, aggregating.Aggregator)
    params = _params()
    state = agg.init(params)
    assert isinstance(state, mo.AggregatorState)
    assert state.info.weights.shape == (K,)
    grads = jax.jacrev(_losses)(params, _x())

    traces = []

    @jax.jit
    def update(grads, state):
        traces.append(1)
        return agg.update(grads, state, params)

    direction, new_state = update(grads, state)
    chex.assert_trees_all_equal_shapes_and_dtypes(direction, params)
    assert int(new_state.count) == 1
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    chex.assert_trees_all_equal_dtypes(new_state.info, state.info)
    _, state2 = update(grads, new_state)
    assert int(state2.count) == 2
    assert len(traces) == 1  # the state's structure and dtypes are stable: no retrace

    key0 = None if state.key is None else jax.random.fold_in(state.key, 0)
    want, info = PURE[name](grads, key0)
    chex.assert_trees_all_close(direction, want, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(new_state.info, info, rtol=1e-5, atol=1e-6)
    assert np.isfinite(np.asarray(info.cosines)).all()


@pytest.mark.parametrize("name", ["pcgrad", "raco"])
def test_aggregator_chains_with_optax_and_scans(name):
    params = _params()
    x = _x()
    opt = optax.chain(AGGREGATORS[name](), optax.sgd(0.05))
    via_process = aggregating.process(optax.identity(), AGGREGATORS[name](), optax.sgd(0.05))

    def step(carry, _):
        p, s, s2 = carry
        g = jax.jacrev(_losses)(p, x)
        u, s = opt.update(g, s, p)
        u2, s2 = via_process.update(g, s2, p)
        gap = jnp.max(
            jnp.stack([jnp.max(jnp.abs(a - b)) for a, b in zip(*map(jax.tree.leaves, (u, u2)))])
        )
        return (optax.apply_updates(p, u), s, s2), (jnp.sum(_losses(p, x)), gap)

    (final, state, _), (totals, gaps) = jax.lax.scan(
        step, (params, opt.init(params), via_process.init(params)), length=20
    )
    assert float(jnp.max(gaps)) <= 1e-6
    assert int(state[0].count) == 20
    assert float(totals[-1]) < float(totals[0])  # the objectives improve together
    chex.assert_trees_all_equal_shapes_and_dtypes(final, params)


# ----------------------------------------------------------------------------- methods


def test_weighted_sum_is_the_weighted_gradient():
    g = _stacked()
    d, info = mo.weighted_sum_direction(g, WEIGHTS)
    for key in g:
        np.testing.assert_allclose(
            np.asarray(d[key]), np.asarray(WEIGHTS) @ np.asarray(g[key]), rtol=1e-5, atol=1e-7
        )
    np.testing.assert_allclose(np.asarray(info.weights), np.asarray(WEIGHTS))


def test_mgda_has_nonnegative_cosines_where_the_average_conflicts():
    g = {"v": jnp.asarray([[1.0, 0.2], [-1.0, 0.3], [0.1, -0.05]], jnp.float32)}
    _, mean_info = mo.weighted_sum_direction(g, jnp.full((3,), 1 / 3, jnp.float32))
    _, info = mo.mgda_direction(g)
    assert bool(info.conflict)
    assert float(jnp.min(mean_info.cosines)) < 0
    assert float(jnp.min(info.cosines)) >= -1e-5


def _pcgrad_reference(g: np.ndarray, key) -> np.ndarray:
    """Direct transcription of PCGrad on flattened vectors, same random orders."""
    k = g.shape[0]
    out = []
    for i, row_key in enumerate(jax.random.split(key, k)):
        gi = g[i].copy()
        for j in np.asarray(jax.random.permutation(row_key, k)):
            if j != i and gi @ g[j] < 0:
                gi = gi - (gi @ g[j]) / (g[j] @ g[j]) * g[j]
        out.append(gi)
    return np.sum(out, axis=0)


@pytest.mark.parametrize("seed", range(3))
def test_pcgrad_matches_flattened_reference(seed):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(4, 6))
    key = jax.random.key(seed)
    d, info = mo.pcgrad_direction({"v": jnp.asarray(g, jnp.float32)}, key=key)
    np.testing.assert_allclose(np.asarray(d["v"]), _pcgrad_reference(g, key), rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(float(jnp.sum(info.weights)), 1.0, rtol=1e-6)


def test_pcgrad_two_objectives_closed_form_and_no_conflict_is_the_sum():
    g1, g2 = np.array([1.0, 0.0]), np.array([-1.0, 1.0])
    g = {"v": jnp.asarray(np.stack([g1, g2]), jnp.float32)}
    d, _ = mo.pcgrad_direction(g, key=jax.random.key(0), reduction="mean")
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    p2 = g2 - (g1 @ g2) / (g1 @ g1) * g1
    np.testing.assert_allclose(np.asarray(d["v"]), (p1 + p2) / 2, rtol=1e-6)
    aligned = {"v": jnp.asarray([[1.0, 0.0], [1.0, 1.0]], jnp.float32)}
    d, info = mo.pcgrad_direction(aligned, key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(d["v"]), [2.0, 1.0])
    assert not bool(info.conflict)


def test_cagrad_rescale_divides_the_direction():
    g = _stacked(1)
    d, _ = mo.cagrad_direction(g, 0.4)
    for rescale, factor in (("1+c", 1.4), ("1+c^2", 1.16)):
        dr, _ = mo.cagrad_direction(g, 0.4, rescale=rescale)
        chex.assert_trees_all_close(dr, jax.tree.map(lambda x, f=factor: x / f, d), rtol=1e-5)


def test_raco_reduces_to_cagrad_and_matches_its_formula():
    g = _stacked(2, conflict=2.0)
    uniform = jnp.full((K,), 1 / K, jnp.float32)
    d_raco, _ = mo.raco_direction(g, 0.5, uniform, clip=False)
    d_cagrad, _ = mo.cagrad_direction(g, 0.5)
    chex.assert_trees_all_close(d_raco, d_cagrad, rtol=1e-5, atol=1e-6)

    flat = np.concatenate([np.asarray(g["a"]), np.asarray(g["b"])], axis=1).astype(np.float64)
    w = np.asarray(WEIGHTS, np.float64)
    gram = jnp.asarray(flat @ flat.T, jnp.float32)
    p = np.asarray(mo.cagrad_dual_weights(gram, WEIGHTS, 0.5).weights, np.float64)
    pt = np.minimum(p, w)
    g0, gt = w @ flat, pt @ flat
    want = g0 + 0.5 * np.linalg.norm(g0) * gt / np.linalg.norm(gt)
    d, info = mo.raco_direction(g, 0.5, WEIGHTS)
    got = np.concatenate([np.asarray(d["a"]), np.asarray(d["b"])])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(info.weights), pt, atol=1e-5)
    assert float(jnp.sum(info.weights)) <= 1 + 1e-6


def test_cagrad_with_large_c_points_like_mgda():
    g = _stacked(3, conflict=2.0)
    d_big, _ = mo.cagrad_direction(g, 1e4)  # c ≥ 1 is accepted
    d_mgda, _ = mo.mgda_direction(g)
    a = np.concatenate([np.asarray(x) for x in jax.tree_util.tree_leaves(d_big)])
    b = np.concatenate([np.asarray(x) for x in jax.tree_util.tree_leaves(d_mgda)])
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.999


# ----------------------------------------------------------------------------- degenerate


@pytest.mark.parametrize("name", sorted(PURE))
def test_zero_and_single_zero_gradients_are_defined(name):
    zero = jax.tree.map(jnp.zeros_like, _stacked())
    d, info = PURE[name](zero, jax.random.key(0))
    for leaf in jax.tree_util.tree_leaves((d, info)):
        assert np.isfinite(np.asarray(leaf, np.float32)).all()
    chex.assert_trees_all_close(d, jax.tree.map(lambda x: x[0], zero))
    assert float(info.direction_norm) == 0.0

    one_zero = jax.tree.map(lambda x: x.at[1].set(0.0), _stacked(4))
    d, info = PURE[name](one_zero, jax.random.key(0))
    for leaf in jax.tree_util.tree_leaves((d, info)):
        assert np.isfinite(np.asarray(leaf, np.float32)).all()


def test_single_objective():
    g = {"v": jnp.asarray([[3.0, 4.0]], jnp.float32)}
    one = jnp.ones((1,), jnp.float32)
    np.testing.assert_allclose(np.asarray(mo.mgda_direction(g)[0]["v"]), [3.0, 4.0])
    np.testing.assert_allclose(np.asarray(mo.weighted_sum_direction(g, one)[0]["v"]), [3.0, 4.0])
    # One objective: the ball's farthest point along g is (1 + c) g.
    np.testing.assert_allclose(np.asarray(mo.cagrad_direction(g, 0.5)[0]["v"]), [4.5, 6.0])
    np.testing.assert_allclose(np.asarray(mo.raco_direction(g, 0.5, one)[0]["v"]), [4.5, 6.0])
    np.testing.assert_allclose(
        np.asarray(mo.pcgrad_direction(g, key=jax.random.key(0))[0]["v"]), [3.0, 4.0]
    )
