"""Shared tiny training configs for the training tests."""

import os
import tempfile

import jax
import pytest
from tiny_models import tiny_config

# Many tests compile the same tiny step (also in subprocesses): share compilations
# through JAX's persistent cache. It holds executables only, so results are unchanged.
_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jaxalign-test-jax-cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def make_config():
    return tiny_config
