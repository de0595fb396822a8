r"""KL-regularised policy gradient for KL-constrained RL (RLOO / GRPO-style).

The objective is the KL-regularised reward of :mod:`jaxalign.kl`,

.. math::

    J(\theta) = \mathbb{E}_{y\sim\pi_\theta}[r(y)] - \beta\,\mathrm{KL}(\pi_\theta\|\pi_{ref}),

whose maximiser is the tilt :math:`\pi_{ref}e^{r/\beta}`. Its gradient is estimated from
groups of ``n`` responses sampled per prompt with the REINFORCE surrogate

.. math::

    L(\theta) = -\frac1B\sum_i \mathrm{sg}[A_i]\,\log\pi_\theta(y_i) + \beta\,\widehat{\mathrm{KL}},

with an advantage :math:`A_i = r_i - b_i` whose baseline :math:`b_i` does not depend on
:math:`y_i` (so the estimate stays unbiased):

* ``"none"``: :math:`b_i = 0`;
* ``"leave_one_out"`` (RLOO): :math:`b_i = \frac1{n-1}\sum_{j\ne i} r_j` in the group;
* ``"group_mean"`` (GRPO): :math:`(r_i - \bar r)/(\mathrm{std}(r)+\epsilon)` (biased by the
  scaling, as in GRPO; ``normalise=False`` keeps just the mean).

The KL term is estimated per token from :math:`\log\rho_t = \log\pi_{ref}(y_t) -
\log\pi_\theta(y_t)` on samples from :math:`\pi_\theta` (Schulman's estimators):

* ``k1`` :math:`= -\log\rho` — unbiased value, high variance, can be negative;
* ``k2`` :math:`= \tfrac12(\log\rho)^2` — biased value, low variance;
* ``k3`` :math:`= (\rho - 1) - \log\rho` — unbiased value, non-negative.

As a differentiable loss term (``kl_mode="loss"``, gradient through :math:`\log\pi_\theta`
on fixed on-policy samples) the three differ in *what they minimise*: the expected
gradient of k2 is :math:`\nabla\mathrm{KL}(\pi_\theta\|\pi_{ref})` (the objective above);
k1's is zero; k3's is :math:`\nabla\mathrm{KL}(\pi_{ref}\|\pi_\theta)` — the *reverse* KL
(GRPO's choice). The tests check all three.

``kl_mode="reward"`` subtracts :math:`\beta\sum_t k1_t` from the reward (a fixed
penalty, no gradient through it, as in PPO-RLHF); ``kl_mode="loss"`` adds
:math:`\beta\,\mathbb{E}[\sum_t k_t]` as a differentiable loss term (GRPO uses k3).

References:
  Williams 1992 (REINFORCE); Ahmadian et al. 2024 (RLOO); Shao et al. 2024 (GRPO);
  Schulman, "Approximating KL divergence" (2020 note).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.models.best_of_n import best_of_n_select  # noqa: F401 (re-exported: the sampler's)

Estimator = Literal["k1", "k2", "k3"]
Baseline = Literal["none", "leave_one_out", "group_mean"]


def kl_estimate(
    logp: Float[ArrayLike, "... t"], ref_logp: Float[ArrayLike, "... t"], *, estimator: Estimator
) -> Float[Array, "... t"]:
    r"""Per-token KL(π‖π_ref) estimate on tokens sampled from π (see the module docstring)."""
    log_rho = jnp.asarray(ref_logp) - jnp.asarray(logp)
    if estimator == "k1":
        return -log_rho
    if estimator == "k2":
        return 0.5 * log_rho**2
    if estimator == "k3":
        return jnp.expm1(log_rho) - log_rho
    raise ValueError(f"estimator must be 'k1', 'k2' or 'k3', got {estimator!r}")


def advantages(
    rewards: Float[ArrayLike, "b"], *, group_size: int, baseline: Baseline, normalise: bool = True
) -> Float[Array, "b"]:
    """Advantages for ``b = num_groups · group_size`` rewards, grouped consecutively."""
    rewards = _checks.as_float_array("rewards", rewards, ndim=1)
    if group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(
            f"group_size must divide the batch: got group_size={group_size}, "
            f"batch={rewards.shape[0]}"
        )
    r = rewards.reshape(-1, group_size)
    if baseline == "none":
        adv = r
    elif baseline == "leave_one_out":
        if group_size < 2:
            raise ValueError("baseline='leave_one_out' needs group_size >= 2")
        adv = r - (r.sum(axis=1, keepdims=True) - r) / (group_size - 1)
    elif baseline == "group_mean":
        adv = r - r.mean(axis=1, keepdims=True)
        if normalise:
            adv = adv / (r.std(axis=1, keepdims=True) + 1e-6)
    else:
        raise ValueError(
            f"baseline must be 'none', 'leave_one_out' or 'group_mean', got {baseline!r}"
        )
    return adv.reshape(-1)


class PolicyGradientOutput(NamedTuple):
    loss: Float[Array, ""]  # the surrogate to minimise
    pg_loss: Float[Array, ""]  # −mean sg[A] log π(y)
    kl: Float[Array, ""]  # mean per-sequence KL estimate (sum over tokens)
    advantages: Float[Array, "b"]  # sg[A]
    shaped_rewards: Float[Array, "b"]  # rewards after the KL penalty (kl_mode="reward")


def kl_regularized_pg_loss(
    token_logp: Float[ArrayLike, "b t"],
    ref_token_logp: Float[ArrayLike, "b t"],
    mask: Float[ArrayLike, "b t"],
    rewards: Float[ArrayLike, "b"],
    *,
    beta: float,
    group_size: int,
    baseline: Baseline = "leave_one_out",
    estimator: Estimator = "k2",
    kl_mode: Literal["reward", "loss"] = "loss",
    normalise: bool = False,
) -> PolicyGradientOutput:
    """The KL-regularised REINFORCE surrogate for ``b`` sampled responses.

    Args:
      token_logp: ``[b, t]`` per-token log-probs of the sampled responses under π_θ.
      ref_token_logp: ``[b, t]`` the same under π_ref (frozen).
      mask: ``[b, t]`` 1 on response tokens, 0 on padding/prompt.
      rewards: ``[b]`` sequence rewards; groups of ``group_size`` consecutive rows share a
        prompt.
      beta: KL coefficient ≥ 0.
      group_size: responses per prompt.
      baseline: ``"none"``, ``"leave_one_out"`` or ``"group_mean"``.
      estimator: KL estimator for ``kl_mode="loss"`` (``kl_mode="reward"`` uses k1).
      kl_mode: ``"reward"`` (penalty in the reward) or ``"loss"`` (differentiable term).
      normalise: divide group-mean advantages by the group std (GRPO).

    Returns:
      :class:`PolicyGradientOutput`; differentiate ``loss``.
    """
    token_logp = _checks.as_float_array("token_logp", token_logp, ndim=2)
    ref_token_logp = jnp.asarray(ref_token_logp, token_logp.dtype)
    mask = jnp.asarray(mask, token_logp.dtype)
    _checks.check_same_shape(
        ("token_logp", "ref_token_logp", "mask"), token_logp, ref_token_logp, mask
    )
    rewards = _checks.as_float_array("rewards", rewards, ndim=1).astype(token_logp.dtype)
    if rewards.shape[0] != token_logp.shape[0]:
        raise ValueError(
            f"rewards has {rewards.shape[0]} rows but token_logp has {token_logp.shape[0]}"
        )
    _checks.check_nonnegative("beta", beta)
    if kl_mode not in ("reward", "loss"):
        raise ValueError(f"kl_mode must be 'reward' or 'loss', got {kl_mode!r}")
    ref_token_logp = jax.lax.stop_gradient(ref_token_logp)
    seq_logp = jnp.sum(token_logp * mask, axis=-1)
    est = "k1" if kl_mode == "reward" else estimator
    seq_kl = jnp.sum(kl_estimate(token_logp, ref_token_logp, estimator=est) * mask, axis=-1)
    beta_ = jnp.asarray(beta, token_logp.dtype)
    if kl_mode == "reward":
        shaped = rewards - beta_ * jax.lax.stop_gradient(seq_kl)
    else:
        shaped = rewards
    adv = jax.lax.stop_gradient(
        advantages(shaped, group_size=group_size, baseline=baseline, normalise=normalise)
    )
    pg = -jnp.mean(adv * seq_logp)
    kl_term = jnp.mean(seq_kl)
    loss = pg + (beta_ * kl_term if kl_mode == "loss" else 0.0)
    return PolicyGradientOutput(loss, pg, jax.lax.stop_gradient(kl_term), adv, shaped)
