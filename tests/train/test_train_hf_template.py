"""configs/train/{dpo,ipo,robust_dpo}_hf.yaml: the templates for a local HF checkpoint + JSONL
data run as is once their paths point at real files (here: a tiny saved model, tokenizer and
dataset)."""

import jax
import numpy as np
import pytest
from flax import nnx
from tiny_models import tiny_hf_model_config

from jaxalign.data import make_tiny_preference_dataset
from jaxalign.experiment import repo_root
from jaxalign.models import CausalLM, build_tiny_tokenizer, save_pretrained
from jaxalign.train import load_train_config, train


@pytest.mark.parametrize("template", ["dpo_hf.yaml", "ipo_hf.yaml", "robust_dpo_hf.yaml"])
def test_hf_template_trains_a_saved_checkpoint_on_jsonl_data(tmp_path, template):
    config = tiny_hf_model_config()
    save_pretrained(CausalLM(config, rngs=nnx.Rngs(params=jax.random.key(0))), tmp_path / "hf")
    build_tiny_tokenizer(tmp_path / "hf")
    make_tiny_preference_dataset(tmp_path / "prefs.jsonl", num_rows=64, seed=0)
    cfg = load_train_config(
        repo_root() / "configs" / "train" / template,
        [
            f"init.pretrained={tmp_path / 'hf'}",
            f"init.tokenizer={tmp_path / 'hf'}",
            f"data.path={tmp_path / 'prefs.jsonl'}",
            "data.batch_size=8",
            "data.max_length=32",
            "data.max_prompt_length=16",
            "optimizer.grad_accum_steps=2",
            "optimizer.lr=1e-3",
            "schedule.warmup_steps=0",
            "run.steps=3",
            f"run.out_dir={tmp_path / 'run'}",
            "checkpoint.async_save=false",
            "logging.every_steps=1",
            "logging.progress_bar=false",
            "logging.peak_flops=1e9",
        ],
    )
    assert cfg.algorithm.name == template.removesuffix("_hf.yaml")
    result = train(cfg, quiet=True)
    assert result.status == "completed" and result.step == 3
    losses = [h["loss"] for h in result.history]
    # π = π_ref at the first step (h = 0): log 2 for the logistic losses, (1/(2τ))² for IPO.
    first = (1 / (2 * cfg.algorithm.tau)) ** 2 if cfg.algorithm.name == "ipo" else np.log(2.0)
    np.testing.assert_allclose(losses[0], first, rtol=1e-5)
    assert all(np.isfinite(losses))
    assert (tmp_path / "run" / "config.yaml").exists()
