"""Train state and its shape-first sharded initialisation.

1. ``nnx.eval_shape`` builds the model abstractly: parameter shapes plus their
   logical axis names, no memory.
2. The logical names resolve to ``NamedSharding`` s through the rules
   (:func:`jaxalign.models.state_shardings`); optimizer-state leaves shaped
   like a parameter get that parameter's sharding (``optax.tree_map_params``),
   counters are replicated.
3. One ``jax.jit(init, out_shardings=...)`` creates every array on its own
   devices, so no host ever holds the full model.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxalign.models import CausalLM, ModelConfig, axis_rules, logical_sharding, state_shardings


class TrainState(NamedTuple):
    """Everything a step updates (and a checkpoint stores)."""

    step: jax.Array  # () int32: optimizer steps taken
    params: nnx.State  # policy parameters (logical names in the variables' metadata)
    opt_state: optax.OptState  # optimizer state, sharded like the parameters
    rng: jax.Array  # raw PRNG key data (uint32); step t uses fold_in(key, t)


class Shardings(NamedTuple):
    """Shardings of the train state, the frozen reference parameters and batches."""

    state: TrainState
    reference: nnx.State
    batch: NamedSharding  # (batch, length) arrays
    example: NamedSharding  # (batch,) arrays
    replicated: NamedSharding


def abstract_model(config: ModelConfig, rules) -> tuple[nnx.GraphDef, nnx.State]:
    """``(graphdef, abstract params)`` of a :class:`CausalLM` without allocating it."""
    with axis_rules(rules):
        model = nnx.eval_shape(lambda: CausalLM(config, rngs=nnx.Rngs(params=jax.random.key(0))))
    graphdef, params = nnx.split(model)
    if len(jax.tree.leaves(nnx.state(model, nnx.Param))) != len(jax.tree.leaves(params)):
        raise ValueError("the model holds non-parameter variables; the trainer cannot handle them")
    return graphdef, params


def train_shardings(
    abstract_params: nnx.State,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    rules,
) -> Shardings:
    """Shardings for :class:`TrainState`, the reference parameters and batch arrays."""
    replicated = NamedSharding(mesh, PartitionSpec())
    params = state_shardings(abstract_params, mesh, rules)
    opt_abstract = jax.eval_shape(tx.init, abstract_params)
    opt = optax.tree_map_params(
        tx, lambda _, s: s, opt_abstract, params, transform_non_params=lambda _: replicated
    )
    batch = logical_sharding(("batch", "length"), mesh, rules)
    example = logical_sharding(("batch",), mesh, rules)
    state = TrainState(step=replicated, params=params, opt_state=opt, rng=replicated)
    return Shardings(state, params, batch, example, replicated)


def init_train_state(
    config: ModelConfig,
    tx: optax.GradientTransformation,
    shardings: Shardings,
    *,
    key: jax.Array,
    rules,
    params: nnx.State | None = None,
) -> TrainState:
    """A fresh sharded :class:`TrainState` (random parameters unless ``params`` is given).

    Args:
        config: the model architecture.
        tx: the optimizer.
        shardings: from :func:`train_shardings`.
        key: typed PRNG key; split into the init key and the step key.
        rules: logical rules (pairs), active while tracing.
        params: pretrained parameters to start from (placed on ``shardings``).
    """
    init_key, step_key = jax.random.split(key)

    def init(k, p):
        if p is None:
            model = CausalLM(config, rngs=nnx.Rngs(params=k))
            p = nnx.split(model)[1]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=p,
            opt_state=tx.init(p),
            rng=jax.random.key_data(step_key),
        )

    mesh = shardings.replicated.mesh
    with jax.set_mesh(mesh), axis_rules(rules):
        if params is None:
            return jax.jit(lambda k: init(k, None), out_shardings=shardings.state)(init_key)
        params = jax.device_put(params, shardings.reference)
        return jax.jit(lambda p: init(None, p), out_shardings=shardings.state)(params)


def abstract_train_state(state_shapes: Any, shardings: TrainState) -> Any:
    """``jax.ShapeDtypeStruct`` s with shardings, a restore target for checkpoints."""
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shapes, shardings
    )


def apply_gradients(
    state: TrainState, grads: Any, tx: Any, lr_schedule: Any, *, ok: jax.Array
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update of ``state``, kept only if it is finite.

    ``ok`` is the caller's finiteness check of its loss (and anything else it measures);
    the gradient norm is checked here. A non-finite step changes nothing, so the last good
    state can still be saved. Returns the new state and the metrics every train step logs:
    ``grad_norm``, ``param_norm``, ``update_norm``, ``lr`` and ``finite`` (1.0 or 0.0).
    """
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = ok & jnp.isfinite(grad_norm)
    new_state = TrainState(state.step + 1, params, opt_state, state.rng)
    new_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state, state)
    metrics = {
        "grad_norm": grad_norm,
        "param_norm": optax.tree.norm(new_state.params),
        "update_norm": optax.tree.norm(updates),
        "lr": jnp.asarray(lr_schedule(state.step), jnp.float32),
        "finite": finite.astype(jnp.float32),
    }
    return new_state, metrics


__all__ = [
    "Shardings",
    "TrainState",
    "abstract_model",
    "abstract_train_state",
    "apply_gradients",
    "init_train_state",
    "train_shardings",
]
