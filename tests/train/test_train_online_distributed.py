"""Online Nash training on two jax.distributed processes (localhost, CPU collectives)
gives the same run as one process with the same 4-device mesh.

Two processes × 2 fake CPU devices form a (data=1, fsdp=2, tensor=2) mesh; `jaxalign train`
runs configs/train/inpo_testbed.yaml on it (prompts drawn identically on every process
and placed as global arrays, parameters sharded across both processes). The exact
duality gaps, losses and every other logged metric must equal those of the same run in
one process; process 0 alone writes the run directory, and the final policy saved from
the two processes is the single-process one.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import two_process

from jaxalign import games
from jaxalign.data import testbed as tb
from jaxalign.experiment import repo_root
from jaxalign.models import from_pretrained
from jaxalign.train import online_run

WORKER = Path(__file__).with_name("two_process_online_worker.py")
CONFIG = repo_root() / "configs" / "train" / "inpo_testbed.yaml"
OVERRIDES = [
    "run.iterations=2",
    "online.batch_size=32",
    "online.inner_steps=5",
    "mesh.data=1",
    "mesh.fsdp=2",
    "mesh.tensor=2",
    "run.save_model=true",
]
TIMEOUT_S = 300
# Share compilations with earlier runs (tests/train/conftest.py sets the cache dir).
CACHE_ENV = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_two_process_online_run_matches_single_process(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    args = [CONFIG, "--out", two, *OVERRIDES]
    with two_process.launch(WORKER, args, tmp_path, env=CACHE_ENV) as procs:
        # The reference meanwhile, in this process: the same mesh on 4 of its 8 devices.
        cfg = online_run.load_online_config(CONFIG, [*OVERRIDES, f"run.out_dir={one}"])
        single = online_run.train_online(cfg, quiet=True)
        results = procs.wait(timeout_s=TIMEOUT_S)
    for pid, r in enumerate(results):
        assert r["rc"] == 0, procs.report()
        assert (r["process"], r["processes"], r["devices"], r["local_devices"]) == (pid, 2, 4, 2)

    # Every logged metric of every iteration equals the single-process run's.
    rows, ref_rows = _rows(two / "metrics.jsonl"), _rows(one / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [r["iteration"] for r in ref_rows] == [1, 2]
    keys = sorted(set(ref_rows[0]) - {"iteration", "time_s"})
    assert {"duality_gap", "loss", "regularised_gap", "kl_k3"} <= set(keys)
    assert sorted(set(rows[0]) - {"iteration", "time_s"}) == keys
    got = np.array([[r[k] for k in keys] for r in rows])
    want = np.array([[r[k] for k in keys] for r in ref_rows])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"metrics {keys}")
    assert rows[0]["duality_gap"] != rows[1]["duality_gap"]  # the policy did move

    # Both processes computed the same summary, equal to the single-process one.
    s0, s1 = (r["summary"] for r in results)
    numeric = sorted(k for k, v in single.items() if isinstance(v, float) and k != "runtime_s")
    assert "final_duality_gap" in numeric and "tabular_final_duality_gap" in numeric
    for k in numeric:
        assert s0[k] == s1[k], k
        np.testing.assert_allclose(s0[k], single[k], rtol=1e-5, atol=1e-6, err_msg=k)

    # Process 0 alone wrote the run directory, once; process 1 printed nothing.
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert sorted(p.name for p in two.iterdir()) == [
        "checkpoints", "config.yaml", "metrics.jsonl", "model", "summary.json", "tensorboard",
    ]  # fmt: skip
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["2"]
    assert len(list((two / "tensorboard").iterdir())) == 1
    assert (
        json.loads((two / "summary.json").read_text())["final_duality_gap"]
        == s0["final_duality_gap"]
    )
    out0, out1 = procs.stdout(0), procs.stdout(1)
    assert "jaxalign: online inpo" in out0 and "jaxalign: online" not in out1

    # The policy saved from two processes is the single-process policy, and reloaded it has
    # exactly the logged final duality gap.
    testbed = tb.Testbed(cfg.testbed.alphabet_size, cfg.testbed.response_length)
    game = online_run._testbed_game(cfg.testbed, testbed)
    lp_two = tb.policy_log_probs(from_pretrained(two / "model"), testbed)
    lp_one = tb.policy_log_probs(from_pretrained(one / "model"), testbed)
    np.testing.assert_allclose(lp_two, lp_one, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(games.duality_gap(game, lp_two), rows[-1]["duality_gap"], rtol=1e-4)
