"""The reward-transforms and condorcet studies run end to end (tiny overrides) and support
their claims."""

import json

from jaxalign import experiment


def _run(name, tmp_path, overrides):
    exp = experiment.get(name)
    paths = experiment.reproduce(exp, out=tmp_path, overrides=overrides, quiet=True)
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0
    return json.loads(paths["json"].read_text())["summary"]


def test_reward_transforms_lsc_avoids_the_spike_and_keeps_good_in_both(tmp_path):
    overrides = ["num_instances=4", "num_budgets=8", "transformer_budgets=[2.0]", "pg_steps=200"]
    s = _run("reward-transforms", tmp_path, overrides)
    raw, lsc = "raw sum", "LSC AND"
    assert s["good_both_at_report_kl"][lsc] > s["good_both_at_report_kl"][raw] + 0.1
    assert s["spike_mass_at_max_kl"][raw] > 0.3
    assert s["spike_mass_at_max_kl"][lsc] < 0.01
    assert s["worked_example_u_and"][0] < s["worked_example_u_and"][1]
    # The transformer trained by KL-PG (training engine): LSC's policy has more mass good in
    # both and less on the spike than raw-sum KL-PG, and than the raw sum's exact optimum at
    # the LSC policy's own KL; it moved off π_ref.
    t = s["transformer"]
    raw_t, lsc_t = f"{raw} @ 2", f"{lsc} @ 2"
    assert t["kl"][lsc_t] > 0.3 and t["kl"][raw_t] > 0.3
    assert t["good_both"][lsc_t] > t["good_both"][raw_t] + 0.2
    assert t["good_both"][lsc_t] > t["raw_sum_exact_at_same_kl"][lsc_t]["good_both"] + 0.2
    assert t["good_both"][lsc_t] > t["good_both_reference"] + 0.2
    assert t["spike_mass"][lsc_t] < t["spike_mass_reference"]
    assert t["spike_mass"][raw_t] > t["spike_mass_reference"] + 0.1
    assert t["spike_mass"][lsc_t] < t["raw_sum_exact_at_same_kl"][lsc_t]["spike"] - 0.1


def test_condorcet_lottery_beats_the_bt_winner_and_self_play_reaches_it(tmp_path):
    s = _run(
        "condorcet",
        tmp_path,
        ["num_steps=1000", "num_betas=10", "onpo_sweep=[1.0]", "transformer_algorithms=[]"],
    )
    three = s["three"]
    assert three["condorcet_winner"] == -1
    assert abs(three["maximal_lottery"]["B"] - 0.2) < 1e-9
    assert three["bt_winner"] == "A" and three["bt_winner_beaten_by"] == "C"
    assert abs(three["bt_winner_beaten_with_rate"] - 0.6) < 1e-9
    assert three["lottery_max_win_rate_against_it"] <= 0.5 + 1e-9
    for gap in three["final_gap"].values():
        assert gap < three["rlhf_path_min_gap"]
    testbed = s["testbed"]
    assert testbed["condorcet_winner"] == -1 and testbed["bt_winner_beaten_with_rate"] > 0.55
