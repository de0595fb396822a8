"""Hypothesis strategies for the theory tests: policies, rewards, budgets.

Instances are generated from a drawn seed with numpy (float64) so hypothesis explores
sizes, scales and tie structure while each example stays cheap to build.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st


def examples(n: int) -> int:
    """``n`` examples under the CI profile, scaled by the loaded hypothesis profile.

    Use as ``@settings(max_examples=examples(n))`` for a test slower than the default
    count allows: a fixed ``max_examples`` would override the profile, so the ``thorough``
    profile (``JAXALIGN_HYPOTHESIS_PROFILE=thorough``, 20× the CI count) could not enlarge
    the test.
    """
    base = settings.get_profile("jaxalign").max_examples
    return max(1, math.ceil(n * settings.default.max_examples / base))


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


@st.composite
def base_and_reward(draw, min_size: int = 2, max_size: int = 12, ties: bool | None = None):
    """(log_p [K], reward [K]) with near-degenerate p and, optionally, reward ties.

    * ``scale`` of the base logits up to 8 gives policies with masses down to ~1e-7.
    * Tied rewards are small integers; distinct rewards are continuous.
    """
    k = draw(st.integers(min_size, max_size))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 3.0, 8.0]))
    tied = draw(st.booleans()) if ties is None else ties
    rng = np.random.default_rng(seed)
    log_p = log_softmax(scale * rng.standard_normal(k))
    if tied:
        reward = rng.integers(0, max(2, k // 2), size=k).astype(np.float64)
    else:
        reward = rng.standard_normal(k) * draw(st.sampled_from([0.5, 1.0, 5.0]))
    return log_p, reward


@st.composite
def lattice_instance(draw, max_size: int = 5):
    """(log_p, reward on {0,..,L-1}) for the memoryless-model tests."""
    k = draw(st.integers(2, max_size))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    log_p = log_softmax(rng.standard_normal(k))
    reward = rng.permutation(np.arange(k)).astype(np.float64)
    return log_p, reward


def random_policies(rng: np.random.Generator, k: int, num: int) -> np.ndarray:
    """``[num, K]`` log-probabilities of Dirichlet policies of several concentrations."""
    alphas = rng.choice([0.1, 1.0, 10.0], size=num)
    p = np.stack([rng.dirichlet(np.full(k, a)) for a in alphas])
    p = np.maximum(p, 1e-300)
    return np.log(p / p.sum(axis=1, keepdims=True))
