"""Online Nash preference optimisation of a real transformer on the enumerable testbed,
through the engine: the exact duality gap falls for INPO and ONPO (average iterate, next to
the tabular solver from the same start); EGPO and Nash-MD reduce the regularised gap; an
uninformative oracle does not move it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_models import TASK_OVERRIDES

from jaxalign import games
from jaxalign import testbed as tb
from jaxalign.config import ConfigError
from jaxalign.games import NashAlgorithm
from jaxalign.kl import kl_divergence
from jaxalign.models import from_pretrained
from jaxalign.testbed import scoring
from jaxalign.train import OnlineLoopConfig, load_train_config, oracles, run, train
from jaxalign.train.oracles import Responses
from jaxalign.train.tasks.nash import NashTask

TB = tb.Testbed(alphabet_size=3, response_length=2)
HPARAMS = ["online.batch_size=256", "online.inner_steps=30", "online.learning_rate=0.03",
           "algorithm.step_size=2.0", "run.seed=2"]  # fmt: skip


def _config(tmp_path, algorithm: str, *extra: str):
    base = [o for o in TASK_OVERRIDES["nash"] if not o.startswith(("algorithm.", "online."))]
    return load_train_config(
        None,
        [*base, f"algorithm.name={algorithm}", *HPARAMS, "run.steps=10", "run.save_model=true",
         f"run.out_dir={tmp_path / algorithm}", *extra],
    )  # fmt: skip


@pytest.mark.parametrize(("algorithm", "tau"), [("inpo", 0.05), ("onpo", None)])
def test_online_training_reduces_the_exact_duality_gap(tmp_path, algorithm, tau):
    extra = [] if tau is None else [f"algorithm.tau={tau}"]
    result = train(_config(tmp_path, algorithm, *extra), quiet=True)
    task = result.task
    h = task.exact_history.history()
    gaps = np.asarray(h.duality_gap)
    assert gaps.shape == (11,)
    assert np.all(np.isfinite(gaps)) and np.all(gaps >= -1e-6)
    # Entry 0 is the exact gap of π_0 = π_ref; the logged gaps are the history's.
    np.testing.assert_allclose(gaps[0], games.duality_gap(task.setup.game, task.log_ref),
                               rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose(gaps[1:], [r["duality_gap"] for r in result.history], rtol=1e-6)
    # The average iterate (what the no-regret bounds are about; last iterates on a cyclic
    # game oscillate, the exact tabular update's too) falls well below the start …
    avg = np.asarray(scoring.average_policy_gaps(task.setup.game, h.log_policies))
    assert avg.min() < 0.7 * gaps[0], avg
    # … and tracks the tabular solver's average iterate from the same start, up to ten
    # iterations of sampling and fitting error (0.07–0.10 measured).
    tab = scoring.tabular_baseline(task.algorithm, task.setup.game, h.log_policies[0],
                                   task.log_ref, 10)  # fmt: skip
    assert float(tab.avg_gap[-1]) < gaps[0]
    assert abs(avg[-1] - float(tab.avg_gap[-1])) < 0.15, (avg, tab.avg_gap)
    # The saved model is the last iterate.
    saved = tb.policy_log_probs(from_pretrained(result.out_dir / "model"), TB)
    np.testing.assert_allclose(saved, h.log_policies[-1], atol=1e-4)


def test_an_uninformative_oracle_leaves_the_gap_where_it_was(tmp_path):
    """Teeth: with P(a ≻ b) = ½ for every pair the loss has no signal (h → 0), so the
    policy only drifts by the fitting noise and the gap does not fall as it does above."""

    def coin(key, a, b):
        return jnp.full((a.tokens.shape[0],), 0.5, jnp.float32)

    config = _config(tmp_path, "onpo", "run.steps=4")
    result = run(config, lambda ctx: NashTask(ctx, oracle=coin), quiet=True)
    h = result.task.exact_history.history()
    gaps = np.asarray(h.duality_gap)
    assert gaps[-1] > 0.7 * gaps[0], gaps
    avg = np.asarray(scoring.average_policy_gaps(result.task.setup.game, h.log_policies))
    assert avg.min() > 0.7 * gaps[0], avg


@pytest.mark.parametrize(
    ("algorithm", "extra"), [("egpo", []), ("nash_md", ["algorithm.mixture=sequence"])]
)
def test_egpo_and_nash_md_reduce_the_exact_regularised_gap(tmp_path, algorithm, extra):
    """Both target the τ-regularised game: its exact gap falls, as the tabular solver's."""
    config = _config(tmp_path, algorithm, "algorithm.tau=0.05", "run.steps=6", *extra)
    h = train(config, quiet=True).task.exact_history.history()
    reg = np.asarray(h.regularised_gap)
    assert np.all(np.isfinite(reg)) and np.all(reg >= -1e-6)
    assert reg[-1] < 0.7 * reg[0], reg
    assert float(h.kl_to_reference[-1]) > 1e-3  # the policy moved


def test_testbed_oracle_labels():
    game = tb.cyclic_preference(TB, key=jax.random.key(1))
    space = scoring.TestbedModel(TB, None)

    def responses(idx):
        return Responses(*space.sequences(jnp.asarray(idx)), len(TB.prompt))

    a, b = responses([0, 4, 8]), responses([1, 2, 3])
    soft = oracles.testbed_oracle(TB, game, sample=False)(jax.random.key(0), a, b)
    np.testing.assert_allclose(soft, game.preference[jnp.array([0, 4, 8]), jnp.array([1, 2, 3])])
    n = 4000
    aa, bb = responses(np.zeros(n, np.int32)), responses(np.ones(n, np.int32))
    hard = oracles.testbed_oracle(TB, game)(jax.random.key(1), aa, bb)
    assert set(np.unique(np.asarray(hard))) <= {0.0, 1.0}
    p = float(game.preference[0, 1])
    assert abs(float(hard.mean()) - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-3


def test_each_algorithm_maps_to_its_tabular_solver():
    log_ref = jnp.full((9,), -jnp.log(9.0))
    names = {
        "inpo": "inpo",
        "onpo": "onpo",
        "online_ipo": "inpo",  # online IPO = INPO with s = 1/τ (no π_t anchor)
        "mnpo": "mnpo_history",
        "nash_md": "nash_md",
        "egpo": "egpo",
    }
    for algorithm, name in names.items():
        tau = 0.5 if algorithm == "online_ipo" else 0.1
        assert NashAlgorithm(algorithm, tau=tau).solver(log_ref).name == name


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: NashAlgorithm("spo"), "name must be one of"),
        (lambda: NashAlgorithm("online_ipo", tau=0.0), "tau > 0"),
        (lambda: NashAlgorithm("inpo", step_size=2.0, tau=1.0), "step_size \\* tau"),
        (lambda: NashAlgorithm("mnpo", num_players=3, opponent_weights=(1.0,)), "opponent_weights"),
        (lambda: OnlineLoopConfig(batch_size=0), "batch_size"),
    ],
)
def test_algorithm_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_vocab_mismatch_is_rejected(tmp_path):
    with pytest.raises((ConfigError, ValueError), match="vocab_size"):
        _config(tmp_path, "inpo", "testbed.alphabet_size=4")


def test_sppo_fits_land_next_to_its_implied_update(tmp_path):
    """SPPO regresses log π(y)/π_t(y) on s(P̂(y ≻ π_t) − ½): each fitted policy lands near the
    implied update π_t e^{s(Pπ_t − ½)} of its own π_t (the regression leaves π's normaliser
    free, so not exactly on it), and the duality gap falls."""
    result = train(_config(tmp_path, "sppo", "run.steps=6"), quiet=True)
    h = result.task.exact_history.history()
    tracking = np.asarray(h.tracking_kl)
    assert np.all(np.isfinite(tracking)) and np.median(tracking) < 0.05, tracking
    steps = [float(kl_divergence(h.log_policies[t + 1], h.log_policies[t]))
             for t in range(6)]  # fmt: skip
    assert np.median(tracking) < 0.5 * np.median(steps)  # closer to T(π_t) than a step is long
    gaps = np.asarray(h.duality_gap)
    assert gaps[-1] < 0.8 * gaps[0], gaps
