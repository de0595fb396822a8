"""Mirror-descent transforms (optax-compatible) and mirror maps.

``mirror_descent``, ``optimistic_mirror_descent`` and ``extragradient`` are
``optax.GradientTransformation`` factories over pytrees; the mirror map (entropic on the
simplex for logits, Euclidean, Euclidean-on-simplex) sets the geometry. Gradients are
descent directions (optax's convention): to ascend a payoff ``u`` pass ``-u``.
"""

from jaxalign.optim.mirror_maps import (
    MirrorMap,
    entropic,
    euclidean,
    euclidean_simplex,
    project_to_simplex,
)
from jaxalign.optim.transforms import (
    ExtragradientState,
    MirrorDescentState,
    OptimisticMirrorDescentState,
    extragradient,
    mirror_descent,
    optimistic_mirror_descent,
)

__all__ = [
    "ExtragradientState",
    "MirrorDescentState",
    "MirrorMap",
    "OptimisticMirrorDescentState",
    "entropic",
    "euclidean",
    "euclidean_simplex",
    "extragradient",
    "mirror_descent",
    "optimistic_mirror_descent",
    "project_to_simplex",
]
