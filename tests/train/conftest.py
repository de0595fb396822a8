"""Shared tiny training configs for the training tests."""

import os
import tempfile

import jax
import pytest

from jaxalign.train import load_train_config

# Many tests compile the same tiny step (also in subprocesses): share compilations
# through JAX's persistent cache. It holds executables only, so results are unchanged.
_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jaxalign-test-jax-cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# A tiny model and batch so a compile + a few steps take seconds on CPU.
TINY = [
    "model.vocab_size=384",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.num_kv_heads=2",
    "model.head_dim=16",
    "data.batch_size=8",
    "data.max_length=24",
    "data.max_prompt_length=16",
    "tiny_data.num_rows=64",
    "optimizer.lr=3e-3",
    "schedule.warmup_steps=2",
    "schedule.decay_steps=20",  # independent of run.steps: one compiled step for all tests
    "logging.progress_bar=false",
    "logging.peak_flops=1e9",
    "checkpoint.async_save=false",
    "mesh.data=1",
    "mesh.fsdp=1",
    "mesh.tensor=1",
]


def tiny_overrides(out_dir, *extra: str) -> list[str]:
    return [*TINY, f"run.out_dir={out_dir}", *extra]


def tiny_config(out_dir, *extra: str):
    return load_train_config(None, tiny_overrides(out_dir, *extra))


@pytest.fixture
def make_config():
    return tiny_config
