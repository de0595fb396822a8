r"""Mirror maps: the geometry a mirror-descent step moves in.

A mirror map :math:`\psi` defines the proximal step

.. math::

    x^+ = \arg\min_x \; \langle s\, g, x\rangle + D_\psi(x, x_0),

with :math:`D_\psi` its Bregman divergence, :math:`g` a descent direction (a loss
gradient) and :math:`s` the step size. Each :class:`MirrorMap` exposes that step as
``prox(params, grad, step_size)`` on one array leaf, so the transforms in
:mod:`jaxalign.optim` work with any of them.

* :func:`entropic` — negative entropy on the simplex along the last axis. Parameters
  are **logits / log-probabilities**; the step is the multiplicative-weights update
  :math:`\pi^+ \propto \pi\, e^{-s g}`, done in log space:
  ``log_softmax(params - s * grad)``. Its Bregman divergence is the KL divergence.
* :func:`euclidean` — :math:`\tfrac12\|x\|^2` on an unconstrained domain: plain
  gradient descent :math:`x^+ = x - s g`.
* :func:`euclidean_simplex` — :math:`\tfrac12\|x\|^2` restricted to the simplex
  (last axis): projected gradient descent, parameters are probabilities.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


class MirrorMap(NamedTuple):
    """A mirror map, given by its proximal step.

    Attributes:
      name: short name (``"entropic"``, ``"euclidean"``, ``"euclidean_simplex"``).
      prox: ``prox(params, grad, step_size) -> new_params`` for one array leaf:
        :math:`\\arg\\min_x \\langle s g, x\\rangle + D_\\psi(x, \\text{params})`. It
        returns an array of the dtype of ``params``.
    """

    name: str
    prox: Callable[[Array, Array, Array], Array]


def _entropic_prox(params: Array, grad: Array, step_size: Array) -> Array:
    step = jnp.asarray(step_size, params.dtype)
    return jax.nn.log_softmax(params - step * grad.astype(params.dtype), axis=-1)


def entropic() -> MirrorMap:
    r"""Negative-entropy mirror map on the simplex (last axis); params are logits.

    The step :math:`\log\pi^+ = \operatorname{log\_softmax}(\log\pi - s g)` is the
    exponentiated-gradient / Hedge / multiplicative-weights update. Parameters must be
    finite logits (a response with probability exactly 0 would make the additive update
    ``new - params`` undefined); they come back normalised.
    """
    return MirrorMap("entropic", _entropic_prox)


def _euclidean_prox(params: Array, grad: Array, step_size: Array) -> Array:
    step = jnp.asarray(step_size, params.dtype)
    return params - step * grad.astype(params.dtype)


def euclidean() -> MirrorMap:
    r"""Squared-Euclidean mirror map on an unconstrained domain: :math:`x^+ = x - s g`."""
    return MirrorMap("euclidean", _euclidean_prox)


def project_to_simplex(x: Float[ArrayLike, "... k"]) -> Float[Array, "... k"]:
    r"""Euclidean projection onto the probability simplex along the last axis.

    The sort-based algorithm (Held, Wolfe, Crowder 1974; Duchi et al. 2008):
    :math:`\operatorname{proj}(x)_i = \max(x_i - \theta, 0)` with the threshold
    :math:`\theta` chosen so the result sums to one. Jittable, O(k log k).
    """
    x = jnp.asarray(x)
    k = x.shape[-1]
    u = -jnp.sort(-x, axis=-1)  # descending
    css = jnp.cumsum(u, axis=-1) - jnp.asarray(1, x.dtype)
    idx = jnp.arange(1, k + 1, dtype=x.dtype).reshape((1,) * (x.ndim - 1) + (k,))
    cond = u - css / idx > 0
    rho = jnp.sum(cond, axis=-1, keepdims=True)  # >= 1 always
    theta = jnp.take_along_axis(css, rho - 1, axis=-1) / rho.astype(x.dtype)
    return jnp.maximum(x - theta, jnp.asarray(0, x.dtype))


def _euclidean_simplex_prox(params: Array, grad: Array, step_size: Array) -> Array:
    return project_to_simplex(_euclidean_prox(params, grad, step_size))


def euclidean_simplex() -> MirrorMap:
    r"""Squared-Euclidean mirror map on the simplex: :math:`x^+ = \mathrm{proj}_\Delta(x - s g)`.

    Parameters are probabilities (last axis sums to one).
    """
    return MirrorMap("euclidean_simplex", _euclidean_simplex_prox)


__all__ = ["MirrorMap", "entropic", "euclidean", "euclidean_simplex", "project_to_simplex"]
