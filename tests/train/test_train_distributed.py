"""Two jax.distributed processes on localhost train like one process with 8 devices."""

from pathlib import Path

import numpy as np
import pytest
import two_process
import yaml

from jaxalign.train import Checkpointer, config_to_dict, read_jsonl, train

WORKER = Path(__file__).with_name("two_process_train_worker.py")


@pytest.mark.slow
def test_two_process_run_matches_single_process(tmp_path, make_config):
    mesh = ("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2")
    common = ("run.steps=4", "checkpoint.every_steps=2", *mesh)
    cfg = make_config(tmp_path / "two", *common)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    with two_process.launch(WORKER, [path], tmp_path) as procs:
        single = train(make_config(tmp_path / "one", *common), quiet=True)
        outputs = procs.wait(timeout_s=300)
    assert [o["process"] for o in outputs] == [0, 1]
    assert all(o["devices"] == 8 and o["step"] == 4 for o in outputs)
    assert outputs[0]["losses"] == outputs[1]["losses"]
    expected = [r["loss"] for r in single.history]
    np.testing.assert_allclose(outputs[0]["losses"], expected, rtol=2e-5, atol=2e-6)
    # Process 0 logged; both wrote one multi-host checkpoint per save.
    assert [r["loss"] for r in read_jsonl(tmp_path / "two" / "metrics.jsonl")] == outputs[0][
        "losses"
    ]
    assert Checkpointer(tmp_path / "two" / "checkpoints", cfg.checkpoint).all_steps() == [2, 4]
