"""Reward model (HF *ForSequenceClassification parity) and the general preference model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hf_reference import make_hf_model, padded_batch
from tiny_models import tiny_model_config

from jaxalign.models import (
    PreferenceModel,
    RewardModel,
    preference_logit,
    reward_model_from_pretrained,
    save_pretrained,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

rewards_jit = nnx.jit(lambda model, tokens, mask: model(tokens, attention_mask=mask))


def _hf_scores(hf, tokens, mask):
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        return hf(
            input_ids=torch.as_tensor(tokens, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
            position_ids=torch.as_tensor(positions, dtype=torch.long),
        ).logits.numpy()


def test_reward_model_matches_hf_sequence_classifier_and_round_trips(tmp_path):
    hf = make_hf_model(
        "llama_gqa", seed=11, cls=transformers.AutoModelForSequenceClassification, num_labels=1
    )
    hf.save_pretrained(tmp_path / "hf")
    model = reward_model_from_pretrained(tmp_path / "hf")
    assert isinstance(model, RewardModel) and model.num_labels == 1
    tokens, mask = padded_batch(seed=12)  # unpadded, left- and right-padded rows (pad id 0)
    ours = np.asarray(rewards_jit(model, tokens, mask))
    np.testing.assert_allclose(ours, _hf_scores(hf, tokens, mask), atol=1e-4)
    save_pretrained(model, tmp_path / "ours")
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "ours")
    np.testing.assert_allclose(_hf_scores(reloaded.eval(), tokens, mask), ours, atol=1e-4)


def test_reward_head_on_a_language_model_checkpoint_needs_a_key(hf_checkpoints):
    directory, _ = hf_checkpoints["llama_gqa"]
    with pytest.raises(
        ValueError,
        match=r"missing tensors \['score.weight'\].*unexpected tensors \['lm_head.weight'\]",
    ):
        reward_model_from_pretrained(directory)
    model = reward_model_from_pretrained(directory, key=jax.random.key(0))
    assert model.score.kernel.get_value().shape == (64, 1)
    assert float(jnp.abs(model.score.kernel.get_value()).sum()) > 0


def test_preference_model_is_antisymmetric_and_probabilities_sum_to_one():
    config = tiny_model_config(64)
    model = PreferenceModel.create(config, key=jax.random.key(0), rank=2)
    rng = np.random.default_rng(0)
    a, b = rng.integers(1, 64, (2, 4, 7)).astype(np.int32)
    mask_a, mask_b = np.ones_like(a), np.ones_like(b)
    mask_b[:, :2] = 0  # left padding on one side only
    logit = nnx.jit(lambda m, x, y, mx, my: m.logit(x, y, mx, my))
    ab, ba = (
        np.asarray(logit(model, a, b, mask_a, mask_b)),
        np.asarray(logit(model, b, a, mask_b, mask_a)),
    )
    np.testing.assert_array_equal(ab, -ba)
    assert np.abs(ab).max() > 1e-3  # not trivially zero
    np.testing.assert_array_equal(np.asarray(logit(model, a, a, mask_a, mask_a)), 0.0)
    p_ab, p_ba = jax.nn.sigmoid(ab), jax.nn.sigmoid(ba)
    np.testing.assert_allclose(np.asarray(p_ab + p_ba), 1.0, atol=1e-6)


def test_preference_logit_is_exactly_antisymmetric_in_the_features():
    rng = np.random.default_rng(1)
    r_a, r_b = (jnp.asarray(rng.normal(size=5), jnp.float32) for _ in range(2))
    v_a, v_b = (jnp.asarray(rng.normal(size=(5, 6)), jnp.float32) for _ in range(2))
    ab = np.asarray(preference_logit(r_a, v_a, r_b, v_b))
    np.testing.assert_array_equal(ab, -np.asarray(preference_logit(r_b, v_b, r_a, v_a)))
    np.testing.assert_array_equal(np.asarray(preference_logit(r_a, v_a, r_a, v_a)), 0.0)
    jitted = jax.jit(preference_logit)  # XLA fuses multiply-adds: must stay exact
    np.testing.assert_array_equal(
        np.asarray(jitted(r_a, v_a, r_b, v_b)), -np.asarray(jitted(r_b, v_b, r_a, v_a))
    )
    np.testing.assert_array_equal(np.asarray(jitted(r_a, v_a, r_a, v_a)), 0.0)


def test_skew_head_expresses_cycles_that_scores_cannot():
    angles = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3], np.float32)
    v = jnp.asarray(np.stack([np.cos(angles), np.sin(angles)], axis=1))
    r = jnp.zeros(3, jnp.float32)
    s = np.asarray(
        [
            preference_logit(r[i : i + 1], v[i : i + 1], r[j : j + 1], v[j : j + 1])[0]
            for i, j in ((0, 1), (1, 2), (2, 0))
        ]
    )
    assert (s > 0.5).all()  # a ≻ b ≻ c ≻ a: a cycle
    # Teeth: with the embedding removed only scores remain, and scores cannot cycle.
    scores = jnp.asarray([0.3, -0.1, 0.7], jnp.float32)
    empty = jnp.zeros((3, 0), jnp.float32)
    pair = lambda i, j: float(
        preference_logit(scores[i : i + 1], empty[i : i + 1], scores[j : j + 1], empty[j : j + 1])[
            0
        ]
    )
    cyc = [pair(0, 1), pair(1, 2), pair(2, 0)]
    assert not all(c > 0 for c in cyc)
