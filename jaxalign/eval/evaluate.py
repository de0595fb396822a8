r"""``jaxalign eval``: a policy against a reference — win rate, reward, KL, length.

One evaluation:

1. load the policy and the reference (local HF checkpoints, or fresh inits of the
   ``model`` section — on the testbed the reference of a ``jaxalign train`` run is its
   fresh π_0, ``reference.init_seed = run.seed``) and the judge;
2. for every prompt draw ``N`` responses from each of π and π_ref (keys folded from
   ``seed`` per batch; one jitted call samples, scores and judges a batch of rows);
3. pair the i-th policy response with the i-th reference response of the same prompt and
   average the per-pair values of :mod:`jaxalign.eval.metrics` (mean ± standard error);
4. on the testbed, enumerate all responses for the exact value of every metric.

Sampling uses the KV-cache sampler of :class:`~jaxalign.train.rollout.Sampler`; the KL
estimates read per-token log-probs of the *policy's* samples under both models.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign import testbed as tb
from jaxalign.eval import metrics as M
from jaxalign.eval.config import CheckpointSource, EvalConfig
from jaxalign.models import CausalLM, from_pretrained, load_tokenizer
from jaxalign.train import oracles
from jaxalign.train.oracles import Responses
from jaxalign.train.rollout import Sampler

# score(params, key, a, b) -> (P(a ≻ b) [B], r(a) [B] | None, r(b) [B] | None)
Score = Callable[[Any, jax.Array, Responses, Responses], tuple]


class Judge(NamedTuple):
    """A judge of (policy, reference) pairs: its arrays and a traceable ``score``."""

    kind: str
    params: Any
    score: Score
    has_reward: bool


class EvalResult(NamedTuple):
    """What :func:`evaluate` measured.

    Attributes:
      sampled: metric name → :class:`~jaxalign.eval.metrics.Estimate` (mean, stderr, n).
      exact: metric name → exact value (testbed only; empty otherwise).
      info: counts and names (prompts, samples per prompt, judge, KL estimators, ...).
    """

    sampled: dict[str, M.Estimate]
    exact: dict[str, float]
    info: dict[str, Any]


# ----------------------------------------------------------------------------- models


def load_policy(source: CheckpointSource, config: EvalConfig, name: str) -> CausalLM:
    """``source.path`` as a :class:`CausalLM`, or a fresh init of ``config.model`` drawn
    exactly as the online tasks of ``jaxalign train`` draw π_0 with ``run.seed =
    source.init_seed`` (so a testbed run's reference can be rebuilt)."""
    if source.path:
        path = Path(source.path)
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{name}.path {source.path!r} holds no config.json; expected an HF checkpoint "
                "directory (e.g. <run dir>/model of `jaxalign train`)"
            )
        return from_pretrained(path)
    key = jax.random.split(jax.random.key(source.init_seed))[0]
    return CausalLM.create(config.model, key=key)


def _testbed_judge(config: EvalConfig, testbed: tb.Testbed) -> tuple[Judge, jax.Array]:
    from jaxalign.train.tasks.online_setup import testbed_game, testbed_reward

    game = testbed_game(config.testbed, testbed)
    reward = testbed_reward(config.testbed, testbed)

    def score(params, key, a, b):
        p, r = params
        ia, ib = testbed.index_of(a.responses), testbed.index_of(b.responses)
        return p[ia, ib], r[ia], r[ib]

    params = (jnp.asarray(game.preference, jnp.float32), jnp.asarray(reward, jnp.float32))
    return Judge("testbed", params, score, True), game.preference


def _reward_model_judge(config: EvalConfig) -> Judge:
    from jaxalign.models import reward_model_from_pretrained

    model = reward_model_from_pretrained(config.judge.path)
    if model.num_labels != 1:
        raise ValueError(
            f"judge.path {config.judge.path!r}: a reward model needs one label, "
            f"got num_labels={model.num_labels}"
        )
    graphdef, state = nnx.split(model)
    temperature = config.judge.temperature

    def score(params, key, a, b):
        module = nnx.merge(graphdef, params)
        r_a = module(a.tokens, attention_mask=a.attention_mask)[:, 0]
        r_b = module(b.tokens, attention_mask=b.attention_mask)[:, 0]
        return jax.nn.sigmoid((r_a - r_b) / temperature), r_a, r_b

    return Judge("reward_model", state, score, True)


def _preference_model_judge(config: EvalConfig) -> Judge:
    oracle = oracles.load_oracle(
        "preference_model", config.judge.path, temperature=config.judge.temperature
    )

    def score(params, key, a, b):
        return oracles.bind_oracle(oracle, params)(key, a, b), None, None

    return Judge("preference_model", oracles.oracle_params(oracle), score, False)


def build_judge(config: EvalConfig, testbed: tb.Testbed | None):
    """The configured judge (and, on the testbed, its exact ``[n, n]`` preference)."""
    kind = config.judge.kind
    if kind == "testbed":
        return _testbed_judge(config, testbed)
    if kind == "reward_model":
        return _reward_model_judge(config), None
    if kind == "preference_model":
        return _preference_model_judge(config), None
    raise ValueError(f"judge.kind must be testbed, reward_model or preference_model, got {kind!r}")


# ----------------------------------------------------------------------------- prompts


def _prompt_rows(config: EvalConfig, testbed, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens [K, P], mask [K, P])`` of the evaluated prompts (the testbed: its one)."""
    if testbed is not None:
        tokens = np.asarray([testbed.prompt], np.int32)
        return tokens, np.ones_like(tokens)
    from jaxalign.data import load_prompt_dataset

    p = config.prompts
    data = load_prompt_dataset(
        p.path, tokenizer, max_prompt_length=p.max_prompt_length, fmt=p.format,
        skip_malformed=p.skip_malformed, use_chat_template=p.use_chat_template,
    )  # fmt: skip
    if len(data) == 0:
        raise ValueError(f"prompts.path {p.path!r} holds no prompts")
    k = len(data) if p.num_prompts == 0 else min(p.num_prompts, len(data))
    batch = data.take(np.arange(k))
    return np.asarray(batch.tokens, np.int32), np.asarray(batch.mask, np.int32)


# ----------------------------------------------------------------------------- one batch


def _same_response(a: Responses, b: Responses) -> jax.Array:
    """1 where the two rows hold the same response tokens (ties by construction)."""
    same_tokens = jnp.all(
        jnp.where(a.response_mask > 0, a.tokens, -1)
        == jnp.where(b.response_mask > 0, b.tokens, -1),
        axis=1,
    )
    return same_tokens


def make_batch_step(policy: Sampler, reference: Sampler, judge: Judge):
    """The jitted ``step(policy_params, ref_params, judge_params, tokens, mask, key)`` of one
    batch of prompt rows: per-row values of every metric (``[B]`` arrays by name)."""

    @jax.jit
    def step(policy_params, ref_params, judge_params, tokens, mask, key):
        k_policy, k_ref, k_judge = jax.random.split(key, 3)
        a = policy.sample(policy_params, k_policy, (tokens, mask))  # y ~ π
        b = reference.sample(ref_params, k_ref, (tokens, mask))  # y' ~ π_ref
        prob, r_a, r_b = judge.score(judge_params, k_judge, a, b)
        prob = jnp.where(_same_response(a, b), 0.5, jnp.asarray(prob, jnp.float32))
        # KL(π‖π_ref) is estimated on the policy's own samples.
        kl = M.sequence_kl_estimates(
            policy.token_logp(policy_params, a), reference.token_logp(ref_params, a)
        )
        out = {
            "win_rate": prob,
            "decisive_win_rate": M.verdict(prob),
            "tie_rate": M.is_tie(prob),
            **{f"kl_{name}": v for name, v in kl.items()},
            "response_length": jnp.sum(a.response_mask, axis=1).astype(jnp.float32),
            "reference_response_length": jnp.sum(b.response_mask, axis=1).astype(jnp.float32),
        }
        if judge.has_reward:
            out["reward"] = jnp.asarray(r_a, jnp.float32)
            out["reference_reward"] = jnp.asarray(r_b, jnp.float32)
        return out

    return step


# ----------------------------------------------------------------------------- evaluate


def evaluate(config: EvalConfig, *, progress: Callable[[int, int], None] | None = None):
    """Evaluates ``config.policy`` against ``config.reference`` (see the module docstring).

    Returns:
      :class:`EvalResult`.

    Raises:
      ValueError: a checkpoint directory without ``config.json``, models of different
        vocabularies, a testbed model whose vocabulary is not the alphabet, no prompts.
    """
    testbed = None
    if config.testbed.enabled:
        testbed = tb.Testbed(config.testbed.alphabet_size, config.testbed.response_length)
    policy = load_policy(config.policy, config, "policy")
    reference = load_policy(config.reference, config, "reference")
    vocab_p, vocab_r = policy.config.vocab_size, reference.config.vocab_size
    if vocab_p != vocab_r:
        raise ValueError(
            f"policy and reference vocabularies differ: {vocab_p} vs {vocab_r}; expected "
            "models of one tokenizer"
        )
    tokenizer = None
    if testbed is not None:
        if vocab_p != testbed.alphabet_size:
            raise ValueError(
                f"policy vocab_size={vocab_p} must equal testbed.alphabet_size="
                f"{testbed.alphabet_size} on the testbed"
            )
        max_new, eos, pad = testbed.response_length, (), 0
    else:
        tokenizer = load_tokenizer(config.tokenizer or config.policy.path)
        eos = () if tokenizer.eos_token_id is None else int(tokenizer.eos_token_id)
        pad = int(tokenizer.pad_token_id or 0)
        max_new = config.sampling.max_new_tokens
    judge, preference = build_judge(config, testbed)
    s = config.sampling
    sampler = functools.partial(
        Sampler, max_new_tokens=max_new, temperature=s.temperature, top_p=s.top_p,
        eos_token_id=eos, pad_token_id=pad,
    )  # fmt: skip
    pol_graph, pol_params = nnx.split(policy)
    ref_graph, ref_params = nnx.split(reference)
    step = make_batch_step(sampler(pol_graph), sampler(ref_graph), judge)

    prompt_tokens, prompt_mask = _prompt_rows(config, testbed, tokenizer)
    rows = np.repeat(np.arange(len(prompt_tokens)), s.samples_per_prompt)  # prompt of each row
    size = min(s.batch_size, len(rows))
    key = jax.random.key(config.seed)
    values: dict[str, list[np.ndarray]] = {}
    num_batches = -(-len(rows) // size)
    for i in range(num_batches):
        index = rows[i * size : (i + 1) * size]
        real = len(index)
        index = np.pad(index, (0, size - real), mode="edge")  # one shape: compiles once
        out = step(pol_params, ref_params, judge.params, jnp.asarray(prompt_tokens[index]),
                   jnp.asarray(prompt_mask[index]), jax.random.fold_in(key, i))  # fmt: skip
        for name, v in out.items():
            values.setdefault(name, []).append(np.asarray(v)[:real])
        if progress is not None:
            progress(i + 1, num_batches)
    sampled = {name: M.estimate(np.concatenate(v)) for name, v in values.items()}

    exact: dict[str, float] = {}
    if testbed is not None:
        log_pi = tb.policy_log_probs(policy, testbed)
        log_ref = tb.policy_log_probs(reference, testbed)
        exact = M.exact_testbed_metrics(
            log_pi, log_ref, preference, judge.params[1], testbed.response_length
        )
    info = {
        "mode": "testbed" if testbed is not None else "prompts",
        "num_prompts": len(prompt_tokens),
        "samples_per_prompt": s.samples_per_prompt,
        "num_pairs": len(rows),
        "judge": judge.kind,
        "kl_estimators": {
            "kl_k1": "k1 = sum_t log pi/pi_ref (unbiased)",
            "kl_k3": "k3 = sum_t (rho_t - 1) - log rho_t, rho_t = pi_ref/pi (unbiased, >= 0)",
        },
        "kl_samples": "policy",
        "stderr": "sample std (ddof 1) / sqrt(num_pairs)",
    }
    if s.temperature != 1.0 or s.top_p != 1.0:
        info["kl_note"] = (
            "responses were sampled with temperature/top_p != 1: the KL estimates are not "
            "unbiased for KL(pi || pi_ref) of the temperature-1 models"
        )
    if testbed is not None:
        info["num_responses"] = testbed.num_responses
    return EvalResult(sampled, exact, info)


def config_dict(config: EvalConfig) -> dict[str, Any]:
    """The config as plain JSON-ready values."""
    from jaxalign.config import to_dict

    return to_dict(config) if dataclasses.is_dataclass(config) else dict(config)


__all__ = ["EvalResult", "Judge", "build_judge", "evaluate", "load_policy", "make_batch_step"]
