"""Fewer wasted FLOPs, same losses: packed batches = padded batches (values and gradients,
with gradient accumulation and filler pairs), precomputed reference log-probs = the step's
own (bitwise, end to end through ``train``), the loader's packed shapes agree across data
shards, and the kl_ref metric is optional."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxalign.data import collate_preference_batch, pack_preference_pairs
from jaxalign.data.loader import PreferenceDataset, PreferenceLoader
from jaxalign.data.tokenize import TokenizedPair
from jaxalign.models import CausalLM, ModelConfig
from jaxalign.train import load_train_config, train
from jaxalign.train.metrics import read_jsonl
from jaxalign.train.state import TrainState
from jaxalign.train.step import preference_train_step, reference_sequence_logprobs

V, WIDTH = 40, 16
CONFIG = ModelConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_layers=2,
                     num_heads=2, num_kv_heads=1, head_dim=8, initializer_range=0.3)  # fmt: skip


def _pairs(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p, c, r = rng.integers(1, 5), rng.integers(1, 8), rng.integers(1, 8)
        ids = lambda k: rng.integers(0, V, k).astype(np.int32)
        out.append(TokenizedPair(ids(p), ids(c), ids(r), False, False))
    return out


@pytest.fixture(scope="module")
def models():
    graphdef, params = nnx.split(CausalLM.create(CONFIG, key=jax.random.key(0)))
    _, reference = nnx.split(CausalLM.create(CONFIG, key=jax.random.key(1)))
    return graphdef, params, reference


def _step(models, batch, accum=1, kl_metric=True):
    graphdef, params, reference = models
    tx = optax.sgd(1.0)  # new params = params − gradient
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jnp.zeros(2, jnp.uint32))
    fn = functools.partial(preference_train_step, graphdef=graphdef, tx=tx,
                           lr_schedule=optax.constant_schedule(1.0), algorithm="dpo", beta=0.5,
                           grad_accum_steps=accum, kl_metric=kl_metric)  # fmt: skip
    with jax.numpy_dtype_promotion("standard"):
        new, metrics = jax.jit(fn)(state, reference, batch)
    grads = jax.tree.map(lambda p, q: p - q, params, new.params)
    return grads, jax.device_get(metrics)


@pytest.mark.parametrize(("accum", "share"), [(1, False), (2, False), (1, True), (2, True)])
def test_packed_batch_gives_the_padded_loss_and_gradient(models, accum, share):
    pairs = _pairs(8)
    example = np.asarray([1, 1, 1, 1, 1, 1, 1, 0], np.float32)  # a filler pair
    padded = collate_preference_batch(pairs, WIDTH, pad_id=0, example_mask=example)
    pack = functools.partial(pack_preference_pairs, pad_id=0, example_mask=example,
                             micro_batches=accum, share_prompt=share)  # fmt: skip
    packed = pack(pairs, WIDTH)
    assert packed.input_ids.shape[0] < 2 * len(pairs)  # fewer rows than sequences
    real = int(np.sum(padded.chosen_attention_mask) + np.sum(padded.rejected_attention_mask))
    computed = int(np.sum(packed.segment_ids > 0))
    prompts = sum(len(p.prompt) for p in pairs)
    # Every real token once (a shared prompt once per pair, plus one copy of its last token).
    assert computed == (real - prompts + len(pairs) if share else real)
    g_pad, m_pad = _step(models, jax.tree.map(jnp.asarray, padded), accum)
    g_pack, m_pack = _step(models, jax.tree.map(jnp.asarray, packed), accum)
    for key in ("loss", "accuracy", "margin", "kl_ref", "policy_chosen_logp"):
        np.testing.assert_allclose(m_pack[key], m_pad[key], rtol=2e-5, atol=1e-6, err_msg=key)
    assert float(m_pack["tokens"]) == float(m_pad["tokens"]) == real
    for a, b in zip(jax.tree.leaves(g_pack), jax.tree.leaves(g_pad)):
        scale = float(np.max(np.abs(b)))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5 * scale, rtol=2e-4)
    # Teeth: a packing that swaps chosen and rejected of one pair changes the loss.
    swapped = list(pairs)
    swapped[0] = pairs[0]._replace(chosen=pairs[0].rejected, rejected=pairs[0].chosen)
    bad = pack(swapped, WIDTH)
    _, m_bad = _step(models, jax.tree.map(jnp.asarray, bad), accum)
    assert abs(float(m_bad["loss"]) - float(m_pad["loss"])) > 1e-4
    if share:  # Teeth: without the branch mask the rejected branch would see the chosen one.
        leaky = packed._replace(branch_ids=np.zeros_like(packed.branch_ids))
        _, m_leak = _step(models, jax.tree.map(jnp.asarray, leaky), accum)
        assert abs(float(m_leak["loss"]) - float(m_pad["loss"])) > 1e-4


def test_precomputed_reference_logps_give_the_same_step(models):
    graphdef, _, reference = models
    pairs = _pairs(6, seed=1)
    batch = jax.tree.map(jnp.asarray, collate_preference_batch(pairs, WIDTH, pad_id=0))
    rc, rr = jax.jit(functools.partial(reference_sequence_logprobs, graphdef=graphdef))(
        reference, batch
    )
    with_ref = batch._replace(reference_chosen_logp=rc, reference_rejected_logp=rr)
    g_in, m_in = _step(models, batch, kl_metric=False)
    g_pre, m_pre = _step(models, with_ref, kl_metric=False)
    assert "kl_ref" not in m_pre
    np.testing.assert_allclose(m_pre["loss"], m_in["loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_pre), jax.tree.leaves(g_in)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    # Teeth: precomputed values of the wrong model change the loss.
    wrong = with_ref._replace(reference_chosen_logp=rc + 1.0)
    _, m_wrong = _step(models, wrong, kl_metric=False)
    assert abs(float(m_wrong["loss"]) - float(m_in["loss"])) > 1e-3


def _run(tmp_path, name, *extra):
    from tiny_models import tiny_overrides

    config = load_train_config(
        None,
        tiny_overrides(tmp_path / name, "run.steps=4", "logging.kl_ref=false",
                       "checkpoint.every_steps=2", *extra),
    )  # fmt: skip
    return train(config, quiet=True)


def test_train_with_precomputed_reference_repeats_the_losses_bitwise(tmp_path):
    base = _run(tmp_path, "base")
    pre = _run(tmp_path, "pre", "data.precompute_reference=true")
    assert (pre.out_dir / "reference_logps.npz").exists()
    losses = lambda r: [row["loss"] for row in read_jsonl(r.out_dir / "metrics.jsonl")]
    assert losses(pre) == losses(base)
    # A resumed run reads the cached values instead of recomputing them.
    resumed = _run(tmp_path, "pre", "data.precompute_reference=true", "run.resume=true",
                   "run.steps=6")  # fmt: skip
    assert resumed.resumed_from == 4 and len(losses(resumed)) == 6


@pytest.mark.parametrize("share", [False, True])
def test_train_with_packing_follows_the_padded_run(tmp_path, share):
    base = _run(tmp_path, "pad")
    packed = _run(tmp_path, "packed", "data.packing=true", "data.packing_length=48",
                  f"data.share_prompt={str(share).lower()}")  # fmt: skip
    a = [row["loss"] for row in read_jsonl(base.out_dir / "metrics.jsonl")]
    b = [row["loss"] for row in read_jsonl(packed.out_dir / "metrics.jsonl")]
    np.testing.assert_allclose(b, a, rtol=1e-4)
    rows = read_jsonl(packed.out_dir / "metrics.jsonl")
    real = np.asarray([row["tokens"] for row in rows])  # the pairs' own tokens
    computed = np.asarray([row["computed_tokens"] for row in rows])
    # The tokens metric counts the pairs' own tokens whatever the layout ...
    base_real = [row["tokens"] for row in read_jsonl(base.out_dir / "metrics.jsonl")]
    np.testing.assert_array_equal(real, base_real)
    if not share:  # ... and the packed rows hold them all (a shared prompt is held once)
        assert np.all(real <= computed)


def test_packed_loader_shards_agree_on_the_row_count():
    pairs = _pairs(16, seed=2)
    dataset = PreferenceDataset(pairs)
    shapes = []
    for p in range(4):
        loader = PreferenceLoader(dataset, batch_size=8, bucket_sizes=(WIDTH,), packing=True,
                                  micro_batches=2, row_multiple=3, process_index=p,
                                  process_count=4, shuffle=False)  # fmt: skip
        batch = next(loader)
        shapes.append(batch.input_ids.shape)
        assert batch.input_ids.shape[0] % (2 * 3) == 0
        assert batch.example_mask.shape == (2,)
    assert len(set(shapes)) == 1


def test_precompute_and_kl_metric_together_is_a_config_error(tmp_path):
    from jaxalign.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match=r"logging\.kl_ref=false"):
        load_train_config(None, [f"run.out_dir={tmp_path}", "data.precompute_reference=true"])


@pytest.mark.parametrize("accum", [1, 2])
def test_bf16_parameters_keep_their_dtypes_step_after_step(accum):
    config = CONFIG.replace(dtype="bfloat16", param_dtype="bfloat16")
    graphdef, params = nnx.split(CausalLM.create(config, key=jax.random.key(0)))
    tx = optax.adamw(1e-3)
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jnp.zeros(2, jnp.uint32))
    batch = jax.tree.map(jnp.asarray, collate_preference_batch(_pairs(4), WIDTH, pad_id=0))
    schedule = optax.constant_schedule(1e-3)
    fn = functools.partial(preference_train_step, graphdef=graphdef, tx=tx,
                           lr_schedule=schedule, grad_accum_steps=accum)  # fmt: skip
    dtypes = lambda s: [x.dtype for x in jax.tree.leaves(s)]
    with jax.numpy_dtype_promotion("standard"):
        compiled = jax.jit(fn).lower(state, params, batch).compile()
        new, metrics = compiled(state, params, batch)
        assert dtypes(new) == dtypes(state)
        again, _ = compiled(new, params, batch)  # a dtype change would be refused here
    assert bool(metrics["finite"]) and dtypes(again) == dtypes(state)
