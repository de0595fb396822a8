"""Games, constructors, validation, exact gaps and equilibria."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

from jaxalign import games as G


def _rps():
    return G.cyclic_game(3)


# --------------------------------------------------------------------------- constructors


@pytest.mark.parametrize(
    "make",
    [
        lambda: G.random_game(5, key=jax.random.key(0)),
        lambda: G.cyclic_game(5, strength=0.8),
        lambda: G.cyclic_game(4, perturbation=0.3, key=jax.random.key(1)),
        lambda: G.bradley_terry_game(jnp.asarray([0.0, 1.0, -2.0])),
        lambda: G.annotator_mixture_game(jnp.asarray([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0]])),
        lambda: G.random_annotator_mixture_game(6, 3, key=jax.random.key(2)),
    ],
)
def test_constructors_give_valid_games(make):
    game = make()
    p = np.asarray(game.preference)
    np.testing.assert_allclose(p + p.T, 1.0, atol=1e-6)
    assert p.min() >= 0 and p.max() <= 1
    G.preference_game(p)  # passes validation


def test_rps_is_the_classic_cycle():
    p = np.asarray(_rps().preference)
    np.testing.assert_allclose(p, [[0.5, 1, 0], [0, 0.5, 1], [1, 0, 0.5]])


def test_random_game_is_reproducible_and_key_dependent():
    a = G.random_game(4, key=jax.random.key(0)).preference
    b = G.random_game(4, key=jax.random.key(0)).preference
    c = G.random_game(4, key=jax.random.key(1)).preference
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize(
    ("p", "match"),
    [
        (np.array([[0.5, 0.7], [0.7, 0.5]]), r"P \+ Pᵀ = 1"),
        (np.array([[0.5, 1.2], [-0.2, 0.5]]), r"\[0, 1\]"),
        (np.ones((2, 3)) * 0.5, "square"),
        (np.ones(3) * 0.5, "2-D"),
        (np.array([[0.5, np.nan], [np.nan, 0.5]]), r"\[0, 1\]"),
    ],
)
def test_preference_game_rejects_bad_matrices(p, match):
    with pytest.raises(ValueError, match=match):
        G.preference_game(p)


def test_constructor_argument_errors():
    with pytest.raises(ValueError, match="key"):
        G.cyclic_game(3, perturbation=0.1)
    with pytest.raises(ValueError, match="strength"):
        G.cyclic_game(3, strength=1.5)
    with pytest.raises(ValueError, match="num_players"):
        G.plackett_luce_game(jnp.zeros(3), 1)
    with pytest.raises(ValueError, match="sum to 1"):
        G.annotator_mixture_game(jnp.zeros((2, 3)), jnp.asarray([0.5, 0.6]))
    with pytest.raises(ValueError, match="symmetric"):
        G.multiplayer_game(np.random.default_rng(0).uniform(size=(2, 2, 2)))


def test_plackett_luce_probabilities_and_two_player_reduction():
    r = jnp.asarray([[0.0, 1.0, -1.0], [2.0, 0.0, 0.5]])
    w = jnp.asarray([0.3, 0.7])
    game = G.plackett_luce_game(r, 3, w)
    t = np.asarray(game.payoff)
    rn, wn = np.asarray(r), np.asarray(w)
    for y in itertools.product(range(3), repeat=3):
        want = sum(wn[a] * np.exp(rn[a, y[0]]) / np.exp(rn[a, list(y)]).sum() for a in range(2))
        assert abs(t[y] - want) < 1e-6
    # Exactly one of the n responses wins: the payoffs of the n seats sum to one.
    s = t + np.transpose(t, (1, 0, 2)) + np.transpose(t, (2, 1, 0))
    np.testing.assert_allclose(s, 1.0, atol=1e-6)
    two = G.plackett_luce_game(r, 2, w)
    np.testing.assert_allclose(
        np.asarray(two.payoff), np.asarray(G.annotator_mixture_game(r, w).preference), atol=1e-6
    )


def test_pairwise_multiplayer_game_payoff_is_average_win_rate():
    game = G.random_game(4, key=jax.random.key(3))
    mg = G.pairwise_multiplayer_game(game, 3)
    opp = jax.nn.log_softmax(jax.random.normal(jax.random.key(4), (2, 4)))
    u = G.multiplayer_payoff(mg, opp)
    p = game.preference
    want = (p @ jnp.exp(opp[0]) + p @ jnp.exp(opp[1])) / 2
    np.testing.assert_allclose(np.asarray(u), np.asarray(want), rtol=1e-5)


# --------------------------------------------------------------------------- gaps


def test_gap_closed_form_unregularised():
    game = G.random_game(6, key=jax.random.key(5))
    pi = jax.nn.log_softmax(jax.random.normal(jax.random.key(6), (6,)))
    gap = G.duality_gap(game, pi)
    want = 2 * jnp.max(game.preference @ jnp.exp(pi)) - 1
    np.testing.assert_allclose(float(gap), float(want), atol=1e-6)


def test_regularised_gap_is_twice_tau_kl_to_best_response():
    game = G.random_game(5, key=jax.random.key(7))
    pi = jax.nn.log_softmax(jax.random.normal(jax.random.key(8), (5,)))
    ref = jax.nn.log_softmax(jax.random.normal(jax.random.key(9), (5,)))
    tau = 0.3
    gap = G.duality_gap(game, pi, tau, ref)
    br = G.best_response(game, pi, tau, ref)
    np.testing.assert_allclose(float(gap), float(2 * tau * G.kl_divergence(pi, br)), rtol=1e-4)


def test_regularised_best_response_beats_random_policies():
    game = G.random_game(4, key=jax.random.key(10))
    pi = jax.nn.log_softmax(jax.random.normal(jax.random.key(11), (4,)))
    tau = 0.2
    u = game.preference @ jnp.exp(pi)
    value = lambda q: jnp.exp(q) @ u - tau * G.kl_divergence(q, jnp.full(4, -jnp.log(4.0)))
    best = value(G.best_response(game, pi, tau))
    others = jax.vmap(value)(jax.nn.log_softmax(jax.random.normal(jax.random.key(12), (200, 4))))
    assert float(best) >= float(jnp.max(others))


def test_exploitability_equals_gap_for_symmetric_profile():
    game = G.random_game(4, key=jax.random.key(13))
    pi = jax.nn.log_softmax(jax.random.normal(jax.random.key(14), (4,)))
    for tau in (0.0, 0.5):
        e = G.exploitability(game, jnp.stack([pi, pi]), tau)
        np.testing.assert_allclose(float(e), float(G.duality_gap(game, pi, tau)), atol=1e-5)
        half = G.multiplayer_duality_gap(game, pi, tau=tau)
        np.testing.assert_allclose(float(half), float(G.duality_gap(game, pi, tau)) / 2, atol=1e-5)


def test_gap_checks_policy_shape_and_values():
    game = _rps()
    with pytest.raises(ValueError, match="shape"):
        G.duality_gap(game, jnp.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        G.duality_gap(game, jnp.asarray([0.0, jnp.nan, 0.0]))
    with pytest.raises(ValueError, match="tau"):
        G.duality_gap(game, jnp.zeros(3), tau=-1.0)


def test_gaps_vmap_over_a_batch_of_games():
    keys = jax.random.split(jax.random.key(15), 8)
    batch = jax.vmap(lambda k: G.random_game(5, key=k))(keys)
    pis = jnp.zeros((8, 5))
    gaps = jax.jit(jax.vmap(lambda g, p: G.duality_gap(g, p, 0.1)))(batch, pis)
    assert gaps.shape == (8,) and bool((gaps >= -1e-6).all())


# --------------------------------------------------------------------------- equilibria


def test_rps_nash_is_uniform():
    pi = G.nash_equilibrium(_rps())
    np.testing.assert_allclose(np.exp(np.asarray(pi)), 1 / 3, atol=1e-6)


def test_bradley_terry_nash_is_the_best_response():
    pi = G.nash_equilibrium(G.bradley_terry_game(jnp.asarray([0.0, 2.0, 1.0])))
    np.testing.assert_allclose(np.exp(np.asarray(pi)), [0, 1, 0], atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_lp_nash_has_zero_gap_and_matches_scipy_value(seed):
    game = G.random_game(7, key=jax.random.key(seed))
    pi = G.nash_equilibrium(game)
    assert float(G.duality_gap(game, pi)) < 1e-5
    # Independent check: value of the row player's LP is 1/2 (symmetric game).
    p = np.asarray(game.preference, np.float64)
    res = linprog(
        np.r_[np.zeros(7), -1.0],
        A_ub=np.c_[-p.T, np.ones(7)],
        b_ub=np.zeros(7),
        A_eq=np.r_[np.ones(7), 0.0][None],
        b_eq=[1.0],
        bounds=[(0, None)] * 7 + [(None, None)],
    )
    assert abs(-res.fun - 0.5) < 1e-7


@pytest.mark.parametrize("tau", [2.0, 0.1, 0.005])
def test_regularised_nash_is_a_fixed_point(tau):
    game = G.random_game(6, key=jax.random.key(20))
    ref = jax.nn.log_softmax(jax.random.normal(jax.random.key(21), (6,)))
    pi = G.nash_equilibrium(game, tau, ref)
    assert float(G.nash_residual(game, pi, tau, ref)) < 1e-3
    assert float(G.duality_gap(game, pi, tau, ref)) < 1e-5
    br = G.best_response(game, pi, tau, ref)
    np.testing.assert_allclose(np.exp(np.asarray(br)), np.exp(np.asarray(pi)), atol=1e-5)


def test_regularised_nash_jits_and_vmaps():
    keys = jax.random.split(jax.random.key(22), 4)
    batch = jax.vmap(lambda k: G.random_game(5, key=k))(keys)
    pis = jax.jit(jax.vmap(lambda g: G.nash_equilibrium(g, 0.2)))(batch)
    for i in range(4):
        g = G.PreferenceGame(batch.preference[i])
        assert float(G.duality_gap(g, pis[i], 0.2)) < 1e-5


def test_lp_nash_refuses_tracing():
    with pytest.raises(ValueError, match="LP"):
        jax.jit(lambda g: G.nash_equilibrium(g))(_rps())


def test_nash_rejects_ref_without_full_support():
    with pytest.raises(ValueError, match="full support"):
        G.nash_equilibrium(_rps(), 0.1, jnp.asarray([0.0, -jnp.inf, 0.0]))
