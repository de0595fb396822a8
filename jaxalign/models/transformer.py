"""Decoder-only transformer trunk and the causal language model on top of it.

Three ways to call the model:

1. ``model(tokens, attention_mask=...)`` → float32 logits (batch, length, vocab):
   positions come from the padding mask (``cumsum(mask) - 1``), so left- and
   right-padded batches give the same logits at real tokens.
2. ``model.decode_step(...)`` with an explicit KV cache (used by
   :func:`jaxalign.models.generate`).
3. Functionally: ``graphdef, state = nnx.split(model)`` and
   ``nnx.merge(graphdef, state)(tokens)`` inside a ``jax.jit`` with explicit
   shardings (``jaxalign.models.state_shardings``).

Construct with ``CausalLM(config, rngs=nnx.Rngs(0))`` (sharded at birth if a mesh is
active via ``jax.set_mesh``) or ``CausalLM.create(config, key=..., mesh=..., rules=...)``,
which initialises the sharded parameters directly with one jitted call.
"""

from __future__ import annotations

import functools
from typing import TypeVar

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jaxalign.models.config import ModelConfig
from jaxalign.models.layers import (
    DecoderLayer,
    Dense,
    LayerCache,
    RMSNorm,
    draw_normal_params,
    param,
    rope_tables,
)
from jaxalign.models.sharding import DEFAULT_RULES, LogicalRules, axis_rules, constrain
from jaxalign.models.sharding import state_shardings as _state_shardings

KVCache = tuple[LayerCache, ...]
M = TypeVar("M", bound="Constructible")


def positions_from_mask(
    attention_mask: Int[Array, "b l"] | Bool[Array, "b l"],
) -> Int[Array, "b l"]:
    """Position ids 0, 1, ... counting only real tokens (pads repeat a neighbour's id)."""
    mask = jnp.asarray(attention_mask).astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)


def causal_padding_mask(
    attention_mask: Int[Array, "b l"] | Bool[Array, "b l"],
) -> Bool[Array, "b l l"]:
    """mask[b, i, j] = (j <= i) and token j is real."""
    valid = jnp.asarray(attention_mask).astype(bool)
    length = valid.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    return causal[None] & valid[:, None, :]


def _default_mask(tokens: jax.Array, attention_mask) -> jax.Array:
    if attention_mask is None:
        return jnp.ones(tokens.shape, jnp.int32)
    mask = jnp.asarray(attention_mask)
    if mask.shape != tokens.shape:
        raise ValueError(
            f"attention_mask.shape={mask.shape} must equal tokens.shape={tokens.shape}"
        )
    return mask


@functools.lru_cache(maxsize=32)
def _cached_init(cls, config: ModelConfig, kwargs: tuple):
    # Reused across create() calls so equal architectures compile their init once.
    return jax.jit(lambda k: nnx.state(cls(config, rngs=nnx.Rngs(params=k), **dict(kwargs))))


class Constructible(nnx.Module):
    """Adds :meth:`create`: initialise, optionally sharded over a mesh by logical rules."""

    @classmethod
    def create(
        cls: type[M],
        config: ModelConfig,
        *,
        key: jax.Array,
        mesh: jax.sharding.Mesh | None = None,
        rules: LogicalRules | None = None,
        **kwargs,
    ) -> M:
        """A freshly initialised model; with ``mesh`` its parameters are born sharded.

        Shape-first: ``nnx.eval_shape`` gives the parameter tree, the logical names
        resolve to ``NamedSharding``s through ``rules`` (default
        :data:`~jaxalign.models.sharding.DEFAULT_RULES`), and one ``jax.jit`` with those
        ``out_shardings`` creates every parameter on its own devices (no host copy).
        """
        make = lambda k: cls(config, rngs=nnx.Rngs(params=k), **kwargs)
        rules = DEFAULT_RULES if rules is None else tuple(rules)
        with axis_rules(rules):
            abstract = nnx.eval_shape(lambda: make(key))
        graphdef, abstract_state = nnx.split(abstract)
        if mesh is None:
            init = _cached_init(cls, config, tuple(sorted(kwargs.items())))
            return nnx.merge(graphdef, init(key))
        shardings = _state_shardings(abstract_state, mesh, rules)
        init = jax.jit(lambda k: nnx.state(make(k)), out_shardings=shardings)
        with jax.set_mesh(mesh), axis_rules(rules):
            state = init(key)
        return nnx.merge(graphdef, state)


class Transformer(Constructible):
    """Embedding, a stack of decoder layers and the final RMSNorm (HF ``model.*``)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs | None):
        self.config = config
        self.embed_tokens = param(
            (config.vocab_size, config.hidden_size), ("vocab", "embed"), config
        )
        self.layers = nnx.List([DecoderLayer(config) for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.hidden_size, config)
        self.inv_freq = tuple(float(f) for f in config.rope_inv_freq())
        if rngs is not None:  # None: the enclosing model draws all weights at once
            draw_normal_params(self, rngs.params(), config.initializer_range)

    def __call__(
        self,
        tokens: Int[Array, "b t"],
        positions: Int[Array, "b t"],
        mask: Bool[Array, "b t s"],
        cache: KVCache | None = None,
        cache_index: Int[Array, ""] | None = None,
    ) -> tuple[Float[Array, "b t e"], KVCache | None]:
        """Final normalised hidden states; with ``cache``, new keys/values go to ``cache_index``."""
        x = jnp.take(self.embed_tokens[...], tokens, axis=0).astype(self.config.compute_dtype)
        x = constrain(x, ("batch", "length", "act_embed"))
        rope = rope_tables(positions, jnp.asarray(self.inv_freq, jnp.float32))
        new_cache = []
        for i, layer in enumerate(self.layers):
            x, layer_cache = layer(x, rope, mask, None if cache is None else cache[i], cache_index)
            new_cache.append(layer_cache)
        return self.norm(x), (None if cache is None else tuple(new_cache))

    def init_cache(self, batch: int, length: int, dtype=None) -> KVCache:
        """Zero KV cache with ``length`` slots: per layer (keys, values), each (b, s, kv, dim)."""
        c = self.config
        dtype = c.compute_dtype if dtype is None else dtype
        shape = (batch, length, c.num_kv_heads, c.head_dim)
        names = ("batch", "cache_length", "kv_heads", "head_dim")
        zeros = lambda: constrain(jnp.zeros(shape, dtype), names)
        return tuple((zeros(), zeros()) for _ in range(c.num_layers))

    def encode(
        self,
        tokens: Int[Array, "b t"],
        attention_mask: Int[Array, "b t"] | None = None,
        positions: Int[Array, "b t"] | None = None,
    ) -> Float[Array, "b t e"]:
        """Hidden states for a whole (padded) batch without a cache."""
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (batch, length), got shape {tokens.shape}")
        mask = _default_mask(tokens, attention_mask)
        positions = positions_from_mask(mask) if positions is None else positions
        hidden, _ = self(tokens, positions, causal_padding_mask(mask))
        return hidden


class CausalLM(Constructible):
    """Decoder-only language model: :class:`Transformer` + LM head (tied or untied)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.model = Transformer(config, rngs=None)
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else Dense((config.hidden_size, config.vocab_size), ("embed", "vocab"), config)
        )
        draw_normal_params(self, rngs.params(), config.initializer_range)

    def logits_from_hidden(self, hidden: Float[Array, "b t e"]) -> Float[Array, "b t v"]:
        """LM head; logits are returned in float32 for stable log-softmax."""
        if self.lm_head is None:
            table = self.model.embed_tokens[...].astype(hidden.dtype)
            logits = jnp.einsum("bte,ve->btv", hidden, table, preferred_element_type=jnp.float32)
        else:
            logits = self.lm_head(hidden).astype(jnp.float32)
        return constrain(logits, ("batch", "length", "vocab"))

    def __call__(
        self,
        tokens: Int[Array, "b t"],
        *,
        attention_mask: Int[Array, "b t"] | None = None,
        positions: Int[Array, "b t"] | None = None,
    ) -> Float[Array, "b t v"]:
        """Next-token logits for every position of a (padded) batch."""
        return self.logits_from_hidden(self.model.encode(tokens, attention_mask, positions))

    def init_cache(self, batch: int, length: int, dtype=None) -> KVCache:
        """See :meth:`Transformer.init_cache`."""
        return self.model.init_cache(batch, length, dtype)

    def decode_step(
        self,
        tokens: Int[Array, "b t"],
        positions: Int[Array, "b t"],
        mask: Bool[Array, "b t s"],
        cache: KVCache,
        cache_index: Int[Array, ""],
    ) -> tuple[Float[Array, "b t v"], KVCache]:
        """Logits of ``tokens`` stored at cache slots ``cache_index, ...``, and the new cache."""
        hidden, cache = self.model(tokens, positions, mask, cache, cache_index)
        return self.logits_from_hidden(hidden), cache


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, tokens, attention_mask):
    return nnx.merge(graphdef, state)(tokens, attention_mask=attention_mask)


def logits(model: CausalLM, tokens, attention_mask=None) -> Float[Array, "b t v"]:
    """Jitted ``model(tokens, attention_mask=...)`` (compiled once per shape and graph)."""
    tokens = jnp.asarray(tokens)
    mask = _default_mask(tokens, attention_mask)
    graphdef, state = nnx.split(model)
    return _apply(graphdef, state, tokens, mask)
