"""General preference-model training (``algorithm.name: preference_model``): both orders of
every pair with complementary labels, exact antisymmetry P̂(a ≻ b) + P̂(b ≻ a) = 1, the step's
cross-entropy gradient, the exact Bradley–Terry floor, the testbed config recovering the
cyclic preference (which no reward model can), the exported model as ``oracle.path`` of an
online testbed run, the tiny text config, and config errors naming the key."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tiny_models import TINY_TRAIN

from jaxalign.config import ConfigError
from jaxalign.experiment import repo_root
from jaxalign.models import ModelConfig, PreferenceModel, preference_model_from_pretrained
from jaxalign.train import load_train_config, train
from jaxalign.train.oracles import enumerated_game, oracle_params
from jaxalign.train.state import TrainState
from jaxalign.train.tasks import preference_model as pm
from jaxalign.train.tasks.preference_model import (
    PairBatch,
    bradley_terry_floor,
    ordered_pair_logits,
    preference_cross_entropy,
    preference_model_train_step,
)

CONFIGS = repo_root() / "configs" / "train"
B, L, V = 6, 9, 40
CFG = ModelConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                  num_kv_heads=1, head_dim=8, initializer_range=0.3)  # fmt: skip


def _pairs(seed=1):
    rng = np.random.default_rng(seed)

    def side(lengths):
        ids = rng.integers(2, V, (B, L)).astype(np.int32)
        return ids, (np.arange(L)[None] < np.asarray(lengths)[:, None]).astype(np.int32)

    (ta, ma), (tb, mb) = side([9, 7, 5, 9, 8, 6]), side([6, 9, 9, 5, 7, 8])
    label = np.asarray([1.0, 0.0, 0.3, 1.0, 0.8, 1.0], np.float32)
    example = np.asarray([1, 1, 1, 1, 1, 0], np.float32)  # a filler row that must not count
    return PairBatch(*(jnp.asarray(x) for x in (ta, ma, tb, mb, label, example)))


def test_cross_entropy_in_closed_form():
    s = jnp.asarray([-2.0, 0.0, 1.5, 3.0])
    y = jnp.asarray([0.0, 1.0, 0.25, 1.0])
    p = 1 / (1 + np.exp(-np.asarray(s)))
    expected = -np.asarray(y) * np.log(p) - (1 - np.asarray(y)) * np.log(1 - p)
    np.testing.assert_allclose(preference_cross_entropy(s, y), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"logit\.shape=\(4,\) must equal label\.shape=\(3,\)"):
        preference_cross_entropy(s, y[:3])


def test_pairs_are_fed_in_both_orders_and_the_head_is_exactly_antisymmetric():
    model = PreferenceModel(CFG, rngs=nnx.Rngs(params=jax.random.key(0)), rank=2)
    batch = _pairs()
    rows = ordered_pair_logits(model, batch)
    assert rows.logit.shape == rows.label.shape == rows.weight.shape == (2 * B,)
    s = np.asarray(rows.logit)
    np.testing.assert_array_equal(s[B:], -s[:B])  # (b, a) is the reversed pair
    np.testing.assert_array_equal(np.asarray(rows.label), np.r_[batch.label, 1 - batch.label])
    np.testing.assert_array_equal(np.asarray(rows.weight), np.tile(batch.example_mask, 2))
    # P̂(a ≻ b) + P̂(b ≻ a) = 1 to float precision, each side through the model on its own.
    forward = np.asarray(model(batch.tokens_a, batch.tokens_b, batch.mask_a, batch.mask_b))
    backward = np.asarray(model(batch.tokens_b, batch.tokens_a, batch.mask_b, batch.mask_a))
    np.testing.assert_allclose(forward + backward, 1.0, atol=2e-7)
    np.testing.assert_allclose(forward, 1 / (1 + np.exp(-s[:B])), atol=1e-6)
    assert np.ptp(forward) > 1e-3  # distinct probabilities, so the checks can fail


def test_preference_model_step_follows_the_cross_entropy_gradient_of_both_orders():
    graphdef, params = nnx.split(PreferenceModel(CFG, rngs=nnx.Rngs(params=jax.random.key(0))))
    batch, lr = _pairs(), 0.5
    tx = optax.sgd(lr)
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jnp.zeros(2, jnp.uint32))
    schedule = optax.constant_schedule(lr)
    run = functools.partial(preference_model_train_step, graphdef=graphdef, tx=tx,
                            lr_schedule=schedule, grad_accum_steps=2)  # fmt: skip
    new, metrics = jax.jit(run)(state, batch)

    def ref_loss(p):  # each order through the model on its own; mean over the 2 × 5 real rows
        model = nnx.merge(graphdef, p)
        pab = model(batch.tokens_a, batch.tokens_b, batch.mask_a, batch.mask_b)
        pba = model(batch.tokens_b, batch.tokens_a, batch.mask_b, batch.mask_a)
        y, w = batch.label, batch.example_mask
        rows = -(y * jnp.log(pab) + (1 - y) * jnp.log1p(-pab))
        rows += -((1 - y) * jnp.log(pba) + y * jnp.log1p(-pba))
        return jnp.sum(w * rows) / 10, pab

    (value, pab), grads = jax.jit(jax.value_and_grad(ref_loss, has_aux=True))(params)
    np.testing.assert_allclose(float(metrics["loss"]), float(value), rtol=1e-5)
    real = np.asarray(batch.example_mask, bool)
    y, q = np.asarray(batch.label)[real], np.asarray(pab)[real]
    np.testing.assert_allclose(float(metrics["accuracy"]),
                               np.mean(y * (q > 0.5) + (1 - y) * (q < 0.5)), rtol=1e-6)  # fmt: skip
    assert float(metrics["antisymmetry_error"]) < 1e-6
    expected = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    for x, y_ in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y_), rtol=1e-4, atol=1e-6)


def test_bradley_terry_floor_is_exact_on_small_cases():
    r = np.array([0.3, -1.0, 0.7, 0.0])
    bt = 1 / (1 + np.exp(-(r[:, None] - r[None, :])))
    eps, fit = bradley_terry_floor(bt)
    assert eps < 1e-12
    np.testing.assert_allclose(fit, r - r.mean(), atol=1e-6)
    # Rock–paper–scissors with P = 1 − δ on the cycle: every reward has a pair with
    # σ(r_a − r_b) ≤ ½ where P = 1 − δ, and r = 0 reaches it: ε* = ½ − δ.
    d = 0.1
    rps = np.full((3, 3), 0.5)
    for a in range(3):
        rps[a, (a + 1) % 3], rps[(a + 1) % 3, a] = 1 - d, d
    eps, fit = bradley_terry_floor(rps)
    np.testing.assert_allclose(eps, 0.5 - d, atol=1e-9)
    q = 1 / (1 + np.exp(-(fit[:, None] - fit[None, :])))
    np.testing.assert_allclose(np.abs(q - rps).max(), eps, atol=1e-6)
    with pytest.raises(ValueError, match="P \\+ Pᵀ = 1"):
        bradley_terry_floor(np.ones((2, 2)))


# --------------------------------------------------------------------------------------------
# The testbed config: recover the cyclic preference, then judge an online run with it.

PM_STEPS = 250


@pytest.fixture(scope="module")
def testbed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pm_testbed")
    cfg = load_train_config(
        CONFIGS / "preference_model_testbed.yaml",
        [f"run.out_dir={out}", f"run.steps={PM_STEPS}", "logging.eval_every=125",
         "checkpoint.enabled=false", "logging.progress_bar=false"],
    )  # fmt: skip
    return train(cfg, quiet=True)


def test_testbed_preference_model_recovers_the_cyclic_preference_bt_cannot(testbed_run):
    result = testbed_run
    assert result.status == "completed" and result.summary["algorithm"] == "preference_model"
    _, preference = pm.testbed_setup(result.task.config)
    floor, _ = bradley_terry_floor(preference)
    assert floor > 0.3  # the cycle: no reward model comes close
    model = preference_model_from_pretrained(result.out_dir / "model")
    estimate = np.asarray(nnx.jit(pm.testbed_preference_matrix, static_argnums=1)(
        model, result.task.testbed))  # fmt: skip
    np.testing.assert_allclose(estimate + estimate.T, 1.0, atol=2e-7)  # exact antisymmetry
    errors = pm.testbed_errors(estimate, preference)
    assert errors["max_abs_error"] < 0.1 < floor  # far below the best Bradley–Terry fit
    assert errors["accuracy"] == 1.0
    last = result.history[-1]
    np.testing.assert_allclose(last["eval_max_abs_error"], errors["max_abs_error"], atol=1e-5)
    assert last["antisymmetry_error"] < 1e-6
    config = json.loads((result.out_dir / "model" / "config.json").read_text())
    assert config["architectures"] == ["PreferenceModel"] and config["preference_model"] == {
        "rank": 2
    }


def test_online_testbed_run_uses_the_trained_preference_model_as_its_oracle(testbed_run, tmp_path):
    model_dir = testbed_run.out_dir / "model"

    def inpo(name, *extra):
        cfg = load_train_config(
            CONFIGS / "inpo_testbed.yaml",
            [f"run.out_dir={tmp_path / name}", "run.steps=2", "online.batch_size=64",
             "online.inner_steps=5", "oracle.sample=false", "checkpoint.enabled=false",
             "logging.progress_bar=false", *extra],
        )  # fmt: skip
        return train(cfg, quiet=True)

    learned = inpo("learned", "oracle.kind=preference_model", f"oracle.path={model_dir}")
    true = inpo("true")
    assert learned.status == true.status == "completed"
    assert oracle_params(learned.task.setup.oracle) is not None  # the learned judge
    assert oracle_params(true.task.setup.oracle) is None  # the closed-form testbed
    # The judge's own exact game is the true preference up to the model's error ...
    testbed, preference = pm.testbed_setup(true.task.config)
    judged = np.asarray(enumerated_game(learned.task.setup.oracle, testbed).preference)
    assert np.abs(judged - preference).max() < 0.1
    # ... and both runs are scored exactly on the TRUE game, from the same start.
    np.testing.assert_array_equal(np.asarray(learned.task.setup.game.preference), preference)
    assert learned.summary["initial_duality_gap"] == true.summary["initial_duality_gap"]
    for run in (learned, true):
        gaps = np.array([r["duality_gap"] for r in run.history])
        assert np.all(np.isfinite(gaps)) and gaps[-1] < run.summary["initial_duality_gap"]


# --------------------------------------------------------------------------------------------
# The tiny text config and config errors.


def test_preference_model_tiny_config_trains_on_both_orders_and_exports(tmp_path):
    cfg = load_train_config(
        CONFIGS / "preference_model_tiny.yaml",
        [*TINY_TRAIN, "data.max_length=48", "data.max_prompt_length=24", "tiny_data.eval_rows=32",
         "logging.eval_every=3", "optimizer.lr=1e-2", f"run.out_dir={tmp_path}", "run.steps=6",
         "checkpoint.enabled=false", "logging.progress_bar=false"],
    )  # fmt: skip
    result = train(cfg, quiet=True)
    assert result.status == "completed"
    losses = np.array([r["loss"] for r in result.history])
    assert np.all(np.isfinite(losses)) and losses[-2:].mean() < losses[0]
    assert all(r["antisymmetry_error"] < 1e-6 for r in result.history)
    evals = {r["step"]: r["eval_accuracy"] for r in result.history if "eval_accuracy" in r}
    assert sorted(evals) == [3, 6] and all(0 <= a <= 1 for a in evals.values())
    directory = result.out_dir / "model"
    loaded = preference_model_from_pretrained(directory)
    trained = nnx.merge(result.task.pm.graphdef, jax.device_get(result.state.params))
    batch = _pairs()
    tokens_a, tokens_b = (jnp.minimum(t, 300) for t in (batch.tokens_a, batch.tokens_b))
    np.testing.assert_allclose(
        np.asarray(loaded(tokens_a, tokens_b, batch.mask_a, batch.mask_b)),
        np.asarray(trained(tokens_a, tokens_b, batch.mask_a, batch.mask_b)), atol=1e-6,
    )  # fmt: skip
    assert (directory / "tokenizer.json").exists() or (directory / "tokenizer_config.json").exists()


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("preference_model_tiny.yaml", "algorithm.rank=-1",
         r"algorithm: rank=-1 is invalid; expected an integer >= 0"),
        ("preference_model_tiny.yaml", "algorithm.margin=0.5",
         r"margin=0\.5 is not used by name='preference_model'"),
        ("preference_model_tiny.yaml", "data.packing=true",
         r"data\.packing=True is invalid; expected false for preference_model"),
        ("preference_model_tiny.yaml", "oracle.sample=true",
         r"oracle\.kind / oracle\.sample label testbed pairs"),
        ("preference_model_tiny.yaml", "algorithm.rnak=1", r"did you mean 'rank'"),
        ("preference_model_testbed.yaml", "model.vocab_size=4",
         r"model\.vocab_size=4 must equal testbed\.alphabet_size=3"),
        ("preference_model_testbed.yaml", "data.path=x.jsonl",
         r"data\.path='x\.jsonl' is invalid; expected \"\" with testbed\.enabled=true"),
        ("preference_model_testbed.yaml", "oracle.kind=reward_model oracle.path=x",
         r"oracle\.kind=.reward_model. is invalid; expected testbed \(preference_model"),
        ("preference_model_testbed.yaml", "logging.kl_ref=true",
         r"needs a reference model, which preference_model never builds"),
    ],
)  # fmt: skip
def test_preference_model_config_errors_name_the_key(name, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(CONFIGS / name, overrides.split())


def test_shipped_preference_model_configs_select_the_task():
    for name, on_testbed in (("preference_model_tiny.yaml", False),
                             ("preference_model_testbed.yaml", True)):  # fmt: skip
        cfg = load_train_config(CONFIGS / name)
        assert cfg.algorithm.name == "preference_model" and cfg.task_kind == "preference_model"
        assert cfg.testbed.enabled is on_testbed and not cfg.testbed_mode
