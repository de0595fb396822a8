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
from typing import NamedTuple, TypeVar

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jaxalign.models.config import ModelConfig
from jaxalign.models.layers import (
    DecoderLayer,
    Dense,
    RMSNorm,
    draw_normal_params,
    param,
    remat_policy,
    rope_tables,
)
from jaxalign.models.logprobs import chunked_token_logprobs, project_logits, vocab_parallel
from jaxalign.models.sharding import DEFAULT_RULES, LogicalRules, axis_rules, constrain
from jaxalign.models.sharding import state_shardings as _state_shardings


class KVCache(NamedTuple):
    """Keys and values of all layers, stacked: each (layers, batch, slots, kv_heads, head_dim)."""

    keys: jax.Array
    values: jax.Array


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


def positions_from_segments(segment_ids: Int[Array, "b l"]) -> Int[Array, "b l"]:
    """Position ids restarting at 0 at the first token of every packed segment."""
    seg = jnp.asarray(segment_ids)
    index = jnp.broadcast_to(jnp.arange(seg.shape[-1], dtype=jnp.int32), seg.shape)
    starts = jnp.concatenate(
        [jnp.ones((*seg.shape[:-1], 1), bool), seg[..., 1:] != seg[..., :-1]], axis=-1
    )
    start_index = jax.lax.cummax(jnp.where(starts, index, 0), axis=seg.ndim - 1)
    return index - start_index


def segment_causal_mask(
    segment_ids: Int[Array, "b l"], branch_ids: Int[Array, "b l"] | None = None
) -> Bool[Array, "b l l"]:
    """mask[b, i, j]: token i sees token j in a packed row.

    ``j <= i``, both in the same segment (segment ids 1, 2, …; 0 = padding), and — with
    ``branch_ids`` — ``j`` in the segment's shared prefix (branch 0) or in i's own branch.
    Several sequences packed into one row then attend only within themselves, exactly as
    if each had its own row; with branches, two continuations share one computed prefix.
    """
    seg = jnp.asarray(segment_ids)
    length = seg.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    mask = causal[None] & (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
    if branch_ids is not None:
        br = jnp.asarray(branch_ids)
        mask = mask & ((br[:, None, :] == 0) | (br[:, None, :] == br[:, :, None]))
    return mask


def default_attention_mask(tokens: jax.Array, attention_mask) -> jax.Array:
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
        # All decoder layers as one stacked module (leading "layers" axis), run by a scan.
        self.layers = DecoderLayer(config, stack=config.num_layers)
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
        """Final normalised hidden states; with ``cache``, new keys/values go to ``cache_index``.

        The layers run as one ``jax.lax.scan`` over the stacked parameters (compile time
        does not grow with depth), each step rematerialised per ``config.remat``.
        """
        # Vocabulary-parallel lookup in the compute dtype: the table is never all-gathered.
        table = vocab_parallel(self.embed_tokens[...].astype(self.config.compute_dtype), True)
        x = jnp.take(table, tokens, axis=0)
        x = constrain(x, ("batch", "length", "act_embed"))
        rope = rope_tables(positions, jnp.asarray(self.inv_freq, jnp.float32))
        graphdef, stacked = nnx.split(self.layers)
        remat, policy = remat_policy(self.config.remat)

        if cache is None:

            def body(x, params):
                return nnx.merge(graphdef, params)(x, rope, mask)[0], None

            if remat:
                body = jax.checkpoint(body, policy=policy, prevent_cse=False)
            x, _ = jax.lax.scan(body, x, stacked, unroll=self.config.scan_unroll)
            return self.norm(x), None

        index = jnp.asarray(cache_index, jnp.int32)

        def cached_body(carry, xs):
            x, keys, values = carry
            params, layer = xs
            layer_cache = (keys[layer], values[layer])
            x, (k, v) = nnx.merge(graphdef, params)(x, rope, mask, layer_cache, index)
            zero = jnp.zeros((), jnp.int32)
            start = (layer, zero, index, zero, zero)
            keys = jax.lax.dynamic_update_slice(keys, k[None], start)
            values = jax.lax.dynamic_update_slice(values, v[None], start)
            return (x, keys, values), None

        layers = jnp.arange(self.config.num_layers, dtype=jnp.int32)
        carry = (x, cache.keys, cache.values)
        (x, keys, values), _ = jax.lax.scan(
            cached_body, carry, (stacked, layers), unroll=self.config.scan_unroll
        )
        return self.norm(x), KVCache(keys, values)

    def init_cache(self, batch: int, length: int, dtype=None) -> KVCache:
        """Zero KV cache with ``length`` slots: keys and values, each (layers, b, s, kv, dim)."""
        c = self.config
        dtype = c.compute_dtype if dtype is None else dtype
        shape = (c.num_layers, batch, length, c.num_kv_heads, c.head_dim)
        names = ("layers", "batch", "cache_length", "kv_heads", "head_dim")
        zeros = lambda: constrain(jnp.zeros(shape, dtype), names)
        return KVCache(zeros(), zeros())

    def encode(
        self,
        tokens: Int[Array, "b t"],
        attention_mask: Int[Array, "b t"] | None = None,
        positions: Int[Array, "b t"] | None = None,
        segment_ids: Int[Array, "b t"] | None = None,
        branch_ids: Int[Array, "b t"] | None = None,
    ) -> Float[Array, "b t e"]:
        """Hidden states for a whole (padded or packed) batch without a cache.

        With ``segment_ids`` (packed rows: 1, 2, ... per sequence, 0 = padding) each
        sequence attends only to itself (:func:`segment_causal_mask`, with ``branch_ids``
        for prefix-sharing continuations) and positions restart per segment unless
        given; ``attention_mask`` is then ignored.
        """
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (batch, length), got shape {tokens.shape}")
        if segment_ids is not None:
            segment_ids = jnp.asarray(segment_ids)
            if segment_ids.shape != tokens.shape:
                raise ValueError(
                    f"segment_ids.shape={segment_ids.shape} must equal tokens.shape={tokens.shape}"
                )
            positions = positions_from_segments(segment_ids) if positions is None else positions
            mask = segment_causal_mask(segment_ids, branch_ids)
            hidden, _ = self(tokens, positions, mask)
            return hidden
        mask = default_attention_mask(tokens, attention_mask)
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

    def head_weights(self) -> tuple[jax.Array, bool]:
        """``(weight, tied)``: the LM head in the compute dtype, (vocab, embed) when tied to
        the embedding table, else (embed, vocab)."""
        dtype = self.config.compute_dtype
        if self.lm_head is None:
            return vocab_parallel(self.model.embed_tokens[...].astype(dtype), True), True
        return vocab_parallel(self.lm_head.kernel[...].astype(dtype), False), False

    def logits_from_hidden(self, hidden: Float[Array, "b t e"]) -> Float[Array, "b t v"]:
        """LM head; logits are returned in float32 (accumulated in float32) for log-softmax."""
        return project_logits(hidden, *self.head_weights())

    def token_logprobs(
        self,
        tokens: Int[Array, "b t"],
        *,
        attention_mask: Int[Array, "b t"] | None = None,
        positions: Int[Array, "b t"] | None = None,
        segment_ids: Int[Array, "b t"] | None = None,
        branch_ids: Int[Array, "b t"] | None = None,
    ) -> Float[Array, "b t"]:
        """``out[:, t] = log π(tokens[:, t] | tokens[:, :t])`` (0 at t = 0), float32.

        Computed from the hidden states in chunks of ``config.logprob_chunk_size``
        positions, each chunk's logits rematerialised in the backward pass, so the
        ``(batch, length, vocab)`` logits never exist at once.
        """
        hidden = self.model.encode(tokens, attention_mask, positions, segment_ids, branch_ids)
        return chunked_token_logprobs(
            hidden, *self.head_weights(), jnp.asarray(tokens), self.config.logprob_chunk_size
        )

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

    def prefill(
        self,
        tokens: Int[Array, "b t"],
        positions: Int[Array, "b t"],
        mask: Bool[Array, "b t s"],
        cache: KVCache,
    ) -> tuple[Float[Array, "b v"], KVCache]:
        """Fills cache slots ``0 .. t-1``; returns only the *last* position's logits."""
        hidden, cache = self.model(tokens, positions, mask, cache, jnp.zeros((), jnp.int32))
        return self.logits_from_hidden(hidden[:, -1:])[:, 0], cache


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, tokens, attention_mask):
    return nnx.merge(graphdef, state)(tokens, attention_mask=attention_mask)


def logits(model: CausalLM, tokens, attention_mask=None) -> Float[Array, "b t v"]:
    """Jitted ``model(tokens, attention_mask=...)`` (compiled once per shape and graph)."""
    tokens = jnp.asarray(tokens)
    mask = default_attention_mask(tokens, attention_mask)
    graphdef, state = nnx.split(model)
    return _apply(graphdef, state, tokens, mask)
