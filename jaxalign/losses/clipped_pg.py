r"""Clipped importance-ratio policy gradient (PPO / GRPO / DAPO / GSPO / Dr. GRPO switches).

Why: :func:`~jaxalign.losses.kl_regularized_pg_loss` takes one gradient step per sampled
batch, at the policy that sampled it. Reusing a batch for several optimisation epochs moves
π_θ away from the sampling policy π_old; the importance ratio corrects for that and the clip
keeps each epoch inside a trust region around π_old.

With per-token log-probs ``logp`` (π_θ), ``old`` (π_old, the sampler, no gradient) and
sequence advantages :math:`A_i` (computed once per batch, from π_old), each response token
gets the surrogate

.. math::

    \ell_{it} = -\min\big(\rho_{it}A_i,\;
                 \mathrm{clip}(\rho_{it}, 1-\varepsilon_{low}, 1+\varepsilon_{high})\,A_i\big)
                 + \beta\,k_{it}

with ``k`` the per-token KL estimate (k1/k2/k3 of :func:`~jaxalign.losses.kl_estimate`,
``kl_in_loss=True`` only) and the ratio

* ``ratio_level="token"`` (PPO, GRPO): :math:`\rho_{it} = \exp(\log\pi_\theta(y_{it}) -
  \mathrm{sg}[\log\pi_{old}(y_{it})])`;
* ``ratio_level="sequence"`` (GSPO): one ratio per response, the length-normalised sequence
  ratio :math:`s_i = \exp\big(\frac1{|y_i|}\sum_t (\log\pi_\theta - \mathrm{sg}[\log
  \pi_{old}])\big)`, shared by all its tokens (so a response is clipped as a whole).

The clip bounds are asymmetric (DAPO's "clip-higher": :math:`\varepsilon_{high} >
\varepsilon_{low}` leaves low-probability tokens room to grow); ``None`` leaves that side
unclipped. Where the min picks the clipped branch (ρ > 1+ε_high with A > 0, ρ < 1−ε_low
with A < 0) the token's surrogate gradient is zero.

The per-token losses are aggregated over the ``[b, t]`` batch (m the response mask,
``|y_i| = Σ_t m_it``):

* ``"token_sum"`` (default; Dr. GRPO): :math:`\frac1b\sum_i\sum_t m_{it}\ell_{it}` — a sum
  over tokens divided by a constant (the number of responses), no length normalisation.
  Dr. GRPO's constant is ``b·T_max``; dividing by ``b`` instead only rescales the loss. At
  π_θ = π_old without clipping its gradient is the REINFORCE gradient of
  :func:`~jaxalign.losses.kl_regularized_pg_loss`;
* ``"sequence_mean"`` (GRPO): :math:`\frac1b\sum_i\frac1{|y_i|}\sum_t m_{it}\ell_{it}` —
  each response's token mean, then the mean over responses (with ``ratio_level="sequence"``
  this is GSPO's objective);
* ``"token_mean"`` (DAPO): :math:`\frac1{\sum_{it}m_{it}}\sum_i\sum_t m_{it}\ell_{it}` — the
  mean over every response token of the batch.

References:
  Schulman et al. 2017 (PPO); Shao et al. 2024 (GRPO); Yu et al. 2025 (DAPO: clip-higher,
  token-level loss); Zheng et al. 2025 (GSPO: sequence-level ratio); Liu et al. 2025
  (Dr. GRPO: no length or std normalisation).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.losses.policy_gradient import Baseline, Estimator, advantages, kl_estimate

RatioLevel = Literal["token", "sequence"]
Aggregation = Literal["token_sum", "sequence_mean", "token_mean"]
RATIO_LEVELS = ("token", "sequence")
AGGREGATIONS = ("token_sum", "sequence_mean", "token_mean")


class ClippedPGOutput(NamedTuple):
    loss: Float[Array, ""]  # surrogate + β·KL term, aggregated; differentiate this
    pg_loss: Float[Array, ""]  # the clipped surrogate alone, aggregated
    kl: Float[Array, ""]  # mean per-sequence KL estimate Σ_t k_t (no gradient)
    clip_fraction: Float[Array, ""]  # share of response tokens on the clipped branch
    ratio_mean: Float[Array, ""]  # mean ratio over response tokens (1 at π_θ = π_old)


def _check_clip(name: str, eps: float | None, upper: float) -> None:
    if eps is not None and not 0 < eps < upper:
        raise ValueError(f"{name}={eps!r} is invalid; expected a number in (0, {upper}) or None")


def aggregate(
    token_loss: Float[ArrayLike, "b t"], mask: Float[ArrayLike, "b t"], how: Aggregation
) -> Float[Array, ""]:
    """Reduce per-token losses over masked response tokens (see the module docstring)."""
    token_loss, mask = jnp.asarray(token_loss), jnp.asarray(mask, token_loss.dtype)
    masked = token_loss * mask
    if how == "token_sum":
        return jnp.sum(masked) / token_loss.shape[0]
    if how == "sequence_mean":
        return jnp.mean(jnp.sum(masked, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0))
    if how == "token_mean":
        return jnp.sum(masked) / jnp.maximum(jnp.sum(mask), 1.0)
    raise ValueError(f"loss_aggregation must be one of {AGGREGATIONS}, got {how!r}")


def importance_log_ratio(
    token_logp: Float[ArrayLike, "b t"],
    old_token_logp: Float[ArrayLike, "b t"],
    mask: Float[ArrayLike, "b t"],
    *,
    ratio_level: RatioLevel,
) -> Float[Array, "b t"]:
    """``log ρ`` per token: token-level (PPO) or the broadcast length-normalised sequence
    log-ratio (GSPO); ``old_token_logp`` is held fixed (stop-gradient)."""
    token_logp = jnp.asarray(token_logp)
    mask = jnp.asarray(mask, token_logp.dtype)
    log_ratio = (token_logp - jax.lax.stop_gradient(jnp.asarray(old_token_logp))) * mask
    if ratio_level == "token":
        return log_ratio
    if ratio_level == "sequence":
        seq = jnp.sum(log_ratio, axis=-1, keepdims=True)
        seq = seq / jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1.0)
        return jnp.broadcast_to(seq, log_ratio.shape)
    raise ValueError(f"ratio_level must be one of {RATIO_LEVELS}, got {ratio_level!r}")


def batch_advantages(
    rewards: Float[ArrayLike, "b"],
    old_token_logp: Float[ArrayLike, "b t"],
    ref_token_logp: Float[ArrayLike, "b t"],
    mask: Float[ArrayLike, "b t"],
    *,
    beta: float,
    group_size: int,
    baseline: Baseline,
    kl_mode: Literal["reward", "loss"],
    normalise: bool = False,
) -> tuple[Float[Array, "b"], Float[Array, "b"]]:
    """``(advantages, shaped_rewards)`` of a sampled batch, fixed for all its epochs.

    ``kl_mode="reward"`` shapes the rewards with the k1 penalty at the sampling policy,
    :math:`r_i - \\beta\\sum_t(\\log\\pi_{old} - \\log\\pi_{ref})`, as
    :func:`~jaxalign.losses.kl_regularized_pg_loss` does at its (single) step.
    """
    old = jax.lax.stop_gradient(jnp.asarray(old_token_logp))
    mask = jnp.asarray(mask, old.dtype)
    rewards = _checks.as_float_array("rewards", rewards, ndim=1).astype(old.dtype)
    if kl_mode == "reward":
        k1 = kl_estimate(old, jax.lax.stop_gradient(ref_token_logp), estimator="k1")
        rewards = rewards - jnp.asarray(beta, old.dtype) * jnp.sum(k1 * mask, axis=-1)
    elif kl_mode != "loss":
        raise ValueError(f"kl_mode must be 'reward' or 'loss', got {kl_mode!r}")
    adv = advantages(rewards, group_size=group_size, baseline=baseline, normalise=normalise)
    return jax.lax.stop_gradient(adv), rewards


def clipped_pg_loss(
    token_logp: Float[ArrayLike, "b t"],
    old_token_logp: Float[ArrayLike, "b t"],
    ref_token_logp: Float[ArrayLike, "b t"],
    mask: Float[ArrayLike, "b t"],
    advantages_b: Float[ArrayLike, "b"],
    *,
    beta: float,
    clip_low: float | None = None,
    clip_high: float | None = None,
    ratio_level: RatioLevel = "token",
    loss_aggregation: Aggregation = "token_sum",
    estimator: Estimator = "k2",
    kl_in_loss: bool = True,
) -> ClippedPGOutput:
    r"""The clipped surrogate plus the KL term for ``b`` responses (module docstring).

    Args:
      token_logp: ``[b, t]`` per-token log-probs under π_θ (differentiated).
      old_token_logp: ``[b, t]`` the same under the sampling policy π_old (held fixed).
      ref_token_logp: ``[b, t]`` the same under π_ref (held fixed).
      mask: ``[b, t]`` 1 on response tokens.
      advantages_b: ``[b]`` sequence advantages (held fixed), e.g. from
        :func:`batch_advantages`.
      beta: KL coefficient ≥ 0 of the loss term.
      clip_low: ε_low ∈ (0, 1), ratios below ``1 − ε_low`` are clipped; ``None`` = no clip.
      clip_high: ε_high > 0, ratios above ``1 + ε_high`` are clipped; ``None`` = no clip.
      ratio_level: ``"token"`` (PPO/GRPO) or ``"sequence"`` (GSPO).
      loss_aggregation: ``"token_sum"`` (Dr. GRPO), ``"sequence_mean"`` (GRPO) or
        ``"token_mean"`` (DAPO).
      estimator: per-token KL estimator of the loss term.
      kl_in_loss: add ``β·k`` to each token's loss (``False`` when the KL is in the reward).

    Returns:
      :class:`ClippedPGOutput`; differentiate ``loss``.

    Example::

      out = clipped_pg_loss(logp, old, ref, mask, adv, beta=0.04, clip_low=0.2,
                            clip_high=0.28, loss_aggregation="token_mean")
    """
    token_logp = _checks.as_float_array("token_logp", token_logp, ndim=2)
    dtype = token_logp.dtype
    old_token_logp = jnp.asarray(old_token_logp, dtype)
    ref_token_logp = jax.lax.stop_gradient(jnp.asarray(ref_token_logp, dtype))
    mask = jnp.asarray(mask, dtype)
    _checks.check_same_shape(
        ("token_logp", "old_token_logp", "ref_token_logp", "mask"),
        token_logp, old_token_logp, ref_token_logp, mask,
    )  # fmt: skip
    adv = _checks.as_float_array("advantages_b", advantages_b, ndim=1).astype(dtype)
    if adv.shape[0] != token_logp.shape[0]:
        raise ValueError(
            f"advantages_b has {adv.shape[0]} rows but token_logp has {token_logp.shape[0]}"
        )
    _checks.check_nonnegative("beta", beta)
    _check_clip("clip_low", clip_low, 1.0)
    _check_clip("clip_high", clip_high, float("inf"))
    adv = jax.lax.stop_gradient(adv)[:, None]
    ratio = jnp.exp(importance_log_ratio(token_logp, old_token_logp, mask, ratio_level=ratio_level))
    lo = None if clip_low is None else 1.0 - clip_low
    hi = None if clip_high is None else 1.0 + clip_high
    if lo is None and hi is None:
        surrogate = ratio * adv
        clipped = jnp.zeros_like(ratio, dtype=bool)
    else:
        unclipped, clipped_branch = ratio * adv, jnp.clip(ratio, lo, hi) * adv
        # PPO's pessimistic bound: the min, so a ratio is only held at the bound when moving
        # it further would *increase* the surrogate.
        surrogate = jnp.minimum(unclipped, clipped_branch)
        clipped = clipped_branch < unclipped
    pg = aggregate(-surrogate, mask, loss_aggregation)
    k = kl_estimate(token_logp, ref_token_logp, estimator=estimator)
    loss = pg + (
        jnp.asarray(beta, dtype) * aggregate(k, mask, loss_aggregation) if kl_in_loss else 0.0
    )
    n_tokens = jnp.maximum(jnp.sum(mask), 1.0)
    seq_kl = jnp.mean(jnp.sum(k * mask, axis=-1))
    return ClippedPGOutput(
        loss,
        pg,
        jax.lax.stop_gradient(seq_kl),
        jax.lax.stop_gradient(jnp.sum(clipped.astype(dtype) * mask) / n_tokens),
        jax.lax.stop_gradient(jnp.sum(ratio * mask) / n_tokens),
    )


__all__ = [
    "AGGREGATIONS",
    "RATIO_LEVELS",
    "ClippedPGOutput",
    "aggregate",
    "batch_advantages",
    "clipped_pg_loss",
    "importance_log_ratio",
]
