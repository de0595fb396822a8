r"""KL-regularised policy gradient of a causal LM against a reward: the LLM form of KL-RL.

Why: the KL-constrained RL objective :math:`J(\pi) = E_\pi r - \beta\,\mathrm{KL}(\pi\|\pi_{\rm
ref})` has the closed-form optimum :math:`\pi^*_\beta \propto \pi_{\rm ref}e^{r/\beta}`
(:mod:`jaxalign.kl`); on a real model it is approached by REINFORCE with a group baseline.
On the enumerable testbed every iterate is scored exactly against that optimum, through the
identity :math:`J(\pi^*_\beta) - J(\pi) = \beta\,\mathrm{KL}(\pi\|\pi^*_\beta)`.

One iteration (``B`` prompts, ``G`` responses each, one optimizer step):

1. draw ``B`` prompts, sample ``G`` responses per prompt from π_t (KV-cache sampler,
   temperature 1: the samples must come from the policy the gradient is taken at);
2. score them with the reward (a :class:`~jaxalign.models.RewardModel`, or any
   ``reward_fn(responses) -> [B·G]``);
3. one AdamW step on :func:`jaxalign.losses.kl_regularized_pg_loss` (leave-one-out or
   group-mean baseline; the KL as a reward penalty (k1) or a loss term with the k1/k2/k3
   estimator; only k2 as a loss term has gradient ∇KL(π‖π_ref) — see that function).

The optimizer state persists across iterations (one continuous optimisation, unlike the
per-iteration fits of the Nash algorithms).

References:
  Williams 1992 (REINFORCE); Ahmadian et al. 2024 (RLOO); Shao et al. 2024 (GRPO).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Float

from jaxalign import _checks
from jaxalign import testbed as tb
from jaxalign.losses import kl_regularized_pg_loss
from jaxalign.models import sequence_logprobs
from jaxalign.train.online import FixedPrompt, PolicySampler, PromptSource
from jaxalign.train.oracles import Responses

RewardFn = Callable[[Responses], jax.Array]


@dataclasses.dataclass(frozen=True)
class PolicyGradientConfig:
    """Hyperparameters of :class:`PolicyGradientTrainer`.

    Attributes:
      num_iterations: optimizer steps T (one sampled batch each).
      batch_size: prompts per iteration.
      group_size: responses per prompt (≥ 2 for the leave-one-out / group-mean baselines).
      learning_rate: AdamW learning rate.
      beta: KL coefficient β ≥ 0.
      baseline: ``"leave_one_out"`` (RLOO), ``"group_mean"`` (GRPO-style) or ``"none"``.
      estimator: per-token KL estimator of the loss term (``"k1"``, ``"k2"``, ``"k3"``).
      kl_mode: ``"loss"`` (a differentiable KL term) or ``"reward"`` (k1 penalty in r).
      normalise: divide group-mean advantages by the group std (GRPO).
      max_new_tokens: response length cap.
      adam_eps, weight_decay, clip_norm: AdamW's ε, decoupled decay, global-norm clip
        (``None`` = no clipping).
    """

    num_iterations: int = 100
    batch_size: int = 16
    group_size: int = 4
    learning_rate: float = 1e-2
    beta: float = 0.1
    baseline: Literal["none", "leave_one_out", "group_mean"] = "leave_one_out"
    estimator: Literal["k1", "k2", "k3"] = "k2"
    kl_mode: Literal["loss", "reward"] = "loss"
    normalise: bool = False
    max_new_tokens: int = 64
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float | None = 1.0

    def __post_init__(self):
        for name in ("num_iterations", "batch_size", "group_size", "max_new_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.baseline != "none" and self.group_size < 2:
            raise ValueError(
                f"baseline={self.baseline!r} needs group_size >= 2, got {self.group_size}"
            )
        _checks.check_positive("learning_rate", self.learning_rate)
        _checks.check_nonnegative("beta", self.beta)
        _checks.check_positive("adam_eps", self.adam_eps)
        _checks.check_nonnegative("weight_decay", self.weight_decay)
        if self.clip_norm is not None:
            _checks.check_positive("clip_norm", self.clip_norm)
        for name, allowed in (
            ("baseline", ("none", "leave_one_out", "group_mean")),
            ("estimator", ("k1", "k2", "k3")),
            ("kl_mode", ("loss", "reward")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


class PGState(NamedTuple):
    iteration: int
    params: nnx.State
    opt_state: optax.OptState


class PolicyGradientTrainer(PolicySampler):
    """KL-regularised REINFORCE, one sampled batch and one optimizer step per
    :meth:`iteration`.

    Args:
      model: π_0 (a :class:`~jaxalign.models.CausalLM`, not modified).
      config: :class:`PolicyGradientConfig`.
      prompts: a :class:`~jaxalign.train.online.PromptSource`.
      reward_fn: ``reward_fn(responses) -> [N]`` rewards of prompt + response sequences
        (:func:`reward_model_fn` wraps a :class:`~jaxalign.models.RewardModel`).
      reference, eos_token_id, pad_token_id, mesh, rules: see
        :class:`~jaxalign.train.online.PolicySampler`.
    """

    def __init__(
        self,
        model,
        config: PolicyGradientConfig,
        *,
        prompts: PromptSource,
        reward_fn: RewardFn,
        reference=None,
        eos_token_id: int | tuple[int, ...] | None = None,
        pad_token_id: int | None = None,
        mesh: jax.sharding.Mesh | None = None,
        rules=None,
    ):
        super().__init__(
            model,
            prompts=prompts,
            reference=reference,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            mesh=mesh,
            rules=rules,
        )
        self.config, self.reward_fn = config, reward_fn
        if reference is None:  # the step donates the policy's buffers: keep π_ref apart
            with self._context():
                self.ref_params = jax.jit(lambda t: jax.tree.map(jnp.copy, t))(self.ref_params)
        chain = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm else []
        self.tx = optax.chain(
            *chain,
            optax.adamw(
                config.learning_rate, eps=config.adam_eps, weight_decay=config.weight_decay
            ),
        )
        with self._context(), jax.numpy_dtype_promotion("standard"):
            opt_state = jax.jit(self.tx.init)(self.initial_params)
        self.state = PGState(0, self.initial_params, opt_state)
        self._step = jax.jit(self._step_impl, donate_argnums=(0, 1))

    def _token_logp(self, params, r: Responses) -> jax.Array:
        model = nnx.merge(self.graphdef, params)
        return sequence_logprobs(model, r.tokens, r.response_mask, r.attention_mask).tokens

    def _step_impl(self, params, opt_state, r: Responses, rewards):
        c = self.config
        ref_logp = jax.lax.stop_gradient(self._token_logp(self.ref_params, r))
        mask = r.response_mask.astype(jnp.float32)

        def loss_fn(p):
            out = kl_regularized_pg_loss(
                self._token_logp(p, r),
                ref_logp,
                mask,
                rewards,
                beta=c.beta,
                group_size=c.group_size,
                baseline=c.baseline,
                estimator=c.estimator,
                kl_mode=c.kl_mode,
                normalise=c.normalise,
            )
            return out.loss, out

        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and floats
            updates, opt_state = self.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {
            "loss": loss,
            "pg_loss": out.pg_loss,
            "kl_estimate": out.kl,
            "reward_mean": jnp.mean(rewards),
            "reward_std": jnp.std(rewards),
            "grad_norm": optax.tree.norm(grads),
            "response_length": jnp.mean(jnp.sum(mask, axis=1)),
        }
        return params, opt_state, metrics

    def iteration(self, key: jax.Array) -> dict[str, float]:
        """Samples ``B × G`` responses, scores them and takes one optimizer step; returns
        ``loss``, ``pg_loss``, ``kl_estimate`` (the configured estimator's mean sequence KL
        on the samples), ``reward_mean``/``reward_std``, ``grad_norm``, ``response_length``
        and ``time_s``."""
        t0 = time.perf_counter()
        c, st = self.config, self.state
        with self._context():
            k_prompt, k_sample = jax.random.split(key)
            xg = self.draw_prompts(k_prompt, c.batch_size, repeat=c.group_size)  # rows i·G…
            r = self.sample(st.params, k_sample, xg, max_new_tokens=c.max_new_tokens)
            rewards = jnp.asarray(self.reward_fn(r), jnp.float32)
            params, opt_state, metrics = self._step(st.params, st.opt_state, r, rewards)
        self.state = PGState(st.iteration + 1, params, opt_state)
        out = {k: float(v) for k, v in jax.device_get(metrics).items()}
        out["time_s"] = time.perf_counter() - t0
        return out

    def state_tree(self) -> dict[str, Any]:
        return {"params": self.state.params, "opt_state": self.state.opt_state}

    def load_state_tree(self, iteration: int, tree: dict[str, Any]) -> None:
        self.state = PGState(iteration, tree["params"], tree["opt_state"])


def reward_model_fn(model) -> RewardFn:
    """``reward_fn`` of a :class:`~jaxalign.models.RewardModel` (read at each sequence's last
    real token; one jitted forward taking the frozen parameters)."""
    from jaxalign.models import rewards

    graphdef, state = nnx.split(model)
    score = jax.jit(lambda s, t, m: rewards(nnx.merge(graphdef, s), t, m))
    return lambda r: score(state, r.tokens, r.attention_mask)


class KLScorer:
    """Exact scores of a testbed policy for KL-RL with reward ``r`` over the responses:
    ``reward`` E_π r, ``kl_to_reference``, ``objective`` J = E r − β KL, and
    ``objective_gap`` J(π*_β) − J(π) = β KL(π‖π*_β) ≥ 0 (π*_β ∝ π_ref e^{r/β})."""

    def __init__(self, task_enumerate, ref_params, reward: Float[Array, "n"], beta: float):
        self.enumerate = task_enumerate
        self.log_ref = task_enumerate(ref_params)
        self.reward = jnp.asarray(reward, self.log_ref.dtype)
        self.beta = float(beta)
        if self.beta > 0:
            self.log_opt = jax.nn.log_softmax(self.log_ref + self.reward / self.beta)
            self.optimum = self._scores(self.log_opt)
        self.records: list[dict[str, float]] = []

    def _scores(self, lp) -> dict[str, float]:
        p = jnp.exp(lp)
        kl = jnp.sum(jnp.where(p > 0, p * (lp - self.log_ref), 0.0))
        reward = jnp.sum(p * self.reward)
        out = {"exact_reward": float(reward), "kl_to_reference": float(kl)}
        if self.beta > 0:
            out["objective"] = float(reward - self.beta * kl)
            kl_opt = jnp.sum(jnp.where(p > 0, p * (lp - self.log_opt), 0.0))
            out["objective_gap"] = float(self.beta * kl_opt)
        return out

    def score(self, params) -> dict[str, float]:
        out = self._scores(self.enumerate(params))
        self.records.append(out)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.records = list(d["records"])


def testbed_pg_trainer(
    model,
    testbed: tb.Testbed,
    reward: Float[Array, "n"],
    config: PolicyGradientConfig,
    *,
    mesh=None,
    rules=None,
) -> tuple[PolicyGradientTrainer, KLScorer]:
    """KL-PG on the testbed with reward vector ``reward`` over the ``A^L`` responses, and its
    exact scorer."""
    if model.config.vocab_size != testbed.alphabet_size:
        raise ValueError(
            f"model vocab_size={model.config.vocab_size} must equal the testbed alphabet_size="
            f"{testbed.alphabet_size}"
        )
    reward = jnp.asarray(reward)
    if reward.shape != (testbed.num_responses,):
        raise ValueError(
            f"reward must have one value per response ({testbed.num_responses}), "
            f"got shape {reward.shape}"
        )
    config = dataclasses.replace(config, max_new_tokens=testbed.response_length)
    graphdef = nnx.graphdef(model)
    trainer = PolicyGradientTrainer(
        model,
        config,
        prompts=FixedPrompt(tuple(testbed.prompt)),
        reward_fn=lambda r: reward[testbed.index_of(r.responses)],
        eos_token_id=(),
        pad_token_id=0,
        mesh=mesh,
        rules=rules,
    )
    enumerate_ = jax.jit(lambda p: tb.policy_log_probs(nnx.merge(graphdef, p), testbed))
    with trainer._context():
        scorer = KLScorer(enumerate_, trainer.ref_params, reward, config.beta)
    return trainer, scorer


__all__ = [
    "KLScorer",
    "PGState",
    "PolicyGradientConfig",
    "PolicyGradientTrainer",
    "RewardFn",
    "reward_model_fn",
    "testbed_pg_trainer",
]
