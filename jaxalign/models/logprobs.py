"""Sequence log-probabilities of response tokens: the quantity every preference loss uses.

For a sequence x = (x_0, ..., x_{L-1}) and a response mask m,

    log π(y | prompt) = Σ_t m_t · log softmax(f(x_{<t}))[x_t],

where f is the model's next-token logits. Token t is scored by the logits at
position t-1, so position 0 can never be a response token. Padding can sit on
either side (or both): positions are computed from the attention mask, and
padded positions are excluded by the mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxalign._checks import is_concrete
from jaxalign.models.sharding import constrain


class SequenceLogProbs(NamedTuple):
    """Response log-probabilities, per sequence and per token (0 outside the response)."""

    sequence: Float[Array, " b"]
    tokens: Float[Array, "b l"]


def token_logprobs(logits: Float[Array, "b l v"], tokens: Int[Array, "b l"]) -> Float[Array, "b l"]:
    """out[:, t] = log softmax(logits[:, t-1])[tokens[:, t]] for t >= 1, and 0 at t = 0."""
    logits = logits[:, :-1].astype(jnp.float32)
    targets = tokens[:, 1:]
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    logp = picked - jax.nn.logsumexp(logits, axis=-1)
    return jnp.pad(logp, ((0, 0), (1, 0)))


def project_logits(
    hidden: Float[Array, "b t e"], weight: jax.Array, tied: bool
) -> Float[Array, "b t v"]:
    """LM-head logits in float32: ``hidden @ weight`` ((embed, vocab)), or ``hidden @ weightᵀ``
    for a tied (vocab, embed) embedding table; products accumulate in float32."""
    spec = "bte,ve->btv" if tied else "bte,ev->btv"
    logits = jnp.einsum(
        spec, hidden.astype(weight.dtype), weight, preferred_element_type=jnp.float32
    )
    return constrain(logits, ("head_batch", "length", "head_vocab"))


def vocab_parallel(weight: jax.Array, tied: bool) -> jax.Array:
    """The LM head weight laid out vocabulary-parallel (see the ``head_vocab`` rule)."""
    return constrain(weight, ("head_vocab", None) if tied else (None, "head_vocab"))


def _chunked(
    fn: Callable[..., jax.Array],
    arrays: tuple[jax.Array, ...],
    chunk_size: int,
    *,
    remat: bool,
) -> jax.Array:
    """``fn`` applied to chunks of positions of ``arrays`` (each (b, n, ...)), concatenated.

    One ``lax.scan`` over ``ceil(n / chunk_size)`` chunks (the last padded); with
    ``remat`` each chunk is recomputed in the backward pass instead of stored, so only one
    chunk's intermediates (its logits) are ever live.
    """
    b, n = arrays[0].shape[:2]
    c = n if chunk_size <= 0 else min(chunk_size, n)
    if c == n:
        return fn(*arrays)
    k = math.ceil(n / c)

    def split(x):
        x = jnp.pad(x, [(0, 0), (0, k * c - n)] + [(0, 0)] * (x.ndim - 2))
        return jnp.swapaxes(x.reshape(b, k, c, *x.shape[2:]), 0, 1)

    body = jax.checkpoint(fn, prevent_cse=False) if remat else fn
    _, out = jax.lax.scan(lambda _, xs: (None, body(*xs)), None, tuple(map(split, arrays)))
    return jnp.swapaxes(out, 0, 1).reshape(b, k * c)[:, :n]


def chunked_token_logprobs(
    hidden: Float[Array, "b l e"],
    weight: jax.Array,
    tied: bool,
    tokens: Int[Array, "b l"],
    chunk_size: int,
) -> Float[Array, "b l"]:
    """:func:`token_logprobs` from hidden states without the (b, l, vocab) logits tensor.

    The LM head and log-softmax run on ``chunk_size`` positions at a time (float32,
    rematerialised in the backward pass); the result equals
    ``token_logprobs(project_logits(hidden, weight, tied), tokens)``.
    """

    def chunk(h, t):
        logits = project_logits(h, weight, tied)
        picked = jnp.take_along_axis(logits, t[..., None], axis=-1)[..., 0]
        return picked - jax.nn.logsumexp(logits, axis=-1)

    logp = _chunked(chunk, (hidden[:, :-1], tokens[:, 1:]), chunk_size, remat=True)
    return jnp.pad(logp, ((0, 0), (1, 0)))


def chunked_kl(
    hidden: Float[Array, "b l e"],
    head: tuple[jax.Array, bool],
    ref_hidden: Float[Array, "b l e"],
    ref_head: tuple[jax.Array, bool],
    chunk_size: int,
) -> Float[Array, "b l"]:
    """``out[:, t] = KL(π(· | x_{<t}) ‖ π_ref(· | x_{<t}))`` over the whole vocabulary.

    Aligned like :func:`token_logprobs` (the distribution that scores token t; 0 at
    t = 0). A metric: computed in chunks of positions, not differentiated.
    """
    hidden, ref_hidden = jax.lax.stop_gradient((hidden, ref_hidden))

    def chunk(h, r):
        logp = jax.nn.log_softmax(project_logits(h, *head), axis=-1)
        ref_logp = jax.nn.log_softmax(project_logits(r, *ref_head), axis=-1)
        return jnp.sum(jnp.exp(logp) * (logp - ref_logp), axis=-1)

    kl = _chunked(chunk, (hidden[:, :-1], ref_hidden[:, :-1]), chunk_size, remat=False)
    return jax.lax.stop_gradient(jnp.pad(kl, ((0, 0), (1, 0))))


def _validate(tokens, response_mask, attention_mask) -> None:
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (batch, length), got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
    for name, m in (("response_mask", response_mask), ("attention_mask", attention_mask)):
        if m is not None and m.shape != tokens.shape:
            raise ValueError(f"{name}.shape={m.shape} must equal tokens.shape={tokens.shape}")
    if is_concrete(response_mask):
        resp = np.asarray(response_mask).astype(bool)
        if resp[:, 0].any():
            raise ValueError(
                "response_mask[:, 0] must be 0: the first position has no prefix to predict it "
                f"from (rows {np.flatnonzero(resp[:, 0]).tolist()})"
            )
        if attention_mask is not None and is_concrete(attention_mask):
            outside = resp & ~np.asarray(attention_mask).astype(bool)
            if outside.any():
                rows = np.flatnonzero(outside.any(axis=1)).tolist()
                raise ValueError(
                    f"response_mask marks padding tokens (attention_mask=0) in rows {rows}"
                )


def sequence_logprobs(
    model,
    tokens: Int[Array, "b l"],
    response_mask: Int[Array, "b l"],
    attention_mask: Int[Array, "b l"] | None = None,
) -> SequenceLogProbs:
    """Log-probability of the response tokens of each sequence under ``model``.

    Jittable (value checks are skipped for tracers); differentiable in the model's
    parameters. Works for left, right or mixed padding.

    Args:
      model: a :class:`~jaxalign.models.CausalLM` (computed in vocabulary chunks through
        its ``token_logprobs``), or anything returning next-token logits from
        ``model(tokens, attention_mask=...)``.
      tokens: prompt + response token ids, (batch, length).
      response_mask: 1 (or True) at response tokens to score, 0 elsewhere; (batch, length).
      attention_mask: 1 at real tokens, 0 at padding (default: all real).

    Returns:
      ``SequenceLogProbs(sequence (batch,), tokens (batch, length))`` in float32; per-token
      values are 0 outside the response.
    """
    tokens = jnp.asarray(tokens)
    response_mask = jnp.asarray(response_mask)
    attention_mask = None if attention_mask is None else jnp.asarray(attention_mask)
    _validate(tokens, response_mask, attention_mask)
    if hasattr(model, "token_logprobs"):  # chunked: no (b, l, vocab) logits tensor
        per_token = model.token_logprobs(tokens, attention_mask=attention_mask)
    else:
        per_token = token_logprobs(model(tokens, attention_mask=attention_mask), tokens)
    scored = response_mask.astype(bool)
    if attention_mask is not None:  # under jit the check above cannot see values
        scored = scored & attention_mask.astype(bool)
    per_token = jnp.where(scored, per_token, jnp.zeros((), jnp.float32))
    return SequenceLogProbs(sequence=per_token.sum(axis=-1), tokens=per_token)
