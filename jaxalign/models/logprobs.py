"""Sequence log-probabilities of response tokens: the quantity every preference loss uses.

For a sequence x = (x_0, ..., x_{L-1}) and a response mask m,

    log π(y | prompt) = Σ_t m_t · log softmax(f(x_{<t}))[x_t],

where f is the model's next-token logits. Token t is scored by the logits at
position t-1, so position 0 can never be a response token. Padding can sit on
either side (or both): positions are computed from the attention mask, and
padded positions are excluded by the mask.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxalign._checks import is_concrete


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
      model: a :class:`~jaxalign.models.CausalLM` (anything returning next-token logits
        from ``model(tokens, attention_mask=...)``).
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
    logits = model(tokens, attention_mask=attention_mask)
    per_token = token_logprobs(logits, tokens)
    scored = response_mask.astype(bool)
    if attention_mask is not None:  # under jit the check above cannot see values
        scored = scored & attention_mask.astype(bool)
    per_token = jnp.where(scored, per_token, jnp.zeros((), jnp.float32))
    return SequenceLogProbs(sequence=per_token.sum(axis=-1), tokens=per_token)
