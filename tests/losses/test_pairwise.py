"""The unified pairwise preference loss: hand values, MNPO Table 1 reductions, robustness,
and the tie to the tabular solvers (population minimiser = closed-form update)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import games
from jaxalign.losses import pairwise as pw
from jaxalign.losses.dpo import dpo_loss as engine_dpo_loss

RNG = np.random.default_rng(0)
B = 6
PW, PL, RW, RL, CW, CL, AW, AL = (jnp.asarray(-RNG.uniform(1, 5, B), jnp.float32) for _ in range(8))


def test_dpo_hand_value():
    out = engine_dpo_loss(
        jnp.array([-1.0]), jnp.array([-2.0]), jnp.array([-1.5]), jnp.array([-1.5]), beta=0.5
    )
    # h = (−1 + 2) − 0 = 1, z = βh = 0.5, loss = −log σ(0.5) = log(1 + e^{−0.5}).
    np.testing.assert_allclose(out.loss, [math.log1p(math.exp(-0.5))], rtol=1e-6)
    np.testing.assert_allclose(out.margin, [0.5])


def test_ipo_hand_value():
    out = pw.ipo_loss(
        jnp.array([-1.0]), jnp.array([-3.0]), jnp.array([-2.0]), jnp.array([-2.5]), tau=0.25
    )
    # h = 2 − 0.5 = 1.5, target 1/(2·0.25) = 2 → (1.5 − 2)² = 0.25.
    np.testing.assert_allclose(out.loss, [0.25], rtol=1e-6)


def test_dpo_is_the_unified_loss_with_the_reference_anchor():
    unified = pw.pairwise_preference_loss(
        PW, PL, [pw.Anchor(RW, RL)], distance="logistic", scale=0.3
    )
    dpo = engine_dpo_loss(PW, PL, RW, RL, beta=0.3)
    np.testing.assert_array_equal(dpo.loss, unified.loss)  # the same arithmetic, bit for bit
    np.testing.assert_array_equal(dpo.margin, 0.3 * unified.logit)


def _mnpo_author_form(pw_, pl_, refw, refl, hist, lambdas, ratio, target):
    """ALGORITHMS.md §3, the authors' code: logits = h_θ − ratio·h_ref − (1−ratio) Σ λ_j h_j."""
    logits = (pw_ - pl_) - ratio * (refw - refl)
    for (hw, hl), lam in zip(hist, lambdas):
        logits = logits - (1 - ratio) * lam * (hw - hl)
    return (logits - target) ** 2


def test_mnpo_matches_the_authors_formula_with_time_dependent_opponents():
    hist = [(CW, CL), (AW, AL)]
    out = pw.mnpo_loss(
        PW, PL, RW, RL, hist, history_weights=[0.7, 0.3], ref_ratio=0.2, step_size=3.0
    )
    np.testing.assert_allclose(
        out.loss, _mnpo_author_form(PW, PL, RW, RL, hist, [0.7, 0.3], 0.2, 1.5), rtol=1e-5
    )


def test_table1_inpo_is_mnpo_with_opponents_current_and_reference():
    s, tau = 4.0, 0.1  # INPO's η = 1/s = 0.25
    inpo = pw.inpo_loss(PW, PL, RW, RL, CW, CL, step_size=s, tau=tau)
    mnpo = pw.mnpo_loss(
        PW, PL, RW, RL, [(CW, CL)], history_weights=[1.0], ref_ratio=s * tau, step_size=s
    )
    np.testing.assert_allclose(inpo.loss, mnpo.loss, rtol=1e-6)
    # And the INPO paper's own h_t (ALGORITHMS.md §2.1), η the inverse step.
    eta = 1 / s
    h = (PW - PL) - (tau / eta) * (RW - RL) - ((eta - tau) / eta) * (CW - CL)
    np.testing.assert_allclose(inpo.loss, (h - 1 / (2 * eta)) ** 2, rtol=1e-5)


def test_table1_ipo_and_onpo_are_mnpo_instances():
    tau = 0.5
    ipo = pw.ipo_loss(PW, PL, RW, RL, tau=tau)
    mnpo = pw.mnpo_loss(PW, PL, RW, RL, [], history_weights=[], ref_ratio=1.0, step_size=1 / tau)
    np.testing.assert_allclose(ipo.loss, mnpo.loss, rtol=1e-6)
    onpo = pw.onpo_loss(PW, PL, AW, AL, step_size=2.0)
    mnpo = pw.mnpo_loss(
        PW, PL, RW, RL, [(AW, AL)], history_weights=[1.0], ref_ratio=0.0, step_size=2.0
    )
    np.testing.assert_allclose(onpo.loss, mnpo.loss, rtol=1e-6)
    # ONPO's g_t (ALGORITHMS.md §2.2): log π/π' difference, target η/2, no reference term.
    g = (PW - AW) - (PL - AL)
    np.testing.assert_allclose(onpo.loss, (g - 1.0) ** 2, rtol=1e-5)


def test_egpo_and_sppo_hand_forms():
    wa, wb = jnp.full(B, 0.7), jnp.full(B, 0.4)
    out = pw.egpo_loss(PW, PL, RW, RL, wa, wb, tau=0.5)
    expected = ((PW - PL) - (RW - RL) - (0.7 - 0.4) / 0.5) ** 2
    np.testing.assert_allclose(out.loss, expected, rtol=1e-5)
    out = pw.sppo_loss(PW, PL, CW, CL, wa, wb, step_size=2.0)
    expected = 0.5 * ((PW - CW - 2.0 * 0.2) ** 2 + (PL - CL - 2.0 * (-0.1)) ** 2)
    np.testing.assert_allclose(out.loss, expected, rtol=1e-5)


def test_robust_dpo_is_unbiased_under_label_flips():
    eps = 0.2
    clean = engine_dpo_loss(PW, PL, RW, RL, beta=0.7).loss
    forward = pw.robust_dpo_loss(PW, PL, RW, RL, beta=0.7, flip_rate=eps).loss
    flipped = pw.robust_dpo_loss(PL, PW, RL, RW, beta=0.7, flip_rate=eps).loss
    np.testing.assert_allclose((1 - eps) * forward + eps * flipped, clean, rtol=1e-5)


def test_gradients_do_not_flow_into_anchors():
    def loss(anchor_w):
        return pw.onpo_loss(PW, PL, anchor_w, AL, step_size=1.0).loss.sum()

    assert float(jnp.abs(jax.grad(loss)(AW)).max()) == 0.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pw.pairwise_preference_loss(PW, PL, distance="hinge"), "distance"),
        (lambda: pw.pairwise_preference_loss(PW, PL[:3]), "shape mismatch"),
        (lambda: pw.robust_dpo_loss(PW, PL, RW, RL, beta=1.0, flip_rate=0.5), "flip_rate"),
        (lambda: pw.ipo_loss(PW, PL, RW, RL, tau=0.0), "tau must be > 0"),
        (
            lambda: pw.mnpo_loss(
                PW, PL, RW, RL, [(CW, CL)], history_weights=[0.5, 0.5], ref_ratio=0.1, step_size=1.0
            ),
            "one weight per opponent",
        ),
        (lambda: pw.token_level_mixture(jnp.zeros(3), jnp.zeros(3), mix=1.5), "mix"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_token_and_sequence_mixtures_agree_for_one_token_and_differ_for_two():
    k = jax.random.split(jax.random.key(0), 4)
    pol1, ref1 = jax.random.normal(k[0], (3,)), jax.random.normal(k[1], (3,))
    tok = pw.token_level_mixture(pol1, ref1, mix=0.3)
    seq = pw.sequence_level_mixture(jax.nn.log_softmax(pol1), jax.nn.log_softmax(ref1), mix=0.3)
    np.testing.assert_allclose(tok, seq, atol=1e-6)
    # Two tokens, second-token logits depend on the first: the mixtures differ.
    pol2, ref2 = jax.random.normal(k[2], (3, 3)), jax.random.normal(k[3], (3, 3))
    lp1, lr1 = jax.nn.log_softmax(pol1), jax.nn.log_softmax(ref1)
    lp2, lr2 = jax.nn.log_softmax(pol2, -1), jax.nn.log_softmax(ref2, -1)
    seq_pol = (lp1[:, None] + lp2).ravel()
    seq_ref = (lr1[:, None] + lr2).ravel()
    seq = pw.sequence_level_mixture(seq_pol, seq_ref, mix=0.3)
    tok = (
        pw.token_level_mixture(pol1, ref1, mix=0.3)[:, None]
        + pw.token_level_mixture(pol2, ref2, mix=0.3)
    ).ravel()
    assert abs(float(jax.nn.logsumexp(tok))) < 1e-5
    assert float(jnp.max(jnp.abs(jnp.exp(tok) - jnp.exp(seq)))) > 1e-3


# ---------------------------------------------------------------------------------------------
# LLM-form loss on a tabular policy ↔ closed-form solver update.


def _population_minimiser(loss_of_pairs, theta0, mu, p):
    """argmin_θ E_{y,y'~μ, λ_p} loss(w, l; θ) for a tabular policy θ (exact: the loss is
    quadratic in θ, so one Newton step with the pseudo-inverse Hessian is exact)."""
    k = theta0.shape[0]
    yy, yp = jnp.meshgrid(jnp.arange(k), jnp.arange(k), indexing="ij")
    yy, yp = yy.ravel(), yp.ravel()
    weight = (jnp.exp(mu)[:, None] * jnp.exp(mu)[None, :] * p).ravel()  # (w, l) = (y, y')

    def objective(theta):
        logp = jax.nn.log_softmax(theta)
        return jnp.sum(weight * loss_of_pairs(logp, yy, yp))

    g = jax.grad(objective)(theta0)
    h = jax.hessian(objective)(theta0)
    return jax.nn.log_softmax(theta0 - jnp.linalg.pinv(h) @ g)


def _tabular_setup(k=5):
    game = games.random_game(k, key=jax.random.key(3), dtype=jnp.float64)
    log_ref = jax.nn.log_softmax(jax.random.normal(jax.random.key(4), (k,), jnp.float64))
    log_pt = jax.nn.log_softmax(jax.random.normal(jax.random.key(5), (k,), jnp.float64))
    return game, game.preference, log_ref, log_pt


@pytest.mark.parametrize("solver_name", ["inpo", "omd"])
def test_llm_loss_population_minimiser_is_the_solver_update(solver_name):
    with jax.enable_x64(True):
        game, p, log_ref, log_pt = _tabular_setup()
        s, tau = 0.8, 0.3
        if solver_name == "inpo":
            solver = games.inpo(s, tau=tau, ref=log_ref)

            def loss(lp, w, l_):
                return pw.inpo_loss(
                    lp[w],
                    lp[l_],
                    log_ref[w],
                    log_ref[l_],
                    log_pt[w],
                    log_pt[l_],
                    step_size=s,
                    tau=tau,
                ).loss
        else:
            solver = games.omd(s)

            def loss(lp, w, l_):
                return pw.onpo_loss(lp[w], lp[l_], log_pt[w], log_pt[l_], step_size=s).loss

        expected = solver.step(game, solver.init(game, log_pt)).log_policy
        got = _population_minimiser(loss, jnp.zeros(p.shape[0], jnp.float64), log_pt, p)
        np.testing.assert_allclose(np.exp(got), np.exp(expected), atol=1e-9)


def test_onpo_two_argmins_per_iteration_are_the_optimistic_update():
    with jax.enable_x64(True):
        game, p, _, log_pt = _tabular_setup()
        s = 0.5
        solver = games.onpo(s)
        state = solver.init(game, log_pt)
        for _ in range(3):
            state = solver.step(game, state)
        new = solver.step(game, state)
        cur = state.log_policy
        prime = jax.nn.log_softmax(state.opt_state.secondary)

        def anchored(anchor):
            return lambda lp, w, l_: (
                pw.onpo_loss(lp[w], lp[l_], anchor[w], anchor[l_], step_size=s).loss
            )

        zeros = jnp.zeros(p.shape[0], jnp.float64)
        # 1st argmin: anchor π'_t, pairs from π_t → π'_{t+1}; 2nd: anchor π'_{t+1} → π_{t+1}.
        prime_next = _population_minimiser(anchored(prime), zeros, cur, p)
        np.testing.assert_allclose(
            np.exp(prime_next), np.exp(jax.nn.log_softmax(new.opt_state.secondary)), atol=1e-9
        )
        got = _population_minimiser(anchored(prime_next), zeros, cur, p)
        np.testing.assert_allclose(np.exp(got), np.exp(new.log_policy), atol=1e-9)


def test_nash_md_loss_minimiser_on_mixture_pairs_is_the_nash_md_update():
    """Pairs from the mixture π^μ: the minimiser is π^μ e^{sPπ^μ} (games.nash_md's step).
    Teeth: the same loss on pairs from π_t (INPO's sampling) misses it."""
    with jax.enable_x64(True):
        game, p, log_ref, log_pt = _tabular_setup()
        s, tau = 0.8, 0.3
        solver = games.nash_md(s, tau=tau, ref=log_ref)
        expected = solver.step(game, solver.init(game, log_pt)).log_policy
        mix = pw.sequence_level_mixture(log_pt, log_ref, mix=s * tau)

        def loss(lp, w, l_):
            return pw.nash_md_loss(
                lp[w], lp[l_], log_ref[w], log_ref[l_], log_pt[w], log_pt[l_],
                step_size=s, tau=tau,
            ).loss  # fmt: skip

        zeros = jnp.zeros(p.shape[0], jnp.float64)
        got = _population_minimiser(loss, zeros, mix, p)
        np.testing.assert_allclose(np.exp(got), np.exp(expected), atol=1e-9)
        wrong = _population_minimiser(loss, zeros, log_pt, p)
        assert np.max(np.abs(np.exp(wrong) - np.exp(expected))) > 1e-3


def _third_draw_minimiser(loss_of_pairs, theta0, mu, nu, p):
    """argmin_θ E_{a,b~μ, c~ν} loss(a, b, P[a,c], P[b,c]; θ) (soft labels, same minimiser
    as Bernoulli labels: the loss is quadratic in the target)."""
    k = theta0.shape[0]
    aa, bb, cc = (x.ravel() for x in jnp.meshgrid(*(jnp.arange(k),) * 3, indexing="ij"))
    weight = jnp.exp(mu)[aa] * jnp.exp(mu)[bb] * jnp.exp(nu)[cc]

    def objective(theta):
        logp = jax.nn.log_softmax(theta)
        return jnp.sum(weight * loss_of_pairs(logp, aa, bb, p[aa, cc], p[bb, cc]))

    g = jax.grad(objective)(theta0)
    h = jax.hessian(objective)(theta0)
    return jax.nn.log_softmax(theta0 - jnp.linalg.pinv(h) @ g)


def test_egpo_step_loss_two_minimisers_are_the_extragradient_update():
    """Half step: opponent draws c ~ π_t → π_{t+½}; full step: c ~ π_{t+½}, same anchors
    (π_t, π_ref), pairs from π_t → π_{t+1} of games.egpo. With s = 1/τ the loss is the
    paper's egpo_loss."""
    with jax.enable_x64(True):
        game, p, log_ref, log_pt = _tabular_setup()
        s, tau = 0.9, 0.4
        solver = games.egpo(s, tau=tau, ref=log_ref)
        expected = solver.step(game, solver.init(game, log_pt)).log_policy

        def loss(lp, a, b, wa, wb):
            return pw.egpo_step_loss(
                lp[a], lp[b], log_ref[a], log_ref[b], log_pt[a], log_pt[b], wa, wb,
                step_size=s, tau=tau,
            ).loss  # fmt: skip

        zeros = jnp.zeros(p.shape[0], jnp.float64)
        half = _third_draw_minimiser(loss, zeros, log_pt, log_pt, p)
        inpo = games.inpo(s, tau=tau, ref=log_ref)
        np.testing.assert_allclose(
            np.exp(half), np.exp(inpo.step(game, inpo.init(game, log_pt)).log_policy), atol=1e-9
        )
        full = _third_draw_minimiser(loss, zeros, log_pt, half, p)
        np.testing.assert_allclose(np.exp(full), np.exp(expected), atol=1e-9)
        # Teeth: playing against π_t again (no extrapolation) is a different policy.
        assert np.max(np.abs(np.exp(half) - np.exp(expected))) > 1e-4

        x = jax.random.normal(jax.random.key(0), (6, 6), jnp.float64)
        wa, wb = jax.nn.sigmoid(x[4]), jax.nn.sigmoid(x[5])
        t = 2.5
        step = pw.egpo_step_loss(*x[:4], x[2], x[3], wa, wb, step_size=1 / t, tau=t)
        paper = pw.egpo_loss(*x[:4], wa, wb, tau=t)
        np.testing.assert_allclose(step.loss, paper.loss, rtol=1e-12)
