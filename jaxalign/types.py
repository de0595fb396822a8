"""Shared type aliases and conventions.

Conventions used across jaxalign:

* Policies over a finite response set are stored as **log-probabilities** (or
  logits) along the last axis; probabilities are never renormalised in
  probability space.
* Tabular functions are written for **one instance** (1-D arrays over responses)
  and batched by the caller with :func:`jax.vmap`.
* PRNG keys are explicit keyword-only arguments named ``key``.
* Step sizes are called ``step_size`` and multiply the gradient/payoff
  (``exp(step_size * payoff)``); papers that divide by an inverse step are
  converted at the boundary and say so in their docstrings.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import jax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

PyTree: TypeAlias = Any
PRNGKey: TypeAlias = PRNGKeyArray
Scalar: TypeAlias = Float[Array, ""]
ScalarLike: TypeAlias = float | Float[ArrayLike, ""]
LogProbs: TypeAlias = Float[Array, "responses"]
Rewards: TypeAlias = Float[Array, "responses"]

__all__ = [
    "Array",
    "ArrayLike",
    "Float",
    "Int",
    "LogProbs",
    "PRNGKey",
    "PyTree",
    "Rewards",
    "Scalar",
    "ScalarLike",
    "jax",
]
