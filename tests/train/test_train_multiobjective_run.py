"""``jaxalign train`` with ``algorithm.name: multiobjective_dpo``: K preference datasets, one
aggregated update per step (configs/train/multiobjective_dpo_{tiny,hf}.yaml).

Each aggregator completes a short run and logs per-objective metrics; the weighted sum with
weights ``e_0`` is the DPO run on objective 0's data (same losses and parameters); a run
resumed from a checkpoint repeats the uninterrupted one (all K data positions restored); the
HF template trains a saved checkpoint on K JSONL files; config mistakes are clear errors.

Compilation dominates the cost, so the runs share compiled steps: one run per aggregator
(the weighted-sum one is the ``e_0`` run of the DPO comparison; the CLI run compiles the
same step), the DPO run compiles the step of the other training tests.
"""

import json
import typing

import jax
import numpy as np
import pytest
from flax import nnx
from tiny_models import TINY_TRAIN as TINY
from tiny_models import tiny_config, tiny_hf_model_config, tiny_overrides

from jaxalign.cli import main
from jaxalign.config import ConfigError
from jaxalign.data import make_tiny_preference_dataset, tiny_preference_score
from jaxalign.experiment import repo_root
from jaxalign.models import CausalLM, build_tiny_tokenizer, save_pretrained
from jaxalign.train import NonFiniteError, load_train_config, read_jsonl, train
from jaxalign.train.config import AlgorithmConfig
from jaxalign.train.multiobjective import AGGREGATORS

CONFIGS = repo_root() / "configs" / "train"
LOG2 = float(np.log(2.0))
STEPS = 8
MO = ("algorithm.name=multiobjective_dpo",)
AGG_OVERRIDES = {
    "weighted_sum": ("algorithm.weights=[1,0]",),  # = DPO on objective 0
    "mgda": (),
    "cagrad": ("algorithm.radius=0.4",),
    "raco": ("algorithm.weights=[0.3,0.7]", "algorithm.radius=0.4"),
}


def _agg_config(out_dir, aggregator, *extra):
    return tiny_config(out_dir, *MO, f"algorithm.aggregator={aggregator}",
                       *AGG_OVERRIDES[aggregator], "checkpoint.every_steps=4", *extra)  # fmt: skip


@pytest.fixture(scope="module")
def agg_runs(tmp_path_factory):
    """One uninterrupted ``STEPS``-step run per aggregator (checkpoints every 4 steps)."""
    root = tmp_path_factory.mktemp("mo-runs")
    return {
        name: train(_agg_config(root / name, name, f"run.steps={STEPS}"), quiet=True)
        for name in AGGREGATORS
    }


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_each_aggregator_runs_and_logs_per_objective_metrics(agg_runs, aggregator):
    result = agg_runs[aggregator]
    assert result.status == "completed" and result.step == STEPS
    records = read_jsonl(result.out_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert len(list((result.out_dir / "data").glob("tiny-*-p0.jsonl"))) == 2
    for r in records:
        for k in range(2):
            for name in ("loss", "accuracy", "grad_norm", "agg_weight", "agg_coef", "agg_cos"):
                assert np.isfinite(r[f"{name}_{k}"]), (name, k, r)
            assert -1 - 1e-6 <= r[f"agg_cos_{k}"] <= 1 + 1e-6
        assert "loss_2" not in r and r["conflict"] in (0.0, 1.0)
        weights = np.array([r["agg_weight_0"], r["agg_weight_1"]])
        assert np.all(weights >= -1e-6) and weights.sum() <= 1 + 1e-5
        # `loss` scalarises the K losses with the user weights (uniform without them).
        s = {"weighted_sum": (1.0, 0.0), "raco": (0.3, 0.7)}.get(aggregator, (0.5, 0.5))
        np.testing.assert_allclose(r["loss"], s[0] * r["loss_0"] + s[1] * r["loss_1"], rtol=1e-5)
    # π = π_ref at the first step: every DPO loss is log 2.
    np.testing.assert_allclose([records[0]["loss_0"], records[0]["loss_1"]], LOG2, rtol=1e-6)
    if aggregator == "weighted_sum":
        for r in records:
            np.testing.assert_allclose([r["agg_weight_0"], r["agg_weight_1"]], [1.0, 0.0])
            np.testing.assert_allclose([r["agg_coef_0"], r["agg_coef_1"]], [1.0, 0.0])
    if aggregator in ("mgda", "cagrad"):
        np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-5)  # on the simplex
    if aggregator == "mgda":
        # MGDA's direction never opposes an objective's gradient (the min-norm point).
        assert min(min(r["agg_cos_0"], r["agg_cos_1"]) for r in records) >= -1e-4
    # The objectives conflict (their gradients' inner product turns negative).
    assert any(r["conflict"] == 1.0 for r in records)


def test_weighted_sum_with_weights_e0_is_dpo_on_objective_0(agg_runs, tmp_path):
    """Σ_k w_k g_k with w = (1, 0) is g_0 exactly: the run is the DPO run on dataset 0."""
    dpo = train(tiny_config(tmp_path, f"run.steps={STEPS}", "checkpoint.enabled=false"),
                quiet=True)  # fmt: skip
    mo = agg_runs["weighted_sum"]
    # The same rows: objective 0's tiny dataset is the DPO run's.
    assert (tmp_path / "data/tiny-p0.jsonl").read_text() == (
        mo.out_dir / "data/tiny-0-sorted-p0.jsonl"
    ).read_text()
    d, m = dpo.history, mo.history
    assert len(d) == len(m) == STEPS
    for key in ("loss", "accuracy", "margin", "chosen_reward", "kl_ref", "grad_norm"):
        np.testing.assert_allclose([r[key] for r in m], [r[key] for r in d], rtol=1e-5,
                                   atol=1e-6, err_msg=key)  # fmt: skip
    np.testing.assert_allclose([r["loss_0"] for r in m], [r["loss"] for r in d], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(mo.state.params), jax.tree.leaves(dpo.state.params),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # The trade-off: fitting objective 0 alone lowers its loss and raises objective 1's.
    assert m[-1]["loss_0"] < LOG2 - 0.03 and m[-1]["loss_1"] > LOG2 + 0.03
    # Teeth: another aggregation of the same two objectives gives another trajectory.
    for name in ("mgda", "raco"):
        gap = max(abs(a["loss_0"] - b["loss"]) for a, b in zip(agg_runs[name].history, d))
        assert gap > 1e-3, name


def test_resume_repeats_the_uninterrupted_run(agg_runs, tmp_path):
    """Stopped at step 4 and resumed: steps 5..8 equal the uninterrupted run's (RACO)."""
    full = agg_runs["raco"]
    first = train(_agg_config(tmp_path, "raco", "run.steps=4"), quiet=True)
    meta = json.loads((tmp_path / "checkpoints" / "4" / "meta" / "metadata").read_text())
    assert [p["index"] for p in meta["task"]["data"]] == [32, 32]  # both loaders' positions (4 × 8)
    resumed = train(_agg_config(tmp_path, "raco", f"run.steps={STEPS}", "run.resume=true"),
                    quiet=True)  # fmt: skip
    assert first.step == 4 and resumed.resumed_from == 4 and resumed.step == STEPS
    got = read_jsonl(tmp_path / "metrics.jsonl")
    want = read_jsonl(full.out_dir / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    for key in ("loss_0", "loss_1", "agg_weight_0", "agg_cos_1", "grad_norm"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in want], rtol=1e-6,
                                   atol=1e-7, err_msg=key)  # fmt: skip
    for a, b in zip(jax.tree.leaves(resumed.state.params), jax.tree.leaves(full.state.params),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_sharded_accumulated_run_matches_one_device(agg_runs, tmp_path):
    """On a (data, fsdp, tensor) = (2, 2, 2) mesh with 2 micro-batches per objective the MGDA
    run repeats the one-device run without accumulation (up to float rounding)."""
    assert jax.device_count() == 8
    sharded = train(_agg_config(tmp_path, "mgda", f"run.steps={STEPS}", "mesh.data=2",
                                "mesh.fsdp=2", "mesh.tensor=2", "optimizer.grad_accum_steps=2"),
                    quiet=True)  # fmt: skip
    kernel = sharded.state.params["model"]["layers"]["mlp"]["gate_proj"]["kernel"]
    assert kernel.sharding.num_devices == 8
    assert kernel.addressable_shards[0].data.shape == (1, 16, 32)  # (layers, /fsdp, /tensor)
    want = agg_runs["mgda"].history
    for key in ("loss_0", "loss_1", "agg_weight_0", "agg_cos_1", "grad_norm"):
        np.testing.assert_allclose([r[key] for r in sharded.history], [r[key] for r in want],
                                   rtol=1e-4, atol=1e-5, err_msg=key)  # fmt: skip


def test_nan_stops_the_run_at_its_step(agg_runs, tmp_path):
    """A non-finite objective loss leaves the state unchanged and stops the run (MGDA)."""
    with pytest.raises(NonFiniteError, match="at step 3"):
        train(_agg_config(tmp_path, "mgda", "run.steps=5", "debug.nan_at_step=3"), quiet=True)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    want = read_jsonl(agg_runs["mgda"].out_dir / "metrics.jsonl")[:2]
    assert [r["loss_1"] for r in records] == [r["loss_1"] for r in want]


def test_hf_template_trains_a_saved_checkpoint_on_k_jsonl_files(tmp_path):
    config = tiny_hf_model_config()
    save_pretrained(CausalLM(config, rngs=nnx.Rngs(params=jax.random.key(0))), tmp_path / "hf")
    build_tiny_tokenizer(tmp_path / "hf")
    files = [
        make_tiny_preference_dataset(tmp_path / f"{rule}.jsonl", num_rows=64, seed=0, rule=rule)
        for rule in ("sorted", "reversed")
    ]
    cfg = load_train_config(
        CONFIGS / "multiobjective_dpo_hf.yaml",
        [
            f"init.pretrained={tmp_path / 'hf'}",
            f"init.tokenizer={tmp_path / 'hf'}",
            f"data.paths=[{files[0]},{files[1]}]",
            f"run.out_dir={tmp_path / 'run'}",
            "run.steps=3",
            "logging.every_steps=1",
            # The tiny shapes, optimizer and mesh of the sharded MGDA run above (its compiled
            # step is reused): FSDP × tensor × data, 2 micro-batches per objective.
            *(o for o in TINY if not o.startswith(("model.", "tiny_data."))),
            "mesh.data=2",
            "mesh.fsdp=2",
            "mesh.tensor=2",
            "optimizer.grad_accum_steps=2",
            "algorithm.aggregator=mgda",
            "algorithm.weights=[]",
        ],
    )
    assert cfg.algorithm.name == "multiobjective_dpo" and cfg.num_objectives == 2
    result = train(cfg, quiet=True)
    assert result.status == "completed" and result.step == 3
    assert [r["step"] for r in result.history] == [1, 2, 3]
    first = result.history[0]
    np.testing.assert_allclose([first["loss_0"], first["loss_1"]], LOG2, rtol=1e-5)
    assert all(np.isfinite(r[f"loss_{k}"]) for r in result.history for k in range(2))


def test_cli_runs_a_multiobjective_config(tmp_path, capsys):
    config = CONFIGS / "multiobjective_dpo_tiny.yaml"
    # weights (1, 0): the weighted-sum run's compiled step (the same configuration).
    overrides = tiny_overrides(tmp_path / "run", "run.steps=2", "algorithm.weights=[1,0]")
    args = ["train", str(config), *overrides]
    assert main(args) == 0
    assert "step 2: loss 0.6931" in capsys.readouterr().out
    assert (tmp_path / "run" / "summary.json").exists()


def test_tiny_objectives_label_the_same_pairs_in_opposite_orders(tmp_path):
    rows = {}
    for rule in ("sorted", "reversed"):
        path = make_tiny_preference_dataset(tmp_path / f"{rule}.jsonl", 64, seed=3, rule=rule)
        rows[rule] = [json.loads(line) for line in path.read_text().splitlines()]
    for a, b in zip(rows["sorted"], rows["reversed"], strict=True):
        assert a["prompt"] == b["prompt"]
        assert a["chosen"].split() == b["chosen"].split()[::-1]
        for rule, row in (("sorted", a), ("reversed", b)):
            assert tiny_preference_score(row["prompt"], row["chosen"], rule=rule) == 1.0
            assert tiny_preference_score(row["prompt"], row["rejected"], rule=rule) < 1.0
    # The same random rejected order on (almost) every prompt.
    same = np.mean([a["rejected"] == b["rejected"] for a, b in zip(*rows.values())])
    assert same > 0.9


def test_shipped_configs_load():
    # The config's aggregator names are the step's.
    hints = typing.get_type_hints(AlgorithmConfig)
    assert typing.get_args(hints["aggregator"]) == AGGREGATORS
    for name in ("multiobjective_dpo_tiny.yaml", "multiobjective_dpo_hf.yaml"):
        cfg = load_train_config(CONFIGS / name)
        assert cfg.algorithm.name == "multiobjective_dpo" and cfg.num_objectives == 2
    tiny = load_train_config(CONFIGS / "multiobjective_dpo_tiny.yaml")
    assert tiny.algorithm.objective_weights(2) == (0.5, 0.5)
    # Switching the aggregator from the command line needs nothing else.
    for name in AGGREGATORS:
        cfg = load_train_config(CONFIGS / "multiobjective_dpo_tiny.yaml",
                                [f"algorithm.aggregator={name}"])  # fmt: skip
        assert cfg.algorithm.aggregator == name


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algorithm.tau=0.5", r"tau=0\.5 is not used by name='multiobjective_dpo'"),
        ("algorithm.aggregator=mgda algorithm.weights=[0.5,0.5]",
         r"weights=\(0\.5, 0\.5\) is not used by aggregator='mgda' \(only by weighted_sum / raco"),
        ("algorithm.radius=0.3", r"radius=0\.3 is not used by aggregator='weighted_sum'"),
        ("algorithm.weights=[0.5,0.6]", r"weights=\[0\.5, 0\.6\] is invalid; expected non-neg"),
        ("algorithm.weights=[-0.5,1.5]", r"weights=\[-0\.5, 1\.5\] is invalid"),
        ("algorithm.weights=[0.2,0.3,0.5]", r"has 3 entries but there are K=2 objectives"),
        ("algorithm.aggregator=raco algorithm.radius=1", r"radius=1\.0 is invalid; expected < 1"),
        ("algorithm.aggregator=cagrad algorithm.radius=-1", r"radius=-1\.0 is invalid"),
        ("algorithm.aggregator=mgdaa", r"did you mean 'mgda'"),
        ("data.path=x.jsonl", r"reads one dataset per objective from data\.paths"),
        ("data.paths=[a.jsonl]", r"needs K >= 2 objectives, got 1 in data\.paths"),
        ("tiny_data.objectives=[sorted]", r"got 1 in tiny_data\.objectives; use algorithm"),
        ("tiny_data.objectives=[sortd,reversed]", r"objectives=\['sortd', 'reversed'\] is inv"),
        ("data.path=x.jsonl data.paths=[a,b]", r"give path='x\.jsonl' .* not both"),
        ("algorithm.name=dpo data.paths=[a,b]", r"data\.paths=\['a', 'b'\] is only read by"),
        ("algorithm.name=dpo algorithm.aggregator=mgda",
         r"aggregator='mgda' is not used by name='dpo' \(only by multiobjective_dpo\)"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(CONFIGS / "multiobjective_dpo_tiny.yaml", override.split())
