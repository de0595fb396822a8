"""generate with a mixture_model: exact token-level geometric mixture, KV caches in lockstep.

Two tiny, differently seeded 3-token models play policy and reference; with prompt
``[[0]]`` and no EOS every response has length ``L``, so all ``3**L`` responses can be
enumerated and the sampler compared with the exact distributions.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats
from tiny_models import tiny_model_config

from jaxalign.losses import sequence_level_mixture, token_level_mixture
from jaxalign.models import CausalLM, Generation, ModelConfig, generate, sequence_logprobs

CONFIG = tiny_model_config()
L = 3
ALPHA = 0.5
B = 256  # one batch size for most calls: generate compiles once per shape and settings


@pytest.fixture(scope="module")
def models():
    # Seeds picked so that token- and sequence-level mixtures differ clearly (TV ≈ 0.08).
    policy = CausalLM.create(CONFIG, key=jax.random.key(4))
    reference = CausalLM.create(CONFIG, key=jax.random.key(104))
    return policy, reference


def _prompts(n):
    return jnp.zeros((n, 1), jnp.int32)


@nnx.jit
def _forward_mixture(policy, reference, sequences, attention_mask, alpha, temperature):
    """From full forward passes (no cache): the token-level mixture (tempered) and its argmax."""
    pl = policy(sequences, attention_mask=attention_mask)[:, :-1]
    rl = reference(sequences, attention_mask=attention_mask)[:, :-1]
    mixed = jax.nn.log_softmax(token_level_mixture(pl, rl, mix=alpha) / temperature, axis=-1)
    token_logp = jnp.take_along_axis(mixed, sequences[:, 1:, None], axis=-1)[..., 0]
    return token_logp, jnp.argmax(mixed, axis=-1)


def _mixture_token_logp(
    policy, reference, sequences, attention_mask=None, alpha=ALPHA, temperature=1.0
):
    """log π^α(y_t | prefix) of every next token of ``sequences`` (after ``temperature``)."""
    if attention_mask is None:
        attention_mask = jnp.ones(sequences.shape, bool)
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    return _forward_mixture(
        policy, reference, sequences, attention_mask, f32(alpha), f32(temperature)
    )


def _mixture_samples(policy, reference, n, *, key):
    """n responses of length L drawn from the token-level mixture with weight ALPHA."""
    return generate(
        policy,
        _prompts(n),
        key=key,
        max_new_tokens=L,
        eos_token_id=(),
        mixture_model=reference,
        mixture_weight=ALPHA,
    )


def _exact_distributions(policy, reference, alpha=ALPHA):
    """All responses and their probabilities under token mixture, sequence mixture, policy."""
    ys = np.array(list(itertools.product(range(CONFIG.vocab_size), repeat=L)), np.int32)
    seqs = jnp.concatenate([_prompts(len(ys)), jnp.asarray(ys)], axis=1)
    token_mix = jnp.sum(_mixture_token_logp(policy, reference, seqs, alpha=alpha)[0], axis=-1)
    response = jnp.asarray(np.arange(L + 1) >= 1)[None].repeat(len(ys), axis=0)
    pol = sequence_logprobs(policy, seqs, response).sequence
    ref = sequence_logprobs(reference, seqs, response).sequence
    seq_mix = sequence_level_mixture(pol, ref, mix=alpha)
    probs = [np.exp(np.asarray(x, np.float64)) for x in (token_mix, seq_mix, pol)]
    return ys, *(q / q.sum() for q in probs)  # float32 sums are 1 only to ~1e-7


def test_sampling_logprobs_are_the_exact_token_mixture_and_other_fields_per_model(models):
    policy, reference = models
    out = _mixture_samples(policy, reference, B, key=jax.random.key(0))
    assert np.asarray(out.response_mask).all()
    expected = _mixture_token_logp(policy, reference, out.sequences)[0]
    np.testing.assert_allclose(
        np.asarray(out.sampling_logprobs).sum(-1), np.asarray(expected).sum(-1), atol=1e-5
    )
    np.testing.assert_allclose(np.asarray(out.sampling_logprobs), np.asarray(expected), atol=1e-5)
    response = out.sequence_response_mask
    pol = sequence_logprobs(policy, out.sequences, response)
    ref = sequence_logprobs(reference, out.sequences, response)
    np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(pol.tokens)[:, 1:], atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(out.reference_logprobs), np.asarray(ref.tokens)[:, 1:], atol=1e-5
    )
    # The mixture really is neither model: sampling log-probs differ from both.
    assert np.abs(np.asarray(out.sampling_logprobs - out.logprobs)).max() > 0.05
    assert np.abs(np.asarray(out.sampling_logprobs - out.reference_logprobs)).max() > 0.05


def test_padded_prompts_and_eos_mask_every_field(models):
    policy, reference = models
    prompts = jnp.asarray([[1, 0, 2, 0], [0, 1, 0, 0], [2, 2, 1, 0], [0, 0, 2, 1]], jnp.int32)
    prompt_mask = jnp.asarray([[1, 1, 1, 0], [0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]], jnp.int32)
    prompts = jnp.tile(prompts, (8, 1))
    prompt_mask = jnp.tile(prompt_mask, (8, 1))
    out = generate(
        policy,
        prompts,
        prompt_mask=prompt_mask,
        key=jax.random.key(1),
        max_new_tokens=5,
        eos_token_id=2,
        pad_token_id=0,
        mixture_model=reference,
        mixture_weight=0.3,
    )
    alive = np.asarray(out.response_mask)
    assert not alive.all() and alive[:, 0].all()  # some rows stopped at EOS
    seqs, attn = out.sequences, out.attention_mask
    p = prompts.shape[1]
    expected, _ = _mixture_token_logp(policy, reference, seqs, attn, alpha=0.3)
    expected = np.asarray(expected)[:, p - 1 :]
    np.testing.assert_allclose(
        np.asarray(out.sampling_logprobs), np.where(alive, expected, 0.0), atol=1e-5
    )
    response = out.sequence_response_mask
    pol = np.asarray(sequence_logprobs(policy, seqs, response, attn).tokens)[:, p:]
    ref = np.asarray(sequence_logprobs(reference, seqs, response, attn).tokens)[:, p:]
    np.testing.assert_allclose(np.asarray(out.logprobs), pol, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.reference_logprobs), ref, atol=1e-5)
    for field in (out.logprobs, out.sampling_logprobs, out.reference_logprobs):
        assert (np.asarray(field)[~alive] == 0).all()


def test_samples_follow_the_token_mixture_not_the_sequence_mixture_nor_the_policy(models):
    policy, reference = models
    n = 20_000
    out = _mixture_samples(policy, reference, n, key=jax.random.key(2))
    ys, token_mix, seq_mix, pol = _exact_distributions(policy, reference)
    index = np.asarray(out.tokens) @ (CONFIG.vocab_size ** np.arange(L - 1, -1, -1))
    empirical = np.bincount(index, minlength=len(ys)) / n
    # Sampling noise of the TV distance from n exact draws: bound = mean + 4 sd.
    draws = np.random.default_rng(0).multinomial(n, token_mix, size=400) / n
    noise = 0.5 * np.abs(draws - token_mix).sum(-1)
    bound = noise.mean() + 4 * noise.std()
    tv = lambda q: 0.5 * np.abs(empirical - q).sum()
    assert bound < 0.02
    assert tv(token_mix) < bound
    # Teeth: the sequence-level mixture and the policy alone are far outside the bound.
    assert tv(seq_mix) > 3 * bound
    assert tv(pol) > 10 * bound
    # Chi-square goodness of fit, cells with expected count < 5 pooled.
    small = token_mix * n < 5
    observed = np.append(empirical[~small], empirical[small].sum()) * n
    expected = np.append(token_mix[~small], token_mix[small].sum()) * n
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    seq_expected = np.append(seq_mix[~small], seq_mix[small].sum()) * n
    assert stats.chisquare(observed, seq_expected).pvalue < 1e-12


def test_weight_zero_is_the_policy_and_weight_one_is_the_reference(models):
    policy, reference = models
    kw = dict(key=jax.random.key(3), max_new_tokens=L, eos_token_id=())
    prompts = _prompts(B)
    plain_pol = generate(policy, prompts, **kw)
    plain_ref = generate(reference, prompts, **kw)
    zero = generate(policy, prompts, mixture_model=reference, mixture_weight=0.0, **kw)
    one = generate(policy, prompts, mixture_model=reference, mixture_weight=1.0, **kw)
    np.testing.assert_array_equal(np.asarray(zero.tokens), np.asarray(plain_pol.tokens))
    np.testing.assert_allclose(np.asarray(zero.sampling_logprobs), plain_pol.logprobs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(zero.logprobs), plain_pol.logprobs, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(one.tokens), np.asarray(plain_ref.tokens))
    np.testing.assert_allclose(np.asarray(one.sampling_logprobs), plain_ref.logprobs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(one.reference_logprobs), plain_ref.logprobs, atol=1e-6)
    assert (np.asarray(one.tokens) != np.asarray(zero.tokens)).any()
    # Without a mixture model the reference log-probs default to zeros.
    assert plain_pol.reference_logprobs.shape == plain_pol.logprobs.shape
    assert not np.asarray(plain_pol.reference_logprobs).any()
    # Six-field positional construction still works.
    assert Generation(*plain_pol[:6]).reference_logprobs is None


def test_temperature_and_greedy_apply_to_the_mixture(models):
    policy, reference = models
    kw = dict(eos_token_id=(), mixture_model=reference, mixture_weight=ALPHA, max_new_tokens=L)
    out = generate(policy, _prompts(B), key=jax.random.key(5), temperature=0.5, **kw)
    expected, _ = _mixture_token_logp(policy, reference, out.sequences, temperature=0.5)
    np.testing.assert_allclose(np.asarray(out.sampling_logprobs), np.asarray(expected), atol=1e-5)

    greedy = generate(policy, _prompts(B), key=jax.random.key(5), temperature=0.0, **kw)
    _, argmax = _mixture_token_logp(policy, reference, greedy.sequences)
    np.testing.assert_array_equal(np.asarray(greedy.tokens), np.asarray(argmax))
    assert not np.asarray(greedy.sampling_logprobs).any()


def test_jitted_with_a_traced_weight_matches_eager(models):
    policy, reference = models
    kw = dict(key=jax.random.key(6), max_new_tokens=L, eos_token_id=(), mixture_model=reference)
    eager = generate(policy, _prompts(B), mixture_weight=0.25, **kw)
    jitted = jax.jit(lambda w: generate(policy, _prompts(B), mixture_weight=w, **kw))(
        jnp.asarray(0.25, jnp.float32)
    )
    np.testing.assert_array_equal(np.asarray(jitted.tokens), np.asarray(eager.tokens))
    # Two compilations of the same maths: float32 rounding (a few ulp) apart.
    np.testing.assert_allclose(
        np.asarray(jitted.sampling_logprobs),
        np.asarray(eager.sampling_logprobs),
        rtol=1e-6,
        atol=1e-6,
    )


def test_sharded_models_sample_as_unsharded(models):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake CPU) devices; the root conftest sets XLA_FLAGS")
    policy, reference = models
    mesh = jax.make_mesh((2, 4), ("fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    s_policy = CausalLM.create(CONFIG, key=jax.random.key(4), mesh=mesh)
    s_reference = CausalLM.create(CONFIG, key=jax.random.key(104), mesh=mesh)
    kw = dict(key=jax.random.key(7), max_new_tokens=L, eos_token_id=(), mixture_weight=ALPHA)
    plain = generate(policy, _prompts(B), mixture_model=reference, **kw)
    with jax.set_mesh(mesh):
        sharded = generate(s_policy, _prompts(B), mixture_model=s_reference, **kw)
    np.testing.assert_array_equal(np.asarray(sharded.tokens), np.asarray(plain.tokens))
    for a, b in zip(sharded[1:3], plain[1:3], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(sharded.reference_logprobs), np.asarray(plain.reference_logprobs), atol=1e-5
    )


def test_bad_mixture_arguments_are_rejected(models):
    policy, reference = models
    kw = dict(key=jax.random.key(0), max_new_tokens=2)
    prompts = _prompts(1)
    with pytest.raises(ValueError, match="mixture_weight"):
        generate(policy, prompts, mixture_model=reference, mixture_weight=1.5, **kw)
    with pytest.raises(ValueError, match="mixture_weight"):
        generate(policy, prompts, mixture_model=reference, mixture_weight=-0.1, **kw)
    with pytest.raises(ValueError, match="scalar"):
        generate(policy, prompts, mixture_model=reference, mixture_weight=jnp.ones(2), **kw)
    with pytest.raises(ValueError, match="needs a mixture_model"):
        generate(policy, prompts, mixture_weight=0.3, **kw)
    other = CausalLM.create(
        tiny_model_config(4, initializer_range=ModelConfig.initializer_range),
        key=jax.random.key(0),
    )
    with pytest.raises(ValueError, match="vocab_size"):
        generate(policy, prompts, mixture_model=other, mixture_weight=0.5, **kw)


def test_a_python_float_weight_works_inside_an_enclosing_jit(models):
    """The range check reads the Python value, not the traced copy jit makes of it."""
    policy, reference = models
    kw = dict(key=jax.random.key(6), max_new_tokens=L, eos_token_id=(), mixture_model=reference)
    eager = generate(policy, _prompts(B), mixture_weight=0.25, **kw)
    jitted = jax.jit(lambda p: generate(policy, p, mixture_weight=0.25, **kw).tokens)(_prompts(B))
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(eager.tokens))
    with pytest.raises(ValueError, match="mixture_weight must be in"):
        jax.jit(lambda p: generate(policy, p, mixture_weight=1.5, **kw).tokens)(_prompts(B))
