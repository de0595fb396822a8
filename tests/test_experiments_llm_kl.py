"""`llm-kl-frontier`: no trained or best-of-N policy beats the exact reward–KL frontier."""

import csv
import json

from jaxalign import cli

NAME = "llm-kl-frontier"


def test_llm_kl_frontier_quick(tmp_path):
    args = ["reproduce", NAME, "--out", str(tmp_path)]
    args += [
        "pg_betas=[0.3,1.0,10.0]",
        "pg_steps=150",
        "pg_group_size=16",
        "pg_learning_rate=0.003",
        "dpo_betas=[0.5]",
        "dpo_pairs=128",
        "dpo_steps=20",
        "bon_max_n=8",
        "hidden_size=16",
        "num_layers=1",
        "frontier_points=8",
    ]
    assert cli.main(args) == 0
    assert (tmp_path / f"{NAME}.png").stat().st_size > 0
    summary = json.loads((tmp_path / f"{NAME}.json").read_text())["summary"]
    rows = list(csv.DictReader((tmp_path / f"{NAME}.csv").open()))
    assert {r["method"] for r in rows} == {"kl-pg", "dpo", "best-of-n"}
    # The frontier is an upper bound for every policy, at that policy's own KL.
    assert summary["max_excess_over_frontier"] <= 1e-6
    assert max(float(r["excess"]) for r in rows) <= 1e-6
    assert all(float(r["kl"]) >= -1e-9 for r in rows)
    # ... and it is not vacuous: best-of-N (N ≥ 2) and KL-PG come close to it.
    assert summary["max_gap_below_frontier"]["best-of-n"] < 0.5
    pg = sorted(summary["points"]["kl-pg"])  # [β, reward, KL], β increasing
    assert summary["pg_reward_decreasing_in_beta"]
    assert pg[0][1] > pg[-1][1] and pg[0][2] > pg[-1][2]
    assert pg[0][1] > summary["reference_reward"] + 0.5
    front = {float(r["parameter"]): float(r["frontier_reward"]) for r in rows
             if r["method"] == "kl-pg"}  # fmt: skip
    assert front[pg[0][0]] - pg[0][1] < 0.5
