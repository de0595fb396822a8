"""Clipped importance-ratio policy gradient: the gradient of every switch (clip bounds,
token / sequence ratio, loss aggregation, KL estimator) against a loss written out token by
token here, the reduction to the REINFORCE loss at π_θ = π_old, and hand values."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.losses import batch_advantages, clipped_pg_loss, kl_regularized_pg_loss

B, T = 4, 3
MASK = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], np.float64)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    old = np.log(rng.uniform(0.1, 0.9, (B, T)))
    logp = old + rng.normal(0.0, 0.4, (B, T))  # ratios spread across the clip bounds
    ref = np.log(rng.uniform(0.1, 0.9, (B, T)))
    adv = np.array([1.0, -0.7, 0.4, -1.2])
    return jnp.asarray(logp), jnp.asarray(old), jnp.asarray(ref), adv


def _kl(lp, rf, est):
    lr = rf - lp
    return {"k1": -lr, "k2": 0.5 * lr**2, "k3": jnp.exp(lr) - 1 - lr}[est]


def _hand_loss(logp, old, ref, adv, *, beta, lo, hi, ratio_level, agg, est):
    """The objective written element by element, independently of the library."""
    old = jax.lax.stop_gradient(old)
    per_seq, n_tok, total = [], 0.0, 0.0
    for i in range(B):
        toks = [t for t in range(T) if MASK[i, t]]
        if ratio_level == "sequence":
            s = jnp.exp(sum(logp[i, t] - old[i, t] for t in toks) / len(toks))
        seq = 0.0
        for t in toks:
            rho = s if ratio_level == "sequence" else jnp.exp(logp[i, t] - old[i, t])
            c = rho
            if lo is not None:
                c = jnp.maximum(c, 1 - lo)
            if hi is not None:
                c = jnp.minimum(c, 1 + hi)
            term = -jnp.minimum(rho * adv[i], c * adv[i]) + beta * _kl(logp[i, t], ref[i, t], est)
            seq = seq + term
        per_seq.append(seq / len(toks) if agg == "sequence_mean" else seq)
        n_tok += len(toks)
        total = total + seq
    if agg == "token_sum":
        return total / B
    if agg == "token_mean":
        return total / n_tok
    return sum(per_seq) / B


CASES = list(
    itertools.product(
        [(None, None), (0.2, 0.2), (0.2, 0.28), (None, 0.1), (0.15, None)],
        ["token", "sequence"],
        ["token_sum", "sequence_mean", "token_mean"],
    )
)


@pytest.mark.parametrize(("clip", "ratio_level", "agg"), CASES)
def test_gradient_matches_the_hand_written_loss(clip, ratio_level, agg):
    with jax.enable_x64(True):
        logp, old, ref, adv = _inputs()
        lo, hi = clip
        est = {"token_sum": "k2", "sequence_mean": "k3", "token_mean": "k1"}[agg]

        def lib(lp):
            return clipped_pg_loss(
                lp, old, ref, MASK, adv, beta=0.3, clip_low=lo, clip_high=hi,
                ratio_level=ratio_level, loss_aggregation=agg, estimator=est,
            ).loss  # fmt: skip

        def hand(lp):
            return _hand_loss(
                lp, old, ref, adv, beta=0.3, lo=lo, hi=hi, ratio_level=ratio_level, agg=agg,
                est=est,
            )  # fmt: skip

        np.testing.assert_allclose(lib(logp), hand(logp), rtol=1e-12)
        g_lib, g_hand = jax.grad(lib)(logp), jax.grad(hand)(logp)
        np.testing.assert_allclose(g_lib, g_hand, rtol=1e-10, atol=1e-14)
        assert float(jnp.max(jnp.abs(g_lib * (1 - MASK)))) == 0.0  # padding gets no gradient


@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
@pytest.mark.parametrize(
    ("kl_mode", "estimator"), [("loss", "k2"), ("loss", "k3"), ("reward", "k2")]
)
def test_one_epoch_without_clipping_is_the_reinforce_gradient(ratio_level, kl_mode, estimator):
    """At π_θ = π_old with no clip and the token-sum aggregation the surrogate's gradient is
    kl_regularized_pg_loss's, whatever the ratio level."""
    with jax.enable_x64(True):
        logp, _, ref, _ = _inputs(1)
        rewards = jnp.array([1.0, 0.0, 2.0, 0.5])
        kw = dict(beta=0.2, group_size=2, baseline="leave_one_out", kl_mode=kl_mode)

        def today(lp):
            return kl_regularized_pg_loss(lp, ref, MASK, rewards, estimator=estimator, **kw).loss

        def clipped(lp):
            adv, _ = batch_advantages(rewards, lp, ref, MASK, **kw)
            return clipped_pg_loss(
                lp, lp, ref, MASK, adv, beta=0.2, ratio_level=ratio_level,
                estimator=estimator, kl_in_loss=kl_mode == "loss",
            ).loss  # fmt: skip

        np.testing.assert_allclose(jax.grad(clipped)(logp), jax.grad(today)(logp), rtol=1e-12)


def _one_token(log_ratio, adv, lo, hi):
    """Gradient of the surrogate of one token with ``log ρ = log_ratio`` and advantage."""
    x = jnp.array([[0.0]])

    def loss(lp):
        out = clipped_pg_loss(
            lp, x - log_ratio, x, jnp.ones((1, 1)), jnp.array([adv]), beta=0.0, clip_low=lo,
            clip_high=hi,
        )  # fmt: skip
        return out.loss

    return float(jax.grad(loss)(x)[0, 0])


def test_clipped_tokens_get_zero_gradient_and_the_bound_is_pessimistic():
    lo, hi = 0.2, 0.2
    assert _one_token(math.log(1.5), 1.0, lo, hi) == 0.0  # ρ > 1+ε, A > 0: clipped
    assert _one_token(math.log(0.5), -1.0, lo, hi) == 0.0  # ρ < 1−ε, A < 0: clipped
    # The min keeps the unclipped branch where it is the smaller objective: ∂ℓ/∂log π = −ρA.
    np.testing.assert_allclose(_one_token(math.log(0.5), 1.0, lo, hi), -0.5, rtol=1e-6)
    np.testing.assert_allclose(_one_token(math.log(1.5), -1.0, lo, hi), 1.5, rtol=1e-6)
    np.testing.assert_allclose(_one_token(math.log(1.1), 2.0, lo, hi), -2.2, rtol=1e-6)


def test_asymmetric_bounds_are_honoured():
    r = math.log(1.25)
    assert _one_token(r, 1.0, 0.2, 0.2) == 0.0  # 1.25 > 1.2
    np.testing.assert_allclose(_one_token(r, 1.0, 0.2, 0.28), -1.25, rtol=1e-6)  # < 1.28
    r = math.log(0.75)
    assert _one_token(r, -1.0, 0.2, 0.28) == 0.0  # 0.75 < 0.8
    np.testing.assert_allclose(_one_token(r, -1.0, 0.28, 0.2), 0.75, rtol=1e-6)  # > 0.72
    # One side only: no lower clip keeps the gradient of a ratio far below 1.
    np.testing.assert_allclose(_one_token(math.log(0.1), -1.0, None, 0.2), 0.1, rtol=1e-5)


def test_token_and_sequence_ratios_differ_on_a_hand_example():
    """log ρ = (log 2, log ½): token ratios (2, ½), the sequence ratio exp(0) = 1."""
    logp = jnp.array([[0.0, 0.0]])
    old = jnp.array([[-math.log(2.0), math.log(2.0)]])
    kw = dict(beta=0.0, clip_low=0.2, clip_high=0.2)
    args = (logp, old, logp, jnp.ones((1, 2)), jnp.array([1.0]))
    tok = clipped_pg_loss(*args, ratio_level="token", **kw)
    seq = clipped_pg_loss(*args, ratio_level="sequence", **kw)
    np.testing.assert_allclose(tok.loss, -(1.2 + 0.5), rtol=1e-6)  # min(2, 1.2) + min(½, 0.8)
    np.testing.assert_allclose(seq.loss, -2.0, rtol=1e-6)
    np.testing.assert_allclose(tok.clip_fraction, 0.5)
    np.testing.assert_allclose(seq.clip_fraction, 0.0)
    g_tok = jax.grad(lambda lp: clipped_pg_loss(lp, *args[1:], ratio_level="token", **kw).loss)
    g_seq = jax.grad(lambda lp: clipped_pg_loss(lp, *args[1:], ratio_level="sequence", **kw).loss)
    np.testing.assert_allclose(g_tok(logp), [[0.0, -0.5]], atol=1e-7)
    np.testing.assert_allclose(g_seq(logp), [[-1.0, -1.0]], rtol=1e-6)  # 2 tokens × s/|y|


def test_aggregations_hand_values():
    """Per-token losses (1, 2, 3 | 4) on responses of lengths 3 and 1: token_sum
    (6 + 4)/2 = 5, sequence_mean (6/3 + 4/1)/2 = 3, token_mean 10/4."""
    mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    old = jnp.zeros((2, 3))
    ref = jnp.zeros((2, 3))
    values = {"token_sum": 5.0, "sequence_mean": 3.0, "token_mean": 2.5}
    # At ρ = 1 with A = −1 the surrogate is +1 per token; k1 = log π − log π_ref adds x.
    x = jnp.array([[0.0, 1.0, 2.0], [3.0, 9.0, 9.0]])
    for agg, want in values.items():
        out = clipped_pg_loss(
            old, old, ref - x, mask, jnp.array([-1.0, -1.0]), beta=1.0, estimator="k1",
            loss_aggregation=agg,
        )  # fmt: skip
        np.testing.assert_allclose(out.loss, want, rtol=1e-6, err_msg=agg)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(clip_low=1.0), "clip_low=1.0 is invalid"),
        (dict(clip_low=0.0), "clip_low=0.0 is invalid"),
        (dict(clip_high=-0.1), "clip_high=-0.1 is invalid"),
        (dict(ratio_level="seq"), "ratio_level must be one of"),
        (dict(loss_aggregation="mean"), "loss_aggregation must be one of"),
        (dict(beta=-1.0), "beta"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    logp, old, ref, adv = _inputs()
    kw = dict(beta=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        clipped_pg_loss(logp, old, ref, MASK, adv, **kw)


def test_shape_mismatches_are_named():
    logp, old, ref, adv = _inputs()
    with pytest.raises(ValueError, match="old_token_logp"):
        clipped_pg_loss(logp, old[:, :2], ref, MASK, adv, beta=0.1)
    with pytest.raises(ValueError, match="advantages_b has 3 rows"):
        clipped_pg_loss(logp, old, ref, MASK, adv[:3], beta=0.1)
