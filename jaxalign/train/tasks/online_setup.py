"""What the online tasks (Nash, KL-regularised PG) build alike from a config: the policy
and its shardings, the prompt source, the sampler, the oracle (or reward) with its frozen
parameters, and — in testbed mode — the enumerable testbed with its exact game.

With LoRA (the ``lora`` section) the online loop stores, fits and snapshots the adapters
alone: π_t, ONPO's π'_t and MNPO's past iterates are adapter trees, the frozen
``reference`` entry holds the base weights (once), and every policy is run through
:class:`PolicyView`, which binds the adapters to that base inside the step. π_ref is the
same base arrays with the adapters off (zero adapters: the low-rank term is exactly 0).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign import testbed as tb
from jaxalign.data import load_prompt_dataset, make_tiny_preference_dataset
from jaxalign.models import CausalLM, sequence_logprobs, state_shardings
from jaxalign.models.lora import LoRAParam, adapted, parameter_report, with_dropout
from jaxalign.models.sharding import axis_rules
from jaxalign.testbed.scoring import TestbedModel
from jaxalign.train import oracles
from jaxalign.train.rollout import Sampler, place_prompts
from jaxalign.train.state import abstract_model
from jaxalign.train.tasks import common
from jaxalign.train.tasks.base import RunContext


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


def testbed_game(cfg, testbed: tb.Testbed):
    """The synthetic preference game of a ``testbed`` config section."""
    key = jax.random.key(cfg.seed)
    if cfg.preference == "cyclic":
        return tb.cyclic_preference(
            testbed, strength=cfg.strength, reward_scale=cfg.reward_scale, key=key
        )
    shape = (cfg.num_annotators, testbed.response_length, testbed.alphabet_size)
    rewards = jax.random.normal(key, shape) * cfg.reward_scale
    if cfg.preference == "bradley_terry":
        return tb.bradley_terry_preference(testbed, rewards[0])
    return tb.annotator_mixture_preference(testbed, rewards)


def testbed_reward(cfg, testbed: tb.Testbed) -> jax.Array:
    """The additive reward r(y) = Σ_i R[i, y_i] of the testbed (R ~ N(0, reward_scale²),
    seeded by ``testbed.seed``; the Bradley–Terry preference's reward)."""
    shape = (cfg.num_annotators, testbed.response_length, testbed.alphabet_size)
    rewards = jax.random.normal(jax.random.key(cfg.seed), shape) * cfg.reward_scale
    return tb.additive_reward(testbed, rewards[0])


def build_oracle(ctx: RunContext):
    """The configured learned judge (reward / preference model, or a mixture of them)."""
    o = ctx.config.oracle
    if o.kind in ("reward_model", "preference_model"):
        return oracles.load_oracle(o.kind, o.path, mesh=ctx.mesh, rules=ctx.rule_pairs,
                                   sample=o.sample)  # fmt: skip
    members = [
        oracles.load_oracle(kind, path, mesh=ctx.mesh, rules=ctx.rule_pairs, sample=False)
        for kind, path in zip(o.kinds, o.paths)
    ]
    return oracles.annotator_mixture_oracle(members, o.weights, sample=o.sample)


def _shardings_of(tree):
    return jax.tree.map(lambda x: x.sharding, tree)


@dataclasses.dataclass(frozen=True)
class PolicyView:
    """The online loop's policies as sampler parameters, inside one step.

    Without LoRA (``base`` None) a policy *is* its parameters. With LoRA a policy is an
    adapter tree ``p`` and runs as ``merge_state(p, base)`` on the adapted graph; the
    reference is :meth:`reference` (zero adapters on the same base: adapters off).
    """

    sampler: Sampler
    base: nnx.State | None = None

    def full(self, params: nnx.State) -> nnx.State:
        return params if self.base is None else nnx.merge_state(params, self.base)

    def sample(self, params, key, prompts, **kwargs):
        """``sampler.sample`` of the policy ``params`` (a ``mixture=(reference, α)`` too)."""
        if kwargs.get("mixture") is not None:
            reference, weight = kwargs["mixture"]
            kwargs["mixture"] = (self.full(reference), weight)
        return self.sampler.sample(self.full(params), key, prompts, **kwargs)

    def logp(self, params, r, *, dropout: float = 0.0, key=None):
        """``[B]`` sequence log-probs; with ``dropout`` > 0 and a ``key`` (training
        forwards only) the adapters drop their inputs."""
        if dropout == 0 or key is None:
            return self.sampler.logp(self.full(params), r)
        return self._train_logprobs(params, r, dropout, key).sequence

    def token_logp(self, params, r, *, dropout: float = 0.0, key=None):
        """``[B, T]`` per-token log-probs (0 outside the responses); ``dropout`` as
        :meth:`logp`."""
        if dropout == 0 or key is None:
            return self.sampler.token_logp(self.full(params), r)
        return self._train_logprobs(params, r, dropout, key).tokens

    def _train_logprobs(self, params, r, dropout, key):
        model = with_dropout(self.sampler.model(self.full(params)), dropout, key=key)
        return sequence_logprobs(model, r.tokens, r.response_mask, r.attention_mask)


def policy_view(sampler: Sampler, frozen_reference, params, lora: bool):
    """``(view, π_ref)``: the :class:`PolicyView` of a step and the reference policy in the
    form the loop passes around (LoRA: zero adapters shaped like ``params`` on the frozen
    base ``frozen_reference``; else ``frozen_reference`` itself)."""
    if not lora:
        return PolicyView(sampler), frozen_reference
    return PolicyView(sampler, frozen_reference), jax.tree.map(jnp.zeros_like, params)


class OnlineSetup:
    """Policy, prompts, sampler and oracle of an online run (see the module docstring)."""

    def __init__(self, ctx: RunContext, *, oracle=None):
        config = self.config = ctx.config
        self.ctx = ctx
        online = config.online
        self.exact = self.game = self.prompt_dataset = None
        self._pretrained = None
        if config.testbed_mode:
            testbed = tb.Testbed(
                alphabet_size=config.testbed.alphabet_size,
                response_length=config.testbed.response_length,
            )
            self.model_config = config.model
            self.game = testbed_game(config.testbed, testbed)
            self.prompts = FixedPrompt(tuple(testbed.prompt))
            max_new, eos, pad = testbed.response_length, (), 0
        else:
            tokenizer = common.load_run_tokenizer(ctx)
            self.prompts = self.prompt_dataset = self._load_prompts(tokenizer)
            self.model_config, self._pretrained = common.load_policy(ctx)
            common.check_vocab(tokenizer, self.model_config)
            eos = () if tokenizer.eos_token_id is None else int(tokenizer.eos_token_id)
            max_new, pad = online.max_new_tokens, int(self.prompts.pad_token_id)
        self.graphdef, self.abstract_params = abstract_model(self.model_config, ctx.rule_pairs)
        self.param_shardings = state_shardings(self.abstract_params, ctx.mesh, ctx.rule_pairs)
        # The frozen reference's shardings: π_0's copy, or (LoRA) the base weights.
        self.reference_shardings = self.param_shardings
        self.lora = config.lora
        self.base_graphdef = self.full_params = None
        if self.lora is not None:
            # The sampler and the exact scorer run the adapted graph; the loop's parameters
            # are the adapters (abstract_params), the base is frozen.
            self.base_graphdef, self.full_params = self.graphdef, self.abstract_params
            self.graphdef, self.abstract_params, base = common.abstract_lora_model(
                self.model_config, self.lora, ctx.rule_pairs
            )
            self.abstract_base = base
            self.param_shardings = state_shardings(self.abstract_params, ctx.mesh, ctx.rule_pairs)
            self.reference_shardings = state_shardings(base, ctx.mesh, ctx.rule_pairs)
        self.sampler = Sampler(self.graphdef, max_new, online.temperature, online.top_p, eos, pad)
        if config.testbed_mode:
            self.exact = TestbedModel(testbed, self.graphdef)
        if oracle is not None:  # a caller's own judge (e.g. an uninformative one in a test)
            self.oracle = oracle
        elif config.testbed_mode and (
            config.oracle.kind == "testbed" or config.algorithm.name == "kl_pg"
        ):
            self.oracle = oracles.testbed_oracle(
                testbed, self.game, sample=config.oracle.sample, flip_rate=config.oracle.flip_rate
            )
        elif config.algorithm.name != "kl_pg":
            # a learned judge (oracle.path); on the testbed the iterates are still scored
            # exactly on the true game (self.game)
            self.oracle = oracles.noisy_oracle(build_oracle(ctx), config.oracle.flip_rate)
        else:
            self.oracle = None
        params = oracles.oracle_params(self.oracle) if self.oracle is not None else None
        self.oracle_shardings = None if params is None else _shardings_of(params)
        self._win_rate = None

    def _load_prompts(self, tokenizer):
        config, ctx = self.config, self.ctx
        path = config.prompts.path
        if not path:
            path = make_tiny_preference_dataset(
                ctx.out / "data" / f"tiny-p{jax.process_index()}.jsonl", 256, config.run.seed
            )
        p = config.prompts
        return load_prompt_dataset(
            path, tokenizer, max_prompt_length=p.max_prompt_length, fmt=p.format,
            skip_malformed=p.skip_malformed, use_chat_template=p.use_chat_template,
        )  # fmt: skip

    def initial_params(self, key: jax.Array) -> nnx.State:
        """π_0: the pretrained policy, or a fresh one drawn from the run key's first split
        (sharded at birth). Under LoRA: the base weights, before adapters."""
        if self._pretrained is not None:
            return jax.tree.map(jnp.copy, self._pretrained)
        model = CausalLM.create(
            self.model_config,
            key=jax.random.split(key)[0],
            mesh=self.ctx.mesh,
            rules=self.ctx.rule_pairs,
        )
        return nnx.split(model)[1]

    def initial_policy(self, key: jax.Array) -> tuple[nnx.State, nnx.State]:
        """``(π_0's trained parameters, the frozen reference weights)``: a policy and its
        separate copy, or under LoRA fresh adapters (B = 0, drawn from ``fold_in(key, 1)``)
        and the base weights in ``lora.base_dtype`` (the only copy), sharded at birth."""
        params = self.initial_params(key)
        if self.lora is None:
            return params, jax.tree.map(jnp.copy, params)
        base_graphdef, lora = self.base_graphdef, self.lora

        def init(p):
            model = adapted(nnx.merge(base_graphdef, p), lora, key=jax.random.fold_in(key, 1))
            _, adapters, base = nnx.split(model, LoRAParam, ...)
            return adapters, base

        out = (self.param_shardings, self.reference_shardings)
        with jax.set_mesh(self.ctx.mesh), axis_rules(self.ctx.rule_pairs):
            return jax.jit(init, out_shardings=out)(params)

    def view(self, frozen_reference, params) -> tuple[PolicyView, nnx.State]:
        """``(view, π_ref)`` of one step (:func:`policy_view`)."""
        return policy_view(self.sampler, frozen_reference, params, self.lora is not None)

    def lora_report(self, tx) -> dict[str, float] | None:
        """Trainable fraction and optimizer bytes of ``tx`` over the adapters, next to the
        full model (None without LoRA)."""
        if self.lora is None:
            return None
        return parameter_report(self.abstract_params, self.abstract_base, self.full_params, tx)

    def export(self, params, frozen, directory):
        """The final policy as an HF checkpoint (LoRA: merged, plus ``<out>/adapter/``)."""
        if self.lora is None:
            return common.save_policy(self.graphdef, params, directory)
        return common.export_model(
            self.ctx, self.graphdef, params, frozen["reference"], self.lora, directory
        )

    def win_rate(self, params, frozen, step: int) -> dict[str, float]:
        """Prompts mode, every ``logging.eval_every`` steps: the oracle's mean P(y ≻ y') with
        y ~ π_t and y' ~ π_ref on fresh prompts (½ at t = 0 when π_ref = π_0)."""
        log = self.config.logging
        if self.oracle is None or (step % log.eval_every and step != self.config.run.steps):
            return {}
        if self._win_rate is None:
            oracle = self.oracle

            @jax.jit
            def estimate(params, frozen, tokens, mask, key):
                k_a, k_b, k_label = jax.random.split(key, 3)
                view, reference = self.view(frozen["reference"], params)
                a = view.sample(params, k_a, (tokens, mask))
                b = view.sample(reference, k_b, (tokens, mask))
                judge = oracles.bind_oracle(oracle, frozen["oracle"])
                return jnp.mean(jnp.asarray(judge(k_label, a, b), jnp.float32))

            self._win_rate = estimate
        key = jax.random.fold_in(jax.random.key(self.config.run.seed), 2**31 - 1)
        key = jax.random.fold_in(key, step)
        tokens, mask = self.prompts.sample(jax.random.fold_in(key, 1), log.eval_prompts)
        tokens, mask = place_prompts(tokens, mask, self.ctx.mesh, self.ctx.rules)
        return {"win_rate_vs_reference": float(self._win_rate(params, frozen, tokens, mask, key))}

    def describe(self) -> list[str]:
        if self.exact is not None:
            t = self.exact.testbed
            return [f"testbed: {t.num_responses} responses ({t.alphabet_size}^{t.response_length})"]
        d = self.prompt_dataset
        return [f"prompts: {len(d)} ({int(d.num_truncated)} truncated)"]

    def prompts_summary(self, history) -> dict[str, Any]:
        d = self.prompt_dataset
        out: dict[str, Any] = {"mode": "prompts", "num_prompts": len(d),
                               "truncated_prompts": int(d.num_truncated)}  # fmt: skip
        wins = [r["win_rate_vs_reference"] for r in history if "win_rate_vs_reference" in r]
        if wins:
            out["final_win_rate_vs_reference"] = wins[-1]
        return out


def build(ctx: RunContext, *, oracle=None) -> OnlineSetup:
    """The online setup of ``ctx.config``; ``oracle`` replaces the configured judge."""
    return OnlineSetup(ctx, oracle=oracle)


__all__ = [
    "FixedPrompt",
    "OnlineSetup",
    "PolicyView",
    "build",
    "build_oracle",
    "policy_view",
    "testbed_game",
    "testbed_reward",
]
