"""Contract tests run over every solver, plus one-step hand-derived updates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import games as G

TAU = 0.2
SOLVERS = {
    "omd": lambda: G.omd(0.3),
    "sppo": lambda: G.sppo(0.3),
    "inpo": lambda: G.inpo(0.3, tau=TAU),
    "inpo_schedule": lambda: G.inpo(G.decaying_step_size(TAU), tau=TAU),
    "nash_md": lambda: G.nash_md(0.3, tau=TAU),
    "onpo": lambda: G.onpo(0.3),
    "egpo": lambda: G.egpo(0.3, tau=TAU),
    "mnpo_history": lambda: G.mnpo(0.3, num_players=3),
    "mnpo_weighted": lambda: G.mnpo(0.3, num_players=3, tau=TAU, opponent_weights=[0.7, 0.3]),
    "mnpo_current": lambda: G.mnpo(0.3, num_players=4, opponents="current"),
}


def _game(k=5, seed=0):
    return G.random_game(k, key=jax.random.key(seed))


def _probs(x):
    return np.exp(np.asarray(x, np.float64))


@pytest.mark.parametrize("name", list(SOLVERS))
def test_step_keeps_a_normalised_policy_and_stable_state(name):
    solver = SOLVERS[name]()
    game = _game()
    state0 = solver.init(game)
    state1 = jax.jit(solver.step)(game, state0)
    spec = lambda s: jax.tree.map(lambda x: (jnp.shape(x), jnp.asarray(x).dtype), s)
    assert spec(state0) == spec(state1)
    assert abs(_probs(state1.log_policy).sum() - 1) < 1e-5
    assert int(state1.count) == 1


@pytest.mark.parametrize("name", list(SOLVERS))
def test_run_is_jittable_and_vmappable_over_games(name):
    solver = SOLVERS[name]()
    keys = jax.random.split(jax.random.key(1), 4)
    batch = jax.vmap(lambda k: G.random_game(5, key=k))(keys)
    traj = jax.jit(jax.vmap(lambda g: G.run(solver, g, 30)))(batch)
    assert traj.avg_gap.shape == (4, 30) and traj.last_gap.shape == (4, 30)
    assert bool(jnp.isfinite(traj.avg_gap).all()) and bool((traj.avg_gap > -1e-5).all())
    assert bool(jnp.isnan(traj.avg_kl).all())  # no equilibrium given
    # Batched equals one-by-one.
    one = G.run(solver, G.PreferenceGame(batch.preference[2]), 30)
    np.testing.assert_allclose(
        np.asarray(traj.last_gap[2]), np.asarray(one.last_gap), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("name", ["inpo", "egpo", "mnpo_weighted"])
def test_regularised_nash_is_a_fixed_point_of_the_step(name):
    # (Nash-MD is not: with a constant step its fixed point is biased by O(step_size);
    # it reaches the Nash only with a decaying step.)
    solver = SOLVERS[name]()
    game = _game(4, 2)
    star = G.nash_equilibrium(game, TAU)
    state = solver.step(game, solver.init(game, star))
    np.testing.assert_allclose(_probs(state.log_policy), _probs(star), atol=1e-5)


def test_full_support_nash_is_a_fixed_point_of_onpo_and_omd():
    game = G.cyclic_game(5)
    star = G.nash_equilibrium(game)
    for solver in (G.omd(0.3), G.onpo(0.3)):
        state = solver.init(game, star)
        for _ in range(3):
            state = solver.step(game, state)
        np.testing.assert_allclose(_probs(state.log_policy), _probs(star), atol=1e-5)


def test_one_step_updates_match_hand_derivation():
    game = _game(4, 3)
    p = np.asarray(game.preference, np.float64)
    theta0 = jax.nn.log_softmax(jax.random.normal(jax.random.key(4), (4,)))
    pi = _probs(theta0)
    ref = np.full(4, 0.25)
    n = lambda x: x / x.sum()
    s, tau = 0.3, TAU
    # INPO: π ∝ π^{1-sτ} ref^{sτ} exp(s Pπ)
    got = G.inpo(s, tau=tau).step(game, G.inpo(s, tau=tau).init(game, theta0)).log_policy
    want = n(pi ** (1 - s * tau) * ref ** (s * tau) * np.exp(s * p @ pi))
    np.testing.assert_allclose(_probs(got), want, rtol=1e-4)
    # Nash-MD: μ ∝ π^{1-sτ} ref^{sτ}; π ∝ μ exp(s Pμ)
    mu = n(pi ** (1 - s * tau) * ref ** (s * tau))
    solver = G.nash_md(s, tau=tau)
    got = solver.step(game, solver.init(game, theta0)).log_policy
    np.testing.assert_allclose(_probs(got), n(mu * np.exp(s * p @ mu)), rtol=1e-4)
    # EGPO
    solver = G.egpo(s, tau=tau)
    got = solver.step(game, solver.init(game, theta0)).log_policy
    half = n(pi ** (1 - s * tau) * ref ** (s * tau) * np.exp(s * p @ pi))
    want = n(pi ** (1 - s * tau) * ref ** (s * tau) * np.exp(s * p @ half))
    np.testing.assert_allclose(_probs(got), want, rtol=1e-4)
    # ONPO first step: π' = π0 exp(sPπ0), π1 = π' exp(sPπ0)
    solver = G.onpo(s)
    st = solver.step(game, solver.init(game, theta0))
    sec = n(pi * np.exp(s * p @ pi))
    np.testing.assert_allclose(_probs(st.opt_state.secondary), sec, rtol=1e-4)
    np.testing.assert_allclose(_probs(st.log_policy), n(sec * np.exp(s * p @ pi)), rtol=1e-4)


def test_mnpo_history_update_by_hand():
    game = _game(4, 5)
    p = np.asarray(game.preference, np.float64)
    s = 0.4
    solver = G.mnpo(s, num_players=3, opponent_weights=[0.6, 0.4])
    state = solver.init(game)
    state = solver.step(game, state)
    pi1 = _probs(state.log_policy)
    pi0 = np.full(4, 0.25)
    state = solver.step(game, state)
    anchor = 0.6 * np.log(pi1) + 0.4 * np.log(pi0)
    want = np.exp(anchor + s * (0.6 * p @ pi1 + 0.4 * p @ pi0))
    np.testing.assert_allclose(_probs(state.log_policy), want / want.sum(), rtol=1e-4)
    np.testing.assert_allclose(_probs(state.history[1]), pi1, rtol=1e-5)


def test_mnpo_argument_errors():
    with pytest.raises(ValueError, match="num_players"):
        G.mnpo(0.1, num_players=1)
    with pytest.raises(ValueError, match="opponent_weights"):
        G.mnpo(0.1, num_players=3, opponent_weights=[1.0])
    with pytest.raises(ValueError, match="opponents"):
        G.mnpo(0.1, num_players=3, opponents="past")
    solver = G.mnpo(0.1, num_players=3)
    mg = G.plackett_luce_game(jnp.asarray([0.0, 1.0]), 4)
    with pytest.raises(ValueError, match="4-player"):
        solver.init(mg)


@pytest.mark.parametrize("bad", [0.0, -0.1])
def test_solvers_reject_bad_step_size(bad):
    for make in (G.omd, G.onpo, G.sppo):
        with pytest.raises(ValueError, match="step_size"):
            make(bad)
    with pytest.raises(ValueError, match="tau"):
        G.inpo(0.1, tau=-1.0)


def test_run_reports_kl_to_a_given_equilibrium_and_rejects_zero_steps():
    game = _game(4, 6)
    star = G.nash_equilibrium(game, TAU)
    traj = G.run(G.egpo(0.3, tau=TAU), game, 50, equilibrium=star)
    assert float(traj.last_kl[-1]) < float(traj.last_kl[0])
    with pytest.raises(ValueError, match="num_steps"):
        G.run(G.omd(0.1), game, 0)


def test_run_on_a_multiplayer_game():
    mg = G.plackett_luce_game(jax.random.normal(jax.random.key(7), (2, 4)), 3)
    traj = G.run(G.mnpo(0.5, num_players=3, opponents="current"), mg, 40)
    assert traj.avg_gap.shape == (40,)
    assert float(traj.avg_gap[-1]) < float(traj.avg_gap[0])
