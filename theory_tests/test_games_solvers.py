"""Every solver iterates exactly the update its paper writes (ALGORITHMS.md §2–3).

The reference updates are re-derived here in numpy, in probabilities, from the formulas
of ALGORITHMS.md — not from the library's mirror-step plumbing — and run next to the
solver for several iterations with a *decaying* step schedule (so which step an
iteration uses is checked too). Non-uniform references, K ≥ 3, MNPO with n ≥ 3 players,
history opponents and non-uniform opponent weights.

* OMD / SPPO: π⁺ ∝ π e^{sPπ};  INPO: π⁺ ∝ π^{1−sτ} π_ref^{sτ} e^{sPπ}.
* Nash-MD: μ ∝ π^{1−sτ} π_ref^{sτ}, π⁺ ∝ μ e^{sPμ}.
* ONPO: π'⁺ ∝ π' e^{s u}, π⁺ ∝ π'⁺ e^{s u}, u = Pπ (− τ log(π/π_ref) if τ > 0).
* EGPO: π_½ ∝ π^{1−sτ} π_ref^{sτ} e^{sPπ}, π⁺ ∝ π^{1−sτ} π_ref^{sτ} e^{sPπ_½}.
* MNPO: a = Σ_j λ_j log π_{t−j}, π⁺ ∝ e^{(1−sτ)a + sτ log π_ref + s Σ_j λ_j Pπ_{t−j}};
  "current" opponents in an n-player game: u(y) = E P(y ≻ {y_j}), y_j ~ π_t.
* The decaying schedule of the last-iterate theorems is 2/(τ(t+2)), admissible (sτ ≤ 1)
  from its first step.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxalign import games as G
from theory_tests.strategies import examples

STEPS = 5


def _normalise(logits: np.ndarray) -> np.ndarray:
    m = logits.max()
    return logits - m - np.log(np.exp(logits - m).sum())


def _step_at(s0: float, t: int) -> float:
    return s0 / (1 + 0.5 * t)  # the schedule both sides use


def _reference(name, p, theta0, log_ref, s0, tau, lam, payoff=None) -> np.ndarray:
    """[STEPS, K] log-policies of the hand-derived updates."""
    theta, secondary, out = theta0.copy(), theta0.copy(), []
    history = [theta0.copy()] * (len(lam) if lam is not None else 1)
    for t in range(STEPS):
        s = _step_at(s0, t)
        pi = np.exp(theta)
        if name in ("omd", "sppo"):
            theta = _normalise(theta + s * (p @ pi))
        elif name == "inpo":
            theta = _normalise((1 - s * tau) * theta + s * tau * log_ref + s * (p @ pi))
        elif name == "nash_md":
            mix = _normalise((1 - s * tau) * theta + s * tau * log_ref)
            theta = _normalise(mix + s * (p @ np.exp(mix)))
        elif name in ("onpo", "onpo_regularised"):
            u = p @ pi - (tau * (theta - log_ref) if name == "onpo_regularised" else 0)
            secondary = _normalise(secondary + s * u)
            theta = _normalise(secondary + s * u)
        elif name == "egpo":
            base = (1 - s * tau) * theta + s * tau * log_ref
            half = _normalise(base + s * (p @ pi))
            theta = _normalise(base + s * (p @ np.exp(half)))
        elif name == "mnpo_history":
            anchor = sum(w * h for w, h in zip(lam, history))
            u = sum(w * (p @ np.exp(h)) for w, h in zip(lam, history))
            theta = _normalise((1 - s * tau) * anchor + s * tau * log_ref + s * u)
            history = [theta, *history[:-1]]
        elif name == "mnpo_current":
            # n = 3 one-vs-many game against two copies of π_t: u(y) = Σ T[y, a, b] π_a π_b.
            u = np.einsum("yab,a,b->y", payoff, pi, pi)
            theta = _normalise(theta + s * u)
        out.append(theta)
    return np.stack(out)


def _solver(name, s0, tau, log_ref, lam):
    def schedule(count):
        return s0 / (1 + 0.5 * count.astype(s0.dtype))

    if name == "omd":
        return G.omd(schedule)
    if name == "sppo":
        return G.sppo(schedule)
    if name == "inpo":
        return G.inpo(schedule, tau=tau, ref=log_ref)
    if name == "nash_md":
        return G.nash_md(schedule, tau=tau, ref=log_ref)
    if name == "onpo":
        return G.onpo(schedule)
    if name == "onpo_regularised":
        return G.onpo(schedule, tau=tau, ref=log_ref)
    if name == "egpo":
        return G.egpo(schedule, tau=tau, ref=log_ref)
    if name == "mnpo_history":
        n = lam.shape[0] + 1
        return G.mnpo(schedule, num_players=n, tau=tau, ref=log_ref, opponent_weights=lam)
    if name == "mnpo_current":
        return G.mnpo(schedule, num_players=3, opponents="current")
    raise ValueError(name)


@functools.partial(jax.jit, static_argnames=("name",))
def _trajectory(name, game, theta0, log_ref, s0, tau, lam):
    solver = _solver(name, s0, tau, log_ref, lam)

    def body(state, _):
        state = solver.step(game, state)
        return state, state.log_policy

    return jax.lax.scan(body, solver.init(game, theta0), None, length=STEPS)[1]


NAMES = [
    "omd",
    "sppo",
    "inpo",
    "nash_md",
    "onpo",
    "onpo_regularised",
    "egpo",
    "mnpo_history",
    "mnpo_current",
]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=examples(4))
@given(
    k=st.sampled_from([3, 5]),
    seed=st.integers(0, 2**31 - 1),
    s0=st.floats(0.05, 1.0),
    tau=st.sampled_from([0.1, 0.5]),
)
def test_solver_iterates_are_the_hand_derived_updates(name, k, seed, s0, tau):
    rng = np.random.default_rng(seed)
    game = G.random_game(k, key=jax.random.key(seed), scale=float(rng.uniform(0.5, 4)))
    p = np.asarray(game.preference)
    theta0 = _normalise(rng.normal(size=k))
    log_ref = _normalise(rng.normal(size=k))
    players = 4 if k == 3 else 3  # MNPO: n = 3 and n = 4 history opponents
    lam = rng.dirichlet(np.ones(players - 1)) if name == "mnpo_history" else None
    payoff = None
    if name == "mnpo_current":
        game = G.plackett_luce_game(rng.normal(size=(2, k)) * 2, 3, weights=[0.3, 0.7])
        payoff = np.asarray(game.payoff)
    want = _reference(name, p, theta0, log_ref, s0, tau, lam, payoff)
    got = _trajectory(
        name,
        game,
        jnp.asarray(theta0),
        jnp.asarray(log_ref),
        jnp.asarray(s0),
        tau,
        None if lam is None else jnp.asarray(lam),
    )
    np.testing.assert_allclose(np.exp(np.asarray(got)), np.exp(want), atol=1e-12)


@settings(max_examples=examples(4))
@given(seed=st.integers(0, 2**31 - 1), s0=st.floats(0.05, 1.0))
def test_run_averages_the_played_iterates_in_probability(seed, s0):
    """run()'s average iterate after t steps is (1/t) Σ_{i<t} π_i (probabilities, not
    logits), the iterate of the regret bounds, and its gap is the recorded avg_gap."""
    rng = np.random.default_rng(seed)
    game = G.random_game(4, key=jax.random.key(seed), scale=3.0)
    theta0 = _normalise(rng.normal(size=4))
    traj = _run_onpo(game, jnp.asarray(theta0), jnp.asarray(s0))
    iterates = np.vstack(
        [theta0, _reference("onpo", np.asarray(game.preference), theta0, None, s0, 0.0, None)]
    )
    average = np.exp(iterates[:STEPS]).mean(axis=0)
    np.testing.assert_allclose(np.exp(np.asarray(traj.average_log_policy)), average, atol=1e-12)
    gaps = [
        float(G.duality_gap(game, np.log(np.exp(iterates[:t]).mean(axis=0))))
        for t in range(1, STEPS + 1)
    ]
    np.testing.assert_allclose(np.asarray(traj.avg_gap), gaps, atol=1e-12)


@jax.jit
def _run_onpo(game, theta0, s0):
    return G.run(
        G.onpo(lambda c: s0 / (1 + 0.5 * c.astype(s0.dtype))), game, STEPS, log_policy=theta0
    )


def test_hand_derived_reference_rejects_a_lagging_mnpo_history():
    """The reference is not a copy of the solver: an MNPO whose history lags one step
    (opponents π_{t−1}, π_{t−2}, … instead of π_t, π_{t−1}, …) does not match it."""
    rng = np.random.default_rng(0)
    p = np.asarray(G.random_game(4, key=jax.random.key(0), scale=3.0).preference)
    theta0, log_ref = _normalise(rng.normal(size=4)), _normalise(rng.normal(size=4))
    lam = np.array([0.6, 0.3, 0.1])
    right = _reference("mnpo_history", p, theta0, log_ref, 0.8, 0.1, lam)
    shifted = _reference("mnpo_history", p, theta0, log_ref, 0.8, 0.1, np.r_[0, lam[:2]])
    assert np.max(np.abs(np.exp(right) - np.exp(shifted))) > 1e-3


# --------------------------------------------------------------------------- schedules


@settings(max_examples=examples(10))
@given(tau=st.floats(1e-3, 100.0))
def test_decaying_step_size_values_and_admissibility(tau):
    """s_t = 2/(τ(t+2)): s_t τ ≤ 1 for every t, with equality at t = 0 (the first step of
    INPO / Nash-MD forgets π_0 exactly, the largest admissible step)."""
    schedule = G.decaying_step_size(tau)
    t = np.arange(64)
    s = np.array([float(schedule(jnp.asarray(i, jnp.int32))) for i in t])
    np.testing.assert_allclose(s, 2 / (tau * (t + 2)), rtol=1e-12)
    assert np.all(s * tau <= 1 + 1e-12)
    assert abs(s[0] * tau - 1) <= 1e-12
    assert np.all(np.diff(s) < 0)


def test_first_decaying_step_forgets_the_start():
    """With s_0 τ = 1, INPO's first iterate is π_ref e^{Pπ_0/τ} whatever π_0's logits."""
    tau = 0.3
    game = G.random_game(5, key=jax.random.key(1), scale=2.0)
    solver = G.inpo(G.decaying_step_size(tau), tau=tau)
    for seed in range(3):
        theta0 = jax.nn.log_softmax(jax.random.normal(jax.random.key(seed), (5,)) * 3)
        got = solver.step(game, solver.init(game, theta0)).log_policy
        want = jax.nn.log_softmax(game.preference @ jnp.exp(theta0) / tau)
        np.testing.assert_allclose(np.exp(got), np.exp(want), atol=1e-12)


# --------------------------------------------------------------------------- oracle


def test_multiplayer_payoff_is_the_expectation_over_opponent_draws():
    """u(y) = E P(y ≻ {y_j}) by enumerating the opponents' draws (n = 4)."""
    rng = np.random.default_rng(2)
    game = G.plackett_luce_game(rng.normal(size=(3, 3)) * 2, 4)
    t = np.asarray(game.payoff)
    opp = np.log(rng.dirichlet(np.ones(3), size=3))
    want = np.zeros(3)
    for ys in itertools.product(range(3), repeat=3):
        want += t[(slice(None), *ys)] * np.prod([np.exp(opp[j, y]) for j, y in enumerate(ys)])
    got = G.multiplayer_payoff(game, jnp.asarray(opp))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-13)
