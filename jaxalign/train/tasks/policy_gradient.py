r"""KL-regularised policy gradient of a causal LM against a reward: the LLM form of KL-RL.

Why: the KL-constrained RL objective :math:`J(\pi) = E_\pi r - \beta\,\mathrm{KL}(\pi\|\pi_{\rm
ref})` has the closed-form optimum :math:`\pi^*_\beta \propto \pi_{\rm ref}e^{r/\beta}`
(:mod:`jaxalign.kl`); on a real model it is approached by REINFORCE with a group baseline.
On the enumerable testbed every iterate is scored exactly against that optimum, through the
identity :math:`J(\pi^*_\beta) - J(\pi) = \beta\,\mathrm{KL}(\pi\|\pi^*_\beta)`.

One engine step (``B`` prompts, ``G = group_size`` responses each, one optimizer step):

1. ``B`` prompts, each repeated ``G`` times (host-drawn); ``G`` responses per prompt from
   π_t (KV-cache sampler, temperature 1: the samples must come from the policy the gradient
   is taken at);
2. their rewards (the testbed's additive reward, or a :class:`~jaxalign.models.RewardModel`
   whose parameters are frozen);
3. one clipped AdamW step on :func:`jaxalign.losses.kl_regularized_pg_loss` (leave-one-out
   or group-mean baseline; the KL as a reward penalty (k1) or a loss term with the
   k1/k2/k3 estimator; only k2 as a loss term has gradient ∇KL(π‖π_ref)).

With the clipped surrogate switched on (``ppo_epochs > 1``, a ``clip_low``/``clip_high``
bound, ``ratio_level: sequence`` or another ``loss_aggregation``), step 3 becomes
``ppo_epochs`` AdamW steps on :func:`jaxalign.losses.clipped_pg_loss` over the *same*
samples (one ``lax.scan``; the sampler runs once per batch): the advantages and π_old's
log-probs are computed once, before the first epoch, and each epoch clips the importance
ratio π_θ/π_old (PPO/GRPO; DAPO's asymmetric bounds; GSPO's sequence ratio; Dr. GRPO's
token-sum aggregation). Epoch 1 at π_θ = π_old without clipping has the REINFORCE gradient.
After the first epoch the samples are off-policy for the KL estimator of the loss term, as in
GRPO.

The optimizer state persists across steps (one continuous optimisation, unlike the
per-iteration fits of the Nash algorithms). With LoRA (``lora``) π_t and the AdamW state
cover the adapters only; the sampler and the log-probs run the adapted policy and π_ref is
the frozen base with the adapters off
(:class:`~jaxalign.train.tasks.online_setup.PolicyView`).

References:
  Williams 1992 (REINFORCE); Ahmadian et al. 2024 (RLOO); Shao et al. 2024 (GRPO);
  Schulman et al. 2017 (PPO); Yu et al. 2025 (DAPO); Zheng et al. 2025 (GSPO); Liu et al.
  2025 (Dr. GRPO).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array, Float

from jaxalign.kl import kl_divergence
from jaxalign.losses import batch_advantages, clipped_pg_loss, kl_regularized_pg_loss
from jaxalign.models import reward_model_from_pretrained, rewards
from jaxalign.parallel import batch_sharding
from jaxalign.train.oracles import Responses
from jaxalign.train.rollout import Sampler, place_prompts
from jaxalign.train.tasks import common, online_setup
from jaxalign.train.tasks.base import RunContext, Task
from jaxalign.train.tasks.online_setup import policy_view


class PGState(NamedTuple):
    params: nnx.State  # π_t
    opt_state: optax.OptState  # AdamW state (persists across steps)


class GroupBatch(NamedTuple):
    """``B`` prompts each repeated ``G`` times (rows i·G … i·G + G − 1) and a reward scale
    (1; NaN for fault injection)."""

    tokens: jax.Array  # [B·G, P]
    mask: jax.Array  # [B·G, P]
    reward_scale: jax.Array  # []


@dataclasses.dataclass(frozen=True)
class PGSettings:
    """The loss and optimizer settings (``algorithm`` + ``online`` sections)."""

    batch_size: int = 16  # prompts per step
    group_size: int = 4  # responses per prompt
    learning_rate: float = 1e-2
    beta: float = 0.1
    baseline: str = "leave_one_out"
    estimator: str = "k2"
    kl_mode: str = "loss"
    normalise: bool = False
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float | None = 1.0
    ppo_epochs: int = 1  # optimizer steps per sampled batch
    clip_low: float | None = None  # ε_low: ratios below 1 − ε_low are clipped
    clip_high: float | None = None  # ε_high: ratios above 1 + ε_high are clipped
    ratio_level: str = "token"  # "token" (PPO) or "sequence" (GSPO)
    loss_aggregation: str = "token_sum"  # "token_sum", "sequence_mean" or "token_mean"

    @property
    def clipped(self) -> bool:
        """Whether the step runs the clipped-ratio epochs (else plain REINFORCE, unchanged)."""
        return (
            self.ppo_epochs > 1
            or self.clip_low is not None
            or self.clip_high is not None
            or self.ratio_level != "token"
            or self.loss_aggregation != "token_sum"
        )

    def optimizer(self) -> optax.GradientTransformation:
        chain = [optax.clip_by_global_norm(self.clip_norm)] if self.clip_norm else []
        adamw = optax.adamw(self.learning_rate, eps=self.adam_eps, weight_decay=self.weight_decay)
        return optax.chain(*chain, adamw)


class PGStep:
    """One KL-regularised PG step as a pure function of (state, frozen, prompts, key).

    ``reward(frozen_reward, responses) -> [N]`` scores the sampled sequences. ``lora``: the
    state's parameters are LoRA adapters and ``frozen["reference"]`` the base weights they
    run on (``sampler`` over the adapted graph); ``dropout``: LoRA dropout of the loss's
    forwards (epoch ``e`` draws from ``fold_in(fold_in(key, DROPOUT_STREAM), e)``; the
    sampler, π_old and π_ref run without it).
    """

    def __init__(
        self, settings: PGSettings, sampler: Sampler, reward, *, lora: bool = False,
        dropout: float = 0.0,
    ):  # fmt: skip
        self.settings, self.sampler, self.reward = settings, sampler, reward
        self.lora, self.dropout = lora, dropout
        self.tx = settings.optimizer()

    def init(self, params) -> PGState:
        with jax.numpy_dtype_promotion("standard"):
            return PGState(params, self.tx.init(params))

    def __call__(self, state: PGState, frozen, batch: GroupBatch, key):
        c = self.settings
        _, k_sample = jax.random.split(key)
        view, ref = policy_view(self.sampler, frozen["reference"], state.params, self.lora)
        r = view.sample(state.params, k_sample, (batch.tokens, batch.mask))
        reward = jnp.asarray(self.reward(frozen["reward"], r), jnp.float32) * batch.reward_scale
        ref_logp = jax.lax.stop_gradient(view.token_logp(ref, r))
        mask = r.response_mask.astype(jnp.float32)
        drop_key = jax.random.fold_in(key, common.DROPOUT_STREAM) if self.dropout else None
        if c.clipped:
            return self._clipped_epochs(view, state, r, reward, ref_logp, mask, drop_key)

        def loss_fn(p):
            logp = view.token_logp(p, r, dropout=self.dropout, key=drop_key)
            out = kl_regularized_pg_loss(
                logp, ref_logp, mask, reward, beta=c.beta,
                group_size=c.group_size, baseline=c.baseline, estimator=c.estimator,
                kl_mode=c.kl_mode, normalise=c.normalise,
            )  # fmt: skip
            return out.loss, out

        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and floats
            updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "pg_loss": out.pg_loss,
            "kl_estimate": out.kl,
            "reward_mean": jnp.mean(reward),
            "reward_std": jnp.std(reward),
            "grad_norm": optax.tree.norm(grads),
            "update_norm": optax.tree.norm(updates),
            "param_norm": optax.tree.norm(params),
            "response_length": jnp.mean(jnp.sum(mask, axis=1)),
        }
        return PGState(params, opt_state), metrics

    def _clipped_epochs(
        self, view, state: PGState, r: Responses, reward, ref_logp, mask, drop_key=None
    ):
        """``ppo_epochs`` AdamW steps of the clipped surrogate on one sampled batch."""
        c = self.settings
        old_logp = jax.lax.stop_gradient(view.token_logp(state.params, r))
        adv, _ = batch_advantages(
            reward, old_logp, ref_logp, mask, beta=c.beta, group_size=c.group_size,
            baseline=c.baseline, kl_mode=c.kl_mode, normalise=c.normalise,
        )  # fmt: skip
        kl_in_loss = c.kl_mode == "loss"

        def loss_fn(p, epoch_key):
            logp = view.token_logp(p, r, dropout=self.dropout, key=epoch_key)
            out = clipped_pg_loss(
                logp, old_logp, ref_logp, mask, adv, beta=c.beta,
                clip_low=c.clip_low, clip_high=c.clip_high, ratio_level=c.ratio_level,
                loss_aggregation=c.loss_aggregation,
                estimator=c.estimator if kl_in_loss else "k1", kl_in_loss=kl_in_loss,
            )  # fmt: skip
            return out.loss, out

        def epoch(carry, e):
            params, opt_state = carry
            epoch_key = common.micro_key(drop_key, e)
            (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, epoch_key)
            with jax.numpy_dtype_promotion("standard"):
                updates, opt_state = self.tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            m = {
                "loss": loss,
                "pg_loss": out.pg_loss,
                "kl_estimate": out.kl,
                "clip_fraction": out.clip_fraction,
                "ratio_mean": out.ratio_mean,
                "grad_norm": optax.tree.norm(grads),
                "update_norm": optax.tree.norm(updates),
            }
            return (params, opt_state), m

        epochs = None if drop_key is None else jnp.arange(c.ppo_epochs)
        (params, opt_state), per_epoch = jax.lax.scan(
            epoch, (state.params, state.opt_state), epochs, length=c.ppo_epochs
        )
        # Loss, KL and gradient norm at the sampling policy (epoch 1, comparable with plain
        # REINFORCE); clipping and ratio statistics averaged over the epochs.
        metrics = {k: per_epoch[k][0] for k in ("loss", "pg_loss", "kl_estimate", "grad_norm")}
        metrics |= {
            "clip_fraction": jnp.mean(per_epoch["clip_fraction"]),
            "ratio_mean": jnp.mean(per_epoch["ratio_mean"]),
            "update_norm": jnp.mean(per_epoch["update_norm"]),
            "reward_mean": jnp.mean(reward),
            "reward_std": jnp.std(reward),
            "param_norm": optax.tree.norm(params),
            "response_length": jnp.mean(jnp.sum(mask, axis=1)),
        }
        return PGState(params, opt_state), metrics


class KLObjective:
    """Exact scores of a testbed policy for KL-RL with reward ``r`` over the responses:
    ``exact_reward`` E_π r, ``kl_to_reference``, ``objective`` J = E r − β KL, and
    ``objective_gap`` J(π*_β) − J(π) = β KL(π‖π*_β) ≥ 0 (π*_β ∝ π_ref e^{r/β})."""

    def __init__(self, log_ref: Float[Array, " n"], reward: Float[Array, " n"], beta: float):
        self.log_ref = log_ref
        self.reward = jnp.asarray(reward, log_ref.dtype)
        self.beta = float(beta)
        self.optimum = None
        if self.beta > 0:
            self.log_opt = jax.nn.log_softmax(log_ref + self.reward / self.beta)
            self.optimum = self.scores(self.log_opt)

    def scores(self, lp) -> dict[str, float]:
        kl = kl_divergence(lp, self.log_ref)
        reward = jnp.sum(jnp.exp(lp) * self.reward)
        out = {"exact_reward": float(reward), "kl_to_reference": float(kl)}
        if self.beta > 0:
            out["objective"] = float(reward - self.beta * kl)
            out["objective_gap"] = float(self.beta * kl_divergence(lp, self.log_opt))
        return out


def pg_settings(config) -> PGSettings:
    a, o = config.algorithm, config.online
    return PGSettings(
        batch_size=o.batch_size, group_size=a.group_size, learning_rate=o.learning_rate,
        beta=a.beta, baseline=a.baseline, estimator=a.estimator, kl_mode=a.kl_mode,
        normalise=a.normalise, adam_eps=o.adam_eps, ppo_epochs=a.ppo_epochs,
        clip_low=a.clip_low, clip_high=a.clip_high, ratio_level=a.ratio_level,
        loss_aggregation=a.loss_aggregation,
    )  # fmt: skip


class PolicyGradientTask(Task):
    """``algorithm.name: kl_pg`` on the testbed (exact reward) or prompts (reward model).

    Args:
      ctx: the run context.
      testbed_reward: testbed only, optional ``f(log π_ref, r) -> (reward [K], β)`` with
        ``r`` the testbed's own reward table: the reward over every response and the KL
        weight, computed at ``init`` from the exact reference distribution (a calibrated or
        transformed reward, β solved for a KL budget, …); it replaces ``r`` and
        ``algorithm.beta``.
    """

    name = "policy_gradient"

    def __init__(self, ctx: RunContext, *, testbed_reward: Callable[..., Any] | None = None):
        config = self.config = ctx.config
        self.ctx = ctx
        if testbed_reward is not None and not config.testbed_mode:
            raise ValueError("testbed_reward needs a testbed run (prompts.path empty)")
        self._testbed_reward = testbed_reward
        self.setup = online_setup.build(ctx)
        self.model_config = self.setup.model_config
        self.settings = pg_settings(config)
        if config.testbed_mode:
            testbed = self.setup.exact.testbed
            self._reward = online_setup.testbed_reward(config.testbed, testbed)
            index_of = testbed.index_of

            def reward(table, r: Responses):
                return table[index_of(r.responses)]

            reward_shardings = NamedSharding(ctx.mesh, PartitionSpec())
        else:
            rm = reward_model_from_pretrained(config.oracle.path, mesh=ctx.mesh,
                                              rules=ctx.rule_pairs)  # fmt: skip
            rm_graphdef, self._reward = nnx.split(rm)

            def reward(params, r: Responses):
                return rewards(nnx.merge(rm_graphdef, params), r.tokens, r.attention_mask)

            reward_shardings = jax.tree.map(lambda x: x.sharding, self._reward)
        self._new_pg = lambda settings: PGStep(
            settings, self.setup.sampler, reward, lora=config.lora is not None,
            dropout=common.lora_dropout(config),
        )  # fmt: skip
        self.pg = self._new_pg(self.settings)
        self.lora_report = self.setup.lora_report(self.pg.tx)
        params_sh = self.setup.param_shardings
        with jax.numpy_dtype_promotion("standard"):
            opt_abstract = jax.eval_shape(self.pg.tx.init, self.setup.abstract_params)
        repl = NamedSharding(ctx.mesh, PartitionSpec())
        opt_sh = optax.tree_map_params(
            self.pg.tx, lambda _, s: s, opt_abstract, params_sh, transform_non_params=lambda _: repl
        )
        self.state_shardings = PGState(params_sh, opt_sh)
        self.frozen_shardings = {
            "reference": self.setup.reference_shardings,
            "reward": reward_shardings,
        }
        row = batch_sharding(ctx.mesh, ctx.rules, ndim=2)
        self.batch_shardings = GroupBatch(row, row, None)
        self.objective: KLObjective | None = None
        self.records: list[dict[str, float]] = []

    def init(self, key: jax.Array) -> PGState:
        # π_ref = π_0 (a copy), or under LoRA the frozen base (adapters off).
        params, reference = self.setup.initial_policy(key)
        self.frozen = {"reference": reference, "reward": self._reward}
        if self.setup.exact is not None:
            exact, lora = self.setup.exact, self.config.lora is not None

            @jax.jit
            def log_probs(p, frozen_reference):
                view, _ = policy_view(None, frozen_reference, p, lora)
                return exact.log_probs(view.full(p))

            self._log_probs = lambda p: log_probs(p, reference)
            log_ref = self._log_probs(policy_view(None, reference, params, lora)[1])
            if self._testbed_reward is not None:
                table, beta = self._testbed_reward(log_ref, self._reward)
                self._reward = jnp.asarray(table, jnp.float32)
                self.frozen["reward"] = self._reward
                self.settings = dataclasses.replace(self.settings, beta=float(beta))
                self.pg = self._new_pg(self.settings)
            self.objective = KLObjective(log_ref, self._reward, self.settings.beta)
            self.initial = self.objective.scores(log_ref)
        return self.pg.init(params)

    def exact_log_probs(self, params) -> jax.Array:
        """``[K]`` log π over every testbed response of the policy ``params`` (after ``init``;
        testbed runs only)."""
        if self.setup.exact is None:
            raise ValueError("exact_log_probs needs a testbed run (prompts.path empty)")
        return self._log_probs(params)

    def batch(self, step: int, key: jax.Array) -> GroupBatch:
        s = self.settings
        k_prompt = jax.random.split(key)[0]
        tokens, mask = self.setup.prompts.sample(k_prompt, s.batch_size)
        tokens = np.repeat(np.asarray(tokens), s.group_size, axis=0)  # rows i·G … i·G + G − 1
        mask = np.repeat(np.asarray(mask), s.group_size, axis=0)
        tokens, mask = place_prompts(tokens, mask, self.ctx.mesh, self.ctx.rules)
        return GroupBatch(tokens, mask, jnp.ones((), jnp.float32))

    def poison(self, batch: GroupBatch) -> GroupBatch:
        return batch._replace(reward_scale=jnp.full((), jnp.nan, jnp.float32))

    def step(self, state, frozen, batch, key):
        return self.pg(state, frozen, batch, key)

    def score(self, state: PGState, step: int) -> dict[str, float]:
        if self.objective is None:
            return {}
        out = self.objective.scores(self._log_probs(state.params))
        self.records.append(out)
        return out

    def position(self) -> dict[str, Any]:
        return {"records": self.records} if self.objective is not None else {}

    def restore(self, position: dict[str, Any]) -> None:
        self.records = list(position.get("records", []))

    def describe(self) -> list[str]:
        return [*common.lora_describe(self.lora_report), *self.setup.describe()]

    def summary(self, history) -> dict[str, Any]:
        out = common.loss_summary(history, "reward_mean", "kl_estimate")
        out.update(common.lora_summary(self.lora_report))
        if history:
            out["final_reward_mean"] = history[-1]["reward_mean"]
        if self.objective is None:
            out.update(self.setup.prompts_summary(history))
            if history:
                out["first_reward_mean"] = history[0]["reward_mean"]
            return out
        last = self.records[-1] if self.records else self.initial
        out.update(
            mode="testbed",
            num_responses=self.setup.exact.testbed.num_responses,
            final_exact_reward=last["exact_reward"],
            final_kl_to_reference=last["kl_to_reference"],
            initial_exact_reward=self.initial["exact_reward"],
        )
        if self.objective.optimum is not None:
            out.update(
                initial_objective_gap=self.initial["objective_gap"],
                final_objective_gap=last["objective_gap"],
                optimal_reward=self.objective.optimum["exact_reward"],
                optimal_kl_to_reference=self.objective.optimum["kl_to_reference"],
            )
        return out

    def export(self, state: PGState, directory: Path) -> Path:
        return self.setup.export(state.params, self.frozen, directory)


__all__ = [
    "GroupBatch",
    "KLObjective",
    "PGSettings",
    "PGState",
    "PGStep",
    "PolicyGradientTask",
    "pg_settings",
]
