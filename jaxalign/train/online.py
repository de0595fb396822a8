r"""Online Nash preference optimisation of a causal LM: sample, label, fit the pairwise loss.

Why: the Nash-learning algorithms (INPO, ONPO, online IPO, MNPO, Nash-MD, EGPO) are
*iterative*: each outer iteration samples fresh pairs from the current policy
:math:`\pi_t` (or a policy built from it), labels them with a preference oracle and fits
the next policy by minimising a pairwise loss of :mod:`jaxalign.losses.pairwise` against
frozen anchors. The population minimiser of that loss is the tabular update of
:mod:`jaxalign.games` (``step_size`` :math:`s`), so on the enumerable testbed
(:mod:`jaxalign.testbed`) the LLM loop is scored with the *exact* duality gap and
compared with the tabular solver; on real prompts (:class:`OnlineTrainer` with a prompt
dataset and a reward- or preference-model oracle, see :mod:`jaxalign.train.oracles`) the
same loop trains a Hugging Face checkpoint, sharded over a mesh.

One outer iteration :math:`t` (``B`` pairs, ``inner_steps`` Adam steps per fit):

1. draw ``B`` prompts; sample two responses per prompt with the KV-cache sampler
   (:func:`jaxalign.models.generate`) from the algorithm's sampling policy;
2. label them: ``oracle(key, a, b)`` returns :math:`w_i \in [0, 1]`, the probability (or
   a hard 0/1 label) that ``a`` wins; the loss of a pair is
   :math:`w\,\ell(a, b) + (1 - w)\,\ell(b, a)`;
3. compute the frozen anchors' sequence log-probs on the pairs (the anchors are kept as
   frozen, sharded parameter trees: π_ref, π'_t, past iterates);
4. fit the policy (warm-started) on the algorithm's loss:

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
=============  ==============================================================  =================

Nash-MD's mixture :math:`\pi^\mu_t \propto \pi_t^{1-s\tau}\pi_{\rm ref}^{s\tau}` is sampled
either exactly over whole sequences (``mixture="sequence"``, the theory's; needs an
enumerable response space, i.e. the testbed) or per token (``mixture="token"``, what
Nash-MD-PG samples; any model) — the ``tokenmix-vs-seqmix`` study computes the gap.

Convergence is that of the tabular solver up to the sampling and fitting error of each
iteration (average iterate :math:`O(1/\sqrt T)` for INPO/MNPO, :math:`O(1/T)` for ONPO;
last iterate for Nash-MD (decaying steps) and EGPO (linear, regularised game); online IPO
is a fixed-point iteration with no guarantee).

References:
  Zhang et al. 2024 (INPO); Zhang et al. 2025, "Improving LLM General Preference Alignment
  via Optimistic Online Mirror Descent" (ONPO); Calandriello et al. 2024 (online IPO);
  Wu et al. 2025, "Multiplayer Nash Preference Optimization" (MNPO); Munos et al. 2023
  (Nash-MD); Zhou, Fazel, Du 2025 (EGPO).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Float, Int

from jaxalign import _checks
from jaxalign import games as G
from jaxalign import testbed as tb
from jaxalign.losses import pairwise as pw
from jaxalign.models import axis_rules, generate, sequence_logprobs, state_shardings
from jaxalign.train.oracles import Oracle, Responses, testbed_oracle

Algorithm = Literal[
    "inpo", "onpo", "online_ipo", "mnpo", "egpo", "nash_md", "dpo", "ipo", "robust_dpo"
]
ALGORITHMS: tuple[str, ...] = ("inpo", "onpo", "online_ipo", "mnpo", "egpo", "nash_md")
# Offline: pairs always from π_ref (an unlimited preference dataset of the reference);
# every fit moves towards the same population minimiser of the loss.
OFFLINE_ALGORITHMS: tuple[str, ...] = ("dpo", "ipo", "robust_dpo")
# Algorithms whose update is π ∝ π_t^{1-sτ} π_ref^{sτ} e^{s·…}: s·τ ≤ 1.
_MIRROR = ("inpo", "mnpo", "egpo", "nash_md")


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """Hyperparameters of the online loop.

    Attributes:
      algorithm: one of :data:`ALGORITHMS`.
      num_iterations: outer iterations T.
      batch_size: pairs B sampled per iteration (prompts drawn per iteration).
      inner_steps: Adam steps per fit (ONPO and EGPO fit twice per iteration).
      learning_rate: Adam learning rate.
      step_size: s of the tabular update (INPO's 1/η, ONPO's / MNPO's / Nash-MD's /
        EGPO's η).
      tau: KL weight (INPO, MNPO, Nash-MD, EGPO: ≥ 0 with s·τ ≤ 1; online IPO: > 0;
        ignored by ONPO).
      num_players: MNPO's n; the last n − 1 iterates are the opponents.
      opponent_weights: MNPO's λ (newest first; default uniform).
      mixture: Nash-MD's opponent sampler, ``"token"`` (per-token geometric mixture,
        any model) or ``"sequence"`` (exact sequence-level mixture; testbed only).
      beta: DPO / robust DPO's logistic scale β.
      flip_rate: robust DPO's label-flip rate ε ∈ [0, ½).
      temperature: sampling temperature of the pair generator.
      top_p: nucleus mass of the pair generator (1 = off).
      max_new_tokens: response length cap (the testbed's L when run on the testbed).
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
    mixture: Literal["token", "sequence"] = "token"
    beta: float = 0.1
    flip_rate: float = 0.0
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    adam_eps: float = 1e-3

    def __post_init__(self):
        known = ALGORITHMS + OFFLINE_ALGORITHMS
        if self.algorithm not in known:
            raise ValueError(f"algorithm must be one of {known}, got {self.algorithm!r}")
        _checks.check_positive("beta", self.beta)
        if not 0 <= self.flip_rate < 0.5:
            raise ValueError(f"flip_rate must be in [0, 0.5), got {self.flip_rate}")
        for name in ("num_iterations", "batch_size", "inner_steps", "max_new_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        _checks.check_positive("learning_rate", self.learning_rate)
        _checks.check_positive("step_size", self.step_size)
        _checks.check_nonnegative("tau", self.tau)
        _checks.check_positive("temperature", self.temperature)
        _checks.check_positive("adam_eps", self.adam_eps)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.mixture not in ("token", "sequence"):
            raise ValueError(f"mixture must be 'token' or 'sequence', got {self.mixture!r}")
        if self.algorithm in ("online_ipo", "ipo") and self.tau <= 0:
            raise ValueError(f"{self.algorithm} needs tau > 0, got {self.tau}")
        if self.algorithm in _MIRROR and self.step_size * self.tau > 1:
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
        """τ of the game the algorithm targets (0 for ONPO and DPO / robust DPO)."""
        return 0.0 if self.algorithm in ("onpo", "dpo", "robust_dpo") else float(self.tau)

    def lambdas(self) -> np.ndarray:
        m = self.num_players - 1
        if self.opponent_weights is None:
            return np.full(m, 1.0 / m)
        return np.asarray(self.opponent_weights, float)


class PromptSource(Protocol):
    """Where prompts come from: ``sample(key, n) -> (tokens [n, P], mask [n, P])``,
    left-padded to the fixed width ``prompt_length``, the same on every process."""

    @property
    def prompt_length(self) -> int: ...

    def sample(self, key: jax.Array, n: int) -> tuple[Any, Any]: ...


@dataclasses.dataclass(frozen=True)
class FixedPrompt:
    """One prompt for every pair (the testbed's)."""

    tokens: tuple[int, ...]

    @property
    def prompt_length(self) -> int:
        return len(self.tokens)

    def sample(self, key: jax.Array, n: int) -> tuple[np.ndarray, np.ndarray]:
        del key
        t = np.broadcast_to(np.asarray(self.tokens, np.int32), (n, len(self.tokens)))
        return t, np.ones_like(t)


class OnlineHistory(NamedTuple):
    """Per-iteration records of a testbed run; entry 0 is π_0, entry t the policy after t."""

    duality_gap: Float[Array, "T1"]  # unregularised exact gap of π_t
    regularised_gap: Float[Array, "T1"]  # exact gap in the τ-regularised game (0 if τ = 0)
    kl_to_reference: Float[Array, "T1"]  # KL(π_t ‖ π_ref)
    win_rate_vs_reference: Float[Array, "T1"]  # π_t^T P π_ref
    loss: Float[Array, "T"]  # mean pairwise loss after the (last) fit of iteration t
    log_policies: Float[Array, "T1 n"]  # exact enumerated log π_t
    # KL(T(π_t) ‖ π_{t+1}): how far the fitted policy lands from the exact tabular update T
    # applied to the LLM's own π_t (NaN for ONPO / MNPO, whose T needs more state than π_t).
    tracking_kl: Float[Array, "T"]
    # KL(π_{t+1} ‖ π_t) / KL(T(π_t) ‖ π_t): the fitted step's length relative to the exact
    # update's (< 1: the fit under-shoots, > 1: over-shoots; NaN for ONPO / MNPO).
    step_ratio: Float[Array, "T"]


class OnlineResult(NamedTuple):
    """What :func:`online_train` returns."""

    model: Any  # the final policy (a CausalLM)
    history: OnlineHistory
    log_ref: Float[Array, "n"]  # exact log π_ref on the testbed


class LoopState(NamedTuple):
    """Everything an iteration reads and writes (parameter trees are frozen anchors)."""

    iteration: int
    params: nnx.State  # π_t
    prime: nnx.State | None  # ONPO's π'_t
    opponents: tuple[nnx.State, ...]  # MNPO's π_t, π_{t-1}, … (newest first)


def tabular_solver(config: OnlineConfig, log_ref: Float[Array, "n"]) -> G.Solver:
    """The :mod:`jaxalign.games` solver whose update the LLM loop's loss minimises."""
    s, tau = config.step_size, config.tau
    if config.algorithm == "inpo":
        return G.inpo(s, tau=tau, ref=log_ref)
    if config.algorithm == "onpo":
        return G.onpo(s)
    if config.algorithm == "online_ipo":
        return G.inpo(1.0 / tau, tau=tau, ref=log_ref)
    if config.algorithm == "nash_md":
        return G.nash_md(s, tau=tau, ref=log_ref)
    if config.algorithm == "egpo":
        return G.egpo(s, tau=tau, ref=log_ref)
    return G.mnpo(
        s,
        num_players=config.num_players,
        tau=tau,
        ref=log_ref,
        opponent_weights=jnp.asarray(config.lambdas(), log_ref.dtype),
        opponents="history",
    )


# The loss each fit minimises, by kind; ``anc_*`` are tuples of anchor log-probs.
def _pair_loss(kind: str, config: OnlineConfig, pa, pb, anc_a, anc_b, extra) -> jax.Array:
    s, tau = config.step_size, config.tau
    if kind in ("inpo", "nash_md"):
        (ref_a, cur_a), (ref_b, cur_b) = anc_a, anc_b
        fn = pw.inpo_loss if kind == "inpo" else pw.nash_md_loss
        return fn(pa, pb, ref_a, ref_b, cur_a, cur_b, step_size=s, tau=tau).loss
    if kind == "egpo":
        (ref_a, cur_a), (ref_b, cur_b) = anc_a, anc_b
        win_a, win_b = extra
        return pw.egpo_step_loss(
            pa, pb, ref_a, ref_b, cur_a, cur_b, win_a, win_b, step_size=s, tau=tau
        ).loss
    if kind == "onpo":
        ((anchor_a,), (anchor_b,)) = anc_a, anc_b
        return pw.onpo_loss(pa, pb, anchor_a, anchor_b, step_size=s).loss
    if kind in ("online_ipo", "ipo"):
        ((ref_a,), (ref_b,)) = anc_a, anc_b
        return pw.online_ipo_loss(pa, pb, ref_a, ref_b, tau=tau).loss
    if kind == "dpo":
        ((ref_a,), (ref_b,)) = anc_a, anc_b
        return pw.dpo_loss(pa, pb, ref_a, ref_b, beta=config.beta).loss
    if kind == "robust_dpo":
        ((ref_a,), (ref_b,)) = anc_a, anc_b
        return pw.robust_dpo_loss(
            pa, pb, ref_a, ref_b, beta=config.beta, flip_rate=config.flip_rate
        ).loss
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


@jax.jit
def _iteration_metrics(loss, w, logp, ref_logp, response_mask) -> dict[str, jax.Array]:
    """One jitted reduction (one host sync on multi-host runs): the loss, the mean label, k1
    and k3 estimates of KL(π‖π_ref) from samples of π (Schulman's estimators) and the mean
    response length."""
    r = ref_logp - logp
    return {
        "loss": loss,
        "label_mean": jnp.mean(w),
        "kl_k1": jnp.mean(-r),
        "kl_k3": jnp.mean(jnp.expm1(r) - r),
        "response_length": jnp.mean(jnp.sum(response_mask, axis=1).astype(jnp.float32)),
    }


class PolicySampler:
    """What every online trainer shares: the policy's (and the frozen reference's) parameters
    placed on the mesh, prompt draws as global arrays, the KV-cache sampler and sequence
    log-probabilities.

    Args:
      model: the initial policy π_0, a :class:`~jaxalign.models.CausalLM` (not modified).
      prompts: a :class:`PromptSource` (e.g. :class:`FixedPrompt`, or
        :class:`jaxalign.data.PromptDataset` for real prompts).
      reference: π_ref (default: ``model``, i.e. π_ref = π_0).
      eos_token_id, pad_token_id: the sampler's (default: the model config's; ``()`` for
        fixed-length responses).
      mesh, rules: shard parameters by the model's logical axes and prompts/samples along
        ``batch`` on ``mesh`` (default: no mesh, one device).
    """

    def __init__(
        self,
        model,
        *,
        prompts: PromptSource,
        reference=None,
        eos_token_id: int | tuple[int, ...] | None = None,
        pad_token_id: int | None = None,
        mesh: jax.sharding.Mesh | None = None,
        rules=None,
    ):
        if reference is not None and reference.config.vocab_size != model.config.vocab_size:
            raise ValueError(
                f"reference vocab_size={reference.config.vocab_size} must equal the policy's "
                f"{model.config.vocab_size}"
            )
        self.prompts = prompts
        self.mesh, self.rules = mesh, rules
        self.eos, self.pad = eos_token_id, pad_token_id
        self.graphdef, params = nnx.split(model)
        ref = params if reference is None else nnx.split(reference)[1]
        if mesh is not None:
            with self._context():
                params = jax.device_put(params, state_shardings(params, mesh, rules))
                ref = jax.device_put(ref, state_shardings(ref, mesh, rules))
        self.initial_params, self.ref_params = params, ref
        self._logp = jax.jit(self._logp_impl)

    def _context(self):
        if self.mesh is None:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        if self.rules is not None:
            stack.enter_context(axis_rules(self.rules))
        return stack

    def model(self, params=None):
        """The policy with ``params`` (default: the current π_t) as a module."""
        return nnx.merge(self.graphdef, self.state.params if params is None else params)

    def _logp_impl(self, params, r: Responses) -> jax.Array:
        model = nnx.merge(self.graphdef, params)
        return sequence_logprobs(model, r.tokens, r.response_mask, r.attention_mask).sequence

    def logp(self, params, r: Responses) -> jax.Array:
        """``[B]`` sequence log-probabilities of the responses under ``params``."""
        return self._logp(params, r)

    def _place(self, x: np.ndarray) -> jax.Array:
        """A host array identical on every process → a global array sharded on ``batch``."""
        x = np.asarray(x)
        if self.mesh is None:
            return jnp.asarray(x)
        from jaxalign.parallel import batch_sharding

        sharding = batch_sharding(self.mesh, self.rules or _default_rules(), ndim=x.ndim)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    def draw_prompts(
        self, key: jax.Array, n: int, *, repeat: int = 1
    ) -> tuple[jax.Array, jax.Array]:
        """``n`` prompts (each repeated ``repeat`` times in a row) as global arrays."""
        tokens, mask = (np.asarray(v, np.int32) for v in self.prompts.sample(key, n))
        if repeat > 1:
            tokens, mask = np.repeat(tokens, repeat, axis=0), np.repeat(mask, repeat, axis=0)
        return self._place(tokens), self._place(mask)

    def sample(
        self,
        params,
        key: jax.Array,
        prompts: tuple[jax.Array, jax.Array],
        *,
        mixture=None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
    ) -> Responses:
        """One response per prompt from ``params`` (or from the token-level mixture with the
        reference, ``mixture`` = its weight)."""
        tokens, mask = prompts
        kwargs = {}
        if mixture is not None:
            kwargs = dict(
                mixture_model=nnx.merge(self.graphdef, self.ref_params), mixture_weight=mixture
            )
        gen = generate(
            nnx.merge(self.graphdef, params),
            tokens,
            key=key,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            eos_token_id=self.eos,
            pad_token_id=self.pad,
            prompt_mask=mask,
            **kwargs,
        )
        return Responses(
            gen.sequences,
            gen.attention_mask.astype(jnp.int32),
            gen.sequence_response_mask.astype(jnp.int32),
            tokens.shape[1],
        )


class OnlineTrainer(PolicySampler):
    """The online Nash loop, one outer iteration per :meth:`iteration` call.

    Args:
      model: the initial policy π_0, a :class:`~jaxalign.models.CausalLM` (not modified).
      config: :class:`OnlineConfig`.
      prompts: a :class:`PromptSource`.
      oracle: ``oracle(key, a, b) -> [B]`` (:mod:`jaxalign.train.oracles`).
      reference, eos_token_id, pad_token_id, mesh, rules: see :class:`PolicySampler`.
      sequence_sampler: ``sampler(key, params, ref_params, mix, prompts) -> responses``, an
        exact sampler of the sequence-level mixture (the testbed's); needed by Nash-MD with
        ``mixture="sequence"``.
    """

    def __init__(
        self,
        model,
        config: OnlineConfig,
        *,
        prompts: PromptSource,
        oracle: Oracle,
        reference=None,
        eos_token_id: int | tuple[int, ...] | None = None,
        pad_token_id: int | None = None,
        mesh: jax.sharding.Mesh | None = None,
        rules=None,
        sequence_sampler: Callable[..., Responses] | None = None,
    ):
        if config.algorithm == "nash_md" and config.mixture == "sequence" and not sequence_sampler:
            raise ValueError(
                "nash_md with mixture='sequence' needs an exact sequence sampler (an enumerable "
                "response space such as the testbed); use mixture='token' on real prompts"
            )
        super().__init__(
            model,
            prompts=prompts,
            reference=reference,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            mesh=mesh,
            rules=rules,
        )
        self.config, self.oracle = config, oracle
        self.sequence_sampler = sequence_sampler
        params = self.initial_params
        self.state = LoopState(
            0,
            params,
            params if config.algorithm == "onpo" else None,
            (params,) * (config.num_players - 1) if config.algorithm == "mnpo" else (),
        )
        self.opt = optax.adam(config.learning_rate, eps=config.adam_eps)
        self._fits: dict[str, Callable] = {}

    def sample(self, params, key, prompts, *, mixture=None) -> Responses:
        c = self.config
        return super().sample(
            params,
            key,
            prompts,
            mixture=mixture,
            temperature=c.temperature,
            top_p=c.top_p,
            max_new_tokens=c.max_new_tokens,
        )

    def state_tree(self) -> dict[str, Any]:
        """The arrays a checkpoint stores: π_t and the anchors the algorithm keeps."""
        st = self.state
        tree: dict[str, Any] = {"params": st.params}
        if st.prime is not None:
            tree["prime"] = st.prime
        if st.opponents:
            tree["opponents"] = list(st.opponents)
        return tree

    def load_state_tree(self, iteration: int, tree: dict[str, Any]) -> None:
        self.state = LoopState(
            iteration, tree["params"], tree.get("prime"), tuple(tree.get("opponents", ()))
        )

    def _fit(self, kind: str) -> Callable:
        if kind in self._fits:
            return self._fits[kind]
        config, opt, logp = self.config, self.opt, self._logp_impl
        by_target = kind == "egpo"  # per-pair targets; no preference weighting

        def loss_fn(params, a, b, anc_a, anc_b, w, extra):
            pa, pb = logp(params, a), logp(params, b)
            fwd = _pair_loss(kind, config, pa, pb, anc_a, anc_b, extra)
            if by_target:
                return jnp.mean(fwd)
            bwd = _pair_loss(kind, config, pb, pa, anc_b, anc_a, extra)
            return jnp.mean(w * fwd + (1 - w) * bwd)

        def fit(params, a, b, anc_a, anc_b, w, extra):
            opt_state = opt.init(params)

            def body(carry, _):
                p, o = carry
                loss, grads = jax.value_and_grad(loss_fn)(p, a, b, anc_a, anc_b, w, extra)
                with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts, floats
                    updates, o = opt.update(grads, o, p)
                return (optax.apply_updates(p, updates), o), loss

            (params, _), _ = jax.lax.scan(
                body, (params, opt_state), None, length=config.inner_steps
            )
            return params, loss_fn(params, a, b, anc_a, anc_b, w, extra)

        self._fits[kind] = jax.jit(fit)
        return self._fits[kind]

    def _anchors(self, params_list, a: Responses, b: Responses):
        return (
            tuple(self.logp(p, a) for p in params_list),
            tuple(self.logp(p, b) for p in params_list),
        )

    def _label(self, key, a: Responses, b: Responses) -> jax.Array:
        return jnp.asarray(self.oracle(key, a, b), jnp.float32)

    def win_rate_vs_reference(self, key: jax.Array, n: int) -> float:
        """The oracle's mean P(y ≻ y') with y ~ π_t and y' ~ π_ref on ``n`` fresh prompts
        (an unbiased estimate of the win rate π_tᵀ P π_ref; ½ at t = 0 when π_ref = π_0)."""
        with self._context():
            k_prompt, k_a, k_b, k_label = jax.random.split(key, 4)
            x = self.draw_prompts(k_prompt, n)
            a = self.sample(self.state.params, k_a, x)
            b = self.sample(self.ref_params, k_b, x)
            return float(jnp.mean(self._label(k_label, a, b)))

    # -- one iteration --------------------------------------------------------------------

    def iteration(self, key: jax.Array) -> dict[str, float]:
        """Runs outer iteration ``t = state.iteration`` and returns its metrics: ``loss``
        (the last fit's), ``label_mean``, ``kl_k1``/``kl_k3`` (KL(π_t‖π_ref) estimated on the
        sampled ``a`` responses), ``response_length`` and ``time_s``."""
        with self._context():
            return self._iteration(key)

    def _iteration(self, key: jax.Array) -> dict[str, float]:
        t0 = time.perf_counter()
        cfg, st = self.config, self.state
        s, tau = cfg.step_size, cfg.tau
        b = cfg.batch_size
        k_prompt, k_sample, k_label, k_mix, k_extra = jax.random.split(key, 5)
        x = self.draw_prompts(k_prompt, b)
        xx = tuple(jnp.concatenate([v, v]) for v in x)  # a_i and b_i answer prompt x_i
        params, ref = st.params, self.ref_params

        if cfg.algorithm == "mnpo":
            lambdas = jnp.log(jnp.asarray(cfg.lambdas(), jnp.float32))
            draws = [
                self.sample(h, jax.random.fold_in(k_sample, j), xx)
                for j, h in enumerate(st.opponents)
            ]
            src = jax.random.categorical(k_mix, lambdas, shape=(2 * b,))
            stacked = [jnp.stack([d[i] for d in draws]) for i in range(3)]
            ys = Responses(*(v[src, jnp.arange(2 * b)] for v in stacked), draws[0].prompt_length)
        elif cfg.algorithm == "nash_md" and cfg.mixture == "sequence":
            mix = s * tau
            ys = self.sequence_sampler(k_sample, params, ref, mix, xx)
        elif cfg.algorithm == "nash_md":
            ys = self.sample(params, k_sample, xx, mixture=s * tau)
        elif cfg.algorithm in OFFLINE_ALGORITHMS:
            ys = self.sample(ref, k_sample, xx)
        else:
            ys = self.sample(params, k_sample, xx)
        a, bb = ys.take(slice(0, b)), ys.take(slice(b, 2 * b))
        w = self._label(k_label, a, bb)
        none = jnp.zeros((b,), jnp.float32)
        extra = (none, none)

        if cfg.algorithm in ("inpo", "nash_md"):
            anc_a, anc_b = self._anchors([ref, params], a, bb)
            new, loss = self._fit(cfg.algorithm)(params, a, bb, anc_a, anc_b, w, extra)
            cur_logp, ref_logp = anc_a[1], anc_a[0]
        elif cfg.algorithm == "egpo":
            anc_a, anc_b = self._anchors([ref, params], a, bb)
            half, _ = self._fit("inpo")(params, a, bb, anc_a, anc_b, w, extra)
            c = self.sample(half, k_extra, x)
            ka, kb = jax.random.split(jax.random.fold_in(k_label, 1))
            wins = (self._label(ka, a, c), self._label(kb, bb, c))
            ones = jnp.ones((b,), jnp.float32)
            new, loss = self._fit("egpo")(half, a, bb, anc_a, anc_b, ones, wins)
            cur_logp, ref_logp = anc_a[1], anc_a[0]
        elif cfg.algorithm == "onpo":
            anc_a, anc_b = self._anchors([st.prime], a, bb)
            prime, _ = self._fit("onpo")(st.prime, a, bb, anc_a, anc_b, w, extra)
            anc_a, anc_b = self._anchors([prime], a, bb)
            new, loss = self._fit("onpo")(prime, a, bb, anc_a, anc_b, w, extra)
            cur_logp, ref_logp = self.logp(params, a), self.logp(ref, a)
        elif cfg.algorithm == "online_ipo" or cfg.algorithm in OFFLINE_ALGORITHMS:
            anc_a, anc_b = self._anchors([ref], a, bb)
            new, loss = self._fit(cfg.algorithm)(params, a, bb, anc_a, anc_b, w, extra)
            cur_logp, ref_logp = self.logp(params, a), anc_a[0]
        else:  # mnpo
            anc_a, anc_b = self._anchors([ref, *st.opponents], a, bb)
            new, loss = self._fit("mnpo")(params, a, bb, anc_a, anc_b, w, extra)
            cur_logp, ref_logp = anc_a[1], anc_a[0]

        self.state = LoopState(
            st.iteration + 1,
            new,
            prime if cfg.algorithm == "onpo" else None,
            (new, *st.opponents[:-1]) if cfg.algorithm == "mnpo" else (),
        )
        metrics = _iteration_metrics(loss, w, cur_logp, ref_logp, a.response_mask)
        out = {k: float(v) for k, v in jax.device_get(metrics).items()}
        out["time_s"] = time.perf_counter() - t0
        return out


def _default_rules():
    from jaxalign.parallel import DEFAULT_RULES

    return DEFAULT_RULES


# ---------------------------------------------------------------------------------------------
# The enumerable testbed: exact sampling of sequence-level mixtures and exact evaluation.


class TestbedTask:
    """The testbed as a source of prompts, an exact sampler and an exact evaluator.

    ``evaluate(params)`` returns the exact enumerated log-policy and its
    :class:`jaxalign.testbed.Evaluation` in ``game`` (τ = the algorithm's).
    """

    __test__ = False  # not a pytest class

    def __init__(self, testbed: tb.Testbed, game: G.PreferenceGame, graphdef, tau: float):
        n = testbed.num_responses
        if game.preference.shape != (n, n):
            raise ValueError(
                f"game must be {n}×{n} (one row per response), got {game.preference.shape}"
            )
        self.testbed, self.game, self.graphdef, self.tau = testbed, game, graphdef, tau
        self.prompts = FixedPrompt(tuple(testbed.prompt))
        self.enumerate = jax.jit(lambda p: tb.policy_log_probs(nnx.merge(graphdef, p), testbed))

    def responses(self, idx: Int[Array, "b"]) -> Responses:
        tokens, mask = self.testbed.sequences(self.testbed.responses()[idx])
        return Responses(tokens, jnp.ones_like(mask), mask, len(self.testbed.prompt))

    def sequence_sampler(self, key, params, ref, mix, prompts) -> Responses:
        """Exact draws from the sequence-level mixture π^{1−mix} π_ref^{mix} (normalised)."""
        n = prompts[0].shape[0]
        log_mix = pw.sequence_level_mixture(self.enumerate(params), self.enumerate(ref), mix=mix)
        return self.responses(jax.random.categorical(key, log_mix, shape=(n,)))

    def evaluate(self, params, log_ref) -> tuple[jax.Array, tb.Evaluation]:
        lp = self.enumerate(params)
        return lp, tb.evaluate(lp, self.game, log_ref, tau=self.tau)


def online_train(
    model,
    testbed: tb.Testbed,
    game: G.PreferenceGame,
    config: OnlineConfig,
    *,
    key: jax.Array,
    oracle: Oracle | None = None,
    reference=None,
    mesh: jax.sharding.Mesh | None = None,
    rules=None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> OnlineResult:
    r"""Online Nash preference optimisation on the enumerable testbed, scored exactly.

    Args:
      model: a :class:`~jaxalign.models.CausalLM` with ``vocab_size == testbed.alphabet_size``;
        the initial policy :math:`\pi_0` (not modified).
      testbed: the enumerable response space (prompt, alphabet, length); responses have
        exactly ``L`` tokens (``config.max_new_tokens`` is replaced by ``L``).
      game: the preference game over the ``A^L`` responses (exact evaluation).
      config: :class:`OnlineConfig`.
      key: PRNG key (prompts, sampling and labels); iteration t uses ``fold_in(key, t)``.
      oracle: labels (default: :func:`~jaxalign.train.oracles.testbed_oracle`, Bernoulli
        labels from ``game``); any oracle of :mod:`jaxalign.train.oracles` works.
      reference: :math:`\pi_{\rm ref}` model (default: ``model`` itself, i.e. π_ref = π_0).
      mesh, rules: run sharded (see :class:`OnlineTrainer`).
      callback: ``callback(t, metrics)`` after each iteration (metrics include the exact
        ``duality_gap``, ``regularised_gap``, ``kl_to_reference``, ``win_rate_vs_reference``
        of π_t).

    Returns:
      :class:`OnlineResult`: the final model, per-iteration exact gaps / KL / win rates /
      losses / enumerated policies, and the exact log π_ref.
    """
    trainer, task = testbed_trainer(
        model, testbed, game, config, oracle=oracle, reference=reference, mesh=mesh, rules=rules
    )
    scorer = TestbedScorer(task, trainer)
    losses = []
    for t in range(config.num_iterations):
        metrics = trainer.iteration(jax.random.fold_in(key, t))
        losses.append(metrics["loss"])
        exact = scorer.score(trainer.state.params)
        if callback is not None:
            callback(t + 1, {**metrics, **exact})
    return OnlineResult(trainer.model(), scorer.history(losses), scorer.log_ref)


def testbed_trainer(
    model,
    testbed: tb.Testbed,
    game: G.PreferenceGame,
    config: OnlineConfig,
    *,
    oracle: Oracle | None = None,
    reference=None,
    mesh: jax.sharding.Mesh | None = None,
    rules=None,
) -> tuple[OnlineTrainer, TestbedTask]:
    """An :class:`OnlineTrainer` on the testbed (fixed prompt, length-L responses, exact
    sequence-mixture sampler) and its :class:`TestbedTask`."""
    vocab = model.config.vocab_size
    if vocab != testbed.alphabet_size:
        raise ValueError(
            f"model vocab_size={vocab} must equal the testbed alphabet_size={testbed.alphabet_size}"
        )
    config = dataclasses.replace(config, max_new_tokens=testbed.response_length)
    task = TestbedTask(testbed, game, nnx.graphdef(model), config.regularisation)
    trainer = OnlineTrainer(
        model,
        config,
        prompts=task.prompts,
        oracle=testbed_oracle(testbed, game) if oracle is None else oracle,
        reference=reference,
        eos_token_id=(),
        pad_token_id=0,
        mesh=mesh,
        rules=rules,
        sequence_sampler=task.sequence_sampler,
    )
    return trainer, task


class TestbedScorer:
    """Exact scores of every iterate of a testbed run: gaps, KL, win rate and the tracking
    error KL(T(π_t) ‖ π_{t+1}) against the exact tabular update T of the LLM's own π_t.

    ``state_dict`` / ``load_state_dict`` carry the enumerated history across a resume.
    """

    __test__ = False  # not a pytest class

    def __init__(self, task: TestbedTask, trainer: OnlineTrainer):
        self.task, self.trainer = task, trainer
        with trainer._context():
            self.log_ref = task.enumerate(trainer.ref_params)
            lp, ev = task.evaluate(trainer.state.params, self.log_ref)
        self.log_policies = [lp]
        self.evaluations = [ev]
        self.tracking: list[float] = []
        self.ratio: list[float] = []
        self.exact_step = _exact_step(trainer.config, task.game, self.log_ref)

    def score(self, params) -> dict[str, float]:
        """Scores the policy after the latest iteration and records it."""
        with self.trainer._context():
            lp, ev = self.task.evaluate(params, self.log_ref)
        prev = self.log_policies[-1]
        self.log_policies.append(lp)
        self.evaluations.append(ev)
        out = {k: float(v) for k, v in ev._asdict().items()}
        if self.exact_step is not None:
            target = self.exact_step(prev)
            out["tracking_kl"] = float(_kl(target, lp))
            out["step_ratio"] = float(_kl(lp, prev) / jnp.maximum(_kl(target, prev), 1e-12))
        else:
            out["tracking_kl"] = out["step_ratio"] = float("nan")
        self.tracking.append(out["tracking_kl"])
        self.ratio.append(out["step_ratio"])
        return out

    def history(self, losses) -> OnlineHistory:
        evs = self.evaluations
        return OnlineHistory(
            duality_gap=jnp.stack([e.duality_gap for e in evs]),
            regularised_gap=jnp.stack([e.regularised_gap for e in evs]),
            kl_to_reference=jnp.stack([e.kl_to_reference for e in evs]),
            win_rate_vs_reference=jnp.stack([e.win_rate_vs_reference for e in evs]),
            loss=jnp.asarray(losses, jnp.float32),
            log_policies=jnp.stack(self.log_policies),
            tracking_kl=jnp.asarray(self.tracking, jnp.float32),
            step_ratio=jnp.asarray(self.ratio, jnp.float32),
        )

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable history (enumerated log-policies and scores)."""
        return {
            "log_policies": np.asarray(jnp.stack(self.log_policies)).tolist(),
            "evaluations": [[float(x) for x in e] for e in self.evaluations],
            "tracking": self.tracking,
            "ratio": self.ratio,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        dtype = self.log_ref.dtype
        self.log_policies = [jnp.asarray(x, dtype) for x in d["log_policies"]]
        self.evaluations = [
            tb.Evaluation(*(jnp.asarray(x, dtype) for x in e)) for e in d["evaluations"]
        ]
        self.tracking = [float(x) for x in d["tracking"]]
        self.ratio = [float(x) for x in d["ratio"]]


def _kl(log_p, log_q):
    p = jnp.exp(log_p)
    return jnp.sum(jnp.where(p > 0, p * (log_p - log_q), jnp.zeros_like(p)))


def _exact_step(config: OnlineConfig, game: G.PreferenceGame, log_ref) -> Callable | None:
    """``log π_t ↦ log T(π_t)``, the tabular update from π_t alone (None if T needs more);
    for the offline algorithms the constant population minimiser."""
    if config.algorithm in ("onpo", "mnpo"):
        return None
    if config.algorithm in OFFLINE_ALGORITHMS:
        target = population_minimiser(config, game, log_ref)
        return None if target is None else (lambda lp: target)
    solver = tabular_solver(config, log_ref)
    return jax.jit(lambda lp: solver.step(game, solver.init(game, lp)).log_policy)


def population_minimiser(
    config: OnlineConfig,
    game: G.PreferenceGame,
    log_ref: Float[Array, "n"],
    *,
    newton_steps: int = 50,
) -> Float[Array, "n"] | None:
    r"""The exact policy an offline algorithm's fits move to: the minimiser over all policies
    of its population loss with pairs :math:`a, b \sim \pi_{\rm ref}` labelled by ``game``.

    IPO: :math:`\pi_{\rm ref}e^{P\pi_{\rm ref}/\tau}` (the population-loss lemma). DPO /
    robust DPO: the loss is convex in the logits, solved by Newton's method (for a
    Bradley–Terry game this is :math:`\pi_{\rm ref}e^{r/\beta}`). Returns None when the
    robust loss has no minimiser (clean labels with a flip correction can make it unbounded)
    or the space is too large for a dense Hessian (> 2048 responses).
    """
    if config.algorithm == "ipo":
        u = game.preference @ jnp.exp(log_ref)
        return jax.nn.log_softmax(log_ref + u / config.tau)
    n = log_ref.shape[0]
    if n > 2048:
        return None
    mu = jnp.exp(log_ref)
    p = jnp.asarray(game.preference, log_ref.dtype)
    weight = mu[:, None] * mu[None, :]

    def objective(f):
        lp = jax.nn.log_softmax(log_ref + f)
        pa = jnp.broadcast_to(lp[:, None], (n, n)).ravel()
        pb = jnp.broadcast_to(lp[None, :], (n, n)).ravel()
        ra = jnp.broadcast_to(log_ref[:, None], (n, n)).ravel()
        rb = jnp.broadcast_to(log_ref[None, :], (n, n)).ravel()
        if config.algorithm == "dpo":
            loss = pw.dpo_loss(pa, pb, ra, rb, beta=config.beta).loss
        else:
            loss = pw.robust_dpo_loss(
                pa, pb, ra, rb, beta=config.beta, flip_rate=config.flip_rate
            ).loss
        return jnp.sum(weight * p * loss.reshape(n, n))  # (a, b) labelled a ≻ b w.p. P_ab

    @jax.jit
    def newton(f):
        g, h = jax.grad(objective)(f), jax.hessian(objective)(f)
        return f - jnp.linalg.pinv(h, hermitian=True) @ g, jnp.max(jnp.abs(g))

    f = jnp.zeros_like(log_ref)
    for _ in range(newton_steps):
        f, grad_max = newton(f)
    target = jax.nn.log_softmax(log_ref + f)
    if not bool(jnp.all(jnp.isfinite(target))) or float(grad_max) > 1e-4:
        return None
    return target


def tabular_baseline(
    config: OnlineConfig,
    game: G.PreferenceGame,
    log_policy: Float[Array, "n"],
    log_ref: Float[Array, "n"],
) -> G.Trajectory:
    """The matching tabular solver run for ``config.num_iterations`` steps from ``log_policy``,
    gaps measured in the unregularised game (``Trajectory.last_gap``/``avg_gap`` ``[T]``).
    Offline algorithms have no iterative solver: see :func:`population_minimiser`."""
    if config.algorithm in OFFLINE_ALGORITHMS:
        raise ValueError(
            f"{config.algorithm} is offline (pairs from π_ref): it has no iterative tabular "
            "solver; compare with population_minimiser(config, game, log_ref)"
        )
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
    "OFFLINE_ALGORITHMS",
    "FixedPrompt",
    "LoopState",
    "OnlineConfig",
    "OnlineHistory",
    "OnlineResult",
    "OnlineTrainer",
    "Oracle",
    "PolicySampler",
    "PromptSource",
    "Responses",
    "TestbedScorer",
    "TestbedTask",
    "average_policy_gaps",
    "online_train",
    "population_minimiser",
    "tabular_baseline",
    "tabular_solver",
    "testbed_oracle",
    "testbed_trainer",
]
