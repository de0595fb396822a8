r"""The enumerable sequence testbed: a real transformer policy scored with exact theory.

A tiny vocabulary of ``A`` tokens and a response length ``L`` give :math:`A^L`
responses (4 × 4 = 256 by default) — few enough to enumerate, so the exact
distribution of a transformer policy over *all* responses is computable, and with it
the exact duality gap, KL to the reference and win rate of the preference game the
policy is trained on. The LLM-form losses (trained on sampled pairs) can therefore be
compared with the tabular solvers of :mod:`jaxalign.games` on the **same** game.

Conventions: the model's vocabulary *is* the alphabet (``vocab_size = A``), so every
next-token distribution is over exactly the response tokens and the :math:`A^L`
sequences carry all the mass; the prompt is a fixed token sequence (default ``[0]``).

Preferences over whole sequences (all return a :class:`jaxalign.games.PreferenceGame`
over the enumerated responses, index = base-A number of the sequence):

* :func:`bradley_terry_preference` — transitive: :math:`P = \sigma(r(y) - r(y'))` with a
  reward additive over positions (so the KL-RL optimum is known in closed form);
* :func:`cyclic_preference` — non-transitive: a BT part plus a skew-symmetric cyclic
  interaction between sequence features (a Condorcet cycle over "styles");
* :func:`annotator_mixture_preference` — a mixture of BT annotators with different
  per-position rewards (heterogeneous preferences; cyclic in general).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxalign import _checks
from jaxalign.games import PreferenceGame, annotator_mixture_game, duality_gap
from jaxalign.kl import kl_divergence


@dataclasses.dataclass(frozen=True)
class Testbed:
    """An enumerable response space.

    Attributes:
      alphabet_size: A, the number of tokens (= the model's vocab_size).
      response_length: L, tokens per response.
      prompt: the fixed prompt token ids (each < A).
    """

    alphabet_size: int = 4
    response_length: int = 4
    prompt: tuple[int, ...] = (0,)

    def __post_init__(self):
        if self.alphabet_size < 2:
            raise ValueError(f"alphabet_size must be >= 2, got {self.alphabet_size}")
        if self.response_length < 1:
            raise ValueError(f"response_length must be >= 1, got {self.response_length}")
        if self.num_responses > 1 << 16:
            raise ValueError(
                f"alphabet_size**response_length = {self.num_responses} responses is too many "
                "to enumerate (at most 65536)"
            )
        if not self.prompt or any(not 0 <= t < self.alphabet_size for t in self.prompt):
            raise ValueError(
                f"prompt must be non-empty token ids in [0, {self.alphabet_size}), "
                f"got {self.prompt}"
            )

    @property
    def num_responses(self) -> int:
        return self.alphabet_size**self.response_length

    def responses(self) -> Int[Array, "n L"]:
        """All responses, row ``i`` = the base-A digits of ``i`` (most significant first)."""
        idx = np.arange(self.num_responses)
        powers = self.alphabet_size ** np.arange(self.response_length - 1, -1, -1)
        return jnp.asarray((idx[:, None] // powers[None, :]) % self.alphabet_size, jnp.int32)

    def index_of(self, responses: Int[Array, "b L"]) -> Int[Array, "b"]:
        """The enumeration index of each response (inverse of :meth:`responses`)."""
        powers = jnp.asarray(
            self.alphabet_size ** np.arange(self.response_length - 1, -1, -1), jnp.int32
        )
        return jnp.asarray(responses, jnp.int32) @ powers

    def sequences(self, responses: Int[Array, "b L"]) -> tuple[jax.Array, jax.Array]:
        """``(tokens [b, P+L], response_mask [b, P+L])`` = prompt followed by each response."""
        responses = jnp.asarray(responses, jnp.int32)
        b = responses.shape[0]
        prompt = jnp.broadcast_to(jnp.asarray(self.prompt, jnp.int32), (b, len(self.prompt)))
        tokens = jnp.concatenate([prompt, responses], axis=1)
        mask = jnp.concatenate([jnp.zeros_like(prompt), jnp.ones_like(responses)], axis=1).astype(
            jnp.int32
        )
        return tokens, mask


def policy_log_probs(model, testbed: Testbed) -> Float[Array, "n"]:
    """Exact log-probabilities of every response under a causal LM (jittable).

    ``model`` must have ``vocab_size == alphabet_size``; the result sums to one.
    """
    from jaxalign.models import sequence_logprobs

    vocab = getattr(getattr(model, "config", None), "vocab_size", testbed.alphabet_size)
    if vocab != testbed.alphabet_size:
        raise ValueError(
            f"model vocab_size={vocab} must equal the testbed alphabet_size={testbed.alphabet_size}"
        )
    tokens, mask = testbed.sequences(testbed.responses())
    return sequence_logprobs(model, tokens, mask).sequence


def _position_features(testbed: Testbed) -> jax.Array:
    """One-hot ``[n, L, A]`` of every response."""
    return jax.nn.one_hot(testbed.responses(), testbed.alphabet_size, dtype=jnp.result_type(float))


def additive_reward(testbed: Testbed, token_rewards: Float[Array, "L A"]) -> Float[Array, "n"]:
    """:math:`r(y) = \\sum_i R[i, y_i]` for every response."""
    token_rewards = _checks.as_float_array("token_rewards", token_rewards, ndim=2)
    if token_rewards.shape != (testbed.response_length, testbed.alphabet_size):
        raise ValueError(
            f"token_rewards must have shape (L, A) = ({testbed.response_length}, "
            f"{testbed.alphabet_size}), got {token_rewards.shape}"
        )
    return jnp.einsum(
        "nla,la->n", _position_features(testbed).astype(token_rewards.dtype), token_rewards
    )


def bradley_terry_preference(
    testbed: Testbed, token_rewards: Float[Array, "L A"]
) -> PreferenceGame:
    """Transitive: :math:`P(y \\succ y') = \\sigma(r(y) - r(y'))`, r additive over positions."""
    r = additive_reward(testbed, token_rewards)
    return annotator_mixture_game(r[None, :])


def annotator_mixture_preference(
    testbed: Testbed, token_rewards: Float[Array, "M L A"], weights: Float[Array, "M"] | None = None
) -> PreferenceGame:
    """Heterogeneous annotators: :math:`\\sum_m w_m \\sigma(r_m(y) - r_m(y'))`."""
    token_rewards = _checks.as_float_array("token_rewards", token_rewards, ndim=3)
    r = jax.vmap(lambda t: additive_reward(testbed, t))(token_rewards)
    return annotator_mixture_game(r, weights)


def cyclic_preference(
    testbed: Testbed, *, strength: float = 2.0, reward_scale: float = 0.5, key: jax.Array
) -> PreferenceGame:
    r"""Non-transitive: logit :math:`r(y) - r(y') + s\,[c(y) - c(y')]_{\circlearrowleft}`.

    Every response gets a *style* :math:`c(y) = (\sum_i y_i) \bmod 3`; styles beat each other
    in a rock–paper–scissors cycle with logit ``strength``, on top of a random additive
    reward (std ``reward_scale``). No reward explains this preference.
    """
    _checks.check_positive("strength", strength)
    _checks.check_nonnegative("reward_scale", reward_scale)
    dtype = jnp.result_type(float)
    token_rewards = jax.random.normal(
        key, (testbed.response_length, testbed.alphabet_size), dtype
    ) * jnp.asarray(reward_scale, dtype)
    r = additive_reward(testbed, token_rewards)
    style = jnp.sum(testbed.responses(), axis=1) % 3
    diff = (style[:, None] - style[None, :]) % 3  # 1: y beats y' in the cycle, 2: loses
    cyc = jnp.where(diff == 1, 1.0, jnp.where(diff == 2, -1.0, 0.0)).astype(dtype)
    logits = r[:, None] - r[None, :] + jnp.asarray(strength, dtype) * cyc
    return PreferenceGame(jax.nn.sigmoid(logits))


class Evaluation(NamedTuple):
    """Exact scores of a policy on the testbed's game."""

    duality_gap: Float[Array, ""]  # unregularised gap 2 max_y (Pπ)_y − 1
    regularised_gap: Float[Array, ""]  # gap of the τ-regularised game (0 when τ = 0)
    kl_to_reference: Float[Array, ""]  # KL(π‖π_ref)
    win_rate_vs_reference: Float[Array, ""]  # π^T P π_ref


def evaluate(
    log_policy: Float[Array, "n"],
    game: PreferenceGame,
    log_ref: Float[Array, "n"],
    *,
    tau: float = 0.0,
) -> Evaluation:
    """Exact duality gaps, KL and win rate of an enumerated policy (jittable)."""
    gap = duality_gap(game, log_policy)
    reg = duality_gap(game, log_policy, tau=tau, ref=log_ref) if tau > 0 else jnp.zeros_like(gap)
    kl = kl_divergence(log_policy, log_ref)
    win = jnp.exp(log_policy) @ game.preference @ jnp.exp(log_ref)
    return Evaluation(gap, reg, kl, win)
