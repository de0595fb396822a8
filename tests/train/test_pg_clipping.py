"""The clipped (PPO/GRPO/DAPO/GSPO) form of the kl_pg step: several epochs on one sampled
batch, checked against a loop written here on a tabular policy; the default settings keep
the plain REINFORCE step; config switches are validated by name; the testbed config runs."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxalign.config import ConfigError
from jaxalign.experiment import repo_root
from jaxalign.train import load_train_config, train
from jaxalign.train.oracles import Responses
from jaxalign.train.tasks.policy_gradient import GroupBatch, PGSettings, PGStep

L, V, P = 3, 4, 1  # response length, vocabulary, prompt width


@dataclasses.dataclass
class TabularSampler:
    """A position-wise categorical policy ``params["logits"][l, v]`` with the sampler's API;
    counts how often ``sample`` is traced or called."""

    calls: list = dataclasses.field(default_factory=list)

    def sample(self, params, key, prompts):
        self.calls.append(1)
        tokens, _ = prompts
        ys = jax.random.categorical(key, params["logits"], shape=(tokens.shape[0], L))
        seq = jnp.concatenate([tokens, ys.astype(tokens.dtype)], axis=1)
        resp = jnp.concatenate([jnp.zeros_like(tokens), jnp.ones_like(ys)], axis=1)
        return Responses(seq, jnp.ones_like(seq), resp.astype(jnp.int32), P)

    def token_logp(self, params, r):
        logp_lv = jax.nn.log_softmax(params["logits"], axis=-1)
        ys = r.tokens[:, P:]
        lp = logp_lv[jnp.arange(L)[None, :], ys]
        return jnp.concatenate([jnp.zeros((ys.shape[0], P)), lp], axis=1)


def _reward(table, r):
    return jnp.sum(table[jnp.arange(L)[None, :], r.tokens[:, P:]], axis=1)


def _setup(n_rows=8):
    rng = np.random.default_rng(0)
    params = {"logits": jnp.asarray(rng.normal(0, 1, (L, V)), jnp.float32)}
    frozen = {
        "reference": {"logits": jnp.asarray(rng.normal(0, 1, (L, V)), jnp.float32)},
        "reward": jnp.asarray(rng.normal(0, 1, (L, V)), jnp.float32),
    }
    prompts = jnp.zeros((n_rows, P), jnp.int32)
    batch = GroupBatch(prompts, jnp.ones_like(prompts), jnp.ones((), jnp.float32))
    return params, frozen, batch


def _hand_epochs(settings, params, frozen, batch, key, *, lo, hi):
    """PPO by hand: sample once, fixed leave-one-out advantages, E AdamW steps of
    −(1/B) Σ_it min(ρA, clip(ρ)A) + β (1/B) Σ_it ½(log π − log π_ref)²."""
    sampler = TabularSampler()
    r = sampler.sample(params, jax.random.split(key)[1], (batch.tokens, batch.mask))
    ys = np.asarray(r.tokens[:, P:])
    rew = np.asarray(_reward(frozen["reward"], r))
    g = settings.group_size
    grouped = rew.reshape(-1, g)
    adv = (grouped - (grouped.sum(1, keepdims=True) - grouped) / (g - 1)).reshape(-1)

    def token_lp(logits):
        lp = jax.nn.log_softmax(logits, axis=-1)
        return jnp.stack([lp[i, ys[:, i]] for i in range(L)], axis=1)  # [B, L]

    old = jax.lax.stop_gradient(token_lp(params["logits"]))
    ref = token_lp(frozen["reference"]["logits"])

    def loss(p):
        lp = token_lp(p["logits"])
        rho = jnp.exp(lp - old)
        a = jnp.asarray(adv, jnp.float32)[:, None]
        sur = jnp.minimum(rho * a, jnp.clip(rho, 1 - lo, 1 + hi) * a)
        return (-jnp.sum(sur) + settings.beta * jnp.sum(0.5 * (lp - ref) ** 2)) / len(adv)

    tx = settings.optimizer()
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and floats
        opt = tx.init(params)
        for _ in range(settings.ppo_epochs):
            updates, opt = tx.update(jax.grad(loss)(params), opt, params)
            params = optax.apply_updates(params, updates)
    return params


def test_epochs_reuse_one_sampled_batch_and_match_a_hand_written_ppo_loop():
    settings = PGSettings(batch_size=4, group_size=2, learning_rate=0.05, beta=0.2,
                          ppo_epochs=4, clip_low=0.1, clip_high=0.15)  # fmt: skip
    params, frozen, batch = _setup()
    sampler = TabularSampler()
    step = PGStep(settings, sampler, _reward)
    key = jax.random.key(3)
    new_state, metrics = jax.jit(step)(step.init(params), frozen, batch, key)
    assert len(sampler.calls) == 1  # traced once: the epochs are one scan over one batch
    want = _hand_epochs(settings, params, frozen, batch, key, lo=0.1, hi=0.15)
    np.testing.assert_allclose(new_state.params["logits"], want["logits"], rtol=2e-5, atol=2e-6)
    assert float(jnp.max(jnp.abs(new_state.params["logits"] - params["logits"]))) > 1e-3
    assert 0.0 < float(metrics["clip_fraction"]) < 1.0  # later epochs leave the trust region
    # Epoch 1 is at π_old: ρ = 1, the loss is β·KL plus −mean(A)·L = 0 for RLOO advantages.
    np.testing.assert_allclose(metrics["loss"], 0.2 * metrics["kl_estimate"], rtol=1e-4)


def test_default_settings_keep_the_plain_step_and_one_unclipped_epoch_matches_it():
    params, frozen, batch = _setup()
    key = jax.random.key(1)
    plain = PGSettings(batch_size=4, group_size=2, learning_rate=0.05, beta=0.2)
    assert not plain.clipped
    s_plain, m_plain = PGStep(plain, TabularSampler(), _reward)(
        PGStep(plain, TabularSampler(), _reward).init(params), frozen, batch, key
    )
    assert "clip_fraction" not in m_plain  # default metrics unchanged
    # The ratio machinery with one epoch and no clip (GSPO's sequence ratio, token sum):
    # the same gradient, so the same AdamW step.
    ratio = dataclasses.replace(plain, ratio_level="sequence")
    assert ratio.clipped
    step = PGStep(ratio, TabularSampler(), _reward)
    s_ratio, m_ratio = step(step.init(params), frozen, batch, key)
    np.testing.assert_allclose(s_ratio.params["logits"], s_plain.params["logits"], rtol=1e-5)
    np.testing.assert_allclose(m_ratio["grad_norm"], m_plain["grad_norm"], rtol=1e-5)
    np.testing.assert_allclose(m_ratio["kl_estimate"], m_plain["kl_estimate"], rtol=1e-6)


CONFIG = repo_root() / "configs" / "train" / "grpo_testbed.yaml"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("algorithm.ppo_epochs=0", "ppo_epochs"),
        ("algorithm.clip_low=1.5", "clip_low"),
        ("algorithm.clip_low=0", "clip_low"),
        ("algorithm.clip_high=-0.1", "clip_high"),
        ("algorithm.ratio_level=tokens", "ratio_level"),
        ("algorithm.loss_aggregation=mean", "loss_aggregation"),
    ],
)
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_train_config(CONFIG, [override])


def test_clipping_keys_are_kl_pg_only():
    path = repo_root() / "configs" / "train" / "dpo_tiny.yaml"
    with pytest.raises(ConfigError, match="ppo_epochs=2 is not used by name='dpo'"):
        load_train_config(path, ["algorithm.ppo_epochs=2"])
    cfg = load_train_config(CONFIG, ["algorithm.ratio_level=sequence", "algorithm.ppo_epochs=3"])
    assert cfg.algorithm.ratio_level == "sequence" and cfg.algorithm.ppo_epochs == 3
    assert cfg.algorithm.clip_low == 0.2 and cfg.algorithm.clip_high == 0.28


def test_grpo_testbed_config_trains_and_closes_the_exact_gap(tmp_path):
    cfg = load_train_config(
        CONFIG, ["run.steps=20", f"run.out_dir={tmp_path}", "run.save_model=false"]
    )
    summary = train(cfg, quiet=True).summary
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("clip_fraction" in r and 0.0 <= r["clip_fraction"] <= 1.0 for r in rows)
    assert any(r["clip_fraction"] > 0 for r in rows)
    assert summary["final_objective_gap"] < 0.2 * summary["initial_objective_gap"]
