r"""Preference oracles for online training: who wins, response ``a`` or response ``b``?

An **oracle** is a function ``oracle(key, a, b) -> [B]`` returning, for each pair, the
probability that ``a`` is preferred to ``b`` (a soft label in [0, 1]) or a sampled hard
label in {0, 1}. ``a`` and ``b`` are :class:`Responses`: full prompt + response token
sequences with their attention and response masks, exactly what the sampler produces, so
the same oracle labels the enumerable testbed and a real tokenised LLM.

Why several: online Nash training (INPO, ONPO, MNPO, online IPO) needs a judge for
fresh on-policy pairs. The synthetic testbed matrix is exact; a learned reward model is
the usual RLHF judge (transitive, Bradley–Terry); a general preference model can be
non-transitive; a mixture of annotators models heterogeneous raters (cyclic in
general). :func:`enumerated_game` turns any soft oracle into the exact ``n × n`` game on
the testbed, so training against a learned judge is still scored with exact gaps.

Oracles here:

* :func:`testbed_oracle` — the synthetic preference matrix of the enumerable testbed
  (:mod:`jaxalign.testbed`): ``P[idx(a), idx(b)]``, optionally Bernoulli-sampled.
* :func:`reward_model_oracle` — Bradley–Terry on a :class:`~jaxalign.models.RewardModel`:
  :math:`P(a \succ b) = \sigma((r(a) - r(b))/T)`.
* :func:`preference_model_oracle` — a general :class:`~jaxalign.models.PreferenceModel`:
  :math:`P(a \succ b) = \sigma(s(a, b)/T)` with an antisymmetric logit.
* :func:`annotator_mixture_oracle` — :math:`\sum_m w_m P_m(a \succ b)`, or a label from
  one annotator drawn with probability :math:`w_m`.
* :func:`noisy_oracle` — any oracle whose labels are flipped independently with
  probability :math:`\varepsilon` (a noisy annotator: the label-noise model of robust DPO).
* :func:`load_oracle` — a reward or preference model from a local HF-style directory.

Model oracles capture the model's parameters when they are built (``nnx.split``): the
judge is frozen, later updates of the module do not reach it. One module-level
``jax.jit`` takes the parameter state as an argument (graph definition static), so a
model sharded on a mesh runs sharded, and all judges of one architecture share one
executable per batch shape: nothing recompiles between calls, nor when a judge is rebuilt.

Builders of :class:`Responses`: :func:`responses_from_generation` (sampler output) and
:func:`testbed_responses` (enumerated testbed responses).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from jaxalign import _checks
from jaxalign import testbed as tb
from jaxalign.games import PreferenceGame
from jaxalign.games.game import check_game
from jaxalign.models.heads import (
    PreferenceModel,
    RewardModel,
    preference_model_from_pretrained,
    reward_model_from_pretrained,
)
from jaxalign.models.sampling import Generation
from jaxalign.models.sharding import LogicalRules, axis_rules


class Responses(NamedTuple):
    """A batch of prompt + response sequences, as produced by the sampler.

    Attributes:
      tokens: ``[B, T]`` int32 ids, the prompt followed by the response.
      attention_mask: ``[B, T]`` 1 at real tokens (prompt padding and post-EOS padding 0).
      response_mask: ``[B, T]`` 1 at the response tokens that are scored.
      prompt_length: static prompt width ``P``: ``tokens[:, P:]`` are the response slots.
    """

    tokens: Int[Array, "B T"]
    attention_mask: Int[Array, "B T"]
    response_mask: Int[Array, "B T"]
    prompt_length: int

    @property
    def responses(self) -> Int[Array, "B L"]:
        """The response slots ``tokens[:, P:]`` (padding after an EOS included)."""
        return self.tokens[:, self.prompt_length :]

    def take(self, index) -> Responses:
        """Rows ``index`` of every array (the prompt width is kept)."""
        return Responses(
            self.tokens[index],
            self.attention_mask[index],
            self.response_mask[index],
            self.prompt_length,
        )


# oracle(key, a, b) -> [B] P(a ≻ b) (soft) or a 0/1 label (hard).
Oracle = Callable[[jax.Array, Responses, Responses], jax.Array]


def testbed_oracle(
    testbed: tb.Testbed, game: PreferenceGame, *, sample: bool = True, flip_rate: float = 0.0
) -> Oracle:
    """The testbed's preference oracle: ``P[idx(a), idx(b)]``, Bernoulli-sampled by default.

    With ``sample=False`` it returns the exact probability (soft labels, less variance).
    ``flip_rate`` ε > 0 flips each label independently with probability ε
    (:func:`noisy_oracle`); ε = 0 is this oracle unchanged.
    """
    _check_flip_rate(flip_rate)
    n = testbed.num_responses
    if game.preference.shape != (n, n):
        raise ValueError(
            f"game must be {n}×{n} (one row per testbed response), got {game.preference.shape}"
        )
    p = jnp.asarray(game.preference)

    def oracle(key: jax.Array, a: Responses, b: Responses) -> jax.Array:
        prob = p[testbed.index_of(a.responses), testbed.index_of(b.responses)]
        if not sample:
            return prob
        return jax.random.bernoulli(key, prob).astype(prob.dtype)

    return noisy_oracle(oracle, flip_rate)


def _check_flip_rate(flip_rate: float) -> None:
    if isinstance(flip_rate, bool) or not 0 <= flip_rate < 0.5:
        raise ValueError(f"flip_rate must be a number in [0, 0.5), got {flip_rate!r}")


def noisy_oracle(oracle: Oracle, flip_rate: float) -> Oracle:
    r"""A noisy annotator: each of ``oracle``'s labels flipped independently with
    probability :math:`\varepsilon` = ``flip_rate``.

    Why: the random-flip noise model of robust / conservative DPO. A clean label
    :math:`y` becomes :math:`\tilde y = y + (1 - 2y) f` with :math:`f \sim
    \mathrm{Bernoulli}(\varepsilon)`, so a hard label flips and a soft label :math:`p` is
    replaced by :math:`1 - p`; either way

    .. math::
        \mathbb E[\tilde y] = (1 - \varepsilon)\, P(a \succ b) + \varepsilon\, P(b \succ a),

    the noisy preference :math:`\tilde P` whose population DPO minimiser is flatter than
    the clean one (rDPO's flip-corrected loss undoes this; cDPO's smoothing does not).

    Args:
      oracle: ``oracle(key, a, b) -> [B]`` labels in [0, 1].
      flip_rate: ε ∈ [0, ½); ε = 0 returns ``oracle`` itself (bitwise the same labels).

    Returns:
      ``noisy(key, a, b) -> [B]`` (reading the same parameters as ``oracle``).

    References:
      Chowdhury, Kini, Natarajan, "Provably Robust DPO", ICML 2024 (the noise model).
    """
    _check_flip_rate(flip_rate)
    if not callable(oracle):
        raise ValueError(f"oracle must be callable, got {oracle!r}")
    if flip_rate == 0:
        return oracle

    def bind(params):
        clean = bind_oracle(oracle, params)

        def noisy(key: jax.Array, a: Responses, b: Responses) -> jax.Array:
            k_label, k_flip = jax.random.split(key)
            y = jnp.asarray(clean(k_label, a, b))
            flip = jax.random.bernoulli(k_flip, flip_rate, y.shape).astype(y.dtype)
            return y + (1 - 2 * y) * flip

        noisy.params, noisy.bind = params, bind
        return noisy

    return bind(oracle_params(oracle))


# ----------------------------------------------------------------------------- responses


def check_responses(name: str, responses: Responses) -> None:
    """Shape checks of a :class:`Responses` (they hold under ``jit`` too)."""
    if not isinstance(responses, Responses):
        raise ValueError(f"{name} must be a Responses, got {type(responses).__name__}")
    shapes = {
        f"{name}.tokens": jnp.shape(responses.tokens),
        f"{name}.attention_mask": jnp.shape(responses.attention_mask),
        f"{name}.response_mask": jnp.shape(responses.response_mask),
    }
    if len(shapes[f"{name}.tokens"]) != 2:
        raise ValueError(
            f"{name}.tokens must be a 2-D [B, T] array, got shape {shapes[f'{name}.tokens']}"
        )
    if len(set(shapes.values())) != 1:
        desc = ", ".join(f"{k}={v}" for k, v in shapes.items())
        raise ValueError(f"shape mismatch: {desc}; expected equal [B, T] shapes")
    width = shapes[f"{name}.tokens"][1]
    prompt_length = responses.prompt_length
    if not _checks.is_concrete(prompt_length):  # a Responses passed through jit as a pytree
        return
    if (
        isinstance(prompt_length, bool)
        or not isinstance(prompt_length, (int, np.integer))
        or not 0 <= prompt_length <= width
    ):
        raise ValueError(
            f"{name}.prompt_length must be an int in [0, T={width}], "
            f"got {responses.prompt_length!r}"
        )


def _check_pair(a: Responses, b: Responses) -> None:
    check_responses("a", a)
    check_responses("b", b)
    if a.tokens.shape[0] != b.tokens.shape[0]:
        raise ValueError(
            f"a and b must hold the same number of pairs; got a.tokens.shape={a.tokens.shape}, "
            f"b.tokens.shape={b.tokens.shape}"
        )


def responses_from_generation(generation: Generation) -> Responses:
    """The :class:`Responses` of a sampler output (:func:`jaxalign.models.generate`).

    ``tokens = [prompt_tokens, tokens]`` (prompts left-aligned), ``attention_mask`` = the
    prompt mask followed by the response mask (1 up to and including EOS, so a reward is
    read at the EOS token and post-EOS padding is ignored), ``response_mask`` = 0 on the
    prompt, the response mask after it; ``prompt_length`` = the prompt width ``p``.

    Args:
      generation: a :class:`~jaxalign.models.Generation` with ``b`` rows.

    Returns:
      ``Responses`` with ``[b, p + n]`` int32 arrays.
    """
    if not isinstance(generation, Generation):
        raise ValueError(
            f"generation must be a jaxalign.models.Generation, got {type(generation).__name__}"
        )
    return Responses(
        jnp.asarray(generation.sequences, jnp.int32),
        jnp.asarray(generation.attention_mask).astype(jnp.int32),
        jnp.asarray(generation.sequence_response_mask).astype(jnp.int32),
        int(jnp.shape(generation.prompt_tokens)[1]),
    )


def testbed_responses(testbed: tb.Testbed, responses: Int[Array, "B L"]) -> Responses:
    """The :class:`Responses` of testbed responses: the fixed prompt, then each response.

    Every token is real (``attention_mask`` = 1); ``response_mask`` is 1 on the ``L``
    response slots; ``prompt_length = len(testbed.prompt)``.

    Args:
      testbed: the enumerable response space.
      responses: ``[B, L]`` token ids in ``[0, A)``, ``L = testbed.response_length``.

    Returns:
      ``Responses`` with ``[B, P + L]`` int32 arrays.
    """
    responses = jnp.asarray(responses)
    if responses.ndim != 2 or responses.shape[1] != testbed.response_length:
        raise ValueError(
            f"responses must have shape [B, {testbed.response_length}] "
            f"(L = testbed.response_length), got {responses.shape}"
        )
    if not jnp.issubdtype(responses.dtype, jnp.integer):
        raise ValueError(f"responses must be integer token ids, got dtype {responses.dtype}")
    if _checks.is_concrete(responses) and responses.size:
        lo, hi = int(jnp.min(responses)), int(jnp.max(responses))
        if lo < 0 or hi >= testbed.alphabet_size:
            raise ValueError(
                f"responses must be token ids in [0, {testbed.alphabet_size}), "
                f"found values in [{lo}, {hi}]"
            )
    tokens, response_mask = testbed.sequences(responses)
    return Responses(tokens, jnp.ones_like(tokens), response_mask, len(testbed.prompt))


def _pad_to(tokens: jax.Array, mask: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """Right-pads with attention 0 (reads at the last real token are unchanged)."""
    extra = width - tokens.shape[1]
    if extra == 0:
        return tokens, mask
    return jnp.pad(tokens, ((0, 0), (0, extra))), jnp.pad(mask, ((0, 0), (0, extra)))


# ----------------------------------------------------------------------------- model oracles


def _check_temperature(temperature: float) -> float:
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a finite float > 0, got {temperature!r}")
    return float(temperature)


@functools.partial(jax.jit, static_argnames=("graphdef", "probability", "sample"))
def _judge(
    state, key, temperature, tokens_a, mask_a, tokens_b, mask_b, *, graphdef, probability, sample
):
    """``probability(model, ...)`` (and its Bernoulli label) for one batch of pairs.

    Module level, with the graph definition and the probability function static and the
    parameter state an argument: every oracle of the same architecture and batch shape
    shares one executable (a rebuilt or reloaded judge does not recompile), and a
    sharded state stays sharded.
    """
    module = nnx.merge(graphdef, state)
    mask_a, mask_b = mask_a.astype(jnp.int32), mask_b.astype(jnp.int32)
    prob = probability(module, tokens_a, mask_a, tokens_b, mask_b, temperature)
    if not sample:
        return prob
    return jax.random.bernoulli(key, prob).astype(prob.dtype)


def _model_oracle(
    model: nnx.Module,
    probability: Callable[..., jax.Array],
    *,
    sample: bool,
    temperature: float,
    mesh: jax.sharding.Mesh | None,
    rules: LogicalRules | None,
) -> Oracle:
    """An oracle evaluating ``probability`` on a frozen split of ``model`` with :func:`_judge`."""
    graphdef, state = nnx.split(model)
    temperature = jnp.asarray(temperature, jnp.float32)
    static = dict(graphdef=graphdef, probability=probability, sample=bool(sample))

    def bind(params):
        def oracle(key: jax.Array, a: Responses, b: Responses) -> jax.Array:
            _check_pair(a, b)
            with contextlib.ExitStack() as stack:
                if rules is not None:
                    stack.enter_context(axis_rules(rules))
                # set_mesh is only allowed outside jit; under a caller's trace its mesh applies.
                if mesh is not None and _checks.is_concrete(a.tokens):
                    stack.enter_context(jax.set_mesh(mesh))
                return _judge(
                    params,
                    key,
                    temperature,
                    a.tokens,
                    a.attention_mask,
                    b.tokens,
                    b.attention_mask,
                    **static,
                )

        oracle.params, oracle.bind = params, bind
        return oracle

    return bind(state)


def oracle_params(oracle: Oracle):
    """The arrays an oracle reads (a learned judge's parameters; None for a closed-form
    one), so a jitted step can take them as an argument instead of baking them in."""
    return getattr(oracle, "params", None)


def bind_oracle(oracle: Oracle, params) -> Oracle:
    """``oracle`` reading ``params`` (as given by :func:`oracle_params`, e.g. traced)."""
    return oracle.bind(params) if hasattr(oracle, "bind") else oracle


def _bradley_terry_probability(module, tokens_a, mask_a, tokens_b, mask_b, temperature):
    """σ((r(a) − r(b)) / T), r read at each row's last real token."""
    r_a = module(tokens_a, attention_mask=mask_a)[:, 0]
    r_b = module(tokens_b, attention_mask=mask_b)[:, 0]
    return jax.nn.sigmoid((r_a - r_b) / temperature.astype(r_a.dtype))


def _general_probability(module, tokens_a, mask_a, tokens_b, mask_b, temperature):
    """σ(s(a, b) / T) of a preference model; pairs of two widths are right-padded to one."""
    width = max(tokens_a.shape[1], tokens_b.shape[1])
    tokens_a, mask_a = _pad_to(tokens_a, mask_a, width)
    tokens_b, mask_b = _pad_to(tokens_b, mask_b, width)
    s = module.logit(tokens_a, tokens_b, mask_a, mask_b)
    return jax.nn.sigmoid(s / temperature.astype(s.dtype))


def reward_model_oracle(
    model: RewardModel,
    *,
    sample: bool = False,
    temperature: float = 1.0,
    mesh: jax.sharding.Mesh | None = None,
    rules: LogicalRules | None = None,
) -> Oracle:
    r"""A Bradley–Terry oracle on a learned reward model.

    .. math::
        P(a \succ b) = \sigma\!\left(\frac{r(a) - r(b)}{T}\right),

    with :math:`r` the scalar head read at each sequence's last real token (the last 1 of
    ``attention_mask``: the EOS of a sampled response), so post-EOS padding does not
    change it. The preference is transitive (it is a reward model); ``P(a ≻ b) +
    P(b ≻ a) = 1`` up to one rounding of σ.

    Args:
      model: a :class:`~jaxalign.models.RewardModel` with ``num_labels = 1``; its
        parameters are captured now (a frozen judge).
      sample: return Bernoulli(P) labels in {0, 1} (drawn with ``key``) instead of P.
      temperature: T > 0; larger is a noisier judge.
      mesh, rules: when given, concrete calls trace under ``jax.set_mesh(mesh)`` and
        ``axis_rules(rules)`` so activations follow the model's sharding rules.

    Returns:
      ``oracle(key, a, b) -> [B]`` float32.

    References:
      Bradley, R. A. and Terry, M. E. (1952). Rank Analysis of Incomplete Block Designs.
    """
    if not isinstance(model, RewardModel):
        raise ValueError(f"model must be a RewardModel, got {type(model).__name__}")
    if model.num_labels != 1:
        raise ValueError(
            f"model must have a scalar head (num_labels=1), got num_labels={model.num_labels}"
        )
    return _model_oracle(
        model,
        _bradley_terry_probability,
        sample=sample,
        temperature=_check_temperature(temperature),
        mesh=mesh,
        rules=rules,
    )


def preference_model_oracle(
    model: PreferenceModel,
    *,
    sample: bool = False,
    temperature: float = 1.0,
    mesh: jax.sharding.Mesh | None = None,
    rules: LogicalRules | None = None,
) -> Oracle:
    r"""An oracle on a general (possibly non-transitive) learned preference model.

    .. math::
        P(a \succ b) = \sigma\!\left(\frac{s(a, b)}{T}\right),\qquad
        s(a, b) = r(a) - r(b) + \sum_j \bigl(v_{2j}(a) v_{2j+1}(b) - v_{2j+1}(a) v_{2j}(b)\bigr),

    features read at each sequence's last real token. ``s`` is exactly antisymmetric, so
    ``P(a ≻ b) + P(b ≻ a) = 1`` up to one rounding of σ; with rank ≥ 1 the preference
    can be cyclic. Pairs of different widths are right-padded (attention 0) to one.

    Args:
      model: a :class:`~jaxalign.models.PreferenceModel`; parameters captured now.
      sample: return Bernoulli(P) labels in {0, 1} instead of P.
      temperature: T > 0.
      mesh, rules: as in :func:`reward_model_oracle`.

    Returns:
      ``oracle(key, a, b) -> [B]`` float32.

    References:
      Zhang, Y. et al. (2024). Beyond Bradley-Terry Models: A General Preference Model
      for Language Model Alignment (arXiv:2410.02197).
    """
    if not isinstance(model, PreferenceModel):
        raise ValueError(f"model must be a PreferenceModel, got {type(model).__name__}")
    return _model_oracle(
        model,
        _general_probability,
        sample=sample,
        temperature=_check_temperature(temperature),
        mesh=mesh,
        rules=rules,
    )


# ----------------------------------------------------------------------------- mixtures


def _mixture_weights(weights, num: int) -> np.ndarray:
    if weights is None:
        return np.full((num,), 1.0 / num)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (num,):
        raise ValueError(f"weights must have shape ({num},) (one per oracle), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be finite and >= 0, got {w.tolist()}")
    if abs(float(w.sum()) - 1.0) > 1e-6:
        raise ValueError(f"weights must sum to 1, got sum {float(w.sum()):.6g}")
    return w


def annotator_mixture_oracle(
    oracles: Sequence[Oracle],
    weights: Float[Array, " M"] | Sequence[float] | None = None,
    *,
    sample: bool = True,
) -> Oracle:
    r"""A population of annotators :math:`m = 1..M` with weights :math:`w_m`.

    Why: real preference data comes from heterogeneous raters; a mixture of transitive
    judges is in general cyclic (the Condorcet paradox), which is what Nash training is
    for.

    * ``sample=True``: each pair is labelled by one annotator :math:`m \sim w`, who gives
      a Bernoulli label from its own output :math:`P_m(a \succ b)` (a hard label
      :math:`h \in \{0, 1\}` passes through unchanged), so
      :math:`\mathbb E[\text{label}] = \sum_m w_m P_m(a \succ b)`.
    * ``sample=False``: the soft label :math:`\sum_m w_m P_m(a \succ b)`.

    Every annotator is evaluated on every pair (``M`` calls; each gets its own key).

    Args:
      oracles: ``M ≥ 1`` oracles; for ``sample=False`` they should be soft
        (``sample=False``) to get the exact mixture probability.
      weights: ``[M]`` non-negative, summing to 1 (default uniform).
      sample: draw hard labels (default) or return the mixture probability.

    Returns:
      ``oracle(key, a, b) -> [B]``.
    """
    oracles = tuple(oracles)
    if not oracles:
        raise ValueError("oracles must hold at least one oracle, got none")
    bad = [i for i, o in enumerate(oracles) if not callable(o)]
    if bad:
        raise ValueError(f"oracles[{bad[0]}] is not callable: {oracles[bad[0]]!r}")
    w = _mixture_weights(weights, len(oracles))

    def bind(params):
        members = tuple(bind_oracle(o, p) for o, p in zip(oracles, params))

        def oracle(key: jax.Array, a: Responses, b: Responses) -> jax.Array:
            keys = jax.random.split(key, len(members) + 2)
            outputs = jnp.stack(
                [jnp.asarray(o(k, a, b)) for o, k in zip(members, keys[: len(members)])]
            )  # [M, B]
            weights_m = jnp.asarray(w, outputs.dtype)
            if not sample:
                return jnp.einsum("m,mb->b", weights_m, outputs)
            choice = jax.random.choice(
                keys[-2], len(members), shape=outputs.shape[1:], p=weights_m
            )  # [B] the annotator of each pair
            prob = jnp.take_along_axis(outputs, choice[None, :], axis=0)[0]
            return jax.random.bernoulli(keys[-1], prob).astype(outputs.dtype)

        oracle.params, oracle.bind = params, bind
        return oracle

    return bind(tuple(oracle_params(o) for o in oracles))


# ----------------------------------------------------------------------------- exact games


def enumerated_game(
    oracle: Oracle,
    testbed: tb.Testbed,
    *,
    batch_size: int = 4096,
    key: jax.Array | None = None,
    tolerance: float = 1e-5,
) -> PreferenceGame:
    r"""The exact ``n × n`` game of a soft oracle over every testbed response.

    Why: online training against a learned judge (reward or preference model) is then
    scored exactly — duality gap, KL, win rate — by :func:`jaxalign.testbed.evaluate`
    on the game the judge defines, as for the synthetic testbed preferences.

    .. math::
        P_{ij} = \text{oracle}(y_i, y_j),\qquad i, j = 0, \dots, n - 1,

    evaluated on all :math:`n^2` ordered pairs in fixed-size batches (the last batch is
    padded, so the oracle compiles once). A valid preference has
    :math:`P + P^\top = 1` and :math:`P_{ii} = \tfrac12`; the matrix is checked against
    both (``tolerance``), then returned exactly skew-symmetrised,
    :math:`\tfrac12 (P + 1 - P^\top)`.

    Args:
      oracle: a soft oracle (``sample=False``); hard labels fail the check.
      testbed: the enumerable response space (n = ``testbed.num_responses``).
      batch_size: pairs per oracle call.
      key: passed to the oracle (soft oracles ignore it; default ``key(0)``).
      tolerance: allowed :math:`\max |P + P^\top - 1|` and entry range slack.

    Returns:
      :class:`~jaxalign.games.PreferenceGame` with an ``[n, n]`` matrix.

    Raises:
      ValueError: the oracle is not a preference: entries outside [0, 1] or non-finite,
        :math:`P + P^\top \ne 1` or :math:`P_{ii} \ne \tfrac12` beyond ``tolerance``.
    """
    if not callable(oracle):
        raise ValueError(f"oracle must be callable, got {oracle!r}")
    if not isinstance(testbed, tb.Testbed):
        raise ValueError(f"testbed must be a jaxalign.testbed.Testbed, got {testbed!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    _checks.check_nonnegative("tolerance", tolerance)
    key = jax.random.key(0) if key is None else key
    n = testbed.num_responses
    everything = testbed_responses(testbed, testbed.responses())
    total = n * n
    size = min(batch_size, total)
    chunks = []
    for start in range(0, total, size):
        flat = np.arange(start, start + size) % total  # the last chunk wraps round (dropped)
        a = everything.take(jnp.asarray(flat // n))
        b = everything.take(jnp.asarray(flat % n))
        out = np.asarray(oracle(key, a, b), dtype=np.float64)
        if out.shape != (size,):
            raise ValueError(f"oracle returned shape {out.shape}, expected ({size},)")
        chunks.append(out[: min(size, total - start)])
    p = np.concatenate(chunks).reshape(n, n)
    try:  # P + Pᵀ = 1 also forces the diagonal to ½
        check_game(PreferenceGame(jnp.asarray(p)), "the oracle's game", tol=tolerance)
    except ValueError as e:
        raise ValueError(
            f"oracle is not a preference: {e}; use a soft (sample=False) oracle whose "
            "probability is antisymmetric"
        ) from e
    skew = np.clip(0.5 * (p + 1.0 - p.T), 0.0, 1.0)
    return PreferenceGame(jnp.asarray(skew, jnp.result_type(float)))


# ----------------------------------------------------------------------------- loading


def load_oracle(
    kind: Literal["reward_model", "preference_model"],
    path: str | os.PathLike,
    *,
    mesh: jax.sharding.Mesh | None = None,
    rules: LogicalRules | None = None,
    sample: bool = False,
    temperature: float = 1.0,
    dtype=None,
    param_dtype=None,
) -> Oracle:
    """An oracle from a local HF-style directory (nothing is downloaded).

    * ``"reward_model"``: a ``*ForSequenceClassification`` directory with one label
      (:func:`~jaxalign.models.reward_model_from_pretrained`) →
      :func:`reward_model_oracle`.
    * ``"preference_model"``: a directory written by ``save_pretrained`` of a
      :class:`~jaxalign.models.PreferenceModel`
      (:func:`~jaxalign.models.preference_model_from_pretrained`) →
      :func:`preference_model_oracle`.

    Args:
      kind: which head the directory holds.
      path: the directory (``config.json`` + safetensors).
      mesh, rules: load the parameters sharded on ``mesh`` by the logical ``rules`` and
        run the oracle under them.
      sample, temperature: as in :func:`reward_model_oracle`.
      dtype, param_dtype: computation / storage dtypes (default float32).
    """
    if kind == "reward_model":
        model = reward_model_from_pretrained(
            path, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules
        )
        make = reward_model_oracle
    elif kind == "preference_model":
        model = preference_model_from_pretrained(
            path, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules
        )
        make = preference_model_oracle
    else:
        raise ValueError(f"kind must be 'reward_model' or 'preference_model', got {kind!r}")
    return make(model, sample=sample, temperature=temperature, mesh=mesh, rules=rules)


__all__ = [
    "Oracle",
    "Responses",
    "annotator_mixture_oracle",
    "bind_oracle",
    "check_responses",
    "enumerated_game",
    "load_oracle",
    "noisy_oracle",
    "oracle_params",
    "preference_model_oracle",
    "responses_from_generation",
    "reward_model_oracle",
    "testbed_oracle",
    "testbed_responses",
]
