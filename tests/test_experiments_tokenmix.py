"""`tokenmix-vs-seqmix`: the mixtures agree for one token and at α ∈ {0, 1}, differ otherwise."""

import json

from jaxalign import cli


def test_tokenmix_vs_seqmix_quick(tmp_path):
    args = ["reproduce", "tokenmix-vs-seqmix", "--out", str(tmp_path)]
    args += ["lengths=[1,2]", "mixes=[0.0,0.5,1.0]", "num_pairs=1", "hidden_size=16"]
    assert cli.main(args) == 0
    summary = json.loads((tmp_path / "tokenmix-vs-seqmix.json").read_text())["summary"]
    assert summary["tv_length_1"] < 1e-5
    assert summary["tv_at_endpoints"] < 1e-5
    assert summary["max_tv_by_length"]["2"] > 1e-3
    assert (tmp_path / "tokenmix-vs-seqmix.png").stat().st_size > 0
