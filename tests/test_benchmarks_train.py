"""The DPO step benchmarks' smoke modes run (jaxalign only) and write their JSON."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("script", "peer"), [("dpo_step_vs_trl", "trl"),
                                              ("dpo_step_vs_tunix", "tunix")])  # fmt: skip
def test_dpo_benchmark_smoke(script, peer, tmp_path, capsys):
    out = tmp_path / "dpo.json"
    result = _load(script).main(["--smoke", "--out", str(out)])
    printed = capsys.readouterr().out
    assert f"{peer}: skipped (--smoke)" in printed
    assert "smoke run — not a result" in printed
    saved = json.loads(out.read_text())
    assert saved["label"] == "smoke run — not a result" and saved["peer"] == peer
    (row,) = saved["rows"]
    assert row["ratio_jaxalign_over_peer_real_tokens_per_s"] is None
    assert row["conditions"]["label"] == saved["label"]
    side = row["sides"]["jaxalign"]
    assert side["real_tokens_per_s_median"] > 0 and 0 < side["fraction_of_matmul_peak_median"]
    # Real tokens are counted, padding is not: jaxalign pads every row to max_length.
    assert row["real_tokens_per_step"] < side["padded_tokens_per_step"]
    # One warm-up and two timed calls, the first at π = π_ref: loss log 2.
    assert len(side["losses"]) == 3 and side["n"] == 2
    assert abs(result["rows"][0]["sides"]["jaxalign"]["losses"][0] - math.log(2)) < 1e-5
