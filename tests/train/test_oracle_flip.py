"""Noisy annotators: labels flipped independently at rate ε (oracles.noisy_oracle and
``oracle.flip_rate``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import testbed as tb
from jaxalign.train import OracleConfig, train_config_from_dict
from jaxalign.train.oracles import noisy_oracle
from jaxalign.train.oracles import testbed_oracle as bed_oracle  # not collected as a test
from jaxalign.train.oracles import testbed_responses as bed_responses

TESTBED = tb.Testbed(alphabet_size=3, response_length=2, prompt=(0,))


def _all_pairs(repeat: int = 1):
    """Every ordered pair (i, j) of testbed responses, ``repeat`` times, as two Responses."""
    n = TESTBED.num_responses
    ia, ib = np.divmod(np.tile(np.arange(n * n), repeat), n)
    ys = TESTBED.responses()
    return ia, ib, bed_responses(TESTBED, ys[ia]), bed_responses(TESTBED, ys[ib])


def _game():
    rewards = jax.random.normal(jax.random.key(3), (2, 3))
    return tb.bradley_terry_preference(TESTBED, rewards)


@pytest.mark.parametrize("flip_rate", [0.1, 0.3])
def test_hard_labels_flip_at_the_requested_rate(flip_rate):
    ones = lambda key, a, b: jnp.ones(a.tokens.shape[:1], jnp.float32)
    _, _, a, b = _all_pairs(repeat=500)  # 40 500 labels
    labels = np.asarray(noisy_oracle(ones, flip_rate)(jax.random.key(0), a, b))
    assert set(np.unique(labels)) <= {0.0, 1.0}
    rate = 1 - labels.mean()
    sd = np.sqrt(flip_rate * (1 - flip_rate) / labels.size)
    assert abs(rate - flip_rate) < 5 * sd


def test_noisy_testbed_labels_have_the_flipped_preference_as_mean():
    game, eps = _game(), 0.25
    ia, ib, a, b = _all_pairs(repeat=400)
    labels = np.asarray(bed_oracle(TESTBED, game, sample=True, flip_rate=eps)(KEY, a, b))
    p = np.asarray(game.preference)[ia, ib]
    n = TESTBED.num_responses
    mean = np.bincount(ia * n + ib, weights=labels, minlength=n * n) / 400
    expected = ((1 - eps) * p + eps * (1 - p))[: n * n]
    assert np.max(np.abs(mean - expected)) < 5 * 0.5 / np.sqrt(400)
    # Soft labels: each P(a ≻ b) is kept or replaced by P(b ≻ a).
    soft = np.asarray(bed_oracle(TESTBED, game, sample=False, flip_rate=eps)(KEY, a, b))
    kept = np.isclose(soft, p)
    assert np.all(kept | np.isclose(soft, 1 - p))
    distinct = np.abs(p - 0.5) > 1e-3  # a flip of P = ½ is invisible
    assert abs((1 - kept[distinct].mean()) - eps) < 0.02


KEY = jax.random.key(7)


@pytest.mark.parametrize("sample", [True, False])
def test_zero_flip_rate_is_bitwise_the_clean_oracle(sample):
    game = _game()
    _, _, a, b = _all_pairs(repeat=3)
    clean = bed_oracle(TESTBED, game, sample=sample)
    zero = bed_oracle(TESTBED, game, sample=sample, flip_rate=0.0)
    np.testing.assert_array_equal(np.asarray(zero(KEY, a, b)), np.asarray(clean(KEY, a, b)))
    assert noisy_oracle(clean, 0.0) is clean


def test_noisy_oracle_reads_the_parameters_it_is_bound_to():
    def bind(params):
        def oracle(key, a, b):
            return jnp.full(a.tokens.shape[:1], params["p"])

        oracle.params, oracle.bind = params, bind
        return oracle

    noisy = noisy_oracle(bind({"p": jnp.asarray(1.0)}), 0.2)
    assert float(noisy.params["p"]) == 1.0
    _, _, a, b = _all_pairs()
    rebound = noisy.bind({"p": jnp.asarray(0.0)})  # a 0 label flips to 1
    labels = np.asarray(rebound(KEY, a, b))
    assert 0 < labels.mean() < 0.5 and set(np.unique(labels)) <= {0.0, 1.0}


@pytest.mark.parametrize("bad", [-0.1, 0.5, 0.7])
def test_flip_rate_outside_zero_to_half_raises(bad):
    with pytest.raises(ValueError, match="flip_rate"):
        OracleConfig(flip_rate=bad)
    with pytest.raises(ValueError, match="flip_rate"):
        noisy_oracle(lambda key, a, b: a.tokens[:, 0], bad)
    with pytest.raises(ValueError, match="flip_rate"):
        train_config_from_dict({"oracle": {"flip_rate": bad}})


def test_flip_rate_is_read_from_a_config_dict():
    testbed_dpo = {"algorithm": {"name": "dpo"}, "testbed": {"enabled": True},
                   "model": {"vocab_size": 3}, "oracle": {"flip_rate": 0.2}}  # fmt: skip
    assert train_config_from_dict(testbed_dpo).oracle.flip_rate == 0.2
