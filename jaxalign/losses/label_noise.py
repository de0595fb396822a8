r"""Preference learning under random label flips: DPO, conservative DPO and robust DPO.

Every preference label is flipped independently with probability :math:`\varepsilon<\tfrac12`,
so a pair whose clean preference is :math:`P^* = P(a\succ b)` is *observed* as
:math:`a\succ b` with probability

.. math::

    \tilde P = \varepsilon + (1-2\varepsilon)P^*.

With :math:`z = \beta h_\theta(a, b)` the DPO margin of the observed orientation and
:math:`\ell(z) = -\log\sigma(z)`, the three per-pair losses compared here are

* DPO: :math:`\ell(z)`;
* conservative DPO (cDPO, label smoothing): :math:`(1-\varepsilon)\ell(z) + \varepsilon\ell(-z)`
  (:func:`jaxalign.losses.dpo_loss` with ``label_smoothing=ε``);
* robust DPO (rDPO): :math:`[(1-\varepsilon)\ell(z) - \varepsilon\ell(-z)]/(1-2\varepsilon)`
  (:func:`jaxalign.losses.robust_dpo_loss`), whose expectation over the flips is the clean
  loss :math:`\ell(z)`.

Each population loss is :math:`q\,\ell(z) + (1-q)\,\ell(-z)` for some :math:`q`, minimised at
:math:`\sigma(z^*) = q`. Collecting the coefficients of :math:`\ell(z)`:

================  ===============================================  ===========================
loss              :math:`q = \sigma(\beta h^*)`                    P* = .8, ε = .2
================  ===============================================  ===========================
DPO               :math:`\tilde P`                                 .68
cDPO              :math:`(1-\varepsilon)\tilde P + \varepsilon(1-\tilde P)
                  = (1-2\varepsilon)\tilde P + \varepsilon`          .608
rDPO              :math:`(\tilde P - \varepsilon)/(1-2\varepsilon) = P^*`  .8
================  ===============================================  ===========================

So label smoothing shrinks the target toward ½ a *second* time (it models flips the data
already contain); only rDPO is unbiased. ``theory_tests/test_robust_dpo_noise.py`` settles
the table by minimising each population loss numerically (the issue text and the design
notes agree on it; the test, not either text, is the authority).

rDPO's per-pair curvature equals the clean one, :math:`\ell_\varepsilon''(z) =
\sigma(z)\sigma(-z)`, while its gradient weight is :math:`\sigma(-z) + \varepsilon/(1-2\varepsilon)`
(never below :math:`\varepsilon/(1-2\varepsilon)`, so the per-pair loss is unbounded below and an
empirical minimiser needs pairs seen in both orientations, or a bounded parameter set). With
a log-linear policy, :math:`h = w^\top x` for a feature difference :math:`x`, the
estimation error therefore has the sandwich covariance of :func:`rdpo_asymptotic_covariance`:
score variance :math:`\tilde P(1-\tilde P)/(1-2\varepsilon)^2` over the clean curvature, i.e.
:math:`\|\hat w - w^*\|_\Sigma \approx 2\sqrt{d/n}/(1-2\varepsilon)` at small margins.

References:
  Chowdhury, Kini, Natarajan, "Provably Robust DPO: Aligning Language Models with Noisy
  Feedback", ICML 2024 (rDPO and the :math:`O(\sqrt{d/n}/(1-2\varepsilon))` bound);
  Mitchell 2023, "A note on DPO with noisy preferences" (cDPO).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.losses import dpo as _dpo
from jaxalign.losses import pairwise as _pw

Method = Literal["dpo", "cdpo", "rdpo"]
METHODS: tuple[str, ...] = ("dpo", "cdpo", "rdpo")


# ---------------------------------------------------------------------------------------------
# Validation.


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _check_flip_rate(flip_rate, *, allow_half: bool = False) -> None:
    if not _checks.is_concrete(flip_rate):
        return
    a = np.asarray(flip_rate, dtype=np.float64)
    upper_ok = (a <= 0.5) if allow_half else (a < 0.5)
    if np.isnan(a).any() or (a < 0).any() or not upper_ok.all():
        hi = "0.5]" if allow_half else "0.5)"
        raise ValueError(
            f"flip_rate must be in [0, {hi}, got {flip_rate!r}"
            + ("" if allow_half else "; at ε = ½ the labels carry no information")
        )


def _check_probability(name: str, p) -> None:
    if not _checks.is_concrete(p):
        return
    a = np.asarray(p, dtype=np.float64)
    if np.isnan(a).any() or (a < 0).any() or (a > 1).any():
        raise ValueError(f"{name} must be probabilities in [0, 1], got {_checks._short(a)}")


# ---------------------------------------------------------------------------------------------
# Per-pair losses and their population versions.


def noisy_preference(
    p_true: Float[ArrayLike, "..."], flip_rate: float | Float[ArrayLike, "..."]
) -> Float[Array, "..."]:
    r""":math:`\tilde P = \varepsilon + (1-2\varepsilon)P^*`: the probability that a pair is
    observed as :math:`a\succ b` when each label flips with probability ε ∈ [0, ½]."""
    _check_probability("p_true", p_true)
    _check_flip_rate(flip_rate, allow_half=True)
    p = jnp.asarray(p_true)
    p = p if jnp.issubdtype(p.dtype, jnp.floating) else p.astype(jnp.result_type(float))
    eps = jnp.asarray(flip_rate, p.dtype)
    return eps + (1 - 2 * eps) * p


def noisy_pair_loss(
    margin: Float[ArrayLike, "b"], *, method: Method, flip_rate: float
) -> Float[Array, "b"]:
    r"""The per-pair loss of the observed orientation, as a function of the margin
    :math:`z = \beta h_\theta(a, b)` (``[b]``).

    ``"dpo"``: :math:`\ell(z)`; ``"cdpo"``: :math:`(1-\varepsilon)\ell(z)+\varepsilon\ell(-z)`
    (the engine's :func:`jaxalign.losses.dpo_loss` with label smoothing); ``"rdpo"``:
    :math:`[(1-\varepsilon)\ell(z)-\varepsilon\ell(-z)]/(1-2\varepsilon)` (the unified
    :func:`jaxalign.losses.pairwise_preference_loss` with ``flip_rate``). The library's
    losses are called, not re-derived, so the tests check them.
    """
    _check_method(method)
    _check_flip_rate(flip_rate)
    z = _checks.as_float_array("margin", margin, ndim=1)
    zero = jnp.zeros_like(z)
    if method == "cdpo":
        return _dpo.dpo_pair_loss(z, zero, zero, zero, beta=1.0, label_smoothing=flip_rate).loss
    eps = flip_rate if method == "rdpo" else 0.0
    return _pw.pairwise_preference_loss(z, zero, distance="logistic", flip_rate=eps).loss


def gradient_weight(
    margin: Float[ArrayLike, "b"], *, method: Method, flip_rate: float
) -> Float[Array, "b"]:
    r""":math:`-\partial\ell/\partial z`, the weight with which a pair's margin is pushed up:
    :math:`\sigma(-z)` (DPO), :math:`\sigma(-z)-\varepsilon` (cDPO, negative once
    :math:`\sigma(z) > 1-\varepsilon`), :math:`\sigma(-z)+\varepsilon/(1-2\varepsilon)` (rDPO,
    never below :math:`\varepsilon/(1-2\varepsilon)`). Closed form; the tests compare it
    with autodiff of :func:`noisy_pair_loss`."""
    _check_method(method)
    _check_flip_rate(flip_rate)
    z = _checks.as_float_array("margin", margin, ndim=1)
    eps = jnp.asarray(flip_rate, z.dtype)
    base = jax.nn.sigmoid(-z)
    if method == "dpo":
        return base
    if method == "cdpo":
        return base - eps
    return base + eps / (1 - 2 * eps)


def population_noisy_loss(
    margin: Float[ArrayLike, "b"],
    p_true: Float[ArrayLike, "b"],
    *,
    method: Method,
    flip_rate: float,
) -> Float[Array, "b"]:
    r""":math:`\mathbb E_{\text{flips}}` of the loss of pair :math:`(a,b)` at margin
    :math:`z = \beta h(a,b)`: :math:`\tilde P\,L(z) + (1-\tilde P)\,L(-z)` with
    :math:`\tilde P` = :func:`noisy_preference` and :math:`L` = :func:`noisy_pair_loss`."""
    z = _checks.as_float_array("margin", margin, ndim=1)
    p = _checks.as_float_array("p_true", p_true, ndim=1).astype(z.dtype)
    _checks.check_same_shape(("margin", "p_true"), z, p)
    q = noisy_preference(p, flip_rate)
    loss = lambda m: noisy_pair_loss(m, method=method, flip_rate=flip_rate)
    return q * loss(z) + (1 - q) * loss(-z)


def population_target(
    p_true: Float[ArrayLike, "..."], *, method: Method, flip_rate: float
) -> Float[Array, "..."]:
    r""":math:`\sigma(\beta h^*)` at the minimiser of the population noisy loss: the table of
    the module docstring — :math:`\tilde P` (DPO), :math:`(1-2\varepsilon)\tilde P+\varepsilon`
    (cDPO), :math:`P^*` (rDPO)."""
    _check_method(method)
    _check_flip_rate(flip_rate)
    q = noisy_preference(p_true, flip_rate)
    eps = jnp.asarray(flip_rate, q.dtype)
    if method == "dpo":
        return q
    if method == "cdpo":
        return (1 - 2 * eps) * q + eps
    return (q - eps) / (1 - 2 * eps)


def population_minimiser(
    p_true: Float[ArrayLike, "..."], *, method: Method, flip_rate: float, beta: float
) -> Float[Array, "..."]:
    r""":math:`h^* = \operatorname{logit}(q)/\beta` with :math:`q` = :func:`population_target`
    (±∞ where :math:`q \in \{0, 1\}`, e.g. rDPO at :math:`P^* = 1`)."""
    _checks.check_positive("beta", beta)
    q = population_target(p_true, method=method, flip_rate=flip_rate)
    return (jnp.log(q) - jnp.log1p(-q)) / jnp.asarray(beta, q.dtype)


# ---------------------------------------------------------------------------------------------
# Tabular policies: the exact population minimiser over all policies.


def tabular_population_minimiser(
    log_ref: Float[ArrayLike, "K"],
    preference: Float[ArrayLike, "K K"],
    *,
    method: Method,
    flip_rate: float | Float[ArrayLike, ""],
    beta: float | Float[ArrayLike, ""],
    num_steps: int = 80,
    max_step: float = 5.0,
) -> tuple[Float[Array, "K"], Float[Array, ""]]:
    r"""The policy minimising the population loss with pairs :math:`a, b\sim\pi_{\rm ref}`
    labelled by ``preference`` (``P[a, b]`` = clean :math:`P^*(a\succ b)`) and flipped at
    rate ε.

    With :math:`\log\pi = \log\pi_{\rm ref} + f` (normalised), :math:`z_{ab} = \beta(f_a - f_b)`
    and, for each of the three losses, the population loss of an ordered pair is the cross
    entropy :math:`q_{ab}\ell(z_{ab}) + (1-q_{ab})\ell(-z_{ab})` with :math:`q` =
    :func:`population_target` (up to a constant: rDPO's and cDPO's two terms have the same
    curvature :math:`\sigma(z)\sigma(-z)` as DPO's). So the objective
    :math:`\sum_{ab}\pi_{\rm ref}(a)\pi_{\rm ref}(b)[\ldots]` is convex in :math:`f` with

    .. math::

        \nabla_a = \beta\sum_b (D_{ab} - D_{ba}),\quad D_{ab} = W_{ab}(\sigma(z_{ab}) - q_{ab}),
        \qquad \nabla^2 = \beta^2[\operatorname{diag}(C\mathbf 1 + C^\top\mathbf 1) - C - C^\top],

    :math:`C_{ab} = W_{ab}\sigma(z_{ab})\sigma(-z_{ab})`. Solved by ``num_steps`` Newton steps
    (the Hessian is singular along :math:`f\propto 1`, fixed by a rank-one term) clipped to
    ``max_step`` in the max-norm. The theory test checks the result against autodiff of the
    explicit population loss built from :func:`noisy_pair_loss`.

    For rDPO and a Bradley–Terry ``preference`` the answer is the clean KL-regularised optimum
    :math:`\pi_{\rm ref}e^{r/\beta}` for every ε; DPO and cDPO on noisy labels fit a flatter
    policy. Jittable in ``flip_rate`` and ``beta`` (vmap over them).

    Returns:
      ``(log π [K], max |gradient|)`` — the latter certifies convergence.
    """
    _check_method(method)
    _check_flip_rate(flip_rate)
    _checks.check_positive("beta", beta)
    log_ref = _checks.as_float_array("log_ref", log_ref, ndim=1)
    p = _checks.as_float_array("preference", preference, ndim=2).astype(log_ref.dtype)
    k = log_ref.shape[0]
    if p.shape != (k, k):
        raise ValueError(f"preference must have shape ({k}, {k}), got {p.shape}")
    _checks.check_log_probs("log_ref", log_ref)
    _check_probability("preference", p)
    mu = jnp.exp(log_ref)
    w = mu[:, None] * mu[None, :]
    q = population_target(p, method=method, flip_rate=flip_rate)
    beta = jnp.asarray(beta, log_ref.dtype)
    ones = jnp.full((k, k), 1.0 / k, log_ref.dtype)

    def grad_hess(f):
        s = jax.nn.sigmoid(beta * (f[:, None] - f[None, :]))
        d = w * (s - q)
        c = w * s * (1 - s)
        g = beta * (jnp.sum(d, axis=1) - jnp.sum(d, axis=0))
        h = beta**2 * (jnp.diag(jnp.sum(c, axis=1) + jnp.sum(c, axis=0)) - c - c.T)
        return g, h

    def newton(_, f):
        g, h = grad_hess(f)
        # g ⊥ 1, so the step solving (H + λ11ᵀ/K) step = g is ⊥ 1 and Newton's on the rest.
        step = jnp.linalg.solve(h + jnp.trace(h) / k * ones, g)
        return f - step * jnp.minimum(1.0, max_step / (jnp.max(jnp.abs(step)) + 1e-30))

    f = jax.lax.fori_loop(0, num_steps, newton, jnp.zeros_like(log_ref))
    grad_max = jnp.max(jnp.abs(grad_hess(f)[0]))
    return jax.nn.log_softmax(log_ref + f), grad_max


# ---------------------------------------------------------------------------------------------
# Log-linear policies: estimation from n noisy pairs.


def fit_loglinear(
    features: Float[ArrayLike, "n d"],
    labels: Float[ArrayLike, "n"],
    *,
    method: Method,
    flip_rate: float | Float[ArrayLike, ""],
    num_steps: int = 30,
    max_step: float = 2.0,
    radius: float | None = None,
    weights: Float[ArrayLike, "n"] | None = None,
) -> Float[Array, "d"]:
    r"""Empirical minimiser :math:`\hat w` of a noisy-label loss for a log-linear policy.

    A log-linear policy :math:`\pi_\theta(y)\propto\exp(\theta^\top\phi(y))` with reference
    :math:`\theta_{\rm ref}` has DPO margin :math:`\beta h = w^\top x` with
    :math:`w = \beta(\theta-\theta_{\rm ref})` and :math:`x = \phi(a)-\phi(b)`, so the fit is a
    (robust) logistic regression of the observed labels on the feature differences:

    .. math::

        \hat w = \arg\min_w \sum_i u_i\,L\big(s_i\,w^\top x_i\big),\qquad
        s_i = 2\,\text{label}_i - 1,

    with sample weights :math:`u_i` (uniform by default; a 0/1 mask fits a sub-sample with
    one compilation).

    All three losses have the logistic curvature :math:`\sigma(z)\sigma(-z)` (rDPO's equals
    the clean one), so the Newton iteration (step clipped to ``max_step`` in the 2-norm)
    converges fast. rDPO's per-pair loss is unbounded below; when the sample does not pin it
    down (n ≲ d, or separable data) the iterate runs off — pass ``radius`` to project onto a
    ball, as the theory assumes.

    Args:
      features: ``[n, d]`` feature differences :math:`x_i` (full column rank).
      labels: ``[n]`` 1 where :math:`a_i` was observed preferred, 0 otherwise.
      method: ``"dpo"``, ``"cdpo"`` or ``"rdpo"``.
      flip_rate: ε ∈ [0, ½) assumed by cDPO / rDPO (ignored by DPO).
      num_steps: Newton steps (static).
      max_step: trust radius of one step.
      radius: optional bound on :math:`\|w\|_2`.
      weights: optional ``[n]`` non-negative sample weights (normalised internally).

    Returns:
      ``[d]`` :math:`\hat w` (jittable, vmappable over data sets).
    """
    _check_method(method)
    _check_flip_rate(flip_rate)
    x = _checks.as_float_array("features", features, ndim=2)
    y = _checks.as_float_array("labels", labels, ndim=1).astype(x.dtype)
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels has {y.shape[0]} entries but features has {x.shape[0]} rows; "
            "expected one label per pair"
        )
    _check_probability("labels", y)
    sign = 2 * y - 1
    n, d = x.shape
    if weights is None:
        u = jnp.full((n,), 1.0 / n, x.dtype)
    else:
        u = _checks.as_float_array("weights", weights, ndim=1).astype(x.dtype)
        if u.shape != (n,):
            raise ValueError(f"weights must have shape ({n},), got {u.shape}")
        _checks.check_nonnegative("weights", u)
        u = u / jnp.sum(u)

    def newton(_, w):
        # Closed-form derivatives (checked against autodiff in the theory tests): the
        # gradient weight of the method, and the curvature σ(z)σ(−z) all three share.
        z = sign * (x @ w)
        g = -(x.T @ (u * sign * gradient_weight(z, method=method, flip_rate=flip_rate)))
        curv = u * jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)
        h = (x * curv[:, None]).T @ x
        step = jnp.linalg.solve(h + 1e-10 * jnp.eye(d, dtype=x.dtype), g)
        step = step * jnp.minimum(1.0, max_step / (jnp.linalg.norm(step) + 1e-30))
        w = w - step
        if radius is not None:
            w = w * jnp.minimum(1.0, radius / (jnp.linalg.norm(w) + 1e-30))
        return w

    return jax.lax.fori_loop(0, num_steps, newton, jnp.zeros((d,), x.dtype))


def rdpo_asymptotic_covariance(
    features: Float[ArrayLike, "m d"],
    w_true: Float[ArrayLike, "d"],
    *,
    flip_rate: float | Float[ArrayLike, ""],
    weights: Float[ArrayLike, "m"] | None = None,
) -> Float[Array, "d d"]:
    r""":math:`\lim n\,\mathrm{Cov}(\hat w)` of the rDPO estimator (sandwich formula).

    For pairs with feature difference :math:`x` drawn from ``weights`` over the rows of
    ``features``, clean :math:`P^* = \sigma(w^{*\top}x)` and flips at rate ε, the rDPO score
    is :math:`\big(\tilde P - Y\big)x/(1-2\varepsilon)` (Y the observed label), unbiased, with
    variance :math:`\tilde P(1-\tilde P)/(1-2\varepsilon)^2\,xx^\top`; the curvature is the
    clean :math:`H = \mathbb E[\sigma'(w^{*\top}x)\,xx^\top]`. So

    .. math::

        n\,\mathrm{Cov}(\hat w) \to H^{-1}VH^{-1},\quad
        V = \mathbb E\Big[\frac{\tilde P(1-\tilde P)}{(1-2\varepsilon)^2}xx^\top\Big].

    At :math:`w^* = 0` this is :math:`4\Sigma^{-1}/(1-2\varepsilon)^2`, so
    :math:`\mathbb E\|\hat w - w^*\|^2_\Sigma \approx 4d/(n(1-2\varepsilon)^2)` — the
    :math:`\sqrt{d/n}/(1-2\varepsilon)` rate of Chowdhury et al. exactly; for larger margins
    :math:`\tilde P(1-\tilde P) = (1-2\varepsilon)^2P^*(1-P^*) + \varepsilon(1-\varepsilon)`
    makes the noise cost *more* than :math:`1/(1-2\varepsilon)`.
    """
    _check_flip_rate(flip_rate)
    x = _checks.as_float_array("features", features, ndim=2)
    w = _checks.as_float_array("w_true", w_true, ndim=1).astype(x.dtype)
    if w.shape[0] != x.shape[1]:
        raise ValueError(f"w_true has {w.shape[0]} entries, features has {x.shape[1]} columns")
    m = x.shape[0]
    q = jnp.full((m,), 1.0 / m, x.dtype) if weights is None else jnp.asarray(weights, x.dtype)
    if q.shape != (m,):
        raise ValueError(f"weights must have shape ({m},), got {q.shape}")
    eps = jnp.asarray(flip_rate, x.dtype)
    p = jax.nn.sigmoid(x @ w)
    pn = eps + (1 - 2 * eps) * p
    h = jnp.einsum("m,md,me->de", q * p * (1 - p), x, x)
    v = jnp.einsum("m,md,me->de", q * pn * (1 - pn) / (1 - 2 * eps) ** 2, x, x)
    h_inv = jnp.linalg.inv(h)
    return h_inv @ v @ h_inv


__all__ = [
    "METHODS",
    "Method",
    "fit_loglinear",
    "gradient_weight",
    "noisy_pair_loss",
    "noisy_preference",
    "population_minimiser",
    "population_noisy_loss",
    "population_target",
    "rdpo_asymptotic_covariance",
    "tabular_population_minimiser",
]
