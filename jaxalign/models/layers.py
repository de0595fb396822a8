"""Transformer building blocks: RMSNorm, RoPE, grouped-query attention, SwiGLU MLP.

Every parameter is created by :func:`param`, which records its logical axis names in
the variable's ``out_sharding`` metadata and, when a mesh is active, constrains the
fresh value to the sharding those names resolve to. Weights are stored as
``(in..., out...)`` kernels with heads split out (``q_proj.kernel``: embed × heads ×
head_dim) so tensor parallelism can shard heads directly; the HF ``(out, in)``
layout is converted in :mod:`jaxalign.models.hf`.

Decoder layers are *stacked*: :class:`DecoderLayer` built with ``stack=L`` holds every
parameter with a leading layer axis (logical name ``layers``), and the trunk runs it with
one ``jax.lax.scan`` (compile time independent of depth), optionally rematerialised
(:func:`remat_policy`).

Numerics follow the HF reference: RMSNorm in float32, RoPE angles in float32, softmax in
float32. Attention goes through :func:`jax.nn.dot_product_attention` (cuDNN's fused
kernel on GPU, XLA elsewhere); the matmuls take the compute dtype (bf16 for training at
scale) and accumulate in float32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name
from jaxtyping import Array, Bool, Float, Int

from jaxalign.models.config import ATTENTION_IMPLEMENTATIONS, REMAT_POLICIES, ModelConfig
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
    *,
    stack: int | None = None,
) -> nnx.Param:
    """A parameter carrying logical axis ``names``; sharded at birth when a mesh is active.

    ``stack=L`` prepends a layer axis (logical name ``layers``): one array holds the
    parameter of all ``L`` stacked layers.

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
    names = tuple(names)
    if stack is not None:
        shape, names = (int(stack), *shape), ("layers", *names)
    value = _filled(
        shape=shape,
        dtype=config.weights_dtype,
        fill=1.0 if init == "ones" else 0.0,
        spec=active_spec(names, shape),
    )
    return nnx.Param(value, out_sharding=names, eager_sharding=False, init=init)


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

    A stacked layer parameter (leading ``layers`` axis) takes part as its ``L`` per-layer
    slices, named ``…/layers/<i>/…``: a model draws the same weights whether its layers
    are stacked or not.
    """
    groups: dict[tuple, list[tuple[str, nnx.Variable, int | None]]] = {}
    for path, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Param) and node.get_metadata().get("init") == "normal":
            value = node.get_value()
            parts = [str(p) for p in path]
            names = node.get_metadata().get("out_sharding") or ()
            if names and names[0] == "layers":
                at = parts.index("layers") + 1
                for i in range(value.shape[0]):
                    name = "/".join([*parts[:at], str(i), *parts[at:]])
                    key_ = (tuple(value.shape[1:]), str(value.dtype))
                    groups.setdefault(key_, []).append((name, node, i))
            else:
                key_ = (tuple(value.shape), str(value.dtype))
                groups.setdefault(key_, []).append(("/".join(parts), node, None))
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
    slices: dict[int, tuple[nnx.Variable, dict[int, jax.Array]]] = {}
    for index, ((shape, dtype, members), size) in enumerate(zip(ordered, sizes)):
        stacked = (len(members), *shape)
        if flat is None:
            draws = jax.random.normal(jax.random.fold_in(key, index), stacked, jnp.float32)
        else:
            draws = flat[offset : offset + size].reshape(stacked)
        offset += size
        draws = (draws * std_f32).astype(dtype)
        for i, (_, variable, layer) in enumerate(members):
            if layer is None:
                variable.set_value(constrain(draws[i], variable.get_metadata()["out_sharding"]))
            else:
                slices.setdefault(id(variable), (variable, {}))[1][layer] = draws[i]
    for variable, layers in slices.values():
        value = jnp.stack([layers[i] for i in range(len(layers))])
        variable.set_value(constrain(value, variable.get_metadata()["out_sharding"]))


class RMSNorm(nnx.Module):
    """y = x / sqrt(mean(x²) + ε) · scale, normalising over the last axis in float32."""

    def __init__(
        self, dim: int, config: ModelConfig, name: str = "embed", *, stack: int | None = None
    ):
        self.scale = param((dim,), (name,), config, init="ones", stack=stack)
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
        stack: int | None = None,
    ):
        self.kernel = param(shape, names, config, stack=stack)
        self.bias = (
            param(shape[n_in:], names[n_in:], config, "zeros", stack=stack) if bias else None
        )
        self.n_in = n_in
        self.dtype = config.compute_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)
        # In the compute dtype; accelerators accumulate bf16 products in float32.
        y = jnp.tensordot(x.astype(self.dtype), kernel, axes=self.n_in)
        # LoRA (jaxalign.models.lora): adapters exist only on adapted projections, so the
        # plain model's graph and computation are untouched.
        lora_a = getattr(self, "lora_a", None)
        if lora_a is not None:
            a = lora_a[...].astype(self.dtype)
            b = self.lora_b[...].astype(self.dtype)
            x_a = x.astype(self.dtype)
            dropout_key = getattr(self, "lora_dropout_key", None)
            if dropout_key is not None:  # training with lora.dropout: the adapter input only
                keep = 1.0 - self.lora_dropout
                mask = jax.random.bernoulli(jax.random.wrap_key_data(dropout_key[...]), keep,
                                            x_a.shape)  # fmt: skip
                x_a = jnp.where(mask, x_a * jnp.asarray(1.0 / keep, self.dtype),
                                jnp.zeros((), self.dtype))  # fmt: skip
            low = jnp.tensordot(x_a, a, axes=self.n_in)
            y = y + jnp.tensordot(low, b, axes=1) * jnp.asarray(self.lora_scale, self.dtype)
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


def _use_cudnn(implementation: str, q: jax.Array) -> bool:
    """Whether ``implementation`` resolves to cuDNN's fused kernel for these inputs."""
    if implementation == "cudnn":
        return True
    if implementation != "auto" or jax.default_backend() != "gpu":
        return False
    d = q.shape[-1]
    # cuDNN flash attention: half-precision inputs, head_dim a multiple of 8 up to 128.
    return q.dtype in (jnp.bfloat16, jnp.float16) and d % 8 == 0 and d <= 128


def attend(
    q: Float[Array, "b t h d"],
    k: Float[Array, "b s kh d"],
    v: Float[Array, "b s kh d"],
    mask: Bool[Array, "b t s"],
    implementation: str = "auto",
) -> Float[Array, "b t h d"]:
    """Grouped-query softmax attention through :func:`jax.nn.dot_product_attention`.

    ``mask[b, i, j]`` says whether query ``i`` sees key ``j`` (causality, padding and
    packed-segment boundaries are all in it). ``implementation``: ``"xla"`` (any
    backend; scores are formed in float32), ``"cudnn"`` (GPU fused flash attention:
    scores never leave the kernel), ``"auto"`` (cuDNN on a GPU when the dtype and head
    size allow it, else XLA). Masked keys get a large negative score, not -inf, so a
    query with no visible key (a left-padding position) attends uniformly instead of
    producing NaN; such positions are ignored by every caller.
    """
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attention implementation {implementation!r}; expected one of "
            f"{ATTENTION_IMPLEMENTATIONS}"
        )
    if q.shape[1] == 1 and implementation != "cudnn":
        return _attend_one_query(q, k, v, mask)
    k, v, mask = k.astype(q.dtype), v.astype(q.dtype), mask[:, None]
    # jax's attention promotes bf16 with float32 internally, which strict promotion refuses.
    with jax.numpy_dtype_promotion("standard"):
        if _use_cudnn(implementation, q):
            try:
                return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
            except Exception:  # a shape/layout this GPU's cuDNN lacks: XLA is exact too
                if implementation == "cudnn":
                    raise
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


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
    return out.reshape(b, 1, h, d).astype(q.dtype)


#: Names of the activations the remat policies can save (``jax.ad_checkpoint.checkpoint_name``).
QKV_NAMES = ("query_proj", "key_proj", "value_proj")
ATTENTION_OUT = "attention_out"


def remat_policy(name: str):
    """``(rematerialise?, jax checkpoint policy)`` for a policy name of :data:`REMAT_POLICIES`.

    * ``none`` — no rematerialisation: every activation of every layer is kept.
    * ``full`` — only each layer's input is kept; the backward pass reruns the layer.
    * ``save_dots`` — keep the outputs of weight matmuls (no batch dimensions), rerun
      attention and the elementwise ops (``dots_with_no_batch_dims_saveable``).
    * ``save_qkv_proj`` — keep the q/k/v projections, rerun the rest.
    * ``save_attention`` — keep q/k/v and the attention output, so attention itself is
      never rerun.
    * ``offload`` — like ``save_attention``, but the saved arrays live in pinned host
      memory (GPU/TPU only; refused on CPU, which has no separate host memory).
    """
    policies = jax.checkpoint_policies
    if name == "none":
        return False, None
    if name == "full":
        return True, policies.nothing_saveable
    if name == "save_dots":
        return True, policies.dots_with_no_batch_dims_saveable
    if name == "save_qkv_proj":
        return True, policies.save_only_these_names(*QKV_NAMES)
    if name == "save_attention":
        return True, policies.save_only_these_names(*QKV_NAMES, ATTENTION_OUT)
    if name == "offload":
        if jax.default_backend() == "cpu":
            raise ValueError(
                "remat='offload' moves saved activations to pinned host memory, which the CPU "
                "backend does not have; use 'full', 'save_dots', 'save_qkv_proj' or "
                "'save_attention' on CPU"
            )
        return True, policies.save_and_offload_only_these_names(
            names_which_can_be_saved=[],
            names_which_can_be_offloaded=[*QKV_NAMES, ATTENTION_OUT],
            offload_src="device",
            offload_dst="pinned_host",
        )
    raise ValueError(f"remat policy {name!r}; expected one of {REMAT_POLICIES}")


class Attention(nnx.Module):
    """Multi-head attention with grouped key/value heads, optional qkv bias and q/k RMSNorm."""

    def __init__(self, config: ModelConfig, *, stack: int | None = None):
        c = config
        e, h, kh, d = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        dense = functools.partial(Dense, config=c, stack=stack)
        self.q_proj = dense((e, h, d), ("embed", "heads", "head_dim"), bias=c.qkv_bias)
        self.k_proj = dense((e, kh, d), ("embed", "kv_heads", "head_dim"), bias=c.qkv_bias)
        self.v_proj = dense((e, kh, d), ("embed", "kv_heads", "head_dim"), bias=c.qkv_bias)
        self.o_proj = dense((h, d, e), ("heads", "head_dim", "embed"), n_in=2, bias=c.o_bias)
        self.q_norm = RMSNorm(d, c, "head_dim", stack=stack) if c.qk_norm else None
        self.k_norm = RMSNorm(d, c, "head_dim", stack=stack) if c.qk_norm else None
        self.implementation = c.attention

    def __call__(
        self,
        x: Float[Array, "b t e"],
        rope: tuple[jax.Array, jax.Array],
        mask: Bool[Array, "b t s"],
        cache: LayerCache | None = None,
        cache_index: Int[Array, ""] | None = None,
    ) -> tuple[Float[Array, "b t e"], LayerCache | None]:
        """Output, and with ``cache`` (this layer's keys/values) the *new* keys and values.

        The new ``(b, t, kv_heads, head_dim)`` keys/values belong at cache slots
        ``cache_index, ...``; attention already sees them, the caller stores them.
        """
        q = constrain(self.q_proj(x), ("batch", "length", "heads", "head_dim"))
        k = constrain(self.k_proj(x), ("batch", "length", "kv_heads", "head_dim"))
        v = constrain(self.v_proj(x), ("batch", "length", "kv_heads", "head_dim"))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        q, k, v = (checkpoint_name(a, n) for a, n in zip((q, k, v), QKV_NAMES))
        new = None
        if cache is not None:
            zero = jnp.zeros((), jnp.int32)
            start = (zero, jnp.asarray(cache_index, jnp.int32), zero, zero)
            new = (k.astype(cache[0].dtype), v.astype(cache[1].dtype))
            k = jax.lax.dynamic_update_slice(cache[0], new[0], start)
            v = jax.lax.dynamic_update_slice(cache[1], new[1], start)
        out = checkpoint_name(attend(q, k, v, mask, self.implementation), ATTENTION_OUT)
        return self.o_proj(out), new


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) · up(x))."""

    def __init__(self, config: ModelConfig, *, stack: int | None = None):
        e, m = config.hidden_size, config.intermediate_size
        self.gate_proj = Dense((e, m), ("embed", "mlp"), config, stack=stack)
        self.up_proj = Dense((e, m), ("embed", "mlp"), config, stack=stack)
        self.down_proj = Dense((m, e), ("mlp", "embed"), config, stack=stack)

    def __call__(self, x: Float[Array, "b t e"]) -> Float[Array, "b t e"]:
        hidden = jax.nn.silu(self.gate_proj(x)) * self.up_proj(x)
        return self.down_proj(constrain(hidden, ("batch", "length", "mlp")))


class DecoderLayer(nnx.Module):
    """Pre-norm block: x + attn(norm(x)), then + mlp(norm(·)).

    With ``stack=L`` the module holds ``L`` such blocks (every parameter has a leading
    layer axis); :class:`~jaxalign.models.Transformer` scans over it.
    """

    def __init__(self, config: ModelConfig, *, stack: int | None = None):
        e = config.hidden_size
        self.input_layernorm = RMSNorm(e, config, stack=stack)
        self.self_attn = Attention(config, stack=stack)
        self.post_attention_layernorm = RMSNorm(e, config, stack=stack)
        self.mlp = MLP(config, stack=stack)

    def __call__(
        self,
        x: Float[Array, "b t e"],
        rope: tuple[jax.Array, jax.Array],
        mask: Bool[Array, "b t s"],
        cache: LayerCache | None = None,
        cache_index: Int[Array, ""] | None = None,
    ) -> tuple[Float[Array, "b t e"], LayerCache | None]:
        """Output and, with ``cache``, the new keys/values (see :class:`Attention`)."""
        attn_out, new = self.self_attn(self.input_layernorm(x), rope, mask, cache, cache_index)
        x = constrain(x + attn_out, ("batch", "length", "act_embed"))
        x = x + self.mlp(self.post_attention_layernorm(x))
        return constrain(x, ("batch", "length", "act_embed")), new
