r"""Batched autoregressive sampling with a KV cache and a jitted ``lax.while_loop`` decode.

One call of :func:`generate`:

1. Prompts are left-aligned (pads moved to the front, order of real tokens kept), so
   every row's next token goes into the same cache slot; positions still count only
   real tokens, so the logits equal those of the unpadded prompt.
2. Prefill: one forward pass over the prompts writes keys/values into cache slots
   ``0 .. P-1`` and gives the first next-token distribution.
3. Decode: ``lax.while_loop`` over at most ``max_new_tokens - 1`` steps, each feeding
   the last token (cache slot ``P + t - 1``) and sampling the next. Rows stop at an
   EOS token (kept, and counted in the response) and are padded afterwards; the loop
   exits early once every row is done.

Sampling applies the temperature, then nucleus (top-p) truncation; temperature 0 is
greedy (argmax). The whole of steps 2-3 is one ``jax.jit`` (compiled once per shapes,
graph and sampling settings).

With a ``mixture_model`` (e.g. the frozen reference π_ref) both models run in lockstep,
each with its own KV cache, and every token is drawn from the per-token geometric
mixture that Nash-MD-PG samples opponents from,

.. math::
    \log\pi^{\alpha}(y_t \mid x, y_{<t}) =
    \operatorname{log\_softmax}\big(\alpha \log\pi_{ref}(\cdot \mid x, y_{<t})
    + (1-\alpha) \log\pi(\cdot \mid x, y_{<t})\big)_{y_t},

(:func:`token_level_mixture`), then temperature and top-p as usual.
Per step this is the normalised geometric mean of the two next-token distributions;
over whole sequences it is **not** the sequence-level mixture
:math:`\pi^{1-\alpha}\pi_{ref}^{\alpha}/Z` of Nash-MD's theory
(:func:`jaxalign.losses.sequence_level_mixture`), because each step is normalised
separately.

References:
  Munos et al., "Nash Learning from Human Feedback", ICML 2024 (Nash-MD, and its
  token-level mixture for Nash-MD-PG).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jaxalign._checks import is_concrete
from jaxalign.models.transformer import positions_from_mask


def token_level_mixture(
    policy_logits: Float[ArrayLike, "... v"], ref_logits: Float[ArrayLike, "... v"], *, mix: float
) -> Float[Array, "... v"]:
    r"""The per-token geometric mixture Nash-MD-PG samples opponents from:
    ``log_softmax(mix · ref_logits + (1 − mix) · policy_logits)``.

    This is **not** the sequence-level mixture of the theory,
    :math:`\pi^\mu \propto \pi^{1-\text{mix}}\pi_{ref}^{\text{mix}}` over whole sequences;
    see :func:`sequence_level_mixture` and the ``tokenmix-vs-seqmix`` study.
    """
    if is_concrete(mix) and not 0 <= float(mix) <= 1:
        raise ValueError(f"mix must be in [0, 1], got {mix!r}")
    p = jax.nn.log_softmax(jnp.asarray(policy_logits), axis=-1)
    r = jax.nn.log_softmax(jnp.asarray(ref_logits), axis=-1)
    return jax.nn.log_softmax(mix * r + (1 - mix) * p, axis=-1)


class Generation(NamedTuple):
    """Output of :func:`generate` (``n = max_new_tokens``, ``p`` = prompt length)."""

    # Generated token ids; pad id after a row's EOS.
    tokens: Int[Array, "b n"]
    # log π(token | prefix) under the model itself (temperature 1, full vocabulary): the
    # per-token values :func:`~jaxalign.models.sequence_logprobs` recomputes. 0 where masked.
    logprobs: Float[Array, "b n"]
    # log-probability under the distribution actually sampled from (after temperature and
    # top-p); 0 for greedy decoding and where masked.
    sampling_logprobs: Float[Array, "b n"]
    # True for generated tokens up to and including EOS.
    response_mask: Bool[Array, "b n"]
    # The prompts, left-aligned (pads first), and their attention mask.
    prompt_tokens: Int[Array, "b p"]
    prompt_mask: Bool[Array, "b p"]
    # log π_mixture_model(token | prefix) (temperature 1, full vocabulary) when sampling
    # from a mixture; zeros without one (from :func:`generate`). 0 where masked.
    reference_logprobs: Float[Array, "b n"] | None = None

    @property
    def sequences(self) -> Int[Array, "b p+n"]:
        """Prompt followed by response, ready for :func:`sequence_logprobs`."""
        return jnp.concatenate([self.prompt_tokens, self.tokens], axis=1)

    @property
    def attention_mask(self) -> Bool[Array, "b p+n"]:
        return jnp.concatenate([self.prompt_mask, self.response_mask], axis=1)

    @property
    def sequence_response_mask(self) -> Bool[Array, "b p+n"]:
        return jnp.concatenate([jnp.zeros_like(self.prompt_mask), self.response_mask], axis=1)


def left_align(
    tokens: Int[Array, "b l"], mask: Int[Array, "b l"]
) -> tuple[Int[Array, "b l"], Bool[Array, "b l"]]:
    """Moves padding to the front of each row, keeping the order of the real tokens."""
    mask = jnp.asarray(mask).astype(bool)
    order = jnp.argsort(mask.astype(jnp.int32), axis=-1, stable=True)
    return jnp.take_along_axis(tokens, order, axis=-1), jnp.take_along_axis(mask, order, axis=-1)


def _gather(logp, token):
    return jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


def _draw(logits, key, temperature: float, top_p: float):
    """(token, sampling log-prob) for each row of ``logits`` (b, v)."""
    if temperature == 0.0:
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return token, jnp.zeros(token.shape, jnp.float32)
    scaled = logits / jnp.asarray(temperature, logits.dtype)
    if top_p < 1.0:
        # Keep the smallest set of most likely tokens whose mass reaches top_p.
        sorted_desc = -jnp.sort(-scaled, axis=-1)
        probs = jax.nn.softmax(sorted_desc, axis=-1)
        keep = (jnp.cumsum(probs, axis=-1) - probs) < jnp.asarray(top_p, probs.dtype)
        cutoff = jnp.min(jnp.where(keep, sorted_desc, jnp.inf), axis=-1, keepdims=True)
        scaled = jnp.where(scaled >= cutoff, scaled, -jnp.inf)
    token = jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)
    return token, _gather(jax.nn.log_softmax(scaled, axis=-1), token)


def _sample(logits, ref_logits, mix, key, temperature: float, top_p: float):
    """(token, model log-prob, sampling log-prob, reference log-prob or None) per row.

    Without ``ref_logits`` the token is drawn from ``logits``; with them, from the
    token-level geometric mixture of the two (weight ``mix`` on the reference).
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    if ref_logits is None:
        token, sampling = _draw(logits, key, temperature, top_p)
        return token, _gather(logp, token), sampling, None
    mixed = token_level_mixture(logits, ref_logits, mix=mix)
    token, sampling = _draw(mixed, key, temperature, top_p)
    ref_logp = jax.nn.log_softmax(ref_logits, axis=-1)
    return token, _gather(logp, token), sampling, _gather(ref_logp, token)


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "ref_graphdef", "max_new_tokens", "temperature", "top_p"),
)
def _generate(
    graphdef,
    state,
    prompts,
    mask,
    key,
    eos_ids,
    pad_id,
    *,
    max_new_tokens,
    temperature,
    top_p,
    ref_graphdef=None,
    ref_state=None,
    mix=None,
):
    model = nnx.merge(graphdef, state)
    mixing = ref_graphdef is not None
    ref_model = nnx.merge(ref_graphdef, ref_state) if mixing else None
    b, p = prompts.shape
    n = max_new_tokens
    s = p + n
    cache = model.init_cache(b, s)
    key_valid = jnp.concatenate([mask, jnp.zeros((b, n), bool)], axis=1)
    slots = jnp.arange(s, dtype=jnp.int32)
    prefill_mask = (slots[None, :] <= jnp.arange(p, dtype=jnp.int32)[:, None])[None] & key_valid[
        :, None, :
    ]
    prefill_args = (prompts, positions_from_mask(mask), prefill_mask)
    # Prefill: the prompts' keys/values, and logits at the last position only.
    logits, cache = model.prefill(*prefill_args, cache)
    ref_logits = ref_cache = None
    if mixing:
        ref_logits, ref_cache = ref_model.prefill(*prefill_args, ref_model.init_cache(b, s))
    first, first_lp, first_slp, first_rlp = _sample(
        logits, ref_logits, mix, jax.random.fold_in(key, 0), temperature, top_p
    )
    is_eos = lambda tok: jnp.any(tok[:, None] == eos_ids[None, :], axis=-1)
    zeros_f = jnp.zeros((b, n), jnp.float32)
    carry = dict(
        t=jnp.ones((), jnp.int32),
        cache=cache,
        key_valid=key_valid,
        last=first,
        position=jnp.sum(mask, axis=-1, dtype=jnp.int32),
        done=is_eos(first),
        tokens=jnp.full((b, n), pad_id, jnp.int32).at[:, 0].set(first),
        logprobs=zeros_f.at[:, 0].set(first_lp),
        sampling=zeros_f.at[:, 0].set(first_slp),
        alive=jnp.zeros((b, n), bool).at[:, 0].set(True),
    )
    if mixing:
        carry.update(ref_cache=ref_cache, ref_logprobs=zeros_f.at[:, 0].set(first_rlp))

    def cond(c):
        return (c["t"] < n) & ~jnp.all(c["done"])

    def body(c):
        t = c["t"]
        slot = p + t - 1  # cache slot of the token being fed
        prev_alive = jax.lax.dynamic_index_in_dim(c["alive"], t - 1, axis=1, keepdims=False)
        key_valid = jax.lax.dynamic_update_index_in_dim(c["key_valid"], prev_alive, slot, axis=1)
        step_mask = key_valid[:, None, :] & (slots <= slot)[None, None, :]
        step_args = (c["last"][:, None], c["position"][:, None], step_mask)
        logits, cache = model.decode_step(*step_args, c["cache"], slot)
        ref_logits = ref_cache = None
        if mixing:
            ref_logits, ref_cache = ref_model.decode_step(*step_args, c["ref_cache"], slot)
            ref_logits = ref_logits[:, 0]
        token, lp, slp, rlp = _sample(
            logits[:, 0], ref_logits, mix, jax.random.fold_in(key, t), temperature, top_p
        )
        alive = ~c["done"]
        token = jnp.where(alive, token, pad_id)
        zero = jnp.zeros((), jnp.float32)
        put = lambda buf, col: jax.lax.dynamic_update_index_in_dim(buf, col, t, axis=1)
        out = dict(
            t=t + 1,
            cache=cache,
            key_valid=key_valid,
            last=token,
            position=c["position"] + 1,
            done=c["done"] | (alive & is_eos(token)),
            tokens=put(c["tokens"], token),
            logprobs=put(c["logprobs"], jnp.where(alive, lp, zero)),
            sampling=put(c["sampling"], jnp.where(alive, slp, zero)),
            alive=put(c["alive"], alive),
        )
        if mixing:
            out.update(
                ref_cache=ref_cache,
                ref_logprobs=put(c["ref_logprobs"], jnp.where(alive, rlp, zero)),
            )
        return out

    c = jax.lax.while_loop(cond, body, carry)
    return c["tokens"], c["logprobs"], c["sampling"], c["alive"], c.get("ref_logprobs")


def generate(
    model,
    prompts: Int[Array, "b p"],
    *,
    key: jax.Array,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    prompt_mask: Int[Array, "b p"] | None = None,
    mixture_model=None,
    mixture_weight: float | Float[Array, ""] = 0.0,
) -> Generation:
    """Samples up to ``max_new_tokens`` tokens after each prompt with a KV cache.

    With ``mixture_model`` the tokens come from the token-level geometric mixture
    ``log_softmax(α·log π_mix + (1 − α)·log π_model)`` (α = ``mixture_weight``), both
    models decoding in lockstep with their own KV caches; α = 0 samples ``model``
    (same tokens as without a mixture, for the same key), α = 1 samples
    ``mixture_model``. Nash-MD-PG draws its opponents this way with the reference as
    ``mixture_model``.

    Args:
      model: a :class:`~jaxalign.models.CausalLM`.
      prompts: token ids (batch, prompt_length); padding on either side.
      key: PRNG key (unused when greedy).
      max_new_tokens: number of decode steps (static).
      temperature: softmax temperature; 0 means greedy decoding.
      top_p: nucleus sampling mass in (0, 1]; 1 disables truncation.
      eos_token_id: id(s) that end a response (default: the model config's; none
        stops nothing).
      pad_token_id: id written after a response ends (default: config's, else 0).
      prompt_mask: 1 for real prompt tokens, 0 for padding (default: all real).
      mixture_model: optional second :class:`~jaxalign.models.CausalLM` with the same
        vocabulary (e.g. the frozen reference π_ref) to mix with ``model`` per token.
      mixture_weight: α in [0, 1], the weight of ``mixture_model`` (may be a traced
        scalar: changing it does not recompile). Must be 0 without ``mixture_model``.

    Returns:
      A :class:`Generation` (tokens, model and sampling log-probs, response mask, the
      left-aligned prompts, and log π_mixture_model of the tokens — zeros without a
      mixture). ``logprobs`` stay those of ``model``; ``sampling_logprobs`` are those of
      the mixture after temperature and top-p.
    """
    prompts = jnp.asarray(prompts)
    if prompts.ndim != 2 or not jnp.issubdtype(prompts.dtype, jnp.integer):
        raise ValueError(
            f"prompts must be integer token ids of shape (batch, length), got "
            f"{prompts.dtype} {prompts.shape}"
        )
    mask = jnp.ones(prompts.shape, bool) if prompt_mask is None else jnp.asarray(prompt_mask)
    if mask.shape != prompts.shape:
        raise ValueError(f"prompt_mask.shape={mask.shape} must equal prompts.shape={prompts.shape}")
    if is_concrete(mask) and not np.asarray(mask).astype(bool).any(axis=1).all():
        raise ValueError("every prompt needs at least one real token (prompt_mask row of zeros)")
    if not isinstance(max_new_tokens, int | np.integer) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    temperature, top_p = float(temperature), float(top_p)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    config = model.config
    weight_concrete = is_concrete(mixture_weight)
    if mixture_model is None:
        if not weight_concrete or float(np.asarray(mixture_weight)) != 0.0:
            raise ValueError(
                f"mixture_weight={mixture_weight!r} needs a mixture_model (got None); "
                "expected 0 without one"
            )
    else:
        mix = jnp.asarray(mixture_weight, jnp.float32)
        if mix.shape != ():
            raise ValueError(f"mixture_weight must be a scalar, got shape {mix.shape}")
        # The Python value (``mix`` is a traced copy under an enclosing jit).
        if weight_concrete and not 0.0 <= float(np.asarray(mixture_weight)) <= 1.0:
            raise ValueError(f"mixture_weight must be in [0, 1], got {mixture_weight!r}")
        if mixture_model.config.vocab_size != config.vocab_size:
            raise ValueError(
                f"mixture_model.config.vocab_size={mixture_model.config.vocab_size} must "
                f"equal model.config.vocab_size={config.vocab_size}"
            )
    if eos_token_id is None:
        eos = config.eos_token_id
    else:
        eos = (eos_token_id,) if isinstance(eos_token_id, int | np.integer) else eos_token_id
    # -1 never matches a token, so an empty EOS set stops nothing.
    eos_ids = jnp.asarray(tuple(eos) or (-1,), jnp.int32)
    if pad_token_id is None:
        pad_token_id = config.pad_token_id if config.pad_token_id is not None else 0
    tokens_l, mask_l = left_align(prompts.astype(jnp.int32), mask)
    graphdef, state = nnx.split(model)
    mixture = {}
    if mixture_model is not None:
        ref_graphdef, ref_state = nnx.split(mixture_model)
        mixture = dict(ref_graphdef=ref_graphdef, ref_state=ref_state, mix=mix)
    tokens, logprobs, sampling, alive, ref_logprobs = _generate(
        graphdef,
        state,
        tokens_l,
        mask_l,
        key,
        eos_ids,
        jnp.asarray(pad_token_id, jnp.int32),
        max_new_tokens=int(max_new_tokens),
        temperature=temperature,
        top_p=top_p,
        **mixture,
    )
    if ref_logprobs is None:
        ref_logprobs = jnp.zeros_like(logprobs)
    return Generation(tokens, logprobs, sampling, alive, tokens_l, mask_l, ref_logprobs)
