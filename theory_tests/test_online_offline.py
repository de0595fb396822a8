"""Online vs offline alignment (ALGORITHMS_2.md, online vs offline): the exact frontier and targets.

* (a) Enumeration sanity: W(π_ref, π_ref) = ½ at KL 0; W(π, π') + W(π', π) = 1; E_ref C = ½.
* (b) The exact minimiser of the population offline-IPO loss (tabular logits, BFGS) is
  π_ref e^{P(·≻μ)/τ}; the raw-reward target π_ref e^{r/τ} is not.
* (c) No policy lies above the Gibbs frontier π_ref e^{C/β} at its own KL (random policies,
  random-reward tilts, raw-reward tilts, the online fixed point); the frontier policies lie on
  it; the raw-reward tilt, a plausible wrong frontier, is beaten whenever C is not affine in r.
* (d) The online-IPO fixed point (regularised Nash) makes the on-policy IPO gradient vanish
  and has fixed-point residual < 1e-6; the offline target does not (general games).
* The implicit-reward accuracy equals its definition; a deterministic-label variant differs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxalign import games, kl
from theory_tests.strategies import examples

SEEDS = st.integers(0, 2**31 - 1)


def _instance(seed, k=None, bt=False, scale=2.0):
    """(game, log π_ref, reward or None): a random general or Bradley–Terry game."""
    rng = np.random.default_rng(seed)
    k = k or 6  # one shape: one compilation per function
    log_ref = jax.nn.log_softmax(jnp.asarray(rng.standard_normal(k) * 1.5))
    if bt:
        r = jnp.asarray(rng.standard_normal(k) * scale)
        return games.bradley_terry_game(r), log_ref, r
    a = rng.standard_normal((k, k)) * scale
    p = jax.nn.sigmoid(jnp.asarray(a - a.T))  # skew logits: P + Pᵀ = 1, non-transitive
    return games.preference_game(p), log_ref, None


def _random_policy(rng, k, scale=2.0):
    return jax.nn.log_softmax(jnp.asarray(rng.standard_normal(k) * scale))


# ----------------------------------------------------------------------------- (a) sanity


@settings(max_examples=examples(25))
@given(seed=SEEDS)
def test_win_rate_identities(seed):
    game, log_ref, _ = _instance(seed)
    rng = np.random.default_rng(seed + 1)
    lp, lq = _random_policy(rng, log_ref.shape[0]), _random_policy(rng, log_ref.shape[0])
    assert abs(float(kl.preference_win_rate(game, log_ref, log_ref)) - 0.5) < 1e-12
    assert abs(float(kl.kl_divergence(log_ref, log_ref))) < 1e-14
    w = kl.preference_win_rate(game, lp, lq) + kl.preference_win_rate(game, lq, lp)
    assert abs(float(w) - 1.0) < 1e-12
    c = kl.preference_calibrated_reward(game, log_ref)
    assert abs(float(jnp.exp(log_ref) @ c) - 0.5) < 1e-12
    # W is linear in π with gradient C.
    np.testing.assert_allclose(
        kl.preference_win_rate(game, lp, log_ref), jnp.exp(lp) @ c, rtol=0, atol=1e-13
    )
    front = kl.win_rate_frontier(game, log_ref, jnp.array([0.0]))
    assert abs(float(front.win_rate[0]) - 0.5) < 1e-12 and abs(float(front.kl[0])) < 1e-14


# ----------------------------------------------------------------------------- (b) offline IPO


def _minimise_population_ipo(game, log_ref, tau, log_mu):
    loss = jax.jit(
        lambda th: kl.ipo_population_loss(game, jax.nn.log_softmax(th), log_ref, tau, log_mu)
    )
    val_grad = jax.jit(jax.value_and_grad(lambda th: loss(th)))

    def f(x):
        v, g = val_grad(jnp.asarray(x))
        return float(v), np.asarray(g)

    res = scipy.optimize.minimize(
        f, np.asarray(log_ref), jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 2000}
    )
    return jax.nn.log_softmax(jnp.asarray(res.x))


@settings(max_examples=examples(12))
@given(seed=SEEDS, tau=st.floats(0.2, 2.0), behaviour=st.booleans())
def test_offline_ipo_population_minimiser_is_the_calibrated_tilt(seed, tau, behaviour):
    game, log_ref, r = _instance(seed, k=5, bt=True)
    rng = np.random.default_rng(seed + 2)
    log_mu = _random_policy(rng, 5, 1.0) if behaviour else log_ref
    found = _minimise_population_ipo(game, log_ref, tau, log_mu)
    target = kl.offline_ipo_target(game, log_ref, tau, log_mu)
    np.testing.assert_allclose(found, target, atol=1e-6)
    # The plausible wrong target, the raw-reward tilt at the same τ, is not the minimiser.
    wrong = kl.tilted_policy(log_ref, r, tau)
    assert float(jnp.max(jnp.abs(found - wrong))) > 1e-3


# ----------------------------------------------------------------------------- (c) the frontier


@settings(max_examples=examples(10))
@given(seed=SEEDS, bt=st.booleans())
def test_no_policy_lies_above_the_gibbs_frontier(seed, bt):
    game, log_ref, r = _instance(seed, bt=bt)
    k = log_ref.shape[0]
    rng = np.random.default_rng(seed + 3)
    gap = jax.vmap(lambda lp: kl.frontier_gap(game, lp, log_ref))
    policies = [_random_policy(rng, k, s) for s in (0.3, 1.0, 3.0, 8.0)]
    rewards = [jnp.asarray(rng.standard_normal(k)) for _ in range(3)]
    if r is not None:
        rewards.append(r)  # the raw gold reward
    betas = jnp.array([0.05, 0.3, 1.0, 5.0])
    for rew in rewards:
        policies += list(jax.vmap(lambda b, rew=rew: kl.tilted_policy(log_ref, rew, b))(betas))
    policies.append(games.nash_equilibrium(game, 0.5, ref=log_ref))  # online IPO target
    gaps = gap(jnp.stack(policies))
    assert float(gaps.min()) >= -1e-10, gaps
    # The frontier policies themselves attain it.
    c = kl.preference_calibrated_reward(game, log_ref)
    on = gap(jax.vmap(lambda b: kl.tilted_policy(log_ref, c, b))(jnp.array([0.02, 0.1, 0.5, 3.0])))
    assert float(jnp.max(jnp.abs(on))) < 1e-9, on
    # Concave, non-decreasing in the budget.
    budgets = jnp.linspace(0.0, 0.9 * float(kl.max_kl(log_ref, c)), 12)
    w = np.asarray(kl.win_rate_frontier(game, log_ref, budgets).win_rate)
    assert np.all(np.diff(w) >= -1e-12) and np.all(np.diff(w, 2) <= 1e-9)


@settings(max_examples=examples(15))
@given(seed=SEEDS)
def test_raw_reward_tilt_is_a_wrong_frontier(seed):
    # A wrong frontier: W of π_ref e^{r/β} swept over β. For a BT oracle C = E σ(r − r') is
    # non-affine in r, so the calibrated tilt beats it at the same KL.
    game, log_ref, r = _instance(seed, k=6, bt=True, scale=3.0)
    betas = jnp.geomspace(0.1, 10.0, 30)
    raw = jax.vmap(lambda b: kl.tilted_policy(log_ref, r, b))(betas)
    gaps = jax.vmap(lambda lp: kl.frontier_gap(game, lp, log_ref))(raw)
    assert float(gaps.min()) >= -1e-10
    assert float(gaps.max()) > 1e-6  # points strictly above the "raw frontier" exist


# ----------------------------------------------------------------------------- (d) online IPO


def _on_policy_gradient(game, log_ref, tau, log_pi):
    def loss(theta):
        return kl.ipo_population_loss(
            game, jax.nn.log_softmax(theta), log_ref, tau, jax.lax.stop_gradient(log_pi)
        )

    return jax.grad(loss)(log_pi)


@settings(max_examples=examples(15))
@given(seed=SEEDS, tau=st.floats(0.1, 2.0))
def test_online_ipo_fixed_point_is_the_regularised_nash(seed, tau):
    game, log_ref, _ = _instance(seed, k=6)
    nash = games.nash_equilibrium(game, tau, ref=log_ref)
    assert float(games.nash_residual(game, nash, tau, ref=log_ref)) < 1e-6
    assert float(jnp.max(jnp.abs(_on_policy_gradient(game, log_ref, tau, nash)))) < 1e-8
    # The offline target is stationary for the offline loss but not for the on-policy one.
    off = kl.offline_ipo_target(game, log_ref, tau)
    g_off = jax.grad(lambda th: kl.ipo_population_loss(game, jax.nn.log_softmax(th), log_ref, tau))(
        off
    )
    assert float(jnp.max(jnp.abs(g_off))) < 1e-10
    assert float(jnp.max(jnp.abs(_on_policy_gradient(game, log_ref, tau, off)))) > 1e-6
    # The offline target is on the frontier; the online fixed point is below it.
    assert abs(float(kl.frontier_gap(game, off, log_ref))) < 1e-9
    assert float(kl.frontier_gap(game, nash, log_ref)) > 1e-9


# ----------------------------------------------------------------------------- accuracy


@settings(max_examples=examples(15))
@given(seed=SEEDS)
def test_implicit_reward_accuracy_matches_its_definition(seed):
    game, log_ref, _ = _instance(seed)
    rng = np.random.default_rng(seed + 4)
    k = log_ref.shape[0]
    lp = _random_policy(rng, k)
    pairs = rng.integers(0, k, size=(40, 2))
    f = np.asarray(lp - log_ref)
    p = np.asarray(game.preference)
    want = np.mean(
        [p[a, b] if f[a] > f[b] else (1 - p[a, b] if f[a] < f[b] else 0.5) for a, b in pairs]
    )
    got = float(kl.implicit_reward_accuracy(game, lp, log_ref, jnp.asarray(pairs)))
    assert abs(got - want) < 1e-12
    # A deterministic-label variant (majority winner) is a different quantity.
    majority = np.mean(
        [(p[a, b] > 0.5) == (f[a] > f[b]) for a, b in pairs if a != b and p[a, b] != 0.5]
    )
    assert abs(got - majority) > 1e-6


def test_errors_name_the_argument():
    game, log_ref, _ = _instance(0, k=4)
    with pytest.raises(ValueError, match="tau"):
        kl.offline_ipo_target(game, log_ref, 0.0)
    with pytest.raises(ValueError, match="log_policy"):
        kl.frontier_gap(game, jnp.zeros(3), log_ref)
    with pytest.raises(ValueError, match="pairs"):
        kl.implicit_reward_accuracy(game, log_ref, log_ref, jnp.array([[0, 7]]))
    with pytest.raises(ValueError, match="kl_budgets"):
        kl.win_rate_frontier(game, log_ref, jnp.array([-1.0]))
