r"""Mirror-descent transforms as ``optax.GradientTransformation``\ s.

Three first-order methods for online learning and monotone games, each a pair of pure
functions over a pytree of parameters (logits for the entropic map):

* :func:`mirror_descent` — :math:`x_{t+1} = \mathrm{prox}(x_t, g_t)`.
* :func:`optimistic_mirror_descent` — keeps a secondary iterate :math:`x'_t` (ONPO's
  :math:`\pi'_t`) and uses the last gradient as the prediction of the next:
  :math:`x'_{t+1} = \mathrm{prox}(x'_t, g_t)`, :math:`x_{t+1} = \mathrm{prox}(x'_{t+1}, g_t)`.
* :func:`extragradient` — two calls per iteration: an extrapolation
  :math:`x_{t+1/2} = \mathrm{prox}(x_t, g(x_t))` and a correction
  :math:`x_{t+1} = \mathrm{prox}(x_t, g(x_{t+1/2}))`.

**Sign convention (optax's).** ``updates`` passed in are *descent directions* (loss
gradients) and the returned updates are *added* to the parameters
(``optax.apply_updates``). To **maximise a payoff** :math:`u` (a win-rate vector
:math:`P\pi` in a preference game) pass ``-u`` as the gradient: the entropic step then is
:math:`\pi^+ \propto \pi\, e^{s\,u}`, i.e. ``step_size`` multiplies payoffs exactly as in
``exp(step_size * payoff)`` throughout jaxalign.

``update`` requires ``params`` (the prox is taken at the current point). ``step_size``
may be a scalar or an optax schedule of the update count.

References:
  Nemirovski & Yudin 1983; Beck & Teboulle 2003 (mirror descent).
  Rakhlin & Sridharan 2013; Syrgkanis et al. 2015 (optimistic mirror descent, RVU).
  Korpelevich 1976; Nemirovski 2004 (extragradient / mirror prox).
  Zhang et al. 2025, "Improving LLM General Preference Alignment via Optimistic Online
  Mirror Descent" (the :math:`\pi_t, \pi'_t` bookkeeping).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int

from jaxalign import _checks
from jaxalign.optim.mirror_maps import MirrorMap, entropic
from jaxalign.types import PyTree


def _resolve(step_size: optax.ScalarOrSchedule, count: Array) -> Array:
    return step_size(count) if callable(step_size) else jnp.asarray(step_size)


def _check_step_size(step_size: optax.ScalarOrSchedule) -> None:
    if not callable(step_size):
        _checks.check_positive("step_size", step_size)


def _require_params(params, name: str) -> None:
    if params is None:
        raise ValueError(
            f"{name}.update needs params (the mirror step is taken at the current point); "
            "call update(grads, state, params)"
        )


def _prox_tree(mirror_map: MirrorMap, params: PyTree, grads: PyTree, step: Array) -> PyTree:
    return jax.tree.map(lambda p, g: mirror_map.prox(p, g, step), params, grads)


def _difference(new: PyTree, old: PyTree) -> PyTree:
    return jax.tree.map(lambda n, o: (n - o).astype(o.dtype), new, old)


class MirrorDescentState(NamedTuple):
    """State of :func:`mirror_descent`."""

    count: Int[Array, ""]  # int32 scalar: number of updates applied


def mirror_descent(
    step_size: optax.ScalarOrSchedule, mirror_map: MirrorMap | None = None
) -> optax.GradientTransformation:
    r"""Online mirror descent.

    Why: the basic no-regret method; with the entropic map it is Hedge /
    multiplicative weights, the update behind OMD, INPO, SPPO and Nash-MD.

    .. math:: x_{t+1} = \arg\min_x \langle s_t g_t, x\rangle + D_\psi(x, x_t)
       \quad(\text{entropic: } \pi_{t+1} \propto \pi_t e^{-s_t g_t})

    Args:
      step_size: :math:`s_t > 0`, scalar or schedule of the update count.
      mirror_map: a :class:`~jaxalign.optim.MirrorMap` (default :func:`entropic`).

    Returns:
      An ``optax.GradientTransformation``; ``update(grads, state, params)``.

    Example::

      tx = mirror_descent(0.1)
      state = tx.init(logits)
      updates, state = tx.update(-payoff, state, logits)   # ascend the payoff
      logits = optax.apply_updates(logits, updates)

    Convergence: regret :math:`O(\sqrt{T})` with :math:`s = \sqrt{D/T}`, hence the
    **average** iterate of self-play in a zero-sum game has gap :math:`O(1/\sqrt{T})`;
    the last iterate need not converge.
    """
    _check_step_size(step_size)
    mm = mirror_map or entropic()

    def init_fn(params):
        del params
        return MirrorDescentState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        _require_params(params, "mirror_descent")
        step = _resolve(step_size, state.count)
        new = _prox_tree(mm, params, updates, step)
        return _difference(new, params), MirrorDescentState(
            count=optax.safe_int32_increment(state.count)
        )

    return optax.GradientTransformation(init_fn, update_fn)


class OptimisticMirrorDescentState(NamedTuple):
    """State of :func:`optimistic_mirror_descent`."""

    count: Int[Array, ""]  # int32 scalar: number of updates applied
    secondary: PyTree  # x'_t (ONPO's π'_t): same structure, shapes and dtypes as params


def optimistic_mirror_descent(
    step_size: optax.ScalarOrSchedule, mirror_map: MirrorMap | None = None
) -> optax.GradientTransformation:
    r"""Optimistic online mirror descent with the last gradient as prediction.

    Why: in games, predicting the next gradient by the last one cancels most of the
    regret (RVU property), improving the average-iterate rate from :math:`O(1/\sqrt T)`
    to :math:`O(1/T)` and giving last-iterate convergence in many games (ONPO).

    One update, given :math:`g_t` evaluated at the current params :math:`x_t`:

    1. :math:`x'_{t+1} = \mathrm{prox}(x'_t, g_t)` — the secondary iterate takes the
       observed gradient (ONPO: :math:`\pi'_{t+1} \propto \pi'_t e^{\eta P\pi_t}`);
    2. :math:`x_{t+1} = \mathrm{prox}(x'_{t+1}, g_t)` — the played iterate adds the
       prediction :math:`M_{t+1} = g_t` (ONPO: :math:`\pi_{t+1} \propto \pi'_{t+1}
       e^{\eta P\pi_t}`).

    The state's ``secondary`` starts at the initial params (:math:`x'_1 = x_1`). With the
    Euclidean map this is optimistic gradient descent
    :math:`x_{t+1} = x_t - 2 s g_t + s g_{t-1}`.

    Args:
      step_size: :math:`s_t > 0` (ONPO's :math:`\eta`), scalar or schedule.
      mirror_map: default :func:`entropic`.

    Returns:
      An ``optax.GradientTransformation``; ``update(grads, state, params)``.

    Convergence (ONPO Thm 2 as re-derived in jaxalign's notes): for self-play in a
    zero-sum matrix game with :math:`s \le 1/2`, the **average** iterate has duality gap
    :math:`\le 2D/(sT)`; with a unique full-support Nash and small :math:`s` the **last**
    iterate converges (instance-dependent geometric rate).

    References:
      Rakhlin & Sridharan 2013; Zhang et al. 2025 (ONPO).
    """
    _check_step_size(step_size)
    mm = mirror_map or entropic()

    def init_fn(params):
        return OptimisticMirrorDescentState(
            count=jnp.zeros([], jnp.int32), secondary=jax.tree.map(jnp.asarray, params)
        )

    def update_fn(updates, state, params=None):
        _require_params(params, "optimistic_mirror_descent")
        step = _resolve(step_size, state.count)
        secondary = _prox_tree(mm, state.secondary, updates, step)
        new = _prox_tree(mm, secondary, updates, step)
        return _difference(new, params), OptimisticMirrorDescentState(
            count=optax.safe_int32_increment(state.count), secondary=secondary
        )

    return optax.GradientTransformation(init_fn, update_fn)


class ExtragradientState(NamedTuple):
    """State of :func:`extragradient`."""

    count: Int[Array, ""]  # int32 scalar: completed iterations (pairs of calls)
    phase: Int[Array, ""]  # int32 scalar: 0 = next call extrapolates, 1 = next call corrects
    anchor: PyTree  # x_t, saved by the extrapolation call; same structure as params


def extragradient(
    step_size: optax.ScalarOrSchedule, mirror_map: MirrorMap | None = None
) -> optax.GradientTransformation:
    r"""Extragradient (mirror prox): extrapolate, then correct from the same anchor.

    Why: the extrapolated gradient anticipates the opponent's move; for monotone games
    the method converges without averaging, and linearly for strongly monotone ones
    (EGPO on the KL-regularised preference game).

    One iteration takes **two** ``update`` calls:

    1. phase 0, gradient :math:`g(x_t)` at the current params :math:`x_t`: saves
       :math:`x_t` as anchor and moves to :math:`x_{t+1/2} = \mathrm{prox}(x_t, g(x_t))`;
    2. phase 1, gradient :math:`g(x_{t+1/2})` at the params :math:`x_{t+1/2}`: moves to
       :math:`x_{t+1} = \mathrm{prox}(x_t, g(x_{t+1/2}))`.

    Args:
      step_size: :math:`s_t > 0`, scalar or schedule of the completed-iteration count.
      mirror_map: default :func:`entropic`.

    Returns:
      An ``optax.GradientTransformation``; ``update(grads, state, params)``.

    Convergence: **last** iterate; :math:`O(1/T)` average-iterate gap for monotone
    problems and geometric last-iterate decay :math:`(1 - s\beta)^t` for
    :math:`\beta`-strongly monotone ones with small enough :math:`s` (EGPO).

    References:
      Korpelevich 1976; Nemirovski 2004; Zhou, Fazel, Du 2025 (EGPO).
    """
    _check_step_size(step_size)
    mm = mirror_map or entropic()

    def init_fn(params):
        return ExtragradientState(
            count=jnp.zeros([], jnp.int32),
            phase=jnp.zeros([], jnp.int32),
            anchor=jax.tree.map(jnp.asarray, params),
        )

    def update_fn(updates, state, params=None):
        _require_params(params, "extragradient")
        step = _resolve(step_size, state.count)
        extrapolating = state.phase == 0
        # In phase 0 the anchor becomes the current point; in phase 1 it is the saved x_t.
        anchor = jax.tree.map(lambda p, a: jnp.where(extrapolating, p, a), params, state.anchor)
        new = _prox_tree(mm, anchor, updates, step)
        count = jnp.where(extrapolating, state.count, optax.safe_int32_increment(state.count))
        return _difference(new, params), ExtragradientState(
            count=count.astype(jnp.int32),
            phase=(jnp.asarray(1, jnp.int32) - state.phase).astype(jnp.int32),
            anchor=anchor,
        )

    return optax.GradientTransformation(init_fn, update_fn)


__all__ = [
    "ExtragradientState",
    "MirrorDescentState",
    "OptimisticMirrorDescentState",
    "extragradient",
    "mirror_descent",
    "optimistic_mirror_descent",
]
