"""Population-loss lemma and "tabular minimiser = closed-form update" for every solver.

* The λ_p pairwise loss and its centred regression form differ by a constant in the
  policy — only when pairs are drawn from the distribution in the win rates (§2).
* Minimising each algorithm's population loss on a tabular policy (one exact Newton
  step: the loss is quadratic in the logits) gives the solver's next iterate — for every
  solver with a pairwise loss, K ≥ 3, a non-uniform reference, MNPO with n = 3 and 4
  history opponents of non-uniform weights; for MNPO this needs pairs from the opponents'
  mixture (§3 caveat), and fails with pairs from π_t. With K = 2 the win-rate difference
  P₁₂ − ½ does not depend on the opponent, so these tests use K ≥ 3.
* One SGD step on EGPO's tabular loss with lr = sτN/4 is the EGPO step.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxalign import games as G
from theory_tests.strategies import examples


@st.composite
def instances(draw, sizes=(3, 4, 5, 6, 7)):
    k = draw(st.sampled_from(sizes))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    game = G.random_game(k, key=jax.random.key(seed), scale=float(rng.uniform(0.5, 4)))
    mu = jnp.asarray(rng.normal(size=k) * rng.uniform(0.1, 2))
    return game, jax.nn.log_softmax(mu), rng


def _newton_minimiser(loss, theta0):
    """Exact minimiser of a convex quadratic (Hessian singular along 1: least squares)."""
    g = jax.grad(loss)(theta0)
    h = jax.hessian(loss)(theta0)
    delta = jnp.linalg.lstsq(h, -g)[0]
    return jax.nn.log_softmax(theta0 + delta)


@settings(max_examples=examples(6))
@given(inst=instances(), c=st.floats(0.01, 5.0))
def test_population_loss_lemma_constant_offset(inst, c):
    game, mu, rng = inst
    k = game.num_responses
    anchor = jnp.asarray(rng.normal(size=k))
    target = G.PairwiseTarget(anchor, jnp.asarray(c), mu)
    offsets = []
    for _ in range(3):
        f = jnp.asarray(rng.normal(size=k) * 3)
        offsets.append(
            float(
                G.pairwise_population_loss(f, game, target)
                - G.centred_population_loss(f, game, target)
            )
        )
    np.testing.assert_allclose(offsets, offsets[0], atol=1e-10)


@settings(max_examples=examples(6))
@given(inst=instances(), c=st.floats(0.1, 5.0))
def test_lemma_fails_when_pairs_come_from_another_distribution(inst, c):
    """Sensitivity / MNPO caveat: win rates against ν but pairs from μ ≠ ν."""
    game, mu, rng = inst
    k = game.num_responses
    nu = jax.nn.log_softmax(jnp.asarray(rng.normal(size=k) * 2))
    # Only differences of win rates matter (for K = 2 they do not depend on ν at all).
    win_gap = float(jnp.ptp(game.preference @ (jnp.exp(mu) - jnp.exp(nu))))
    if win_gap < 1e-2:
        return
    target = G.PairwiseTarget(jnp.zeros(k), jnp.asarray(c), mu)
    offs = []
    for _ in range(4):
        f = jnp.asarray(rng.normal(size=k) * 3)
        offs.append(
            float(
                G.pairwise_population_loss(f, game, target)
                - G.centred_population_loss(f, game, target, opponent=nu)
            )
        )
    assert np.ptp(offs) > 1e-6


def _warm_state(solver, game, rng, steps):
    k = game.num_responses
    state = solver.init(game, jnp.asarray(rng.normal(size=k)))
    for _ in range(steps):
        state = solver.step(game, state)
    return state


SOLVERS = {
    "omd": lambda s, tau, ref: G.omd(s),
    "sppo": lambda s, tau, ref: G.sppo(s),
    "inpo": lambda s, tau, ref: G.inpo(s, tau=tau, ref=ref),
    "nash_md": lambda s, tau, ref: G.nash_md(s, tau=tau, ref=ref),
    "onpo": lambda s, tau, ref: G.onpo(s),
    "onpo_regularised": lambda s, tau, ref: G.onpo(s, tau=tau, ref=ref),
    "mnpo_3": lambda s, tau, ref: G.mnpo(
        s, num_players=3, tau=tau, ref=ref, opponent_weights=[0.7, 0.3]
    ),
    "mnpo_4": lambda s, tau, ref: G.mnpo(
        s, num_players=4, tau=tau, ref=ref, opponent_weights=[0.2, 0.5, 0.3]
    ),
    "mnpo_current": lambda s, tau, ref: G.mnpo(s, num_players=3, tau=tau, opponents="current"),
}


@functools.partial(jax.jit, static_argnames=("name", "tau"))
def _minimisers(p, theta_start, theta0, log_ref, step, name: str, tau: float):
    game = G.PreferenceGame(p)
    solver = SOLVERS[name](step, tau, log_ref)
    state = solver.init(game, theta_start)
    for _ in range(3):  # distinct history entries, π'_t ≠ π_t
        state = solver.step(game, state)
    target = solver.pairwise_target(game, state)
    newton = _newton_minimiser(lambda th: G.pairwise_population_loss(th, game, target), theta0)
    closed = G.population_minimiser(game, target)
    new = solver.step(game, state)
    if not name.startswith("onpo"):
        return newton, closed, new.log_policy, newton, new.log_policy
    # ONPO's second regression of the iteration: anchor π'_{t+1} (shifted, with τ > 0, by
    # the same −sτ log(π_t/π_ref) as the first anchor) gives π_{t+1}.
    shift = target.anchor - state.opt_state.secondary
    second = G.PairwiseTarget(new.opt_state.secondary + shift, target.target, target.sampling)
    got = _newton_minimiser(lambda th: G.pairwise_population_loss(th, game, second), theta0)
    return newton, closed, new.opt_state.secondary, got, new.log_policy


@pytest.mark.parametrize("name", sorted(SOLVERS))
@settings(max_examples=examples(3))
@given(inst=instances((3, 5)), step=st.floats(0.05, 1.0), tau=st.sampled_from([0.1, 0.5]))
def test_population_minimiser_is_the_solver_update(name, inst, step, tau):
    game, mu, rng = inst
    k = game.num_responses
    outs = _minimisers(
        game.preference,
        jnp.asarray(rng.normal(size=k)),
        jnp.asarray(rng.normal(size=k)),
        mu,  # a non-uniform reference
        jnp.asarray(step),
        name,
        tau,
    )
    newton, closed, want, newton2, want2 = (np.exp(np.asarray(x)) for x in outs)
    np.testing.assert_allclose(newton, want, atol=1e-9)
    np.testing.assert_allclose(closed, want, atol=1e-9)
    np.testing.assert_allclose(newton2, want2, atol=1e-9)


@settings(max_examples=examples(6))
@given(inst=instances(), step=st.floats(0.1, 1.0))
def test_mnpo_minimiser_needs_pairs_from_the_opponent_mixture(inst, step):
    """Sampling pairs from π_t instead of the opponents' mixture changes the minimiser."""
    game, _, rng = inst
    solver = G.mnpo(step, num_players=3, opponent_weights=[0.5, 0.5])
    state = _warm_state(solver, game, rng, steps=1)
    target = solver.pairwise_target(game, state)
    wrong = G.PairwiseTarget(target.anchor, target.target, state.log_policy)
    want = np.exp(np.asarray(solver.step(game, state).log_policy))
    got_wrong = np.exp(np.asarray(G.population_minimiser(game, wrong)))
    mix_diff = float(
        jnp.ptp(game.preference @ (jnp.exp(target.sampling) - jnp.exp(state.log_policy)))
    )
    if mix_diff > 1e-3:
        assert np.max(np.abs(got_wrong - want)) > 1e-6
    np.testing.assert_allclose(
        np.exp(np.asarray(G.population_minimiser(game, target))), want, atol=1e-10
    )


@settings(max_examples=examples(6))
@given(inst=instances(), step=st.floats(0.05, 1.0), tau=st.floats(0.05, 1.0))
def test_egpo_sgd_step_is_the_extragradient_half_step(inst, step, tau):
    game, pi, _ = inst
    k = game.num_responses
    step = min(step, 0.9 / tau)
    lr = G.egpo_sgd_learning_rate(step, tau, k)
    grad = jax.grad(G.egpo_regression_loss)(pi, game, pi, tau)
    sgd = jax.nn.log_softmax(pi - lr * grad)
    solver = G.egpo(step, tau=tau)
    tx_half = jax.nn.log_softmax(
        (1 - step * tau) * pi
        + step * tau * -jnp.log(k * 1.0)
        + step * game.preference @ jnp.exp(pi)
    )
    np.testing.assert_allclose(np.exp(np.asarray(sgd)), np.exp(np.asarray(tx_half)), atol=1e-10)
    # ...and the full EGPO step is the second SGD step from π_t against π_{t+1/2}.
    grad2 = jax.grad(G.egpo_regression_loss)(pi, game, tx_half, tau)
    full = jax.nn.log_softmax(pi - lr * grad2)
    new = solver.step(game, solver.init(game, pi)).log_policy
    np.testing.assert_allclose(np.exp(np.asarray(full)), np.exp(np.asarray(new)), atol=1e-10)
    # Sensitivity: EGPO's code mapping lr = 2·lr/(βN) (i.e. half of ours) is not the step.
    wrong = jax.nn.log_softmax(pi - lr / 2 * grad)
    if float(jnp.max(jnp.abs(grad))) > 1e-6:
        assert np.max(np.abs(np.exp(np.asarray(wrong)) - np.exp(np.asarray(tx_half)))) > 1e-9


@jax.jit
def _sppo_minimiser_and_step(p, pi, step):
    game = G.PreferenceGame(p)
    theta = _newton_minimiser(lambda th: G.sppo_population_loss(th, game, pi, step), pi)
    solver = G.sppo(step)
    return theta, solver.step(game, solver.init(game, pi)).log_policy


@settings(max_examples=examples(6))
@given(inst=instances(), step=st.floats(0.05, 2.0))
def test_sppo_population_minimiser_is_the_sppo_update(inst, step):
    game, pi, _ = inst
    theta, new = _sppo_minimiser_and_step(game.preference, pi, jnp.asarray(step))
    np.testing.assert_allclose(np.exp(np.asarray(theta)), np.exp(np.asarray(new)), atol=1e-9)
