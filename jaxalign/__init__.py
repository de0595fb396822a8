"""jaxalign: theory-grounded LLM alignment algorithms in JAX.

Subpackages form layers; dependencies point downward only:
``train`` → ``losses``/``models``/``data``/``parallel`` → theory layer
(``kl``, ``games``, ``optim``, ``multiobjective``) → jax/optax.
"""

__version__ = "0.1.0"
