"""configs/train/dpo_hf.yaml: the template for a local HF checkpoint + JSONL data runs as is
once its paths point at real files (here: a tiny saved model, tokenizer and dataset)."""

import jax
import numpy as np
from flax import nnx

from jaxalign.data import make_tiny_preference_dataset
from jaxalign.experiment import repo_root
from jaxalign.models import CausalLM, ModelConfig, build_tiny_tokenizer, save_pretrained
from jaxalign.train import load_train_config, train


def test_hf_template_trains_a_saved_checkpoint_on_jsonl_data(tmp_path):
    config = ModelConfig(
        vocab_size=384,
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        num_heads=2,
        num_kv_heads=2,
        head_dim=16,
    )
    save_pretrained(CausalLM(config, rngs=nnx.Rngs(params=jax.random.key(0))), tmp_path / "hf")
    build_tiny_tokenizer(tmp_path / "hf")
    make_tiny_preference_dataset(tmp_path / "prefs.jsonl", num_rows=64, seed=0)
    cfg = load_train_config(
        repo_root() / "configs" / "train" / "dpo_hf.yaml",
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
    result = train(cfg, quiet=True)
    assert result.status == "completed" and result.step == 3
    losses = [h["loss"] for h in result.history]
    assert abs(losses[0] - np.log(2.0)) < 1e-5  # π = π_ref at the first step
    assert all(np.isfinite(losses))
    assert (tmp_path / "run" / "config.yaml").exists()
