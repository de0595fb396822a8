"""The online Nash-MD-vs-TRL benchmark's smoke mode runs (jaxalign only) and writes its JSON."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "online_nash_md_vs_trl.py"


def test_online_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("online_nash_md_vs_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "online.json"
    result = module.main(["--smoke", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "trl: skipped (--smoke)" in printed
    saved = json.loads(out.read_text())
    assert saved["ratio_jaxalign_over_trl"] is None and saved["ratios_over_trl"] == {}
    row = saved["results"]["jaxalign nash_md"]
    assert row["pairs_per_s"] > 0 and row["generated_tokens_per_s"] > 0
    # Fixed-length responses: every sampled response has exactly max_new_tokens tokens.
    assert row["response_length"] == saved["max_new_tokens"]
    # At π = π_t = π_ref the Nash-MD regression residual is −s/2 on every pair, so after one
    # small Adam step the loss is still ≈ (s/2)².
    s = saved["step_size"]
    assert abs(result["results"]["jaxalign nash_md"]["last_loss"] - (s / 2) ** 2) < 0.02
