"""The benchmark protocol: interleaved rounds, min/median, ratios and honest labels."""

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _harness():
    name = "benchmarks_harness_under_test"
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / "harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_sides_are_interleaved_after_their_warmup():
    h = _harness()
    calls = []
    sides = {name: (lambda name=name: calls.append(name) or len(calls)) for name in "AB"}
    m = h.run_interleaved(sides, repeats=3, warmup=2, max_wait=0.0, smoke=True)
    assert calls == ["A", "A", "B", "B"] + ["A", "B"] * 3
    assert [len(m.samples[s]) for s in "AB"] == [3, 3]
    assert m.outputs["A"] == [1, 2, 5, 7, 9]  # warm-up outputs first, then the rounds
    assert m.label == h.SMOKE and not m.is_result


def test_ratio_is_how_many_times_faster_on_medians_and_mins():
    h = _harness()
    wait = h.QuietWait(True, 0.0, (0.1, 0.1, 0.1), h.QUIET_LOAD)
    samples = {"fast": [1.0, 2.0, 3.0, 4.0, 5.0], "slow": [4.0, 6.0, 6.0, 8.0, 9.0]}
    cpu = {"other_processes_cores": 0.0, "steal_cores": 0.0, "own_cores": 1.0}
    m = h.Measurement(samples, {}, wait, None, None, cpu, repeats=5, warmup=1)
    assert m.stats("fast")["median_s"] == 3.0 and m.stats("fast")["min_s"] == 1.0
    assert m.ratio("slow", "fast") == {"ratio_of_medians": 2.0, "ratio_of_mins": 4.0}
    assert m.label == h.QUIET and m.is_result and m.reasons == []


def test_not_a_result_when_the_machine_stays_busy_or_others_use_the_cpu():
    h = _harness()
    samples = {"a": [1.0] * 5}
    busy_wait = h.wait_for_quiet(-1.0, 0.0, say=lambda _: None)  # load never below -1
    assert not busy_wait.quiet
    m = h.Measurement(samples, {}, busy_wait, None, None, {}, repeats=5, warmup=1)
    assert m.label == h.BUSY
    quiet = h.QuietWait(True, 0.0, (0.1, 0.1, 0.1), h.QUIET_LOAD)
    crowded = {"other_processes_cores": 64.0, "steal_cores": 0.0, "own_cores": 1.0}
    m = h.Measurement(samples, {}, quiet, None, None, crowded, repeats=5, warmup=1)
    assert m.label == h.BUSY and "other processes" in m.reasons[0]
    m = h.Measurement({"a": [1.0] * 3}, {}, quiet, None, None, {}, repeats=3, warmup=1)
    assert m.label == h.SHORT


def test_machine_record_names_versions_and_load(tmp_path):
    h = _harness()
    record = h.machine()
    assert record["cpu_count"] and "python" in record["versions"]
    path = h.write_json(tmp_path / "r.json", {"machine": record})
    assert '"created"' in path.read_text()
