"""Conflict-averse multi-objective gradients over (sharded) gradient pytrees.

Per-objective gradients come stacked on a leading axis (leaves ``[K, ...]``, e.g.
``jax.jacrev(losses)(params)``). Every method works on the K×K Gram matrix
(:func:`gram_matrix`, one contraction per leaf, no flattening), solves a
K-dimensional simplex problem on device (:func:`min_norm_weights`,
:func:`cagrad_dual_weights`), and recombines the gradients leaf by leaf
(:func:`linear_combination`), so gradients sharded across devices stay sharded.

Methods, each as a pure function returning ``(direction, AggregationInfo)`` and as
an optax aggregator (``optax.experimental.aggregating.Aggregator`` contract):

========================  ===========================  =====================================
pure function             optax aggregator             reference
========================  ===========================  =====================================
weighted_sum_direction    weighted_sum(weights)        linear scalarisation
mgda_direction            mgda(num_objectives=K)       Désidéri 2012; Sener & Koltun 2018
pcgrad_direction          pcgrad(num_objectives, key)  Yu et al. 2020
cagrad_direction          cagrad(c, num_objectives)    Liu et al. 2021
raco_direction            raco(c, weights)             Chen et al. 2026 (clipped CAGrad)
========================  ===========================  =====================================
"""

from jaxalign.multiobjective._aggregators import (
    AggregationInfo,
    AggregatorState,
    cagrad,
    cagrad_direction,
    mgda,
    mgda_direction,
    pcgrad,
    pcgrad_direction,
    raco,
    raco_direction,
    weighted_sum,
    weighted_sum_direction,
)
from jaxalign.multiobjective._gram import gram_matrix, linear_combination, num_objectives
from jaxalign.multiobjective._simplex import (
    SimplexSolution,
    cagrad_dual_weights,
    min_norm_weights,
)

__all__ = [
    "AggregationInfo",
    "AggregatorState",
    "SimplexSolution",
    "cagrad",
    "cagrad_direction",
    "cagrad_dual_weights",
    "gram_matrix",
    "linear_combination",
    "mgda",
    "mgda_direction",
    "min_norm_weights",
    "num_objectives",
    "pcgrad",
    "pcgrad_direction",
    "raco",
    "raco_direction",
    "weighted_sum",
    "weighted_sum_direction",
]
