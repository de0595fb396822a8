"""Starting from a local HF checkpoint instead of a random init."""

import jax
import numpy as np
from flax import nnx

from jaxalign.models import CausalLM, build_tiny_tokenizer, save_pretrained
from jaxalign.train import train


def test_training_starts_from_pretrained_weights(tmp_path, make_config):
    base = make_config(tmp_path / "unused")
    model = CausalLM(base.model, rngs=nnx.Rngs(params=jax.random.key(7)))
    save_pretrained(model, tmp_path / "hf")
    build_tiny_tokenizer(tmp_path / "tok")
    cfg = make_config(
        tmp_path / "run",
        "run.steps=1",
        "checkpoint.enabled=false",
        f"init.pretrained={tmp_path / 'hf'}",
        f"init.tokenizer={tmp_path / 'tok'}",
    )
    result = train(cfg, quiet=True)
    assert abs(result.history[0]["loss"] - np.log(2.0)) < 1e-6  # π = π_ref at step 1
    got = np.asarray(result.state.params["lm_head"]["kernel"])
    start = np.asarray(model.lm_head.kernel[...])
    # One AdamW step moves each weight by at most ~lr (warmup: lr/2 at step 1).
    assert np.abs(got - start).max() < 3e-3
    assert np.abs(got - start).max() > 0
