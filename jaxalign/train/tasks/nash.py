r"""Online Nash preference optimisation of a causal LM: one outer iteration per engine step.

The Nash algorithms (INPO, ONPO, online IPO, MNPO, Nash-MD, EGPO) are iterative: each outer
iteration samples fresh pairs from the algorithm's sampling policy, labels them with a
preference oracle and fits the next policy by minimising a pairwise loss of
:mod:`jaxalign.losses.pairwise` against frozen anchors; the population minimiser of that
loss is the tabular update of :mod:`jaxalign.games` (the same
:class:`~jaxalign.games.algorithms.NashAlgorithm`), so on the enumerable testbed every
iterate is scored with the exact duality gap and compared with the tabular solver.

One engine step (``B`` pairs, ``inner_steps`` Adam steps per fit), all inside one jit:

1. ``B`` prompts (host-drawn, ``batch``); two responses per prompt from the sampling
   policy (KV-cache :func:`jaxalign.models.generate`; Nash-MD: the token- or exact
   sequence-level mixture with π_ref; MNPO: a λ-mixture of past iterates; offline losses on
   the testbed: π_ref);
2. labels ``w = oracle(key, a, b)`` (soft P(a ≻ b) or 0/1); the loss of a pair is
   ``w ℓ(a, b) + (1 − w) ℓ(b, a)``;
3. the anchors' sequence log-probs on the pairs (π_ref, π_t, π'_t, past iterates);
4. the fit: Adam from π_t (warm start) on the algorithm's loss —

=============  ==============================================================  =================
algorithm      pairs · anchors (weights) · target                              tabular solver
=============  ==============================================================  =================
``inpo``       π_t · π_t (1 − sτ), π_ref (sτ) · s/2                            ``inpo(s, τ)``
``onpo``       π_t · phase 1: π'_t → π'_{t+1}; phase 2: π'_{t+1} → π_{t+1};     ``onpo(s)``
               both target s/2
``online_ipo`` π_t · π_ref (1) · 1/(2τ)                                        ``inpo(1/τ, τ)``
``mnpo``       Σλ_jπ_{t−j} · π_ref (sτ), π_{t−j} ((1 − sτ)λ_j) · s/2             ``mnpo(s)``
``nash_md``    π^μ_t · π_t (1 − sτ), π_ref (sτ) · s/2                          ``nash_md(s, τ)``
``egpo``       π_t · π_t (1 − sτ), π_ref (sτ); half step: target s/2 →          ``egpo(s, τ)``
               π_{t+½}; full step: target s(w(a, c) − w(b, c)), c ~ π_{t+½}
``sppo``       π_t · pointwise: log π(y)/π_t(y) → s(P̂(y ≻ π_t) − ½), P̂ from   ``sppo(s)``
               the pair's other response and a third draw c ~ π_t
=============  ==============================================================  =================

SPPO's regression does not constrain the normalisation of π (its targets are not
log-ratios of a distribution), so its fits approach the implied update
:math:`\pi_t e^{s(P\pi_t - 1/2)}` only up to that normaliser: the testbed's tracking
error measures how close.

The state (checkpointed) is π_t and the anchors the algorithm carries (ONPO's π'_t, MNPO's
past iterates); π_ref and the oracle's parameters are frozen. With LoRA (``lora``) the state
holds adapters only — π_t, π'_t and the past iterates are adapter snapshots on the one
frozen base, the inner Adam runs over the adapters, and π_ref is the base with the adapters
off (:class:`~jaxalign.train.tasks.online_setup.PolicyView`). Convergence is the tabular
solver's up to each iteration's sampling and fitting error (average iterate
:math:`O(1/\sqrt T)` for INPO/MNPO, :math:`O(1/T)` for ONPO; last iterate for Nash-MD and
EGPO on the regularised game; online IPO is a fixed-point iteration).

References:
  Zhang et al. 2024 (INPO); Zhang et al. 2025 (ONPO); Calandriello et al. 2024 (online
  IPO); Wu et al. 2025 (MNPO); Munos et al. 2023 (Nash-MD); Zhou, Fazel, Du 2025 (EGPO).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxalign.games import duality_gap
from jaxalign.games.algorithms import NashAlgorithm
from jaxalign.kl import kl_divergence
from jaxalign.losses import dpo_loss
from jaxalign.losses import pairwise as pw
from jaxalign.parallel import batch_sharding
from jaxalign.testbed import scoring
from jaxalign.train.config import OFFLINE_ALGORITHMS
from jaxalign.train.oracles import Responses, bind_oracle, oracle_params
from jaxalign.train.rollout import Sampler, place_prompts
from jaxalign.train.tasks import common, online_setup
from jaxalign.train.tasks.base import RunContext, Task


class NashState(NamedTuple):
    """What an iteration updates (and a checkpoint stores)."""

    params: nnx.State  # π_t
    prime: nnx.State | None  # ONPO's π'_t (None otherwise)
    opponents: tuple[nnx.State, ...]  # MNPO's π_t, π_{t−1}, … newest first (() otherwise)


class PromptBatch(NamedTuple):
    """One step's prompts (left-padded) and a label scale (1; NaN for fault injection)."""

    tokens: jax.Array  # [B, P] int32
    mask: jax.Array  # [B, P] int32
    label_scale: jax.Array  # [] float32


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Per-iteration sampling and fitting (``online`` section) and the loss settings."""

    batch_size: int
    inner_steps: int
    learning_rate: float
    adam_eps: float
    mixture: str = "token"  # nash_md
    beta: float = 0.1  # dpo / robust_dpo on the testbed
    flip_rate: float = 0.0
    label_smoothing: float = 0.0  # dpo on the testbed: conservative DPO
    tau: float = 0.1  # ipo on the testbed
    fixed_pairs_seed: int | None = None  # offline losses: one fixed data set (online.fixed_pairs)


def _pair_loss(kind: str, algo, fit: FitSettings, pa, pb, anc_a, anc_b, extra) -> jax.Array:
    """The loss each fit minimises, by kind; ``anc_*`` are tuples of anchor log-probs."""
    if kind in ("inpo", "nash_md"):
        (ref_a, cur_a), (ref_b, cur_b) = anc_a, anc_b
        fn = pw.inpo_loss if kind == "inpo" else pw.nash_md_loss
        return fn(pa, pb, ref_a, ref_b, cur_a, cur_b, step_size=algo.step_size, tau=algo.tau).loss
    if kind == "egpo":
        (ref_a, cur_a), (ref_b, cur_b) = anc_a, anc_b
        win_a, win_b = extra
        return pw.egpo_step_loss(
            pa, pb, ref_a, ref_b, cur_a, cur_b, win_a, win_b, step_size=algo.step_size,
            tau=algo.tau,
        ).loss  # fmt: skip
    if kind == "sppo":
        ((cur_a,), (cur_b,)) = anc_a, anc_b
        win_a, win_b = extra
        return pw.sppo_loss(pa, pb, cur_a, cur_b, win_a, win_b, step_size=algo.step_size).loss
    if kind == "onpo":
        ((anchor_a,), (anchor_b,)) = anc_a, anc_b
        return pw.onpo_loss(pa, pb, anchor_a, anchor_b, step_size=algo.step_size).loss
    if kind in ("online_ipo", "ipo"):
        ((ref_a,), (ref_b,)) = anc_a, anc_b
        tau = algo.tau if kind == "online_ipo" else fit.tau
        return pw.online_ipo_loss(pa, pb, ref_a, ref_b, tau=tau).loss
    if kind == "dpo":
        ((ref_a,), (ref_b,)) = anc_a, anc_b
        return dpo_loss(
            pa, pb, ref_a, ref_b, beta=fit.beta, label_smoothing=fit.label_smoothing
        ).loss
    if kind == "robust_dpo":
        ((ref_a,), (ref_b,)) = anc_a, anc_b
        return pw.robust_dpo_loss(pa, pb, ref_a, ref_b, beta=fit.beta, flip_rate=fit.flip_rate).loss
    ref_a, *hist_a = anc_a
    ref_b, *hist_b = anc_b
    return pw.mnpo_loss(
        pa, pb, ref_a, ref_b, list(zip(hist_a, hist_b)),
        history_weights=jnp.asarray(algo.lambdas(), pa.dtype),
        ref_ratio=algo.step_size * algo.tau, step_size=algo.step_size,
    ).loss  # fmt: skip


class NashIteration:
    """One outer iteration as a pure function of (state, frozen, prompts, key).

    Shared by :class:`NashTask` (the engine's step) and programmatic use
    (:func:`online_train`): a single definition of sampling, labelling and fitting.

    Args:
      kind: a Nash algorithm name, or ``dpo`` / ``ipo`` / ``robust_dpo`` (offline pairs
        from π_ref on the testbed).
      algorithm: the :class:`NashAlgorithm` (None for the offline losses).
      fit: :class:`FitSettings`.
      sampler: the policy's :class:`~jaxalign.train.rollout.Sampler`.
      oracle: ``oracle(key, a, b)`` (its parameters come from ``frozen["oracle"]``).
      exact: the :class:`~jaxalign.testbed.scoring.TestbedModel` when sampling on the
        testbed (needed by Nash-MD's sequence-level mixture).
      lora: the state's parameters are LoRA adapters and ``frozen["reference"]`` the base
        weights they run on (``sampler`` and ``exact`` over the adapted graph).
      dropout: LoRA dropout of the fits' forwards (inner step ``i`` of a fit draws from
        ``fold_in(fit key, i)``; sampling, anchors and the reported loss run without it).
    """

    def __init__(
        self, kind, algorithm, fit, sampler: Sampler, oracle, exact=None, lora=False, dropout=0.0
    ):
        if kind == "nash_md" and fit.mixture == "sequence" and exact is None:
            raise ValueError(
                "nash_md with mixture='sequence' needs an exact sequence sampler (an enumerable "
                "response space such as the testbed); use mixture='token' on real prompts"
            )
        self.kind, self.algorithm, self.fit = kind, algorithm, fit
        self.sampler, self.oracle, self.exact = sampler, oracle, exact
        self.lora, self.dropout = lora, dropout
        self.opt = optax.adam(fit.learning_rate, eps=fit.adam_eps)

    def initial_state(self, params: nnx.State) -> NashState:
        """π_0 and its anchors (separate copies: the engine donates the state)."""
        copy = lambda: jax.tree.map(jnp.copy, params)
        prime = copy() if self.kind == "onpo" else None
        n = self.algorithm.num_players - 1 if self.kind == "mnpo" else 0
        return NashState(params, prime, tuple(copy() for _ in range(n)))

    def _fitted(self, view, drop_key, kind: str, params, a, b, anc_a, anc_b, w, extra):
        """Adam from ``params`` for ``inner_steps`` on the pairs; the final mean loss (at the
        fitted parameters, without dropout)."""
        by_target = kind in ("egpo", "sppo")  # per-response targets; no label weighting

        def loss_fn(p, step_key=None):
            def logp(p, y):
                return view.logp(p, y, dropout=self.dropout, key=step_key)

            pa, pb = logp(p, a), logp(p, b)
            fwd = _pair_loss(kind, self.algorithm, self.fit, pa, pb, anc_a, anc_b, extra)
            if by_target:
                return jnp.mean(fwd)
            bwd = _pair_loss(kind, self.algorithm, self.fit, pb, pa, anc_b, anc_a, extra)
            return jnp.mean(w * fwd + (1 - w) * bwd)

        def body(carry, i):
            p, o = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, common.micro_key(drop_key, i))
            with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts, floats
                updates, o = self.opt.update(grads, o, p)
            return (optax.apply_updates(p, updates), o), loss

        init = (params, self.opt.init(params))
        steps = None if drop_key is None else jnp.arange(self.fit.inner_steps)
        (params, _), _ = jax.lax.scan(body, init, steps, length=self.fit.inner_steps)
        return params, loss_fn(params)

    def _anchors(self, view, params_list, a, b):
        logp = view.logp
        return tuple(logp(p, a) for p in params_list), tuple(logp(p, b) for p in params_list)

    def _sample_testbed_mixture(self, key, params, ref, mix, prompts) -> Responses:
        n = prompts[0].shape[0]
        idx = self.exact.sample_mixture(key, params, ref, mix, n)
        tokens, attention, response = self.exact.sequences(idx)
        return Responses(tokens, attention, response, prompts[0].shape[1])

    def __call__(self, state: NashState, frozen, batch: PromptBatch, key):
        kind, algo, fit = self.kind, self.algorithm, self.fit
        b = fit.batch_size
        _, k_sample, k_label, k_mix, k_extra = jax.random.split(key, 5)
        if fit.fixed_pairs_seed is not None:  # the same pairs and labels every iteration
            data_key = jax.random.fold_in(jax.random.key(fit.fixed_pairs_seed), 0xDA7A)
            k_sample, k_label = jax.random.split(data_key)
        x = (batch.tokens, batch.mask)
        xx = tuple(jnp.concatenate([v, v]) for v in x)  # a_i and b_i answer prompt x_i
        params = state.params
        view, ref = online_setup.policy_view(self.sampler, frozen["reference"], params, self.lora)
        oracle = bind_oracle(self.oracle, frozen["oracle"])
        sample = view.sample
        drop_key = jax.random.fold_in(key, common.DROPOUT_STREAM) if self.dropout else None
        fits = iter(range(3))  # EGPO and ONPO fit twice a step: a key each

        def fitted(*args):
            return self._fitted(view, common.micro_key(drop_key, next(fits)), *args)

        anchors = functools.partial(self._anchors, view)

        if kind == "mnpo":
            lambdas = jnp.log(jnp.asarray(algo.lambdas(), jnp.float32))
            draws = [
                sample(h, jax.random.fold_in(k_sample, j), xx)
                for j, h in enumerate(state.opponents)
            ]
            src = jax.random.categorical(k_mix, lambdas, shape=(2 * b,))
            stacked = [jnp.stack([d[i] for d in draws]) for i in range(3)]
            ys = Responses(*(v[src, jnp.arange(2 * b)] for v in stacked), draws[0].prompt_length)
        elif kind == "nash_md" and fit.mixture == "sequence":
            mix = algo.step_size * algo.tau
            ys = self._sample_testbed_mixture(k_sample, view.full(params), view.full(ref), mix, xx)
        elif kind == "nash_md":
            ys = sample(params, k_sample, xx, mixture=(ref, algo.step_size * algo.tau))
        elif kind in OFFLINE_ALGORITHMS:
            ys = sample(ref, k_sample, xx)
        else:
            ys = sample(params, k_sample, xx)
        a, bb = ys.take(slice(0, b)), ys.take(slice(b, 2 * b))
        w = jnp.asarray(oracle(k_label, a, bb), jnp.float32) * batch.label_scale
        none = jnp.zeros((b,), jnp.float32)
        extra = (none, none)
        prime = None

        if kind in ("inpo", "nash_md"):
            anc_a, anc_b = anchors([ref, params], a, bb)
            new, loss = fitted(kind, params, a, bb, anc_a, anc_b, w, extra)
            cur_logp, ref_logp = anc_a[1], anc_a[0]
        elif kind == "egpo":
            anc_a, anc_b = anchors([ref, params], a, bb)
            half, _ = fitted("inpo", params, a, bb, anc_a, anc_b, w, extra)
            c = sample(half, k_extra, x)
            ka, kb = jax.random.split(jax.random.fold_in(k_label, 1))
            wins = (oracle(ka, a, c), oracle(kb, bb, c))
            wins = tuple(jnp.asarray(v, jnp.float32) for v in wins)
            ones = jnp.ones((b,), jnp.float32)
            new, loss = fitted("egpo", half, a, bb, anc_a, anc_b, ones, wins)
            cur_logp, ref_logp = anc_a[1], anc_a[0]
        elif kind == "sppo":
            # P̂(y ≻ π_t) from two independent draws of π_t: the pair's other response and c.
            c = sample(params, k_extra, x)
            ka, kb = jax.random.split(jax.random.fold_in(k_label, 1))
            wins = (
                0.5 * (w + jnp.asarray(oracle(ka, a, c), jnp.float32)),
                0.5 * (1 - w + jnp.asarray(oracle(kb, bb, c), jnp.float32)),
            )
            anc_a, anc_b = anchors([params], a, bb)
            ones = jnp.ones((b,), jnp.float32)
            new, loss = fitted("sppo", params, a, bb, anc_a, anc_b, ones, wins)
            cur_logp, ref_logp = anc_a[0], view.logp(ref, a)
        elif kind == "onpo":
            anc_a, anc_b = anchors([state.prime], a, bb)
            prime, _ = fitted("onpo", state.prime, a, bb, anc_a, anc_b, w, extra)
            anc_a, anc_b = anchors([prime], a, bb)
            new, loss = fitted("onpo", prime, a, bb, anc_a, anc_b, w, extra)
            cur_logp, ref_logp = view.logp(params, a), view.logp(ref, a)
        elif kind == "online_ipo" or kind in OFFLINE_ALGORITHMS:
            anc_a, anc_b = anchors([ref], a, bb)
            new, loss = fitted(kind, params, a, bb, anc_a, anc_b, w, extra)
            cur_logp, ref_logp = view.logp(params, a), anc_a[0]
        else:  # mnpo
            anc_a, anc_b = anchors([ref, *state.opponents], a, bb)
            new, loss = fitted("mnpo", params, a, bb, anc_a, anc_b, w, extra)
            cur_logp, ref_logp = anc_a[1], anc_a[0]

        opponents = (new, *state.opponents[:-1]) if kind == "mnpo" else ()
        new_state = NashState(new, prime, opponents)
        r = ref_logp - cur_logp
        metrics = {
            "loss": loss,
            "label_mean": jnp.mean(w),
            "kl_k1": jnp.mean(-r),  # Schulman's k1 / k3 estimates of KL(π_t‖π_ref) on a ~ π
            "kl_k3": jnp.mean(jnp.expm1(r) - r),
            "response_length": jnp.mean(jnp.sum(a.response_mask, axis=1).astype(jnp.float32)),
            "param_norm": optax.tree.norm(new),
            "update_norm": optax.tree.norm(jax.tree.map(jnp.subtract, new, params)),
        }
        return new_state, metrics


def fit_settings(config) -> FitSettings:
    o, a = config.online, config.algorithm
    return FitSettings(
        batch_size=o.batch_size,
        inner_steps=o.inner_steps,
        learning_rate=o.learning_rate,
        adam_eps=o.adam_eps,
        mixture=a.mixture,
        beta=a.beta,
        flip_rate=a.flip_rate,
        label_smoothing=a.label_smoothing,
        tau=a.resolved_tau,
        fixed_pairs_seed=config.run.seed if o.fixed_pairs else None,
    )


def nash_algorithm(config) -> NashAlgorithm | None:
    a = config.algorithm
    if a.name in OFFLINE_ALGORITHMS:
        return None
    return NashAlgorithm(a.name, a.step_size, a.resolved_tau, a.num_players, a.opponent_weights)


class NashTask(Task):
    """Online Nash preference optimisation (and offline losses on the testbed)."""

    name = "nash"

    def __init__(self, ctx: RunContext, *, oracle=None):
        config = self.config = ctx.config
        self.ctx = ctx
        self.setup = online_setup.build(ctx, oracle=oracle)
        self.model_config = self.setup.model_config
        self.algorithm = nash_algorithm(config)
        fit = fit_settings(config)
        self.iterate = NashIteration(
            config.algorithm.name, self.algorithm, fit, self.setup.sampler,
            self.setup.oracle, exact=self.setup.exact, lora=config.lora is not None,
            dropout=common.lora_dropout(config),
        )  # fmt: skip
        # The fits' Adam state lives inside a step (adapters only under LoRA).
        self.lora_report = self.setup.lora_report(self.iterate.opt)
        params_sh = self.setup.param_shardings
        n = self.algorithm.num_players - 1 if config.algorithm.name == "mnpo" else 0
        prime = params_sh if config.algorithm.name == "onpo" else None
        self.state_shardings = NashState(params_sh, prime, (params_sh,) * n)
        self.frozen_shardings = {
            "reference": self.setup.reference_shardings,
            "oracle": self.setup.oracle_shardings,
        }
        row = batch_sharding(ctx.mesh, ctx.rules, ndim=2)
        self.batch_shardings = PromptBatch(row, row, None)
        self.exact_history: scoring.ExactHistory | None = None

    def init(self, key: jax.Array) -> NashState:
        # π_ref = π_0 (a copy), or under LoRA the frozen base (adapters off).
        params, reference = self.setup.initial_policy(key)
        self.frozen = {"reference": reference, "oracle": oracle_params(self.setup.oracle)}
        if self.setup.exact is not None:
            self._start_exact_history(params)
        return self.iterate.initial_state(params)

    def _start_exact_history(self, params) -> None:
        exact, game = self.setup.exact, self.setup.game
        lora = self.config.lora is not None

        @jax.jit  # one compilation for every iterate
        def log_probs(p, frozen_reference):
            view, _ = online_setup.policy_view(None, frozen_reference, p, lora)
            return exact.log_probs(view.full(p))

        self._log_probs = lambda p: log_probs(p, self.frozen["reference"])
        _, ref = online_setup.policy_view(None, self.frozen["reference"], params, lora)
        log_ref = self._log_probs(ref)
        log_pi = self._log_probs(params)
        name = self.config.algorithm.name
        if name in OFFLINE_ALGORITHMS:
            a = self.config.algorithm
            target = scoring.population_minimiser(
                name, game, log_ref, beta=a.beta, tau=a.resolved_tau, flip_rate=a.flip_rate
            )
            update = None if target is None else (lambda lp: target)
            tau = 0.0
        else:
            update = scoring.exact_update(self.algorithm, game, log_ref)
            tau = self.algorithm.regularisation
        self.log_ref = log_ref
        self.exact_history = scoring.ExactHistory(game, log_ref, log_pi, tau=tau, update=update)

    def batch(self, step: int, key: jax.Array) -> PromptBatch:
        k_prompt = jax.random.split(key, 5)[0]
        tokens, mask = self.setup.prompts.sample(k_prompt, self.iterate.fit.batch_size)
        tokens, mask = place_prompts(tokens, mask, self.ctx.mesh, self.ctx.rules)
        return PromptBatch(tokens, mask, jnp.ones((), jnp.float32))

    def poison(self, batch: PromptBatch) -> PromptBatch:
        return batch._replace(label_scale=jnp.full((), jnp.nan, jnp.float32))

    def step(self, state, frozen, batch, key):
        return self.iterate(state, frozen, batch, key)

    def score(self, state: NashState, step: int) -> dict[str, float]:
        if self.exact_history is not None:
            return self.exact_history.record(self._log_probs(state.params))
        return self.setup.win_rate(state.params, self.frozen, step)

    def position(self) -> dict[str, Any]:
        if self.exact_history is None:
            return {}
        return {"exact_history": self.exact_history.state_dict()}

    def restore(self, position: dict[str, Any]) -> None:
        if self.exact_history is not None and "exact_history" in position:
            self.exact_history.load_state_dict(position["exact_history"])

    def describe(self) -> list[str]:
        return [*common.lora_describe(self.lora_report), *self.setup.describe()]

    def summary(self, history) -> dict[str, Any]:
        out = common.loss_summary(history, "kl_k3")
        out.update(common.lora_summary(self.lora_report))
        if self.exact_history is None:
            return {**out, **self.setup.prompts_summary(history)}
        h = self.exact_history.history()
        game = self.setup.game
        avg = scoring.average_policy_gaps(game, h.log_policies)
        out.update(
            mode="testbed",
            num_responses=self.setup.exact.testbed.num_responses,
            initial_duality_gap=float(h.duality_gap[0]),
            final_duality_gap=float(h.duality_gap[-1]),
            min_duality_gap=float(jnp.min(h.duality_gap)),
            initial_regularised_gap=float(h.regularised_gap[0]),
            final_regularised_gap=float(h.regularised_gap[-1]),
            final_kl_to_reference=float(h.kl_to_reference[-1]),
            final_win_rate_vs_reference=float(h.win_rate_vs_reference[-1]),
            final_average_iterate_gap=float(avg[-1]) if len(avg) else None,
        )
        name = self.config.algorithm.name
        if name in OFFLINE_ALGORITHMS:
            a = self.config.algorithm
            target = scoring.population_minimiser(
                name, game, self.log_ref, beta=a.beta, tau=a.resolved_tau, flip_rate=a.flip_rate
            )
            if target is not None:
                out.update(
                    final_kl_to_target=float(h.tracking_kl[-1]) if len(h.tracking_kl) else None,
                    target_duality_gap=float(duality_gap(game, target)),
                    target_kl_to_reference=float(kl_divergence(target, self.log_ref)),
                )
            return out
        steps = len(h.log_policies) - 1
        if steps:
            tab = scoring.tabular_baseline(
                self.algorithm, game, h.log_policies[0], self.log_ref, steps
            )
            out.update(
                tabular_final_duality_gap=float(tab.last_gap[-1]),
                tabular_final_average_gap=float(tab.avg_gap[-1]),
            )
        return out

    def export(self, state: NashState, directory: Path) -> Path:
        return self.setup.export(state.params, self.frozen, directory)


__all__ = [
    "FitSettings",
    "NashIteration",
    "NashState",
    "NashTask",
    "PromptBatch",
    "fit_settings",
    "nash_algorithm",
]
