"""``jaxalign eval``: sampled estimates against the exact testbed values, the reference
against itself, a trained checkpoint end to end through the CLI, one-line usage errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import cli
from jaxalign.eval import evaluate, load_eval_config, metrics, sequence_kl_estimates, verdict

ROOT = Path(__file__).resolve().parents[1]
TESTBED = str(ROOT / "configs" / "eval" / "testbed.yaml")
HF = str(ROOT / "configs" / "eval" / "hf.yaml")
# Metrics with an exact testbed value, and that value's key in ``EvalResult.exact``.
EXACT_OF = {
    **{m: m for m in ("win_rate", "decisive_win_rate", "tie_rate", "reward", "reference_reward")},
    **{"kl_k1": "kl", "kl_k3": "kl", "response_length": "response_length"},
}


def _within_standard_errors(result, *, k: float = 4.0):
    for name, exact_name in EXACT_OF.items():
        e, exact = result.sampled[name], result.exact[exact_name]
        assert abs(e.mean - exact) <= k * e.stderr + 1e-6, (name, e, exact)


def test_verdict_counts_ties_half():
    p = jnp.asarray([0.9, 0.1, 0.5, 0.5 + 1e-9, 0.51])
    np.testing.assert_allclose(verdict(p), [1.0, 0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(metrics.is_tie(p), [0, 0, 1, 1, 0])


def test_kl_estimators_on_one_hand_computed_sample():
    logp = jnp.log(jnp.asarray([[0.5, 0.25, 0.0]]).clip(1e-30)).at[0, 2].set(0.0)
    ref = jnp.log(jnp.asarray([[0.25, 0.5, 1.0]])).at[0, 2].set(0.0)  # 3rd slot masked (0, 0)
    kl = sequence_kl_estimates(logp, ref)
    # k1 = Σ log π/π_ref = log 2 − log 2 = 0; k3 = Σ (ρ − 1) − log ρ with ρ = ½, 2.
    np.testing.assert_allclose(kl["k1"], [0.0], atol=1e-6)
    k3 = (0.5 - 1 - np.log(0.5)) + (2 - 1 - np.log(2))
    np.testing.assert_allclose(kl["k3"], [k3], rtol=1e-5)
    kl = sequence_kl_estimates(logp[:, :1], ref[:, :1])
    np.testing.assert_allclose(kl["k1"], [np.log(2)], rtol=1e-5)  # log π − log π_ref > 0


def test_exact_win_rate_of_the_reference_against_itself_is_half_and_kl_zero():
    config = load_eval_config(TESTBED, ["policy.init_seed=0", "sampling.samples_per_prompt=1024"])
    result = evaluate(config)
    for name in ("win_rate", "decisive_win_rate"):
        assert result.exact[name] == pytest.approx(0.5, abs=1e-6)
        assert abs(result.sampled[name].mean - 0.5) <= 4 * result.sampled[name].stderr
    assert result.exact["kl"] == pytest.approx(0.0, abs=1e-6)
    assert result.exact["reward"] == pytest.approx(result.exact["reference_reward"], abs=1e-6)
    for name in ("kl_k1", "kl_k3"):  # log ρ = 0 on every token
        assert result.sampled[name].mean == pytest.approx(0.0, abs=1e-5)
    assert 0 < result.exact["tie_rate"] < 1


def test_sampled_estimates_agree_with_exact_values_on_the_testbed():
    result = evaluate(load_eval_config(TESTBED))  # fresh π (seed 1) vs π_ref (seed 0)
    assert result.info["num_pairs"] == 4096
    assert result.exact["kl"] > 1.0 and abs(result.exact["win_rate"] - 0.5) > 0.02
    _within_standard_errors(result)
    assert result.sampled["kl_k1"].stderr > 0 and result.sampled["win_rate"].stderr > 0


def test_a_trained_checkpoint_evaluates_end_to_end_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    code = cli.main(["train", str(ROOT / "configs/train/kl_pg_testbed.yaml"), "--out", str(run),
                     "run.steps=2", "logging.progress_bar=false", "logging.tensorboard=false",
                     "logging.peak_flops=1e9", "checkpoint.enabled=false"])  # fmt: skip
    assert code == 0 and (run / "model" / "config.json").is_file()
    summary = json.loads((run / "summary.json").read_text())
    out = tmp_path / "eval"
    argv = ["eval", TESTBED, f"policy.path={run / 'model'}", "sampling.samples_per_prompt=1024",
            "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    doc = json.loads((out / "eval.json").read_text())
    assert (out / "eval.png").stat().st_size > 1000
    assert doc["config"]["policy"]["path"] == str(run / "model")
    assert {"jax", "python"} <= set(doc["versions"]) and doc["judge"] == "testbed"
    assert "k1" in doc["kl_estimators"]["kl_k1"] and "k3" in doc["kl_estimators"]["kl_k3"]
    # The run's own exact scores of its final policy against its π_0 (= reference init_seed 0).
    assert doc["exact"]["kl"] == pytest.approx(summary["final_kl_to_reference"], rel=1e-4)
    assert doc["exact"]["reward"] == pytest.approx(summary["final_exact_reward"], rel=1e-4)
    m = doc["metrics"]
    for name in ("win_rate", "kl_k1", "reward"):
        # The trained policy is near-deterministic: 1024 draws can all be one response
        # (stderr 0), missing mass ~1e-3 of the rest; hence the absolute slack.
        assert abs(m[name]["estimate"] - m[name]["exact"]) <= 4 * m[name]["stderr"] + 0.01
    assert "exact" in capsys.readouterr().out
    # Nothing already written is overwritten without --overwrite.
    assert cli.main(argv) == 2
    assert "eval.json exists; pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, expected",
    [
        ([TESTBED, "policy.path=/no/such/model"], "policy.path: '/no/such/model' does not exist"),
        ([TESTBED, "judge.kind=oracle"], "judge.kind: value 'oracle' is not one of"),
        ([TESTBED, "judge.kind=reward_model"], "judge.kind: got 'reward_model'; expected "
                                               "'testbed' with testbed.enabled=true"),
        ([TESTBED, "sampling.samples_per_prompt=0"], "sampling.samples_per_prompt: got 0"),
        ([TESTBED, "sampling.tempreature=1"], "did you mean 'temperature'?"),
        ([HF], "prompts.path: got ''; expected a prompt file"),
        (["missing.yaml"], "config file 'missing.yaml' does not exist"),
        ([TESTBED, "--bogus"], "unrecognized arguments: --bogus"),
    ],
    ids=["missing-path", "unknown-judge", "judge-mode", "value", "key", "hf-template",
         "missing-config", "flag"],
)  # fmt: skip
def test_bad_inputs_are_one_line_errors_with_exit_code_2(tmp_path, capsys, args, expected):
    with pytest.raises(SystemExit) if "--bogus" in args else _no_raise() as exit_info:
        code = cli.main(["eval", *args, "--out", str(tmp_path / "e")])
    code = exit_info.value.code if "--bogus" in args else code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("jaxalign: error: "), err
    assert expected in err[0]
    assert not (tmp_path / "e").exists()


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_a_missing_checkpoint_is_one_line_as_a_user_runs_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env.pop("JAXALIGN_TRACEBACK", None)
    proc = subprocess.run(
        [sys.executable, "-m", "jaxalign.cli", "eval", TESTBED, f"reference.path={tmp_path}",
         "--out", str(tmp_path / "e")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert f"reference.path {str(tmp_path)!r} holds no config.json" in lines[0]


def test_hf_checkpoints_on_text_prompts_with_a_reward_model_judge(tmp_path):
    import jax
    from flax import nnx

    from jaxalign.models import CausalLM, RewardModel, build_tiny_tokenizer, save_pretrained
    from tests.tiny_models import tiny_hf_model_config

    config = tiny_hf_model_config()
    tokenizer = build_tiny_tokenizer(tmp_path / "tokenizer")
    for name, seed in (("policy", 1), ("reference", 2)):
        save_pretrained(CausalLM.create(config, key=jax.random.key(seed)), tmp_path / name)
    judge = RewardModel(config, rngs=nnx.Rngs(params=jax.random.key(3)))
    save_pretrained(judge, tmp_path / "judge")
    rows = [{"prompt": f"sort the words {i} apple pear"} for i in range(6)]
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    overrides = [f"policy.path={tmp_path / 'policy'}", f"reference.path={tmp_path / 'reference'}",
                 f"tokenizer={tokenizer}", f"prompts.path={tmp_path / 'prompts.jsonl'}",
                 "prompts.num_prompts=5", "prompts.max_prompt_length=16",
                 f"judge.path={tmp_path / 'judge'}", "sampling.samples_per_prompt=3",
                 "sampling.batch_size=8", "sampling.max_new_tokens=6"]  # fmt: skip
    result = evaluate(load_eval_config(HF, overrides))
    assert result.exact == {} and result.info["num_pairs"] == 15
    assert result.info["num_prompts"] == 5 and result.info["judge"] == "reward_model"
    s = result.sampled
    assert 0 <= s["win_rate"].mean <= 1 and 0 <= s["decisive_win_rate"].mean <= 1
    assert 1 <= s["response_length"].mean <= 6
    assert np.isfinite(s["reward"].mean) and s["reward"].stderr > 0
    assert s["kl_k3"].mean >= 0  # k3 is non-negative per token
    # Bradley–Terry: the decisive win means r(y) > r(y'), so the mean rewards agree in sign.
    if s["decisive_win_rate"].mean > 0.9:
        assert s["reward"].mean > s["reference_reward"].mean
