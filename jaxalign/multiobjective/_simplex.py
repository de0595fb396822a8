"""On-device solvers for the small simplex problems behind MGDA, CAGrad and RACO.

All three reduce to one convex problem over the probability simplex Δ_K, written
with the Gram matrix ``G`` of the K gradients and an *anchor* ``b ∈ Δ_K``
(``g_0 = Σ_i b_i g_i``):

.. math::

    F(w) = w^\\top G b + r \\sqrt{w^\\top G w}
         = \\langle g_w, g_0 \\rangle + r \\lVert g_w \\rVert,
    \\qquad g_w = \\textstyle\\sum_i w_i g_i,

* CAGrad / RACO dual: ``r = c‖g_0‖`` (Liu et al. 2021, eq. 4);
* MGDA min-norm point: ``b = 0, r = 1`` (minimising ``‖g_w‖``).

``F`` depends on ``w`` only through ``g_w``, so some minimiser has an affinely
independent support ``S``. On a fixed support the optimality conditions
``(G b)_S + s (G w)_S = μ 1`` with ``s = r/‖g_w‖`` are *linear* in ``(v, μ) = (s w_S, μ)``:

.. math::

    \\begin{pmatrix} G_{SS} & -1 \\\\ 1^\\top & 0 \\end{pmatrix}
    \\begin{pmatrix} v \\\\ μ \\end{pmatrix}
    = \\begin{pmatrix} -(Gb)_S \\\\ s \\end{pmatrix},
    \\qquad v = v_0 + s v_1,

and ``v_0 ⊥_G v_1``, so ``‖g_v‖ = r`` gives ``s² = (r² − v_0ᵀGv_0) / v_1ᵀGv_1`` in
closed form (``v_1`` is the affine min-norm point of the support). The
``enumerate`` method builds this candidate for all ``2^K − 1`` supports in one
batched solve, projects each onto Δ_K, evaluates ``F`` exactly and keeps the best:
exact up to round-off for K ≤ 10 (1023 systems of size 11), with no loop and no
host round trip. K = 2 is always solved in closed form (the minimum of ``F`` on the
segment between the two vertices, below). For larger K, ``frank_wolfe`` runs a static number of
pairwise Frank–Wolfe steps (mass moves from the worst vertex in the support to the
best vertex) with exact line search, in closed form for ``F`` on a segment; its
suboptimality is O(1/t) in general and decays linearly on well-conditioned
instances.

Both report the Frank–Wolfe duality gap ``⟨∇F(w), w⟩ − min_i ∇F(w)_i``, a
certified upper bound on ``F(w) − min F``: that is the solver's stated tolerance.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import _checks
from jaxalign.types import Array, Float

SolverMethod = Literal["auto", "enumerate", "frank_wolfe"]
_METHODS = ("auto", "enumerate", "frank_wolfe")
# Largest K solved by support enumeration under method="auto" (2^K − 1 batched solves).
MAX_ENUMERATE = 10


class SimplexSolution(NamedTuple):
    """Result of a simplex solve.

    Attributes:
      weights: ``[K]`` point of the simplex.
      objective: ``[]`` objective at ``weights`` (see the solver's docstring).
      gap: ``[]`` Frank–Wolfe duality gap at ``weights``: a certified bound on the
        objective's distance to its minimum (≈ round-off for ``enumerate``).
    """

    weights: Float[Array, " K"]
    objective: Float[Array, ""]
    gap: Float[Array, ""]


def _tiny(dtype) -> float:
    return float(np.finfo(dtype).tiny) * 1e4


@functools.cache
def _support_masks(k: int) -> np.ndarray:
    ids = np.arange(1, 2**k)
    return ((ids[:, None] >> np.arange(k)) & 1).astype(bool)


def _objective(gram, gram_b, r, w):
    quad = jnp.maximum(w @ gram @ w, 0)
    return w @ gram_b + r * jnp.sqrt(quad)


def _enumerate(gram: jax.Array, anchor: jax.Array, r: jax.Array) -> jax.Array:
    k = gram.shape[0]
    dtype = gram.dtype
    masks = jnp.asarray(_support_masks(k), dtype)  # [N, K]
    n = masks.shape[0]
    off = jnp.asarray(1, dtype) - masks
    gram_b = gram @ anchor
    top = (
        masks[:, :, None] * masks[:, None, :] * gram[None]
        + off[:, :, None] * jnp.eye(k, dtype=dtype)[None]
    )
    kkt = jnp.concatenate(
        [
            jnp.concatenate([top, -masks[:, :, None]], axis=2),
            jnp.concatenate([masks[:, None, :], jnp.zeros((n, 1, 1), dtype)], axis=2),
        ],
        axis=1,
    )  # [N, K+1, K+1]
    rhs0 = jnp.concatenate([-masks * gram_b[None, :], jnp.zeros((n, 1), dtype)], axis=1)
    rhs1 = jnp.concatenate([jnp.zeros((n, k), dtype), jnp.ones((n, 1), dtype)], axis=1)
    sol = jnp.linalg.solve(kkt, jnp.stack([rhs0, rhs1], axis=-1))  # [N, K+1, 2]
    # Singular systems (affinely dependent supports) give inf/nan: drop those.
    sol = jnp.where(jnp.isfinite(sol), sol, 0)
    v0, v1 = sol[:, :k, 0], sol[:, :k, 1]
    a = jnp.einsum("nk,kl,nl->n", v1, gram, v1)
    c0 = jnp.einsum("nk,kl,nl->n", v0, gram, v0)
    tiny = _tiny(dtype)
    s2 = (r * r - c0) / jnp.where(a > tiny, a, 1)
    ok = (a > tiny) & (s2 > tiny)
    inv_s = jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, s2, 1)), 0)
    w = v1 + inv_s[:, None] * v0
    w = jnp.clip(w, 0) * masks
    total = jnp.sum(w, axis=1)
    valid = total > tiny
    w = w / jnp.where(valid, total, 1)[:, None]
    quad = jnp.maximum(jnp.einsum("nk,kl,nl->n", w, gram, w), 0)
    f = w @ gram_b + r * jnp.sqrt(quad)
    f = jnp.where(valid & jnp.isfinite(f), f, jnp.inf)
    return w[jnp.argmin(f)]


def _segment_step(alpha, a, b, p, r, gamma_max, dtype):
    """argmin over γ ∈ [0, γ_max] of αγ + r sqrt(Aγ² + 2Bγ + C) (convex; closed form).

    With t = Aγ + B and Δ = AC − B² ≥ 0, the stationarity condition
    α + r t / sqrt((t² + Δ)/A) = 0 gives t² = α²Δ / (r²A − α²), sign(t) = −sign(α).
    """
    tiny = _tiny(dtype)
    delta = jnp.maximum(a * p - b * b, 0)
    denom = r * r * a - alpha * alpha
    t = -jnp.sign(alpha) * jnp.abs(alpha) * jnp.sqrt(delta / jnp.where(denom > 0, denom, 1))
    interior = jnp.where((denom > 0) & (a > tiny), (t - b) / jnp.where(a > tiny, a, 1), 0)
    gammas = jnp.stack([jnp.zeros((), dtype), gamma_max, jnp.clip(interior, 0, gamma_max)])
    phi = gammas * alpha + r * jnp.sqrt(jnp.maximum(a * gammas**2 + 2 * b * gammas + p, 0))
    return gammas[jnp.argmin(phi)]


def _two_objectives(gram, anchor, r) -> jax.Array:
    """K = 2 in closed form: F on the segment w = e_2 + γ(e_1 − e_2), γ ∈ [0, 1]."""
    dtype = gram.dtype
    gram_b = gram @ anchor
    a = jnp.maximum(gram[0, 0] - 2 * gram[0, 1] + gram[1, 1], 0)
    b = gram[0, 1] - gram[1, 1]
    gamma = _segment_step(gram_b[0] - gram_b[1], a, b, gram[1, 1], r, jnp.ones((), dtype), dtype)
    return jnp.stack([gamma, 1 - gamma])


def _frank_wolfe(gram, anchor, r, num_iters: int) -> jax.Array:
    """Pairwise Frank–Wolfe: move mass from the worst support vertex to the best vertex."""
    k = gram.shape[0]
    dtype = gram.dtype
    tiny = _tiny(dtype)
    gram_b = gram @ anchor
    uniform = jnp.full((k,), 1.0 / k, dtype)
    w0 = jnp.where(jnp.sum(anchor) > 0.5, anchor, uniform)
    eye = jnp.eye(k, dtype=dtype)

    def step(_, w):
        gw = gram @ w
        p = jnp.maximum(w @ gw, 0)
        grad = gram_b + r * gw / jnp.maximum(jnp.sqrt(p), tiny)
        j = jnp.argmin(grad)  # toward
        i = jnp.argmax(jnp.where(w > 0, grad, -jnp.inf))  # away (in the support)
        # F on w + γ(e_j − e_i), γ ∈ [0, w_i]: αγ + r sqrt(Aγ² + 2Bγ + C) + const.
        a = jnp.maximum(gram[j, j] - 2 * gram[i, j] + gram[i, i], 0)
        b = gw[j] - gw[i]
        alpha = gram_b[j] - gram_b[i]
        gamma = _segment_step(alpha, a, b, p, r, w[i], dtype)
        return w + gamma * (eye[j] - eye[i])

    return jax.lax.fori_loop(0, num_iters, step, w0)


def _fw_gap(gram, anchor, r, w):
    gw = gram @ w
    norm = jnp.sqrt(jnp.maximum(w @ gw, 0))
    tiny = _tiny(gram.dtype)
    # At g_w = 0 the zero vector is a subgradient of ‖g_w‖.
    grad = gram @ anchor + jnp.where(norm > tiny, r / jnp.maximum(norm, tiny), 0) * gw
    return jnp.maximum(w @ grad - jnp.min(grad), 0)


def _check_gram(gram) -> jax.Array:
    gram = _checks.as_float_array("gram", gram, ndim=2)
    if gram.shape[0] != gram.shape[1] or gram.shape[0] < 1:
        raise ValueError(f"gram must be a square [K, K] matrix with K >= 1, got {gram.shape}")
    _checks.check_finite("gram", gram)
    return gram


def check_method(method: str, num_iters: int) -> None:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if int(num_iters) < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")


@functools.partial(jax.jit, static_argnames=("radius_is_absolute", "method", "num_iters"))
def solve_simplex(gram, anchor, c_or_r, *, radius_is_absolute, method, num_iters):
    """Minimises F on the normalised Gram matrix; returns weights."""
    k = gram.shape[0]
    dtype = gram.dtype
    scale = jnp.max(jnp.diagonal(gram))
    degenerate = ~(scale > _tiny(dtype))
    g = gram / jnp.where(degenerate, 1, scale)
    if radius_is_absolute:
        r = jnp.asarray(c_or_r, dtype)
    else:  # r = c ‖g_0‖ in normalised units
        r = jnp.asarray(c_or_r, dtype) * jnp.sqrt(jnp.maximum(anchor @ g @ anchor, 0))
    if method == "auto":
        method = "enumerate" if k <= MAX_ENUMERATE else "frank_wolfe"
    if k == 1:
        w = jnp.ones((1,), dtype)
    elif k == 2:
        w = _two_objectives(g, anchor, r)
    elif method == "enumerate":
        w = _enumerate(g, anchor, r)
    else:
        w = _frank_wolfe(g, anchor, r, num_iters)
    fallback = jnp.where(jnp.sum(anchor) > 0.5, anchor, jnp.full((k,), 1.0 / k, dtype))
    return jnp.where(degenerate, fallback, w)


def cagrad_dual_weights(
    gram: Float[Array, "K K"],
    anchor_weights: Float[Array, " K"],
    c: float,
    *,
    method: SolverMethod = "auto",
    num_iters: int = 1000,
) -> SimplexSolution:
    r"""Solves the CAGrad dual on the simplex, on device.

    Why: CAGrad's primal ``max_d min_i ⟨g_i, d⟩ s.t. ‖d − g_0‖ ≤ c‖g_0‖`` lives in
    parameter space; its dual is a K-dimensional convex problem.

    .. math::

        w^\star = \arg\min_{w \in \Delta_K}\; g_w^\top g_0 + c\,\lVert g_0\rVert\,\lVert g_w\rVert,
        \qquad g_0 = \textstyle\sum_i b_i g_i,

    and ``d = g_0 + (c‖g_0‖/‖g_w*‖) g_w*`` attains the primal optimum, with
    ``min_i ⟨g_i, d⟩ = F(w*)`` (strong duality).

    Args:
      gram: ``[K, K]`` Gram matrix of the gradients (:func:`gram_matrix`).
      anchor_weights: ``[K]`` simplex weights ``b`` of the anchor ``g_0`` (uniform
        ``1/K`` for CAGrad, the user weights for RACO).
      c: radius factor ``c ≥ 0``.
      method: ``"enumerate"`` (exact, all supports), ``"frank_wolfe"`` (``num_iters``
        pairwise Frank–Wolfe steps) or ``"auto"`` (enumerate for K ≤ 10).
      num_iters: Frank–Wolfe iterations (static).

    Returns:
      :class:`SimplexSolution` with ``objective = F(w)`` and its duality ``gap``.

    References:
      Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task
      Learning", NeurIPS 2021, eq. (4) and Appendix A.
    """
    gram = _check_gram(gram)
    k = gram.shape[0]
    anchor = _checks.as_float_array("anchor_weights", anchor_weights, ndim=1).astype(gram.dtype)
    if anchor.shape != (k,):
        raise ValueError(f"anchor_weights has shape {anchor.shape}; expected ({k},) for K={k}")
    check_simplex("anchor_weights", anchor)
    _checks.check_nonnegative("c", c)
    check_method(method, num_iters)
    return _dual_solution(gram, anchor, c, method=method, num_iters=int(num_iters))


@functools.partial(jax.jit, static_argnames=("method", "num_iters"))
def _dual_solution(gram, anchor, c, *, method, num_iters) -> SimplexSolution:
    w = solve_simplex(gram, anchor, c, radius_is_absolute=False, method=method, num_iters=num_iters)
    r = jnp.asarray(c, gram.dtype) * jnp.sqrt(jnp.maximum(anchor @ gram @ anchor, 0))
    gram_b = gram @ anchor
    return SimplexSolution(w, _objective(gram, gram_b, r, w), _fw_gap(gram, anchor, r, w))


def min_norm_weights(
    gram: Float[Array, "K K"],
    *,
    method: SolverMethod = "auto",
    num_iters: int = 1000,
) -> SimplexSolution:
    r"""The minimum-norm point of the convex hull of the gradients (MGDA's subproblem).

    .. math::

        w^\star = \arg\min_{w\in\Delta_K} \lVert \textstyle\sum_i w_i g_i \rVert^2
                = \arg\min_{w\in\Delta_K} w^\top G w

    For K = 2 this is ``w_1 = clip((g_2 − g_1)·g_2 / ‖g_1 − g_2‖², 0, 1)``.

    Args:
      gram: ``[K, K]`` Gram matrix.
      method, num_iters: as in :func:`cagrad_dual_weights`.

    Returns:
      :class:`SimplexSolution` with ``objective = ‖g_w‖²`` and Frank–Wolfe gap
      ``2(‖g_w‖² − min_i ⟨g_i, g_w⟩)``; hence ``⟨g_i, g_w⟩ ≥ ‖g_w‖² − gap/2`` for all i.

    References:
      Désidéri, "Multiple-gradient descent algorithm (MGDA) for multiobjective
      optimization", C. R. Math. 2012; Sener & Koltun, "Multi-Task Learning as
      Multi-Objective Optimization", NeurIPS 2018.
    """
    gram = _check_gram(gram)
    check_method(method, num_iters)
    return _min_norm_solution(gram, method=method, num_iters=int(num_iters))


@functools.partial(jax.jit, static_argnames=("method", "num_iters"))
def _min_norm_solution(gram, *, method, num_iters) -> SimplexSolution:
    zeros = jnp.zeros((gram.shape[0],), gram.dtype)
    w = solve_simplex(gram, zeros, 1.0, radius_is_absolute=True, method=method, num_iters=num_iters)
    gw = gram @ w
    quad = jnp.maximum(w @ gw, 0)
    return SimplexSolution(w, quad, 2 * jnp.maximum(quad - jnp.min(gw), 0))


def check_simplex(name: str, w: jax.Array) -> None:
    """Entries ≥ 0 summing to 1 (tolerance scaled to the dtype); skipped for tracers."""
    if not _checks.is_concrete(w):
        return
    a = np.asarray(w, dtype=np.float64)
    tol = 1e-9 if np.dtype(w.dtype) == np.float64 else 1e-5
    if not np.isfinite(a).all() or (a < 0).any() or abs(a.sum() - 1.0) > tol * max(1, a.size):
        raise ValueError(
            f"{name} must lie on the probability simplex (entries >= 0 summing to 1), got "
            f"{_checks._short(a)} with sum {a.sum():.8g}"
        )
