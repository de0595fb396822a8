"""SFT (``algorithm.name: sft``): completion-only loss on prompt/completion and chat rows, packed
batches equal to the unpadded per-example loss, the tiny config through the engine (the loss
falls, held-out eval_loss, HF export, packed run = padded run, resume = uninterrupted run), rows
read with ``file:line`` errors, config mistakes naming the key."""

import dataclasses
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
    PackedSFTBatch,
    SFTBatch,
    TokenizedSFTExample,
    build_sft_loader,
    collate_sft_batch,
    load_sft_dataset,
    make_tiny_sft_dataset,
    pack_sft_examples,
)
from jaxalign.experiment import repo_root
from jaxalign.models import CausalLM, ModelConfig, build_tiny_tokenizer, from_pretrained
from jaxalign.train import load_train_config, read_jsonl, train
from jaxalign.train.state import TrainState
from jaxalign.train.tasks.sft import sft_nll_sum, sft_train_step

CONFIGS = repo_root() / "configs" / "train"
V = 40


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import PreTrainedTokenizerFast

    directory = build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)


@pytest.fixture(scope="module")
def model():
    cfg = ModelConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_layers=1,
                      num_heads=2, num_kv_heads=1, head_dim=8, initializer_range=0.3)  # fmt: skip
    return nnx.split(CausalLM.create(cfg, key=jax.random.key(0)))


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _config(path, **changes):
    fields = dict(batch_size=2, max_length=48, max_prompt_length=24, shuffle=False)
    return DataConfig(path=str(path), **{**fields, **changes})


# --------------------------------------------------------------------------------------------
# Data: which tokens are targets.


def test_prompt_completion_rows_train_the_completion_and_eos_only(tmp_path, tokenizer):
    path = _write(tmp_path / "s.jsonl", [{"prompt": "sort: owl cat", "completion": " cat owl"}])
    (example,) = load_sft_dataset(_config(path), tokenizer).examples
    prompt = tokenizer("sort: owl cat")["input_ids"]
    completion = tokenizer(" cat owl", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    np.testing.assert_array_equal(example.input_ids, [*prompt, *completion, eos])
    np.testing.assert_array_equal(
        example.targets, [False] * len(prompt) + [True] * (len(completion) + 1)
    )


def test_chat_rows_train_every_assistant_turn_and_nothing_else(tmp_path, tokenizer):
    chat = {"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "sort: owl cat"},
        {"role": "assistant", "content": "cat owl"},
        {"role": "user", "content": "reverse it"},
        {"role": "assistant", "content": "owl cat"},
    ]}  # fmt: skip
    path = _write(tmp_path / "c.jsonl", [chat])
    (example,) = load_sft_dataset(_config(path, max_length=64), tokenizer).examples
    # The whole sequence is the chat template's rendering of the conversation …
    full = tokenizer.apply_chat_template(chat["messages"], tokenize=False)
    assert tokenizer.decode(example.input_ids) == full
    # … and the trained tokens are the assistant contents with their end-of-turn token.
    ids, t = example.input_ids, example.targets
    runs, start = [], None
    for i in range(len(t) + 1):
        on = i < len(t) and t[i]
        if on and start is None:
            start = i
        if not on and start is not None:
            runs.append(tokenizer.decode(ids[start:i]))
            start = None
    assert runs == ["cat owl<|endoftext|>", "owl cat<|endoftext|>"]
    # A conversational prompt/completion row trains its completion only.
    pc = {"prompt": [{"role": "user", "content": "sort: owl cat"}],
          "completion": [{"role": "assistant", "content": "cat owl"}]}  # fmt: skip
    path = _write(tmp_path / "pc.jsonl", [pc])
    (example,) = load_sft_dataset(_config(path), tokenizer).examples
    assert tokenizer.decode(example.input_ids[example.targets]) == "cat owl<|endoftext|>"
    assert tokenizer.decode(example.input_ids[~example.targets]).endswith("<|assistant|>")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"prompt": "p"}, r"s\.jsonl:2: missing key 'completion' \(rows are prompt/completion"),
        ({"completion": " c"}, r"s\.jsonl:2: missing key 'prompt'"),
        ({"prompt": "p", "completion": ""}, r"s\.jsonl:2: 'completion' is empty"),
        ({"messages": [{"role": "user", "content": "hi"}]},
         r"s\.jsonl:2: 'messages' has no assistant message to train on"),
        ({"messages": [{"role": "user"}]}, r"s\.jsonl:2: messages\[0\] is missing 'content'"),
        ({"messages": "hi"}, r"s\.jsonl:2: 'messages' must be a non-empty list"),
        ({"prompt": "p", "completion": 3}, r"s\.jsonl:2: 'completion' must be a string or a list"),
        ('{"prompt": "p", ', r"s\.jsonl:2: invalid JSON"),
    ],
)  # fmt: skip
def test_malformed_sft_rows_name_file_and_line(tmp_path, tokenizer, bad, message):
    good = {"prompt": "sort: cat owl", "completion": " cat owl"}
    path = _write(tmp_path / "s.jsonl", [good, bad])
    config = _config(path, max_length=24, max_prompt_length=23)
    with pytest.raises(MalformedRowError, match=message):
        load_sft_dataset(config, tokenizer)
    skipped = load_sft_dataset(dataclasses.replace(config, skip_malformed=True), tokenizer)
    assert len(skipped) == 1 and skipped.num_skipped == 1


def test_sft_rows_read_from_parquet(tmp_path, tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "sort: cat owl", "completion": " cat owl"},
            {"prompt": "sort: jam egg", "completion": " egg jam"}]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "s.parquet")
    dataset = load_sft_dataset(_config(tmp_path / "s.parquet"), tokenizer)
    assert len(dataset) == 2 and dataset.stats["num_target_tokens"] > 0


# --------------------------------------------------------------------------------------------
# The loss: completion tokens only, and packing changes nothing.


def _examples(seed=0, n=6):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p, c = int(rng.integers(2, 7)), int(rng.integers(1, 6))
        ids = rng.integers(0, V, p + c).astype(np.int32)
        out.append(TokenizedSFTExample(ids, np.arange(p + c) >= p, False, False))
    return out


def _example_nll(graphdef, params, ids, targets):
    """Σ completion-token NLL of one unpadded sequence, written out with log_softmax."""
    logits = nnx.merge(graphdef, params)(ids[None])[0]
    logp = jax.nn.log_softmax(logits[:-1].astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, ids[1:, None], axis=-1)[:, 0]
    return -jnp.sum(picked * targets[1:].astype(jnp.float32))


_example_nll_jit = jax.jit(_example_nll, static_argnums=0)


def _reference_nll(graphdef, params, example):
    """(Σ completion-token NLL, count) of one example alone, unpadded."""
    ids, targets = jnp.asarray(example.input_ids), jnp.asarray(example.targets)
    return float(_example_nll_jit(graphdef, params, ids, targets)), float(example.targets[1:].sum())


_nll_sum_jit = jax.jit(sft_nll_sum, static_argnames="graphdef")


def test_sft_loss_is_the_completion_token_nll_padded_and_packed(model):
    graphdef, params = model
    examples = _examples()
    ref = [_reference_nll(graphdef, params, e) for e in examples]
    nll, count = sum(r[0] for r in ref), sum(r[1] for r in ref)
    padded = collate_sft_batch(examples, 16, pad_id=0)
    assert padded.loss_mask.sum() == count  # prompt tokens are not targets
    packed = pack_sft_examples(examples, 24, pad_id=0)
    assert packed.input_ids.shape[0] < len(examples)  # several sequences share a row
    for batch in (padded, packed):
        ours = float(_nll_sum_jit(params, jax.tree.map(jnp.asarray, batch), graphdef=graphdef))
        np.testing.assert_allclose(ours, nll, rtol=1e-5)
    # Per example: each packed segment scores exactly its unpadded sequence.
    for j, e in enumerate(examples):
        alone = collate_sft_batch([e], len(e.input_ids), pad_id=0)
        np.testing.assert_allclose(
            float(_nll_sum_jit(params, jax.tree.map(jnp.asarray, alone), graphdef=graphdef)),
            ref[j][0], rtol=1e-5,
        )  # fmt: skip


def test_packing_resets_attention_and_positions_per_sequence():
    a, b = _examples(1, 2)
    packed = pack_sft_examples([a, b], 32, pad_id=0)
    assert packed.input_ids.shape == (1, 32)
    n, m = len(a.input_ids), len(b.input_ids)
    order = [a, b] if n >= m else [b, a]  # first-fit decreasing: the longer one first
    first, second = (len(x.input_ids) for x in order)
    np.testing.assert_array_equal(packed.segment_ids[0, : first + second],
                                  [1] * first + [2] * second)  # fmt: skip
    np.testing.assert_array_equal(packed.positions[0, first : first + second], np.arange(second))
    assert packed.loss_mask[0, first] == 0  # a segment's first token is never a target
    assert packed.segment_ids[0, first + second :].sum() == 0


def test_sft_step_with_accumulation_follows_the_completion_only_gradient(model):
    graphdef, params = model
    examples = _examples(2, 4)
    batch = jax.tree.map(jnp.asarray, collate_sft_batch(examples, 16, pad_id=0))
    tx = optax.sgd(0.5)
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jnp.zeros(2, jnp.uint32))
    lr = optax.constant_schedule(0.5)
    run = functools.partial(
        sft_train_step, graphdef=graphdef, tx=tx, lr_schedule=lr, grad_accum_steps=2
    )
    new, metrics = jax.jit(run)(state, batch)

    # The reference: full logits, log_softmax, completion positions only, mean over them.
    prompt_free = np.stack([np.pad(e.targets, (0, 16 - len(e.targets))) for e in examples])
    targets = jnp.asarray(prompt_free[:, 1:], jnp.float32)

    def ref_loss(p):
        logits = nnx.merge(graphdef, p)(batch.input_ids, attention_mask=batch.attention_mask)
        logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
        picked = jnp.take_along_axis(logp, batch.input_ids[:, 1:, None], axis=-1)[..., 0]
        return -jnp.sum(picked * targets) / jnp.sum(targets)

    value, grads = jax.jit(jax.value_and_grad(ref_loss))(params)
    np.testing.assert_allclose(float(metrics["loss"]), float(value), rtol=1e-5)
    assert float(metrics["target_tokens"]) == prompt_free[:, 1:].sum()
    expected = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
    for x, y in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------
# The tiny config through the engine.

STEPS = 8
SFT_TRAIN = [*TINY_TRAIN, "data.max_length=48", "data.max_prompt_length=24",
             "tiny_data.eval_rows=32", "logging.eval_every=4", "optimizer.lr=1e-2"]  # fmt: skip


def _run(out, *extra):
    cfg = load_train_config(
        CONFIGS / "sft_tiny.yaml",
        [*SFT_TRAIN, f"run.out_dir={out}", f"run.steps={STEPS}", "checkpoint.every_steps=4",
         *extra],
    )  # fmt: skip
    return train(cfg, quiet=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("sft"))


def test_sft_tiny_config_trains_through_the_engine(tiny_run):
    result = tiny_run
    assert result.status == "completed" and result.step == STEPS
    assert result.summary["algorithm"] == "sft" and result.task.name == "sft"
    losses = np.array([r["loss"] for r in result.history])
    assert np.all(np.isfinite(losses)) and losses[-3:].mean() < losses[0] - 0.5
    # A random tiny model starts near log V (uniform next-token distributions).
    assert abs(losses[0] - np.log(384)) < 1.0
    evals = {r["step"]: r["eval_loss"] for r in result.history if "eval_loss" in r}
    assert sorted(evals) == [4, 8] and evals[8] < losses[0]
    out = result.out_dir
    assert (out / "checkpoints" / str(STEPS)).is_dir()
    # The final policy is an HF checkpoint (with its tokenizer) that loads back.
    saved = from_pretrained(out / "model")
    assert saved.config.vocab_size == 384 and (out / "model" / "tokenizer.json").exists()


def test_packed_sft_run_gives_the_padded_run(tiny_run, tmp_path):
    off = ("checkpoint.enabled=false", "run.save_model=false", "run.steps=2")
    packed = _run(tmp_path / "packed", "data.packing=true", "data.packing_length=96", *off)
    padded = [r["loss"] for r in tiny_run.history[:2]]
    np.testing.assert_allclose([r["loss"] for r in packed.history], padded, rtol=2e-5)
    # Fewer positions computed than the padded layout.
    assert packed.history[0]["computed_tokens"] < tiny_run.history[0]["computed_tokens"]


def test_sft_resumed_run_repeats_the_uninterrupted_run(tiny_run, tmp_path):
    out = tmp_path / "resumed"
    _run(out, "run.steps=4")  # stops after the checkpoint of step 4
    resumed = _run(out, "run.resume=true")
    assert resumed.resumed_from == 4 and resumed.step == STEPS
    losses = [r["loss"] for r in read_jsonl(out / "metrics.jsonl")]
    assert losses == [r["loss"] for r in tiny_run.history]
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(tiny_run.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sft_loader_resumes_and_makes_tiny_chat_rows(tmp_path, tokenizer):
    path = make_tiny_sft_dataset(tmp_path / "chat.jsonl", 8, seed=0, chat=True)
    row = json.loads(path.read_text().splitlines()[0])
    words = row["messages"][0]["content"].split()[1:]
    assert row["messages"][1] == {"role": "assistant", "content": " ".join(sorted(words))}
    config = _config(path, batch_size=4, shuffle=True)
    loader = build_sft_loader(config, tokenizer)
    assert isinstance(next(loader), SFTBatch)
    again = build_sft_loader(config, tokenizer, state=loader.state_dict())
    for a, b in zip(next(again), next(loader)):
        np.testing.assert_array_equal(a, b)
    packed = build_sft_loader(dataclasses.replace(config, packing=True), tokenizer)
    assert isinstance(next(packed), PackedSFTBatch)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("logging.kl_ref=true", r"logging\.kl_ref=true needs a reference model, which sft"),
        ("data.precompute_reference=true", r"data\.precompute_reference=True is invalid"),
        ("data.packing=true data.share_prompt=true", r"data\.share_prompt=True is invalid"),
        ("algorithm.beta=0.5", r"beta=0\.5 is not used by name='sft'"),
        ("testbed.enabled=true", r"testbed\.enabled=True is invalid; expected false: sft"),
        ("tiny_data.eval_rows=-1", r"eval_rows=-1 is invalid"),
        ("algorithm.name=sftt", r"did you mean 'sft'"),
    ],
)
def test_sft_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(CONFIGS / "sft_tiny.yaml", overrides.split())


def test_eval_path_is_refused_where_nothing_reads_it():
    with pytest.raises(ConfigError, match=r"data\.eval_path='e\.jsonl' is only read by"):
        load_train_config(CONFIGS / "dpo_tiny.yaml", ["data.eval_path=e.jsonl"])


def test_shipped_sft_configs_select_sft():
    for name in ("sft_tiny.yaml", "sft_hf.yaml"):
        cfg = load_train_config(CONFIGS / name)
        assert cfg.algorithm.name == "sft" and cfg.task_kind == "sft"
