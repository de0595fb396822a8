"""initialize_distributed: settings resolution, and a real 2-process run on localhost."""

import sys
from pathlib import Path

import numpy as np
import pytest
import two_process

from jaxalign.data import PreferenceLoader
from jaxalign.parallel import (
    DistributedConfig,
    initialize_distributed,
    resolve_distributed,
)

WORKER = Path(__file__).with_name("two_process_worker.py")


def test_single_process_is_a_no_op():
    assert initialize_distributed(env={}) is False
    assert initialize_distributed(num_processes=1, env={}) is False


def test_arguments_override_config_which_overrides_environment():
    env = {
        "JAXALIGN_COORDINATOR": "env-host:1",
        "JAXALIGN_NUM_PROCESSES": "4",
        "JAXALIGN_PROCESS_ID": "3",
        "JAXALIGN_LOCAL_DEVICE_IDS": "0, 1",
    }
    cfg = resolve_distributed(env=env)
    assert cfg == DistributedConfig("env-host:1", 4, 3, (0, 1))
    cfg = resolve_distributed(
        process_id=1, config=DistributedConfig(coordinator_address="cfg-host:2"), env=env
    )
    assert (cfg.coordinator_address, cfg.num_processes, cfg.process_id) == ("cfg-host:2", 4, 1)
    assert resolve_distributed(local_device_ids=2, env={}).local_device_ids == (2,)
    assert resolve_distributed(env={"JAXALIGN_DISTRIBUTED": "auto"}).auto


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"num_processes": 2}, {}, "needs coordinator_address .* and process_id"),
        ({"num_processes": 2, "process_id": 0}, {}, "needs coordinator_address"),
        ({"num_processes": 2, "process_id": 2, "coordinator_address": "h:1"}, {}, "must be < num"),
        ({"coordinator_address": "nohost"}, {}, "must look like 'host:port'"),
        ({"num_processes": 0}, {}, "num_processes must be a positive integer"),
        ({}, {"JAXALIGN_NUM_PROCESSES": "two"}, "JAXALIGN_NUM_PROCESSES='two' must be an integer"),
        ({}, {"JAXALIGN_LOCAL_DEVICE_IDS": "0;1"}, "comma-separated integers"),
        ({}, {"JAXALIGN_DISTRIBUTED": "yes"}, "expected 'auto'"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, env, message):
    with pytest.raises(ValueError, match=message):
        initialize_distributed(**kwargs, env=env)


@pytest.mark.slow
def test_two_processes_build_one_global_batch_and_agree_with_one_process(tmp_path):
    global_batch, steps = 8, 4
    with two_process.launch(WORKER, [global_batch, steps], tmp_path) as procs:
        outputs = procs.wait(timeout_s=120)

    assert [o["process"] for o in outputs] == [0, 1]
    assert all(o["process_count"] == 2 and o["devices"] == 8 for o in outputs)
    assert all(o["local_devices"] == 4 for o in outputs)
    assert [o["rows"] for o in outputs] == [[0, 4], [4, 8]]
    # Both processes see the same replicated results ...
    assert outputs[0]["steps"] == outputs[1]["steps"]
    assert outputs[0]["state"] == outputs[1]["state"]
    # ... equal to the single-process computation on the global batches.
    sys.path.insert(0, str(WORKER.parent))
    try:
        from two_process_worker import tiny_dataset
    finally:
        sys.path.remove(str(WORKER.parent))
    reference = PreferenceLoader(
        tiny_dataset(), batch_size=global_batch, seed=5, bucket_sizes=(4, 8, 16)
    )
    for got in outputs[0]["steps"]:
        b = next(reference)
        assert got["length"] == b.chosen_input_ids.shape[1]
        assert got["total"] == float(np.sum(b.chosen_input_ids * b.chosen_loss_mask))
        assert got["attended"] == float(b.rejected_attention_mask.sum())
        assert got["column_sums"] == b.rejected_input_ids.sum(0).tolist()
    assert outputs[0]["state"] == reference.state_dict()
