"""Convergence theorems of the preference-game solvers, on random games (float64).

Statements and corrected constants from ALGORITHMS.md §2–3 and §6:

* ONPO (optimistic OMD): DualGap(π̄_T) ≤ 2D/(ηT) for η ≤ ½ (not the printed 4√D/T), and
  T·gap stays bounded while OMD's grows like √T.
* OMD (Thm 1 of ONPO): DualGap(π̄_T) ≤ 4√D/√T with η = √(D/T).
* INPO (Thm 4): KL(π*‖π_T) ≤ 32C²/(τ²(T+1)) with η_t = τ(t+2)/2 (step 2/(τ(t+2))).
* Nash-MD: KL(π*‖π_T) ≤ 8/(τ²(T+1)) with η_t = 2/(τ(t+2)).
* EGPO: KL(π*‖π_t) ≤ (1−ητ)^t KL(π*‖π_0).
* Equilibria have gap ≈ 0; MNPO with n = 2 is INPO/OMD.

Each bound is also checked for its scaling, and a deliberately broken solver (no
optimism, flipped preference) is shown to violate it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxalign import games as G

# Largest bound ratios seen are printed with -s (useful when re-deriving constants).
OBSERVED: dict[str, float] = {}


def _note(name: str, value: float) -> None:
    OBSERVED[name] = max(OBSERVED.get(name, -np.inf), value)


@st.composite
def games(draw, min_k: int = 3, max_k: int = 8):
    """A random preference game: general, perturbed cycle or annotator mixture."""
    k = draw(st.integers(min_k, max_k))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["random", "cyclic", "annotators"]))
    key = jax.random.key(seed)
    if kind == "random":
        scale = draw(st.sampled_from([0.5, 2.0, 5.0]))
        return G.random_game(k, key=key, scale=scale)
    if kind == "cyclic":
        return G.cyclic_game(k, strength=0.9, perturbation=0.3, key=key)
    return G.random_annotator_mixture_game(k, 3, key=key)


def _flipped(game: G.PreferenceGame) -> G.PreferenceGame:
    """The game with every preference reversed (a solver run on it ascends the wrong way)."""
    return G.PreferenceGame(game.preference.T)


@functools.partial(jax.jit, static_argnames=("kind", "num_steps"))
def _avg_gaps(p, step, kind: str, num_steps: int, measure_p=None):
    game = G.PreferenceGame(p)
    solver = {"onpo": G.onpo, "omd": G.omd}[kind](step)
    traj = G.run(solver, game, num_steps)
    if measure_p is None:
        return traj.avg_gap
    return jax.vmap(lambda x: x)(traj.avg_gap)


def _avg_gap_in(p_play, p_measure, step, kind, num_steps):
    """Average-iterate gaps in game p_measure of a solver playing p_play."""

    @functools.partial(jax.jit, static_argnames=("kind", "num_steps"))
    def f(p_play, p_measure, step, kind, num_steps):
        solver = {"onpo": G.onpo, "omd": G.omd}[kind](step)
        play, measure = G.PreferenceGame(p_play), G.PreferenceGame(p_measure)
        state0 = solver.init(play)

        def body(carry, _):
            state, log_avg, t = carry
            tf = t.astype(p_play.dtype)
            log_avg = jnp.logaddexp(
                log_avg + jnp.log(tf / (tf + 1)), state.log_policy - jnp.log(tf + 1)
            )
            return (solver.step(play, state), log_avg, t + 1), G.duality_gap(measure, log_avg)

        init = (state0, state0.log_policy, jnp.zeros([], jnp.int32))
        return jax.lax.scan(body, init, None, length=num_steps)[1]

    return f(p_play, p_measure, step, kind, num_steps)


# --------------------------------------------------------------------------- ONPO / OMD


@settings(max_examples=8)
@given(game=games(max_k=6), step=st.floats(0.02, 0.5))
def test_onpo_average_gap_below_two_d_over_eta_t(game, step):
    t = 400
    k = game.num_responses
    gaps = np.asarray(_avg_gaps(game.preference, jnp.asarray(step), "onpo", t))
    ts = np.arange(1, t + 1)
    bound = 2 * np.log(k) / (step * ts)  # D = log K from the uniform start
    _note("onpo_2D_over_etaT", float(np.max(gaps / bound)))
    assert (gaps <= bound + 1e-12).all()


def test_onpo_bound_sensitivity_no_optimism_and_flipped_preference():
    """OMD (ONPO without the prediction) and ONPO on the reversed game violate 2D/(ηT)."""
    game = G.cyclic_game(5, strength=0.9, perturbation=0.3, key=jax.random.key(0))
    step, t = 0.5, 2000
    bound = 2 * np.log(5) / (step * np.arange(1, t + 1))
    omd = np.asarray(_avg_gaps(game.preference, jnp.asarray(step), "omd", t))
    assert np.max(omd / bound) > 1.0
    # Reversing a cycle keeps its full-support equilibrium, so flip a decisive random game.
    game = G.random_game(6, key=jax.random.key(3), scale=5.0)
    bound = 2 * np.log(6) / (step * np.arange(1, t + 1))
    flipped = np.asarray(
        _avg_gap_in(_flipped(game).preference, game.preference, jnp.asarray(step), "onpo", t)
    )
    assert np.max(flipped / bound) > 1.0


def _batch(num: int, k: int, seed: int):
    keys = jax.random.split(jax.random.key(seed), num)
    return jax.vmap(lambda key: G.random_game(k, key=key, scale=2.0))(keys)


@functools.partial(jax.jit, static_argnames=("kind", "num_steps"))
def _final_avg_gap(batch, step, kind: str, num_steps: int):
    solver = {"onpo": G.onpo, "omd": G.omd}[kind](step)
    return jax.vmap(lambda g: G.run(solver, g, num_steps).avg_gap[-1])(batch)


def test_onpo_t_times_gap_bounded_while_omd_grows_like_sqrt_t():
    k, batch = 6, _batch(16, 6, 1)
    d = np.log(k)
    ts = [100, 400, 1600]
    onpo = [float(jnp.mean(_final_avg_gap(batch, jnp.asarray(0.5), "onpo", t))) * t for t in ts]
    omd = [
        float(jnp.mean(_final_avg_gap(batch, jnp.asarray(np.sqrt(d / t)), "omd", t))) * t
        for t in ts
    ]
    # ONPO: T·gap does not grow (bounded by 2D/η = 4 log K).
    assert onpo[-1] <= 1.5 * onpo[0] and max(onpo) <= 4 * d
    # OMD with its theory step: T·gap grows (≈ √T: ×4 over ×16 in T; ask for ×2).
    assert omd[-1] >= 2 * omd[0]
    slope = np.polyfit(np.log(ts), np.log(np.asarray(omd) / np.asarray(ts)), 1)[0]
    assert -0.8 < slope < -0.3, slope


@settings(max_examples=6)
@given(game=games(max_k=6), t=st.sampled_from([256, 1024]))
def test_omd_average_gap_below_four_sqrt_d_over_sqrt_t(game, t):
    d = np.log(game.num_responses)
    step = np.sqrt(d / t)
    gap = float(_avg_gaps(game.preference, jnp.asarray(step), "omd", t)[-1])
    bound = 4 * np.sqrt(d) / np.sqrt(t)
    _note("omd_4sqrtD_over_sqrtT", gap / bound)
    assert gap <= bound


def test_omd_bound_sensitivity_flipped_preference():
    game = G.random_game(6, key=jax.random.key(3), scale=5.0)
    t = 1024
    step = np.sqrt(np.log(6) / t)
    gap = _avg_gap_in(_flipped(game).preference, game.preference, jnp.asarray(step), "omd", t)
    assert float(gap[-1]) > 4 * np.sqrt(np.log(6)) / np.sqrt(t)


# --------------------------------------------------------------------------- INPO / Nash-MD


@functools.partial(jax.jit, static_argnames=("kind", "num_steps"))
def _last_iterate_kl(p_play, p_true, tau, kind: str, num_steps: int):
    """KL(π*‖π_t) for t = 1..T and max_t ‖log π_t/π_ref‖_∞ (the B of INPO's C)."""
    play = G.PreferenceGame(p_play)
    star = G.nash_equilibrium(G.PreferenceGame(p_true), tau)
    schedule = G.decaying_step_size(tau)
    if kind == "inpo":
        solver = G.inpo(schedule, tau=tau)
    elif kind == "nash_md":
        solver = G.nash_md(schedule, tau=tau)
    else:
        raise ValueError(kind)
    k = p_play.shape[0]
    log_ref = -jnp.log(jnp.asarray(k, p_play.dtype))

    def body(state, _):
        state = solver.step(play, state)
        return state, (
            G.kl_divergence(star, state.log_policy),
            jnp.max(jnp.abs(state.log_policy - log_ref)),
        )

    _, (kls, b) = jax.lax.scan(body, solver.init(play), None, length=num_steps)
    b_star = jnp.max(jnp.abs(star - log_ref))
    return kls, jnp.maximum(jnp.max(b), b_star)


@settings(max_examples=5)
@given(game=games(max_k=6), tau=st.sampled_from([0.1, 0.3, 1.0]))
def test_inpo_last_iterate_kl_bound_and_one_over_t_scaling(game, tau):
    t = 2000
    kls, b = _last_iterate_kl(game.preference, game.preference, tau, "inpo", t)
    kls, b = np.asarray(kls), float(b)
    c = max(b * tau, 1.0)
    ts = np.arange(1, t + 1)
    bound = 32 * c**2 / (tau**2 * (ts + 1))
    _note("inpo_32C2", float(np.max(kls / bound)))
    assert (kls <= bound).all()
    # Scaling: T·KL stays bounded (rate at least 1/T) between T = 500 and T = 2000.
    assert 2000 * kls[-1] <= 1.5 * 500 * kls[499] + 1e-9


@settings(max_examples=5)
@given(game=games(max_k=6), tau=st.sampled_from([0.1, 0.3, 1.0]))
def test_nash_md_last_iterate_kl_bound_and_one_over_t_scaling(game, tau):
    t = 2000
    kls, _ = _last_iterate_kl(game.preference, game.preference, tau, "nash_md", t)
    kls = np.asarray(kls)
    ts = np.arange(1, t + 1)
    bound = 8 / (tau**2 * (ts + 1))
    _note("nash_md_8_over_tau2T", float(np.max(kls / bound)))
    assert (kls <= bound).all()
    assert 2000 * kls[-1] <= 1.5 * 500 * kls[499] + 1e-9


def test_last_iterate_scaling_sensitivity_flipped_preference():
    """Solving the reversed game: KL to the true π* stalls, T·KL grows linearly."""
    game = G.random_game(5, key=jax.random.key(4), scale=5.0)
    for kind in ("inpo", "nash_md"):
        kls, _ = _last_iterate_kl(_flipped(game).preference, game.preference, 0.3, kind, 2000)
        kls = np.asarray(kls)
        assert 2000 * kls[-1] > 1.5 * 500 * kls[499]


# --------------------------------------------------------------------------- EGPO


@functools.partial(jax.jit, static_argnames=("num_steps",))
def _egpo_kls(p_play, p_true, tau, step, num_steps: int):
    play = G.PreferenceGame(p_play)
    star = G.nash_equilibrium(G.PreferenceGame(p_true), tau)
    solver = G.egpo(step, tau=tau)
    state0 = solver.init(play)

    def body(state, _):
        state = solver.step(play, state)
        return state, G.kl_divergence(star, state.log_policy)

    _, kls = jax.lax.scan(body, state0, None, length=num_steps)
    return kls, G.kl_divergence(star, state0.log_policy)


@settings(max_examples=6)
@given(
    game=games(max_k=6),
    tau=st.sampled_from([0.1, 0.2, 0.5, 1.0]),
    rule=st.sampled_from(["half_over_tau_plus_one", "one_over_tau_plus_two"]),
)
def test_egpo_last_iterate_decays_geometrically(game, tau, rule):
    step = 0.5 / (tau + 1) if rule == "half_over_tau_plus_one" else 1 / (tau + 2)
    t = 300
    kls, kl0 = _egpo_kls(game.preference, game.preference, tau, step, t)
    kls, kl0 = np.asarray(kls), float(kl0)
    bound = (1 - step * tau) ** np.arange(1, t + 1) * kl0
    resolved = bound > 1e-10  # below that, KL is at round-off level
    _note("egpo_geometric", float(np.max(kls[resolved] / bound[resolved])))
    assert (kls <= bound + 1e-13).all()


def test_egpo_geometric_decay_sensitivity_flipped_preference():
    game = G.random_game(5, key=jax.random.key(5), scale=3.0)
    tau, step, t = 0.2, 0.5 / 1.2, 300
    kls, kl0 = _egpo_kls(_flipped(game).preference, game.preference, tau, step, t)
    bound = (1 - step * tau) ** np.arange(1, t + 1) * float(kl0)
    assert (np.asarray(kls) > bound).any()


# --------------------------------------------------------------------------- equilibria


@settings(max_examples=6)
@given(game=games(max_k=10))
def test_lp_equilibrium_has_zero_gap_and_is_a_fixed_point(game):
    star = G.nash_equilibrium(game)
    assert float(G.duality_gap(game, star)) < 1e-8
    # No response wins against π* with probability above ½ (LP optimality).
    assert float(jnp.max(G.win_rates(game, star))) <= 0.5 + 1e-8


@jax.jit
def _regularised_checks(p, tau):
    game = G.PreferenceGame(p)
    star = G.nash_equilibrium(game, tau)
    other = jax.nn.log_softmax(star + jnp.linspace(0.0, 1.0, p.shape[0]))
    return (
        G.nash_residual(game, star, tau),
        G.duality_gap(game, star, tau),
        G.duality_gap(game, star),
        G.duality_gap(game, other, tau),
    )


@settings(max_examples=6)
@given(game=games(max_k=8), tau=st.floats(0.01, 5.0))
def test_regularised_equilibrium_fixed_point_and_lp_cross_check(game, tau):
    residual, gap_tau, gap0, other = (
        float(x) for x in _regularised_checks(game.preference, jnp.asarray(tau))
    )
    assert residual < 1e-9
    assert abs(gap_tau) < 1e-10
    # Cross-check with the LP: π*_τ is 2τ log K-optimal in the unregularised game.
    assert gap0 <= 2 * tau * np.log(game.num_responses) + 1e-10
    assert other > 0  # and the gap is positive away from it


# --------------------------------------------------------------------------- MNPO


@functools.partial(jax.jit, static_argnames=("tau",))
def _two_player_reductions(p, step, tau: float):
    g = G.PreferenceGame(p)
    a = G.run(G.mnpo(step, num_players=2, tau=tau), g, 50).avg_gap
    b = G.run(G.inpo(step, tau=tau), g, 50).avg_gap
    c = G.run(G.mnpo(step, num_players=2, tau=tau, opponents="current"), g, 50).avg_gap
    mg = G.pairwise_multiplayer_game(g, 2)
    d = G.run(G.mnpo(step, num_players=2, tau=tau), mg, 50).avg_gap
    return a, b, c, d


@settings(max_examples=8)
@given(game=games(max_k=5), step=st.floats(0.01, 1.0), tau=st.sampled_from([0.0, 0.5]))
def test_mnpo_with_two_players_is_the_two_player_update(game, step, tau):
    step = min(step, 0.9 / tau) if tau > 0 else step
    a, b, c, d = (
        np.asarray(x) for x in _two_player_reductions(game.preference, jnp.asarray(step), tau)
    )
    np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(c, b, atol=1e-12)
    # The n-player gap with n = 2 is the one-sided (half) two-player gap.
    np.testing.assert_allclose(d, b / 2, atol=1e-12)


@functools.partial(jax.jit, static_argnames=("n",))
def _mnpo_vs_omd(p, n: int):
    game = G.PreferenceGame(p)
    mg = G.pairwise_multiplayer_game(game, n)
    a = G.run(G.mnpo(0.3, num_players=n, opponents="current"), mg, 30)
    b = G.run(G.omd(0.3), game, 30)
    return a.final_state.log_policy, b.final_state.log_policy


@settings(max_examples=6)
@given(game=games(max_k=5), n=st.sampled_from([3, 4]))
def test_mnpo_on_pairwise_multiplayer_game_matches_omd_in_symmetric_play(game, n):
    """With the average pairwise preference and n−1 copies of π_t, MNPO is OMD."""
    a, b = _mnpo_vs_omd(game.preference, n)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-12)


def test_print_observed_ratios(capsys):
    with capsys.disabled():
        for k, v in sorted(OBSERVED.items()):
            print(f"\n[games theory] largest observed ratio {k}: {v:.3g}")
