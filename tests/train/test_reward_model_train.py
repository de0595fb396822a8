"""Reward-model training (``algorithm.name: reward_model``): the Bradley–Terry loss with margin
and centering in closed form, the step's gradient, the tiny config through the engine (loss
falls, held-out pairwise accuracy, resume = uninterrupted run), the exported
``*ForSequenceClassification`` checkpoint scored identically by transformers, and an online
config taking it as ``oracle.path``."""

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
from jaxalign.data import PreferenceBatch, load_preference_dataset
from jaxalign.experiment import repo_root
from jaxalign.models import ModelConfig, RewardModel, reward_model_from_pretrained
from jaxalign.train import load_train_config, read_jsonl, train
from jaxalign.train.engine import make_run_mesh
from jaxalign.train.oracles import Responses
from jaxalign.train.state import TrainState
from jaxalign.train.tasks.base import RunContext
from jaxalign.train.tasks.online_setup import build_oracle
from jaxalign.train.tasks.reward_model import bradley_terry_loss, reward_model_train_step

CONFIGS = repo_root() / "configs" / "train"
B, L, V = 6, 10, 40


def test_bradley_terry_loss_with_margin_and_centering_in_closed_form():
    rng = np.random.default_rng(0)
    r_w, r_l = (rng.normal(size=16).astype(np.float32) * 2 for _ in range(2))
    m, lam = 0.3, 0.05
    out = bradley_terry_loss(jnp.asarray(r_w), jnp.asarray(r_l), margin=m, center_weight=lam)
    nll = np.log1p(np.exp(-(r_w - r_l - m)))
    np.testing.assert_allclose(out.nll, nll, rtol=1e-5)
    np.testing.assert_allclose(out.loss, nll + lam * (r_w + r_l) ** 2, rtol=1e-5)
    # The centering gradient pulls both rewards towards 0: ∂ℓ/∂r_w = −σ(−(d − m)) + 2λ(r_w + r_l).
    grad = jax.grad(lambda a, b: bradley_terry_loss(a, b, margin=m, center_weight=lam).loss.sum())
    sig = 1 / (1 + np.exp(r_w - r_l - m))
    np.testing.assert_allclose(grad(jnp.asarray(r_w), jnp.asarray(r_l)),
                               -sig + 2 * lam * (r_w + r_l), rtol=1e-4, atol=1e-6)  # fmt: skip
    # Plain BT at r_w = r_l: log 2.
    zero = bradley_terry_loss(jnp.zeros(3), jnp.zeros(3)).loss
    np.testing.assert_allclose(zero, np.log(2.0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"margin must be >= 0, got -1\.0"):
        bradley_terry_loss(jnp.zeros(1), jnp.zeros(1), margin=-1.0)


def test_reward_model_step_follows_the_bradley_terry_gradient():
    cfg = ModelConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_layers=1,
                      num_heads=2, num_kv_heads=1, head_dim=8, initializer_range=0.3)  # fmt: skip
    graphdef, params = nnx.split(RewardModel(cfg, rngs=nnx.Rngs(params=jax.random.key(0))))
    rng = np.random.default_rng(1)

    def side(lengths):
        ids = rng.integers(2, V, (B, L)).astype(np.int32)
        attn = (np.arange(L)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
        return ids, attn, attn.astype(np.float32)

    chosen, rejected = side([10, 8, 6, 9, 10, 7]), side([7, 10, 10, 6, 8, 9])
    example = np.asarray([1, 1, 1, 1, 1, 0], np.float32)  # a filler row that must not count
    batch = PreferenceBatch(*(jnp.asarray(x) for x in (*chosen, *rejected, example)))
    m, lam, lr = 0.2, 0.1, 0.5
    tx = optax.sgd(lr)
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jnp.zeros(2, jnp.uint32))
    run = functools.partial(reward_model_train_step, graphdef=graphdef, tx=tx,
                            lr_schedule=optax.constant_schedule(lr), margin=m,
                            center_weight=lam, grad_accum_steps=2)  # fmt: skip
    new, metrics = jax.jit(run)(state, batch)

    def ref_loss(p):  # each side on its own, the hand-written formula, mean over real pairs
        model = nnx.merge(graphdef, p)
        r_w = model(batch.chosen_input_ids, attention_mask=batch.chosen_attention_mask)[:, 0]
        r_l = model(batch.rejected_input_ids, attention_mask=batch.rejected_attention_mask)[:, 0]
        per = jax.nn.softplus(r_l - r_w + m) + lam * (r_w + r_l) ** 2
        return jnp.sum(per * batch.example_mask) / 5, (r_w, r_l)

    (value, (r_w, r_l)), grads = jax.jit(jax.value_and_grad(ref_loss, has_aux=True))(params)
    np.testing.assert_allclose(float(metrics["loss"]), float(value), rtol=1e-5)
    real = np.asarray(example, bool)
    r_w, r_l = np.asarray(r_w)[real], np.asarray(r_l)[real]
    np.testing.assert_allclose(float(metrics["accuracy"]), np.mean(r_w > r_l))
    np.testing.assert_allclose(float(metrics["margin"]), np.mean(r_w - r_l), rtol=1e-4, atol=1e-6)
    expected = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    for x, y in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------
# The tiny config through the engine, the HF export and the online oracle.

STEPS = 8
RM_TRAIN = [*TINY_TRAIN, "data.max_length=48", "data.max_prompt_length=24",
            "tiny_data.eval_rows=32", "logging.eval_every=4", "optimizer.lr=1e-2"]  # fmt: skip


def _run(out, *extra):
    cfg = load_train_config(
        CONFIGS / "reward_model_tiny.yaml",
        [*RM_TRAIN, f"run.out_dir={out}", f"run.steps={STEPS}", "checkpoint.every_steps=4",
         *extra],
    )  # fmt: skip
    return train(cfg, quiet=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("rm"))


def test_reward_model_tiny_config_trains_and_logs_heldout_accuracy(tiny_run):
    result = tiny_run
    assert result.status == "completed" and result.summary["algorithm"] == "reward_model"
    losses = np.array([r["loss"] for r in result.history])
    assert np.all(np.isfinite(losses)) and losses[-3:].mean() < losses[0]
    evals = {r["step"]: r["eval_accuracy"] for r in result.history if "eval_accuracy" in r}
    assert sorted(evals) == [4, 8] and all(0 <= a <= 1 for a in evals.values())
    assert evals[8] > 0.6  # the sorted order is learnable: above chance on held-out pairs
    assert result.summary["last_eval_accuracy"] == evals[8]
    config = json.loads((result.out_dir / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["num_labels"] == 1 and config["pad_token_id"] == 0


def _heldout(out_dir, tokenizer_dir):
    """The held-out pairs as right-padded (tokens, mask) of both sides (pad id 0)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    cfg = load_train_config(CONFIGS / "reward_model_tiny.yaml", RM_TRAIN).data
    import dataclasses

    data = dataclasses.replace(cfg, path=str(out_dir / "data" / "tiny-eval-p0.jsonl"))
    pairs = load_preference_dataset(data, tokenizer).examples[:8]
    seqs = [np.concatenate([p.prompt, s]) for p in pairs for s in (p.chosen, p.rejected)]
    width = max(len(s) for s in seqs)
    tokens = np.zeros((len(seqs), width), np.int64)
    mask = np.zeros((len(seqs), width), np.int64)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)], mask[i, : len(s)] = s, 1
    return tokens, mask


def _hf_scores(directory, tokens, mask):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        out = hf(input_ids=torch.as_tensor(tokens), attention_mask=torch.as_tensor(mask))
    return out.logits.numpy()[:, 0]


def _our_scores(directory, tokens, mask):
    model = reward_model_from_pretrained(directory)
    score = nnx.jit(lambda m, t, a: m(t, attention_mask=a)[:, 0])
    return np.asarray(score(model, jnp.asarray(tokens, jnp.int32), jnp.asarray(mask, jnp.int32)))


def test_exported_reward_model_is_scored_identically_by_transformers(tiny_run):
    out = tiny_run.out_dir
    tokens, mask = _heldout(out, out / "model")
    ours = _our_scores(out / "model", tokens, mask)
    # The trained state itself gives the same scores as its export.
    model = nnx.merge(tiny_run.task.rm.graphdef, jax.device_get(tiny_run.state.params))
    trained = np.asarray(model(jnp.asarray(tokens, jnp.int32), attention_mask=jnp.asarray(mask)))
    np.testing.assert_allclose(trained[:, 0], ours, atol=1e-5)
    np.testing.assert_allclose(_hf_scores(out / "model", tokens, mask), ours, atol=1e-4)
    assert np.ptp(ours) > 1e-3  # distinct rewards, so the comparison can fail


def test_a_qwen2_reward_model_exports_as_qwen2_for_sequence_classification(tmp_path):
    result = _run(tmp_path / "q", "model.model_type=qwen2", "model.qkv_bias=true", "run.steps=2",
                  "checkpoint.enabled=false", "tiny_data.eval_rows=0")  # fmt: skip
    directory = result.out_dir / "model"
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"]
    tokens, mask = _pairs(directory)
    np.testing.assert_allclose(
        _hf_scores(directory, tokens, mask), _our_scores(directory, tokens, mask), atol=1e-4
    )


def _pairs(directory):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    texts = ["sort: owl cat egg cat egg owl", "sort: jam ink", "hello there, how are you today?"]
    ids = [tokenizer(t)["input_ids"] for t in texts]
    width = max(map(len, ids))
    tokens = np.zeros((len(ids), width), np.int64)
    mask = np.zeros_like(tokens)
    for i, s in enumerate(ids):
        tokens[i, : len(s)], mask[i, : len(s)] = s, 1
    return tokens, mask


def test_online_config_takes_the_trained_reward_model_as_its_oracle(tiny_run, tmp_path):
    model_dir = tiny_run.out_dir / "model"
    cfg = load_train_config(
        CONFIGS / "inpo_hf.yaml",
        [f"init.pretrained={model_dir}", f"init.tokenizer={model_dir}",
         f"prompts.path={tiny_run.out_dir / 'data' / 'tiny-p0.jsonl'}",
         f"oracle.path={model_dir}", f"run.out_dir={tmp_path}", "mesh.fsdp=1"],
    )  # fmt: skip
    assert cfg.oracle.kind == "reward_model" and cfg.oracle.path == str(model_dir)
    mesh = make_run_mesh(cfg)
    from jaxalign.parallel import DEFAULT_RULES

    ctx = RunContext(cfg, tmp_path, mesh, DEFAULT_RULES, lambda *a: None, True)
    oracle = build_oracle(ctx)
    tokens, mask = _heldout(tiny_run.out_dir, model_dir)
    side = lambda k: Responses(jnp.asarray(tokens[k::2], jnp.int32),
                               *(jnp.asarray(mask[k::2], jnp.int32),) * 2, 0)  # fmt: skip
    a, b = side(0), side(1)
    with jax.set_mesh(mesh):
        prob = np.asarray(oracle(jax.random.key(0), a, b))
    hf = _hf_scores(model_dir, tokens, mask)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-(hf[0::2] - hf[1::2]))), atol=1e-4)


def test_reward_model_resumed_run_repeats_the_uninterrupted_run(tiny_run, tmp_path):
    out = tmp_path / "resumed"
    _run(out, "run.steps=4", "run.save_model=false")
    resumed = _run(out, "run.resume=true")
    assert resumed.resumed_from == 4 and resumed.step == STEPS
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["loss"] for r in records] == [r["loss"] for r in tiny_run.history]
    assert records[-1]["eval_accuracy"] == tiny_run.history[-1]["eval_accuracy"]
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(tiny_run.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("algorithm.margin=-0.5", r"algorithm: margin=-0\.5 is invalid; expected >= 0"),
        ("algorithm.center_weight=-1", r"algorithm: center_weight=-1\.0 is invalid"),
        ("algorithm.beta=0.5", r"beta=0\.5 is not used by name='reward_model'"),
        ("algorithm.name=dpo algorithm.center_weight=0.01",
         r"center_weight=0\.01 is not used by name='dpo' \(only by reward_model\)"),
        ("data.packing=true", r"data\.packing=True is invalid; expected false for reward_model"),
        ("logging.kl_ref=true", r"needs a reference model, which reward_model never builds"),
        ("algorithm.centre_weight=1", r"did you mean 'center_weight'"),
    ],
)  # fmt: skip
def test_reward_model_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(CONFIGS / "reward_model_tiny.yaml", overrides.split())


def test_shipped_reward_model_configs_select_reward_model():
    for name in ("reward_model_tiny.yaml", "reward_model_hf.yaml"):
        cfg = load_train_config(CONFIGS / name)
        assert cfg.algorithm.name == "reward_model" and cfg.task_kind == "reward_model"
