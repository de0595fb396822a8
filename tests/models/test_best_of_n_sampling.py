"""best_of_n_generate: the winners follow the exact best-of-N law (ties broken uniformly),
n = 1 is plain generate, RewardModel scoring respects the attention mask, bad inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tiny_models import tiny_model_config

from jaxalign import testbed as tb
from jaxalign.kl import best_of_n_policy
from jaxalign.models import (
    CausalLM,
    RewardModel,
    best_of_n_generate,
    generate,
    rewards,
    sampling,
)
from jaxalign.models import best_of_n as bon_module

score = nnx.jit(rewards)  # compiled reference scoring (eager forward passes are slow)

TB = tb.Testbed(alphabet_size=3, response_length=2)  # 9 responses after the prompt [0]
TINY = tiny_model_config(3)
DRAWS = 20_000


@pytest.fixture(scope="module")
def policy():
    return CausalLM.create(TINY, key=jax.random.key(0))


def count_ones(tokens, mask):
    """r(y) = number of token-1s in the response (prompt is [0]): integer-valued, many ties."""
    return jnp.sum((tokens == 1) & mask, axis=1).astype(jnp.float32)


def _winner_law(policy, n, reward_fn, key):
    prompts = jnp.zeros((DRAWS, 1), jnp.int32)
    out = best_of_n_generate(
        policy,
        prompts,
        n=n,
        key=key,
        reward_fn=reward_fn,
        max_new_tokens=TB.response_length,
        eos_token_id=(),
    )
    counts = np.bincount(np.asarray(TB.index_of(out.tokens)), minlength=TB.num_responses)
    return counts / DRAWS


def _tv(a, b):
    return 0.5 * float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).sum())


def _noise_bound(law):
    """TV bound from sampling noise: 4 standard deviations per response, summed (½ Σ 4σ_k)."""
    law = np.asarray(law, np.float64)
    return 0.5 * float(np.sum(4 * np.sqrt(law * (1 - law) / DRAWS)))


@pytest.mark.parametrize("n", [1, 4])
def test_winners_follow_the_exact_best_of_n_law_with_ties(policy, n):
    log_p = tb.policy_log_probs(policy, TB)
    reward = count_ones(TB.responses(), jnp.ones(TB.responses().shape, bool))
    assert len(np.unique(np.asarray(reward))) < TB.num_responses  # the reward has ties
    law = np.exp(np.asarray(best_of_n_policy(log_p, reward, n)))
    empirical = _winner_law(policy, n, count_ones, jax.random.key(10 + n))
    bound = _noise_bound(law)
    assert _tv(empirical, law) < bound, (_tv(empirical, law), bound)
    if n == 1:  # best-of-1 is the policy itself
        np.testing.assert_allclose(law, np.exp(np.asarray(log_p)), atol=1e-5)
        return
    # Teeth: the same samples are far from the base policy and from the law that breaks
    # ties by response identity (what "F^N − F⁻^N" gives when ties are ignored).
    by_identity = jnp.asarray(reward) + 1e-3 * jnp.arange(TB.num_responses, dtype=jnp.float32)
    ignoring_ties = np.exp(np.asarray(best_of_n_policy(log_p, by_identity, n)))
    assert _tv(empirical, np.exp(np.asarray(log_p))) > 5 * bound
    assert _tv(empirical, ignoring_ties) > 5 * bound


def test_a_selector_that_breaks_ties_by_response_fails_the_law(policy):
    """Teeth for the sampler itself: same key and candidates, ties broken by response id
    instead of uniformly; the winners then follow the tie-ignoring law, not π_N."""
    n = 4
    log_p = tb.policy_log_probs(policy, TB)
    reward = count_ones(TB.responses(), jnp.ones(TB.responses().shape, bool))
    eps = jnp.asarray(1e-3, jnp.float32)

    def biased(tokens, mask):
        ids = TB.index_of(tokens[:, -TB.response_length :]).astype(jnp.float32)
        return count_ones(tokens, mask) + eps * ids

    empirical = _winner_law(policy, n, biased, jax.random.key(10 + n))
    law = np.exp(np.asarray(best_of_n_policy(log_p, reward, n)))
    ids = jnp.arange(TB.num_responses, dtype=jnp.float32)
    ignoring_ties = np.exp(np.asarray(best_of_n_policy(log_p, reward + eps * ids, n)))
    assert _tv(empirical, law) > 5 * _noise_bound(law)
    assert _tv(empirical, ignoring_ties) < _noise_bound(ignoring_ties)


def test_n_equal_one_is_plain_generate_for_the_same_key(policy):
    prompts = jnp.asarray([[0, 1], [2, 2], [1, 0]], jnp.int32)
    mask = jnp.asarray([[0, 1], [1, 1], [1, 1]], jnp.int32)
    key = jax.random.key(3)
    kwargs = dict(max_new_tokens=4, eos_token_id=2, pad_token_id=0, prompt_mask=mask)
    plain = generate(policy, prompts, key=key, **kwargs)
    best = best_of_n_generate(policy, prompts, n=1, key=key, reward_fn=count_ones, **kwargs)
    for name in ("tokens", "logprobs", "sampling_logprobs", "response_mask", "prompt_tokens"):
        np.testing.assert_array_equal(getattr(best, name), getattr(plain, name), err_msg=name)
    np.testing.assert_array_equal(best.index, np.zeros(3, np.int32))
    np.testing.assert_array_equal(best.sequences, plain.sequences)
    np.testing.assert_array_equal(best.attention_mask, plain.attention_mask)
    np.testing.assert_array_equal(best.generation.tokens, plain.tokens)


RM_CONFIG = tiny_model_config(8, initializer_range=0.3)
EOS, PAD, N, NEW = 4, 0, 4, 5


@pytest.fixture(scope="module")
def reward_setup():
    lm = CausalLM.create(RM_CONFIG, key=jax.random.key(1))
    rm = RewardModel.create(RM_CONFIG, key=jax.random.key(2))
    prompts = jnp.asarray([[5, 6, 7], [0, 4, 2], [1, 1, 6]], jnp.int32)
    mask = jnp.asarray([[1, 1, 1], [0, 1, 1], [1, 1, 0]], jnp.int32)  # pads on both sides
    return lm, rm, prompts, mask


def _run(reward_setup, reward_fn, seed=4):
    lm, _, prompts, mask = reward_setup
    return best_of_n_generate(
        lm,
        prompts,
        n=N,
        key=jax.random.key(seed),
        reward_fn=reward_fn,
        max_new_tokens=NEW,
        eos_token_id=EOS,
        pad_token_id=PAD,
        prompt_mask=mask,
    )


def test_reward_model_winners_are_the_best_candidates(reward_setup):
    lm, rm, prompts, mask = reward_setup
    out = _run(reward_setup, rm)
    b = prompts.shape[0]
    assert out.tokens.shape == (b, NEW) and out.response_mask.shape == (b, NEW)
    assert out.candidate_rewards.shape == (b, N) and out.rewards.shape == (b,)
    assert out.index.shape == (b,) and out.sequences.shape == (b, 3 + NEW)
    cand = np.asarray(out.candidate_rewards)
    np.testing.assert_array_equal(out.rewards, cand.max(axis=1))
    np.testing.assert_array_equal(cand[np.arange(b), np.asarray(out.index)], out.rewards)
    # The candidates are generate() on the repeated prompts; winners are their rows.
    candidates = generate(
        lm,
        jnp.repeat(prompts, N, axis=0),
        key=jax.random.key(4),
        max_new_tokens=NEW,
        eos_token_id=EOS,
        pad_token_id=PAD,
        prompt_mask=jnp.repeat(mask, N, axis=0),
    )
    rows = np.arange(b) * N + np.asarray(out.index)
    np.testing.assert_array_equal(out.tokens, np.asarray(candidates.tokens)[rows])
    np.testing.assert_array_equal(out.attention_mask, np.asarray(candidates.attention_mask)[rows])
    direct = score(rm, candidates.sequences, candidates.attention_mask)
    np.testing.assert_allclose(cand.reshape(-1), direct, rtol=1e-5, atol=1e-5)
    # The same head as a function gives the same result.
    as_function = _run(reward_setup, lambda t, m: score(rm, t, m))
    np.testing.assert_allclose(as_function.candidate_rewards, cand, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(as_function.index, out.index)


def test_reward_ignores_tokens_after_eos(reward_setup):
    """EOS padding: rewards come from the masked sequence, so overwriting the pads after
    EOS changes nothing, while an all-ones mask (no masking) would change the reward."""
    _, rm, _, _ = reward_setup
    out = _run(reward_setup, rm)
    stopped = ~np.asarray(out.response_mask).all(axis=1)
    assert stopped.any(), "expected some winner to stop at EOS"
    seq, att = np.asarray(out.sequences), np.asarray(out.attention_mask)
    garbage = np.where(att, seq, 7).astype(np.int32)
    again = score(rm, jnp.asarray(garbage), jnp.asarray(att))
    np.testing.assert_allclose(again, out.rewards, rtol=1e-5, atol=1e-5)
    unmasked = score(rm, jnp.asarray(garbage), jnp.ones(att.shape, jnp.int32))
    assert np.abs(np.asarray(unmasked) - np.asarray(out.rewards))[stopped].min() > 1e-4
    for row in np.flatnonzero(stopped):
        resp = np.asarray(out.response_mask)[row]
        end = int(resp.sum())
        assert np.asarray(out.tokens)[row, end - 1] == EOS
        assert (np.asarray(out.tokens)[row, end:] == PAD).all()


def test_repeated_calls_with_the_same_shapes_do_not_recompile(reward_setup):
    _, rm, _, _ = reward_setup
    if not hasattr(sampling._generate, "_cache_size"):
        pytest.skip("this jax has no compiled-function cache counter")
    _run(reward_setup, rm, seed=5)
    compiled = [
        f._cache_size()
        for f in (sampling._generate, bon_module._select, bon_module._reward_model_scores)
    ]
    _run(reward_setup, rm, seed=6)
    again = [
        f._cache_size()
        for f in (sampling._generate, bon_module._select, bon_module._reward_model_scores)
    ]
    assert again == compiled


@pytest.mark.parametrize("n", [0, -1, 2.0, True, "4"])
def test_bad_n_is_rejected(policy, n):
    with pytest.raises(ValueError, match="n must be"):
        best_of_n_generate(
            policy,
            jnp.zeros((1, 1), jnp.int32),
            n=n,
            key=jax.random.key(0),
            reward_fn=count_ones,
            max_new_tokens=2,
        )


def test_bad_inputs_are_rejected(policy):
    prompts = jnp.zeros((2, 1), jnp.int32)
    common = dict(key=jax.random.key(0), max_new_tokens=TB.response_length, eos_token_id=())
    two_labels = RewardModel.create(TINY, key=jax.random.key(0), num_labels=2)
    cases = [
        (dict(reward_fn=3), "reward_fn must be a RewardModel or a function"),
        (dict(reward_fn=policy), "reward_fn must be a RewardModel or a function"),
        (dict(reward_fn=two_labels), "num_labels=1"),
        (dict(reward_fn=lambda t, m: count_ones(t, m)[:, None]), r"shape \(8,\)"),
        (dict(reward_fn=lambda t, m: count_ones(t, m)[:2]), "one reward per candidate"),
        (dict(reward_fn=lambda t, m: count_ones(t, m) * jnp.nan), "NaN"),
    ]
    for extra, message in cases:
        with pytest.raises(ValueError, match=message):
            best_of_n_generate(policy, prompts, n=4, **common, **extra)
    with pytest.raises(ValueError, match="prompts must be"):
        best_of_n_generate(policy, jnp.zeros(3, jnp.int32), n=2, reward_fn=count_ones, **common)
    with pytest.raises(ValueError, match=r"prompt_mask\.shape"):
        best_of_n_generate(
            policy, prompts, n=2, reward_fn=count_ones, prompt_mask=jnp.ones((2, 2)), **common
        )
    with pytest.raises(ValueError, match="max_new_tokens"):
        best_of_n_generate(
            policy, prompts, n=2, key=jax.random.key(0), reward_fn=count_ones, max_new_tokens=0
        )
    with pytest.raises(ValueError, match="temperature"):
        best_of_n_generate(policy, prompts, n=2, reward_fn=count_ones, temperature=-1.0, **common)


def test_integer_rewards_and_a_jitted_reward_fn_are_accepted(policy):
    out = best_of_n_generate(
        policy,
        jnp.zeros((2, 1), jnp.int32),  # same shapes as test_bad_inputs_are_rejected
        n=4,
        key=jax.random.key(7),
        reward_fn=jax.jit(lambda t, m: jnp.sum((t == 1) & m, axis=1)),
        max_new_tokens=TB.response_length,
        eos_token_id=(),
    )
    assert jnp.issubdtype(out.rewards.dtype, jnp.floating)
    ones = np.sum(np.asarray(out.tokens) == 1, axis=1)
    np.testing.assert_array_equal(ones, out.rewards)
    np.testing.assert_array_equal(out.rewards, np.asarray(out.candidate_rewards).max(axis=1))
