"""The games benchmark's smoke mode runs (no peer needed) and reports a sane rate."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "games_vs_openspiel.py"


def test_games_vs_openspiel_smoke(capsys):
    spec = importlib.util.spec_from_file_location("games_vs_openspiel", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "peer column skipped" in out
    assert "jaxalign it/s" in out
