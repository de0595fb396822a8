"""Contract tests run over every mirror-descent transform and mirror map, plus closed forms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxalign import optim

TRANSFORMS = {
    "mirror_descent": optim.mirror_descent,
    "optimistic_mirror_descent": optim.optimistic_mirror_descent,
    "extragradient": optim.extragradient,
}
MAPS = {
    "entropic": optim.entropic,
    "euclidean": optim.euclidean,
    "euclidean_simplex": optim.euclidean_simplex,
}
CASES = [(t, m) for t in TRANSFORMS for m in MAPS]


def _params(map_name: str, dtype=jnp.float32):
    key = jax.random.key(0)
    k1, k2 = jax.random.split(key)
    a = jax.random.normal(k1, (3, 4), jnp.float32)
    b = jax.random.normal(k2, (5,), jnp.float32)
    if map_name == "entropic":
        a, b = jax.nn.log_softmax(a), jax.nn.log_softmax(b)
    elif map_name == "euclidean_simplex":
        a, b = jax.nn.softmax(a), jax.nn.softmax(b)
    return {"a": a.astype(dtype), "b": b.astype(dtype)}


def _grads(params, seed=1):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef,
        [jax.random.normal(k, x.shape, jnp.float32).astype(x.dtype) for k, x in zip(keys, leaves)],
    )


def _make(t_name, m_name, step_size=0.1):
    return TRANSFORMS[t_name](step_size, mirror_map=MAPS[m_name]())


def _steps(tx, params, num=4):
    state = tx.init(params)
    for i in range(num):
        updates, state = tx.update(_grads(params, seed=i), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize(("t_name", "m_name"), CASES)
def test_jit_matches_eager(t_name, m_name):
    tx = _make(t_name, m_name)
    params = _params(m_name)
    state = tx.init(params)
    grads = _grads(params)
    eager = tx.update(grads, state, params)
    jitted = jax.jit(tx.update)(grads, state, params)
    for x, y in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("t_name", "m_name"), CASES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtype_preserved(t_name, m_name, dtype):
    tx = _make(t_name, m_name)
    params = _params(m_name, dtype)
    new, _ = _steps(tx, params, 2)
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(new)):
        assert x.dtype == y.dtype
        assert x.shape == y.shape


@pytest.mark.parametrize(("t_name", "m_name"), CASES)
def test_state_structure_stable(t_name, m_name):
    tx = _make(t_name, m_name)
    params = _params(m_name)
    state0 = tx.init(params)
    _, state1 = _steps(tx, params, 3)
    spec = lambda s: jax.tree.map(lambda x: (jnp.shape(x), jnp.asarray(x).dtype), s)
    assert jax.tree.structure(state0) == jax.tree.structure(state1)
    assert spec(state0) == spec(state1)


@pytest.mark.parametrize(("t_name", "m_name"), CASES)
def test_runs_inside_scan_and_compiles_once(t_name, m_name):
    tx = _make(t_name, m_name)
    params = _params(m_name)

    @jax.jit
    def loop(params):
        def body(carry, i):
            p, s = carry
            g = jax.tree.map(lambda x: jnp.sin(x + i.astype(x.dtype)), p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(body, (params, tx.init(params)), jnp.arange(5))[0]

    p, _ = loop(params)
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(p))


@pytest.mark.parametrize(("t_name", "m_name"), CASES)
def test_works_inside_optax_chain(t_name, m_name):
    tx = _make(t_name, m_name)
    chained = optax.chain(optax.clip_by_global_norm(1e6), tx)
    params = _params(m_name)
    a, _ = _steps(tx, params, 3)
    b, _ = _steps(chained, params, 3)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t_name", list(TRANSFORMS))
def test_update_requires_params(t_name):
    tx = TRANSFORMS[t_name](0.1)
    params = _params("entropic")
    with pytest.raises(ValueError, match="needs params"):
        tx.update(_grads(params), tx.init(params), None)


@pytest.mark.parametrize("t_name", list(TRANSFORMS))
@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_rejects_nonpositive_step_size(t_name, bad):
    with pytest.raises(ValueError, match="step_size"):
        TRANSFORMS[t_name](bad)


def test_entropic_step_is_multiplicative_weights():
    logp = jax.nn.log_softmax(jnp.asarray([0.1, -0.3, 0.7, 0.0]))
    g = jnp.asarray([1.0, -2.0, 0.5, 0.0])
    tx = optim.mirror_descent(0.3)
    upd, _ = tx.update(g, tx.init(logp), logp)
    got = np.exp(np.asarray(logp + upd))
    want = np.exp(np.asarray(logp)) * np.exp(-0.3 * np.asarray(g))
    np.testing.assert_allclose(got, want / want.sum(), rtol=1e-5)


def test_optimistic_step_matches_onpo_bookkeeping():
    """π'_{t+1} ∝ π'_t e^{-s g_t}, π_{t+1} ∝ π'_{t+1} e^{-s g_t}, by hand over two steps."""
    s = 0.25
    tx = optim.optimistic_mirror_descent(s)
    theta = jax.nn.log_softmax(jnp.asarray([0.2, -0.1, 0.4]))
    g1, g2 = jnp.asarray([1.0, 0.0, -1.0]), jnp.asarray([-0.5, 2.0, 0.1])
    state = tx.init(theta)
    u, state = tx.update(g1, state, theta)
    theta1 = theta + u
    u, state = tx.update(g2, state, theta1)
    theta2 = theta1 + u
    n = lambda x: x / x.sum()
    p = np.exp(np.asarray(theta))
    sec1 = n(p * np.exp(-s * np.asarray(g1)))
    pi1 = n(sec1 * np.exp(-s * np.asarray(g1)))
    sec2 = n(sec1 * np.exp(-s * np.asarray(g2)))
    pi2 = n(sec2 * np.exp(-s * np.asarray(g2)))
    np.testing.assert_allclose(np.exp(np.asarray(theta1)), pi1, rtol=1e-5)
    np.testing.assert_allclose(np.exp(np.asarray(theta2)), pi2, rtol=1e-5)
    np.testing.assert_allclose(np.exp(np.asarray(state.secondary)), sec2, rtol=1e-5)


def test_optimistic_euclidean_is_optimistic_gradient_descent():
    s = 0.1
    tx = optim.optimistic_mirror_descent(s, mirror_map=optim.euclidean())
    x = jnp.asarray([1.0, -2.0])
    gs = [jnp.asarray([0.3, 0.1]), jnp.asarray([-1.0, 0.5]), jnp.asarray([0.2, 0.2])]
    state = tx.init(x)
    xs, prev = [x], jnp.zeros(2)
    for i, g in enumerate(gs):
        u, state = tx.update(g, state, xs[-1])
        xs.append(xs[-1] + u)
        if i > 0:
            want = xs[-2] - 2 * s * g + s * prev
            np.testing.assert_allclose(np.asarray(xs[-1]), np.asarray(want), rtol=1e-6)
        prev = g


def test_extragradient_two_calls_form_one_iteration():
    s = 0.2
    a = jnp.asarray([[0.0, 1.0], [-1.0, 0.0]])
    tx = optim.extragradient(s, mirror_map=optim.euclidean())
    x = jnp.asarray([0.5, -0.3])
    state = tx.init(x)
    grad = lambda z: a @ z
    u, state = tx.update(grad(x), state, x)
    half = x + u
    assert int(state.phase) == 1 and int(state.count) == 0
    u, state = tx.update(grad(half), state, half)
    new = half + u
    assert int(state.phase) == 0 and int(state.count) == 1
    np.testing.assert_allclose(np.asarray(half), np.asarray(x - s * grad(x)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new), np.asarray(x - s * grad(half)), rtol=1e-6)


def test_schedule_step_size_uses_count():
    sched = lambda c: 1.0 / (c.astype(jnp.float32) + 1.0)
    tx = optim.mirror_descent(sched, mirror_map=optim.euclidean())
    x = jnp.zeros(2)
    state = tx.init(x)
    g = jnp.ones(2)
    u1, state = tx.update(g, state, x)
    u2, state = tx.update(g, state, x + u1)
    np.testing.assert_allclose(np.asarray(u1), -1.0)
    np.testing.assert_allclose(np.asarray(u2), -0.5)


@pytest.mark.parametrize("seed", range(5))
def test_project_to_simplex_matches_bruteforce(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=7) * 2
    got = np.asarray(optim.project_to_simplex(jnp.asarray(x)))
    assert abs(got.sum() - 1) < 1e-5 and (got >= 0).all()
    # KKT: x - got = theta on the support, and x_i <= theta off it.
    theta = (x - got)[got > 0]
    assert np.ptp(theta) < 1e-5
    assert (x[got == 0] <= theta.mean() + 1e-5).all()


def test_step_size_scalar_array_under_jit():
    @functools.partial(jax.jit)
    def f(step, x, g):
        tx = optim.mirror_descent(step)
        return tx.update(g, tx.init(x), x)[0]

    x = jax.nn.log_softmax(jnp.asarray([0.0, 1.0]))
    out = f(jnp.asarray(0.5), x, jnp.asarray([1.0, 0.0]))
    assert out.shape == (2,)
