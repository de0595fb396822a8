"""Gradient entanglement (ALGORITHMS_2.md "Gradient entanglement", ALGORITHMS.md §5).

* (a) The first-order changes of log π_w, log π_l match one real SGD step of DPO, IPO and
  SimPO on a small autoregressive model (relative error < 1e-2 at η = 1e-4, residual
  O(η²)); swapping SimPO's d_w/d_l with |y_w| ≠ |y_l| mispredicts (residual O(η)).
* (b) Over 10⁴ random (g_w, g_l, d_w, d_l > 0) the pair (chosen↓, rejected↑) never occurs;
  it does for d < 0 (IPO past its target) and for a mis-weighted formula. The condition
  ⟨g_w,g_l⟩/min(‖g_w‖², ‖g_l‖²) > 1 is "some failure" for d_w = d_l; the min(‖g_w‖², ‖g_w‖²)
  typo misses failures.
* (c) Unigram closed form: equals the autodiff diagnostic, predicts the sign of a real
  step, reproduces the cosine table, 1 − cos ~ L⁻²; the |s|-for-L variant is rejected.
* (d) The normalised pairwise update gives Δlog π_w ≥ 0 ≥ Δlog π_l to first order (random
  draws and a real step); ‖g‖² normalisation, unequal side weights and plain DPO violate it.
* (e) A batch step's changes come from one jvp; the isolated-pair formula misses the
  cross-pair terms. A tabular softmax never entangles; a log-linear policy does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxalign.losses import entanglement as E
from jaxalign.losses.dpo import dpo_loss
from jaxalign.losses.pairwise import ipo_loss
from jaxalign.losses.simpo import simpo_loss
from theory_tests.strategies import examples

VOCAB, SEQ, HIDDEN, PAIRS = 4, 6, 5, 6  # tokens, prompt + response positions, width, pairs
BETA, TAU, SIMPO_BETA, SIMPO_GAMMA = 0.5, 0.5, 2.0, 0.5


# ---------------------------------------------------------------------------------------------
# A small nonlinear autoregressive model: logits_t = tanh(E[y_{t-1}] + P[t]) W.


def _init(seed: int, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    draw = lambda *s: jnp.asarray(scale * rng.standard_normal(s))
    return {
        "embed": draw(VOCAB, HIDDEN),
        "pos": {"bias": draw(SEQ, HIDDEN)},
        "head": draw(HIDDEN, VOCAB),
    }


def _logp(params, example):
    """Summed log-prob of the response tokens (mask) of one sequence (position 0 = prompt)."""
    tokens, mask = example
    hidden = jnp.tanh(params["embed"][tokens[:-1]] + params["pos"]["bias"][1:])
    logp = jax.nn.log_softmax(hidden @ params["head"], axis=-1)
    picked = jnp.take_along_axis(logp, tokens[1:, None], axis=-1)[:, 0]
    return jnp.sum(mask[1:] * picked)


def _pairs(seed: int, *, unequal: bool = True):
    """``PAIRS`` random pairs, right-padded responses of 1..SEQ-1 tokens (distinct lengths for
    every other pair when ``unequal``)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, (2, PAIRS, SEQ))
    tokens[:, :, 0] = 0
    n_w = rng.integers(1, SEQ, PAIRS)
    n_l = np.where(np.arange(PAIRS) % 2 == 0, n_w, rng.integers(1, SEQ, PAIRS)) if unequal else n_w
    if unequal:  # every odd pair has |y_w| ≠ |y_l|
        n_l = np.where((np.arange(PAIRS) % 2 == 1) & (n_l == n_w), n_w % (SEQ - 1) + 1, n_l)
    pos = np.arange(SEQ)[None, :]
    same = (n_w == n_l) & np.all((tokens[0] == tokens[1]) | (pos > n_w[:, None]), axis=1)
    tokens[1, same, 1] = (tokens[0, same, 1] + 1) % VOCAB  # y_w ≠ y_l in every pair
    mask_w = ((pos >= 1) & (pos <= n_w[:, None])).astype(np.float64)
    mask_l = ((pos >= 1) & (pos <= n_l[:, None])).astype(np.float64)
    chosen = (jnp.asarray(tokens[0]), jnp.asarray(mask_w))
    rejected = (jnp.asarray(tokens[1]), jnp.asarray(mask_l))
    return chosen, rejected, jnp.asarray(n_w, jnp.float64), jnp.asarray(n_l, jnp.float64)


_batched = jax.vmap(_logp, in_axes=(None, 0))


def _losses(kind: str, n_w, n_l, ref_w, ref_l):
    """Per-pair loss of (log π_w [b], log π_l [b]) for the library loss ``kind``."""
    if kind == "dpo":
        return lambda w, l_: dpo_loss(w, l_, ref_w, ref_l, beta=BETA).loss
    if kind == "ipo":
        return lambda w, l_: ipo_loss(w, l_, ref_w, ref_l, tau=TAU).loss
    return lambda w, l_: simpo_loss(w, l_, n_w, n_l, beta=SIMPO_BETA, gamma=SIMPO_GAMMA).loss


def _derivatives(kind, lw, ll, n_w, n_l, ref_w, ref_l):
    if kind == "dpo":
        return E.dpo_derivatives(lw, ll, ref_w, ref_l, beta=BETA)
    if kind == "ipo":
        return E.ipo_derivatives(lw, ll, ref_w, ref_l, tau=TAU)
    return E.simpo_derivatives(lw, ll, n_w, n_l, beta=SIMPO_BETA, gamma=SIMPO_GAMMA)


@functools.partial(jax.jit, static_argnames="kind")
def _one_pair_steps(params, ref_params, chosen, rejected, n_w, n_l, eta, *, kind):
    """Actual (Δlog π_w, Δlog π_l) of a separate SGD step of size η on each pair alone, the
    diagnostic's prediction, and the prediction's scale η(|d_w|‖g_w‖² + |d_l|‖g_l‖²)."""
    ref_w, ref_l = _batched(ref_params, chosen), _batched(ref_params, rejected)
    loss = _losses(kind, n_w, n_l, ref_w, ref_l)
    lw, ll = _batched(params, chosen), _batched(params, rejected)

    def step(i):
        pick = jax.nn.one_hot(i, PAIRS, dtype=lw.dtype)
        g = jax.grad(lambda p: pick @ loss(_batched(p, chosen), _batched(p, rejected)))(params)
        new = jax.tree.map(lambda p, q: p - eta * q, params, g)
        return _batched(new, chosen)[i] - lw[i], _batched(new, rejected)[i] - ll[i]

    actual = jax.vmap(step)(jnp.arange(PAIRS))
    ent = E.gradient_entanglement(
        _logp, params, chosen, rejected, _derivatives(kind, lw, ll, n_w, n_l, ref_w, ref_l),
        step_size=eta,
    )  # fmt: skip
    scale = eta * (jnp.abs(ent.d_w) * ent.norm_w**2 + jnp.abs(ent.d_l) * ent.norm_l**2)
    return actual, ent, scale


@pytest.mark.parametrize("kind", ["dpo", "ipo", "simpo"])
@settings(max_examples=examples(8))
@given(seed=st.integers(0, 2**31 - 1))
def test_first_order_prediction_matches_a_small_step(kind, seed):
    params, ref = _init(seed), _init(seed + 1)
    chosen, rejected, n_w, n_l = _pairs(seed + 2)
    (dw, dl), ent, scale = _one_pair_steps(params, ref, chosen, rejected, n_w, n_l, 1e-4, kind=kind)
    for actual, pred in ((dw, ent.change_w), (dl, ent.change_l)):
        err = np.abs(np.asarray(actual - pred)) / np.asarray(scale)
        assert err.max() < 1e-2, (kind, err)
        clear = np.abs(np.asarray(pred)) > 1e-2 * np.asarray(scale)
        assert np.all(np.sign(actual)[clear] == np.sign(pred)[clear])
    # The signs are the stated conditions: chosen falls iff ⟨⟩ > (d_w/d_l)‖g_w‖² (d > 0).
    pos = np.asarray((ent.d_w > 0) & (ent.d_l > 0))
    falls = np.asarray(ent.inner > ent.d_w / ent.d_l * ent.norm_w**2)
    rises = np.asarray(ent.inner > ent.d_l / ent.d_w * ent.norm_l**2)
    np.testing.assert_array_equal(falls[pos], (np.asarray(ent.change_w) < 0)[pos])
    np.testing.assert_array_equal(rises[pos], (np.asarray(ent.change_l) > 0)[pos])


def test_first_order_residual_is_second_order_and_swapped_simpo_ratio_is_not():
    params, ref = _init(3), _init(4)
    chosen, rejected, n_w, n_l = _pairs(5)
    assert np.any(np.asarray(n_w != n_l))

    def residuals(kind, eta, swap=False):
        (dw, _), ent, _ = _one_pair_steps(params, ref, chosen, rejected, n_w, n_l, eta, kind=kind)
        pred = ent.change_w
        if swap:  # the wrong SimPO ratio d_w/d_l = |y_w|/|y_l|
            gram = E.GradientGram(ent.norm_w**2, ent.inner, ent.norm_l**2)
            derivs = E.LossDerivatives(ent.d_l, ent.d_w)
            pred = E.first_order_change(gram, derivs, step_size=eta).chosen
        return np.abs(np.asarray(dw - pred))

    for kind in ("dpo", "ipo", "simpo"):
        slope = np.log2(residuals(kind, 2e-3) / residuals(kind, 1e-3))
        assert np.all(np.abs(slope - 2) < 0.15), (kind, slope)  # O(η²)
    odd = np.asarray(n_w != n_l)
    r1, r2 = residuals("simpo", 2e-3, swap=True), residuals("simpo", 1e-3, swap=True)
    assert np.all(np.abs(np.log2(r1 / r2)[odd] - 1) < 0.15)  # O(η): a wrong prediction
    scale = _one_pair_steps(params, ref, chosen, rejected, n_w, n_l, 1e-4, kind="simpo")[2]
    assert (residuals("simpo", 1e-4, swap=True)[odd] / np.asarray(scale)[odd]).max() > 0.05


def test_loss_derivatives_closed_forms():
    rng = np.random.default_rng(0)
    lw, ll, rw, rl = (jnp.asarray(rng.normal(-4, 2, 16)) for _ in range(4))
    n_w, n_l = (jnp.asarray(rng.integers(1, 9, 16).astype(np.float64)) for _ in range(2))
    h = (lw - rw) - (ll - rl)
    d = E.dpo_derivatives(lw, ll, rw, rl, beta=BETA)
    np.testing.assert_allclose(d.d_w, BETA * jax.nn.sigmoid(-BETA * h), rtol=1e-12)
    np.testing.assert_allclose(d.d_l, d.d_w, rtol=1e-12)
    d = E.ipo_derivatives(lw, ll, rw, rl, tau=TAU)
    np.testing.assert_allclose(d.d_w, 2 * (1 / (2 * TAU) - h), rtol=1e-12)
    np.testing.assert_allclose(d.d_l, d.d_w, rtol=1e-12)
    d = E.simpo_derivatives(lw, ll, n_w, n_l, beta=SIMPO_BETA, gamma=SIMPO_GAMMA)
    z = SIMPO_BETA * (lw / n_w - ll / n_l) - SIMPO_GAMMA
    np.testing.assert_allclose(d.d_w, SIMPO_BETA * jax.nn.sigmoid(-z) / n_w, rtol=1e-12)
    np.testing.assert_allclose(d.d_w / d.d_l, n_l / n_w, rtol=1e-12)
    differ = np.asarray(n_w != n_l)
    assert not np.allclose((d.d_w / d.d_l)[differ], (n_w / n_l)[differ])  # the swapped ratio


# ---------------------------------------------------------------------------------------------
# (b) Synchronised failures: random Gram matrices.


def _random_grams(seed: int, n: int = 10_000, dim: int = 6):
    """n random (g_w, g_l) in R^dim, many nearly parallel or anti-parallel, as a Gram."""
    rng = np.random.default_rng(seed)
    g_w = rng.standard_normal((n, dim)) * rng.lognormal(0, 1, (n, 1))
    rho = rng.choice([-1.0, 0.0, 0.5, 0.9, 0.99, 1.0], n)[:, None]
    g_l = rho * g_w * rng.lognormal(0, 0.5, (n, 1)) + rng.standard_normal((n, dim)) * (
        rng.lognormal(-1, 1, (n, 1))
    )
    gram = E.GradientGram(*(jnp.asarray(x) for x in ((g_w * g_w).sum(1), (g_w * g_l).sum(1),
                                                     (g_l * g_l).sum(1))))  # fmt: skip
    return gram, g_w, g_l


@settings(max_examples=examples(5))
@given(seed=st.integers(0, 2**31 - 1))
def test_chosen_down_and_rejected_up_never_both(seed):
    gram, g_w, g_l = _random_grams(seed)
    rng = np.random.default_rng(seed + 1)
    d_w, d_l = (jnp.asarray(rng.lognormal(0, 1.5, len(g_w))) for _ in range(2))
    ch = E.first_order_change(gram, E.LossDerivatives(d_w, d_l))
    down, up = np.asarray(ch.chosen < 0), np.asarray(ch.rejected > 0)
    assert down.any() and up.any()  # each failure happens on its own
    assert not np.any(down & up)
    # Equal weights (DPO): the margin grows by ηd‖g_w − g_l‖².
    ch = E.first_order_change(gram, E.LossDerivatives(d_w, d_w))
    diff = ((g_w - g_l) ** 2).sum(1)
    np.testing.assert_allclose(ch.chosen - ch.rejected, np.asarray(d_w) * diff, rtol=1e-8)
    # Wrong variants: negative weights (IPO past its target), and a mis-weighted rejected
    # change η(d_l⟨⟩ − d_w‖g_l‖²): both produce the forbidden pair.
    neg = E.first_order_change(gram, E.LossDerivatives(-d_w, -d_w))
    assert np.any(np.asarray((neg.chosen < 0) & (neg.rejected > 0)))
    wrong_l = d_l * gram.inner - d_w * gram.sq_norm_l
    assert np.any(down & np.asarray(wrong_l > 0))


def test_grad_condition_is_some_failure_and_the_typo_misses_failures():
    gram, _, _ = _random_grams(11)
    d = jnp.ones_like(gram.inner)
    ch = E.first_order_change(gram, E.LossDerivatives(d, d))
    failure = np.asarray((ch.chosen < 0) | (ch.rejected > 0))
    cond = np.asarray(E.entanglement_condition(gram))
    assert failure.any() and not failure.all()
    np.testing.assert_array_equal(cond > 1, failure)
    typo = np.asarray(gram.inner / gram.sq_norm_w)  # min(‖g_w‖², ‖g_w‖²)
    assert np.any(failure & (typo <= 1))
    ent = E.Entanglement(gram.inner, jnp.sqrt(gram.sq_norm_w), jnp.sqrt(gram.sq_norm_l),
                         gram.inner, d, d, ch.chosen, ch.rejected, jnp.sign(ch.chosen),
                         jnp.sign(ch.rejected))  # fmt: skip
    m = E.entanglement_metrics(ent)
    assert float(m["chosen_down_and_rejected_up"]) == 0.0
    np.testing.assert_allclose(float(m["chosen_down"]), np.mean(np.asarray(ch.chosen < 0)))
    np.testing.assert_allclose(float(m["grad_condition"]), cond.mean())
    half = jnp.asarray((np.arange(len(d)) < len(d) // 2).astype(np.float64))
    np.testing.assert_allclose(
        float(E.entanglement_metrics(ent, half)["both_down"]),
        np.mean(np.asarray((ch.chosen < 0) & (ch.rejected < 0))[: len(d) // 2]),
    )


# ---------------------------------------------------------------------------------------------
# (c) The unigram closed form.


def _unigram_logp(params, example):
    tokens, mask = example
    return jnp.sum(mask * jax.nn.log_softmax(params["z"])[tokens])


UNIGRAM_V, UNIGRAM_MAX_SUFFIX = 5, 12


def _unigram_case(seed: int):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(UNIGRAM_V) * rng.choice([0.3, 1.0, 3.0])
    a, b = rng.choice(UNIGRAM_V, 2, replace=False)
    n = int(rng.integers(0, UNIGRAM_MAX_SUFFIX + 1))
    uniform = rng.random() < 0.5
    suffix = rng.integers(0, UNIGRAM_V, n) if uniform else np.full(n, rng.integers(UNIGRAM_V))
    counts = np.bincount(suffix, minlength=UNIGRAM_V).astype(np.float64)
    pad = UNIGRAM_MAX_SUFFIX - n  # fixed shapes: the padded positions carry mask 0
    toks = lambda first: jnp.asarray(np.concatenate([[first], suffix, np.zeros(pad, int)]))
    mask = jnp.asarray(np.concatenate([np.ones(1 + n), np.zeros(pad)]))
    return jnp.asarray(z), int(a), int(b), jnp.asarray(counts), (toks(a), mask), (toks(b), mask)


@jax.jit
def _unigram_check(z, a, b, counts, chosen, rejected):
    """(closed form, autodiff diagnostic (d = 1), Δlog π_w of a real DPO step / (ηβ/2), and
    the |s|-for-L wrong variant) for one shared-suffix pair."""
    closed = E.unigram_shared_suffix(z, a, b, counts)
    one = jnp.ones(1, jnp.float64)
    batch = lambda ex: jax.tree.map(lambda x: x[None], ex)
    ent = E.gradient_entanglement(
        _unigram_logp, {"z": z}, batch(chosen), batch(rejected), E.LossDerivatives(one, one)
    )
    # A real DPO step on the logits, reference = the current policy (so d = β/2).
    eta = 1e-5
    lw, ll = _unigram_logp({"z": z}, chosen), _unigram_logp({"z": z}, rejected)

    def dpo(zz):
        w, l_ = _unigram_logp({"z": zz}, chosen), _unigram_logp({"z": zz}, rejected)
        return dpo_loss(w[None], l_[None], lw[None], ll[None], beta=BETA).loss[0]

    moved = _unigram_logp({"z": z - eta * jax.grad(dpo)(z)}, chosen) - lw
    p = jax.nn.softmax(z)
    wrong = 1 + counts[a] - counts[b] - jnp.sum(counts) * (p[a] - p[b])
    return closed, ent, moved / (eta * BETA / 2), wrong


@settings(max_examples=examples(25))
@given(seed=st.integers(0, 2**31 - 1))
def test_unigram_closed_form(seed):
    z, a, b, counts, chosen, rejected = _unigram_case(seed)
    closed, ent, moved, wrong = _unigram_check(z, a, b, counts, chosen, rejected)
    np.testing.assert_allclose(ent.cosine[0], closed.cosine, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ent.change_w[0], closed.change_w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ent.change_l[0], closed.change_l, rtol=1e-10, atol=1e-12)
    # The closed form predicts a real step: its sign, and its size to O(η).
    if abs(float(closed.change_w)) > 1e-3:
        assert np.sign(float(moved)) == np.sign(float(closed.change_w))
    np.testing.assert_allclose(float(moved), closed.change_w, rtol=1e-3, atol=1e-3)
    # Wrong variant: |s| in place of L = 1 + |s| (forgetting the differing token).
    p = jax.nn.softmax(z)
    if abs(float(p[a] - p[b])) > 1e-3:
        assert abs(float(wrong - closed.change_w)) > 1e-4


def test_unigram_cosine_table_and_its_scaling():
    z = jnp.asarray([1.0, 0.0, 0.0])
    cos = {L: E.unigram_shared_suffix(z, 0, 1, jnp.asarray([0.0, 0.0, L - 1.0])) for L in
           (1, 2, 5, 20, 100, 200)}  # fmt: skip
    expected = {1: -0.706, 2: 0.255, 5: 0.941, 20: 0.9974, 100: 0.99990}
    for L, c in expected.items():
        assert abs(float(cos[L].cosine) - c) < 6e-4, (L, float(cos[L].cosine))
    # Unit of ηd: the (−.82, −2.82) example, both fall; the margin grows by 2.
    np.testing.assert_allclose([cos[5].change_w, cos[5].change_l], [-0.821, -2.821], atol=1e-3)
    # 1 − cos ~ L⁻² (g_w − g_l = e_a − e_b is fixed while ‖g‖ grows like L).
    slope = np.log(float(1 - cos[200].cosine) / float(1 - cos[100].cosine)) / np.log(2)
    assert abs(slope + 2) < 0.05, slope
    with pytest.raises(ValueError, match="distinct"):
        E.unigram_shared_suffix(z, 1, 1, jnp.zeros(3))
    with pytest.raises(ValueError, match="suffix_counts"):
        E.unigram_shared_suffix(z, 0, 1, jnp.asarray([0.0, -1.0, 0.0]))


def test_tabular_softmax_never_entangles_but_log_linear_policies_do():
    rng = np.random.default_rng(7)
    k, n = 12, 256
    theta = jnp.asarray(rng.standard_normal(k) * 3)
    w = rng.integers(0, k, n)
    l_ = (w + rng.integers(1, k, n)) % k
    onehot = lambda i: jnp.asarray(np.eye(k)[i])
    tab = lambda p, e: jnp.vdot(e, jax.nn.log_softmax(p))
    gram = E.pair_gradient_gram(tab, theta, onehot(w), onehot(l_))
    assert np.all(np.asarray(E.entanglement_condition(gram)) < 1)
    feats = jnp.asarray(rng.standard_normal((k, 3)) + 2.0)  # correlated features
    loglin = lambda p, e: jnp.vdot(e, jax.nn.log_softmax(feats @ p))
    gram = E.pair_gradient_gram(loglin, theta[:3], onehot(w), onehot(l_))
    assert np.any(np.asarray(E.entanglement_condition(gram)) > 1)


# ---------------------------------------------------------------------------------------------
# (d) The normalised pairwise update.


@settings(max_examples=examples(5))
@given(seed=st.integers(0, 2**31 - 1))
def test_normalised_update_raises_chosen_and_lowers_rejected(seed):
    gram, _, _ = _random_grams(seed)
    rng = np.random.default_rng(seed + 1)
    omega = jnp.asarray(rng.lognormal(0, 1, len(gram.inner)))
    ch = E.first_order_change(gram, E.LossDerivatives(omega, omega), update="normalised")
    tol = 1e-12 * (gram.sq_norm_w + gram.sq_norm_l)
    assert np.all(np.asarray(ch.chosen >= -tol)) and np.all(np.asarray(ch.rejected <= tol))
    norm_w, norm_l = jnp.sqrt(gram.sq_norm_w), jnp.sqrt(gram.sq_norm_l)
    cos = gram.inner / (norm_w * norm_l)
    np.testing.assert_allclose(ch.chosen, omega * norm_w * (1 - cos), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ch.rejected, -omega * norm_l * (1 - cos), rtol=1e-9, atol=1e-12)
    # Wrong variants. g/‖g‖²: Δ_w = ω(1 − ⟨⟩/‖g_l‖²) can be negative.
    assert np.any(np.asarray(1 - gram.inner / gram.sq_norm_l < 0))
    # Unequal side weights (SimPO's d_w ≠ d_l): Δ_w = ‖g_w‖(d_w − d_l cos) can be negative.
    d_l = omega * jnp.asarray(rng.lognormal(0, 1, len(omega)))
    assert np.any(np.asarray(norm_w * (omega - d_l * cos) < 0))
    # Plain DPO on the same draws: both failures occur.
    sgd = E.first_order_change(gram, E.LossDerivatives(omega, omega))
    assert np.any(np.asarray(sgd.chosen < 0)) and np.any(np.asarray(sgd.rejected > 0))


def test_normalised_update_real_step_on_one_pair():
    params = _init(21)
    chosen, rejected, _, _ = _pairs(22)
    ent = E.gradient_entanglement(
        _logp, params, chosen, rejected, E.LossDerivatives(*(jnp.ones(PAIRS),) * 2)
    )
    eta = 1e-4
    pred = E.first_order_change(
        E.GradientGram(ent.norm_w**2, ent.inner, ent.norm_l**2),
        E.LossDerivatives(*(jnp.ones(PAIRS),) * 2),
        step_size=eta,
        update="normalised",
    )

    def step(i):
        pick = jax.nn.one_hot(i, PAIRS, dtype=jnp.float64)
        loss = lambda p: (
            pick
            @ E.normalised_pairwise_loss(
                _batched(p, chosen), _batched(p, rejected), ent.norm_w, ent.norm_l
            )
        )
        new = jax.tree.map(lambda p, g: p - eta * g, params, jax.grad(loss)(params))
        return (_batched(new, chosen) - _batched(params, chosen))[i], (
            _batched(new, rejected) - _batched(params, rejected)
        )[i]

    dw, dl = jax.jit(jax.vmap(step))(jnp.arange(PAIRS))
    assert np.all(np.asarray(dw) > 0) and np.all(np.asarray(dl) < 0)
    np.testing.assert_allclose(dw, pred.chosen, rtol=1e-3)
    np.testing.assert_allclose(dl, pred.rejected, rtol=1e-3)
    # The surrogate's own gradient is the normalised direction (norm ≤ 2 per pair).
    with pytest.raises(ValueError, match="norm_w"):
        E.normalised_pairwise_loss(jnp.zeros(2), jnp.zeros(2), -jnp.ones(2), jnp.ones(2))


# ---------------------------------------------------------------------------------------------
# (e) A batch step by jvp, and the computation methods.


def test_batch_step_changes_come_from_one_jvp():
    params, ref = _init(31), _init(32)
    chosen, rejected, _, _ = _pairs(33)
    ref_w, ref_l = _batched(ref, chosen), _batched(ref, rejected)
    mean_loss = lambda p: jnp.mean(
        dpo_loss(_batched(p, chosen), _batched(p, rejected), ref_w, ref_l, beta=BETA).loss
    )
    eta = 1e-4
    update = jax.tree.map(lambda g: -eta * g, jax.grad(mean_loss)(params))
    new = jax.tree.map(jnp.add, params, update)
    actual = _batched(new, chosen) - _batched(params, chosen)
    pred = E.directional_logp_change(_logp, params, update, chosen)
    lw, ll = _batched(params, chosen), _batched(params, rejected)
    derivs = E.dpo_derivatives(lw, ll, ref_w, ref_l, beta=BETA)
    ent = E.gradient_entanglement(_logp, params, chosen, rejected, derivs, step_size=eta / PAIRS)
    scale = eta * np.max(np.abs(np.asarray(actual)))
    np.testing.assert_allclose(actual, pred, rtol=1e-3, atol=1e-3 * scale)
    # Wrong variant: the isolated-pair prediction ignores the other pairs' gradients.
    assert np.max(np.abs(np.asarray(actual - ent.change_w))) > 0.1 * np.max(np.abs(actual))
    with pytest.raises(ValueError, match="structure"):
        E.directional_logp_change(_logp, params, {"embed": params["embed"]}, chosen)


def test_vmap_and_map_agree_and_bad_input_is_rejected():
    params = _init(41)
    chosen, rejected, _, _ = _pairs(42)
    a = E.pair_gradient_gram(_logp, params, chosen, rejected)
    b = E.pair_gradient_gram(_logp, params, chosen, rejected, method="map", batch_size=4)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12)
    assert np.all(np.asarray(a.inner**2 <= a.sq_norm_w * a.sq_norm_l * (1 + 1e-12)))
    with pytest.raises(ValueError, match="method"):
        E.pair_gradient_gram(_logp, params, chosen, rejected, method="loop")
    with pytest.raises(ValueError, match="batch_size"):
        E.pair_gradient_gram(_logp, params, chosen, rejected, batch_size=2)
    with pytest.raises(ValueError, match="pairs"):
        E.pair_gradient_gram(_logp, params, chosen, (rejected[0][:2], rejected[1][:2]))
    with pytest.raises(ValueError, match="leading batch axis"):
        E.pair_gradient_gram(_logp, params, chosen, (rejected[0], jnp.zeros(())))
    d = E.LossDerivatives(jnp.ones(PAIRS), jnp.ones(PAIRS))
    with pytest.raises(ValueError, match="update"):
        E.first_order_change(a, d, update="adam")
    with pytest.raises(ValueError, match="step_size"):
        E.first_order_change(a, d, step_size=0.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        E.first_order_change(a, E.LossDerivatives(jnp.ones(2), jnp.ones(2)))
    with pytest.raises(ValueError, match="policy_w"):
        E.dpo_derivatives(jnp.zeros((2, 2)), jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), beta=1.0)
    with pytest.raises(ValueError, match="beta"):
        E.dpo_derivatives(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), beta=0.0)
