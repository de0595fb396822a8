r"""One pairwise preference loss for the whole DPO / IPO / Nash / MNPO family.

Every loss of the family regresses (or classifies) an **anchored log-ratio** of a pair of
responses :math:`(a, b)` to the same prompt:

.. math::

    h_\theta(a, b) = [\log\pi_\theta(a) - \log\pi_\theta(b)]
        - \sum_j w_j\,[\log\pi_j(a) - \log\pi_j(b)],

where the *anchors* :math:`\pi_j` (reference model, current iterate :math:`\pi_t`, the
optimistic :math:`\pi'_t`, past iterates of MNPO, …) are frozen and :math:`w_j` are their
weights. The loss is then either

* ``"squared"``: :math:`(h - c)^2` with a target :math:`c` (a scalar, or one per pair), or
* ``"logistic"``: :math:`-\log\sigma(\beta (h - c))`, optionally made unbiased under
  random label flips with rate :math:`\varepsilon < 1/2`:
  :math:`[(1-\varepsilon)\ell(h) - \varepsilon\ell(-h)]/(1-2\varepsilon)`.

Named instances (all in the ``step_size`` convention of :mod:`jaxalign.games`: the
update multiplies payoffs, :math:`\pi_{t+1}\propto\ldots e^{s\,P\pi_t}`, and the squared
loss's target is :math:`s/2`, because the population minimiser of :math:`(h-c)^2` under
preference-labelled pairs is :math:`\text{anchor} + 2c\,P\mu`):

================  ======================================  ========================  ==========
instance          anchors (weights)                       target                    distance
================  ======================================  ========================  ==========
DPO               π_ref (1)                               0                         logistic β
robust DPO        π_ref (1)                               0                         logistic β, ε
IPO / online IPO  π_ref (1)                               1/(2τ)                    squared
INPO              π_t (1 − sτ), π_ref (sτ)                s/2                       squared
ONPO              π'_t (1)                                s/2                       squared
MNPO              π_ref (ρ), π_{t−j} ((1−ρ)λ_j)           s/2                       squared
EGPO              π_ref (1)                               (P(a≻c)−P(b≻c))/τ         squared
EGPO step         π_t (1 − sτ), π_ref (sτ)                s(P(a≻c)−P(b≻c))          squared
Nash-MD           π_t (1 − sτ), π_ref (sτ); pairs ~ π^μ   s/2                       squared
================  ======================================  ========================  ==========

SPPO regresses each response separately (a *pointwise* instance, :func:`sppo_loss`).

Offline instances on length-normalised log-probs :math:`\bar a(y) = \log\pi_\theta(y)/|y|`
(:func:`length_normalised_logp`; :math:`|y|` the response's token count):

================  ======================================  ========================  ==========
instance          policy terms (anchors)                  target                    distance
================  ======================================  ========================  ==========
SimPO             ā(y_w), ā(y_l) (none)                   γ/β                       logistic β
ORPO odds term    log odds ā(y_w), ā(y_l) (none)          0                         logistic 1
RPO               DPO's, plus α·NLL(y_w) = −α ā(y_w)      0                         logistic β
================  ======================================  ========================  ==========

SimPO and ORPO are reference-free (:mod:`jaxalign.losses.simpo`, :mod:`jaxalign.losses.orpo`);
ORPO adds the chosen response's NLL :math:`-\bar a(y_w)`. KTO (:mod:`jaxalign.losses.kto`)
scores unpaired responses against a batch KL reference point, another pointwise instance.

References:
  Rafailov et al. 2023 (DPO); Azar et al. 2023 (IPO); Chowdhury et al. 2024 (robust DPO);
  Zhang et al. 2024 (INPO); "Improving LLM General Preference Alignment via Optimistic
  Online Mirror Descent" (ONPO); Zhou, Fazel, Du 2025 (EGPO); Wu et al. 2024 (SPPO);
  "Multiplayer Nash Preference Optimization" (MNPO, Table 1 gives the reductions);
  Meng et al. 2024 (SimPO); Hong et al. 2024 (ORPO); Pang et al. 2024 (RPO: DPO + NLL).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.losses.dpo import dpo_loss  # the one DPO (its z is β·h of this family)
from jaxalign.models.sampling import token_level_mixture  # noqa: F401 (re-exported: the sampler's)

Vec = Float[Array, "b"]
Distance = Literal["squared", "logistic"]


class Anchor(NamedTuple):
    """A frozen policy's sequence log-probs on both responses of each pair, and its weight."""

    logp_a: Float[ArrayLike, "b"]  # log π_j(a) per pair
    logp_b: Float[ArrayLike, "b"]  # log π_j(b) per pair
    weight: float | Float[ArrayLike, ""] = 1.0  # w_j


class PairwiseOutput(NamedTuple):
    """Per-pair results, each ``[b]``."""

    loss: Vec  # the loss of each pair
    logit: Vec  # the anchored log-ratio h_θ(a, b)
    target: Vec  # the target c (broadcast)


def anchored_log_ratio(
    policy_a: Float[ArrayLike, "b"],
    policy_b: Float[ArrayLike, "b"],
    anchors: Sequence[Anchor],
) -> Vec:
    r""":math:`h = (\log\pi(a) - \log\pi(b)) - \sum_j w_j(\log\pi_j(a) - \log\pi_j(b))`."""
    policy_a = jnp.asarray(policy_a)
    h = policy_a - jnp.asarray(policy_b)
    for j, anc in enumerate(anchors):
        a, b = jnp.asarray(anc.logp_a), jnp.asarray(anc.logp_b)
        _checks.check_same_shape(
            ("policy_a", f"anchors[{j}].logp_a", f"anchors[{j}].logp_b"), policy_a, a, b
        )
        w = jnp.asarray(anc.weight, h.dtype)
        h = h - w * jax.lax.stop_gradient(a - b)
    return h


def _logistic(x: jax.Array) -> jax.Array:
    return jax.nn.softplus(-x)  # −log σ(x), finite for all finite x


def pairwise_preference_loss(
    policy_a: Float[ArrayLike, "b"],
    policy_b: Float[ArrayLike, "b"],
    anchors: Sequence[Anchor] = (),
    *,
    target: float | Float[ArrayLike, "b"] = 0.0,
    distance: Distance = "squared",
    scale: float = 1.0,
    flip_rate: float = 0.0,
) -> PairwiseOutput:
    r"""The unified pairwise preference loss (see the module docstring).

    Args:
      policy_a: ``[b]`` :math:`\log\pi_\theta(a)` — for labelled data ``a`` is the
        preferred (chosen) response.
      policy_b: ``[b]`` :math:`\log\pi_\theta(b)` (rejected).
      anchors: frozen policies with weights; gradients never flow into them.
      target: :math:`c`, scalar or ``[b]``.
      distance: ``"squared"`` :math:`(h-c)^2` or ``"logistic"``
        :math:`-\log\sigma(\text{scale}\,(h-c))`.
      scale: β of the logistic distance (ignored for ``"squared"``).
      flip_rate: ε ∈ [0, ½) of the unbiased (robust) logistic loss.

    Returns:
      :class:`PairwiseOutput` with ``[b]`` loss, logit ``h`` and target.
    """
    if distance not in ("squared", "logistic"):
        raise ValueError(f"distance must be 'squared' or 'logistic', got {distance!r}")
    policy_a = _checks.as_float_array("policy_a", policy_a, ndim=1)
    policy_b = _checks.as_float_array("policy_b", policy_b, ndim=1)
    _checks.check_same_shape(("policy_a", "policy_b"), policy_a, policy_b)
    if _checks.is_concrete(flip_rate) and not 0 <= float(flip_rate) < 0.5:
        raise ValueError(f"flip_rate must be in [0, 0.5), got {flip_rate!r}")
    if distance == "logistic":
        _checks.check_positive("scale", scale)
    h = anchored_log_ratio(policy_a, policy_b, anchors)
    c = jnp.broadcast_to(jnp.asarray(target, h.dtype), h.shape)
    if distance == "squared":
        loss = (h - c) ** 2
    else:
        z = jnp.asarray(scale, h.dtype) * (h - c)
        eps = jnp.asarray(flip_rate, h.dtype)
        loss = ((1 - eps) * _logistic(z) - eps * _logistic(-z)) / (1 - 2 * eps)
    return PairwiseOutput(loss, h, c)


# ---------------------------------------------------------------------------------------------
# Named instances.


def length_normalised_logp(logp: Float[ArrayLike, "b"], num_tokens: Float[ArrayLike, "b"]) -> Vec:
    r""":math:`\bar a(y) = \log\pi(y)/|y|`, the mean token log-prob of each response.

    ``num_tokens`` is :math:`|y|`, the response's scored tokens; it is clamped at 1, so a
    fully masked (filler) response gives 0 instead of NaN.
    """
    logp = jnp.asarray(logp)
    n = jnp.asarray(num_tokens).astype(logp.dtype)
    _checks.check_same_shape(("logp", "num_tokens"), logp, n)
    return logp / jnp.maximum(n, jnp.ones((), logp.dtype))


class RPOOutput(NamedTuple):
    """Per-pair RPO results, each ``[b]``."""

    loss: Vec  # DPO loss + α·NLL(y_w)
    preference_loss: Vec  # the DPO term
    nll: Vec  # −log π(y_w)/|y_w|, the chosen response's mean token NLL
    logit: Vec  # DPO's anchored log-ratio h


def rpo_loss(
    policy_w, policy_l, ref_w, ref_l, tokens_w, *, beta: float, nll_weight: float
) -> RPOOutput:
    r"""RPO: DPO plus the chosen response's length-normalised negative log-likelihood.

    .. math::

        \ell_{RPO} = -\log\sigma(\beta h)
            + \alpha\,\Big(-\frac{\log\pi_\theta(y_w|x)}{|y_w|}\Big),
        \qquad h = \log\frac{\pi_\theta(y_w)}{\pi_{ref}(y_w)}
            - \log\frac{\pi_\theta(y_l)}{\pi_{ref}(y_l)}.

    DPO alone can lower :math:`\log\pi(y_w)` as long as :math:`\log\pi(y_l)` falls faster;
    the NLL term (weight :math:`\alpha` = ``nll_weight``) keeps the chosen response likely.

    Args:
      policy_w, policy_l, ref_w, ref_l: ``[b]`` sequence log-probs (summed over tokens).
      tokens_w: ``[b]`` :math:`|y_w|`, the chosen response's token count.
      beta: β > 0 of the DPO term.
      nll_weight: α ≥ 0 (α = 0 is DPO).

    References:
      Pang et al., "Iterative Reasoning Preference Optimization", 2024 (DPO + NLL, eq. 1);
      Liu et al., "Provably Mitigating Overoptimization in RLHF" (RPO), 2024.
    """
    _checks.check_nonnegative("nll_weight", nll_weight)
    dpo = dpo_loss(policy_w, policy_l, ref_w, ref_l, beta=beta)
    nll = -length_normalised_logp(policy_w, tokens_w)
    loss = dpo.loss + jnp.asarray(nll_weight, nll.dtype) * nll
    return RPOOutput(
        loss, dpo.loss, nll, anchored_log_ratio(policy_w, policy_l, [Anchor(ref_w, ref_l)])
    )


def robust_dpo_loss(
    policy_w, policy_l, ref_w, ref_l, *, beta: float, flip_rate: float
) -> PairwiseOutput:
    r"""Provably robust DPO with label-flip rate ε.

    .. math::

        \ell_\varepsilon(w,l) = [(1-\varepsilon)\ell(w,l) - \varepsilon\ell(l,w)]/(1-2\varepsilon)

    Its expectation under labels flipped independently with probability ε equals the
    clean DPO loss (Chowdhury et al. 2024).
    """
    return pairwise_preference_loss(
        policy_w,
        policy_l,
        [Anchor(ref_w, ref_l)],
        distance="logistic",
        scale=beta,
        flip_rate=flip_rate,
    )


def ipo_loss(policy_w, policy_l, ref_w, ref_l, *, tau: float) -> PairwiseOutput:
    r"""IPO: :math:`(h_{ref} - 1/(2\tau))^2`. *Online IPO* is the same loss on pairs sampled
    from the (stop-gradient) current policy and labelled by the preference oracle."""
    _checks.check_positive("tau", tau)
    return pairwise_preference_loss(
        policy_w, policy_l, [Anchor(ref_w, ref_l)], target=1.0 / (2.0 * tau)
    )


online_ipo_loss = ipo_loss


def inpo_loss(
    policy_w, policy_l, ref_w, ref_l, current_w, current_l, *, step_size: float, tau: float
) -> PairwiseOutput:
    r"""INPO (Zhang et al. 2024): anchors :math:`\pi_t` with weight :math:`1-s\tau` and
    :math:`\pi_{ref}` with weight :math:`s\tau`; target :math:`s/2`.

    ``step_size`` :math:`s` is INPO's :math:`1/\eta` (the paper's target :math:`1/(2\eta)`);
    pairs are sampled from :math:`\pi_t`. Population minimiser: the INPO/OMD update
    :math:`\pi_{t+1}\propto\pi_t^{1-s\tau}\pi_{ref}^{s\tau}e^{sP\pi_t}`.
    """
    _checks.check_positive("step_size", step_size)
    _checks.check_nonnegative("tau", tau)
    st = step_size * tau
    anchors = [Anchor(current_w, current_l, 1.0 - st), Anchor(ref_w, ref_l, st)]
    return pairwise_preference_loss(policy_w, policy_l, anchors, target=step_size / 2.0)


def onpo_loss(policy_w, policy_l, anchor_w, anchor_l, *, step_size: float) -> PairwiseOutput:
    r"""ONPO (optimistic OMD): :math:`(g_t - s/2)^2` with
    :math:`g_t = \log\frac{\pi(y_w)}{\pi'_t(y_w)} - \log\frac{\pi(y_l)}{\pi'_t(y_l)}`.

    Minimised twice per iteration on pairs from :math:`\pi_t`: once for :math:`\pi'_{t+1}`
    (anchor :math:`\pi'_t`) and once for :math:`\pi_{t+1}` (anchor :math:`\pi'_{t+1}`, pairs
    from the same :math:`\pi_t`, the optimistic prediction). No :math:`\pi_{ref}` term.
    """
    _checks.check_positive("step_size", step_size)
    return pairwise_preference_loss(
        policy_w, policy_l, [Anchor(anchor_w, anchor_l)], target=step_size / 2.0
    )


def mnpo_loss(
    policy_w,
    policy_l,
    ref_w,
    ref_l,
    history: Sequence[tuple[ArrayLike, ArrayLike]],
    *,
    history_weights: Sequence[float] | ArrayLike,
    ref_ratio: float,
    step_size: float,
) -> PairwiseOutput:
    r"""MNPO with time-dependent opponents: anchors :math:`\pi_{ref}` (weight ρ) and past
    iterates :math:`\pi_{t-j}` (weights :math:`(1-\rho)\lambda_j`), target :math:`s/2`.

    ``history`` lists ``(log π_{t−j}(y_w), log π_{t−j}(y_l))`` per opponent. With one
    opponent π_t and ρ = 0 this is SPPO-/OMD-like self-play; with opponents {π_t, π_ref}
    and weights ((η−τ)/η, τ/η) it is INPO (MNPO Table 1). Pairs must be drawn from the
    mixture of the opponents (the population-loss caveat of ALGORITHMS.md §3).
    """
    _checks.check_positive("step_size", step_size)
    weights = jnp.asarray(history_weights)
    if weights.shape != (len(history),):
        raise ValueError(
            f"history_weights must have one weight per opponent ({len(history)}), "
            f"got shape {weights.shape}"
        )
    if _checks.is_concrete(ref_ratio) and not 0 <= float(ref_ratio) <= 1:
        raise ValueError(f"ref_ratio must be in [0, 1], got {ref_ratio!r}")
    anchors = [Anchor(ref_w, ref_l, ref_ratio)]
    anchors += [
        Anchor(hw, hl, (1.0 - ref_ratio) * weights[j]) for j, (hw, hl) in enumerate(history)
    ]
    return pairwise_preference_loss(policy_w, policy_l, anchors, target=step_size / 2.0)


def egpo_loss(policy_a, policy_b, ref_a, ref_b, win_a, win_b, *, tau: float) -> PairwiseOutput:
    r"""EGPO (Zhou, Fazel, Du 2025): :math:`(h_{ref}(a,b) - (P(a\succ c) - P(b\succ c))/\tau)^2`.

    ``(a, b)`` are i.i.d. draws (not preference-ordered) and ``win_a = P(a ≻ c)``,
    ``win_b = P(b ≻ c)`` for a third draw ``c ~ π`` (the half-step policy for the second
    extragradient step). Its population minimiser is the EGPO update with
    ``step_size = 4·lr/(τN)`` for tabular SGD (see :func:`jaxalign.games.egpo_sgd_learning_rate`).
    """
    _checks.check_positive("tau", tau)
    target = (jnp.asarray(win_a) - jnp.asarray(win_b)) / tau
    return pairwise_preference_loss(policy_a, policy_b, [Anchor(ref_a, ref_b)], target=target)


def egpo_step_loss(
    policy_a,
    policy_b,
    ref_a,
    ref_b,
    current_a,
    current_b,
    win_a,
    win_b,
    *,
    step_size: float,
    tau: float,
) -> PairwiseOutput:
    r"""One EGPO extragradient step as a regression: anchors :math:`\pi_t` (weight
    :math:`1-s\tau`) and :math:`\pi_{ref}` (weight :math:`s\tau`), target
    :math:`s\,(P(a\succ c) - P(b\succ c))` per pair.

    ``(a, b)`` are i.i.d. draws from any full-support policy (the online loop uses
    :math:`\pi_t`), ``win_a``/``win_b`` are (possibly 0/1-sampled) labels of ``a`` and ``b``
    against a third draw :math:`c \sim \nu`. Since :math:`E[\text{target}\mid a,b] =
    s((P\nu)_a - (P\nu)_b)`, the population minimiser is the mirror step
    :math:`\pi \propto \pi_t^{1-s\tau}\pi_{ref}^{s\tau}e^{sP\nu}`: with
    :math:`\nu = \pi_t` the half step :math:`\pi_{t+1/2}`, with :math:`\nu = \pi_{t+1/2}` the
    full step :math:`\pi_{t+1}` of :func:`jaxalign.games.egpo`. With :math:`s = 1/\tau` the
    :math:`\pi_t` anchor drops out and this is the paper's :func:`egpo_loss`.
    """
    _checks.check_positive("step_size", step_size)
    _checks.check_nonnegative("tau", tau)
    st = step_size * tau
    if _checks.is_concrete(st) and float(st) > 1:
        raise ValueError(f"step_size * tau must be <= 1, got {step_size} * {tau}")
    target = step_size * (jnp.asarray(win_a) - jnp.asarray(win_b))
    anchors = [Anchor(current_a, current_b, 1.0 - st), Anchor(ref_a, ref_b, st)]
    return pairwise_preference_loss(policy_a, policy_b, anchors, target=target)


def nash_md_loss(
    policy_w, policy_l, ref_w, ref_l, current_w, current_l, *, step_size: float, tau: float
) -> PairwiseOutput:
    r"""Nash-MD as a regression: anchor the geometric mixture
    :math:`\log\pi^\mu_t = (1-s\tau)\log\pi_t + s\tau\log\pi_{ref}` (up to its normaliser,
    which cancels in the pairwise difference), target :math:`s/2`.

    Same anchors as :func:`inpo_loss`, but the pairs must be drawn from the **mixture**
    :math:`\pi^\mu_t` (the population-loss lemma), so the population minimiser is
    :math:`\pi^\mu_t e^{sP\pi^\mu_t}`, the Nash-MD update. Nash-MD-PG's practical sampler
    draws from the token-level mixture instead (:func:`token_level_mixture`).
    """
    return inpo_loss(
        policy_w, policy_l, ref_w, ref_l, current_w, current_l, step_size=step_size, tau=tau
    )


def sppo_loss(
    policy_w, policy_l, current_w, current_l, win_w, win_l, *, step_size: float
) -> PairwiseOutput:
    r"""SPPO (Wu et al. 2024), pointwise:
    :math:`\tfrac12[(\log\frac{\pi(y_w)}{\pi_t(y_w)} - s(\hat P_w - \tfrac12))^2 +
    (\log\frac{\pi(y_l)}{\pi_t(y_l)} - s(\hat P_l - \tfrac12))^2]`.

    ``step_size`` :math:`s` is SPPO's :math:`1/\beta` (implied update
    :math:`\pi_{t+1}\propto\pi_t e^{sP(y\succ\pi_t)}`); ``win_w``, ``win_l`` are the
    estimated win rates :math:`\hat P(y\succ\pi_t)`. ``logit`` holds the chosen log-ratio.
    """
    _checks.check_positive("step_size", step_size)
    policy_w = _checks.as_float_array("policy_w", policy_w, ndim=1)
    rw = policy_w - jax.lax.stop_gradient(jnp.asarray(current_w))
    rl = jnp.asarray(policy_l) - jax.lax.stop_gradient(jnp.asarray(current_l))
    cw = step_size * (jnp.asarray(win_w, rw.dtype) - 0.5)
    cl = step_size * (jnp.asarray(win_l, rw.dtype) - 0.5)
    loss = 0.5 * ((rw - cw) ** 2 + (rl - cl) ** 2)
    return PairwiseOutput(loss, rw - rl, jnp.broadcast_to(cw - cl, rw.shape))


# ---------------------------------------------------------------------------------------------
# Nash-MD mixtures.


def sequence_level_mixture(
    policy_logp: Float[ArrayLike, "n"], ref_logp: Float[ArrayLike, "n"], *, mix: float
) -> Float[Array, "n"]:
    r"""Nash-MD's geometric mixture over an enumerable response set:
    :math:`\log\pi^\mu = \text{normalise}((1-\text{mix})\log\pi + \text{mix}\log\pi_{ref})`."""
    if _checks.is_concrete(mix) and not 0 <= float(mix) <= 1:
        raise ValueError(f"mix must be in [0, 1], got {mix!r}")
    logits = (1 - mix) * jnp.asarray(policy_logp) + mix * jnp.asarray(ref_logp)
    return jax.nn.log_softmax(logits, axis=-1)
