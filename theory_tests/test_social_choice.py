"""Property tests of Condorcet cycles and maximal lotteries (ALGORITHMS_2.md, social choice).

Statements ([derived ✓num] in the notes; settled here):

(a) The LP max_p min_j (Mᵀp)_j has value 0 and gives p = (.4, .2, .4) for group sizes
    (4, 3, 3) and (5/9, 1/9, 1/3) for (4, 3, 2); for every cyclic profile it equals the
    opposite-edge rule p_A ∝ m_BC, p_B ∝ m_CA, p_C ∝ m_AB. Wrong variant: weighting each
    response by its own edge fails Mᵀp ≥ 0 unless all margins are equal.
(b) No pure policy is an equilibrium in a cycle: every vertex has a majority-preferred
    alternative (gap > 0). The BT fit ranks by Borda score (A .134, B 0, C −.134 on (4,3,3);
    A and B tied on (4,3,2)), and its winner is beaten by a majority (C over A, .6) — the
    claim "the BT winner is majority-unbeaten" is rejected while the lottery is unbeaten.
(c) p is invariant to scaling group sizes by k, and equal whether M is P − ½ or the raw vote
    margins (proportional with full rankings), and equal to the Nash equilibrium of P.
General random profiles (K ≤ 6, odd voter totals so the lottery is unique): Mᵀp ≥ 0, the
lottery is the Condorcet winner's vertex when there is one; Nash self-play (OMD/INPO average,
ONPO, MNPO) reaches the lottery on the cycle.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jaxalign import games as G
from theory_tests.strategies import examples

CYCLE = [[0, 1, 2], [1, 2, 0], [2, 0, 1]]  # A≻B≻C, B≻C≻A, C≻A≻B


def lottery_violation(game: G.PreferenceGame, p: np.ndarray) -> float:
    """max_j (P p)_j − ½ clipped at 0: how much some response beats p (0 for the lottery)."""
    return max(0.0, float(np.max(np.asarray(game.preference) @ p)) - 0.5)


def own_edge_lottery(game: G.PreferenceGame) -> np.ndarray:
    """Wrong variant: p_A ∝ m_AB, p_B ∝ m_BC, p_C ∝ m_CA (each response's own edge)."""
    m = np.abs(np.asarray(game.preference) - 0.5)
    w = np.array([m[0, 1], m[1, 2], m[2, 0]])
    return w / w.sum()


@st.composite
def cyclic_sizes(draw):
    """Group sizes (n₁, n₂, n₃) for which the profile CYCLE has a strict majority on every pair."""
    n = [draw(st.integers(1, 40)) for _ in range(3)]
    assume(n[0] + n[2] > n[1] and n[0] + n[1] > n[2] and n[1] + n[2] > n[0])
    return n


# ---------------------------------------------------------------------------------------------
# (a) the maximal lottery of the Condorcet cycle.


@pytest.mark.parametrize(
    "sizes, expected",
    [([4, 3, 3], [0.4, 0.2, 0.4]), ([4, 3, 2], [5 / 9, 1 / 9, 1 / 3])],
)
def test_condorcet_examples_lottery_and_value(sizes, expected):
    game = G.voting_game(CYCLE, sizes)
    n1, n2, n3 = sizes
    pref = np.asarray(game.preference)
    np.testing.assert_allclose(
        [pref[0, 1], pref[1, 2], pref[2, 0]],
        np.array([n1 + n3, n1 + n2, n2 + n3]) / (n1 + n2 + n3),
    )
    margins = G.majority_margins(game)
    p = np.asarray(G.maximal_lottery(margins))
    np.testing.assert_allclose(p, expected, atol=1e-10)
    value = np.min(np.asarray(margins).T @ p)
    assert abs(value) < 1e-12  # max_p min_j (Mᵀp)_j = 0
    np.testing.assert_allclose(np.asarray(game.preference) @ p, 0.5, atol=1e-12)  # all tie p
    assert lottery_violation(game, own_edge_lottery(game)) > 0.01


@settings(max_examples=examples(25))
@given(sizes=cyclic_sizes())
def test_cycle_lottery_is_the_opposite_edge_rule(sizes):
    game = G.voting_game(CYCLE, sizes)
    lp = np.asarray(G.maximal_lottery(G.vote_margins(CYCLE, sizes)))
    closed = np.asarray(G.three_cycle_lottery(game))
    np.testing.assert_allclose(lp, closed, atol=1e-9)
    assert lottery_violation(game, closed) < 1e-12
    m = np.abs(np.asarray(game.preference) - 0.5)
    equal = np.ptp([m[0, 1], m[1, 2], m[2, 0]]) < 1e-12
    assert equal or lottery_violation(game, own_edge_lottery(game)) > 1e-6


# ---------------------------------------------------------------------------------------------
# (b) no pure equilibrium; the Bradley–Terry winner is beaten.


@settings(max_examples=examples(25))
@given(sizes=cyclic_sizes())
def test_no_vertex_is_an_equilibrium_of_a_cycle(sizes):
    game = G.voting_game(CYCLE, sizes)
    assert int(G.condorcet_winner(game)) == -1
    for i in range(3):
        vertex = np.eye(3)[i]
        challenger, rate = G.strongest_challenger(game, vertex)
        assert int(challenger) != i and float(rate) > 0.5
        assert float(G.duality_gap(game, jnp.log(jnp.asarray(vertex)))) > 0


def test_bt_fit_on_the_examples_matches_the_notes():
    game = G.voting_game(CYCLE, [4, 3, 3])
    s = np.asarray(G.bradley_terry_fit(game))
    np.testing.assert_allclose(s, [0.134, 0.0, -0.134], atol=5e-4)
    np.testing.assert_allclose(np.asarray(G.borda_scores(game)) * 10, [11, 10, 9])
    winner = int(np.argmax(s))
    challenger, rate = G.strongest_challenger(game, np.eye(3)[winner])
    assert (winner, int(challenger)) == (0, 2) and float(rate) == pytest.approx(0.6)
    tied = np.asarray(G.bradley_terry_fit(G.voting_game(CYCLE, [4, 3, 2])))
    assert tied[0] == pytest.approx(tied[1], abs=1e-12) and tied[0] > tied[2]


def majority_unbeaten(game: G.PreferenceGame, p: np.ndarray) -> bool:
    return float(G.strongest_challenger(game, p)[1]) <= 0.5 + 1e-12


@settings(max_examples=examples(25))
@given(sizes=cyclic_sizes())
def test_bt_winner_is_the_borda_winner_and_a_majority_beats_it(sizes):
    game = G.voting_game(CYCLE, sizes)
    s = np.asarray(G.bradley_terry_fit(game))
    borda = np.asarray(G.borda_scores(game))
    # Stationarity Σ_j σ(s_i − s_j) = Σ_j P_ij, hence the Borda order (ties within 1e-9).
    sig = 1 / (1 + np.exp(-(s[:, None] - s[None, :])))
    np.testing.assert_allclose(sig.sum(1) - 0.5, borda, atol=1e-10)
    for i, j in itertools.permutations(range(3), 2):
        if borda[i] > borda[j] + 1e-9:
            assert s[i] > s[j]
    bt_vertex = np.eye(3)[int(np.argmax(s))]
    lottery = np.asarray(G.maximal_lottery(G.majority_margins(game)))
    assert majority_unbeaten(game, lottery)
    assert not majority_unbeaten(game, bt_vertex)  # the claim "BT winner unbeaten" is false


# ---------------------------------------------------------------------------------------------
# (c) invariances, and general profiles.


@settings(max_examples=examples(25))
@given(sizes=cyclic_sizes(), k=st.integers(2, 9))
def test_lottery_is_invariant_to_scaling_and_to_the_margin_convention(sizes, k):
    p_half = np.asarray(G.maximal_lottery(G.majority_margins(G.voting_game(CYCLE, sizes))))
    p_raw = np.asarray(G.maximal_lottery(G.vote_margins(CYCLE, sizes)))
    p_scaled = np.asarray(G.maximal_lottery(G.vote_margins(CYCLE, [k * n for n in sizes])))
    p_nash = np.exp(np.asarray(G.nash_equilibrium(G.voting_game(CYCLE, sizes))))
    for other in (p_raw, p_scaled, p_nash):
        np.testing.assert_allclose(other, p_half, atol=1e-9)
    n = sum(sizes)
    game = G.voting_game(CYCLE, sizes)
    np.testing.assert_allclose(
        np.asarray(G.vote_margins(CYCLE, sizes)),
        n * (2 * np.asarray(game.preference) - 1),
        atol=1e-12,
    )


@st.composite
def profiles(draw):
    """A random voting profile over K responses with an odd number of voters."""
    k = draw(st.integers(2, 6))
    groups = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    rankings = np.stack([rng.permutation(k) for _ in range(groups)])
    sizes = rng.integers(1, 8, groups)
    if sizes.sum() % 2 == 0:
        sizes[0] += 1
    return rankings, sizes


@settings(max_examples=examples(30))
@given(profile=profiles())
def test_lottery_of_random_profiles_is_unbeaten_and_picks_a_condorcet_winner(profile):
    rankings, sizes = profile
    game = G.voting_game(rankings, sizes)
    margins = np.asarray(G.vote_margins(rankings, sizes))
    p = np.asarray(G.maximal_lottery(margins))
    assert np.min(margins.T @ p) >= -1e-9
    assert lottery_violation(game, p) < 1e-10
    winner = int(G.condorcet_winner(game))
    if winner >= 0:
        np.testing.assert_allclose(p, np.eye(len(p))[winner], atol=1e-9)
    else:
        # Every pure response is beaten by a majority: no vertex is unbeaten.
        assert not any(majority_unbeaten(game, np.eye(len(p))[i]) for i in range(len(p)))
    np.testing.assert_allclose(np.exp(np.asarray(G.nash_equilibrium(game))), p, atol=1e-7)


@pytest.mark.parametrize(
    "name, make, which, tol",
    [
        ("omd", lambda: G.omd(0.2), "avg", 3e-2),
        ("inpo", lambda: G.inpo(0.2, tau=0.0), "avg", 3e-2),
        ("onpo", lambda: G.onpo(0.5), "avg", 1e-3),
        ("onpo", lambda: G.onpo(0.5), "last", 5e-3),
        ("mnpo", lambda: G.mnpo(0.2, num_players=3), "avg", 3e-2),
    ],
)
def test_nash_self_play_reaches_the_maximal_lottery(name, make, which, tol):
    game = G.voting_game(CYCLE, [4.0, 3.0, 3.0])
    lottery = jnp.log(jnp.asarray([0.4, 0.2, 0.4]))
    traj = jax.jit(lambda g: G.run(make(), g, 3000, equilibrium=lottery))(game)
    gaps = np.asarray(traj.avg_gap if which == "avg" else traj.last_gap)
    kls = np.asarray(traj.avg_kl if which == "avg" else traj.last_kl)
    assert gaps[-1] < tol and kls[-1] < tol
    assert gaps[-1] < 0.1 * gaps[30]  # and it is still shrinking, not stalled
    if name == "onpo" and which == "avg":  # ONPO's bound DualGap(π̄_T) ≤ 2D/(sT), D = log 3
        t = np.arange(1, gaps.shape[0] + 1)
        assert np.all(gaps <= 2 * np.log(3) / (0.5 * t) + 1e-12)
    # The KL-regularised RLHF path toward the BT winner stays exploitable: gap ≥ 2·0.6 − 1
    # at the vertex, and > 0 for every β (every β-tilt of the BT scores is beaten).
    s = G.bradley_terry_fit(game)
    for beta in [1.0, 0.1, 0.01]:
        tilt = jax.nn.log_softmax(s / beta)
        assert float(G.duality_gap(game, tilt)) > 0.01


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: G.voting_game([[0, 1, 1]], [1.0]), "permutation"),
        (lambda: G.voting_game([[0, 1, 2]], [1.0, 2.0]), "one per ranking"),
        (lambda: G.voting_game([[0, 1, 2]], [-1.0]), ">= 0"),
        (lambda: G.voting_game([[0.0, 1.0]], [1.0]), "integer"),
        (lambda: G.voting_game([[0, 1]], [0.0]), "positive total"),
        (lambda: G.maximal_lottery(np.array([[0.0, 1.0], [1.0, 0.0]])), "skew-symmetric"),
        (lambda: G.maximal_lottery(np.zeros((2, 3))), "square"),
        (lambda: G.three_cycle_lottery(G.voting_game([[0, 1, 2]], [1.0])), "cycle"),
        (lambda: G.three_cycle_lottery(G.voting_game([[0, 1]], [1.0])), "K = 3"),
        (lambda: G.bradley_terry_fit(G.voting_game([[0, 1, 2]], [1.0])), "l2 > 0"),
        (lambda: G.strongest_challenger(G.voting_game(CYCLE, [1, 1, 1]), [0.5, 0.6, 0]), "sum"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
