r"""Online Nash preference optimisation of a causal LM: sample, label, fit the pairwise loss.

Why: the Nash-learning algorithms (INPO, ONPO, online IPO, MNPO) are *iterative*: each
outer iteration samples fresh pairs from the current policy :math:`\pi_t`, labels them
with a preference oracle and fits the next policy by minimising a pairwise loss of
:mod:`jaxalign.losses.pairwise` against frozen anchors. The population minimiser of
that loss is the tabular update of :mod:`jaxalign.games` (``step_size`` :math:`s`,
target :math:`s/2`), so on the enumerable testbed (:mod:`jaxalign.data.testbed`) the
LLM loop can be scored with the *exact* duality gap and compared with the tabular solver.

One outer iteration :math:`t` (``B`` pairs, ``inner_steps`` Adam steps per fit):

1. sample :math:`(y_i, y'_i) \sim \pi_t` i.i.d. with the KV-cache sampler
   (:func:`jaxalign.models.generate`; MNPO: from the mixture of its opponents);
2. label them: ``oracle(key, a, b)`` returns :math:`w_i \in [0, 1]`, the probability (or
   a hard 0/1 label) that ``a`` wins; the loss of a pair is
   :math:`w\,\ell(a, b) + (1 - w)\,\ell(b, a)`;
3. compute the frozen anchors' sequence log-probs on the pairs;
4. fit the policy (warm-started at its anchor) on the algorithm's loss:

=============  ==========================================================  ======================
algorithm      anchors (weights) · target                                  tabular solver
=============  ==========================================================  ======================
``inpo``       π_t (1 − sτ), π_ref (sτ) · s/2                              ``games.inpo(s, tau)``
``onpo``       phase 1: π'_t · s/2 → π'_{t+1}; phase 2: π'_{t+1} · s/2      ``games.onpo(s)``
               → π_{t+1}; both on the pairs from π_t
``online_ipo`` π_ref (1) · 1/(2τ)                                          ``games.inpo(1/τ, tau)``
``mnpo``       π_ref (sτ), π_{t−j} ((1 − sτ)λ_j) · s/2, pairs ~ Σλ_jπ_{t−j}    ``games.mnpo(s)``
=============  ==========================================================  ======================

Convergence is that of the tabular solver up to the sampling and fitting error of each
iteration (average iterate :math:`O(1/\sqrt T)` for INPO/MNPO, :math:`O(1/T)` for ONPO;
online IPO is a fixed-point iteration with no guarantee).

References:
  Zhang et al. 2024 (INPO); Zhang et al. 2025, "Improving LLM General Preference Alignment
  via Optimistic Online Mirror Descent" (ONPO); Calandriello et al. 2024 (online IPO);
  Wu et al. 2025, "Multiplayer Nash Preference Optimization" (MNPO).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Float

from jaxalign import _checks
from jaxalign import games as G
from jaxalign.data import testbed as tb
from jaxalign.losses import pairwise as pw
from jaxalign.models import generate, sequence_logprobs

Algorithm = Literal["inpo", "onpo", "online_ipo", "mnpo"]
ALGORITHMS: tuple[str, ...] = ("inpo", "onpo", "online_ipo", "mnpo")

# oracle(key, responses_a [B, L], responses_b [B, L]) -> [B] P(a wins) or 0/1 label.
Oracle = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """Hyperparameters of :func:`online_train`.

    Attributes:
      algorithm: ``"inpo"``, ``"onpo"``, ``"online_ipo"`` or ``"mnpo"``.
      num_iterations: outer iterations T.
      batch_size: pairs B sampled per iteration.
      inner_steps: Adam steps per fit (ONPO fits twice per iteration).
      learning_rate: Adam learning rate.
      step_size: s of the tabular update (INPO's 1/η, ONPO's η, MNPO's η).
      tau: KL weight (INPO, MNPO: ≥ 0; online IPO: > 0; ignored by ONPO).
      num_players: MNPO's n; the last n − 1 iterates are the opponents.
      opponent_weights: MNPO's λ (newest first; default uniform).
      temperature: sampling temperature of the pair generator.
      adam_eps: Adam's ε. Kept well above float32 round-off of the log-ratios: at the
        anchor the loss gradient is round-off, which Adam would otherwise rescale into
        full-size steps onto responses no sampled pair constrains.
    """

    algorithm: Algorithm = "inpo"
    num_iterations: int = 10
    batch_size: int = 64
    inner_steps: int = 20
    learning_rate: float = 1e-2
    step_size: float = 1.0
    tau: float = 0.0
    num_players: int = 3
    opponent_weights: tuple[float, ...] | None = None
    temperature: float = 1.0
    adam_eps: float = 1e-3

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        for name in ("num_iterations", "batch_size", "inner_steps"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        _checks.check_positive("learning_rate", self.learning_rate)
        _checks.check_positive("step_size", self.step_size)
        _checks.check_nonnegative("tau", self.tau)
        _checks.check_positive("temperature", self.temperature)
        _checks.check_positive("adam_eps", self.adam_eps)
        if self.algorithm == "online_ipo" and self.tau <= 0:
            raise ValueError(f"online_ipo needs tau > 0, got {self.tau}")
        if self.algorithm in ("inpo", "mnpo") and self.step_size * self.tau > 1:
            raise ValueError(
                f"step_size * tau must be <= 1 (anchor weight 1 - s·tau >= 0), "
                f"got {self.step_size} * {self.tau}"
            )
        if self.num_players < 2:
            raise ValueError(f"num_players must be >= 2, got {self.num_players}")
        if self.opponent_weights is not None:
            w = np.asarray(self.opponent_weights, float)
            if w.shape != (self.num_players - 1,) or (w < 0).any() or abs(w.sum() - 1) > 1e-6:
                raise ValueError(
                    f"opponent_weights must be {self.num_players - 1} non-negative weights "
                    f"summing to 1, got {self.opponent_weights}"
                )

    @property
    def regularisation(self) -> float:
        """τ of the game the algorithm targets (0 for ONPO)."""
        return 0.0 if self.algorithm == "onpo" else float(self.tau)

    def lambdas(self) -> np.ndarray:
        m = self.num_players - 1
        if self.opponent_weights is None:
            return np.full(m, 1.0 / m)
        return np.asarray(self.opponent_weights, float)


class OnlineHistory(NamedTuple):
    """Per-iteration records; entry 0 is the initial policy, entry t the policy after t."""

    duality_gap: Float[Array, "T1"]  # unregularised exact gap of π_t
    regularised_gap: Float[Array, "T1"]  # exact gap in the τ-regularised game (0 if τ = 0)
    kl_to_reference: Float[Array, "T1"]  # KL(π_t ‖ π_ref)
    win_rate_vs_reference: Float[Array, "T1"]  # π_t^T P π_ref
    loss: Float[Array, "T"]  # mean pairwise loss after the (last) fit of iteration t
    log_policies: Float[Array, "T1 n"]  # exact enumerated log π_t


class OnlineResult(NamedTuple):
    """What :func:`online_train` returns."""

    model: Any  # the final policy (a CausalLM)
    history: OnlineHistory
    log_ref: Float[Array, "n"]  # exact log π_ref on the testbed


def testbed_oracle(testbed: tb.Testbed, game: G.PreferenceGame, *, sample: bool = True) -> Oracle:
    """The testbed's preference oracle: Bernoulli(P[idx(a), idx(b)]) labels.

    With ``sample=False`` it returns the exact probability (soft labels, less variance).
    """
    p = jnp.asarray(game.preference)

    def oracle(key: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
        prob = p[testbed.index_of(a), testbed.index_of(b)]
        if not sample:
            return prob
        return jax.random.bernoulli(key, prob).astype(prob.dtype)

    return oracle


def tabular_solver(config: OnlineConfig, log_ref: Float[Array, "n"]) -> G.Solver:
    """The :mod:`jaxalign.games` solver whose update the LLM loop's loss minimises."""
    s, tau = config.step_size, config.tau
    if config.algorithm == "inpo":
        return G.inpo(s, tau=tau, ref=log_ref)
    if config.algorithm == "onpo":
        return G.onpo(s)
    if config.algorithm == "online_ipo":
        return G.inpo(1.0 / tau, tau=tau, ref=log_ref)
    return G.mnpo(
        s,
        num_players=config.num_players,
        tau=tau,
        ref=log_ref,
        opponent_weights=jnp.asarray(config.lambdas(), log_ref.dtype),
        opponents="history",
    )


def _pair_loss(config: OnlineConfig, pa, pb, anc_a, anc_b) -> jax.Array:
    """[B] loss ℓ(a, b) of the algorithm; ``anc_a``/``anc_b``: tuples of anchor log-probs."""
    s, tau = config.step_size, config.tau
    if config.algorithm == "inpo":
        (ref_a, cur_a), (ref_b, cur_b) = anc_a, anc_b
        return pw.inpo_loss(pa, pb, ref_a, ref_b, cur_a, cur_b, step_size=s, tau=tau).loss
    if config.algorithm == "onpo":
        ((anchor_a,), (anchor_b,)) = anc_a, anc_b
        return pw.onpo_loss(pa, pb, anchor_a, anchor_b, step_size=s).loss
    if config.algorithm == "online_ipo":
        ((ref_a,), (ref_b,)) = anc_a, anc_b
        return pw.online_ipo_loss(pa, pb, ref_a, ref_b, tau=tau).loss
    ref_a, *hist_a = anc_a
    ref_b, *hist_b = anc_b
    return pw.mnpo_loss(
        pa,
        pb,
        ref_a,
        ref_b,
        list(zip(hist_a, hist_b)),
        history_weights=jnp.asarray(config.lambdas(), pa.dtype),
        ref_ratio=s * tau,
        step_size=s,
    ).loss


class _Engine:
    """Jitted pieces shared by one run: sampling, log-probs, the inner step, evaluation."""

    def __init__(self, graphdef, testbed: tb.Testbed, config: OnlineConfig):
        self.graphdef, self.testbed, self.config = graphdef, testbed, config
        self.opt = optax.adam(config.learning_rate, eps=config.adam_eps)
        length = testbed.response_length

        def sample(params, key, n):
            model = nnx.merge(graphdef, params)
            prompts = jnp.broadcast_to(
                jnp.asarray(testbed.prompt, jnp.int32), (n, len(testbed.prompt))
            )
            return generate(
                model,
                prompts,
                key=key,
                max_new_tokens=length,
                temperature=config.temperature,
                eos_token_id=(),
            ).tokens

        self.sample = sample

        def logp(params, responses):
            tokens, mask = testbed.sequences(responses)
            return sequence_logprobs(nnx.merge(graphdef, params), tokens, mask).sequence

        self.logp = jax.jit(logp)

        def loss_fn(params, a, b, anc_a, anc_b, w):
            pa, pb = logp(params, a), logp(params, b)
            fwd = _pair_loss(config, pa, pb, anc_a, anc_b)
            bwd = _pair_loss(config, pb, pa, anc_b, anc_a)
            return jnp.mean(w * fwd + (1 - w) * bwd)

        def inner(params, a, b, anc_a, anc_b, w):
            opt_state = self.opt.init(params)

            def body(carry, _):
                p, o = carry
                loss, grads = jax.value_and_grad(loss_fn)(p, a, b, anc_a, anc_b, w)
                with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts, floats
                    updates, o = self.opt.update(grads, o, p)
                return (optax.apply_updates(p, updates), o), loss

            (params, _), _ = jax.lax.scan(
                body, (params, opt_state), None, length=config.inner_steps
            )
            return params, loss_fn(params, a, b, anc_a, anc_b, w)

        self.fit = jax.jit(inner)
        self.enumerate = jax.jit(
            lambda params: tb.policy_log_probs(nnx.merge(graphdef, params), testbed)
        )

    def anchors(self, params_list, a, b):
        return tuple(self.logp(p, a) for p in params_list), tuple(
            self.logp(p, b) for p in params_list
        )


def online_train(
    model,
    testbed: tb.Testbed,
    game: G.PreferenceGame,
    config: OnlineConfig,
    *,
    key: jax.Array,
    oracle: Oracle | None = None,
    reference=None,
) -> OnlineResult:
    r"""Runs ``config.num_iterations`` outer iterations of online Nash preference optimisation.

    Args:
      model: a :class:`~jaxalign.models.CausalLM` with ``vocab_size == testbed.alphabet_size``;
        the initial policy :math:`\pi_0` (not modified).
      testbed: the enumerable response space (prompt, alphabet, length).
      game: the preference game over the ``A^L`` responses (used for exact evaluation).
      config: :class:`OnlineConfig`.
      key: PRNG key (sampling and labels).
      oracle: ``oracle(key, a [B, L], b [B, L]) -> [B]`` probability (or 0/1 label) that
        ``a`` beats ``b``; default :func:`testbed_oracle` (Bernoulli labels from ``game``).
      reference: :math:`\pi_{\rm ref}` model (default: ``model`` itself, i.e. π_ref = π_0).

    Returns:
      :class:`OnlineResult`: the final model, per-iteration exact gaps / KL / win rates /
      losses / enumerated policies, and the exact log π_ref.
    """
    vocab = model.config.vocab_size
    if vocab != testbed.alphabet_size:
        raise ValueError(
            f"model vocab_size={vocab} must equal the testbed alphabet_size={testbed.alphabet_size}"
        )
    n = testbed.num_responses
    if game.preference.shape != (n, n):
        raise ValueError(
            f"game must be {n}×{n} (one row per response), got {game.preference.shape}"
        )
    oracle = testbed_oracle(testbed, game) if oracle is None else oracle
    graphdef, params = nnx.split(model)
    ref_params = params if reference is None else nnx.split(reference)[1]
    eng = _Engine(graphdef, testbed, config)
    log_ref = eng.enumerate(ref_params)
    tau = config.regularisation
    b = config.batch_size
    lambdas = jnp.asarray(config.lambdas(), jnp.float32)

    def evaluate(p):
        lp = eng.enumerate(p)
        return lp, tb.evaluate(lp, game, log_ref, tau=tau)

    prime = params  # ONPO's π'_t (π'_0 = π_0)
    history = [params] * (config.num_players - 1)  # MNPO: π_t, π_{t-1}, ... newest first
    lp, ev = evaluate(params)
    records = [(lp, ev)]
    losses = []
    for t in range(config.num_iterations):
        k_sample, k_label, k_mix = jax.random.split(jax.random.fold_in(key, t), 3)
        if config.algorithm == "mnpo":
            draws = jnp.stack(
                [
                    eng.sample(h, jax.random.fold_in(k_sample, j), 2 * b)
                    for j, h in enumerate(history)
                ]
            )
            src = jax.random.categorical(k_mix, jnp.log(lambdas), shape=(2 * b,))
            ys = draws[src, jnp.arange(2 * b)]
        else:
            ys = eng.sample(params, k_sample, 2 * b)
        ya, yb = ys[:b], ys[b:]
        w = jnp.asarray(oracle(k_label, ya, yb), jnp.float32)
        if config.algorithm == "inpo":
            anc_a, anc_b = eng.anchors([ref_params, params], ya, yb)
            params, loss = eng.fit(params, ya, yb, anc_a, anc_b, w)
        elif config.algorithm == "onpo":
            anc_a, anc_b = eng.anchors([prime], ya, yb)
            prime, _ = eng.fit(prime, ya, yb, anc_a, anc_b, w)
            anc_a, anc_b = eng.anchors([prime], ya, yb)
            params, loss = eng.fit(prime, ya, yb, anc_a, anc_b, w)
        elif config.algorithm == "online_ipo":
            anc_a, anc_b = eng.anchors([ref_params], ya, yb)
            params, loss = eng.fit(params, ya, yb, anc_a, anc_b, w)
        else:
            anc_a, anc_b = eng.anchors([ref_params, *history], ya, yb)
            params, loss = eng.fit(params, ya, yb, anc_a, anc_b, w)
            history = [params, *history[:-1]]
        losses.append(loss)
        records.append(evaluate(params))

    lps = jnp.stack([r[0] for r in records])
    evs = [r[1] for r in records]
    hist = OnlineHistory(
        duality_gap=jnp.stack([e.duality_gap for e in evs]),
        regularised_gap=jnp.stack([e.regularised_gap for e in evs]),
        kl_to_reference=jnp.stack([e.kl_to_reference for e in evs]),
        win_rate_vs_reference=jnp.stack([e.win_rate_vs_reference for e in evs]),
        loss=jnp.stack(losses),
        log_policies=lps,
    )
    return OnlineResult(nnx.merge(graphdef, params), hist, log_ref)


def tabular_baseline(
    config: OnlineConfig,
    game: G.PreferenceGame,
    log_policy: Float[Array, "n"],
    log_ref: Float[Array, "n"],
) -> G.Trajectory:
    """The matching tabular solver run for ``config.num_iterations`` steps from ``log_policy``,
    gaps measured in the unregularised game (``Trajectory.last_gap``/``avg_gap`` ``[T]``)."""
    solver = tabular_solver(config, log_ref)
    return G.run(solver, game, config.num_iterations, log_policy=log_policy, tau=0.0, ref=log_ref)


def average_policy_gaps(
    game: G.PreferenceGame, log_policies: Float[Array, "T1 n"]
) -> Float[Array, "T"]:
    r"""Exact unregularised gap of the running average :math:`\bar\pi_t = \frac1t\sum_{i<t}\pi_i`,
    ``t = 1..T`` (the iterate of the no-regret bounds; same convention as :func:`games.run`)."""
    probs = jnp.exp(log_policies[:-1])
    avg = jnp.cumsum(probs, axis=0) / jnp.arange(1, probs.shape[0] + 1, dtype=probs.dtype)[:, None]
    return jax.vmap(lambda p: G.duality_gap(game, jnp.log(p)))(avg)


__all__ = [
    "ALGORITHMS",
    "OnlineConfig",
    "OnlineHistory",
    "OnlineResult",
    "Oracle",
    "average_policy_gaps",
    "online_train",
    "tabular_baseline",
    "tabular_solver",
    "testbed_oracle",
]
