"""Preference oracles: reward / preference models, annotator mixtures, exact games, loading."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_models import tiny_model_config

from jaxalign import testbed as tb
from jaxalign.games import annotator_mixture_game
from jaxalign.models import (
    Generation,
    ModelConfig,
    PreferenceModel,
    RewardModel,
    rewards,
    save_pretrained,
)
from jaxalign.train.oracles import (
    Responses,
    annotator_mixture_oracle,
    enumerated_game,
    load_oracle,
    preference_model_oracle,
    responses_from_generation,
    reward_model_oracle,
)
from jaxalign.train.oracles import testbed_oracle as bed_oracle  # not collected as a test
from jaxalign.train.oracles import testbed_responses as bed_responses

TESTBED = tb.Testbed(alphabet_size=3, response_length=3, prompt=(0,))
KEY = jax.random.key(0)


def _config() -> ModelConfig:
    return tiny_model_config(num_kv_heads=2)


@pytest.fixture(scope="module")
def reward_model():
    return RewardModel.create(_config(), key=jax.random.key(1))


@pytest.fixture(scope="module")
def preference_model():
    return PreferenceModel.create(_config(), key=jax.random.key(2), rank=2)


def _all_pairs(testbed=TESTBED):
    """Every ordered pair (i, j) of testbed responses, as two Responses."""
    n = testbed.num_responses
    ia, ib = np.divmod(np.arange(n * n), n)
    ys = testbed.responses()
    return ia, ib, bed_responses(testbed, ys[ia]), bed_responses(testbed, ys[ib])


def _pad_right(r: Responses, extra: int, fill: int) -> Responses:
    """Adds ``extra`` post-EOS slots holding token ``fill`` with attention 0."""
    pad = lambda x, v: jnp.pad(x, ((0, 0), (0, extra)), constant_values=v)
    return Responses(
        pad(r.tokens, fill), pad(r.attention_mask, 0), pad(r.response_mask, 0), r.prompt_length
    )


# ----------------------------------------------------------------------------- reward model


def _enumerated_rewards(model) -> np.ndarray:
    """r(y) of every testbed response, computed directly (no oracle)."""
    tokens, _ = TESTBED.sequences(TESTBED.responses())
    return np.asarray(rewards(model, tokens, jnp.ones_like(tokens)), np.float64)


def test_reward_model_oracle_is_bradley_terry_of_the_rewards(reward_model):
    ia, ib, a, b = _all_pairs()
    r = _enumerated_rewards(reward_model)
    r_a, r_b = r[ia], r[ib]
    assert np.ptp(r_a) > 0.5  # the rewards are far from constant: the check has teeth
    for temperature in (1.0, 2.5):
        expected = 1.0 / (1.0 + np.exp(-(r_a - r_b) / temperature))
        got = reward_model_oracle(reward_model, temperature=temperature)(KEY, a, b)
        assert got.dtype == jnp.float32 and got.shape == (ia.size,)
        np.testing.assert_allclose(np.asarray(got), expected, atol=2e-6)


def test_reward_model_oracle_with_a_zero_head_is_one_half(reward_model):
    zero = RewardModel.create(_config(), key=jax.random.key(1))
    zero.score.kernel.set_value(jnp.zeros_like(zero.score.kernel.get_value()))
    _, _, a, b = _all_pairs()
    np.testing.assert_array_equal(np.asarray(reward_model_oracle(zero)(KEY, a, b)), 0.5)


@pytest.mark.parametrize("kind", ["reward", "preference"])
def test_post_eos_padding_does_not_change_the_probability(kind, reward_model, preference_model):
    make = reward_model_oracle if kind == "reward" else preference_model_oracle
    oracle = make(reward_model if kind == "reward" else preference_model)
    _, _, a, b = _all_pairs()
    base = np.asarray(oracle(KEY, a, b))
    # Extra padding slots (non-zero junk tokens) on one or both sides, attention 0.
    quiet_a, quiet_b = _pad_right(a, 3, 2), _pad_right(b, 1, 1)  # different widths
    padded = np.asarray(oracle(KEY, quiet_a, quiet_b))
    np.testing.assert_allclose(padded, base, rtol=1e-4, atol=1e-5)
    # Teeth: the same junk with attention 1 is read as the last token and changes P.
    loud_a = quiet_a._replace(attention_mask=jnp.ones_like(quiet_a.tokens))
    assert np.abs(np.asarray(oracle(KEY, loud_a, quiet_b)) - base).max() > 1e-2


def _label_counts(oracle, a, b, draws=8):
    """Per-pair number of wins of ``a`` in ``draws`` label draws (one batch shape)."""
    keys = jax.random.split(jax.random.key(11), draws)
    labels = np.stack([np.asarray(oracle(k, a, b)) for k in keys])
    assert set(np.unique(labels)) <= {0.0, 1.0}
    assert (labels[0] != labels[1]).any()  # the key matters
    return labels.sum(axis=0), draws


def _has_mean(counts, draws, p):
    """The counts are Binomial(draws, p): two contrasts (total, and weighted by 2p − 1)
    within 5σ of their means."""
    for c in (np.ones_like(p), 2 * p - 1):
        stat = np.sum(c * (counts - draws * p))
        sigma = np.sqrt(draws * np.sum(c**2 * p * (1 - p)))
        if abs(stat) >= 5 * sigma:
            return False
    return True


def test_sampled_labels_have_the_oracle_probability_as_mean(reward_model):
    _, _, a, b = _all_pairs()
    p = np.asarray(reward_model_oracle(reward_model)(KEY, a, b), np.float64)
    sampled = reward_model_oracle(reward_model, sample=True)
    assert _has_mean(*_label_counts(sampled, a, b), p)
    # Teeth: labels of the reversed pairs (mean 1 − p) fail the same check.
    assert not _has_mean(*_label_counts(sampled, b, a), p)


# ----------------------------------------------------------------------------- preference model


def _three_cycles(game) -> int:
    """trace(W³) of the strict win relation W = [P > ½]: 3 × the number of 3-cycles."""
    wins = (np.asarray(game.preference) > 0.5).astype(np.int64)
    return int(np.trace(wins @ wins @ wins))


def test_preference_model_oracle_is_antisymmetric_and_can_cycle(preference_model):
    oracle = preference_model_oracle(preference_model)
    _, _, a, b = _all_pairs()
    ab, ba = np.asarray(oracle(KEY, a, b)), np.asarray(oracle(KEY, b, a))
    np.testing.assert_allclose(ab + ba, 1.0, atol=1e-6)
    assert np.abs(ab - 0.5).max() > 0.1
    # Construct a rock-paper-scissors judge: rank 1, reward head zeroed, embedding
    # kernel solving W^T h_i = (cos θ_i, sin θ_i), θ_i = 0, 2π/3, 4π/3, for the pooled
    # trunk features h_i of three responses; then s(y_i, y_j) = sin(θ_j − θ_i).
    cyclic = PreferenceModel.create(_config(), key=jax.random.key(2), rank=1)
    tokens, _ = TESTBED.sequences(TESTBED.responses())
    hidden = np.asarray(cyclic.model.encode(tokens, jnp.ones_like(tokens))[:, -1], np.float64)
    chosen = [0, 13, 26]
    angles = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    targets = 3 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    kernel = np.linalg.pinv(hidden[chosen]) @ targets  # [hidden, 2]
    cyclic.embedding.kernel.set_value(jnp.asarray(kernel, jnp.float32))
    cyclic.reward.kernel.set_value(jnp.zeros_like(cyclic.reward.kernel.get_value()))
    game = enumerated_game(preference_model_oracle(cyclic), TESTBED)
    p = np.asarray(game.preference)
    i, j, k = chosen
    assert p[i, j] > 0.9 and p[j, k] > 0.9 and p[k, i] > 0.9  # y_i ≻ y_j ≻ y_k ≻ y_i
    assert _three_cycles(game) > 0
    # Teeth: the same trunk with the embedding zeroed and a score head is transitive.
    cyclic.embedding.kernel.set_value(jnp.zeros_like(cyclic.embedding.kernel.get_value()))
    cyclic.reward.kernel.set_value(preference_model.reward.kernel.get_value())
    assert _three_cycles(enumerated_game(preference_model_oracle(cyclic), TESTBED)) == 0


# ----------------------------------------------------------------------------- mixtures


def _constant(value: float):
    return lambda key, a, b: jnp.full((a.tokens.shape[0],), value, jnp.float32)


def test_soft_annotator_mixture_is_the_weighted_sum(reward_model, preference_model):
    game = tb.cyclic_preference(TESTBED, key=jax.random.key(3))
    oracles = [
        reward_model_oracle(reward_model),
        preference_model_oracle(preference_model),
        bed_oracle(TESTBED, game, sample=False),
    ]
    weights = [0.5, 0.3, 0.2]
    _, _, a, b = _all_pairs()
    parts = np.stack([np.asarray(o(KEY, a, b), np.float64) for o in oracles])
    mixed = annotator_mixture_oracle(oracles, weights, sample=False)(KEY, a, b)
    np.testing.assert_allclose(np.asarray(mixed), np.asarray(weights) @ parts, atol=1e-6)
    # The hard labels of the same mixture have that mean.
    hard = annotator_mixture_oracle(oracles, weights)
    assert _has_mean(*_label_counts(hard, a, b), np.asarray(weights) @ parts)


def test_hard_mixture_draws_one_annotator_per_pair():
    _, _, a, b = _all_pairs()
    a, b = (r.take(jnp.tile(jnp.arange(r.tokens.shape[0]), 4)) for r in (a, b))
    yes, no = _constant(1.0), _constant(0.0)
    labels = np.asarray(annotator_mixture_oracle([yes, no], [0.3, 0.7])(KEY, a, b))
    n = labels.size
    assert abs(labels.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / n)
    np.testing.assert_array_equal(
        np.asarray(annotator_mixture_oracle([yes, no], [1.0, 0.0])(KEY, a, b)), 1.0
    )
    np.testing.assert_array_equal(
        np.asarray(annotator_mixture_oracle([yes, no], [0.0, 1.0])(KEY, a, b)), 0.0
    )
    # Uniform by default.
    uniform = np.asarray(annotator_mixture_oracle([yes, no], sample=False)(KEY, a, b))
    np.testing.assert_array_equal(uniform, 0.5)


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([0.5, 0.6], "sum to 1"),
        ([1.2, -0.2], ">= 0"),
        ([1.0], r"shape \(2,\)"),
        ([float("nan"), 1.0], "finite"),
    ],
)
def test_annotator_mixture_validates_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        annotator_mixture_oracle([_constant(1.0), _constant(0.0)], weights)


def test_annotator_mixture_needs_callable_oracles():
    with pytest.raises(ValueError, match="at least one"):
        annotator_mixture_oracle([])
    with pytest.raises(ValueError, match="not callable"):
        annotator_mixture_oracle([_constant(1.0), 3.0])


# ----------------------------------------------------------------------------- exact games


def test_enumerated_game_of_a_reward_model_is_its_bradley_terry_game(reward_model):
    r = jnp.asarray(_enumerated_rewards(reward_model), jnp.float32)
    expected = np.asarray(annotator_mixture_game(r[None, :]).preference)
    # A batch size that does not divide n² = 729 exercises the padded last batch.
    game = enumerated_game(reward_model_oracle(reward_model), TESTBED, batch_size=100)
    p = np.asarray(game.preference)
    assert p.shape == (27, 27)
    np.testing.assert_allclose(p, expected, atol=2e-6)
    np.testing.assert_allclose(p + p.T, 1.0, atol=1e-6)
    np.testing.assert_array_equal(np.diag(p), 0.5)


def test_enumerated_game_of_the_testbed_oracle_is_the_game():
    game = tb.cyclic_preference(TESTBED, key=jax.random.key(4))
    got = enumerated_game(bed_oracle(TESTBED, game, sample=False), TESTBED)
    np.testing.assert_allclose(np.asarray(got.preference), np.asarray(game.preference), atol=1e-6)


def test_enumerated_game_rejects_an_oracle_that_is_not_a_preference(reward_model):
    with pytest.raises(ValueError, match=r"P\(a≻b\) \+ P\(b≻a\) must be 1"):
        enumerated_game(_constant(0.7), TESTBED)
    # σ(r(a)) alone ignores b: not antisymmetric.
    model = reward_model

    def one_sided(key, a, b):
        return jax.nn.sigmoid(rewards(model, a.tokens, a.attention_mask))

    with pytest.raises(ValueError, match="must be 1"):
        enumerated_game(one_sided, TESTBED)
    # Hard labels: P(a ≻ b) and P(b ≻ a) drawn independently.
    with pytest.raises(ValueError, match="soft"):
        enumerated_game(reward_model_oracle(reward_model, sample=True), TESTBED)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        enumerated_game(_constant(1.5), TESTBED)
    with pytest.raises(ValueError, match="batch_size"):
        enumerated_game(_constant(0.5), TESTBED, batch_size=0)


# ----------------------------------------------------------------------------- responses


def test_testbed_oracle_through_testbed_responses_reads_the_game():
    game = tb.cyclic_preference(TESTBED, key=jax.random.key(5))
    ia, ib, a, b = _all_pairs()
    got = bed_oracle(TESTBED, game, sample=False)(KEY, a, b)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(game.preference)[ia, ib])
    assert a.prompt_length == 1 and a.responses.shape == (ia.size, 3)
    np.testing.assert_array_equal(np.asarray(a.response_mask[:, 0]), 0)
    np.testing.assert_array_equal(np.asarray(a.response_mask[:, 1:]), 1)


def test_testbed_responses_validates_its_input():
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        bed_responses(TESTBED, jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        bed_responses(TESTBED, jnp.full((2, 3), 3, jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        bed_responses(TESTBED, jnp.zeros((2, 3), jnp.float32))


def test_responses_from_generation_follow_the_sampler_masks(reward_model):
    prompt = jnp.asarray([[2, 1], [0, 1]], jnp.int32)
    prompt_mask = jnp.asarray([[True, True], [False, True]])
    tokens = jnp.asarray([[1, 2, 0], [2, 0, 0]], jnp.int32)
    response_mask = jnp.asarray([[True, True, True], [True, False, False]])
    zeros = jnp.zeros(tokens.shape, jnp.float32)
    gen = Generation(tokens, zeros, zeros, response_mask, prompt, prompt_mask)
    r = responses_from_generation(gen)
    assert r.prompt_length == 2 and r.tokens.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(r.tokens), [[2, 1, 1, 2, 0], [0, 1, 2, 0, 0]])
    np.testing.assert_array_equal(np.asarray(r.attention_mask), [[1, 1, 1, 1, 1], [0, 1, 1, 0, 0]])
    np.testing.assert_array_equal(np.asarray(r.response_mask), [[0, 0, 1, 1, 1], [0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(np.asarray(r.responses), np.asarray(tokens))
    # The oracle reads row 1 at its EOS slot: changing a post-EOS token changes nothing.
    other = r._replace(tokens=r.tokens.at[1, 4].set(1))
    oracle = reward_model_oracle(reward_model)
    np.testing.assert_allclose(
        np.asarray(oracle(KEY, r, r.take(jnp.asarray([1, 0])))),
        np.asarray(oracle(KEY, other, r.take(jnp.asarray([1, 0])))),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="Generation"):
        responses_from_generation(r)


def test_oracles_validate_models_and_responses(reward_model, preference_model):
    with pytest.raises(ValueError, match="RewardModel"):
        reward_model_oracle(preference_model)
    with pytest.raises(ValueError, match="PreferenceModel"):
        preference_model_oracle(reward_model)
    with pytest.raises(ValueError, match="num_labels"):
        reward_model_oracle(RewardModel.create(_config(), key=KEY, num_labels=2))
    with pytest.raises(ValueError, match="temperature"):
        reward_model_oracle(reward_model, temperature=0.0)
    _, _, a, b = _all_pairs()
    oracle = reward_model_oracle(reward_model)
    with pytest.raises(ValueError, match="same number of pairs"):
        oracle(KEY, a, b.take(jnp.arange(3)))
    with pytest.raises(ValueError, match="shape mismatch"):
        oracle(KEY, a._replace(attention_mask=a.attention_mask[:, :2]), b)
    with pytest.raises(ValueError, match="prompt_length"):
        oracle(KEY, a._replace(prompt_length=99), b)


def test_oracles_run_inside_a_caller_jit(preference_model):
    _, _, a, b = _all_pairs()
    for oracle in (preference_model_oracle(preference_model),):
        direct = oracle(KEY, a, b)
        traced = jax.jit(
            lambda k, ta, tb_, oracle=oracle: oracle(
                k, a._replace(tokens=ta), b._replace(tokens=tb_)
            )
        )
        np.testing.assert_allclose(
            np.asarray(traced(KEY, a.tokens, b.tokens)), np.asarray(direct), atol=1e-6
        )
        # Whole Responses as jit arguments (prompt_length becomes a traced leaf).
        np.testing.assert_allclose(
            np.asarray(jax.jit(oracle)(KEY, a, b)), np.asarray(direct), atol=1e-6
        )


# ----------------------------------------------------------------------------- loading


@pytest.mark.parametrize("kind", ["reward_model", "preference_model"])
def test_load_oracle_round_trips_a_saved_model(kind, tmp_path, reward_model, preference_model):
    model = reward_model if kind == "reward_model" else preference_model
    make = reward_model_oracle if kind == "reward_model" else preference_model_oracle
    save_pretrained(model, tmp_path / kind)
    _, _, a, b = _all_pairs()
    expected = np.asarray(make(model, temperature=1.5)(KEY, a, b))
    loaded = load_oracle(kind, tmp_path / kind, temperature=1.5)
    np.testing.assert_allclose(np.asarray(loaded(KEY, a, b)), expected, atol=1e-6)
    if kind == "preference_model" and jax.device_count() >= 8:  # sharded == unsharded
        mesh = jax.make_mesh(
            (2, 4), ("fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2
        )
        sharded = load_oracle(kind, tmp_path / kind, temperature=1.5, mesh=mesh)
        np.testing.assert_allclose(np.asarray(sharded(KEY, a, b)), expected, atol=1e-5)


def test_load_oracle_rejects_an_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="kind must be"):
        load_oracle("policy", tmp_path)


def test_judges_of_one_architecture_share_one_executable(reward_model):
    from jaxalign.train.oracles import _judge

    _, _, a, b = _all_pairs()
    reward_model_oracle(reward_model)(KEY, a, b)
    before = _judge._cache_size()
    for seed in (5, 6):  # new weights and temperatures, same architecture and shapes
        other = RewardModel.create(_config(), key=jax.random.key(seed))
        reward_model_oracle(other, temperature=1.0 + seed)(KEY, a, b)
    assert _judge._cache_size() == before
