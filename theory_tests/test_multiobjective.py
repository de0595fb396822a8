"""Property tests of the conflict-averse multi-objective statements (ALGORITHMS.md §4).

* CAGrad: the dual direction solves the primal (scipy oracle, strong duality);
  c = 0 is gradient descent; descent lemma and Σ_t ‖∇L_0‖² bound on random
  L-smooth quadratics.
* MGDA: ⟨g_i, d⟩ ≥ ‖d‖²; d = 0 at Pareto-stationary points; scipy / closed-form oracle.
* RACO: Thm 3.1 bound on toy quadratics; Thm 3.2 Γ identity to machine precision,
  incl. the worked example, and the clipping gain measured on exact one-step decreases.
* PCGrad: the direction is Σ_i g_i^PC for some order of the projections of each row
  (numpy oracle over all orders); for K = 2 no objective increases to first order. For
  K ≥ 3 "no projected pair conflicts" is *not* a property of PCGrad: a later projection
  can re-create a conflict removed by an earlier one (a witness instance is kept below).
* Frank–Wolfe (the K > 10 solver) reaches the enumerated optimum within its certificate.

Each theorem test has a sensitivity check: a deliberately broken variant violates it.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

import jaxalign.multiobjective as mo
from theory_tests.strategies import examples

# A small set of shapes keeps the number of compilations (and the suite) small;
# D < K gives rank-deficient Gram matrices.
SHAPES = [(2, 3), (3, 2), (4, 6)]


def _instance(seed: int, shape, *, conflict_scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k, d = shape
    common = rng.normal(size=d) * rng.uniform(0.0, 2.0)
    g = common + conflict_scale * rng.normal(size=(k, d)) * rng.uniform(0.2, 1.5, size=(k, 1))
    return g * 10.0 ** rng.uniform(-2, 2)


# Jitted once per shape: eager op-by-op dispatch would dominate the suite's run time.
_cagrad = jax.jit(mo.cagrad_direction)
_mgda = jax.jit(mo.mgda_direction)
_raco = jax.jit(mo.raco_direction, static_argnames="clip")
_dual = jax.jit(mo.cagrad_dual_weights)
_min_norm = jax.jit(mo.min_norm_weights)

instances = st.tuples(st.integers(0, 2**31 - 1), st.sampled_from(SHAPES))
radii = st.floats(0.0, 0.95)


# ----------------------------------------------------------------------------- CAGrad


def _scipy_primal(g: np.ndarray, c: float) -> float:
    """max_d min_i ⟨g_i, d⟩ s.t. ‖d − g0‖ ≤ c‖g0‖, solved with SLSQP over (d, t)."""
    g0 = g.mean(0)
    r = c * np.linalg.norm(g0)
    dim = g.shape[1]
    scale = np.max(np.sum(g * g, axis=1))
    x0 = np.concatenate([g0, [np.min(g @ g0)]]) / np.sqrt(scale)
    gs = g / np.sqrt(scale)
    g0s, rs = g0 / np.sqrt(scale), r / np.sqrt(scale)
    cons = [
        {"type": "ineq", "fun": lambda x: gs @ x[:dim] - x[dim]},
        {"type": "ineq", "fun": lambda x: rs**2 - np.sum((x[:dim] - g0s) ** 2)},
    ]
    res = optimize.minimize(
        lambda x: -x[dim],
        x0,
        jac=lambda x: np.concatenate([np.zeros(dim), [-1.0]]),
        constraints=cons,
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    d = res.x[:dim] * np.sqrt(scale)
    # Project back into the ball to score a feasible point.
    off = d - g0
    nrm = np.linalg.norm(off)
    if nrm > r:
        d = g0 + off * (r / nrm)
    return float(np.min(g @ d))


def _check_primal_optimal(g: np.ndarray, d: np.ndarray, c: float, dual_value: float) -> None:
    g0 = g.mean(0)
    r = c * np.linalg.norm(g0)
    scale = np.max(np.sum(g * g, axis=1))
    assert np.linalg.norm(d - g0) <= r * (1 + 1e-9) + 1e-12 * np.sqrt(scale)
    primal = float(np.min(g @ d))
    # Weak duality makes min_i ⟨g_i, d⟩ ≤ F(w) for every w; equality certifies optimality.
    assert abs(primal - dual_value) <= 1e-9 * scale
    assert primal >= _scipy_primal(g, c) - 1e-7 * scale


@given(instances, radii)
def test_cagrad_direction_attains_primal_optimum(inst, c):
    g = _instance(*inst)
    d, info = _cagrad(jnp.asarray(g), c)
    g0 = g.mean(0)
    gw = np.asarray(info.weights) @ g
    dual_value = gw @ g0 + c * np.linalg.norm(g0) * np.linalg.norm(gw)  # F(w*)
    _check_primal_optimal(g, np.asarray(d), c, float(dual_value))


@settings(max_examples=examples(15))
@given(instances, radii)
def test_cagrad_dual_matches_scipy_slsqp(inst, c):
    g = _instance(*inst)
    k = g.shape[0]
    gram = g @ g.T
    b = np.full(k, 1.0 / k)
    r = c * np.sqrt(b @ gram @ b)

    def f(w):
        return w @ gram @ b + r * np.sqrt(max(w @ gram @ w, 0.0) + 1e-30)

    def feasible(w):  # SLSQP may end slightly off the simplex, below the true minimum
        w = np.clip(w, 0, None)
        return w / w.sum()

    best = min(
        f(
            feasible(
                optimize.minimize(
                    f,
                    w0,
                    bounds=[(0, 1)] * k,
                    constraints={"type": "eq", "fun": lambda w: np.sum(w) - 1},
                    method="SLSQP",
                    options={"ftol": 1e-14, "maxiter": 500},
                ).x
            )
        )
        for w0 in (b, np.eye(k)[0])
    )
    sol = _dual(jnp.asarray(gram), jnp.asarray(b), c)
    scale = np.max(np.diag(gram))
    assert float(sol.objective) <= best + 1e-9 * scale
    assert float(sol.gap) <= 1e-9 * scale


def test_cagrad_primal_check_has_teeth():
    """Uniform weights or a flipped correction do not attain the primal optimum."""
    c = 0.5
    violations = 0
    for seed in range(10):
        g = _instance(seed, (3, 8), conflict_scale=2.0)
        g0 = g.mean(0)
        r = c * np.linalg.norm(g0)
        sol = _dual(jnp.asarray(g @ g.T), jnp.full((3,), 1 / 3), c)
        gw = np.asarray(sol.weights) @ g
        flipped = g0 - r * gw / np.linalg.norm(gw)
        with pytest.raises(AssertionError):
            _check_primal_optimal(g, flipped, c, float(sol.objective))
        uniform = g0 + r * g0 / np.linalg.norm(g0)
        try:
            _check_primal_optimal(g, uniform, c, float(sol.objective))
        except AssertionError:
            violations += 1
    assert violations >= 8


@given(instances)
def test_cagrad_with_c_zero_is_gradient_descent(inst):
    g = _instance(*inst)
    d, _ = _cagrad(jnp.asarray(g), 0.0)
    np.testing.assert_allclose(np.asarray(d), g.mean(0), rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------------- MGDA


def _scipy_min_norm(gram: np.ndarray) -> float:
    k = gram.shape[0]
    res = optimize.minimize(
        lambda w: w @ gram @ w,
        np.full(k, 1.0 / k),
        jac=lambda w: 2 * gram @ w,
        bounds=[(0, 1)] * k,
        constraints={"type": "eq", "fun": lambda w: np.sum(w) - 1},
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 500},
    )
    return float(res.fun)


def _check_mgda_bound(g: np.ndarray, d: np.ndarray) -> None:
    scale = np.max(np.sum(g * g, axis=1))
    assert np.min(g @ d) >= d @ d - 1e-10 * scale


@given(instances)
def test_mgda_direction_is_min_norm_and_decreases_every_objective(inst):
    g = _instance(*inst)
    d, info = _mgda(jnp.asarray(g))
    d = np.asarray(d)
    _check_mgda_bound(g, d)
    gram = g @ g.T
    scale = np.max(np.diag(gram))
    assert d @ d <= _scipy_min_norm(gram) + 1e-10 * scale
    assert np.all(np.asarray(info.cosines) >= -1e-9)
    if g.shape[0] == 2:  # closed form
        g1, g2 = g
        w1 = np.clip((g2 - g1) @ g2 / np.sum((g1 - g2) ** 2), 0, 1)
        np.testing.assert_allclose(d, w1 * g1 + (1 - w1) * g2, atol=1e-10 * np.sqrt(scale))


@given(instances, st.integers(0, 2**31 - 1))
def test_mgda_direction_vanishes_at_pareto_stationary_points(inst, seed):
    seed0, (k, dim) = inst
    g = _instance(seed0, (k, dim))
    lam = np.random.default_rng(seed).dirichlet(np.ones(k))
    # Make 0 = Σ λ_i g_i: the point is Pareto-stationary.
    g[-1] = -(lam[:-1] @ g[:-1]) / lam[-1]
    d, _ = _mgda(jnp.asarray(g))
    scale = np.sqrt(np.max(np.sum(g * g, axis=1)))
    assert np.linalg.norm(np.asarray(d)) <= 1e-7 * scale
    # ... while the average gradient does not vanish there (generic instance).
    assert np.linalg.norm(g.mean(0)) > 1e-3 * scale


def test_mgda_bound_has_teeth():
    """The average gradient violates ⟨g_i, d⟩ ≥ ‖d‖² on conflicting instances."""
    violations = 0
    for seed in range(20):
        g = _instance(seed, (3, 8), conflict_scale=2.0)
        try:
            _check_mgda_bound(g, g.mean(0))
        except AssertionError:
            violations += 1
    assert violations >= 10


# ----------------------------------------------------------------------------- quadratics


def _quadratics(seed: int, k: int, dim: int):
    """K convex quadratics L_i(θ) = ½(θ − a_i)ᵀA_i(θ − a_i) ≥ 0 with conflicting minimisers."""
    rng = np.random.default_rng(seed)
    mats = []
    for _ in range(k):
        q = rng.normal(size=(dim, dim))
        mats.append(q @ q.T / dim + 0.05 * np.eye(dim))
    centers = rng.normal(size=(k, dim)) * 3.0
    return np.stack(mats), centers


def _losses_and_grads(mats, centers, theta):
    diff = theta[None, :] - centers
    grads = np.einsum("kij,kj->ki", mats, diff)
    losses = 0.5 * np.einsum("ki,ki->k", diff, grads)
    return losses, grads


def _weighted_optimum(mats, centers, w):
    h = np.einsum("k,kij->ij", w, mats)
    theta = np.linalg.solve(h, np.einsum("k,kij,kj->i", w, mats, centers))
    losses, _ = _losses_and_grads(mats, centers, theta)
    return float(w @ losses), float(np.linalg.eigvalsh(h).max())


def _run(direction_fn, mats, centers, w, step, theta0, steps):
    theta = theta0.copy()
    values, sq_norms, pareto = [], [], []
    for _ in range(steps):
        losses, g = _losses_and_grads(mats, centers, theta)
        values.append(float(w @ losses))
        sq_norms.append(float(np.sum((w @ g) ** 2)))
        pareto.append(float(_min_norm(jnp.asarray(g @ g.T)).objective))
        theta = theta - step * np.asarray(direction_fn(g))
    losses, _ = _losses_and_grads(mats, centers, theta)
    values.append(float(w @ losses))
    return np.array(values), np.array(sq_norms), np.array(pareto)


def _check_descent(values, sq_norms, step, c):
    decrease = values[:-1] - values[1:]
    guaranteed = step * (1 - c * c) * sq_norms / 2
    assert np.all(decrease >= guaranteed - 1e-9 * (1 + np.abs(values[:-1])))


@settings(max_examples=examples(10))
@given(st.integers(0, 2**31 - 1), st.sampled_from([(2, 3), (4, 6)]), radii)
def test_cagrad_descent_lemma_and_gradient_sum_bound(seed, shape, c):
    k, dim = shape
    mats, centers = _quadratics(seed, k, dim)
    w = np.full(k, 1.0 / k)
    l_star, smooth = _weighted_optimum(mats, centers, w)
    step = 1.0 / smooth
    theta0 = np.random.default_rng(seed + 1).normal(size=dim) * 5
    steps = 60
    values, sq_norms, _ = _run(
        lambda g: _cagrad(jnp.asarray(g), c)[0], mats, centers, w, step, theta0, steps
    )
    _check_descent(values, sq_norms, step, c)
    bound = 2 * (values[0] - l_star) / (step * (1 - c * c))
    assert np.sum(sq_norms) <= bound * (1 + 1e-9)
    # Scaling: T · min_{t<T} ‖∇L_0‖² stays below the same constant for every T.
    for t in (1, 5, 20, 60):
        assert t * np.min(sq_norms[:t]) <= bound * (1 + 1e-9)


def test_cagrad_descent_lemma_has_teeth():
    """Dropping the 1/‖g_w‖ normalisation leaves the ball and breaks the lemma."""
    c = 0.5
    mats, centers = _quadratics(3, 2, 3)
    mats, centers = mats * 20.0, centers  # large gradients: ‖g_w‖ ≫ 1
    w = np.full(2, 0.5)
    _, smooth = _weighted_optimum(mats, centers, w)

    def broken(g):
        g0 = g.mean(0)
        sol = _dual(jnp.asarray(g @ g.T), jnp.asarray(w), c)
        return g0 + c * np.linalg.norm(g0) * (np.asarray(sol.weights) @ g)

    theta0 = np.array([4.0, -3.0, 2.0])
    values, sq_norms, _ = _run(broken, mats, centers, w, 1.0 / smooth, theta0, 5)
    with pytest.raises(AssertionError):
        _check_descent(values, sq_norms, 1.0 / smooth, c)


# ----------------------------------------------------------------------------- RACO


@settings(max_examples=examples(10))
@given(st.integers(0, 2**31 - 1), st.sampled_from([(2, 3), (3, 2)]), radii)
def test_raco_theorem_3_1_bound_on_quadratics(seed, shape, c):
    k, dim = shape
    mats, centers = _quadratics(seed, k, dim)
    w = np.random.default_rng(seed + 7).dirichlet(np.ones(k))
    l_star, smooth = _weighted_optimum(mats, centers, w)
    step = 1.0 / smooth
    theta0 = np.random.default_rng(seed + 2).normal(size=dim) * 5
    steps = 40
    values, sq_norms, pareto = _run(
        lambda g: _raco(jnp.asarray(g), c, jnp.asarray(w))[0],
        mats,
        centers,
        w,
        step,
        theta0,
        steps,
    )
    _check_descent(values, sq_norms, step, c)
    assert l_star >= 0
    for t in (1, 4, 16, 40):
        # Thm 3.1 with L_w* ≥ 0 (the paper's form) and the tighter L_w(θ0) − L_w*.
        bound = 2 * values[0] / (step * (1 - c * c) * t)
        tight = 2 * (values[0] - l_star) / (step * (1 - c * c) * t)
        assert np.min(sq_norms[:t]) <= tight * (1 + 1e-9) <= bound * (1 + 1e-9)
        # The Pareto-criticality measure min_p ‖G_p‖² is below ‖∇L_w‖².
        assert np.min(pareto[:t]) <= np.min(sq_norms[:t]) * (1 + 1e-9) + 1e-12


def test_raco_theorem_3_1_check_has_teeth():
    c = 0.5
    mats, centers = _quadratics(5, 2, 3)
    mats = mats * 20.0
    w = np.array([0.3, 0.7])
    _, smooth = _weighted_optimum(mats, centers, w)

    def broken(g):  # G0 = g0 + c‖g0‖ G̃, missing the division by ‖G̃‖
        g0 = w @ g
        p = np.asarray(_dual(jnp.asarray(g @ g.T), jnp.asarray(w), c).weights)
        return g0 + c * np.linalg.norm(g0) * (np.minimum(p, w) @ g)

    values, sq_norms, _ = _run(broken, mats, centers, w, 1.0 / smooth, np.ones(3) * 4, 5)
    with pytest.raises(AssertionError):
        _check_descent(values, sq_norms, 1.0 / smooth, c)


def _gamma(rho, c, lw, eta):
    return 1 + c * rho - (lw * eta / 2) * (1 + c * c + 2 * c * rho)


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _raco_quantities(g, w, c, clip_fn=np.minimum):
    p = np.asarray(_dual(jnp.asarray(g @ g.T), jnp.asarray(w), c).weights)
    g0 = w @ g
    return _cos(g0, p @ g), _cos(g0, clip_fn(p, w) @ g)


def _one_step_decrease(g, w, c, lw, eta, clip):
    """Exact decrease of L_w(θ) = Σ w_i (L/2)‖θ − a_i‖² with ∇L_i(θ) = g_i (Hessian L·I)."""
    theta = np.zeros(g.shape[1])
    centers = theta - g / lw
    d = np.asarray(_raco(jnp.asarray(g), c, jnp.asarray(w), clip=clip)[0])

    def loss(x):
        return float(w @ (0.5 * lw * np.sum((x - centers) ** 2, axis=1)))

    return loss(theta) - loss(theta - eta * d), float(np.sum((w @ g) ** 2))


def test_raco_worked_example_reproduces_exactly():
    # g1 = [1, −4], g2 = [−1, 1], embedded in R³ by a zero coordinate (same numbers,
    # and the shape the other RACO tests already compiled).
    g = np.array([[1.0, -4.0, 0.0], [-1.0, 1.0, 0.0]])
    w = np.array([0.2, 0.8])
    c, lw, eta = 0.5, 3.0, 0.1
    rho, rho_t = _raco_quantities(g, w, c)
    assert rho == pytest.approx(0.34578, abs=5e-6)
    assert rho_t == pytest.approx(0.94333, abs=5e-6)
    assert _gamma(rho, c, lw, eta) == pytest.approx(0.93352, abs=5e-6)
    assert _gamma(rho_t, c, lw, eta) == pytest.approx(1.14267, abs=5e-6)
    for clip, r in ((False, rho), (True, rho_t)):
        dec, g0sq = _one_step_decrease(g, w, c, lw, eta, clip)
        assert dec == pytest.approx(eta * g0sq * _gamma(r, c, lw, eta), rel=1e-13)


@given(
    st.integers(0, 2**31 - 1),
    st.just(3),
    radii,
    st.floats(0.1, 5.0),
    st.floats(0.05, 1.0),
)
def test_raco_theorem_3_2_gamma_identity(seed, dim, c, lw, leta):
    eta = leta / lw  # L_w η ∈ [0.05, 1]
    g = _instance(seed, (2, dim), conflict_scale=2.0)
    w = np.random.default_rng(seed + 3).dirichlet(np.ones(2))
    rho, rho_t = _raco_quantities(g, w, c)
    # The descent guarantee is exact on an isotropic quadratic: decrease = η‖g0‖²Γ(ρ).
    scale = np.max(np.sum(g * g, axis=1))
    for clip, r in ((False, rho), (True, rho_t)):
        dec, g0sq = _one_step_decrease(g, w, c, lw, eta, clip)
        assert abs(dec - eta * g0sq * _gamma(r, c, lw, eta)) <= 1e-11 * eta * scale
    # The gain of clipping, measured on the two exact decreases (not on Γ itself), is
    # η‖g0‖² c(1 − L_wη)(ρ̃ − ρ); for two objectives clipping never reduces alignment with
    # g0, so with L_wη ≤ 1 it never hurts.
    clipped, g0sq = _one_step_decrease(g, w, c, lw, eta, True)
    unclipped, _ = _one_step_decrease(g, w, c, lw, eta, False)
    want = eta * g0sq * c * (1 - lw * eta) * (rho_t - rho)
    assert abs((clipped - unclipped) - want) <= 1e-11 * eta * scale
    assert rho_t >= rho - 1e-12
    assert clipped - unclipped >= -1e-11 * eta * scale


def test_raco_clipping_gain_check_has_teeth():
    """Clipping by the wrong weights loses alignment; pairing the step with ρ instead of ρ̃
    mispredicts the exact decrease."""
    worse = 0
    c, lw, eta = 0.5, 3.0, 0.1
    for seed in range(60):
        g = _instance(seed, (2, 3), conflict_scale=2.0)
        w = np.random.default_rng(seed + 3).dirichlet(np.ones(2))
        rho, rho_bad = _raco_quantities(g, w, c, clip_fn=lambda p, v: np.minimum(p, v[::-1]))
        worse += rho_bad < rho - 1e-6
    assert worse >= 3
    g = np.array([[1.0, -4.0, 0.0], [-1.0, 1.0, 0.0]])
    w = np.array([0.2, 0.8])
    rho, _ = _raco_quantities(g, w, c)
    dec, g0sq = _one_step_decrease(g, w, c, lw, eta, clip=True)
    assert abs(dec - eta * g0sq * _gamma(rho, c, lw, eta)) > 1e-3


# ----------------------------------------------------------------------------- PCGrad

_pcgrad = jax.jit(mo.pcgrad_direction)


def _pcgrad_row(g: np.ndarray, i: int, order) -> np.ndarray:
    """g_i^PC for one order of the other objectives (Yu et al. 2020, Algorithm 1)."""
    v = g[i].copy()
    for j in order:
        inner = v @ g[j]
        if inner < 0:
            v = v - inner / (g[j] @ g[j]) * g[j]
    return v


def pcgrad_oracle_distance(g: np.ndarray, d: np.ndarray) -> float:
    """min over per-row projection orders of ‖d − Σ_i g_i^PC‖ (the library draws the orders
    at random, so the direction must be one of these sums)."""
    k = g.shape[0]
    options = [
        np.stack([_pcgrad_row(g, i, o) for o in itertools.permutations(set(range(k)) - {i})])
        for i in range(k)
    ]
    total = np.zeros((1,) * k + d.shape)  # every combination of one option per row
    for i, opts in enumerate(options):
        shape = [1] * k
        shape[i] = len(opts)
        total = total + opts.reshape(*shape, -1)
    return float(np.min(np.linalg.norm(total - d, axis=-1)))


@settings(max_examples=examples(12))
@given(instances, st.integers(0, 2**31 - 1))
def test_pcgrad_direction_is_a_sum_of_projected_gradients(inst, key_seed):
    g = _instance(*inst)
    d, info = _pcgrad(jnp.asarray(g), key=jax.random.key(key_seed))
    d = np.asarray(d)
    scale = np.sqrt(np.max(np.sum(g * g, axis=1)))
    assert pcgrad_oracle_distance(g, d) <= 1e-10 * scale
    np.testing.assert_allclose(np.asarray(info.coefficients) @ g, d, atol=1e-10 * scale)
    if g.shape[0] == 2:  # each projected gradient is orthogonal to, or agrees with, the other
        assert np.min(g @ d) >= -1e-10 * scale**2
    if np.all(g @ g.T >= 0):  # nothing to project
        np.testing.assert_allclose(d, g.sum(0), atol=1e-10 * scale)


def test_pcgrad_oracle_rejects_wrong_projections():
    """Projecting agreeing pairs, testing conflicts on the original g_i, or dividing by
    ‖g_i‖² instead of ‖g_j‖² all leave the set of PCGrad directions."""
    g = np.array([[1.0, 0.2, -0.5], [-0.8, 1.0, 0.3], [-0.2, -0.9, 1.0]])
    assert (
        pcgrad_oracle_distance(g, np.asarray(_pcgrad(jnp.asarray(g), key=jax.random.key(0))[0]))
        < 1e-12
    )

    def variant(rule):
        rows = []
        for i in range(3):
            v = g[i].copy()
            for j in [x for x in range(3) if x != i]:
                v = rule(v, g[i], g[j])
            rows.append(v)
        return np.sum(rows, axis=0)

    agreeing = lambda v, gi, gj: v - (v @ gj) / (gj @ gj) * gj if v @ gj > 0 else v
    original = lambda v, gi, gj: v - (gi @ gj) / (gj @ gj) * gj if gi @ gj < 0 else v
    own_norm = lambda v, gi, gj: v - (v @ gj) / (gi @ gi) * gj if v @ gj < 0 else v
    for rule in (agreeing, original, own_norm):
        assert pcgrad_oracle_distance(g, variant(rule)) > 1e-3


def test_pcgrad_projected_gradients_can_conflict_for_three_objectives():
    """A witness that the K = 2 property does not extend: for every projection order some
    projected gradient still conflicts with another objective's gradient."""
    g = np.array([[1.0, 0.0], [-0.9, 0.5], [-0.3, -1.0]])
    for orders in itertools.product(
        *(itertools.permutations(set(range(3)) - {i}) for i in range(3))
    ):
        rows = np.stack([_pcgrad_row(g, i, orders[i]) for i in range(3)])
        assert np.min(rows @ g.T - np.diag(np.diag(rows @ g.T))) < -1e-3


# ----------------------------------------------------------------------------- Frank–Wolfe

_dual_fw = jax.jit(
    lambda gram, b, c: mo.cagrad_dual_weights(gram, b, c, method="frank_wolfe", num_iters=3000)
)
_min_norm_fw = jax.jit(lambda gram: mo.min_norm_weights(gram, method="frank_wolfe", num_iters=3000))


@settings(max_examples=examples(5))
@given(st.integers(0, 2**31 - 1), radii)
def test_frank_wolfe_reaches_the_enumerated_optimum(seed, c):
    g = _instance(seed, (4, 6))
    gram = jnp.asarray(g @ g.T)
    scale = float(np.max(np.diag(g @ g.T)))
    b = jnp.full((4,), 0.25)
    fw, exact = _dual_fw(gram, b, c), _dual(gram, b, c)
    assert float(fw.objective) <= float(exact.objective) + 1e-4 * scale
    assert float(fw.objective) - float(fw.gap) <= float(exact.objective) + 1e-9 * scale
    fw, exact = _min_norm_fw(gram), _min_norm(gram)
    assert float(fw.objective) <= float(exact.objective) + 1e-4 * scale
