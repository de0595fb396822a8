"""SimPO, ORPO, RPO and KTO through ``jaxalign train``: the step's gradient is ``jax.grad`` of
the loss written out by hand from the papers' formulas; the reference-free losses run with
no reference at all (the step takes ``reference=None``, the task never builds one); each
``configs/train/*_tiny.yaml`` trains through the engine (loss falls, checkpoint and HF model
written) and gives the single-device run on a sharded mesh; KTO's unpaired data is read
with ``file:line`` errors; config mistakes name the key."""

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
from jaxalign.data import (
    DataConfig,
    MalformedRowError,
    PreferenceBatch,
    UnpairedBatch,
    build_unpaired_loader,
    load_unpaired_dataset,
    make_tiny_unpaired_dataset,
)
from jaxalign.experiment import repo_root
from jaxalign.models import CausalLM, ModelConfig, build_tiny_tokenizer
from jaxalign.train import load_train_config, train
from jaxalign.train.state import TrainState
from jaxalign.train.step import preference_train_step

CONFIGS = repo_root() / "configs" / "train"
B, L, V = 6, 10, 32
HPARAMS = {
    "simpo": {"beta": 2.0, "gamma": 0.8},
    "orpo": {"odds_ratio_weight": 0.4},
    "rpo": {"beta": 0.5, "nll_weight": 0.7},
    "kto": {"beta": 0.5, "desirable_weight": 1.4, "undesirable_weight": 0.6},
}
REFERENCE_FREE = ("simpo", "orpo")
sp = jax.nn.softplus


@pytest.fixture(scope="module")
def setup():
    cfg = ModelConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_layers=1,
                      num_heads=2, num_kv_heads=1, head_dim=8, initializer_range=0.3)  # fmt: skip
    graphdef, params = nnx.split(CausalLM.create(cfg, key=jax.random.key(0)))
    _, reference = nnx.split(CausalLM.create(cfg, key=jax.random.key(1)))
    rng = np.random.default_rng(0)

    def side(lengths):
        ids = rng.integers(0, V, (B, L)).astype(np.int32)
        attn = (np.arange(L)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
        loss_mask = (attn.astype(bool) & (np.arange(L)[None] >= 4)).astype(np.float32)
        return ids, attn, loss_mask

    # Different response lengths on the two sides, so length normalisation matters.
    chosen, rejected = side([10, 8, 6, 9, 10, 7]), side([7, 10, 10, 6, 8, 9])
    example = np.asarray([1, 1, 1, 1, 1, 0], np.float32)  # a filler row that must not count
    batch = PreferenceBatch(*(jnp.asarray(x) for x in (*chosen, *rejected, example)))
    return graphdef, params, reference, batch


def _seq(graphdef, params, ids, attn, loss_mask):
    """(Σ_t mask_t log π(ids_t | ids_<t), Σ_t mask_t): written out with log_softmax."""
    logits = nnx.merge(graphdef, params)(ids, attention_mask=attn)
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    scored = loss_mask[:, 1:] * attn[:, 1:].astype(jnp.float32)
    return jnp.sum(picked * scored, axis=-1), jnp.sum(scored, axis=-1)


def _log_odds(a):
    return a - jnp.log1p(-jnp.exp(a))


def _handwritten_pair_loss(name, hp, params, graphdef, reference, batch):
    """Batch-mean loss over real pairs from the papers' formulas."""
    pc, nc = _seq(graphdef, params, *batch[:3])
    pr, nr = _seq(graphdef, params, *batch[3:6])
    if name == "simpo":
        z = hp["beta"] * pc / nc - hp["beta"] * pr / nr - hp["gamma"]
        per_pair = sp(-z)
    elif name == "orpo":
        aw, al = pc / nc, pr / nr
        per_pair = -aw + hp["odds_ratio_weight"] * sp(-(_log_odds(aw) - _log_odds(al)))
    else:  # rpo
        rc, _ = _seq(graphdef, reference, *batch[:3])
        rr, _ = _seq(graphdef, reference, *batch[3:6])
        h = (pc - rc) - (pr - rr)
        per_pair = sp(-hp["beta"] * h) + hp["nll_weight"] * (-pc / nc)
    w = batch.example_mask
    return jnp.sum(w * per_pair) / jnp.sum(w)


def _kto_batch(batch) -> UnpairedBatch:
    """Completions = the chosen side, mismatched KL sequences = the rejected side."""
    labels = jnp.asarray([1, 0, 1, 0, 0, 1], jnp.float32)
    return UnpairedBatch(*batch[:6], labels, batch.example_mask)


def _handwritten_kto_loss(hp, params, graphdef, reference, batch):
    logp, _ = _seq(graphdef, params, *batch[:3])
    ref, _ = _seq(graphdef, reference, *batch[:3])
    kl_pol, _ = _seq(graphdef, params, *batch[3:6])
    kl_ref, _ = _seq(graphdef, reference, *batch[3:6])
    w = batch.example_mask
    z0 = jax.lax.stop_gradient(jnp.maximum(jnp.sum(w * (kl_pol - kl_ref)) / jnp.sum(w), 0.0))
    t = hp["beta"] * ((logp - ref) - z0)
    good = batch.desirable
    per = good * hp["desirable_weight"] * (1 - jax.nn.sigmoid(t)) + (1 - good) * hp[
        "undesirable_weight"
    ] * (1 - jax.nn.sigmoid(-t))
    return jnp.sum(w * per) / jnp.sum(w), z0


def _step(params, reference, batch, graphdef, name, accum=1, **hp):
    tx = optax.sgd(1.0)  # new params = params − gradient
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jnp.zeros(2, jnp.uint32))
    fn = functools.partial(
        preference_train_step,
        graphdef=graphdef,
        tx=tx,
        lr_schedule=optax.constant_schedule(1.0),
        algorithm=name,
        grad_accum_steps=accum,
        kl_metric=name not in REFERENCE_FREE,
        **hp,
    )
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int and float scalars
        return jax.jit(fn)(state, reference, batch)


def _assert_grad_equal(params, new, grad):
    step_grad = jax.tree.map(lambda p, q: p - q, params, new.params)
    for a, e in zip(jax.tree.leaves(step_grad), jax.tree.leaves(grad), strict=True):
        a, e = np.asarray(a), np.asarray(e)
        np.testing.assert_allclose(a, e, rtol=2e-4, atol=2e-5 * float(np.max(np.abs(e))))


@pytest.mark.parametrize(("name", "accum"), [("simpo", 2), ("orpo", 1), ("rpo", 2)])
def test_step_gradient_is_grad_of_the_handwritten_loss(setup, name, accum):
    graphdef, params, reference, batch = setup
    hp = HPARAMS[name]
    # The reference-free losses get no reference at all: nothing to run a forward pass on.
    ref_arg = None if name in REFERENCE_FREE else reference
    new, metrics = _step(params, ref_arg, batch, graphdef, name, accum, **hp)
    loss_fn = functools.partial(_handwritten_pair_loss, name, hp)
    value, grad = jax.jit(jax.value_and_grad(loss_fn), static_argnums=1)(
        params, graphdef, reference, batch
    )
    _assert_grad_equal(params, new, grad)
    assert float(metrics["finite"]) == 1.0
    np.testing.assert_allclose(float(metrics["loss"]), float(value), rtol=1e-5)
    if name in REFERENCE_FREE:
        assert "log_ratio" not in metrics and "kl_ref" not in metrics
    if name in ("orpo", "rpo"):  # the chosen responses' mean token NLL, over real pairs
        pc, nc = _seq(graphdef, params, *batch[:3])
        w = np.asarray(batch.example_mask)
        nll = float(np.sum(w * np.asarray(-pc / nc)) / np.sum(w))
        np.testing.assert_allclose(float(metrics["nll"]), nll, rtol=1e-4)


def test_gradient_check_has_teeth(setup):
    # SimPO without length normalisation (β·log π instead of β·log π/|y|) is another update.
    graphdef, params, _, batch = setup
    new, _ = _step(params, None, batch, graphdef, "simpo", **HPARAMS["simpo"])

    def unnormalised(p):
        pc, _ = _seq(graphdef, p, *batch[:3])
        pr, _ = _seq(graphdef, p, *batch[3:6])
        z = 2.0 * (pc - pr) - 0.8
        return jnp.sum(batch.example_mask * sp(-z)) / jnp.sum(batch.example_mask)

    wrong = jax.grad(unnormalised)(params)
    step_grad = jax.tree.map(lambda p, q: p - q, params, new.params)
    diff = max(float(jnp.max(jnp.abs(a - e)))
               for a, e in zip(jax.tree.leaves(step_grad), jax.tree.leaves(wrong)))  # fmt: skip
    assert diff > 1e-3


def test_kto_step_gradient_and_metrics_are_the_handwritten_ones(setup):
    graphdef, params, reference, pairs = setup
    batch, hp = _kto_batch(pairs), HPARAMS["kto"]
    new, metrics = _step(params, reference, batch, graphdef, "kto", **hp)
    (value, z0), grad = jax.jit(
        jax.value_and_grad(functools.partial(_handwritten_kto_loss, hp), has_aux=True),
        static_argnums=1,
    )(params, graphdef, reference, batch)
    _assert_grad_equal(params, new, grad)
    np.testing.assert_allclose(float(metrics["loss"]), float(value), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["reference_point"]), float(z0), rtol=1e-4, atol=1e-6)
    # Mean β·r over the real desirable (rows 0, 5 → only 0 is real) and undesirable rows.
    logp, _ = _seq(graphdef, params, *batch[:3])
    ref, _ = _seq(graphdef, reference, *batch[:3])
    r = np.asarray(hp["beta"] * (logp - ref))
    np.testing.assert_allclose(float(metrics["desirable_reward"]), r[[0, 2]].mean(), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["undesirable_reward"]), r[[1, 3, 4]].mean(),
                               rtol=1e-4)  # fmt: skip
    np.testing.assert_allclose(float(metrics["desirable"]), 2 / 5)


def test_reference_free_step_refuses_the_kl_metric(setup):
    graphdef, params, _, batch = setup
    tx = optax.sgd(1.0)
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jnp.zeros(2, jnp.uint32))
    with pytest.raises(ValueError, match="kl_metric=True needs the reference model"):
        preference_train_step(
            state, None, batch, graphdef=graphdef, tx=tx,
            lr_schedule=optax.constant_schedule(1.0), algorithm="orpo",
        )  # fmt: skip


# --------------------------------------------------------------------------------------------
# The tiny configs through the engine.

STEPS = 8


def _tiny_run(name, out, *extra):
    cfg = load_train_config(
        CONFIGS / f"{name}_tiny.yaml",
        [*TINY_TRAIN, f"run.out_dir={out}", f"run.steps={STEPS}", "checkpoint.every_steps=4",
         "optimizer.lr=1e-2", "logging.peak_flops=1e9", *extra],
    )  # fmt: skip
    return train(cfg, quiet=True)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    return {name: _tiny_run(name, tmp_path_factory.mktemp(name))
            for name in ("simpo", "orpo", "rpo", "kto")}  # fmt: skip


@pytest.mark.parametrize("name", ["simpo", "orpo", "rpo", "kto"])
def test_tiny_config_trains_through_the_engine(tiny_runs, name):
    result = tiny_runs[name]
    assert result.status == "completed" and result.step == STEPS
    assert result.summary["algorithm"] == name
    losses = np.array([r["loss"] for r in result.history])
    assert losses.shape == (STEPS,) and np.all(np.isfinite(losses))
    assert losses[-3:].mean() < losses[0]  # it learns
    # The first step is at the initial policy: the closed-form starting values.
    first = result.history[0]
    if name == "simpo":  # mean of −log σ(margin − γ) ≥ −log σ(mean margin − γ) (convexity)
        assert losses[0] >= float(sp(-(first["margin"] - 1.0))) - 1e-6
        assert abs(losses[0] - float(sp(1.0))) < 0.2  # ā_w ≈ ā_l at init: ≈ softplus(γ)
    if name == "kto":  # π = π_ref: r = z₀ = 0, each loss is λ·(1 − σ(0)) = 0.5
        np.testing.assert_allclose(losses[0], 0.5, rtol=1e-5)
        assert first["reference_point"] == 0.0
    out = result.out_dir
    assert (out / "checkpoints" / str(STEPS)).is_dir()
    assert (out / "model" / "config.json").exists()  # the final policy as an HF checkpoint
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    # Reference-free: the task never built (copied, sharded or ran) a reference model.
    assert (result.task.frozen is None) == (name in REFERENCE_FREE)


@pytest.mark.parametrize("name", ["simpo", "kto"])
def test_sharded_run_matches_the_single_device_run(tiny_runs, tmp_path, name):
    assert jax.device_count() == 8
    mesh = ("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2")
    off = ("checkpoint.enabled=false", "run.save_model=false")
    sharded = _tiny_run(name, tmp_path, "run.steps=3", *mesh, *off)
    kernel = sharded.state.params["model"]["layers"]["mlp"]["gate_proj"]["kernel"]
    assert kernel.sharding.num_devices == 8
    single = [r["loss"] for r in tiny_runs[name].history[:3]]
    np.testing.assert_allclose([r["loss"] for r in sharded.history], single, rtol=5e-5, atol=5e-6)


def test_packed_batches_give_simpo_the_same_lengths(tiny_runs, tmp_path):
    # Token counts |y| come from the packed layout (segment sums), shared prompts included.
    packed = _tiny_run("simpo", tmp_path, "run.steps=2", "data.packing=true",
                       "data.share_prompt=true", "data.packing_length=48",
                       "checkpoint.enabled=false", "run.save_model=false")  # fmt: skip
    padded = [r["loss"] for r in tiny_runs["simpo"].history[:2]]
    np.testing.assert_allclose([r["loss"] for r in packed.history], padded, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Config validation.


@pytest.mark.parametrize(
    ("config", "overrides", "message"),
    [
        ("simpo", "algorithm.gamma=-1", r"algorithm: gamma=-1\.0 is invalid; expected >= 0"),
        ("simpo", "algorithm.beta=0", r"algorithm: beta=0\.0 is invalid; expected > 0"),
        ("orpo", "algorithm.odds_ratio_weight=-0.1", r"odds_ratio_weight=-0\.1 is invalid"),
        ("rpo", "algorithm.nll_weight=-2", r"nll_weight=-2\.0 is invalid; expected >= 0"),
        ("kto", "algorithm.desirable_weight=0", r"desirable_weight=0\.0 is invalid; expected > 0"),
        ("kto", "algorithm.undesirable_weight=-1", r"undesirable_weight=-1\.0 is invalid"),
        ("simpo", "logging.kl_ref=true", r"logging\.kl_ref=true needs the reference model"),
        ("orpo", "data.precompute_reference=true", r"orpo is reference-free"),
        ("kto", "data.packing=true", r"not supported for kto"),
        ("simpo", "testbed.enabled=true", r"simpo trains on text data: set testbed\.enabled"),
        ("simpo", "algorithm.nll_weight=2", r"nll_weight=2\.0 is not used by name='simpo' \(only"),
        ("orpo", "algorithm.beta=0.5", r"beta=0\.5 is not used by name='orpo'"),
        ("dpo", "algorithm.gamma=0.5", r"gamma=0\.5 is not used by name='dpo' \(only by simpo\)"),
        ("simpo", "algorithm.gama=1", r"did you mean 'gamma'"),
        ("simpo", "algorithm.name=simpoo", r"did you mean 'simpo'"),
    ],
)
def test_config_errors_name_the_key(config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(CONFIGS / f"{config}_tiny.yaml", overrides.split())


@pytest.mark.parametrize("name", ["simpo", "orpo", "rpo", "kto"])
def test_shipped_configs_select_their_algorithm(name):
    for path in (f"{name}_tiny.yaml", f"{name}_hf.yaml"):
        if not (CONFIGS / path).exists():
            assert name == "rpo" and path.endswith("_hf.yaml")
            continue
        cfg = load_train_config(CONFIGS / path)
        assert cfg.algorithm.name == name and cfg.task_kind == "offline"
        assert load_train_config(CONFIGS / path, [f"algorithm.name={name}"]) == cfg


# --------------------------------------------------------------------------------------------
# KTO data.


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import PreTrainedTokenizerFast

    directory = build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"prompt": "sort: cat owl", "completion": " cat owl", "label": True}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"prompt": "p", "completion": " c"}, r"k\.jsonl:2: missing key 'label'"),
        ({"prompt": "p", "completion": " c", "label": "yes"},
         r"k\.jsonl:2: 'label' must be true or false \(desirable or not\), got 'yes'"),
        ({"prompt": "p", "completion": " c", "label": 1}, r"k\.jsonl:2: 'label' must be true"),
        ({"prompt": "p", "label": False}, r"k\.jsonl:2: missing key 'completion'"),
        ({"prompt": "p", "completion": "", "label": False}, r"k\.jsonl:2: 'completion' is empty"),
        ({"completion": " c", "label": False}, r"k\.jsonl:2: missing key 'prompt'"),
        ('{"prompt": "p", ', r"k\.jsonl:2: invalid JSON"),
    ],
)  # fmt: skip
def test_malformed_unpaired_rows_name_file_and_line(tmp_path, tokenizer, bad, message):
    path = _write(tmp_path / "k.jsonl", [GOOD, bad])
    config = DataConfig(path=str(path), batch_size=1, max_length=24, max_prompt_length=16)
    with pytest.raises(MalformedRowError, match=message):
        load_unpaired_dataset(config, tokenizer)
    skipped = load_unpaired_dataset(dataclasses_replace(config, skip_malformed=True), tokenizer)
    assert len(skipped) == 1 and skipped.num_skipped == 1


def dataclasses_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_unpaired_rows_read_from_parquet_and_conversations(tmp_path, tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [GOOD, {"prompt": "sort: egg jam", "completion": " jam egg", "label": False}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "k.parquet")
    config = DataConfig(path=str(tmp_path / "k.parquet"), batch_size=2, max_length=24,
                        max_prompt_length=16)  # fmt: skip
    dataset = load_unpaired_dataset(config, tokenizer)
    assert [e.desirable for e in dataset.examples] == [True, False]
    assert dataset.stats["num_desirable"] == 1 and dataset.stats["num_undesirable"] == 1
    chat = {"prompt": [{"role": "user", "content": "sort: cat owl"}],
            "completion": [{"role": "assistant", "content": "cat owl"}], "label": True}  # fmt: skip
    path = _write(tmp_path / "chat.jsonl", [chat])
    one = load_unpaired_dataset(dataclasses_replace(config, path=str(path)), tokenizer)
    assert len(one) == 1 and len(one[0].completion) > 0


def test_unpaired_batches_pair_each_prompt_with_the_next_completion(tmp_path, tokenizer):
    path = make_tiny_unpaired_dataset(tmp_path / "k.jsonl", 8, seed=3)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    # Balanced labels; desirable answers are the sorted words, undesirable ones are not.
    assert [r["label"] for r in rows] == [True, False] * 4
    for r in rows:
        words = r["prompt"].split()[1:]
        assert (r["completion"].split() == sorted(words)) == r["label"]
    config = DataConfig(path=str(path), batch_size=4, max_length=24, max_prompt_length=16,
                        shuffle=False)  # fmt: skip
    loader = build_unpaired_loader(config, tokenizer)
    batch = next(loader)
    assert isinstance(batch, UnpairedBatch) and batch.input_ids.shape == (4, 24)
    np.testing.assert_array_equal(batch.desirable, [1, 0, 1, 0])
    data = loader.dataset
    for i in range(4):
        prompt, own, other = data[i].prompt, data[i].completion, data[(i + 1) % 4].completion
        n = len(prompt)
        other = other[: 24 - n]  # the mismatched completion is cut to fit max_length
        np.testing.assert_array_equal(batch.input_ids[i, : n + len(own)], [*prompt, *own])
        np.testing.assert_array_equal(batch.kl_input_ids[i, : n + len(other)], [*prompt, *other])
        assert batch.kl_loss_mask[i].sum() == len(other) and batch.loss_mask[i].sum() == len(own)
    # Resumable like the preference loader.
    again = build_unpaired_loader(config, tokenizer, state=loader.state_dict())
    for a, b in zip(next(again), next(loader)):
        np.testing.assert_array_equal(a, b)
