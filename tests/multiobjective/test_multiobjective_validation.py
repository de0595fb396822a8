"""Bad input raises a ValueError naming the argument, the value and the expectation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import jaxalign.multiobjective as mo

G = {"a": jnp.ones((2, 3), jnp.float32), "b": jnp.ones((2,), jnp.float32)}
W = jnp.asarray([0.4, 0.6], jnp.float32)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mo.cagrad_direction(G, -0.1), r"c must be >= 0, got -0.1"),
        (lambda: mo.cagrad(-1.0, num_objectives=2), r"c must be >= 0"),
        (lambda: mo.raco_direction(G, -0.5, W), r"c must be >= 0"),
        (lambda: mo.raco_direction(G, 1.0, W), r"0 <= c < 1 for raco.*got 1.0"),
        (lambda: mo.raco(1.5, W), r"0 <= c < 1 for raco"),
        (lambda: mo.cagrad_dual_weights(jnp.eye(2), W, -1.0), r"c must be >= 0"),
    ],
)
def test_invalid_radius(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cagrad_accepts_c_at_least_one():
    d, _ = mo.cagrad_direction(G, 1.5)
    assert jnp.isfinite(d["a"]).all()


@pytest.mark.parametrize(
    "weights, match",
    [
        ([0.5, 0.6], r"weights must lie on the probability simplex.*sum 1.1"),
        ([-0.2, 1.2], r"weights must lie on the probability simplex"),
        ([jnp.nan, 1.0], r"weights must lie on the probability simplex"),
        ([[0.5, 0.5]], r"weights must be a 1-D array"),
        ([0.2, 0.3, 0.5], r"weights has shape \(3,\); expected \(2,\).*K=2"),
    ],
)
def test_invalid_weights(weights, match):
    w = jnp.asarray(weights, jnp.float32)
    with pytest.raises(ValueError, match=match):
        mo.raco_direction(G, 0.5, w)
    with pytest.raises(ValueError, match=match):
        mo.weighted_sum_direction(G, w)


def test_invalid_weights_in_factories():
    with pytest.raises(ValueError, match="probability simplex"):
        mo.raco(0.5, jnp.asarray([0.7, 0.7]))
    with pytest.raises(ValueError, match="probability simplex"):
        mo.weighted_sum(jnp.asarray([-1.0, 2.0]))
    with pytest.raises(ValueError, match="anchor_weights must lie on the probability simplex"):
        mo.cagrad_dual_weights(jnp.eye(2), jnp.asarray([1.0, 1.0]), 0.5)


@pytest.mark.parametrize(
    "grads, match",
    [
        ({}, r"grads is an empty pytree"),
        ({"a": jnp.ones((2, 3)), "b": jnp.ones((3,))}, r"disagree on the number of objectives"),
        ({"a": jnp.ones(())}, r"grads\['a'\] is a scalar"),
        ({"a": jnp.ones((2, 3), jnp.int32)}, r"grads\['a'\] has dtype int32"),
        ({"a": jnp.ones((0, 3))}, r"leading axis of size 0"),
    ],
)
def test_invalid_gradient_pytrees(grads, match):
    with pytest.raises(ValueError, match=match):
        mo.mgda_direction(grads)


def test_nan_gradients_are_reported_not_propagated():
    bad = {"a": jnp.asarray([[1.0, jnp.nan], [0.0, 1.0]], jnp.float32)}
    with pytest.raises(ValueError, match=r"gram_matrix\(grads\) must be finite"):
        mo.cagrad_direction(bad, 0.5)


def test_aggregator_objective_count_mismatch():
    agg = mo.cagrad(0.5, num_objectives=3)
    state = agg.init({"a": jnp.ones((3,)), "b": jnp.ones(())})
    with pytest.raises(
        ValueError, match=r"stacks K=2 objectives; this aggregator was built for K=3"
    ):
        agg.update(G, state)
    with pytest.raises(ValueError, match=r"K=2 objectives"):
        jax.jit(agg.update)(G, state)  # shape checks also run under jit
    agg = mo.raco(0.5, jnp.asarray([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match=r"built for K=3"):
        agg.update(G, agg.init(None))


@pytest.mark.parametrize("bad", [0, -2, 2.0, True, None])
def test_invalid_num_objectives(bad):
    with pytest.raises(ValueError, match="num_objectives must be"):
        mo.mgda(num_objectives=bad)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mo.cagrad_direction(G, 0.5, rescale="1/(1+c)"), r"rescale must be one of"),
        (lambda: mo.cagrad_direction(G, 0.5, method="newton"), r"method must be one of"),
        (lambda: mo.mgda_direction(G, num_iters=0), r"num_iters must be >= 1, got 0"),
        (
            lambda: mo.pcgrad_direction(G, key=jax.random.key(0), reduction="max"),
            r"reduction must be 'sum' or 'mean', got 'max'",
        ),
        (lambda: mo.min_norm_weights(jnp.ones((2, 3))), r"gram must be a square"),
        (lambda: mo.min_norm_weights(jnp.ones((3,))), r"gram must be a 2-D array"),
        (
            lambda: mo.cagrad_dual_weights(jnp.eye(3), W, 0.5),
            r"anchor_weights has shape \(2,\); expected \(3,\)",
        ),
        (lambda: mo.linear_combination(G, jnp.ones((3,))), r"coefficients has shape \(3,\)"),
    ],
)
def test_invalid_options(call, match):
    with pytest.raises(ValueError, match=match):
        call()
