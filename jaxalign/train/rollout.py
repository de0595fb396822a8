"""Rollouts of the online tasks: prompts in, sampled responses and their log-probs out.

Everything here is pure and traceable, so a task's whole online iteration (sample, label,
anchor log-probs, fit) is one jitted step of the engine:

* :class:`Sampler` — the policy's (or the token-level π/π_ref mixture's) KV-cache sampler
  (:func:`jaxalign.models.generate`) and sequence / per-token log-probabilities of
  :class:`~jaxalign.train.oracles.Responses`, for any parameter tree of one architecture;
* :func:`place_prompts` — host prompt arrays (identical on every process) as global
  arrays sharded along ``batch``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.models import generate, sequence_logprobs
from jaxalign.parallel import batch_sharding
from jaxalign.train.oracles import Responses


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Sampling and scoring with one architecture (``graphdef``) and any parameters."""

    graphdef: nnx.GraphDef
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    eos_token_id: Any = None  # default: the model config's; () for fixed-length responses
    pad_token_id: int | None = None

    def model(self, params: nnx.State):
        return nnx.merge(self.graphdef, params)

    def sample(
        self,
        params: nnx.State,
        key: jax.Array,
        prompts: tuple[jax.Array, jax.Array],
        *,
        mixture: tuple[nnx.State, Any] | None = None,
        temperature: float | None = None,
    ) -> Responses:
        """One response per prompt from ``params``; with ``mixture = (ref_params, α)`` from
        the per-token geometric mixture with the reference (Nash-MD-PG's opponents)."""
        tokens, mask = prompts
        kwargs = {}
        if mixture is not None:
            ref_params, weight = mixture
            kwargs = dict(mixture_model=self.model(ref_params), mixture_weight=weight)
        gen = generate(
            self.model(params),
            tokens,
            key=key,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature if temperature is None else temperature,
            top_p=self.top_p,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            prompt_mask=mask,
            **kwargs,
        )
        return Responses(
            gen.sequences,
            gen.attention_mask.astype(jnp.int32),
            gen.sequence_response_mask.astype(jnp.int32),
            tokens.shape[1],
        )

    def logp(self, params: nnx.State, r: Responses) -> jax.Array:
        """``[B]`` sequence log-probabilities of the responses."""
        model = self.model(params)
        return sequence_logprobs(model, r.tokens, r.response_mask, r.attention_mask).sequence

    def token_logp(self, params: nnx.State, r: Responses) -> jax.Array:
        """``[B, T]`` per-token log-probabilities (0 outside the responses)."""
        model = self.model(params)
        return sequence_logprobs(model, r.tokens, r.response_mask, r.attention_mask).tokens


def place_prompts(
    tokens: np.ndarray, mask: np.ndarray, mesh: jax.sharding.Mesh, rules
) -> tuple[jax.Array, jax.Array]:
    """Host prompt arrays (the same on every process) → global arrays split along ``batch``."""

    def place(x):
        x = np.asarray(x, np.int32)
        sharding = batch_sharding(mesh, rules, ndim=x.ndim)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return place(tokens), place(mask)


__all__ = ["Sampler", "place_prompts"]
