"""What the online tasks (Nash, KL-regularised PG) build alike from a config: the policy
and its shardings, the prompt source, the sampler, the oracle (or reward) with its frozen
parameters, and — in testbed mode — the enumerable testbed with its exact game."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign import testbed as tb
from jaxalign.data import load_prompt_dataset, make_tiny_preference_dataset
from jaxalign.models import CausalLM, state_shardings
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
        self.sampler = Sampler(self.graphdef, max_new, online.temperature, online.top_p, eos, pad)
        if config.testbed_mode:
            self.exact = TestbedModel(testbed, self.graphdef)
        if oracle is not None:  # a caller's own judge (e.g. an uninformative one in a test)
            self.oracle = oracle
        elif config.testbed_mode and (
            config.oracle.kind == "testbed" or config.algorithm.name == "kl_pg"
        ):
            self.oracle = oracles.testbed_oracle(testbed, self.game, sample=config.oracle.sample)
        elif config.algorithm.name != "kl_pg":
            # a learned judge (oracle.path); on the testbed the iterates are still scored
            # exactly on the true game (self.game)
            self.oracle = build_oracle(ctx)
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
        (sharded at birth)."""
        if self._pretrained is not None:
            return jax.tree.map(jnp.copy, self._pretrained)
        model = CausalLM.create(
            self.model_config,
            key=jax.random.split(key)[0],
            mesh=self.ctx.mesh,
            rules=self.ctx.rule_pairs,
        )
        return nnx.split(model)[1]

    def win_rate(self, params, frozen, step: int) -> dict[str, float]:
        """Prompts mode, every ``logging.eval_every`` steps: the oracle's mean P(y ≻ y') with
        y ~ π_t and y' ~ π_ref on fresh prompts (½ at t = 0 when π_ref = π_0)."""
        log = self.config.logging
        if self.oracle is None or (step % log.eval_every and step != self.config.run.steps):
            return {}
        if self._win_rate is None:
            oracle, sample = self.oracle, self.sampler.sample

            @jax.jit
            def estimate(params, frozen, tokens, mask, key):
                k_a, k_b, k_label = jax.random.split(key, 3)
                a = sample(params, k_a, (tokens, mask))
                b = sample(frozen["reference"], k_b, (tokens, mask))
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


__all__ = ["FixedPrompt", "OnlineSetup", "build", "build_oracle", "testbed_game", "testbed_reward"]
