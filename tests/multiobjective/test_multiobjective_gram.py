"""Gram matrix, leaf-wise recombination and the on-device simplex solvers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxalign.multiobjective as mo

K = 3


def _grads(seed: int = 0, k: int = K):
    rng = np.random.default_rng(seed)
    return {
        "dense": {"w": jnp.asarray(rng.normal(size=(k, 4, 5)), jnp.float32)},
        "bias": jnp.asarray(rng.normal(size=(k, 5)), jnp.float32),
        "scalar_param": jnp.asarray(rng.normal(size=(k,)), jnp.float32),
    }


def _flat(grads) -> np.ndarray:
    leaves = jax.tree_util.tree_leaves(grads)
    k = leaves[0].shape[0]
    return np.concatenate([np.asarray(x, np.float64).reshape(k, -1) for x in leaves], axis=1)


def test_gram_matrix_equals_flattened_inner_products():
    g = _grads()
    flat = _flat(g)
    gram = mo.gram_matrix(g)
    assert gram.shape == (K, K) and gram.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(gram), flat @ flat.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(gram), np.asarray(gram).T)


def test_linear_combination_is_leafwise_weighted_sum():
    g = _grads(1)
    coef = jnp.asarray([0.5, -1.0, 2.0], jnp.float32)
    out = mo.linear_combination(g, coef)
    assert jax.tree.structure(out) == jax.tree.structure(jax.tree.map(lambda x: x[0], g))
    want = np.asarray(coef, np.float64) @ _flat(g)
    np.testing.assert_allclose(_flat(jax.tree.map(lambda x: x[None], out))[0], want, rtol=1e-5)


def test_bfloat16_gradients_accumulate_in_float32_and_keep_their_dtype():
    g = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _grads(2))
    gram = mo.gram_matrix(g)
    assert gram.dtype == jnp.float32
    flat = _flat(g)
    np.testing.assert_allclose(np.asarray(gram), flat @ flat.T, rtol=1e-5, atol=1e-4)
    d, info = mo.cagrad_direction(g, 0.5)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(d))
    assert info.weights.dtype == jnp.float32


def _big_concatenates(fn, grads, limit: int) -> list[tuple[int, ...]]:
    jaxpr = jax.make_jaxpr(fn)(grads)
    found = []

    def visit(jp):
        for eqn in jp.eqns:
            if eqn.primitive.name == "concatenate":
                shape = eqn.outvars[0].aval.shape
                if int(np.prod(shape)) >= limit:
                    found.append(shape)
            for value in eqn.params.values():
                for sub in value if isinstance(value, tuple | list) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        visit(inner)

    visit(jaxpr.jaxpr)
    return found


@pytest.mark.parametrize(
    "fn",
    [
        mo.gram_matrix,
        lambda g: mo.cagrad_direction(g, 0.5),
        lambda g: mo.raco_direction(g, 0.5, jnp.asarray([0.2, 0.3, 0.5])),
        mo.mgda_direction,
        lambda g: mo.pcgrad_direction(g, key=jax.random.key(0)),
    ],
    ids=["gram", "cagrad", "raco", "mgda", "pcgrad"],
)
def test_gradients_are_never_flattened(fn):
    """No concatenation as large as one gradient (the solver's K-sized ones are tiny)."""
    big = {"w": jnp.zeros((K, 40, 50)), "b": jnp.zeros((K, 50))}
    assert _big_concatenates(fn, big, limit=2000) == []
    # The check has teeth: a ravel_pytree-based Gram matrix is caught.
    from jax.flatten_util import ravel_pytree

    flat_gram = lambda g: (
        jax.vmap(lambda t: ravel_pytree(t)[0])(g) @ jax.vmap(lambda t: ravel_pytree(t)[0])(g).T
    )
    assert _big_concatenates(flat_gram, big, limit=2000)


# ----------------------------------------------------------------------------- solvers


def _random_gram(seed: int, k: int, d: int) -> jax.Array:
    g = np.random.default_rng(seed).normal(size=(k, d))
    return jnp.asarray(g @ g.T, jnp.float32)


@pytest.mark.parametrize("seed", range(4))
def test_min_norm_two_objectives_matches_closed_form(seed):
    g = np.random.default_rng(seed).normal(size=(2, 6)) + np.array([1.0, 0, 0, 0, 0, 0])
    sol = mo.min_norm_weights(jnp.asarray(g @ g.T, jnp.float32))
    g1, g2 = g
    w1 = np.clip((g2 - g1) @ g2 / np.sum((g1 - g2) ** 2), 0, 1)
    np.testing.assert_allclose(np.asarray(sol.weights), [w1, 1 - w1], atol=2e-5)


@pytest.mark.parametrize("seed", range(3))
def test_frank_wolfe_agrees_with_enumeration_and_gap_is_a_certificate(seed):
    gram = _random_gram(seed, 6, 8)
    anchor = jnp.full((6,), 1 / 6, jnp.float32)
    exact = mo.cagrad_dual_weights(gram, anchor, 0.6, method="enumerate")
    fw = mo.cagrad_dual_weights(gram, anchor, 0.6, method="frank_wolfe", num_iters=2000)
    scale = float(jnp.max(jnp.diagonal(gram)))
    assert float(exact.gap) <= 1e-4 * scale
    assert abs(float(fw.objective) - float(exact.objective)) <= 1e-4 * scale
    # Few iterations: the reported gap still bounds the true suboptimality.
    rough = mo.cagrad_dual_weights(gram, anchor, 0.6, method="frank_wolfe", num_iters=3)
    assert float(rough.gap) >= float(rough.objective) - float(exact.objective) - 1e-5 * scale
    mn_exact = mo.min_norm_weights(gram, method="enumerate")
    mn_fw = mo.min_norm_weights(gram, method="frank_wolfe", num_iters=2000)
    assert abs(float(mn_fw.objective) - float(mn_exact.objective)) <= 1e-4 * scale


def test_auto_method_switches_to_frank_wolfe_for_many_objectives():
    gram = _random_gram(0, 11, 30)
    anchor = jnp.full((11,), 1 / 11, jnp.float32)
    sol = mo.cagrad_dual_weights(gram, anchor, 0.5)  # K = 11 > 10: Frank–Wolfe
    assert float(sol.gap) <= 1e-3 * float(jnp.max(jnp.diagonal(gram)))
    np.testing.assert_allclose(float(jnp.sum(sol.weights)), 1.0, rtol=1e-5)


def test_solvers_are_jittable_without_host_round_trips():
    gram = _random_gram(1, 4, 5)
    anchor = jnp.full((4,), 0.25, jnp.float32)
    solve = jax.jit(mo.cagrad_dual_weights, static_argnames=("method", "num_iters"))
    eager = mo.cagrad_dual_weights(gram, anchor, 0.5)
    jitted = solve(gram, anchor, 0.5)
    np.testing.assert_allclose(np.asarray(jitted.weights), np.asarray(eager.weights), atol=1e-6)
    c = jnp.asarray(0.5, jnp.float32)
    with jax.transfer_guard("disallow"):
        solve(gram, anchor, c)


def test_zero_gram_gives_the_anchor_without_nan():
    zero = jnp.zeros((3, 3), jnp.float32)
    anchor = jnp.asarray([0.2, 0.3, 0.5], jnp.float32)
    sol = mo.cagrad_dual_weights(zero, anchor, 0.5)
    np.testing.assert_allclose(np.asarray(sol.weights), np.asarray(anchor))
    mn = mo.min_norm_weights(zero)
    np.testing.assert_allclose(np.asarray(mn.weights), np.full(3, 1 / 3), rtol=1e-6)
    assert np.isfinite(float(sol.gap)) and np.isfinite(float(mn.gap))
