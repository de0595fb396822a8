r"""Best-of-N sampling with a reward model: the sampling counterpart of
:func:`jaxalign.kl.best_of_n_policy`.

One call of :func:`best_of_n_generate`, for ``B`` prompts:

1. Each prompt is repeated ``n`` times (rows ``i·n .. i·n + n − 1`` belong to prompt
   ``i``) and all ``B·n`` candidates are drawn in ONE :func:`~jaxalign.models.generate`
   call, so a single compiled decode serves every candidate.
2. Each candidate (prompt + response, with its attention mask) is scored by the
   reward function, giving ``candidate_rewards`` of shape ``[B, n]``.
3. Per prompt, the winner is an argmax of the ``n`` rewards, ties broken uniformly at
   random (:func:`best_of_n_select`).

Because the ``n`` candidates are i.i.d. draws from the sampling policy ``p`` and the
tie-break ignores which response a candidate is, the winner has exactly the law

.. math::

    \pi_N(y) = \frac{p(y)}{q(r(y))}\left[G(r(y))^N - G^-(r(y))^N\right],

with :math:`G(v) = P_p(r \le v)`, :math:`G^-(v) = P_p(r < v)`, :math:`q = G - G^-`
(:func:`jaxalign.kl.best_of_n_policy`); here ``p`` is the distribution ``generate``
samples from (the model after temperature and top-p). Its KL to ``p`` is at most
:math:`\log N - (N-1)/N` (:func:`jaxalign.kl.best_of_n_kl_bound`).

Randomness: the candidates are exactly ``generate(model, repeat(prompts, n), key=key,
...)`` (so ``n = 1`` reproduces plain ``generate`` for the same key), and the
tie-break uses ``fold_in(key, max_new_tokens)``, a key ``generate`` never draws from
(it samples step ``t`` with ``fold_in(key, t)``, ``t < max_new_tokens``).

References:
  Nakano et al., "WebGPT: Browser-assisted question-answering with human feedback", 2021.
  Beirami et al., "Theoretical guarantees on the best-of-n alignment policy", 2024.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from jaxalign._checks import as_float_array, is_concrete
from jaxalign.models.heads import RewardModel, rewards
from jaxalign.models.sampling import Generation, generate

RewardFn = Callable[[Int[Array, "m t"], Bool[Array, "m t"]], Float[Array, " m"]]


def best_of_n_select(rewards: Float[ArrayLike, "b n"], *, key: jax.Array) -> jax.Array:
    """Index of the best of ``n`` candidates per row, ties broken uniformly at random.

    The sampling counterpart of :func:`jaxalign.kl.best_of_n_policy`: draw ``n``
    responses per prompt (e.g. :func:`jaxalign.models.generate`), score them with a reward
    model, keep ``candidates[i, best_of_n_select(rewards, key=k)[i]]``.
    """
    rewards = as_float_array("rewards", rewards, ndim=2)
    top = rewards == jnp.max(rewards, axis=1, keepdims=True)
    noise = jax.random.uniform(key, rewards.shape, rewards.dtype)
    return jnp.argmax(jnp.where(top, noise, -1.0), axis=1)


class BestOfN(NamedTuple):
    """Output of :func:`best_of_n_generate` (``B`` prompts, ``n`` candidates each,
    ``L = max_new_tokens``, ``P`` = prompt length).

    The first six fields are those of :class:`~jaxalign.models.Generation` for the
    ``B`` winners.
    """

    # Winning response token ids; pad id after a row's EOS.
    tokens: Int[Array, "B L"]
    # log π(token | prefix) under the model (temperature 1, full vocabulary); 0 where masked.
    logprobs: Float[Array, "B L"]
    # log-probability under the sampling distribution (after temperature and top-p).
    sampling_logprobs: Float[Array, "B L"]
    # True for generated tokens up to and including EOS.
    response_mask: Bool[Array, "B L"]
    # The prompts, left-aligned (pads first), and their attention mask.
    prompt_tokens: Int[Array, "B P"]
    prompt_mask: Bool[Array, "B P"]
    # Reward of each winner (= max over its row of candidate_rewards).
    rewards: Float[Array, " B"]
    # Reward of every candidate; row i holds prompt i's n candidates.
    candidate_rewards: Float[Array, "B n"]
    # Which candidate won, in [0, n).
    index: Int[Array, " B"]

    @property
    def sequences(self) -> Int[Array, "B P+L"]:
        """Prompt followed by the winning response, ready for :func:`sequence_logprobs`."""
        return jnp.concatenate([self.prompt_tokens, self.tokens], axis=1)

    @property
    def attention_mask(self) -> Bool[Array, "B P+L"]:
        return jnp.concatenate([self.prompt_mask, self.response_mask], axis=1)

    @property
    def sequence_response_mask(self) -> Bool[Array, "B P+L"]:
        return jnp.concatenate([jnp.zeros_like(self.prompt_mask), self.response_mask], axis=1)

    @property
    def generation(self) -> Generation:
        """The winners as a :class:`~jaxalign.models.Generation` (no reference log-probs)."""
        return Generation(
            self.tokens,
            self.logprobs,
            self.sampling_logprobs,
            self.response_mask,
            self.prompt_tokens,
            self.prompt_mask,
            jnp.zeros_like(self.logprobs),
        )


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _reward_model_scores(graphdef, state, tokens, mask):
    # Weights are an argument (not closure constants): one compile per shapes and graph.
    return rewards(nnx.merge(graphdef, state), tokens, mask)


@functools.partial(jax.jit, static_argnames=("n",))
def _select(fields, scores, key, *, n):
    b = scores.shape[0] // n
    candidate_rewards = scores.reshape(b, n)
    index = best_of_n_select(candidate_rewards, key=key).astype(jnp.int32)
    rows = jnp.arange(b, dtype=jnp.int32) * n + index
    winners = tuple(f[rows] for f in fields)
    best = jnp.take_along_axis(candidate_rewards, index[:, None], axis=1)[:, 0]
    return winners, best, candidate_rewards, index


def best_of_n_generate(
    model,
    prompts: Int[Array, "B P"],
    *,
    n: int,
    key: jax.Array,
    reward_fn: RewardFn | RewardModel,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    prompt_mask: Int[Array, "B P"] | None = None,
) -> BestOfN:
    r"""Samples ``n`` responses per prompt and keeps the one with the highest reward.

    Best-of-N is the simplest inference-time alignment method: with no training it
    moves the policy towards high reward at a KL cost of at most
    :math:`\log N - (N-1)/N`. The winner's law is exactly
    :func:`jaxalign.kl.best_of_n_policy` of the sampling distribution and the reward,
    ties broken uniformly at random:

    .. math::

        \pi_N(y) = \frac{p(y)}{q(r(y))}\left[G(r(y))^N - G^-(r(y))^N\right].

    All ``B·n`` candidates come from one :func:`~jaxalign.models.generate` call (one
    compiled decode), are scored in one batch of ``B·n`` sequences, and the winners are
    gathered in one compiled selection step; calls with the same shapes and settings
    do not recompile. A :class:`~jaxalign.models.RewardModel` is scored by a compiled
    forward pass taking its weights as arguments; a plain ``reward_fn`` is called as
    given (wrap it in ``jax.jit`` once, outside the loop, to compile it).

    Args:
      model: a :class:`~jaxalign.models.CausalLM` (the sampling policy).
      prompts: token ids ``[B, P]``; padding on either side.
      n: candidates per prompt, a Python int ≥ 1 (static).
      key: PRNG key; the candidates are ``generate(..., key=key)`` on the repeated
        prompts, the tie-break uses ``fold_in(key, max_new_tokens)``.
      reward_fn: ``reward_fn(tokens [B·n, P+L], attention_mask [B·n, P+L] bool) ->
        [B·n]`` scoring prompt + response (left-aligned prompt, pads after EOS masked
        out), e.g. ``lambda t, m: rewards(reward_model, t, m)``; or a scalar-head
        :class:`~jaxalign.models.RewardModel` directly.
      max_new_tokens: response length ``L`` (static).
      temperature, top_p, eos_token_id, pad_token_id, prompt_mask: as in
        :func:`~jaxalign.models.generate` (``p`` above is the distribution after
        temperature and top-p).

    Returns:
      A :class:`BestOfN`: the winners' :class:`~jaxalign.models.Generation` fields
      (``[B, ...]``), their ``rewards`` ``[B]``, all ``candidate_rewards`` ``[B, n]``
      and the winning ``index`` ``[B]``.

    Example:
      >>> out = best_of_n_generate(policy, prompts, n=8, key=jax.random.key(0),
      ...                          reward_fn=reward_model, max_new_tokens=64)
      >>> out.sequences, out.attention_mask  # ready for sequence_logprobs / SFT

    References:
      Nakano et al., "WebGPT: Browser-assisted question-answering with human
      feedback", 2021. Beirami et al., "Theoretical guarantees on the best-of-n
      alignment policy", 2024.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an int >= 1 (candidates per prompt), got {n!r}")
    n = int(n)
    if isinstance(reward_fn, RewardModel):
        if reward_fn.num_labels != 1:
            raise ValueError(
                f"reward_fn must be a scalar-head RewardModel (num_labels=1), got "
                f"num_labels={reward_fn.num_labels}"
            )
    elif isinstance(reward_fn, nnx.Module) or not callable(reward_fn):
        raise ValueError(
            f"reward_fn must be a RewardModel or a function (tokens, attention_mask) -> "
            f"rewards, got {type(reward_fn).__name__}"
        )
    prompts = jnp.asarray(prompts)
    if prompts.ndim != 2 or not jnp.issubdtype(prompts.dtype, jnp.integer):
        raise ValueError(
            f"prompts must be integer token ids of shape (batch, length), got "
            f"{prompts.dtype} {prompts.shape}"
        )
    if prompt_mask is not None:
        prompt_mask = jnp.asarray(prompt_mask)
        if prompt_mask.shape != prompts.shape:
            raise ValueError(
                f"prompt_mask.shape={prompt_mask.shape} must equal prompts.shape={prompts.shape}"
            )
        prompt_mask = jnp.repeat(prompt_mask, n, axis=0)
    if not isinstance(max_new_tokens, int | np.integer) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    b = prompts.shape[0]
    candidates = generate(
        model,
        jnp.repeat(prompts, n, axis=0),
        key=key,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        prompt_mask=prompt_mask,
    )
    sequences, mask = candidates.sequences, candidates.attention_mask
    if isinstance(reward_fn, RewardModel):
        graphdef, state = nnx.split(reward_fn)
        scores = _reward_model_scores(graphdef, state, sequences, mask)
    else:
        scores = jnp.asarray(reward_fn(sequences, mask))
    if scores.shape != (b * n,):
        raise ValueError(
            f"reward_fn must return one reward per candidate, shape ({b * n},) for "
            f"B={b} prompts x n={n}, got shape {scores.shape}"
        )
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        scores = scores.astype(jnp.result_type(float))
    if is_concrete(scores) and np.isnan(np.asarray(scores)).any():
        raise ValueError(f"reward_fn returned NaN rewards: {np.asarray(scores)[:8]}")
    fields = tuple(candidates[:6])
    winners, best, candidate_rewards, index = _select(
        fields, scores, jax.random.fold_in(key, max_new_tokens), n=n
    )
    return BestOfN(*winners, best, candidate_rewards, index)
