"""Gram matrix and linear combinations of stacked per-objective gradient pytrees.

Every aggregator in this package is a rule on the K×K Gram matrix
``G_ij = ⟨g_i, g_j⟩``: it reads the K gradients once to form ``G``, solves a
problem of size K, and reads them once more to form ``d = Σ_k α_k g_k``.
Both passes work leaf by leaf with contractions over the trailing (parameter)
axes, so nothing is flattened or concatenated: on gradients sharded across
devices XLA turns the contraction into local partial sums plus one all-reduce
of K² numbers, and the recombination keeps each leaf's sharding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import _checks
from jaxalign.types import Array, Float, PyTree


def accumulation_dtype(dtypes) -> np.dtype:
    """Float64 if any input is float64, else float32 (bf16/f16 inputs accumulate in f32)."""
    return np.dtype(
        jnp.float64 if any(np.dtype(d) == np.dtype(jnp.float64) for d in dtypes) else jnp.float32
    )


def num_objectives(grads: PyTree, name: str = "grads") -> int:
    """K, the shared leading axis of every leaf of stacked per-objective gradients.

    Raises:
      ValueError: empty pytree, a scalar leaf, a non-floating leaf, or leaves whose
        leading axes differ.
    """
    leaves_with_path = jax.tree_util.tree_leaves_with_path(grads)
    if not leaves_with_path:
        raise ValueError(
            f"{name} is an empty pytree; expected per-objective gradients stacked on a "
            "leading axis of size K"
        )
    sizes = {}
    for path, leaf in leaves_with_path:
        where = f"{name}{jax.tree_util.keystr(path)}"
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError(
                f"{where} is a scalar; expected a leading objective axis, e.g. "
                "jax.jacrev(losses)(params) or jax.vmap(jax.grad(loss_k)) stacked on axis 0"
            )
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"{where} has dtype {dtype}; expected floating gradients")
        sizes[where] = shape[0]
    values = set(sizes.values())
    if len(values) != 1:
        raise ValueError(
            f"{name} leaves disagree on the number of objectives (leading axis): {sizes}; "
            "expected the same K for every leaf"
        )
    k = values.pop()
    if k < 1:
        raise ValueError(f"{name} has a leading axis of size 0; expected K >= 1 objectives")
    return int(k)


def _leaf_gram(leaf: jax.Array, dtype: np.dtype) -> jax.Array:
    axes = tuple(range(1, leaf.ndim))

    def by_dot(x):
        # HIGHEST: on GPU/TPU a default-precision f32 dot may run in bf16/tf32, and the
        # simplex problem downstream is sensitive to relative errors in small Gram entries.
        return jnp.tensordot(
            x,
            x,
            axes=(axes, axes),
            precision=jax.lax.Precision.HIGHEST,
            preferred_element_type=dtype,
        ).astype(dtype)

    def by_products(x):
        # XLA:CPU runs a dot with a K×K output and a huge contraction on one thread
        # (several times slower than BLAS); a fused multiply-reduce is 1.5–5× faster.
        x = x.astype(dtype)
        return jnp.sum(x[:, None] * x[None, :], axis=tuple(a + 1 for a in axes))

    return jax.lax.platform_dependent(leaf, cpu=by_products, default=by_dot)


def gram_matrix(grads: PyTree) -> Float[Array, "K K"]:
    r"""Gram matrix of K gradient pytrees stacked on a leading axis.

    Why: MGDA, PCGrad, CAGrad and RACO depend on the gradients only through their
    inner products, so the K×K Gram matrix is all the small solvers need.

    .. math:: G_{ij} = \sum_{\text{leaves } \ell} \langle g_i^{(\ell)}, g_j^{(\ell)} \rangle

    Each leaf contributes one contraction over its trailing axes (a ``tensordot`` on
    GPU/TPU, a fused multiply-reduce on CPU, picked with
    ``jax.lax.platform_dependent``); there is no ``ravel_pytree`` or concatenation,
    so sharded leaves stay sharded and XLA inserts the cross-device reduction of the
    K×K partial sums.

    Args:
      grads: pytree whose leaves have shape ``[K, *param_shape]`` (objective k's
        gradient at index k), e.g. ``jax.jacrev(losses_fn)(params)``.

    Returns:
      ``[K, K]`` symmetric positive semi-definite matrix, accumulated in float32
      (float64 if any leaf is float64).

    Example:
      >>> g = {"w": jnp.array([[1.0, 0.0], [1.0, 1.0]])}
      >>> gram_matrix(g)
      Array([[1., 1.],
             [1., 2.]], dtype=float32)
    """
    num_objectives(grads)
    leaves = jax.tree_util.tree_leaves(grads)
    dtype = accumulation_dtype(jnp.result_type(x) for x in leaves)
    gram = _leaf_gram(jnp.asarray(leaves[0]), dtype)
    for leaf in leaves[1:]:
        gram = gram + _leaf_gram(jnp.asarray(leaf), dtype)
    # Symmetrise exactly: round-off in the two triangles would otherwise differ.
    return (gram + gram.T) * jnp.asarray(0.5, dtype)


def linear_combination(grads: PyTree, coefficients: Float[Array, " K"]) -> PyTree:
    r"""The pytree ``Σ_k coefficients[k] · grads[k]``, computed leaf by leaf.

    .. math:: d^{(\ell)} = \sum_k \alpha_k\, g_k^{(\ell)}

    Args:
      grads: pytree with leaves ``[K, *param_shape]``.
      coefficients: ``[K]`` combination coefficients.

    Returns:
      A pytree with the structure of one gradient (leaves ``param_shape``), in each
      leaf's dtype and with each leaf's sharding of the trailing axes.
    """
    k = num_objectives(grads)
    coefficients = _checks.as_float_array("coefficients", coefficients, ndim=1)
    if coefficients.shape[0] != k:
        raise ValueError(
            f"coefficients has shape {coefficients.shape}; expected ({k},) to match the "
            f"K={k} objectives stacked in grads"
        )

    def combine(leaf):
        leaf = jnp.asarray(leaf)
        acc = accumulation_dtype([leaf.dtype])
        out = jnp.tensordot(
            coefficients.astype(acc),
            leaf.astype(acc),  # a no-op for f32/f64; XLA fuses the bf16 up-cast into the dot
            axes=([0], [0]),
            precision=jax.lax.Precision.HIGHEST,
        )
        return out.astype(leaf.dtype)

    return jax.tree.map(combine, grads)
