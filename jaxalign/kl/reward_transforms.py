r"""The LSC reward transform (log-sigmoid of centred rewards) and its AND-combination.

Why: any monotone transform of a reward keeps its ranking, so which one should KL-regularised
RL optimise, and how should several reward models be combined? Read "good" as "beats a
reference response whose reward is :math:`r_{\rm ref}(x)`"; under Bradley–Terry

.. math::

    p(G = 1 \mid x, y) = \sigma\big(r(x, y) - r_{\rm ref}(x)\big), \qquad
    u(x, y) = \log\sigma\big(r(x, y) - r_{\rm ref}(x)\big),

and the KL-RL optimum with reward :math:`u` and KL weight :math:`\gamma` is
:math:`\pi^* \propto \pi_0\,\sigma(r - r_{\rm ref})^{1/\gamma}` — at :math:`\gamma = 1`
exactly the Bayes posterior :math:`\pi_0(y \mid G = 1)`. For several properties the sum of
transformed rewards is the log-probability of being good on all of them,

.. math::

    u_{\rm AND} = \sum_i \log\sigma(r_i - r_{{\rm ref}, i}) = \log\prod_i p(G_i = 1 \mid x, y),

**only** when the :math:`G_i` are conditionally independent given :math:`(x, y)` (under
a comonotone coupling the probability of all-good is :math:`\min_i\sigma_i`, larger than the
product).

Properties (checked in ``theory_tests/test_reward_transforms.py``):

* :math:`u \le 0` and :math:`\partial u/\partial r = \sigma(r_{\rm ref} - r) \in (0, 1)`,
  decreasing in :math:`r`: raising a reward far above :math:`r_{\rm ref}` buys at most
  :math:`e^{-(r - r_{\rm ref})}` (so :math:`-u\,e^{r - r_{\rm ref}} \to 1`), while a
  response with :math:`r \ll r_{\rm ref}` gets slope ≈ 1 — the mechanism behind "less reward
  hacking".
* For a fixed raw sum :math:`r_1 + r_2`, :math:`u_{\rm AND}` is strictly concave in the split
  and maximal at the balanced one (log σ is strictly concave): the AND prefers responses good
  on both properties over one-sided "hackers"; the LSC of the *summed* raw reward
  :math:`\log\sigma(r_1 + r_2 - r_{\rm ref})` cannot tell them apart.
* A per-prompt shift :math:`r \to r + c(x)` leaves :math:`u` unchanged **only** when
  :math:`r_{\rm ref}` is recomputed from the shifted rewards (the quantile is
  shift-equivariant); scale is not invariant.

:math:`r_{\rm ref}(x)` is a per-prompt quantile (0.85 by default, the value a third-party
reimplementation uses; the paper's choice was not available to check) of the rewards of
**reference-policy** responses for that prompt: :func:`reference_reward` computes it
exactly from an enumerated reference policy, :func:`empirical_reference_reward` from
samples. The Gaussian shortcut mean + z_q·std (:func:`gaussian_reference_reward`) is *not*
the quantile for skewed rewards (a spike on a few responses moves it a lot); it is here only
to measure that error.

All functions handle one prompt (``[K]`` responses, ``[M, K]`` for M properties); batch
over prompts with :func:`jax.vmap`.

References:
  Wang, Nagpal, Berant, Eisenstein, D'Amour, Koyejo, Veitch, "Transforming and Combining
  Rewards for Aligning Large Language Models", ICML 2024 (arXiv 2402.00742).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxalign import _checks
from jaxalign.kl.tilt import check_log_base_and_reward, on_support, tilted_policy

#: The default per-prompt reference quantile (third-party reimplementation's 85th percentile).
DEFAULT_QUANTILE = 0.85


def _check_quantile(quantile) -> None:
    if not _checks.is_concrete(quantile):
        return
    q = np.asarray(quantile)
    if q.ndim != 0 or np.isnan(q) or not 0 < float(q) <= 1:
        raise ValueError(f"quantile must be a scalar in (0, 1], got {quantile!r}")


def _cdf_slack(dtype, k: int) -> jax.Array:
    # The cumulative sum of K probabilities can round below an exact level such as 0.5 or
    # 17/20; a few ulps per term keep "F(t) >= q" from skipping to the next reward.
    return jnp.asarray(4 * k * float(jnp.finfo(dtype).eps), dtype)


def reference_reward(
    log_ref: Float[ArrayLike, "K"],
    reward: Float[ArrayLike, "K"],
    quantile: float = DEFAULT_QUANTILE,
) -> Float[Array, ""]:
    r"""The exact ``quantile`` of the reward of reference-policy responses: :math:`r_{\rm ref}`.

    .. math:: r_{\rm ref} = \inf\{t : \Pr_{y\sim\pi_{\rm ref}}[r(y) \le t] \ge q\}

    (the lower, "inverted-CDF" quantile: always one of the rewards on the support, so it
    shifts exactly with the rewards). Jittable and vmappable.

    Args:
      log_ref: ``[K]`` log-probabilities of the **reference** (base/SFT) policy — not of the
        policy being trained, whose quantile drifts upward as it improves.
      reward: ``[K]`` finite rewards of the property.
      quantile: q in (0, 1] (default 0.85).

    Returns:
      Scalar :math:`r_{\rm ref}`.

    Example:
      >>> import jax.numpy as jnp
      >>> reference_reward(jnp.log(jnp.full(4, 0.25)), jnp.array([3.0, 0.0, 1.0, 2.0]), 0.5)
      Array(1., dtype=float32)
    """
    log_ref, reward = check_log_base_and_reward(log_ref, reward)
    _check_quantile(quantile)
    return _weighted_quantile(log_ref, reward, jnp.asarray(quantile, log_ref.dtype))


@jax.jit  # one compiled sort + scan per shape: called per prompt and per property
def _weighted_quantile(log_w: jax.Array, values: jax.Array, q: jax.Array) -> jax.Array:
    on = on_support(log_w)
    order = jnp.argsort(jnp.where(on, values, jnp.inf))
    w_sorted = jnp.where(on, jnp.exp(log_w), 0)[order]
    cdf = jnp.cumsum(w_sorted)
    reached = cdf >= q - _cdf_slack(values.dtype, values.shape[0])
    # First sorted position whose CDF reaches q (the support's maximum if rounding never does).
    last_on = jnp.sum(on) - 1
    idx = jnp.minimum(jnp.argmax(reached), last_on)
    idx = jnp.where(jnp.any(reached), idx, last_on)
    return values[order][idx]


def empirical_reference_reward(
    samples: Float[ArrayLike, "N"], quantile: float = DEFAULT_QUANTILE
) -> Float[Array, ""]:
    r"""The empirical ``quantile`` of the rewards of N reference-policy samples for one prompt.

    The order statistic :math:`r_{(\lceil qN\rceil)}` (numpy's ``method="inverted_cdf"``); the
    sample analogue of :func:`reference_reward`. Batch over prompts with :func:`jax.vmap`.

    Args:
      samples: ``[N]`` rewards of responses drawn from the reference policy for the prompt.
      quantile: q in (0, 1].
    """
    samples = _checks.as_float_array("samples", samples, ndim=1)
    _checks.check_nonempty("samples", samples)
    _checks.check_finite("samples", samples)
    _check_quantile(quantile)
    return _order_statistic(samples, jnp.asarray(quantile, samples.dtype))


@jax.jit
def _order_statistic(samples: jax.Array, q: jax.Array) -> jax.Array:
    n = samples.shape[0]
    # ceil(qN) - 1, guarded against qN landing one ulp above an integer (0.85 * 20).
    idx = jnp.ceil(q * n - _cdf_slack(samples.dtype, n) * n).astype(jnp.int32) - 1
    return jnp.sort(samples)[jnp.clip(idx, 0, n - 1)]


def gaussian_reference_reward(
    log_ref: Float[ArrayLike, "K"],
    reward: Float[ArrayLike, "K"],
    quantile: float = DEFAULT_QUANTILE,
) -> Float[Array, ""]:
    r"""The Gaussian shortcut :math:`\mu + \Phi^{-1}(q)\,s` of the reference quantile — a trap.

    Mean and standard deviation of :math:`r` under :math:`\pi_{\rm ref}`; a third-party
    reimplementation uses it (:math:`\Phi^{-1}(0.85) = 1.0364`). It equals
    :func:`reference_reward` only for (near-)Gaussian reward laws: adding h to the rewards of
    a set of reference mass ε raises the mean by εh and the variance by about
    :math:`\varepsilon(1-\varepsilon)h^2`, while the quantile does not move at all when the
    spiked responses already lie above it. Provided to measure that error, not to be used.
    """
    log_ref, reward = check_log_base_and_reward(log_ref, reward)
    _check_quantile(quantile)
    q = float(quantile)
    if q >= 1:
        raise ValueError("gaussian_reference_reward needs quantile < 1 (Φ⁻¹(1) = ∞)")
    p = jnp.where(on_support(log_ref), jnp.exp(log_ref), 0)
    r = jnp.where(on_support(log_ref), reward, 0)
    mean = p @ r
    std = jnp.sqrt(jnp.maximum(p @ (r - mean) ** 2, 0))
    z = jax.scipy.special.ndtri(jnp.asarray(q, reward.dtype))
    return mean + z * std


def lsc_transform(
    reward: Float[ArrayLike, "..."], reference_reward: Float[ArrayLike, "..."]
) -> Float[Array, "..."]:
    r"""The LSC transform :math:`u = \log\sigma(r - r_{\rm ref})`.

    Computed as :math:`-\mathrm{softplus}(r_{\rm ref} - r)` (no overflow for large gaps).

    Elementwise with broadcasting (a scalar ``reference_reward`` per prompt, or one per
    response). Always ≤ 0, with slope :math:`\sigma(r_{\rm ref} - r)`.

    Args:
      reward: rewards :math:`r(x, y)`.
      reference_reward: :math:`r_{\rm ref}(x)`, e.g. from :func:`reference_reward`.
    """
    r = _checks.as_float_array("reward", reward)
    ref = _checks.as_float_array("reference_reward", reference_reward)
    _checks.check_finite("reward", r)
    _checks.check_finite("reference_reward", ref)
    dtype = jnp.result_type(r.dtype, ref.dtype)
    return jax.nn.log_sigmoid(r.astype(dtype) - ref.astype(dtype))


def _as_properties(rewards: ArrayLike) -> jax.Array:
    r = _checks.as_float_array("rewards", rewards)
    if r.ndim == 1:
        r = r[None, :]
    if r.ndim != 2:
        raise ValueError(f"rewards must have shape [K] or [M, K] (M properties), got {r.shape}")
    _checks.check_nonempty("rewards", r)
    _checks.check_finite("rewards", r)
    return r


def and_combination(
    rewards: Float[ArrayLike, "M K"], reference_rewards: Float[ArrayLike, "M"]
) -> Float[Array, "K"]:
    r"""AND of M properties: :math:`u_{\rm AND}(y) = \sum_i \log\sigma(r_i(y) - r_{{\rm ref},i})`.

    :math:`e^{u_{\rm AND}}` is the probability that :math:`y` is good on every property when
    the events :math:`G_i` are conditionally independent given the response (otherwise it is
    only a lower bound for comonotone events, whose all-good probability is
    :math:`\min_i\sigma_i`).

    Args:
      rewards: ``[M, K]`` rewards of M properties (``[K]`` for one).
      reference_rewards: ``[M]`` per-property :math:`r_{\rm ref}` for this prompt.

    Returns:
      ``[K]`` combined reward (≤ 0).
    """
    r = _as_properties(rewards)
    ref = _checks.as_float_array("reference_rewards", reference_rewards)
    if ref.ndim == 0:
        ref = ref[None]
    if ref.shape != (r.shape[0],):
        raise ValueError(
            f"reference_rewards must have shape ({r.shape[0]},) (one per property), got {ref.shape}"
        )
    _checks.check_finite("reference_rewards", ref)
    dtype = jnp.result_type(r.dtype, ref.dtype)
    return jnp.sum(jax.nn.log_sigmoid(r.astype(dtype) - ref.astype(dtype)[:, None]), axis=0)


def lsc_reward(
    log_ref: Float[ArrayLike, "K"],
    rewards: Float[ArrayLike, "M K"],
    quantile: float = DEFAULT_QUANTILE,
) -> Float[Array, "K"]:
    r"""LSC-transformed (and AND-combined) reward of one prompt, r_ref from the reference policy.

    .. math:: u(y) = \sum_i \log\sigma\big(r_i(y) - Q_q(r_i;\pi_{\rm ref})\big)

    with :math:`Q_q` the exact reference quantile of :func:`reference_reward`.

    Args:
      log_ref: ``[K]`` reference-policy log-probabilities.
      rewards: ``[K]`` (one property) or ``[M, K]`` rewards.
      quantile: q in (0, 1].

    Returns:
      ``[K]`` transformed reward.
    """
    r = _as_properties(rewards)
    log_ref = _checks.as_float_array("log_ref", log_ref, ndim=1)
    if log_ref.shape[0] != r.shape[1]:
        raise ValueError(
            f"shape mismatch: log_ref.shape={log_ref.shape}, rewards.shape={r.shape}; expected "
            "one reward per response"
        )
    refs = jax.vmap(lambda ri: reference_reward(log_ref, ri, quantile))(r)
    return and_combination(r, refs)


def lsc_policy(
    log_base: Float[ArrayLike, "K"],
    reward: Float[ArrayLike, "K"],
    reference_reward: Float[ArrayLike, ""],
    beta: float,
) -> Float[Array, "K"]:
    r"""The KL-RL optimum for the LSC reward (a tilt of :math:`\pi_0` by :math:`\sigma^{1/\beta}`).

    .. math:: \pi \propto \pi_0\,\sigma(r - r_{\rm ref})^{1/\beta}

    The maximiser of :math:`\mathbb{E}_\pi u - \beta\,\mathrm{KL}(\pi\|\pi_0)` (the Gibbs
    tilt of :math:`u`); at :math:`\beta = 1` the posterior :func:`good_posterior`.

    Args:
      log_base: ``[K]`` base log-probabilities :math:`\pi_0`.
      reward: ``[K]`` raw rewards.
      reference_reward: scalar :math:`r_{\rm ref}`.
      beta: KL weight γ > 0.

    Returns:
      ``[K]`` log-probabilities.
    """
    log_base, reward = check_log_base_and_reward(log_base, reward)
    return tilted_policy(log_base, lsc_transform(reward, reference_reward), beta)


def good_posterior(
    log_base: Float[ArrayLike, "K"],
    reward: Float[ArrayLike, "K"],
    reference_reward: Float[ArrayLike, ""],
) -> Float[Array, "K"]:
    r"""Bayes posterior :math:`\pi_0(y \mid G = 1) = \pi_0(y)\sigma(r - r_{\rm ref}) / P(G = 1)`.

    ``[K]`` log-probabilities; equal to :func:`lsc_policy` at ``beta = 1``.
    """
    log_base, reward = check_log_base_and_reward(log_base, reward)
    u = lsc_transform(reward, reference_reward)
    logits = jnp.where(on_support(log_base), log_base + u, -jnp.inf)
    return logits - jax.nn.logsumexp(logits)


__all__ = [
    "DEFAULT_QUANTILE",
    "and_combination",
    "empirical_reference_reward",
    "gaussian_reference_reward",
    "good_posterior",
    "lsc_policy",
    "lsc_reward",
    "lsc_transform",
    "reference_reward",
]
