"""``online.fixed_pairs``: the offline losses on the testbed refit one fixed data set (pairs
from π_ref, labelled once) every iteration instead of drawing fresh pairs."""

from pathlib import Path

import numpy as np
import pytest
from tiny_models import task_config

from jaxalign.train import load_train_config, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


def _dpo(out, *extra):
    return load_train_config(
        CONFIGS / "dpo_testbed.yaml",
        [f"run.out_dir={out}", "run.steps=3", "online.batch_size=32", "online.inner_steps=5",
         "checkpoint.enabled=false", "logging.progress_bar=false", "run.save_model=false",
         "mesh.fsdp=1", *extra],
    )  # fmt: skip


def test_fixed_pairs_reuse_one_labelled_data_set_and_fresh_pairs_do_not(tmp_path):
    fixed = train(_dpo(tmp_path / "fixed", "online.fixed_pairs=true"), quiet=True).history
    fresh = train(_dpo(tmp_path / "fresh"), quiet=True).history
    # The same pairs from the frozen π_ref with the same labels every iteration: identical
    # label means and k1/k3 estimates are over the same responses under a moving policy.
    labels = [r["label_mean"] for r in fixed]
    assert labels[0] == labels[1] == labels[2]
    assert len({r["label_mean"] for r in fresh}) > 1
    # Refitting the same data keeps lowering its loss; fresh data need not.
    losses = [r["loss"] for r in fixed]
    assert losses[2] < losses[1] < losses[0]
    # A different run.seed is a different data set.
    other = train(_dpo(tmp_path / "other", "online.fixed_pairs=true", "run.seed=7"), quiet=True)
    assert not np.isclose(other.history[0]["label_mean"], labels[0])


def test_fixed_pairs_is_refused_for_the_online_algorithms(tmp_path):
    with pytest.raises(ValueError, match=r"online\.fixed_pairs=true fixes the data set"):
        task_config("nash", tmp_path / "run", "online.fixed_pairs=true")
