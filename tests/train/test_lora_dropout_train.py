"""LoRA dropout in training: with ``lora.dropout > 0`` two steps with different keys differ
(and one key repeats); with dropout 0 (or no key) the step is bitwise the dropout-free one;
micro-batches draw their own masks — for SFT, the offline preference losses (DPO, KTO) and
multi-objective DPO, whose reference log-probs never see dropout; the engine runs it for
SFT, online INPO (the gap still falls), DPO and multi-objective DPO (the loss falls, and a
resumed run repeats the uninterrupted one)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tiny_models import TINY_TRAIN

from jaxalign.data import PreferenceBatch, SFTBatch, UnpairedBatch
from jaxalign.experiment import repo_root
from jaxalign.models import CausalLM, ModelConfig
from jaxalign.models.lora import LoRAConfig, LoRAParam, adapted
from jaxalign.train import load_train_config, train
from jaxalign.train.multiobjective import multiobjective_train_step
from jaxalign.train.state import TrainState
from jaxalign.train.step import (
    preference_gradient,
    preference_train_step,
    reference_sequence_logprobs,
)
from jaxalign.train.tasks.sft import sft_train_step

CONFIGS = repo_root() / "configs" / "train"
CFG = ModelConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_layers=2,
                  num_heads=2, num_kv_heads=1, head_dim=8, initializer_range=0.3)  # fmt: skip
LORA = LoRAConfig(rank=2, alpha=4.0, targets=("q_proj", "v_proj", "down_proj"), dropout=0.3)


@pytest.fixture(scope="module")
def setup():
    model = adapted(CausalLM.create(CFG, key=jax.random.key(0)), LORA, key=jax.random.key(1))
    graphdef, adapters, frozen = nnx.split(model, LoRAParam, ...)
    # Non-zero B, as after some training (B = 0 would hide the adapter path).
    adapters = jax.tree.map(
        lambda x: x + 0.2 * jax.random.normal(jax.random.key(2), x.shape), adapters
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(0, CFG.vocab_size, (4, 10)).astype(np.int32)
    attn = np.ones_like(ids)
    loss_mask = (np.arange(10)[None] >= 4).astype(np.float32) * attn
    batch = SFTBatch(*(jnp.asarray(x) for x in (ids, attn, loss_mask, np.ones(4, np.float32))))
    tx = optax.adam(1e-2)
    state = TrainState(jnp.zeros((), jnp.int32), adapters, tx.init(adapters),
                       jax.random.key_data(jax.random.key(0)))  # fmt: skip
    return graphdef, frozen, batch, tx, state


def _step(setup, *, dropout, key, accum=1):
    graphdef, frozen, batch, tx, state = setup
    fn = functools.partial(sft_train_step, graphdef=graphdef, tx=tx,
                           lr_schedule=optax.constant_schedule(1e-2), grad_accum_steps=accum,
                           dropout=dropout)  # fmt: skip
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int and float scalars
        new, metrics = jax.jit(fn)(state, batch, frozen=frozen, key=key)
    return jax.tree.map(np.asarray, new.params), float(metrics["loss"])


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("accum", [1, 2])
def test_dropout_steps_differ_by_key_and_zero_dropout_is_bitwise_off(setup, accum):
    k1, k2 = jax.random.key(1), jax.random.key(2)
    plain, plain_loss = _step(setup, dropout=0.0, key=None, accum=accum)
    a, loss_a = _step(setup, dropout=0.3, key=k1, accum=accum)
    b, loss_b = _step(setup, dropout=0.3, key=k2, accum=accum)
    assert not _same(a, b) and loss_a != loss_b and not _same(a, plain)
    assert _same(_step(setup, dropout=0.3, key=k1, accum=accum)[0], a)  # one key, one mask
    # Rate 0 (whatever the key) or no key: bitwise the dropout-free step.
    assert _same(_step(setup, dropout=0.0, key=k1, accum=accum)[0], plain)
    assert _same(_step(setup, dropout=0.3, key=None, accum=accum)[0], plain)
    assert np.isfinite(plain_loss)


def test_engine_trains_sft_and_inpo_with_lora_dropout(tmp_path):
    cfg = load_train_config(
        CONFIGS / "sft_lora_tiny.yaml",
        [*TINY_TRAIN, f"run.out_dir={tmp_path / 'sft'}", "run.steps=3", "lora.dropout=0.2",
         "checkpoint.enabled=false", "run.save_model=false", "optimizer.lr=3e-2",
         "data.max_length=48", "data.max_prompt_length=24", "tiny_data.eval_rows=0"],
    )  # fmt: skip
    result = train(cfg, quiet=True)
    assert result.status == "completed"
    assert all(np.isfinite(r["loss"]) for r in result.history)
    cfg = load_train_config(
        CONFIGS / "inpo_testbed.yaml",
        [f"run.out_dir={tmp_path / 'inpo'}", "run.steps=10", "lora.rank=4", "lora.alpha=8",
         "lora.dropout=0.1", "lora.targets=[q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
         "checkpoint.enabled=false", "run.save_model=false", "logging.progress_bar=false"],
    )  # fmt: skip
    s = train(cfg, quiet=True).summary
    assert s["final_duality_gap"] < 0.6 * s["initial_duality_gap"]  # measured 0.85 → 0.32


# --- the offline preference losses and multi-objective DPO ---------------------------------

B, L = 4, 10


@pytest.fixture(scope="module")
def pref_setup(setup):
    graphdef, frozen, _, tx, state = setup
    base_graphdef, _ = nnx.split(CausalLM.create(CFG, key=jax.random.key(0)))
    rng = np.random.default_rng(1)

    def side(lengths):
        ids = rng.integers(0, CFG.vocab_size, (B, L)).astype(np.int32)
        attn = (np.arange(L)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
        return ids, attn, (attn.astype(bool) & (np.arange(L)[None] >= 4)).astype(np.float32)

    chosen, rejected = side([10, 8, 6, 9]), side([7, 10, 10, 6])
    batch = PreferenceBatch(*(jnp.asarray(x) for x in (*chosen, *rejected, np.ones(B))))
    batch = batch._replace(example_mask=batch.example_mask.astype(jnp.float32))
    return graphdef, base_graphdef, frozen, batch, tx, state


def _pref_step(pref_setup, *, dropout, key, accum=1, algorithm="dpo", batch=None):
    graphdef, base_graphdef, frozen, default, tx, state = pref_setup
    fn = functools.partial(preference_train_step, graphdef=graphdef, tx=tx,
                           lr_schedule=optax.constant_schedule(1e-2), algorithm=algorithm,
                           beta=0.5, grad_accum_steps=accum, kl_metric=True,
                           base_graphdef=base_graphdef, dropout=dropout)  # fmt: skip
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int and float scalars
        new, metrics = jax.jit(fn)(state, frozen, default if batch is None else batch, key=key)
    return jax.tree.map(np.asarray, new.params), {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("accum", [1, 2])
def test_dpo_dropout_differs_by_key_and_zero_dropout_is_bitwise_off(pref_setup, accum):
    k1, k2 = jax.random.key(1), jax.random.key(2)
    plain, m_plain = _pref_step(pref_setup, dropout=0.0, key=None, accum=accum)
    a, m_a = _pref_step(pref_setup, dropout=0.3, key=k1, accum=accum)
    b, m_b = _pref_step(pref_setup, dropout=0.3, key=k2, accum=accum)
    assert not _same(a, b) and m_a["loss"] != m_b["loss"] and not _same(a, plain)
    assert _same(_pref_step(pref_setup, dropout=0.3, key=k1, accum=accum)[0], a)
    assert _same(_pref_step(pref_setup, dropout=0.0, key=k1, accum=accum)[0], plain)
    assert _same(_pref_step(pref_setup, dropout=0.3, key=None, accum=accum)[0], plain)
    assert np.isfinite(m_plain["loss"]) and m_a["finite"] == 1.0


def test_dpo_dropout_micro_batches_draw_their_own_masks(pref_setup):
    """Two micro-batches holding the same pairs: micro-batch ``i`` draws from
    ``fold_in(key, i)``, so its loss is that pair batch's alone under that key, and the two
    differ (a shared mask would give them equal losses)."""
    graphdef, base_graphdef, frozen, batch, _, state = pref_setup
    half = jax.tree.map(lambda x: x[:2], batch)
    twice = jax.tree.map(lambda x: jnp.repeat(x, 2, axis=0), half)  # row i → micro-batch i mod 2
    key = jax.random.key(5)

    def loss(b, k, accum):
        fn = functools.partial(preference_gradient, graphdef=graphdef, beta=0.5,
                               grad_accum_steps=accum, kl_metric=False,
                               base_graphdef=base_graphdef, dropout=0.3)  # fmt: skip
        return float(jax.jit(fn)(state.params, frozen, b, key=k)[1]["loss"])

    first, second = (loss(half, jax.random.fold_in(key, i), 1) for i in (0, 1))
    assert abs(first - second) > 1e-4
    np.testing.assert_allclose(loss(twice, key, 2), (first + second) / 2, rtol=1e-5)


@pytest.mark.parametrize("accum", [1, 2])
def test_dpo_dropout_reference_logprobs_are_those_without_dropout(pref_setup, accum):
    """The in-step reference under dropout gives what the reference log-probs precomputed
    without any key give: π_ref never sees the masks (only the policy does)."""
    graphdef, base_graphdef, frozen, batch, _, state = pref_setup
    rc, rr = jax.jit(functools.partial(reference_sequence_logprobs, graphdef=base_graphdef))(
        frozen, batch
    )
    stored = batch._replace(reference_chosen_logp=rc, reference_rejected_logp=rr)
    key = jax.random.key(3)

    def grad(b):
        fn = functools.partial(preference_gradient, graphdef=graphdef, beta=0.5,
                               grad_accum_steps=accum, kl_metric=False,
                               base_graphdef=base_graphdef, dropout=0.3)  # fmt: skip
        g, m = jax.jit(fn)(state.params, frozen, b, key=key)
        return jax.tree.map(np.asarray, g), {k: float(v) for k, v in m.items()}

    (g_step, m_step), (g_stored, m_stored) = grad(batch), grad(stored)
    for name in ("loss", "log_ratio", "chosen_reward", "policy_chosen_logp"):
        np.testing.assert_allclose(m_step[name], m_stored[name], rtol=1e-6, err_msg=name)
    for x, y in zip(jax.tree.leaves(g_step), jax.tree.leaves(g_stored), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)  # float rounding
    # And the policy did see dropout: its log-probs differ from the dropout-free ones.
    _, m_plain = jax.jit(functools.partial(
        preference_gradient, graphdef=graphdef, beta=0.5, grad_accum_steps=accum,
        kl_metric=False, base_graphdef=base_graphdef))(state.params, frozen, stored)  # fmt: skip
    assert abs(float(m_plain["policy_chosen_logp"]) - m_step["policy_chosen_logp"]) > 1e-4


def test_kto_dropout_differs_by_key_and_no_key_is_bitwise_off(pref_setup):
    _, _, _, batch, _, _ = pref_setup
    unpaired = UnpairedBatch(
        batch.chosen_input_ids, batch.chosen_attention_mask, batch.chosen_loss_mask,
        batch.rejected_input_ids, batch.rejected_attention_mask, batch.rejected_loss_mask,
        jnp.asarray([1.0, 0.0, 1.0, 0.0], jnp.float32), batch.example_mask,
    )  # fmt: skip
    run = functools.partial(_pref_step, pref_setup, algorithm="kto", batch=unpaired, accum=2)
    plain, _ = run(dropout=0.0, key=None)
    a, _ = run(dropout=0.3, key=jax.random.key(1))
    b, _ = run(dropout=0.3, key=jax.random.key(2))
    assert not _same(a, b) and not _same(a, plain)
    assert _same(run(dropout=0.3, key=jax.random.key(1))[0], a)
    assert _same(run(dropout=0.3, key=None)[0], plain)


def test_multiobjective_dropout_differs_by_key_and_no_key_is_bitwise_off(pref_setup):
    graphdef, base_graphdef, frozen, batch, tx, state = pref_setup
    other = batch._replace(chosen_input_ids=batch.rejected_input_ids,
                           rejected_input_ids=batch.chosen_input_ids)  # fmt: skip

    def run(dropout, key):
        fn = functools.partial(multiobjective_train_step, graphdef=graphdef, tx=tx,
                               lr_schedule=optax.constant_schedule(1e-2), aggregator="mgda",
                               beta=0.5, grad_accum_steps=2, kl_metric=False,
                               base_graphdef=base_graphdef, dropout=dropout)  # fmt: skip
        with jax.numpy_dtype_promotion("standard"):
            new, m = jax.jit(fn)(state, frozen, (batch, other), key=key)
        return jax.tree.map(np.asarray, new.params), {k: float(v) for k, v in m.items()}

    plain, _ = run(0.0, None)
    a, m_a = run(0.3, jax.random.key(1))
    b, _ = run(0.3, jax.random.key(2))
    assert not _same(a, b) and not _same(a, plain) and m_a["finite"] == 1.0
    assert _same(run(0.3, jax.random.key(1))[0], a)
    assert _same(run(0.0, jax.random.key(1))[0], plain)
    assert _same(run(0.3, None)[0], plain)


def test_engine_trains_dpo_with_lora_dropout(tmp_path):
    cfg = load_train_config(
        CONFIGS / "dpo_lora_tiny.yaml",
        [*TINY_TRAIN, f"run.out_dir={tmp_path}", "run.steps=4", "lora.rank=4",
         "lora.dropout=0.1", "optimizer.lr=3e-2", "optimizer.grad_accum_steps=2",
         "checkpoint.enabled=false", "run.save_model=false"],
    )  # fmt: skip
    result = train(cfg, quiet=True)
    losses = [r["loss"] for r in result.history]
    assert result.status == "completed" and all(np.isfinite(losses))
    assert losses[-1] < losses[0]


def test_multiobjective_dpo_with_lora_dropout_trains_and_resumes_bitwise(tmp_path):
    # Weighted toward objective 0: the two tiny objectives conflict, so an even mix barely
    # moves in a few steps (measured: loss 0.693 → last three steps' mean 0.668).
    extra = ["lora.rank=4", "lora.alpha=8", "lora.dropout=0.1", "optimizer.lr=3e-2",
             "algorithm.weights=[0.9,0.1]", "schedule.warmup_steps=0", "run.save_model=false",
             "checkpoint.every_steps=5"]  # fmt: skip

    def run(out, *more):
        cfg = load_train_config(CONFIGS / "multiobjective_dpo_tiny.yaml",
                                [*TINY_TRAIN, f"run.out_dir={out}", *extra, *more])  # fmt: skip
        return train(cfg, quiet=True)

    whole = run(tmp_path / "whole", "run.steps=10")
    losses = [r["loss"] for r in whole.history]
    assert whole.status == "completed" and all(np.isfinite(losses))
    np.testing.assert_allclose(losses[0], np.log(2.0), rtol=1e-5)  # B = 0: π = π_ref
    assert np.mean(losses[-3:]) < losses[0] - 0.01
    run(tmp_path / "cut", "run.steps=5")
    resumed = run(tmp_path / "cut", "run.steps=10", "run.resume=true")
    assert resumed.step == 10 and [r["step"] for r in resumed.history][-5:] == [6, 7, 8, 9, 10]
    assert [r["loss"] for r in resumed.history][-5:] == losses[-5:]
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, resumed.state.params),
                 jax.tree.map(np.asarray, whole.state.params))  # fmt: skip
