r"""What ``jaxalign eval`` measures, sampled and (on the testbed) exact.

For a policy :math:`\pi` and a reference :math:`\pi_{\rm ref}`, with pairs
:math:`y \sim \pi(\cdot|x)`, :math:`y' \sim \pi_{\rm ref}(\cdot|x)` drawn independently per prompt:

* **win rate** — :math:`\mathbb E[P(y \succ y')]`, the judge's preference probability
  (identical responses count ½);
* **decisive win rate** —
  :math:`\mathbb E[\mathbb 1\{P > \tfrac12\} + \tfrac12\,\mathbb 1\{P = \tfrac12\}]`,
  the judge's verdict with **ties counted ½** (with a reward model: :math:`r(y) > r(y')`);
* **tie rate** — :math:`\Pr[P = \tfrac12]` (identical responses or equal rewards);
* **mean reward** of policy and reference responses (judges with a reward);
* **KL(π‖π_ref)** from the *policy's* samples, per token with
  :math:`\log\rho_t = \log\pi_{\rm ref}(y_t|\cdot) - \log\pi(y_t|\cdot)` and summed over the
  response (Schulman's estimators, both unbiased for the sequence KL by the chain rule):

  - ``k1`` :math:`= \sum_t -\log\rho_t = \log\pi(y) - \log\pi_{\rm ref}(y)`: unbiased, can be
    negative, high variance;
  - ``k3`` :math:`= \sum_t (\rho_t - 1) - \log\rho_t`: unbiased, non-negative per token,
    lower variance near :math:`\pi_{\rm ref}`;

* **response length** — response tokens up to and including EOS.

Each sampled value is a mean over the pairs with its standard error
:math:`s/\sqrt n` (``s`` the sample standard deviation over the ``n`` pairs; for a fixed
set of several prompts this is conservative). On the enumerable testbed
:func:`exact_testbed_metrics` gives the same quantities exactly by enumeration:
:math:`\pi^\top P \pi_{\rm ref}`, :math:`\pi^\top D(P)\,\pi_{\rm ref}`,
:math:`\mathrm{KL}(\pi\|\pi_{\rm ref})`, :math:`\pi^\top r`.

References:
  Schulman, J. (2020). Approximating KL divergence (note; k1, k2, k3).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxalign.kl import kl_divergence
from jaxalign.losses.policy_gradient import kl_estimate

#: |P − ½| at or below this is a tie (a judge's σ(0) is exactly ½; float round-off is not).
TIE_TOLERANCE = 1e-6

#: The KL estimators reported, by name.
KL_ESTIMATORS = ("k1", "k3")


def verdict(prob: Float[Array, "..."]) -> Float[Array, "..."]:
    """The judge's decision from ``P(a ≻ b)``: 1 a wins, 0 b wins, ½ a tie."""
    prob = jnp.asarray(prob)
    win = (prob > 0.5 + TIE_TOLERANCE).astype(prob.dtype)
    tie = (jnp.abs(prob - 0.5) <= TIE_TOLERANCE).astype(prob.dtype)
    return win + 0.5 * tie


def is_tie(prob: Float[Array, "..."]) -> Float[Array, "..."]:
    """1 where the judge cannot tell the two responses apart (``P(a ≻ b) = ½``)."""
    prob = jnp.asarray(prob)
    return (jnp.abs(prob - 0.5) <= TIE_TOLERANCE).astype(prob.dtype)


def sequence_kl_estimates(
    logp_bt: Float[Array, "b t"], ref_logp_bt: Float[Array, "b t"]
) -> dict[str, Float[Array, " b"]]:
    """Per-sample KL(π‖π_ref) estimates (``k1``, ``k3``) of responses sampled from π.

    Args:
      logp_bt: ``[B, T]`` per-token log π of the sampled tokens (0 outside the response).
      ref_logp_bt: ``[B, T]`` per-token log π_ref of the same tokens (0 outside).

    Returns:
      ``{"k1": [B], "k3": [B]}``, each summed over the response tokens (a masked token
      has log ρ = 0 and contributes 0 to both).
    """
    return {
        name: jnp.sum(kl_estimate(logp_bt, ref_logp_bt, estimator=name), axis=-1)
        for name in KL_ESTIMATORS
    }


class Estimate(NamedTuple):
    """A sampled mean with its standard error over ``n`` values."""

    mean: float
    stderr: float
    n: int


def estimate(values) -> Estimate:
    """Mean and standard error ``s / √n`` (``s`` with ddof 1; 0 for a single value)."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        raise ValueError("estimate needs at least one value, got none")
    se = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0
    return Estimate(float(v.mean()), se, int(v.size))


def exact_testbed_metrics(
    log_policy: Float[Array, " n"],
    log_ref: Float[Array, " n"],
    preference: Float[Array, "n n"],
    reward: Float[Array, " n"] | None,
    response_length: int,
) -> dict[str, float]:
    """The exact values of every sampled metric on the testbed, by enumeration.

    Args:
      log_policy, log_ref: ``[n]`` exact log-probabilities of all testbed responses.
      preference: ``[n, n]`` the judge's ``P(y_i ≻ y_j)``.
      reward: ``[n]`` the testbed reward, or None.
      response_length: L (every testbed response has L tokens).

    Returns:
      ``win_rate`` (π^T P π_ref), ``decisive_win_rate`` (π^T D(P) π_ref, ties ½),
      ``tie_rate``, ``kl`` (KL(π‖π_ref)), ``reward`` / ``reference_reward`` (E r under each;
      when ``reward`` is given), ``response_length`` / ``reference_response_length``.
    """
    pi, ref = jnp.exp(log_policy), jnp.exp(log_ref)
    p = jnp.asarray(preference, pi.dtype)
    out = {
        "win_rate": pi @ p @ ref,
        "decisive_win_rate": pi @ verdict(p) @ ref,
        "tie_rate": pi @ is_tie(p) @ ref,
        "kl": kl_divergence(log_policy, log_ref),
        "response_length": jnp.asarray(float(response_length)),
        "reference_response_length": jnp.asarray(float(response_length)),
    }
    if reward is not None:
        out["reward"] = pi @ reward
        out["reference_reward"] = ref @ reward
    return {k: float(v) for k, v in out.items()}


__all__ = [
    "KL_ESTIMATORS",
    "TIE_TOLERANCE",
    "Estimate",
    "estimate",
    "exact_testbed_metrics",
    "is_tie",
    "sequence_kl_estimates",
    "verdict",
]
