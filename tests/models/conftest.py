"""Session fixtures for the model tests."""

from __future__ import annotations

import pytest
from hf_reference import FAMILIES, make_hf_model


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """name -> (directory, HF model) for every family, saved once per session."""
    out = {}
    for i, name in enumerate(FAMILIES):
        model = make_hf_model(name, seed=i)
        directory = tmp_path_factory.mktemp(name)
        model.save_pretrained(directory)
        out[name] = (directory, model)
    return out
