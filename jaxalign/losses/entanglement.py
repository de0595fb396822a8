r"""Gradient entanglement of margin-based preference losses: a first-order diagnostic.

A margin-based loss sees a pair only through :math:`\log\pi_w = \log\pi_\theta(y_w|x)` and
:math:`\log\pi_l = \log\pi_\theta(y_l|x)`, :math:`\ell = \ell(\log\pi_w, \log\pi_l)`. Write

.. math::

    d_w = -\frac{\partial\ell}{\partial\log\pi_w},\qquad
    d_l = +\frac{\partial\ell}{\partial\log\pi_l},\qquad
    g_w = \nabla_\theta\log\pi_w,\qquad g_l = \nabla_\theta\log\pi_l

(:math:`d_w, d_l \ge 0` for DPO and SimPO, and for IPO while the margin is below its target
:math:`1/(2\tau)`). One plain gradient step of size :math:`\eta` on one pair,
:math:`\theta' = \theta - \eta\nabla\ell = \theta + \eta(d_w g_w - d_l g_l)`, changes the
two log-probs by

.. math::

    \Delta\log\pi_w = \eta\,(d_w\|g_w\|^2 - d_l\langle g_w, g_l\rangle) + O(\eta^2),\qquad
    \Delta\log\pi_l = \eta\,(d_w\langle g_w, g_l\rangle - d_l\|g_l\|^2) + O(\eta^2).

So the chosen log-prob *falls* iff :math:`\langle g_w,g_l\rangle > (d_w/d_l)\|g_w\|^2` and
the rejected one *rises* iff :math:`\langle g_w,g_l\rangle > (d_l/d_w)\|g_l\|^2`: a large
inner product relative to the norms ("gradient entanglement") makes both move together.
The loss fixes only :math:`d_w/d_l`: 1 for DPO and IPO, :math:`|y_l|/|y_w|` for SimPO.

Findings (derived here, settled by ``theory_tests/test_entanglement.py``):

* The first-order changes above match a real SGD step of DPO, IPO and SimPO on a small
  autoregressive model (error ≤ 1.3e-3 of the terms' size at η = 1e-4, the test allows
  1e-2), with an O(η²) residual (log-log slope 2); swapping SimPO's :math:`d_w/d_l` when
  :math:`|y_w| \ne |y_l|` leaves an O(η) residual, i.e. mispredicts. (With signed partials
  :math:`\partial\ell/\partial\log\pi_w = -d_w` the same formula reads
  :math:`\Delta\log\pi_w \approx -\eta(\partial_w\ell\,\|g_w\|^2 + \partial_l\ell\,
  \langle g_w,g_l\rangle)`.)
* With :math:`d_w, d_l > 0`, "chosen falls" and "rejected rises" never happen together to
  first order: both would need :math:`\langle g_w,g_l\rangle^2 > \|g_w\|^2\|g_l\|^2`
  (Cauchy–Schwarz). The failures are synchronised: both rise or both fall. The corollary
  needs :math:`d_w, d_l > 0`: IPO past its target (:math:`d_w = d_l < 0`) lowers the margin
  on purpose and can do both.
* For :math:`d_w = d_l` (DPO, IPO) the margin always grows,
  :math:`\Delta(\log\pi_w - \log\pi_l) = \eta d\,\|g_w - g_l\|^2 \ge 0`, and "some failure"
  is exactly :math:`\langle g_w,g_l\rangle / \min(\|g_w\|^2, \|g_l\|^2) > 1`
  (:func:`entanglement_metrics`' ``grad_condition``; a ``min(‖g_w‖², ‖g_w‖²)`` denominator
  misses the rejected-rises failures).
* A sequence-level softmax (a tabular policy) never entangles:
  :math:`\langle g_w,g_l\rangle < \min(\|g_w\|^2,\|g_l\|^2)` always.
* Context-free unigram policy, :math:`\nabla_z\log\pi(y) = c(y) - |y|\,p` with
  :math:`p = \mathrm{softmax}(z)` and :math:`c(y)` the token counts. For
  :math:`y_w = (a, s)`, :math:`y_l = (b, s)` (shared suffix :math:`s`, :math:`a \ne b`,
  :math:`L = 1 + |s|`) DPO gives, in units of :math:`\eta d`,
  :math:`\Delta\log\pi_w = 1 + c_s[a] - c_s[b] - L(p_a - p_b)` and
  :math:`\Delta\log\pi_l = \Delta\log\pi_w - 2` (:func:`unigram_shared_suffix`); both fall
  once :math:`L(p_a - p_b)` exceeds :math:`1 + c_s[a] - c_s[b]`, and
  :math:`\cos(g_w, g_l) \to 1` as the suffix grows (−0.706, 0.255, 0.941, 0.9974, 0.99990
  for L = 1, 2, 5, 20, 100, z = (1, 0, 0), s = "c…c").
* The normalised pairwise update :math:`\theta' = \theta + \eta\,\omega\,(g_w/\|g_w\| -
  g_l/\|g_l\|)`, ω ≥ 0 one weight per pair, gives
  :math:`\Delta\log\pi_w = \eta\omega\|g_w\|(1 - \cos) \ge 0` and
  :math:`\Delta\log\pi_l = -\eta\omega\|g_l\|(1 - \cos) \le 0` to first order: chosen rises
  and rejected falls, whatever the entanglement. The guarantee needs the *same* weight on
  both sides (SimPO's :math:`d_w \ne d_l` as side weights can break it) and unit-norm
  directions (normalising by :math:`\|g\|^2` breaks it); it holds for a step on one pair —
  in a batch step the other pairs' directions add cross terms. On the testbed transformer
  (``jaxalign reproduce gradient-entanglement``: 16 pairs sharing a 7-token suffix, one
  prompt) every one-pair normalised step raised its chosen and lowered its rejected
  log-prob, yet the *other* pairs' steps lowered each chosen log-prob by more (mean −2.7 vs
  +2.2 from its own steps), so over training the normalised update let as many chosen
  log-probs fall as DPO did (9/16 vs 7/16 pairs, full batch): the per-pair fix does not
  remove entanglement *between* pairs.

Computation and cost. :func:`pair_gradient_gram` needs the per-pair gradients
:math:`g_w, g_l` themselves (a 2×2 Gram matrix per pair cannot come from Jacobian–vector
products without them): ``method="vmap"`` is ``jax.vmap`` of two ``jax.grad`` s — 2B
backward passes batched into one, holding 2B parameter-sized gradients at once;
``method="map"`` runs ``jax.lax.map`` over pairs (``batch_size`` at a time) — the same
FLOPs, sequential, holding 2·``batch_size`` gradients. For the change an *actual* batch
update ``u`` (any optimiser: Adam, clipping, a full batch with cross-pair terms) makes,
:func:`directional_logp_change` uses one forward-mode ``jax.jvp`` over the batch,
:math:`\Delta\log\pi_i \approx \langle g_i, u\rangle`, and never materialises a per-example
gradient (cost ≈ 2–3 forward passes).

References:
  Yuan, Zeng, Wu, Wang, Wang, Leqi, "A Common Pitfall of Margin-based Language Model
  Alignment: Gradient Entanglement", ICLR 2025 (arXiv 2410.13828): the conditions, the
  synchronised failures and the pairwise-normalised update (the paper's exact formulas
  were not available; the statements here are derived and tested).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxalign import _checks
from jaxalign.losses.dpo import dpo_loss
from jaxalign.losses.pairwise import ipo_loss
from jaxalign.losses.simpo import simpo_loss

Vec = Float[Array, "b"]
PyTree = Any
#: ``logp_fn(params, example) -> log π_θ(y|x)``, a scalar, for ONE example (a pytree).
LogProbFn = Callable[[PyTree, PyTree], Float[Array, ""]]
Update = Literal["sgd", "normalised"]


class LossDerivatives(NamedTuple):
    """A margin loss's per-pair sensitivities, each ``[b]``."""

    d_w: Vec  # −∂ℓ/∂log π_w (≥ 0 for DPO, SimPO)
    d_l: Vec  # +∂ℓ/∂log π_l (≥ 0 for DPO, SimPO)


class GradientGram(NamedTuple):
    """The per-pair Gram matrix of the two log-prob gradients, each ``[b]``."""

    sq_norm_w: Vec  # ‖g_w‖²
    inner: Vec  # ⟨g_w, g_l⟩
    sq_norm_l: Vec  # ‖g_l‖²


class FirstOrderChange(NamedTuple):
    """Predicted first-order changes of the two sequence log-probs, each ``[b]``."""

    chosen: Vec  # Δlog π_w
    rejected: Vec  # Δlog π_l


class Entanglement(NamedTuple):
    """The gradient-entanglement diagnostic of a batch of pairs, each field ``[b]``."""

    inner: Vec  # ⟨g_w, g_l⟩
    norm_w: Vec  # ‖g_w‖
    norm_l: Vec  # ‖g_l‖
    cosine: Vec  # ⟨g_w, g_l⟩ / (‖g_w‖‖g_l‖) (0 when a gradient vanishes)
    d_w: Vec  # −∂ℓ/∂log π_w
    d_l: Vec  # +∂ℓ/∂log π_l
    change_w: Vec  # predicted Δlog π_w of a step on this pair alone
    change_l: Vec  # predicted Δlog π_l
    sign_w: Vec  # sign(change_w) ∈ {−1, 0, 1}
    sign_l: Vec  # sign(change_l)


# ---------------------------------------------------------------------------------------------
# The loss side: d_w and d_l.


def loss_derivatives(
    pair_loss: Callable[[Vec, Vec], Vec],
    policy_w: Float[ArrayLike, "b"],
    policy_l: Float[ArrayLike, "b"],
) -> LossDerivatives:
    r""":math:`d_w = -\partial\ell_i/\partial\log\pi_{w,i}`, :math:`d_l = \partial\ell_i/\partial
    \log\pi_{l,i}` of any pair-separable loss, by autodiff.

    Args:
      pair_loss: ``pair_loss(policy_w [b], policy_l [b]) -> [b]`` per-pair losses; pair i's
        loss may depend only on pair i's log-probs (anything else — references, token
        counts, β — closed over).
      policy_w, policy_l: ``[b]`` sequence log-probs of chosen and rejected responses.

    Returns:
      :class:`LossDerivatives` with ``[b]`` fields.
    """
    policy_w = _checks.as_float_array("policy_w", policy_w, ndim=1)
    policy_l = _checks.as_float_array("policy_l", policy_l, ndim=1)
    _checks.check_same_shape(("policy_w", "policy_l"), policy_w, policy_l)
    # Pair-separable: the gradient of the summed loss is each pair's own partial derivative.
    dw, dl = jax.grad(lambda w, l_: jnp.sum(pair_loss(w, l_)), argnums=(0, 1))(policy_w, policy_l)
    return LossDerivatives(-dw, dl)


def dpo_derivatives(policy_w, policy_l, ref_w, ref_l, *, beta: float) -> LossDerivatives:
    r"""DPO: :math:`d_w = d_l = \beta\,\sigma(-\beta h)`, :math:`h` the anchored log-ratio
    (:func:`jaxalign.losses.dpo_loss`); :math:`d_w/d_l = 1`."""
    _checks.check_positive("beta", beta)
    return loss_derivatives(
        lambda w, l_: dpo_loss(w, l_, ref_w, ref_l, beta=beta).loss, policy_w, policy_l
    )


def ipo_derivatives(policy_w, policy_l, ref_w, ref_l, *, tau: float) -> LossDerivatives:
    r"""IPO: :math:`d_w = d_l = 2(1/(2\tau) - h)` (:func:`jaxalign.losses.ipo_loss`); positive
    below the target margin, negative above it (the loss then *lowers* the margin)."""
    return loss_derivatives(
        lambda w, l_: ipo_loss(w, l_, ref_w, ref_l, tau=tau).loss, policy_w, policy_l
    )


def simpo_derivatives(
    policy_w, policy_l, tokens_w, tokens_l, *, beta: float, gamma: float = 0.0
) -> LossDerivatives:
    r"""SimPO: :math:`d_w = \beta\sigma(-z)/|y_w|`, :math:`d_l = \beta\sigma(-z)/|y_l|`
    (:func:`jaxalign.losses.simpo_loss`, :math:`z` its logit); :math:`d_w/d_l = |y_l|/|y_w|`."""
    return loss_derivatives(
        lambda w, l_: simpo_loss(w, l_, tokens_w, tokens_l, beta=beta, gamma=gamma).loss,
        policy_w,
        policy_l,
    )


# ---------------------------------------------------------------------------------------------
# The model side: per-pair gradients and their inner products.


def tree_vdot(a: PyTree, b: PyTree) -> Float[Array, ""]:
    """:math:`\\langle a, b\\rangle` summed over the leaves of two same-structure pytrees."""
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.vdot(x, y), a, b))
    return sum(leaves[1:], leaves[0])


def _batch_size(name: str, tree: PyTree) -> int:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{name} has no arrays; expected a pytree of [b, ...] arrays")
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
    if None in sizes or len(sizes) != 1:
        shapes = [jnp.shape(x) for x in leaves]
        raise ValueError(f"{name} leaves must share a leading batch axis, got shapes {shapes}")
    (b,) = sizes
    if b == 0:
        raise ValueError(f"{name} is an empty batch; expected at least one pair")
    return b


def pair_gradient_gram(
    logp_fn: LogProbFn,
    params: PyTree,
    chosen: PyTree,
    rejected: PyTree,
    *,
    method: Literal["vmap", "map"] = "vmap",
    batch_size: int | None = None,
) -> GradientGram:
    r"""Per pair, :math:`\|g_w\|^2`, :math:`\langle g_w, g_l\rangle`, :math:`\|g_l\|^2` with
    :math:`g = \nabla_\theta \log\pi_\theta(y|x)` over every leaf of ``params``.

    Args:
      logp_fn: ``logp_fn(params, example) -> scalar`` sequence log-prob of ONE example.
      params: the model's parameters (any pytree).
      chosen, rejected: pytrees of ``[b, ...]`` arrays, pair ``i`` = row ``i`` of each.
      method: ``"vmap"`` (all 2b gradients at once) or ``"map"`` (``lax.map`` over pairs,
        ``batch_size`` pairs at a time; memory 2·batch_size gradients). See the module
        docstring for the cost.
      batch_size: pairs per ``lax.map`` step for ``method="map"`` (default 1).

    Returns:
      :class:`GradientGram` with ``[b]`` fields.
    """
    if method not in ("vmap", "map"):
        raise ValueError(f"method must be 'vmap' or 'map', got {method!r}")
    if batch_size is not None and (method != "map" or int(batch_size) < 1):
        raise ValueError(f"batch_size must be a positive int with method='map', got {batch_size!r}")
    b_w, b_l = _batch_size("chosen", chosen), _batch_size("rejected", rejected)
    if b_w != b_l:
        raise ValueError(f"chosen has {b_w} pairs but rejected has {b_l}; expected equal")
    grad = jax.grad(logp_fn)

    def one(pair):
        g_w, g_l = grad(params, pair[0]), grad(params, pair[1])
        return GradientGram(tree_vdot(g_w, g_w), tree_vdot(g_w, g_l), tree_vdot(g_l, g_l))

    if method == "vmap":
        return jax.vmap(one)((chosen, rejected))
    return jax.lax.map(one, (chosen, rejected), batch_size=batch_size)


def first_order_change(
    gram: GradientGram,
    derivatives: LossDerivatives,
    *,
    step_size: float = 1.0,
    update: Update = "sgd",
) -> FirstOrderChange:
    r"""First-order :math:`\Delta\log\pi_w`, :math:`\Delta\log\pi_l` of one step on one pair.

    .. math::

        \text{sgd:}\quad \Delta_w = \eta(d_w\|g_w\|^2 - d_l\langle g_w,g_l\rangle),\quad
        \Delta_l = \eta(d_w\langle g_w,g_l\rangle - d_l\|g_l\|^2);

        \text{normalised:}\quad \Delta_w = \eta\omega(\|g_w\| - \langle g_w,g_l\rangle/\|g_l\|),
        \quad \Delta_l = \eta\omega(\langle g_w,g_l\rangle/\|g_w\| - \|g_l\|),

    the normalised update :math:`\theta' = \theta + \eta\omega(g_w/\|g_w\| - g_l/\|g_l\|)`
    with the pair weight :math:`\omega` = ``derivatives.d_w`` (``d_l`` is ignored there: the
    guarantee :math:`\Delta_w \ge 0 \ge \Delta_l` needs one weight per pair).

    Args:
      gram: :func:`pair_gradient_gram`'s output.
      derivatives: :class:`LossDerivatives` (e.g. :func:`dpo_derivatives`).
      step_size: η > 0 of the step (1 gives the rate per unit step).
      update: ``"sgd"`` (a plain gradient step on the loss) or ``"normalised"``.
    """
    if update not in ("sgd", "normalised"):
        raise ValueError(f"update must be 'sgd' or 'normalised', got {update!r}")
    _checks.check_positive("step_size", step_size)
    sq_w, inner, sq_l = (jnp.asarray(x) for x in gram)
    d_w, d_l = jnp.asarray(derivatives.d_w), jnp.asarray(derivatives.d_l)
    _checks.check_same_shape(("gram.inner", "derivatives.d_w", "derivatives.d_l"), inner, d_w, d_l)
    eta = jnp.asarray(step_size, inner.dtype)
    if update == "sgd":
        return FirstOrderChange(eta * (d_w * sq_w - d_l * inner), eta * (d_w * inner - d_l * sq_l))
    norm_w, norm_l = jnp.sqrt(sq_w), jnp.sqrt(sq_l)
    # A vanishing gradient contributes no direction (g/‖g‖ := 0).
    over_w, over_l = _safe_div(inner, norm_w), _safe_div(inner, norm_l)
    return FirstOrderChange(eta * d_w * (norm_w - over_l), eta * d_w * (over_w - norm_l))


def _safe_div(x: jax.Array, y: jax.Array) -> jax.Array:
    ok = y > 0
    return jnp.where(ok, x / jnp.where(ok, y, jnp.ones_like(y)), jnp.zeros_like(x))


def gradient_entanglement(
    logp_fn: LogProbFn,
    params: PyTree,
    chosen: PyTree,
    rejected: PyTree,
    derivatives: LossDerivatives,
    *,
    step_size: float = 1.0,
    update: Update = "sgd",
    method: Literal["vmap", "map"] = "vmap",
    batch_size: int | None = None,
) -> Entanglement:
    r"""The gradient-entanglement diagnostic of a batch of pairs (see the module docstring).

    Per pair: :math:`\langle g_w, g_l\rangle`, :math:`\|g_w\|`, :math:`\|g_l\|`, their cosine,
    the loss's :math:`d_w`, :math:`d_l`, and the first-order changes (and their signs) of
    :math:`\log\pi_w`, :math:`\log\pi_l` under a plain gradient step (``update="sgd"``) or
    the normalised pairwise update (``"normalised"``, pair weight ``derivatives.d_w``) of
    size ``step_size`` on that pair alone. Jittable (close over ``logp_fn``).

    Example::

        lw, ll = jax.vmap(logp_fn, (None, 0))(params, chosen), ...(params, rejected)
        ent = gradient_entanglement(logp_fn, params, chosen, rejected,
                                    dpo_derivatives(lw, ll, ref_w, ref_l, beta=0.1))
        metrics = entanglement_metrics(ent)

    Args:
      logp_fn, params, chosen, rejected, method, batch_size: as :func:`pair_gradient_gram`.
      derivatives: the loss's ``[b]`` :class:`LossDerivatives` at these pairs.
      step_size, update: as :func:`first_order_change`.

    Returns:
      :class:`Entanglement` with ``[b]`` fields.
    """
    gram = pair_gradient_gram(
        logp_fn, params, chosen, rejected, method=method, batch_size=batch_size
    )
    change = first_order_change(gram, derivatives, step_size=step_size, update=update)
    norm_w, norm_l = jnp.sqrt(gram.sq_norm_w), jnp.sqrt(gram.sq_norm_l)
    cosine = _safe_div(gram.inner, norm_w * norm_l)
    d_w, d_l = (jnp.asarray(x) for x in derivatives)
    return Entanglement(
        gram.inner, norm_w, norm_l, cosine, d_w, d_l, change.chosen, change.rejected,
        jnp.sign(change.chosen), jnp.sign(change.rejected),
    )  # fmt: skip


def entanglement_condition(gram: GradientGram) -> Vec:
    r""":math:`\langle g_w,g_l\rangle / \min(\|g_w\|^2, \|g_l\|^2)` per pair.

    For :math:`d_w = d_l > 0` (DPO, IPO below target) it exceeds 1 exactly when a step
    lowers the chosen log-prob or raises the rejected one (to first order). The form with
    :math:`\min(\|g_w\|^2, \|g_w\|^2)` (a typo for this one) only sees the first failure.
    0 when a gradient vanishes.
    """
    smallest = jnp.minimum(jnp.asarray(gram.sq_norm_w), jnp.asarray(gram.sq_norm_l))
    return _safe_div(jnp.asarray(gram.inner), smallest)


def entanglement_metrics(
    ent: Entanglement, mask: Float[ArrayLike, "b"] | None = None
) -> dict[str, jax.Array]:
    r"""Scalar training metrics of :func:`gradient_entanglement` (means over real pairs).

    ``cosine``, ``inner``, ``norm_w``, ``norm_l``, ``d_ratio`` (:math:`d_w/d_l`);
    ``grad_condition`` :math:`\langle g_w,g_l\rangle/\min(\|g_w\|^2, \|g_l\|^2)` (> 1 ⇔ some
    first-order failure when :math:`d_w = d_l`); and fractions of pairs predicted to have
    ``chosen_down``, ``rejected_up``, ``both_up``, ``both_down`` (the synchronised moves) and
    ``chosen_down_and_rejected_up`` (0 whenever :math:`d_w, d_l > 0`).

    Args:
      ent: the diagnostic.
      mask: ``[b]`` 1 for real pairs, 0 for padding (default: all real).
    """
    cos = jnp.asarray(ent.cosine)
    m = jnp.ones_like(cos) if mask is None else _checks.as_float_array("mask", mask, ndim=1)
    _checks.check_same_shape(("ent.cosine", "mask"), cos, m)
    m = m.astype(cos.dtype)
    count = jnp.maximum(jnp.sum(m), jnp.ones((), m.dtype))
    mean = lambda x: jnp.sum(m * jnp.asarray(x, cos.dtype)) / count
    down_w, up_w = ent.change_w < 0, ent.change_w > 0
    down_l, up_l = ent.change_l < 0, ent.change_l > 0
    condition = entanglement_condition(GradientGram(ent.norm_w**2, ent.inner, ent.norm_l**2))
    return {
        "cosine": mean(cos),
        "inner": mean(ent.inner),
        "norm_w": mean(ent.norm_w),
        "norm_l": mean(ent.norm_l),
        "d_ratio": mean(_safe_div(ent.d_w, ent.d_l)),
        "grad_condition": mean(condition),
        "chosen_down": mean(down_w),
        "rejected_up": mean(up_l),
        "both_up": mean(up_w & up_l),
        "both_down": mean(down_w & down_l),
        "chosen_down_and_rejected_up": mean(down_w & up_l),
    }


def directional_logp_change(
    logp_fn: LogProbFn, params: PyTree, update: PyTree, examples: PyTree
) -> Float[Array, "b"]:
    r"""First-order change :math:`\langle\nabla_\theta\log\pi(y_i|x_i), u\rangle` of every
    example's log-prob under a parameter update :math:`u` (same structure as ``params``).

    One forward-mode ``jax.jvp`` of the batched log-probs along ``u``: no per-example
    gradient is materialised. Use it with the update an optimiser actually applied (full
    batch, Adam, clipping — cross-pair terms included), e.g. ``u = new_params − params``.
    """
    _batch_size("examples", examples)
    if jax.tree.structure(update) != jax.tree.structure(params):
        raise ValueError("update must have the same pytree structure as params")
    batched = lambda p: jax.vmap(logp_fn, in_axes=(None, 0))(p, examples)
    return jax.jvp(batched, (params,), (update,))[1]


def normalised_pairwise_loss(
    policy_w: Float[ArrayLike, "b"],
    policy_l: Float[ArrayLike, "b"],
    norm_w: Float[ArrayLike, "b"],
    norm_l: Float[ArrayLike, "b"],
    weight: Float[ArrayLike, "b"] | None = None,
) -> Vec:
    r"""Surrogate loss whose gradient step is the normalised pairwise update.

    .. math::

        \tilde\ell_i = -\omega_i\Big(\frac{\log\pi_{w,i}}{\|g_{w,i}\|}
            - \frac{\log\pi_{l,i}}{\|g_{l,i}\|}\Big),

    with the norms and the weight :math:`\omega_i` held fixed (stop-gradient), so
    :math:`-\nabla\tilde\ell_i = \omega_i(g_w/\|g_w\| - g_l/\|g_l\|)`: plain gradient descent
    on it (any optax optimiser: sgd reproduces the update exactly) makes chosen rise and
    rejected fall to first order for a step on one pair. ``weight`` defaults to 1; passing
    DPO's :math:`d = \beta\sigma(-\beta h)` keeps DPO's down-weighting of separated pairs.
    A zero norm gives that side no gradient.

    Args:
      policy_w, policy_l: ``[b]`` sequence log-probs (differentiable).
      norm_w, norm_l: ``[b]`` :math:`\|g_w\|`, :math:`\|g_l\|` (e.g. from
        :func:`gradient_entanglement`), ≥ 0.
      weight: ``[b]`` ω ≥ 0 per pair.
    """
    policy_w = _checks.as_float_array("policy_w", policy_w, ndim=1)
    policy_l = _checks.as_float_array("policy_l", policy_l, ndim=1)
    norm_w = _checks.as_float_array("norm_w", norm_w, ndim=1)
    norm_l = _checks.as_float_array("norm_l", norm_l, ndim=1)
    w = jnp.ones_like(policy_w) if weight is None else _checks.as_float_array("weight", weight)
    _checks.check_same_shape(
        ("policy_w", "policy_l", "norm_w", "norm_l", "weight"), policy_w, policy_l, norm_w,
        norm_l, w,
    )  # fmt: skip
    _checks.check_nonnegative("norm_w", norm_w)
    _checks.check_nonnegative("norm_l", norm_l)
    _checks.check_nonnegative("weight", w)
    sg = jax.lax.stop_gradient
    inv_w = _safe_div(jnp.ones_like(norm_w), sg(norm_w))
    inv_l = _safe_div(jnp.ones_like(norm_l), sg(norm_l))
    return -sg(w) * (policy_w * inv_w - policy_l * inv_l)


# ---------------------------------------------------------------------------------------------
# The exactly solvable case: a context-free unigram policy.


class UnigramEntanglement(NamedTuple):
    """Closed-form DPO entanglement of one shared-suffix pair under a unigram policy."""

    cosine: Float[Array, ""]  # cos(g_w, g_l)
    change_w: Float[Array, ""]  # Δlog π_w per unit η·d
    change_l: Float[Array, ""]  # Δlog π_l per unit η·d (= change_w − 2)


def unigram_shared_suffix(
    logits: Float[ArrayLike, "v"],
    first_w: int | Int[ArrayLike, ""],
    first_l: int | Int[ArrayLike, ""],
    suffix_counts: Float[ArrayLike, "v"],
) -> UnigramEntanglement:
    r"""Exact entanglement of :math:`y_w = (a, s)`, :math:`y_l = (b, s)` under the unigram
    policy :math:`\log\pi(y) = \sum_t z_{y_t} - |y|\log\sum_v e^{z_v}`.

    With :math:`p = \mathrm{softmax}(z)`, :math:`L = 1 + |s|` and :math:`c_s` the suffix's
    token counts, :math:`g_w = e_a + c_s - Lp`, :math:`g_l = e_b + c_s - Lp` and, for a DPO
    step (:math:`d_w = d_l = d`) of size η, in units of :math:`\eta d`:

    .. math::

        \Delta\log\pi_w = \langle g_w, e_a - e_b\rangle = 1 + c_s[a] - c_s[b] - L(p_a - p_b),
        \qquad \Delta\log\pi_l = \Delta\log\pi_w - 2.

    Args:
      logits: ``[V]`` unigram logits z.
      first_w, first_l: the differing first tokens a ≠ b.
      suffix_counts: ``[V]`` token counts of the shared suffix s (≥ 0).
    """
    z = _checks.as_float_array("logits", logits, ndim=1)
    c_s = _checks.as_float_array("suffix_counts", suffix_counts, ndim=1).astype(z.dtype)
    _checks.check_same_shape(("logits", "suffix_counts"), z, c_s)
    _checks.check_nonnegative("suffix_counts", c_s)
    a, b = jnp.asarray(first_w), jnp.asarray(first_l)
    if _checks.is_concrete(a) and _checks.is_concrete(b):
        v = z.shape[0]
        if not (0 <= int(a) < v and 0 <= int(b) < v) or int(a) == int(b):
            raise ValueError(
                f"first_w and first_l must be distinct tokens in [0, {v}), got {int(a)}, {int(b)}"
            )
    p = jax.nn.softmax(z)
    length = 1 + jnp.sum(c_s)
    g_w = jax.nn.one_hot(a, z.shape[0], dtype=z.dtype) + c_s - length * p
    g_l = jax.nn.one_hot(b, z.shape[0], dtype=z.dtype) + c_s - length * p
    cosine = jnp.vdot(g_w, g_l) / (jnp.linalg.norm(g_w) * jnp.linalg.norm(g_l))
    change_w = 1 + c_s[a] - c_s[b] - length * (p[a] - p[b])
    return UnigramEntanglement(cosine, change_w, change_w - 2)


def sequence_logp_fn(graphdef) -> LogProbFn:
    """``logp_fn(params, (tokens [T], response_mask [T]))`` for a Flax NNX causal LM split
    as ``graphdef, params = nnx.split(model)``: the summed response-token log-prob
    (:func:`jaxalign.models.sequence_logprobs`) of one unpadded sequence."""
    from flax import nnx

    from jaxalign.models import sequence_logprobs

    def logp(params, example):
        tokens, mask = example
        model = nnx.merge(graphdef, params)
        return sequence_logprobs(model, tokens[None], mask[None]).sequence[0]

    return logp


__all__ = [
    "Entanglement",
    "FirstOrderChange",
    "GradientGram",
    "LossDerivatives",
    "UnigramEntanglement",
    "directional_logp_change",
    "dpo_derivatives",
    "entanglement_condition",
    "entanglement_metrics",
    "first_order_change",
    "gradient_entanglement",
    "ipo_derivatives",
    "loss_derivatives",
    "normalised_pairwise_loss",
    "pair_gradient_gram",
    "sequence_logp_fn",
    "simpo_derivatives",
    "tree_vdot",
    "unigram_shared_suffix",
]
