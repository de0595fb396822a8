"""The enumerable testbed: enumeration, exact policy distribution of a real transformer
(checked against its KV-cache sampler), preference constructors, exact evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_models import tiny_model_config

from jaxalign import games
from jaxalign import testbed as tb
from jaxalign.models import CausalLM, generate

TB = tb.Testbed(alphabet_size=3, response_length=3)
CONFIG = tiny_model_config(num_layers=2)


@pytest.fixture(scope="module")
def model():
    return CausalLM.create(CONFIG, key=jax.random.key(0))


def test_enumeration_round_trip():
    ys = TB.responses()
    assert ys.shape == (27, 3)
    np.testing.assert_array_equal(TB.index_of(ys), np.arange(27))
    assert len({tuple(r) for r in np.asarray(ys)}) == 27


def test_exact_distribution_sums_to_one_and_matches_the_sampler(model):
    log_pi = tb.policy_log_probs(model, TB)
    assert abs(float(jax.nn.logsumexp(log_pi))) < 1e-5
    n = 20_000
    prompts = jnp.zeros((n, 1), jnp.int32)
    gen = generate(model, prompts, key=jax.random.key(1), max_new_tokens=3, temperature=1.0)
    freq = np.bincount(np.asarray(TB.index_of(gen.tokens)), minlength=27) / n
    p = np.exp(np.asarray(log_pi))
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 5 * sigma + 2e-3)
    # The sampler's own log-probs agree with the enumeration.
    np.testing.assert_allclose(gen.logprobs.sum(1), log_pi[TB.index_of(gen.tokens)], atol=1e-4)


def test_preferences_are_valid_games_and_cyclic_is_not_transitive():
    key = jax.random.key(2)
    token_rewards = jax.random.normal(key, (3, 3))
    bt = tb.bradley_terry_preference(TB, token_rewards)
    cyc = tb.cyclic_preference(TB, key=key)
    mix = tb.annotator_mixture_preference(TB, jax.random.normal(key, (3, 3, 3)))
    for g in (bt, cyc, mix):
        p = np.asarray(g.preference)
        np.testing.assert_allclose(p + p.T, 1.0, atol=1e-6)
    # BT: the best response beats everything, so the Nash is pure (gap 0 at the argmax).
    best = int(jnp.argmax(tb.additive_reward(TB, token_rewards)))
    pure = jnp.log(jax.nn.one_hot(best, 27) + 1e-30)
    assert float(games.duality_gap(bt, jax.nn.log_softmax(pure))) < 1e-6
    # Cyclic: no pure strategy is an equilibrium.
    pures = jax.nn.log_softmax(jnp.log(jnp.eye(27) + 1e-30), axis=1)
    gaps = jax.vmap(lambda pi: games.duality_gap(cyc, pi))(pures)
    assert float(jnp.min(gaps)) > 0.1


def test_evaluate_is_zero_gap_at_the_regularised_nash():
    with jax.enable_x64(True):
        g = tb.cyclic_preference(TB, key=jax.random.key(3))
        g = games.PreferenceGame(g.preference.astype(jnp.float64))
        log_ref = jnp.full((27,), -jnp.log(27.0), jnp.float64)
        nash = games.nash_equilibrium(g, tau=0.1, ref=log_ref)
        ev = tb.evaluate(nash, g, log_ref, tau=0.1)
        assert float(ev.regularised_gap) < 1e-6
        assert 0 < float(ev.kl_to_reference)
        assert abs(float(tb.evaluate(log_ref, g, log_ref).win_rate_vs_reference) - 0.5) < 1e-9


def test_bad_testbed_and_model_mismatch(model):
    with pytest.raises(ValueError, match="too many"):
        tb.Testbed(alphabet_size=20, response_length=5)
    with pytest.raises(ValueError, match="prompt"):
        tb.Testbed(alphabet_size=3, prompt=(5,))
    with pytest.raises(ValueError, match="vocab_size=3 must equal"):
        tb.policy_log_probs(model, tb.Testbed(alphabet_size=4, response_length=2))
