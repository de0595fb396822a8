"""Transformer building blocks: RMSNorm, RoPE, grouped-query attention, SwiGLU MLP.

Every parameter is created by :func:`param`, which records its logical axis names in
the variable's ``out_sharding`` metadata and, when a mesh is active, constrains the
fresh value to the sharding those names resolve to. Weights are stored as
``(in..., out...)`` kernels with heads split out (``q_proj.kernel``: embed × heads ×
head_dim) so tensor parallelism can shard heads directly; the HF ``(out, in)``
layout is converted in :mod:`jaxalign.models.hf`.

Numerics follow the HF reference: RMSNorm in float32, RoPE angles in float32,
attention scores and softmax in float32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jaxalign.models.config import ModelConfig
from jaxalign.models.sharding import active_spec, constrain

LayerCache = tuple[jax.Array, jax.Array]


@functools.partial(jax.jit, static_argnames=("shape", "dtype", "fill", "spec"))
def _filled(*, shape, dtype, fill, spec):
    value = jnp.full(shape, fill, dtype)
    return value if spec is None else jax.lax.with_sharding_constraint(value, spec)


def param(
    shape: Sequence[int],
    names: Sequence[str | None],
    config: ModelConfig,
    init: str = "normal",
) -> nnx.Param:
    """A parameter carrying logical axis ``names``; sharded at birth when a mesh is active.

    ``eager_sharding=False`` because the names are logical: flax's eager sharding would
    treat them as mesh axes. They are resolved through the logical rules instead
    (:func:`~jaxalign.models.sharding.active_spec`); without an active mesh the value
    is left unsharded.

    ``init="normal"`` parameters are created as zeros and tagged; the top-level model
    then draws them all with :func:`draw_normal_params` (one random draw per distinct
    shape: on CPU every threefry call site costs most of a second of compile time).
    """
    if init not in ("normal", "ones", "zeros"):
        raise ValueError(f"init={init!r}; expected 'normal', 'ones' or 'zeros'")
    shape = tuple(int(s) for s in shape)
    value = _filled(
        shape=shape,
        dtype=config.weights_dtype,
        fill=1.0 if init == "ones" else 0.0,
        spec=active_spec(names, shape),
    )
    return nnx.Param(value, out_sharding=tuple(names), eager_sharding=False, init=init)


# Below this many weights all normal parameters come from one draw (compile time
# dominates); above it, one draw per shape group keeps peak memory per group.
_FLAT_DRAW_LIMIT = 1 << 24


def draw_normal_params(module: nnx.Module, key: jax.Array, std: float) -> None:
    """Fills every ``init="normal"`` parameter of ``module`` with N(0, std²) draws, in place.

    Why: on CPU each threefry call site costs most of a second of XLA compile time, so
    drawing per parameter makes model creation slow. Parameters are grouped by
    (shape, dtype) (ordered by path within a group); a small model takes all groups from
    one flat draw, a large one draws each group stacked along a new axis from
    ``fold_in(key, group)``. The result depends only on the key and the architecture.
    """
    groups: dict[tuple, list[tuple[str, nnx.Variable]]] = {}
    for path, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Param) and node.get_metadata().get("init") == "normal":
            value = node.get_value()
            groups.setdefault((tuple(value.shape), str(value.dtype)), []).append(
                ("/".join(map(str, path)), node)
            )
    ordered = [
        (shape, dtype, sorted(groups[(shape, dtype)], key=lambda item: item[0]))
        for shape, dtype in sorted(groups)
    ]
    sizes = [len(members) * math.prod(shape) for shape, _, members in ordered]
    std_f32 = jnp.asarray(std, jnp.float32)
    flat = None
    if sum(sizes) <= _FLAT_DRAW_LIMIT:
        flat = jax.random.normal(key, (sum(sizes),), jnp.float32)
    offset = 0
    for index, ((shape, dtype, members), size) in enumerate(zip(ordered, sizes)):
        stacked = (len(members), *shape)
        if flat is None:
            draws = jax.random.normal(jax.random.fold_in(key, index), stacked, jnp.float32)
        else:
            draws = flat[offset : offset + size].reshape(stacked)
        offset += size
        draws = (draws * std_f32).astype(dtype)
        for i, (_, variable) in enumerate(members):
            variable.set_value(constrain(draws[i], variable.get_metadata()["out_sharding"]))


class RMSNorm(nnx.Module):
    """y = x / sqrt(mean(x²) + ε) · scale, normalising over the last axis in float32."""

    def __init__(self, dim: int, config: ModelConfig, name: str = "embed"):
        self.scale = param((dim,), (name,), config, init="ones")
        self.eps = config.rms_norm_eps

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = (x32 * jax.lax.rsqrt(var + jnp.asarray(self.eps, jnp.float32))).astype(x.dtype)
        scale = self.scale[...].astype(x.dtype)
        return scale.reshape((1,) * (y.ndim - 1) + scale.shape) * y


class Dense(nnx.Module):
    """Contracts the last ``n_in`` axes of the input with the first ``n_in`` of the kernel."""

    def __init__(
        self,
        shape: Sequence[int],
        names: Sequence[str | None],
        config: ModelConfig,
        *,
        n_in: int = 1,
        bias: bool = False,
    ):
        self.kernel = param(shape, names, config)
        self.bias = param(shape[n_in:], names[n_in:], config, "zeros") if bias else None
        self.n_in = n_in
        self.dtype = config.compute_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)
        y = jnp.tensordot(x.astype(self.dtype), kernel, axes=self.n_in)
        if self.bias is not None:
            bias = self.bias[...].astype(self.dtype)
            y = y + bias.reshape((1,) * (y.ndim - bias.ndim) + bias.shape)
        return y


def rope_tables(
    positions: Int[Array, "b t"], inv_freq: jax.Array
) -> tuple[Float[Array, "b t 1 d"], Float[Array, "b t 1 d"]]:
    """(cos, sin) of the RoPE angles in float32, computed once per forward for all layers."""
    angles = positions.astype(jnp.float32)[..., None] * inv_freq[None, None, :]  # (b, t, d/2)
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(
    x: Float[Array, "b t h d"], rope: tuple[Float[Array, "b t 1 d"], Float[Array, "b t 1 d"]]
) -> Float[Array, "b t h d"]:
    """Rotary embedding in the HF "rotate half" layout (first/second half of head_dim pair up)."""
    cos, sin = rope[0].astype(x.dtype), rope[1].astype(x.dtype)
    x1, x2 = jnp.split(x, 2, axis=-1)
    return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


def attend(
    q: Float[Array, "b t h d"],
    k: Float[Array, "b s kh d"],
    v: Float[Array, "b s kh d"],
    mask: Bool[Array, "b t s"],
) -> Float[Array, "b t h d"]:
    """Grouped-query softmax attention; masked keys get the float32 minimum, not -inf.

    A query with no visible key (a left-padding position) then attends uniformly
    instead of producing NaN; such positions are ignored by every caller.
    """
    b, t, h, d = q.shape
    kh = k.shape[2]
    if t == 1:
        return _attend_one_query(q, k, v, mask)
    qg = q.reshape(b, t, kh, h // kh, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    scores = scores * jnp.asarray(d**-0.5, jnp.float32)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


def _attend_one_query(q, k, v, mask):
    """Decode-step attention (one query per row) as broadcast-multiply-and-sum.

    Why: XLA:CPU lowers the tiny batched dot of a single query against the cache poorly
    (about 2-3x slower than this fused elementwise form); the result is identical.
    """
    b, _, h, d = q.shape
    kh = k.shape[2]
    qg = q.reshape(b, 1, kh, h // kh, d).astype(jnp.float32)  # (b, 1, kh, g, d)
    scores = jnp.sum(qg * k[:, :, :, None, :].astype(jnp.float32), axis=-1)  # (b, s, kh, g)
    scores = scores * jnp.asarray(d**-0.5, jnp.float32)
    scores = jnp.where(mask[:, 0, :, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=1).astype(v.dtype)
    out = jnp.sum(probs[..., None] * v[:, :, :, None, :], axis=1)  # (b, kh, g, d)
    return out.reshape(b, 1, h, d)


class Attention(nnx.Module):
    """Multi-head attention with grouped key/value heads, optional qkv bias and q/k RMSNorm."""

    def __init__(self, config: ModelConfig):
        c = config
        e, h, kh, d = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        self.q_proj = Dense((e, h, d), ("embed", "heads", "head_dim"), c, bias=c.qkv_bias)
        self.k_proj = Dense((e, kh, d), ("embed", "kv_heads", "head_dim"), c, bias=c.qkv_bias)
        self.v_proj = Dense((e, kh, d), ("embed", "kv_heads", "head_dim"), c, bias=c.qkv_bias)
        self.o_proj = Dense((h, d, e), ("heads", "head_dim", "embed"), c, n_in=2, bias=c.o_bias)
        self.q_norm = RMSNorm(d, c, "head_dim") if c.qk_norm else None
        self.k_norm = RMSNorm(d, c, "head_dim") if c.qk_norm else None

    def __call__(
        self,
        x: Float[Array, "b t e"],
        rope: tuple[jax.Array, jax.Array],
        mask: Bool[Array, "b t s"],
        cache: LayerCache | None = None,
        cache_index: Int[Array, ""] | None = None,
    ) -> tuple[Float[Array, "b t e"], LayerCache | None]:
        q = constrain(self.q_proj(x), ("batch", "length", "heads", "head_dim"))
        k = constrain(self.k_proj(x), ("batch", "length", "kv_heads", "head_dim"))
        v = constrain(self.v_proj(x), ("batch", "length", "kv_heads", "head_dim"))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        if cache is not None:
            zero = jnp.zeros((), jnp.int32)
            start = (zero, jnp.asarray(cache_index, jnp.int32), zero, zero)
            k_cache = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), start)
            v_cache = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), start)
            cache = (k_cache, v_cache)
            k, v = k_cache, v_cache
        out = attend(q, k, v, mask)
        return self.o_proj(out), cache


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) · up(x))."""

    def __init__(self, config: ModelConfig):
        e, m = config.hidden_size, config.intermediate_size
        self.gate_proj = Dense((e, m), ("embed", "mlp"), config)
        self.up_proj = Dense((e, m), ("embed", "mlp"), config)
        self.down_proj = Dense((m, e), ("mlp", "embed"), config)

    def __call__(self, x: Float[Array, "b t e"]) -> Float[Array, "b t e"]:
        hidden = jax.nn.silu(self.gate_proj(x)) * self.up_proj(x)
        return self.down_proj(constrain(hidden, ("batch", "length", "mlp")))


class DecoderLayer(nnx.Module):
    """Pre-norm block: x + attn(norm(x)), then + mlp(norm(·))."""

    def __init__(self, config: ModelConfig):
        self.input_layernorm = RMSNorm(config.hidden_size, config)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config)
        self.mlp = MLP(config)

    def __call__(
        self,
        x: Float[Array, "b t e"],
        rope: tuple[jax.Array, jax.Array],
        mask: Bool[Array, "b t s"],
        cache: LayerCache | None = None,
        cache_index: Int[Array, ""] | None = None,
    ) -> tuple[Float[Array, "b t e"], LayerCache | None]:
        attn_out, cache = self.self_attn(self.input_layernorm(x), rope, mask, cache, cache_index)
        x = constrain(x + attn_out, ("batch", "length", "act_embed"))
        x = x + self.mlp(self.post_attention_layernorm(x))
        return constrain(x, ("batch", "length", "act_embed")), cache
