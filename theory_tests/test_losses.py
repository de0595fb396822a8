"""The LLM-level losses are the tabular theory, exactly (ALGORITHMS.md §2–3, §1).

On a tabular policy (one logit per response, sequence log-prob = log-softmax) the
expectation of a loss over its data distribution is a finite sum, computed here exactly:

* **Population minimiser = solver update.** For every Nash algorithm with a pairwise loss
  (INPO, Nash-MD, ONPO's two regressions, MNPO with history opponents and non-uniform
  weights, EGPO's two extragradient regressions, SPPO's pointwise loss, online IPO), the
  minimiser of the named LLM loss over preference-labelled pairs drawn from the right
  distribution is the tabular solver's next iterate (K ≥ 3, non-uniform reference).
* The MNPO reductions of its Table 1 (INPO, IPO) hold for the loss functions themselves.
* DPO's population minimiser is the KL-regularised optimum π_ref e^{r/β} on a
  Bradley–Terry game; robust DPO is unbiased under label flips (its expectation is the
  clean loss) and keeps that minimiser under flipped labels; label-smoothed DPO is the
  expected loss under flipped labels.
* Nash-MD's mixtures: the sequence-level mixture is the one the tabular solver plays; the
  token-level mixture equals it for memoryless policies and differs otherwise.
* KL-regularised policy gradient: with leave-one-out baselines the expected gradient of
  the surrogate is −∇E_π r plus β times ∇KL(π‖π_ref) (k2), 0 (k1) or ∇KL(π_ref‖π) (k3);
  with the k1 penalty in the reward it is −∇(E_π r − β KL(π‖π_ref)); k1 and k3 are
  unbiased values of KL(π‖π_ref), k3 ≥ 0.
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
from jaxalign import losses as LS
from jaxalign.losses.dpo import dpo_loss as engine_dpo_loss
from theory_tests.strategies import examples

# ----------------------------------------------------------------------------- helpers


def _pairs(k: int):
    """All ordered pairs (y, y') of K responses, as two [K²] index arrays."""
    a, b = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    return jnp.asarray(a.ravel()), jnp.asarray(b.ravel())


def labelled_population(loss_fn, p, mu, *, normalise: bool = True):
    """θ ↦ E_{y,y'~μ, (w,l)~λ_p} loss(w, l): pairs i.i.d. from μ, y wins w.p. P(y ≻ y').

    ``normalise=False`` feeds the free logits θ as log-probabilities (pointwise losses,
    whose minimiser is only defined up to normalisation for free logits)."""
    k = p.shape[0]
    yw, yl = _pairs(k)
    prob = jnp.exp(mu)[yw] * jnp.exp(mu)[yl] * p[yw, yl]  # y = w wins against y' = l

    def loss(theta):
        logp = jax.nn.log_softmax(theta) if normalise else theta
        return jnp.sum(prob * loss_fn(logp, yw, yl))

    return loss


def _newton_minimiser(loss, theta0):
    """Exact minimiser of a convex quadratic in the logits (Hessian singular along 1)."""
    g = jax.grad(loss)(theta0)
    h = jax.hessian(loss)(theta0)
    return jax.nn.log_softmax(theta0 + jnp.linalg.lstsq(h, -g)[0])


def _random_log_policy(rng, k, spread=1.0):
    return jax.nn.log_softmax(jnp.asarray(rng.normal(size=k) * spread))


@st.composite
def instances(draw):
    k = draw(st.sampled_from([3, 5]))  # K ≥ 3; two sizes keep the compilations few
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    game = G.random_game(k, key=jax.random.key(seed), scale=float(rng.uniform(0.5, 4)))
    return game, rng


# ----------------------------------------------------------------------------- Nash family


def _solver_and_loss(name, s, tau, log_ref, lam):
    """(solver, loss(logp, yw, yl, state) -> [b], pair distribution(state) -> log μ)."""
    if name == "inpo":
        solver = G.inpo(s, tau=tau, ref=log_ref)

        def loss(lp, yw, yl, state):
            cur = state.log_policy
            return LS.inpo_loss(
                lp[yw], lp[yl], log_ref[yw], log_ref[yl], cur[yw], cur[yl], step_size=s, tau=tau
            ).loss

        return solver, loss, lambda state: state.log_policy
    if name == "nash_md":
        solver = G.nash_md(s, tau=tau, ref=log_ref)

        def loss(lp, yw, yl, state):
            cur = state.log_policy
            return LS.nash_md_loss(
                lp[yw], lp[yl], log_ref[yw], log_ref[yl], cur[yw], cur[yl], step_size=s, tau=tau
            ).loss

        def pairs(state):  # the sequence-level geometric mixture π^μ
            return LS.sequence_level_mixture(state.log_policy, log_ref, mix=s * tau)

        return solver, loss, pairs
    if name == "onpo":
        solver = G.onpo(s)

        def loss(lp, yw, yl, state):
            anchor = state.opt_state.secondary
            return LS.onpo_loss(lp[yw], lp[yl], anchor[yw], anchor[yl], step_size=s).loss

        return solver, loss, lambda state: state.log_policy
    if name == "mnpo":
        n = lam.shape[0] + 1
        solver = G.mnpo(s, num_players=n, tau=tau, ref=log_ref, opponent_weights=lam)

        def loss(lp, yw, yl, state):
            history = [(h[yw], h[yl]) for h in state.history]
            return LS.mnpo_loss(
                lp[yw],
                lp[yl],
                log_ref[yw],
                log_ref[yl],
                history,
                history_weights=lam,
                ref_ratio=s * tau,
                step_size=s,
            ).loss

        def pairs(state):  # the mixture of the opponents
            return jax.nn.logsumexp(state.history + jnp.log(lam)[:, None], axis=0)

        return solver, loss, pairs
    raise ValueError(name)


@functools.partial(jax.jit, static_argnames=("name",))
def _loss_minimiser_and_update(name, p, theta_start, log_ref, s, tau, lam):
    game = G.PreferenceGame(p)
    solver, loss, pairs = _solver_and_loss(name, s, tau, log_ref, lam)
    state = solver.init(game, theta_start)
    for _ in range(3):  # distinct history entries, π'_t ≠ π_t
        state = solver.step(game, state)
    new = solver.step(game, state)
    population = labelled_population(lambda lp, yw, yl: loss(lp, yw, yl, state), p, pairs(state))
    got = _newton_minimiser(population, jnp.zeros_like(theta_start))
    if name != "onpo":
        return got, new.log_policy
    # ONPO's second regression: anchor π'_{t+1}, the same pairs from π_t, gives π_{t+1}.
    second = state._replace(opt_state=new.opt_state)
    population = labelled_population(lambda lp, yw, yl: loss(lp, yw, yl, second), p, pairs(state))
    got2 = _newton_minimiser(population, jnp.zeros_like(theta_start))
    return jnp.stack([got, got2]), jnp.stack([new.opt_state.secondary, new.log_policy])


@pytest.mark.parametrize("name", ["inpo", "nash_md", "onpo", "mnpo"])
@settings(max_examples=examples(3))
@given(inst=instances(), s=st.floats(0.05, 1.0), tau=st.sampled_from([0.1, 0.5]))
def test_named_loss_population_minimiser_is_the_solver_update(name, inst, s, tau):
    game, rng = inst
    k = game.num_responses
    lam = jnp.asarray(rng.dirichlet(np.ones(int(rng.integers(2, 4)))))  # n = 3 or 4
    got, want = _loss_minimiser_and_update(
        name,
        game.preference,
        jnp.asarray(rng.normal(size=k)),
        _random_log_policy(rng, k),
        jnp.asarray(s),
        tau,
        lam,
    )
    np.testing.assert_allclose(np.exp(np.asarray(got)), np.exp(np.asarray(want)), atol=1e-9)


def _unlabelled_population(loss_fn, mu):
    """θ ↦ E_{a,b~μ} loss(a, b) for losses whose targets carry the preference."""
    k = mu.shape[0]
    a, b = _pairs(k)
    prob = jnp.exp(mu)[a] * jnp.exp(mu)[b]

    def loss(theta):
        return jnp.sum(prob * loss_fn(jax.nn.log_softmax(theta), a, b))

    return loss


@jax.jit
def _egpo_regressions(p, theta, log_ref, s, tau):
    """EGPO's two regressions: pairs (a, b) from π_t, expected labels P(a ≻ c), c ~ ν."""
    a_idx, b_idx = _pairs(p.shape[0])

    def step_loss(nu):
        win = p @ jnp.exp(nu)  # E[1(a ≻ c)] for c ~ ν

        def loss(lp, a, b):
            return LS.egpo_step_loss(
                lp[a],
                lp[b],
                log_ref[a],
                log_ref[b],
                theta[a],
                theta[b],
                win[a],
                win[b],
                step_size=s,
                tau=tau,
            ).loss

        return _newton_minimiser(_unlabelled_population(loss, theta), jnp.zeros_like(theta))

    half = step_loss(theta)
    full = step_loss(half)
    solver = G.egpo(s, tau=tau, ref=log_ref)
    game = G.PreferenceGame(p)
    new = solver.step(game, solver.init(game, theta)).log_policy
    # The paper's loss is the step loss with s = 1/τ (the π_t anchor drops out).
    win = p @ jnp.exp(theta)
    paper = LS.egpo_loss(
        theta[a_idx], theta[b_idx], log_ref[a_idx], log_ref[b_idx], win[a_idx], win[b_idx], tau=tau
    ).loss
    step = LS.egpo_step_loss(
        theta[a_idx],
        theta[b_idx],
        log_ref[a_idx],
        log_ref[b_idx],
        theta[a_idx] * 0.3,
        theta[b_idx] * 0.3,
        win[a_idx],
        win[b_idx],
        step_size=1 / tau,
        tau=tau,
    ).loss
    return full, new, paper, step


@settings(max_examples=examples(5))
@given(inst=instances(), s=st.floats(0.05, 1.0), tau=st.sampled_from([0.1, 0.5, 1.0]))
def test_egpo_step_losses_minimise_to_the_extragradient_step(inst, s, tau):
    game, rng = inst
    k = game.num_responses
    full, new, paper, step = _egpo_regressions(
        game.preference,
        _random_log_policy(rng, k),
        _random_log_policy(rng, k),
        jnp.asarray(min(s, 1 / tau)),
        jnp.asarray(tau),
    )
    np.testing.assert_allclose(np.exp(np.asarray(full)), np.exp(np.asarray(new)), atol=1e-9)
    np.testing.assert_allclose(np.asarray(paper), np.asarray(step), rtol=1e-12, atol=1e-12)


@jax.jit
def _sppo_and_ipo(p, theta, log_ref, s, tau):
    """SPPO's pointwise loss over labelled pairs from π_t with exact win rates (free
    logits: each response is regressed on its own target, s(P(y ≻ π_t) − ½) above
    log π_t(y); normalising that minimiser is SPPO's update), and online IPO's loss over
    labelled pairs from π_t."""
    win = p @ jnp.exp(theta)

    def sppo(lp, yw, yl):
        return LS.sppo_loss(
            lp[yw], lp[yl], theta[yw], theta[yl], win[yw], win[yl], step_size=s
        ).loss

    def ipo(lp, yw, yl):
        return LS.online_ipo_loss(lp[yw], lp[yl], log_ref[yw], log_ref[yl], tau=tau).loss

    game = G.PreferenceGame(p)
    solver = G.sppo(s)
    return (
        _newton_minimiser(
            labelled_population(sppo, p, theta, normalise=False), jnp.zeros_like(theta)
        ),
        solver.step(game, solver.init(game, theta)).log_policy,
        _newton_minimiser(labelled_population(ipo, p, theta), jnp.zeros_like(theta)),
    )


@settings(max_examples=examples(5))
@given(inst=instances(), s=st.floats(0.05, 2.0), tau=st.floats(0.1, 2.0))
def test_sppo_and_online_ipo_population_minimisers(inst, s, tau):
    game, rng = inst
    k = game.num_responses
    theta, log_ref = _random_log_policy(rng, k), _random_log_policy(rng, k)
    sppo, want, ipo = _sppo_and_ipo(
        game.preference, theta, log_ref, jnp.asarray(s), jnp.asarray(tau)
    )
    np.testing.assert_allclose(np.exp(np.asarray(sppo)), np.exp(np.asarray(want)), atol=1e-9)
    # IPO: the population lemma's a + 2cPμ with a = log π_ref, c = 1/(2τ), μ = π_t.
    p = np.asarray(game.preference)
    closed = np.asarray(log_ref) + p @ np.exp(np.asarray(theta)) / tau
    closed = np.exp(closed - closed.max())
    np.testing.assert_allclose(np.exp(np.asarray(ipo)), closed / closed.sum(), atol=1e-9)


@settings(max_examples=examples(10))
@given(
    seed=st.integers(0, 2**31 - 1),
    s=st.floats(0.05, 2.0),
    tau=st.floats(0.05, 2.0),
    flip=st.floats(0.0, 0.45),
)
def test_named_losses_are_instances_of_the_unified_loss(seed, s, tau, flip):
    """MNPO Table 1 on the loss functions: one opponent π_t with ρ = sτ is INPO, ρ = 1 with
    step 1/τ is IPO; Nash-MD's loss has INPO's anchors; DPO / robust DPO are the logistic
    distance with β and ε."""
    rng = np.random.default_rng(seed)
    pw, pl, rw, rl, cw, cl = (jnp.asarray(rng.normal(size=6) * 3) for _ in range(6))
    st_ = min(s * tau, 1.0)
    s = st_ / tau
    inpo = LS.inpo_loss(pw, pl, rw, rl, cw, cl, step_size=s, tau=tau).loss
    mnpo = LS.mnpo_loss(
        pw, pl, rw, rl, [(cw, cl)], history_weights=[1.0], ref_ratio=st_, step_size=s
    )
    np.testing.assert_allclose(np.asarray(mnpo.loss), np.asarray(inpo), rtol=1e-12)
    nash_md = LS.nash_md_loss(pw, pl, rw, rl, cw, cl, step_size=s, tau=tau).loss
    np.testing.assert_allclose(np.asarray(nash_md), np.asarray(inpo), rtol=1e-12)
    ipo = LS.ipo_loss(pw, pl, rw, rl, tau=tau).loss
    as_mnpo = LS.mnpo_loss(
        pw, pl, rw, rl, [(cw, cl)], history_weights=[1.0], ref_ratio=1.0, step_size=1 / tau
    )
    np.testing.assert_allclose(np.asarray(as_mnpo.loss), np.asarray(ipo), rtol=1e-12)
    h = (pw - pl) - (rw - rl)
    np.testing.assert_allclose(np.asarray(ipo), np.asarray((h - 1 / (2 * tau)) ** 2), rtol=1e-12)
    beta = tau
    dpo = LS.dpo_loss(pw, pl, rw, rl, beta=beta).loss
    np.testing.assert_allclose(np.asarray(dpo), np.log1p(np.exp(-beta * np.asarray(h))), rtol=1e-12)
    robust = LS.robust_dpo_loss(pw, pl, rw, rl, beta=beta, flip_rate=0.0).loss
    np.testing.assert_allclose(np.asarray(robust), np.asarray(dpo), rtol=1e-12)
    # The engine's DPO (with diagnostics) is the same loss; its label smoothing ε is the
    # expected loss when each label is flipped with probability ε.
    smooth = engine_dpo_loss(pw, pl, rw, rl, beta=beta, label_smoothing=flip).loss
    flipped = LS.dpo_loss(pl, pw, rl, rw, beta=beta).loss
    np.testing.assert_allclose(
        np.asarray(smooth), np.asarray((1 - flip) * dpo + flip * flipped), rtol=1e-12
    )


@settings(max_examples=examples(10))
@given(seed=st.integers(0, 2**31 - 1), beta=st.floats(0.1, 5.0), flip=st.floats(0.0, 0.45))
def test_robust_dpo_is_unbiased_under_label_flips(seed, beta, flip):
    """E_flip ℓ_ε = (1 − ε)ℓ_ε(w, l) + εℓ_ε(l, w) equals the clean DPO loss ℓ(w, l)."""
    rng = np.random.default_rng(seed)
    pw, pl, rw, rl = (jnp.asarray(rng.normal(size=8) * 3) for _ in range(4))
    clean = LS.dpo_loss(pw, pl, rw, rl, beta=beta).loss
    kept = LS.robust_dpo_loss(pw, pl, rw, rl, beta=beta, flip_rate=flip).loss
    swapped = LS.robust_dpo_loss(pl, pw, rl, rw, beta=beta, flip_rate=flip).loss
    np.testing.assert_allclose(
        np.asarray((1 - flip) * kept + flip * swapped), np.asarray(clean), rtol=1e-10, atol=1e-12
    )


@jax.jit
def _dpo_population_gradients(r, log_ref, mu, beta, flip):
    """Gradients at the tilt π_ref e^{r/β} of the population DPO loss (clean labels) and of
    the robust loss under labels flipped w.p. ε, on the Bradley–Terry game of r."""
    p = G.bradley_terry_game(r).preference
    noisy = (1 - flip) * p + flip * p.T

    def dpo(lp, yw, yl):
        return LS.dpo_loss(lp[yw], lp[yl], log_ref[yw], log_ref[yl], beta=beta).loss

    def robust(lp, yw, yl):
        return LS.robust_dpo_loss(
            lp[yw], lp[yl], log_ref[yw], log_ref[yl], beta=beta, flip_rate=flip
        ).loss

    tilt = log_ref + r / beta
    wrong = log_ref + 2 * r / beta
    return (
        jax.grad(labelled_population(dpo, p, mu))(tilt),
        jax.grad(labelled_population(robust, noisy, mu))(tilt),
        jax.grad(labelled_population(dpo, noisy, mu))(tilt),
        jax.grad(labelled_population(dpo, p, mu))(wrong),
    )


@settings(max_examples=examples(6))
@given(inst=instances(), beta=st.floats(0.2, 5.0), flip=st.floats(0.05, 0.45))
def test_dpo_population_minimiser_is_the_kl_regularised_optimum(inst, beta, flip):
    """The population DPO loss is convex in θ and stationary at θ = log π_ref + r/β, the
    tilt of ALGORITHMS.md §1 — also for robust DPO under flipped labels, unlike plain DPO."""
    game, rng = inst
    k = game.num_responses
    r = jnp.asarray(rng.normal(size=k) * 2)
    clean, robust, naive, wrong = _dpo_population_gradients(
        r, _random_log_policy(rng, k), _random_log_policy(rng, k), beta, flip
    )
    assert float(jnp.max(jnp.abs(clean))) < 1e-12
    assert float(jnp.max(jnp.abs(robust))) < 1e-12
    assert float(jnp.max(jnp.abs(naive))) > 1e-6  # label noise biases plain DPO
    assert float(jnp.max(jnp.abs(wrong))) > 1e-6  # and the stationarity check has teeth


# ----------------------------------------------------------------------------- mixtures


@settings(max_examples=examples(10))
@given(seed=st.integers(0, 2**31 - 1), mix=st.floats(0.0, 1.0))
def test_token_level_mixture_is_sequence_level_only_for_memoryless_policies(seed, mix):
    """Over sequences of two tokens (vocabulary 3): if each token's distribution ignores the
    prefix, the product of token-level mixtures is the sequence-level mixture; with a
    prefix-dependent second token it is not (the Nash-MD-PG discrepancy)."""
    rng = np.random.default_rng(seed)
    v = 3
    first_p, first_r = rng.normal(size=v), rng.normal(size=v)
    second_p, second_r = rng.normal(size=(v, v)) * 2, rng.normal(size=(v, v)) * 2

    def sequence_logp(first, second):  # log π(y1, y2) over the 9 sequences
        return (
            jax.nn.log_softmax(jnp.asarray(first))[:, None]
            + jax.nn.log_softmax(jnp.asarray(second), axis=-1)
        ).ravel()

    for memoryless in (True, False):
        sp = np.tile(second_p[:1], (v, 1)) if memoryless else second_p
        sr = np.tile(second_r[:1], (v, 1)) if memoryless else second_r
        seq = LS.sequence_level_mixture(
            sequence_logp(first_p, sp), sequence_logp(first_r, sr), mix=mix
        )
        token = sequence_logp(
            LS.token_level_mixture(jnp.asarray(first_p), jnp.asarray(first_r), mix=mix),
            LS.token_level_mixture(jnp.asarray(sp), jnp.asarray(sr), mix=mix),
        )
        # Both put weight π^{1−mix} π_ref^{mix} on each sequence (up to normalisation).
        gap = float(jnp.max(jnp.abs(jnp.exp(seq) - jnp.exp(token))))
        if memoryless or mix in (0.0, 1.0):
            assert gap < 1e-12
        elif 0.05 < mix < 0.95:
            assert gap > 1e-6
    # The sequence-level mixture is the one the tabular Nash-MD plays (mix = sτ).
    k = 5
    game = G.random_game(k, key=jax.random.key(seed), scale=2.0)
    log_ref, theta = _random_log_policy(rng, k), _random_log_policy(rng, k)
    solver = G.nash_md(0.5, tau=0.8, ref=log_ref)
    target = solver.pairwise_target(game, solver.init(game, theta))
    want = LS.sequence_level_mixture(theta, log_ref, mix=0.4)
    np.testing.assert_allclose(np.exp(target.sampling), np.exp(want), atol=1e-12)


# ----------------------------------------------------------------------------- policy gradient


def _grouped_expectation(fn, log_pi, k: int, n: int):
    """E over groups of n i.i.d. draws from π of fn(indices [n]), by enumeration."""
    groups = jnp.asarray(list(itertools.product(range(k), repeat=n)))
    probs = jnp.exp(jnp.sum(log_pi[groups], axis=1))
    values = jax.vmap(fn)(groups)
    return jax.tree.map(lambda v: jnp.tensordot(probs, v, axes=1), values)


@functools.partial(jax.jit, static_argnames=("baseline", "estimator", "kl_mode"))
def _expected_pg_gradient(theta, log_ref, reward, beta, baseline, estimator, kl_mode):
    k, n = theta.shape[0], 3

    def surrogate(theta, group):
        logp = jax.nn.log_softmax(theta)[group][:, None]  # one-token "sequences"
        return LS.kl_regularized_pg_loss(
            logp,
            log_ref[group][:, None],
            jnp.ones_like(logp),
            reward[group],
            beta=beta,
            group_size=n,
            baseline=baseline,
            estimator=estimator,
            kl_mode=kl_mode,
        ).loss

    log_pi = jax.nn.log_softmax(theta)
    return _grouped_expectation(lambda g: jax.grad(surrogate)(theta, g), log_pi, k, n)


def _exact_gradients(theta, log_ref, reward):
    def expected_reward(t):
        return jnp.sum(jnp.exp(jax.nn.log_softmax(t)) * reward)

    def kl_forward(t):  # KL(π‖π_ref)
        lp = jax.nn.log_softmax(t)
        return jnp.sum(jnp.exp(lp) * (lp - log_ref))

    def kl_reverse(t):  # KL(π_ref‖π)
        return jnp.sum(jnp.exp(log_ref) * (log_ref - jax.nn.log_softmax(t)))

    return (jax.grad(f)(theta) for f in (expected_reward, kl_forward, kl_reverse))


@settings(max_examples=examples(4))
@given(seed=st.integers(0, 2**31 - 1), beta=st.floats(0.05, 2.0))
def test_policy_gradient_surrogates_are_unbiased(seed, beta):
    rng = np.random.default_rng(seed)
    k = 4
    theta = jnp.asarray(rng.normal(size=k))
    log_ref = _random_log_policy(rng, k)
    reward = jnp.asarray(rng.normal(size=k))
    d_reward, d_kl, d_reverse = _exact_gradients(theta, log_ref, reward)
    want = {"k1": 0 * d_kl, "k2": d_kl, "k3": d_reverse}
    for estimator, kl_grad in want.items():
        got = _expected_pg_gradient(
            theta, log_ref, reward, beta, "leave_one_out", estimator, "loss"
        )
        np.testing.assert_allclose(got, -d_reward + beta * kl_grad, atol=1e-12)
    got = _expected_pg_gradient(theta, log_ref, reward, beta, "leave_one_out", "k1", "reward")
    np.testing.assert_allclose(got, -(d_reward - beta * d_kl), atol=1e-12)
    # A baseline that includes the response itself shrinks the gradient by (n − 1)/n.
    got = _expected_pg_gradient(theta, log_ref, reward, 0.0, "group_mean", "k2", "loss")
    np.testing.assert_allclose(got, -(2 / 3) * d_reward, atol=1e-12)
    # Leave-one-out advantages are invariant to a reward shift on every sample (a constant
    # reward gives a zero gradient estimate), not only in expectation.
    groups = jnp.asarray(rng.integers(0, k, size=12))
    adv = LS.advantages(reward[groups], group_size=3, baseline="leave_one_out")
    shifted = LS.advantages(reward[groups] + 3.7, group_size=3, baseline="leave_one_out")
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(adv), atol=1e-12)
    # k1 and k3 are unbiased values of KL(π‖π_ref); k3 ≥ 0 on every sample.
    log_pi = jax.nn.log_softmax(theta)
    kl_value = float(jnp.sum(jnp.exp(log_pi) * (log_pi - log_ref)))
    for estimator in ("k1", "k3"):
        values = LS.kl_estimate(log_pi, log_ref, estimator=estimator)
        assert abs(float(jnp.sum(jnp.exp(log_pi) * values)) - kl_value) < 1e-12
    assert float(jnp.min(LS.kl_estimate(log_pi, log_ref, estimator="k3"))) >= 0
