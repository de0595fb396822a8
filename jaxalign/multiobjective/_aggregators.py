"""Conflict-averse aggregation of K per-objective gradients into one direction.

One aggregation step, for gradients stacked on a leading axis (leaves ``[K, ...]``):

1. ``G = gram_matrix(grads)`` — one pass over the gradients, K×K result;
2. a rule on ``G`` (a K-dimensional problem, solved on device) gives
   coefficients ``α ∈ R^K``;
3. ``d = Σ_k α_k g_k`` — one more pass, leaf by leaf, keeping the sharding.

Every method is offered twice: a pure function ``xxx_direction(grads, ...) ->
(direction, AggregationInfo)`` and an optax aggregator ``xxx(...)`` following the
``optax.experimental.aggregating.Aggregator`` contract (stacked per-objective
gradients in, one direction out; the diagnostics of the last step are kept in
the state). The direction is a *descent* direction: apply ``params − lr · d`` or
chain it with an optax optimizer, e.g. ``optax.chain(cagrad(0.5,
num_objectives=2), optax.adam(1e-3))``.

Which rule converges to what (L-smooth objectives, step size ≤ 1/L):

* ``weighted_sum`` — gradient descent on ``L_w = Σ w_i L_i``.
* ``mgda`` — ``⟨g_i, d⟩ ≥ ‖d‖²``: every objective decreases; stops at any
  Pareto-stationary point (``d = 0``), which one depends on the start.
* ``pcgrad`` — projects away pairwise conflicts; no convergence guarantee to a
  particular point in general.
* ``cagrad`` — with ``0 ≤ c < 1``, ``L_0 = mean L_i`` decreases by at least
  ``α(1 − c²)‖∇L_0‖²/2`` per step, so ``Σ_t ‖∇L_0(θ_t)‖² ≤ 2(L_0(θ_0) − L_0^*)/(α(1 − c²))``:
  O(1/T) for ``min_t ‖∇L_0‖²``; converges to stationary points of the average loss.
* ``raco`` — the same bound for ``L_w`` with user weights (RACO Thm 3.1) and, for two
  objectives, a guaranteed decrease at least that of unclipped CAGrad, strictly
  larger when clipping turns the correction towards ``g_0`` and ``L η < 1``
  (RACO Thm 3.2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Bool
from optax.experimental import aggregating

from jaxalign import _checks
from jaxalign.multiobjective._gram import (
    accumulation_dtype,
    gram_matrix,
    linear_combination,
    num_objectives,
)
from jaxalign.multiobjective._simplex import (
    SolverMethod,
    check_method,
    check_simplex,
    solve_simplex,
)
from jaxalign.types import Array, Float, PRNGKey, PyTree

Rescale = Literal["none", "1+c", "1+c^2"]
_RESCALES = ("none", "1+c", "1+c^2")
Reduction = Literal["sum", "mean"]


class AggregationInfo(NamedTuple):
    """Diagnostics of one aggregation step (all computed from the K×K Gram matrix).

    Attributes:
      weights: ``[K]`` the method's simplex weights: the user weights
        (``weighted_sum``), the min-norm weights (``mgda``), the dual solution ``w*``
        (``cagrad``), the clipped weights ``p̃ = min(p*, w)`` (``raco``; they may sum
        to < 1), or the PCGrad coefficients normalised to sum 1.
      coefficients: ``[K]`` exact combination: ``direction = Σ_k coefficients[k] g_k``.
      cosines: ``[K]`` cosine between each objective's gradient and the direction
        (0 where either is zero). All ≥ 0 means no objective increases to first order.
      conflict: ``[]`` True when some pair of gradients has a negative inner product.
      direction_norm: ``[]`` ``‖direction‖``.
    """

    weights: Float[Array, " K"]
    coefficients: Float[Array, " K"]
    cosines: Float[Array, " K"]
    conflict: Bool[Array, ""]
    direction_norm: Float[Array, ""]


class AggregatorState(NamedTuple):
    """State of an aggregator transform.

    Attributes:
      count: ``[]`` int32, number of updates so far (folded into ``key``).
      key: PRNG key for randomised rules (PCGrad), else None.
      info: :class:`AggregationInfo` of the last update (zeros before the first).
    """

    count: jax.Array
    key: Any
    info: AggregationInfo


# ---------------------------------------------------------------------------
# Rules on the Gram matrix: gram [K, K] -> (coefficients [K], weights [K]).
# Each rule is a whole K-dimensional solver with static iteration counts, so it is
# jitted here (one compilation per K and dtype); inside a caller's jit it is inlined.


def _is_zero(sq_norm: jax.Array, gram: jax.Array, v: jax.Array) -> jax.Array:
    """``‖Σ_i v_i g_i‖² = vᵀGv`` below the round-off floor of that quadratic form.

    Each ``G_ij`` carries an absolute error of order ``eps·‖g_i‖‖g_j‖``, so ``vᵀGv`` is
    known only to about ``K·eps·(Σ_i |v_i|‖g_i‖)²``; a smaller value carries no reliable
    direction and the rules fall back to the anchor gradient. The floor scales with
    ``v`` and with each gradient's own norm (not with the largest one): a combination
    with small coefficients (RACO's clipped ``p̃`` under a small user weight) or of
    small gradients is still a direction, in float32 as in float64.
    """
    k = gram.shape[0]
    eps = float(np.finfo(gram.dtype).eps)
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0))
    floor = 64 * k * eps * jnp.square(jnp.abs(v) @ norms)
    return ~(sq_norm > jnp.maximum(floor, float(np.finfo(gram.dtype).tiny)))


def _quad(v, gram):
    return jnp.maximum(v @ gram @ v, 0)


def _weighted_sum_rule(gram, weights):
    weights = weights.astype(gram.dtype)
    return weights, weights


@functools.partial(jax.jit, static_argnames=("method", "num_iters"))
def _mgda_rule(gram, method, num_iters):
    k = gram.shape[0]
    w = solve_simplex(
        gram,
        jnp.zeros((k,), gram.dtype),
        1.0,
        radius_is_absolute=True,
        method=method,
        num_iters=num_iters,
    )
    return w, w


@functools.partial(jax.jit, static_argnames=("clip", "method", "num_iters"))
def _conflict_averse_rule(gram, anchor, c, clip, method, num_iters):
    """Shared by CAGrad (anchor uniform, no clip) and RACO (anchor = user weights)."""
    anchor = anchor.astype(gram.dtype)
    p = solve_simplex(gram, anchor, c, radius_is_absolute=False, method=method, num_iters=num_iters)
    if clip:
        p = jnp.minimum(p, anchor)
    radius = jnp.asarray(c, gram.dtype) * jnp.sqrt(_quad(anchor, gram))
    sq = _quad(p, gram)
    zero = _is_zero(sq, gram, p)
    scale = jnp.where(zero, 0, radius * jax.lax.rsqrt(jnp.where(zero, 1, sq)))
    return anchor + scale * p, p


def _rescale_factor(c, rescale: str, dtype):
    c = jnp.asarray(c, dtype)
    if rescale == "1+c":
        return 1 / (1 + c)
    if rescale == "1+c^2":
        return 1 / (1 + c * c)
    return jnp.ones((), dtype)


@functools.partial(jax.jit, static_argnames=("rescale", "method", "num_iters"))
def _cagrad_rule(gram, c, rescale, method, num_iters):
    k = gram.shape[0]
    uniform = jnp.full((k,), 1.0 / k, gram.dtype)
    coef, w = _conflict_averse_rule(
        gram, uniform, c, clip=False, method=method, num_iters=num_iters
    )
    return coef * _rescale_factor(c, rescale, gram.dtype), w


@functools.partial(jax.jit, static_argnames=("reduction",))
def _pcgrad_rule(gram, key, reduction):
    k = gram.shape[0]
    dtype = gram.dtype
    eye = jnp.eye(k, dtype=dtype)
    diag = jnp.diagonal(gram)
    usable = ~_is_zero(diag, gram, eye)  # zero gradients are never projected on

    def project_row(i, row_key):
        order = jax.random.permutation(row_key, k)

        def body(a, j):
            inner = a @ gram[:, j]  # ⟨g_i^PC, g_j⟩ with g_i^PC = Σ_l a_l g_l
            hit = (j != i) & usable[j] & (inner < 0)
            step = jnp.where(hit, inner / jnp.where(usable[j], diag[j], 1), 0)
            return a - step * eye[j], None

        a, _ = jax.lax.scan(body, eye[i], order)
        return a

    rows = jax.vmap(project_row)(jnp.arange(k), jax.random.split(key, k))  # [K, K]
    coef = jnp.sum(rows, axis=0)
    if reduction == "mean":
        coef = coef / k
    return coef, coef / jnp.sum(coef)


@jax.jit
def _info(gram, coef, weights) -> AggregationInfo:
    k = gram.shape[0]
    g_coef = gram @ coef
    sq = _quad(coef, gram)
    zero_d = _is_zero(sq, gram, coef)
    diag = jnp.diagonal(gram)
    zero_g = _is_zero(diag, gram, jnp.eye(k, dtype=gram.dtype))
    denom = jnp.sqrt(jnp.where(zero_g, 1, diag)) * jnp.sqrt(jnp.where(zero_d, 1, sq))
    cosines = jnp.where(zero_g | zero_d, 0, g_coef / denom)
    off_diagonal = ~jnp.eye(k, dtype=bool)
    conflict = jnp.any((gram < 0) & off_diagonal)
    return AggregationInfo(
        weights=weights,
        coefficients=coef,
        cosines=jnp.clip(cosines, -1, 1),
        conflict=conflict,
        direction_norm=jnp.sqrt(sq),
    )


# ---------------------------------------------------------------------------
# Validation.


def _check_c(c, *, below_one: bool, name: str) -> None:
    _checks.check_nonnegative("c", c)
    if below_one and _checks.is_concrete(c) and not float(np.max(np.asarray(c))) < 1.0:
        raise ValueError(
            f"c must satisfy 0 <= c < 1 for {name} (its convergence guarantees scale with "
            f"1/(1 - c^2)), got {c}"
        )


def _as_weights(weights, k: int | None = None) -> jax.Array:
    w = _checks.as_float_array("weights", weights, ndim=1)
    if w.shape[0] < 1:
        raise ValueError("weights is empty; expected one weight per objective")
    if k is not None and w.shape[0] != k:
        raise ValueError(
            f"weights has shape {w.shape}; expected ({k},): one weight per objective "
            f"(grads stack K={k} objectives)"
        )
    check_simplex("weights", w)
    return w


def _check_rescale(rescale: str) -> None:
    if rescale not in _RESCALES:
        raise ValueError(f"rescale must be one of {_RESCALES}, got {rescale!r}")


def _check_reduction(reduction: str) -> None:
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def _direction(grads, rule: Callable, *args, **static) -> tuple[PyTree, AggregationInfo]:
    gram = gram_matrix(grads)
    _checks.check_finite("gram_matrix(grads)", gram)
    coef, weights = rule(gram, *args, **static)
    return linear_combination(grads, coef), _info(gram, coef, weights)


# ---------------------------------------------------------------------------
# Pure functions.


def weighted_sum_direction(
    grads: PyTree, weights: Float[Array, " K"]
) -> tuple[PyTree, AggregationInfo]:
    r"""Linear scalarisation: ``d = Σ_i w_i g_i`` (gradient of ``L_w = Σ_i w_i L_i``).

    Args:
      grads: pytree with leaves ``[K, *param_shape]``.
      weights: ``[K]`` user weights on the simplex.

    Returns:
      ``(direction, info)``: a pytree shaped like one gradient and its
      :class:`AggregationInfo`.
    """
    w = _as_weights(weights, num_objectives(grads))
    return _direction(grads, _weighted_sum_rule, w)


def mgda_direction(
    grads: PyTree, *, method: SolverMethod = "auto", num_iters: int = 1000
) -> tuple[PyTree, AggregationInfo]:
    r"""MGDA: the minimum-norm point of the convex hull of the gradients.

    Why: the min-norm element ``d`` satisfies ``⟨g_i, d⟩ ≥ ‖d‖²`` for every ``i``, so
    a small step along ``−d`` decreases all objectives; ``d = 0`` exactly at
    Pareto-stationary points.

    .. math::

        d = \sum_i w_i^\star g_i,\qquad
        w^\star = \arg\min_{w\in\Delta_K}\lVert \textstyle\sum_i w_i g_i\rVert^2

    Converges (step ≤ 1/L) to *some* Pareto-stationary point, depending on the
    start; ``min_t ‖d_t‖² = O(1/T)``.

    Args:
      grads: pytree with leaves ``[K, *param_shape]``.
      method, num_iters: simplex solver (see :func:`min_norm_weights`).

    Returns:
      ``(direction, info)``.

    Example:
      >>> grads = jax.jacrev(losses)(params)  # leaves [K, ...]
      >>> direction, info = mgda_direction(grads)
      >>> bool(jnp.all(info.cosines >= 0))  # no objective increases to first order
      True

    References:
      Désidéri 2012; Sener & Koltun, NeurIPS 2018.
    """
    num_objectives(grads)
    check_method(method, num_iters)
    return _direction(grads, _mgda_rule, method=method, num_iters=int(num_iters))


def pcgrad_direction(
    grads: PyTree, *, key: PRNGKey, reduction: Reduction = "sum"
) -> tuple[PyTree, AggregationInfo]:
    r"""PCGrad ("gradient surgery"): project away pairwise conflicts, then sum.

    For each ``i``, over ``j ≠ i`` in a random order: if ``⟨g_i^{PC}, g_j⟩ < 0``,

    .. math::

        g_i^{PC} \leftarrow g_i^{PC}
            - \frac{\langle g_i^{PC}, g_j\rangle}{\lVert g_j\rVert^2} g_j,

    and ``d = Σ_i g_i^{PC}`` (``reduction="mean"`` divides by K). Every ``g_i^{PC}`` is
    a combination of the original gradients, so the projections run on the Gram
    matrix (K² steps of size K) and the gradients are read only twice.

    Args:
      grads: pytree with leaves ``[K, *param_shape]``.
      key: PRNG key for the random projection orders.
      reduction: ``"sum"`` (the paper) or ``"mean"``.

    Returns:
      ``(direction, info)``.

    Example:
      >>> direction, info = pcgrad_direction(grads, key=jax.random.fold_in(key, step))

    References:
      Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task
      Learning", NeurIPS 2020, Algorithm 1.
    """
    num_objectives(grads)
    _check_reduction(reduction)
    return _direction(grads, _pcgrad_rule, key, reduction=reduction)


def cagrad_direction(
    grads: PyTree,
    c: float,
    *,
    rescale: Rescale = "none",
    method: SolverMethod = "auto",
    num_iters: int = 1000,
) -> tuple[PyTree, AggregationInfo]:
    r"""CAGrad: the best worst-case improvement in a ball around the average gradient.

    Why: gradient descent on the average loss can sacrifice one objective for
    another; CAGrad maximises the worst objective's improvement while staying
    within ``c‖g_0‖`` of the average gradient, so it still minimises the average.

    .. math::

        \max_d \min_i \langle g_i, d\rangle
            \ \text{s.t.}\ \lVert d - g_0\rVert \le c\lVert g_0\rVert,
        \qquad g_0 = \tfrac1K\textstyle\sum_i g_i,

        d = g_0 + \frac{c\lVert g_0\rVert}{\lVert g_{w^\star}\rVert} g_{w^\star},\quad
        w^\star = \arg\min_{w\in\Delta_K} g_w^\top g_0 + c\lVert g_0\rVert\lVert g_w\rVert.

    ``c = 0`` is gradient descent on the average; ``c → ∞`` approaches the MGDA
    direction (up to scale). ``c ≥ 1`` is accepted (the direction is well defined)
    but the descent guarantee on the average loss needs ``0 ≤ c < 1``: then
    ``Σ_t ‖∇L_0(θ_t)‖² ≤ 2(L_0(θ_0) − L_0^*)/(α(1 − c²))`` for step ``α ≤ 1/L``.
    If ``g_{w*}`` vanishes (to round-off) the direction is ``g_0``.

    Args:
      grads: pytree with leaves ``[K, *param_shape]``.
      c: conflict-aversion radius factor, ``c ≥ 0``.
      rescale: ``"none"`` (the analysed direction), ``"1+c"`` or ``"1+c^2"`` (divide
        by that factor, as the reference implementation optionally does).
      method, num_iters: simplex solver (see :func:`cagrad_dual_weights`).

    Returns:
      ``(direction, info)``; ``info.weights`` is the dual solution ``w*``.

    Example:
      >>> grads = jax.jacrev(losses)(params)  # leaves [K, ...]
      >>> direction, info = cagrad_direction(grads, 0.5)
      >>> params = jax.tree.map(lambda p, d: p - 0.1 * d, params, direction)

    References:
      Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task
      Learning", NeurIPS 2021, Algorithm 1 and Theorem 3.2.
    """
    num_objectives(grads)
    _check_c(c, below_one=False, name="cagrad")
    _check_rescale(rescale)
    check_method(method, num_iters)
    return _direction(
        grads, _cagrad_rule, c, rescale=rescale, method=method, num_iters=int(num_iters)
    )


def raco_direction(
    grads: PyTree,
    c: float,
    weights: Float[Array, " K"],
    *,
    clip: bool = True,
    method: SolverMethod = "auto",
    num_iters: int = 1000,
) -> tuple[PyTree, AggregationInfo]:
    r"""RACO's clipped CAGrad: conflict aversion that respects user weights.

    Why: CAGrad's correction ``G_{p*}`` can move weight onto objectives beyond what the
    user asked for; RACO clips the dual weights coordinate-wise by the user weights.

    .. math::

        g_0 = \textstyle\sum_i w_i g_i,\quad
        p^\star = \arg\min_{p\in\Delta_K} G_p^\top g_0 + c\lVert g_0\rVert\lVert G_p\rVert,\quad
        \tilde p_i = \min(p^\star_i, w_i),

        d = g_0 + c\lVert g_0\rVert\,\tilde G/\lVert\tilde G\rVert,\quad
        \tilde G = \textstyle\sum_i \tilde p_i g_i\ (d = g_0 \text{ if } \tilde G = 0).

    ``p̃`` is not renormalised. With ``0 ≤ c < 1`` and ``η ≤ 1/L_w``:
    ``min_{t<T} ‖∇L_w(θ_t)‖² ≤ 2(L_w(θ_0) − L_w^*)/(η(1 − c²)T)`` (Thm 3.1; the
    Pareto-criticality measure ``min_p ‖G_p‖`` is smaller still). For K = 2 the
    one-step guarantee ``L_w(θ − ηd) ≤ L_w(θ) − η‖g_0‖²Γ(ρ)`` with
    ``Γ(ρ) = 1 + cρ − (L_wη/2)(1 + c² + 2cρ)``, ``ρ = cos(g_0, G̃)``, improves by
    ``c(1 − L_wη)(ρ̃ − ρ) ≥ 0`` over unclipped weights (Thm 3.2).

    Args:
      grads: pytree with leaves ``[K, *param_shape]``.
      c: radius factor, ``0 ≤ c < 1`` (the guarantees need ``c < 1``).
      weights: ``[K]`` user weights on the simplex.
      clip: ``False`` gives CAGrad anchored at the weighted gradient (no clipping),
        for comparisons.
      method, num_iters: simplex solver.

    Returns:
      ``(direction, info)``; ``info.weights`` is ``p̃`` (``p*`` if ``clip=False``).

    Example:
      >>> w = jnp.array([0.3, 0.7])  # the user's trade-off
      >>> direction, info = raco_direction(jax.jacrev(losses)(params), 0.5, w)

    References:
      Chen, Li, Chen, Lin, "Reward-free Alignment for Conflicting Objectives",
      arXiv:2602.02495, 2026, Algorithm 1, Theorems 3.1–3.2.
    """
    w = _as_weights(weights, num_objectives(grads))
    _check_c(c, below_one=True, name="raco")
    check_method(method, num_iters)
    return _direction(
        grads,
        _conflict_averse_rule,
        w,
        c,
        clip=bool(clip),
        method=method,
        num_iters=int(num_iters),
    )


# ---------------------------------------------------------------------------
# optax aggregators.


def _initial_info(k: int, dtype) -> AggregationInfo:
    z = jnp.zeros((k,), dtype)
    return AggregationInfo(z, z, z, jnp.zeros((), bool), jnp.zeros((), dtype))


def _params_dtype(params) -> np.dtype:
    dtypes = [
        jnp.result_type(x)
        for x in jax.tree_util.tree_leaves(params)
        if jnp.issubdtype(jnp.result_type(x), jnp.floating)
    ]
    return accumulation_dtype(dtypes)


def _make_aggregator(
    k: int, direction_fn: Callable[[PyTree, Any], tuple[PyTree, AggregationInfo]], key=None
) -> aggregating.Aggregator:
    def init_fn(params) -> AggregatorState:
        return AggregatorState(
            count=jnp.zeros((), jnp.int32),
            key=key,
            info=_initial_info(k, _params_dtype(params)),
        )

    def update_fn(per_objective_grads, state, params=None, **extra_args):
        del params, extra_args
        got = num_objectives(per_objective_grads, "per_objective_grads")
        if got != k:
            raise ValueError(
                f"per_objective_grads stacks K={got} objectives; this aggregator was built "
                f"for K={k}"
            )
        step_key = None if state.key is None else jax.random.fold_in(state.key, state.count)
        direction, info = direction_fn(per_objective_grads, step_key)
        # Keep the state's dtypes fixed so the transform can be carried through scan/jit.
        info = jax.tree.map(lambda new, old: new.astype(old.dtype), info, state.info)
        return direction, AggregatorState(count=state.count + 1, key=state.key, info=info)

    return aggregating.Aggregator(init_fn, update_fn)


def _check_k(num_objectives: int) -> int:
    if isinstance(num_objectives, bool) or not isinstance(num_objectives, int | np.integer):
        raise ValueError(f"num_objectives must be an int >= 1, got {num_objectives!r}")
    if num_objectives < 1:
        raise ValueError(f"num_objectives must be >= 1, got {num_objectives}")
    return int(num_objectives)


def weighted_sum(weights: Float[Array, " K"]) -> aggregating.Aggregator:
    """Aggregator for :func:`weighted_sum_direction` (K = ``len(weights)``).

    Example:
      >>> agg = weighted_sum(jnp.array([0.3, 0.7]))
      >>> state = agg.init(params)
      >>> direction, state = agg.update(jax.jacrev(losses)(params), state)
    """
    w = _as_weights(weights)
    return _make_aggregator(w.shape[0], lambda g, _: weighted_sum_direction(g, w))


def mgda(
    *, num_objectives: int, method: SolverMethod = "auto", num_iters: int = 1000
) -> aggregating.Aggregator:
    """Aggregator for :func:`mgda_direction`.

    ``num_objectives`` (K) fixes the shape of the diagnostics kept in the state;
    ``init(params)`` sees only the parameters.
    """
    k = _check_k(num_objectives)
    check_method(method, num_iters)
    return _make_aggregator(k, lambda g, _: mgda_direction(g, method=method, num_iters=num_iters))


def pcgrad(
    *, num_objectives: int, key: PRNGKey, reduction: Reduction = "sum"
) -> aggregating.Aggregator:
    """Aggregator for :func:`pcgrad_direction`; step ``t`` uses ``fold_in(key, t)``."""
    k = _check_k(num_objectives)
    _check_reduction(reduction)
    return _make_aggregator(
        k, lambda g, step_key: pcgrad_direction(g, key=step_key, reduction=reduction), key=key
    )


def cagrad(
    c: float,
    *,
    num_objectives: int,
    rescale: Rescale = "none",
    method: SolverMethod = "auto",
    num_iters: int = 1000,
) -> aggregating.Aggregator:
    """Aggregator for :func:`cagrad_direction` (``c ≥ 0``; guarantees need ``c < 1``).

    Example:
      >>> opt = optax.chain(cagrad(0.5, num_objectives=2), optax.adam(1e-3))
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jax.jacrev(losses)(params), state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> state[0].info.weights  # the dual weights of the last step
    """
    k = _check_k(num_objectives)
    _check_c(c, below_one=False, name="cagrad")
    _check_rescale(rescale)
    check_method(method, num_iters)
    return _make_aggregator(
        k,
        lambda g, _: cagrad_direction(g, c, rescale=rescale, method=method, num_iters=num_iters),
    )


def raco(
    c: float,
    weights: Float[Array, " K"],
    *,
    clip: bool = True,
    method: SolverMethod = "auto",
    num_iters: int = 1000,
) -> aggregating.Aggregator:
    """Aggregator for :func:`raco_direction` (``0 ≤ c < 1``, K = ``len(weights)``).

    Example:
      >>> opt = optax.chain(raco(0.5, jnp.array([0.3, 0.7])), optax.sgd(1e-2))
    """
    w = _as_weights(weights)
    _check_c(c, below_one=True, name="raco")
    check_method(method, num_iters)
    return _make_aggregator(
        w.shape[0],
        lambda g, _: raco_direction(g, c, w, clip=clip, method=method, num_iters=num_iters),
    )
