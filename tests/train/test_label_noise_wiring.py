"""``oracle.flip_rate`` and ``algorithm.label_smoothing`` reach the testbed runs: the labels a
run draws flip at the configured rate, cDPO's fit is DPO's on the smoothed label, and a task
that draws no pairwise labels refuses a flip rate."""

from pathlib import Path

import numpy as np
import pytest

from jaxalign.train import load_train_config, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"
_SMALL = ["run.steps=2", "online.batch_size=64", "online.inner_steps=3",
          "checkpoint.enabled=false", "logging.progress_bar=false", "run.save_model=false",
          "mesh.fsdp=1"]  # fmt: skip


def _run(out, *extra):
    cfg = load_train_config(CONFIGS / "dpo_testbed.yaml", [f"run.out_dir={out}", *_SMALL, *extra])
    return train(cfg, quiet=True)


def test_flip_rate_changes_the_labels_a_run_draws_and_zero_is_the_old_run(tmp_path):
    clean = _run(tmp_path / "clean").history
    zero = _run(tmp_path / "zero", "oracle.flip_rate=0.0").history
    assert [r["loss"] for r in zero] == [r["loss"] for r in clean]  # bitwise
    noisy = _run(tmp_path / "noisy", "oracle.flip_rate=0.45").history
    # Same pairs, labels flipped at rate .45: the label mean moves towards ½.
    for c, n in zip(clean, noisy, strict=True):
        assert abs(n["label_mean"] - 0.5) < abs(c["label_mean"] - 0.5)
        assert n["label_mean"] != c["label_mean"]


def test_label_smoothing_reaches_the_testbed_dpo_fit(tmp_path):
    plain = _run(tmp_path / "plain").history
    smooth = _run(tmp_path / "smooth", "algorithm.label_smoothing=0.2").history
    assert plain[0]["label_mean"] == smooth[0]["label_mean"]  # same pairs and labels
    assert not np.isclose(plain[0]["loss"], smooth[0]["loss"])  # a different objective


def test_a_task_that_draws_no_labels_refuses_a_flip_rate(tmp_path):
    with pytest.raises(ValueError, match=r"oracle\.flip_rate=0\.1 flips the oracle's pairwise"):
        load_train_config(CONFIGS / "kl_pg_testbed.yaml", ["oracle.flip_rate=0.1"])
    with pytest.raises(ValueError, match=r"oracle\.flip_rate=0\.1 flips the oracle's pairwise"):
        load_train_config(CONFIGS / "dpo_tiny.yaml", ["oracle.flip_rate=0.1"])
