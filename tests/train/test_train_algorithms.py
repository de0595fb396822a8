"""Offline algorithm selection (``algorithm.name``): DPO, IPO and robust DPO in the train step.

Each loss's step gradient equals ``jax.grad`` of the loss written out by hand on the same
batch; a short ``train()`` run with IPO and robust DPO lowers the loss; robust DPO with
flip rate 0 is DPO; config mistakes are clear errors naming the key.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxalign.config import ConfigError
from jaxalign.data import PreferenceBatch
from jaxalign.experiment import repo_root
from jaxalign.losses import dpo_loss, robust_dpo_loss
from jaxalign.models import CausalLM, ModelConfig
from jaxalign.train import load_train_config, train
from jaxalign.train.state import TrainState
from jaxalign.train.step import preference_train_step

CONFIGS = repo_root() / "configs" / "train"
B, L, V = 6, 10, 32
HPARAMS = {
    "dpo": {"beta": 0.5, "label_smoothing": 0.1},
    "ipo": {"tau": 0.5},
    "robust_dpo": {"beta": 0.5, "flip_rate": 0.2},
}


@pytest.fixture(scope="module")
def setup():
    cfg = ModelConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_layers=1,
                      num_heads=2, num_kv_heads=1, head_dim=8, initializer_range=0.3)  # fmt: skip
    graphdef, params = nnx.split(CausalLM.create(cfg, key=jax.random.key(0)))
    # A reference different from the policy, so h ≠ 0 and every term of the loss matters.
    _, reference = nnx.split(CausalLM.create(cfg, key=jax.random.key(1)))
    rng = np.random.default_rng(0)

    def side(lengths):
        ids = rng.integers(0, V, (B, L)).astype(np.int32)
        attn = (np.arange(L)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
        loss_mask = (attn.astype(bool) & (np.arange(L)[None] >= 4)).astype(np.float32)
        return ids, attn, loss_mask

    chosen = side([10, 8, 6, 9, 10, 7])
    rejected = side([7, 10, 10, 6, 8, 9])
    example = np.asarray([1, 1, 1, 1, 1, 0], np.float32)  # a filler row that must not count
    batch = PreferenceBatch(*(jnp.asarray(x) for x in (*chosen, *rejected, example)))
    return graphdef, params, reference, batch


def _seq_logp(graphdef, params, ids, attn, loss_mask):
    """Σ_t mask_t log π(ids_t | ids_<t), written out with log_softmax and a gather."""
    logits = nnx.merge(graphdef, params)(ids, attention_mask=attn)
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    scored = loss_mask[:, 1:] * attn[:, 1:].astype(jnp.float32)
    return jnp.sum(picked * scored, axis=-1)


def _log_ratios(graphdef, params, reference, batch):
    pc = _seq_logp(graphdef, params, *batch[:3])
    pr = _seq_logp(graphdef, params, *batch[3:6])
    rc = _seq_logp(graphdef, reference, *batch[:3])
    rr = _seq_logp(graphdef, reference, *batch[3:6])
    return pc - rc, pr - rr


def _handwritten_loss(name, hp, params, graphdef, reference, batch):
    """The batch-mean loss over real pairs, from the papers' formulas."""
    dc, dr = _log_ratios(graphdef, params, reference, batch)
    h = dc - dr
    sp = jax.nn.softplus
    if name == "dpo":
        b, e = hp["beta"], hp["label_smoothing"]
        per_pair = (1 - e) * sp(-b * h) + e * sp(b * h)
    elif name == "ipo":
        per_pair = (h - 1 / (2 * hp["tau"])) ** 2
    else:
        b, e = hp["beta"], hp["flip_rate"]
        per_pair = ((1 - e) * sp(-b * h) - e * sp(b * h)) / (1 - 2 * e)
    w = batch.example_mask
    return jnp.sum(w * per_pair) / jnp.sum(w)


def _step(setup, name, accum=1, **hp):
    graphdef, params, reference, batch = setup
    tx = optax.sgd(1.0)  # new params = params − gradient
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jnp.zeros(2, jnp.uint32))
    fn = functools.partial(preference_train_step, graphdef=graphdef, tx=tx,
                           lr_schedule=optax.constant_schedule(1.0), algorithm=name,
                           grad_accum_steps=accum, **hp)  # fmt: skip
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int and float scalars
        return jax.jit(fn)(state, reference, batch)


@pytest.mark.parametrize(("name", "accum"), [("dpo", 1), ("ipo", 1), ("ipo", 2), ("robust_dpo", 2)])
def test_step_gradient_is_grad_of_the_handwritten_loss(setup, name, accum):
    graphdef, params, reference, batch = setup
    hp = HPARAMS[name]
    new, metrics = _step(setup, name, accum, **hp)
    loss_fn = functools.partial(_handwritten_loss, name, hp)
    value, grad = jax.value_and_grad(loss_fn)(params, graphdef, reference, batch)
    step_grad = jax.tree.map(lambda p, q: p - q, params, new.params)
    for a, e in zip(jax.tree.leaves(step_grad), jax.tree.leaves(grad), strict=True):
        a, e = np.asarray(a), np.asarray(e)  # float32 rounding is relative to the leaf's scale
        np.testing.assert_allclose(a, e, rtol=2e-4, atol=2e-5 * float(np.max(np.abs(e))))
    assert float(metrics["finite"]) == 1.0 and int(new.step) == 1
    # Metrics: means over the 5 real pairs; rewards β-scaled for logistic losses, plain for IPO.
    w = np.asarray(batch.example_mask)
    dc, dr = (np.asarray(x) for x in _log_ratios(graphdef, params, reference, batch))
    scale = hp.get("beta", 1.0)
    mean = lambda x: float(np.sum(w * x) / np.sum(w))
    np.testing.assert_allclose(float(metrics["loss"]), float(value), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["chosen_reward"]), mean(scale * dc), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["rejected_reward"]), mean(scale * dr), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["margin"]), mean(scale * (dc - dr)), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["accuracy"]), mean(dc - dr > 0), rtol=1e-6)
    assert 0 < float(metrics["accuracy"]) < 1  # both signs of h occur: the check means something


def test_gradient_check_has_teeth(setup):
    # Conservative DPO (+ε) and robust DPO (−ε, /(1−2ε)) at the same ε differ; so do
    # IPO targets. A mix-up of the loss in the step would fail the test above.
    graphdef, params, reference, batch = setup
    new, _ = _step(setup, "robust_dpo", beta=0.5, flip_rate=0.2)
    wrong = jax.grad(functools.partial(_handwritten_loss, "dpo", {"beta": 0.5,
                     "label_smoothing": 0.2}))(params, graphdef, reference, batch)  # fmt: skip
    step_grad = jax.tree.map(lambda p, q: p - q, params, new.params)
    diff = max(float(jnp.max(jnp.abs(a - e)))
               for a, e in zip(jax.tree.leaves(step_grad), jax.tree.leaves(wrong)))  # fmt: skip
    assert diff > 1e-3


def test_robust_dpo_with_zero_flip_rate_is_dpo(setup):
    rng = np.random.default_rng(1)
    pc, pr, rc, rr = (jnp.asarray(-rng.uniform(1, 20, 8), jnp.float32) for _ in range(4))
    robust = robust_dpo_loss(pc, pr, rc, rr, beta=0.3, flip_rate=0.0)
    plain = dpo_loss(pc, pr, rc, rr, beta=0.3)
    np.testing.assert_allclose(robust.loss, plain.loss, rtol=1e-5, atol=1e-6)
    noisy = robust_dpo_loss(pc, pr, rc, rr, beta=0.3, flip_rate=0.2)
    assert not np.allclose(noisy.loss, plain.loss, rtol=1e-3)
    # The same through the train step: identical updates and metrics.
    new_r, m_r = _step(setup, "robust_dpo", beta=0.5, flip_rate=0.0)
    new_d, m_d = _step(setup, "dpo", beta=0.5)
    for a, b in zip(jax.tree.leaves(new_r.params), jax.tree.leaves(new_d.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    for key in ("loss", "margin", "accuracy", "chosen_reward", "kl_ref"):
        np.testing.assert_allclose(float(m_r[key]), float(m_d[key]), rtol=1e-5, atol=1e-7)


def test_step_rejects_an_unknown_algorithm(setup):
    with pytest.raises(ValueError, match=r"algorithm must be one of \('dpo', 'ipo'"):
        _step(setup, "ppo")


@pytest.mark.parametrize(
    ("overrides", "first_loss"),
    [
        (["algorithm.name=ipo", "algorithm.tau=0.5"], 1.0),  # (0 − 1/(2τ))² at π = π_ref
        (["algorithm.name=robust_dpo", "algorithm.flip_rate=0.1"], float(np.log(2.0))),
    ],
)
def test_train_with_ipo_and_robust_dpo_lowers_the_loss(tmp_path, make_config, overrides,
                                                       first_loss):  # fmt: skip
    cfg = make_config(tmp_path, "run.steps=10", "checkpoint.enabled=false", *overrides)
    result = train(cfg, quiet=True)
    assert result.status == "completed" and result.step == 10
    losses = np.array([r["loss"] for r in result.history])
    assert np.all(np.isfinite(losses))
    np.testing.assert_allclose(losses[0], first_loss, rtol=1e-5)
    assert losses[-3:].mean() < losses[0] - 0.05
    assert result.history[-1]["margin"] > 0 and result.history[-1]["kl_ref"] > 0
    assert f"name: {cfg.algorithm.name}" in (tmp_path / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algorithm.tau=0.05", r"algorithm: tau=0\.05 is not used by name='dpo' \(only by ipo / "),
        ("algorithm.flip_rate=0.1", r"flip_rate=0\.1 is not used by name='dpo'"),
        ("algorithm.name=ipo algorithm.beta=0.5", r"beta=0\.5 is not used by name='ipo'"),
        ("algorithm.name=ipo algorithm.label_smoothing=0.1", r"label_smoothing=0\.1 is not used"),
        ("algorithm.name=robust_dpo algorithm.label_smoothing=0.1", r"robust_dpo reads: beta, f"),
        ("algorithm.name=ipo algorithm.tau=0", r"algorithm: tau=0\.0 is invalid; expected > 0"),
        ("algorithm.name=robust_dpo algorithm.flip_rate=0.5", r"flip_rate=0\.5 is invalid"),
        ("algorithm.name=robust_dpo algorithm.flip_rate=-0.1", r"flip_rate=-0\.1 is invalid"),
        (
            "algorithm.name=ipoo",
            r"not one of \['dpo', 'ipo', 'robust_dpo', 'rpo', 'simpo', 'orpo', 'kto', "
            r".*did you mean 'ipo'",
        ),
        ("algorithm.name=robust-dpo", r"did you mean 'robust_dpo'"),
        ("algorithm.taus=0.2", r"'algorithm\.taus' \(value 0\.2\); did you mean 'tau'"),
        ("algorithm.flip=0.2", r"did you mean 'flip_rate'"),
    ],
)
def test_algorithm_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(CONFIGS / "dpo_tiny.yaml", override.split())


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("ipo_tiny.yaml", "ipo"),
        ("robust_dpo_tiny.yaml", "robust_dpo"),
        ("ipo_hf.yaml", "ipo"),
        ("robust_dpo_hf.yaml", "robust_dpo"),
    ],
)
def test_shipped_configs_select_their_algorithm(path, name):
    cfg = load_train_config(CONFIGS / path)
    assert cfg.algorithm.name == name
    # Defaults of the fields the loss ignores are accepted (the saved config lists them all).
    assert load_train_config(CONFIGS / path, [f"algorithm.name={name}"]) == cfg
