"""TensorBoard event files: CRC-32C framing, scalar round trip, and a training run's curves."""

import numpy as np
import pytest

from jaxalign.train import train
from jaxalign.train.metrics import read_jsonl
from jaxalign.train.tensorboard import SummaryWriter, crc32c, read_scalars


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"") == 0


def test_scalars_round_trip_and_corruption_is_detected(tmp_path):
    w = SummaryWriter(tmp_path)
    w.scalars(1, {"loss": 0.5, "acc": 1.0})
    w.scalars(2, {"loss": 0.25, "name": "skipped: not a number"})
    w.close()
    assert read_scalars(w.path) == [(1, "loss", 0.5), (1, "acc", 1.0), (2, "loss", 0.25)]
    data = bytearray(w.path.read_bytes())
    data[-6] ^= 0xFF  # flip a payload byte of the last record
    w.path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        read_scalars(w.path)


def test_training_run_writes_the_metrics_as_tensorboard_scalars(tmp_path, make_config):
    result = train(make_config(tmp_path / "run", "run.steps=3"))
    files = list((result.out_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    scalars = read_scalars(files[0])
    tb_loss = [v for s, tag, v in scalars if tag == "loss"]
    jsonl_loss = [r["loss"] for r in read_jsonl(result.out_dir / "metrics.jsonl")]
    assert len(tb_loss) == 3
    np.testing.assert_allclose(tb_loss, np.float32(jsonl_loss), rtol=1e-7)
