"""configs/train/<online algorithm>_hf.yaml: the online templates for a local HF checkpoint,
local prompts and a local judge run as is once their paths point at real files (here: a tiny
saved policy and tokenizer, the tiny preference file as prompts, tiny saved judges)."""

import json

import jax
import numpy as np
import pytest
from flax import nnx
from tiny_models import tiny_hf_model_config

from jaxalign.data import make_tiny_preference_dataset
from jaxalign.experiment import repo_root
from jaxalign.models import (
    CausalLM,
    PreferenceModel,
    RewardModel,
    build_tiny_tokenizer,
    from_pretrained,
    save_pretrained,
)
from jaxalign.train import NASH_ALGORITHMS, load_train_config, train

CONFIG = tiny_hf_model_config()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("online_hf")
    save_pretrained(CausalLM(CONFIG, rngs=nnx.Rngs(params=jax.random.key(0))), root / "policy")
    build_tiny_tokenizer(root / "policy")
    save_pretrained(RewardModel(CONFIG, rngs=nnx.Rngs(params=jax.random.key(1))), root / "rm")
    save_pretrained(
        PreferenceModel(CONFIG, rngs=nnx.Rngs(params=jax.random.key(2)), rank=2), root / "pm"
    )
    make_tiny_preference_dataset(root / "prompts.jsonl", num_rows=32, seed=0)
    return root


def _overrides(files, out, *extra):
    return [
        f"init.pretrained={files / 'policy'}",
        f"init.tokenizer={files / 'policy'}",
        f"prompts.path={files / 'prompts.jsonl'}",
        f"oracle.path={files / 'rm'}",
        "prompts.max_prompt_length=16",
        "online.batch_size=8",
        "online.inner_steps=2",
        "online.max_new_tokens=6",
        "online.learning_rate=1e-3",
        "logging.eval_every=1",
        "logging.eval_prompts=8",
        "run.steps=2",
        f"run.out_dir={out}",
        *extra,
    ]


@pytest.mark.parametrize("algorithm", NASH_ALGORITHMS)
def test_online_hf_template_trains_a_saved_checkpoint(files, tmp_path, algorithm):
    path = repo_root() / "configs" / "train" / f"{algorithm}_hf.yaml"
    cfg = load_train_config(path, _overrides(files, tmp_path / "run"))
    assert cfg.algorithm.name == algorithm and not cfg.testbed_mode
    summary = train(cfg, quiet=True).summary
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert np.isfinite(r["loss"]) and 0 <= r["label_mean"] <= 1
        assert 0 <= r["win_rate_vs_reference"] <= 1 and r["kl_k3"] >= -1e-6
        assert 1 <= r["response_length"] <= 6
    # π_1 = π_0 = π_ref on the first iteration's samples: the KL estimates are 0 there.
    assert abs(rows[0]["kl_k1"]) < 1e-4 and abs(rows[0]["kl_k3"]) < 1e-4
    # The policy moved, and the saved model is it.
    assert rows[1]["kl_k3"] > 0
    saved = from_pretrained(tmp_path / "run" / "model")
    before = from_pretrained(files / "policy")
    delta = jax.tree.map(
        lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
        nnx.state(saved, nnx.Param),
        nnx.state(before, nnx.Param),
    )
    assert max(jax.tree.leaves(delta)) > 0
    assert summary["mode"] == "prompts" and summary["num_prompts"] == 32


def test_mixture_of_annotators_and_preference_model_judges(files, tmp_path):
    path = repo_root() / "configs" / "train" / "inpo_hf.yaml"
    cfg = load_train_config(
        path,
        _overrides(
            files,
            tmp_path / "run",
            "oracle.kind=mixture",
            "oracle.kinds=[reward_model, preference_model]",
            f"oracle.paths=[{files / 'rm'}, {files / 'pm'}]",
            "oracle.weights=[0.3, 0.7]",
            "oracle.sample=true",
            "run.save_model=false",
        ),
    )
    summary = train(cfg, quiet=True).summary
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # Hard labels from the drawn annotator: every label is 0 or 1, so the batch mean of 8
    # labels is a multiple of 1/8.
    for r in rows:
        assert float(r["label_mean"] * 8).is_integer()
    assert "model_dir" not in summary


def test_kl_pg_hf_template_trains_against_a_saved_reward_model(files, tmp_path):
    path = repo_root() / "configs" / "train" / "kl_pg_hf.yaml"
    overrides = [
        o for o in _overrides(files, tmp_path / "run") if not o.startswith("logging.")
    ]  # fmt: skip
    cfg = load_train_config(path, [*overrides, "online.batch_size=4"])
    assert cfg.algorithm.name == "kl_pg" and not cfg.testbed_mode
    summary = train(cfg, quiet=True).summary
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    # Iteration 1 samples from π_0 = π_ref: the k2 KL estimate is exactly 0 there.
    assert abs(rows[0]["kl_estimate"]) < 1e-6 and rows[1]["kl_estimate"] > 0
    for r in rows:
        assert np.isfinite(r["reward_mean"]) and r["reward_std"] > 0 and r["grad_norm"] > 0
        assert 1 <= r["response_length"] <= 6
    assert summary["final_reward_mean"] == rows[-1]["reward_mean"]
    saved, before = from_pretrained(tmp_path / "run" / "model"), from_pretrained(files / "policy")
    moved = jax.tree.map(
        lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
        nnx.state(saved, nnx.Param),
        nnx.state(before, nnx.Param),
    )
    assert max(jax.tree.leaves(moved)) > 0
