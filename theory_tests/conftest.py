"""Property-test setup.

The theorems are checked in float64 (identities hold to ~1e-12 there), with strict
rank and dtype promotion so a silent broadcast or up-cast cannot hide a bug.
"""

import jax
import pytest


@pytest.fixture(autouse=True)
def _float64_and_strict_promotion():
    with (
        jax.enable_x64(True),
        jax.numpy_rank_promotion("raise"),
        jax.numpy_dtype_promotion("strict"),
    ):
        yield
