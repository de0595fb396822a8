r"""Ranking accuracy of preference-tuned policies, and why DPO rarely flips a ranking.

For a labelled pair (:math:`y_w \succ y_l`) the **ranking accuracy** of a policy is
:math:`R = \mathbb 1[\pi_\theta(y_w) \ge \pi_\theta(y_l)]` (ties count as correct, Def 2.3 of
Chen et al.). Three exact facts about DPO with reference :math:`\pi_{\rm ref}` and
:math:`c = \log\pi_{\rm ref}(y_l)/\pi_{\rm ref}(y_w)` (how strongly the reference prefers
the *losing* response):

1. **Optimal ratio** (Thm 3.1). With a fraction :math:`\alpha` of raters preferring
   :math:`y_w`, the per-pair optimum of DPO (and of RLHF under Bradley–Terry) is

   .. math::

       \frac{\pi^*(y_w)}{\pi^*(y_l)} = \frac{\pi_{\rm ref}(y_w)}{\pi_{\rm ref}(y_l)}
           \Big(\frac{\alpha}{1-\alpha}\Big)^{1/\beta}.

   The **idealized ranking accuracy** :math:`R^*` (Cor 3.3) is the mean of
   :math:`\mathbb 1[\text{that ratio} > 1]` (strict, as in the paper's Eq 3); for
   :math:`\alpha>\tfrac12` it is non-increasing in β because
   :math:`(\alpha/(1-\alpha))^{1/\beta}` is.
2. **Flip condition** (Thm 4.1). The DPO loss of the pair is
   :math:`-\log\sigma(\beta[\Delta + c])` with :math:`\Delta = \log\pi_\theta(y_w)/\pi_\theta(y_l)`,
   increasing in :math:`-\Delta`, so :math:`R = 1 \iff L_{\rm DPO} \le -\log\sigma(\beta c)`.
   The "iff" needs the ≥ of Def 2.3 (at a tie, :math:`L = -\log\sigma(\beta c)` exactly).
   With :math:`c \gg 0` the loss must reach about :math:`e^{-\beta c}` before the pair is
   ranked correctly; training starts at :math:`\log 2`.
3. **γ-scaled DPO** (§5, Eq 4) down-weights the reference:
   :math:`-\log\sigma(\beta[\Delta + \gamma c])`; γ = 1 is DPO, γ = 0 drops the reference
   and :math:`L_\gamma` then directly bounds the ranking (:math:`R=1\iff L\le\log 2`).

References:
  Chen, Malladi, Zhang, Chen, Zhang, Ranganath, Cho, "Preference Learning Algorithms Do Not
  Learn Preference Rankings", NeurIPS 2024 (arXiv 2405.19534).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.losses import dpo as _dpo
from jaxalign.losses import pairwise as _pw

# App C.4 / footnote 5: unanimous pairs (α = 1) have their optimum at infinity; the paper
# replaces α = 1 by 1 − 0.001 (and α = 0 by 0.001) before computing R*.
ALPHA_CLIP = 1e-3


def _vec(name, x):
    return _checks.as_float_array(name, x, ndim=1)


def _check_alpha(alpha) -> None:
    if not _checks.is_concrete(alpha):
        return
    a = np.asarray(alpha, dtype=np.float64)
    if np.isnan(a).any() or (a < 0).any() or (a > 1).any():
        raise ValueError(f"alpha must be probabilities in [0, 1], got {_checks._short(a)}")


def ranked_correctly(
    policy_w: Float[ArrayLike, "b"], policy_l: Float[ArrayLike, "b"]
) -> Float[Array, "b"]:
    r"""Per pair :math:`\mathbb 1[\log\pi(y_w) \ge \log\pi(y_l)]` (ties count as correct)."""
    policy_w, policy_l = _vec("policy_w", policy_w), _vec("policy_l", policy_l)
    _checks.check_same_shape(("policy_w", "policy_l"), policy_w, policy_l)
    return (policy_w >= policy_l).astype(policy_w.dtype)


def ranking_accuracy(
    policy_w: Float[ArrayLike, "b"], policy_l: Float[ArrayLike, "b"]
) -> Float[Array, ""]:
    r"""Ranking accuracy (Def 2.3, Eq 1): the mean of :func:`ranked_correctly` over pairs."""
    return jnp.mean(ranked_correctly(policy_w, policy_l))


def optimal_log_ratio(
    ref_w: Float[ArrayLike, "b"],
    ref_l: Float[ArrayLike, "b"],
    alpha: Float[ArrayLike, "b"],
    *,
    beta: float,
) -> Float[Array, "b"]:
    r""":math:`\log\pi^*(y_w)/\pi^*(y_l) = \log\pi_{\rm ref}(y_w)/\pi_{\rm ref}(y_l)
    + \tfrac1\beta\operatorname{logit}\alpha` (Thm 3.1, Eq 2); ±∞ at α ∈ {0, 1}."""
    ref_w, ref_l = _vec("ref_w", ref_w), _vec("ref_l", ref_l)
    alpha = _vec("alpha", alpha).astype(ref_w.dtype)
    _checks.check_same_shape(("ref_w", "ref_l", "alpha"), ref_w, ref_l, alpha)
    _check_alpha(alpha)
    _checks.check_positive("beta", beta)
    logit = jnp.log(alpha) - jnp.log1p(-alpha)
    return (ref_w - ref_l) + logit / jnp.asarray(beta, ref_w.dtype)


def idealized_ranking_accuracy(
    ref_w: Float[ArrayLike, "b"],
    ref_l: Float[ArrayLike, "b"],
    alpha: Float[ArrayLike, "b"],
    *,
    beta: float,
    alpha_clip: float = ALPHA_CLIP,
) -> Float[Array, ""]:
    r"""Idealized ranking accuracy :math:`R^*` (Cor 3.3, Eq 3): the fraction of pairs whose
    :func:`optimal_log_ratio` is **strictly** positive, with α clipped to
    ``[alpha_clip, 1 − alpha_clip]`` (the paper's footnote 5).

    Eq 3's strict ``>`` differs from Def 2.3's ``≥``: a pair with α = ½ and a reference tie
    counts as correct for :math:`R` but not for :math:`R^*`.
    """
    if not 0 <= alpha_clip < 0.5:
        raise ValueError(f"alpha_clip must be in [0, 0.5), got {alpha_clip!r}")
    alpha = _vec("alpha", alpha)
    _check_alpha(alpha)
    alpha = jnp.clip(alpha, alpha_clip, 1 - alpha_clip)
    ratio = optimal_log_ratio(ref_w, ref_l, alpha, beta=beta)
    return jnp.mean((ratio > 0).astype(ratio.dtype))


def flip_threshold(c: Float[ArrayLike, "b"], *, beta: float) -> Float[Array, "b"]:
    r""":math:`-\log\sigma(\beta c)`: the DPO loss below which (inclusive) a pair with
    reference log-ratio :math:`c = \log\pi_{\rm ref}(y_l)/\pi_{\rm ref}(y_w)` is ranked
    correctly (Thm 4.1). Computed as ``softplus(−βc)``, the same expression as the loss, so
    an exact tie gives an exactly equal loss."""
    c = _vec("c", c)
    _checks.check_positive("beta", beta)
    return jax.nn.softplus(-jnp.asarray(beta, c.dtype) * c)


def dpo_flip_condition(
    policy_w: Float[ArrayLike, "b"],
    policy_l: Float[ArrayLike, "b"],
    ref_w: Float[ArrayLike, "b"],
    ref_l: Float[ArrayLike, "b"],
    *,
    beta: float,
) -> Float[Array, "b"]:
    r"""Per pair :math:`\mathbb 1[L_{\rm DPO} \le -\log\sigma(\beta c)]` from the unified DPO
    loss (:func:`jaxalign.losses.dpo_loss`); equal to :func:`ranked_correctly` by
    Thm 4.1. The anchored log-ratio is :math:`(\log\pi_w-\log\pi_l) - (\log\pi_{{\rm ref},w}
    - \log\pi_{{\rm ref},l})`, which at a policy tie is :math:`-(\text{ref}_w - \text{ref}_l)
    = c` bit for bit, so ties land exactly on the threshold."""
    ref_w, ref_l = _vec("ref_w", ref_w), _vec("ref_l", ref_l)
    loss = _dpo.dpo_loss(policy_w, policy_l, ref_w, ref_l, beta=beta).loss
    return (loss <= flip_threshold(ref_l - ref_w, beta=beta)).astype(loss.dtype)


def gamma_scaled_dpo_loss(
    policy_w: Float[ArrayLike, "b"],
    policy_l: Float[ArrayLike, "b"],
    ref_w: Float[ArrayLike, "b"],
    ref_l: Float[ArrayLike, "b"],
    *,
    beta: float,
    gamma: float,
) -> _pw.PairwiseOutput:
    r"""γ-scaled DPO (§5, Eq 4): :math:`-\log\sigma(\beta[\log\frac{\pi(y_w)}{\pi(y_l)}
    + \gamma\log\frac{\pi_{\rm ref}(y_l)}{\pi_{\rm ref}(y_w)}])` — the unified pairwise loss
    with a reference anchor of weight γ (γ = 1: DPO, γ = 0: no reference)."""
    _checks.check_nonnegative("gamma", gamma)
    return _pw.pairwise_preference_loss(
        policy_w,
        policy_l,
        [_pw.Anchor(ref_w, ref_l, gamma)],
        distance="logistic",
        scale=beta,
    )


class FlipCategories(NamedTuple):
    """Fractions of pairs by (reference ranking → policy ranking), each a scalar."""

    correct_to_correct: Float[Array, ""]
    correct_to_incorrect: Float[Array, ""]
    incorrect_to_correct: Float[Array, ""]
    incorrect_to_incorrect: Float[Array, ""]


def flip_categories(
    policy_w: Float[ArrayLike, "b"],
    policy_l: Float[ArrayLike, "b"],
    ref_w: Float[ArrayLike, "b"],
    ref_l: Float[ArrayLike, "b"],
) -> FlipCategories:
    """The four categories of §4.1 / Fig 2: how the reference's ranking of each pair (≥, ties
    correct) compares with the policy's. The four fractions sum to one."""
    now = ranked_correctly(policy_w, policy_l)
    before = ranked_correctly(ref_w, ref_l)
    _checks.check_same_shape(("policy_w", "ref_w"), now, before)
    return FlipCategories(
        jnp.mean(before * now),
        jnp.mean(before * (1 - now)),
        jnp.mean((1 - before) * now),
        jnp.mean((1 - before) * (1 - now)),
    )


__all__ = [
    "ALPHA_CLIP",
    "FlipCategories",
    "dpo_flip_condition",
    "flip_categories",
    "flip_threshold",
    "gamma_scaled_dpo_loss",
    "idealized_ranking_accuracy",
    "optimal_log_ratio",
    "ranked_correctly",
    "ranking_accuracy",
]
