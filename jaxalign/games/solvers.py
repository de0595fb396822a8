r"""Exact (tabular) solvers for preference games as pure ``(init, step)`` pairs.

Every solver is a :class:`Solver` built by a factory that closes over its
hyperparameters. ``init(game, log_policy=None)`` returns a NamedTuple state whose
``log_policy`` field is the current iterate :math:`\pi_t` (``[K]`` log-probs; default
start :math:`\pi_0 = \pi_{\rm ref}`), and ``step(game, state)`` performs one iteration.
The mirror steps are :mod:`jaxalign.optim` transforms, fed the descent direction
:math:`-(\text{payoff})`.

**Step-size convention.** ``step_size`` always multiplies payoffs:
:math:`\pi^+ \propto \ldots\, e^{\,\text{step\_size}\cdot\text{payoff}}`. Papers'
conventions convert at the boundary:

==========  ===================================  ======================
algorithm   paper writes                         ``step_size`` =
==========  ===================================  ======================
OMD, ONPO   :math:`e^{\eta P\pi}`                :math:`\eta`
Nash-MD     :math:`e^{\eta_t P\pi^\mu}`          :math:`\eta_t`
INPO        :math:`e^{P\pi/\eta}`                :math:`1/\eta`
SPPO        :math:`e^{P\pi/\beta}`               :math:`1/\beta`
EGPO        :math:`e^{\eta P\pi}`, :math:`\beta = \tau`   :math:`\eta`
MNPO        :math:`e^{(\eta/(n-1))\sum_j P(y\succ\pi_j)}`  :math:`\eta`
==========  ===================================  ======================

``tau`` is the KL weight of the game whose equilibrium the solver targets
(:math:`J_\tau`); ``ref`` its reference policy (``[K]`` log-probs, default uniform).
Solvers with a pairwise LLM loss also expose ``pairwise_target(game, state)``, the
:class:`~jaxalign.games.PairwiseTarget` whose population-loss minimiser is their next
iterate.

:func:`run` drives any solver with ``lax.scan`` and records exact gaps (and KLs to a
given equilibrium) of the **last** iterate and of the **average** iterate.
"""

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int

from jaxalign import _checks
from jaxalign.games.game import MultiplayerGame, PreferenceGame, check_game, check_multiplayer_game
from jaxalign.games.gaps import (
    as_log_policy,
    check_tau,
    contract_opponents,
    duality_gap,
    kl_divergence,
    multiplayer_duality_gap,
    ref_log_policy,
)
from jaxalign.games.population import PairwiseTarget
from jaxalign.optim import extragradient, mirror_descent, optimistic_mirror_descent

Vec = Float[Array, "K"]


class Solver(NamedTuple):
    """A tabular game solver: a pair of pure functions plus the game it targets.

    Attributes:
      name: short name (``"onpo"``, ...).
      init: ``init(game, log_policy=None) -> state``.
      step: ``step(game, state) -> state``; one iteration.
      tau: KL weight of the targeted (regularised) game; gaps are measured at it.
      ref: ``[K]`` reference log-probs or None (uniform).
      pairwise_target: ``pairwise_target(game, state) -> PairwiseTarget`` or None.
    """

    name: str
    init: Callable[..., Any]
    step: Callable[[Any, Any], Any]
    tau: Any
    ref: Any
    pairwise_target: Callable[[Any, Any], PairwiseTarget] | None = None


class SolverState(NamedTuple):
    """State of the two-player solvers."""

    log_policy: Float[Array, "K"]  # π_t, log-probabilities
    count: Int[Array, ""]  # int32 scalar: iterations done
    opt_state: Any  # state of the jaxalign.optim transform (ONPO: holds π'_t)


class MNPOState(NamedTuple):
    """State of :func:`mnpo`."""

    log_policy: Float[Array, "K"]  # π_t, log-probabilities
    count: Int[Array, ""]  # int32 scalar: iterations done
    history: Float[Array, "m K"]  # [π_t, π_{t-1}, ..., π_{t-m+1}] log-probs (m = n - 1)
    opt_state: Any  # mirror_descent state


# --------------------------------------------------------------------------- helpers


def _step_at(step_size: optax.ScalarOrSchedule, count, dtype) -> jax.Array:
    s = step_size(count) if callable(step_size) else step_size
    return jnp.asarray(s, dtype)


def _check_hparams(step_size, tau) -> None:
    if not callable(step_size):
        _checks.check_positive("step_size", step_size)
    check_tau(tau)


def _matrix(game) -> jax.Array:
    return check_game(game)


def _log_ref(ref, k, dtype) -> jax.Array:
    return ref_log_policy(ref, k, dtype)


def _start(game, log_policy, ref) -> jax.Array:
    p = _matrix(game)
    k = p.shape[0]
    if log_policy is None:
        return _log_ref(ref, k, p.dtype)
    return as_log_policy("log_policy", log_policy, k, p.dtype)


def _regularised_payoff(p, theta_opponent, theta_self, log_ref, tau) -> jax.Array:
    r"""Payoff gradient of :math:`J_\tau`: :math:`P\pi_{\rm opp} - \tau\log(\pi/\pi_{\rm ref})`."""
    u = p @ jnp.exp(theta_opponent)
    return u - jnp.asarray(tau, p.dtype) * (theta_self - log_ref)


def decaying_step_size(tau: float) -> optax.Schedule:
    r"""The schedule :math:`s_t = 2/(\tau(t+2))` of Nash-MD's and INPO's last-iterate theorems.

    Nash-MD: :math:`\eta_t = 2/(\tau(t+2))` gives
    :math:`\mathrm{KL}(\pi^*_\tau\|\pi_T) \le 8/(\tau^2(T+1))`. INPO (inverse step
    :math:`\eta_t = \tau(t+2)/2`) is the same schedule in jaxalign's convention and gives
    :math:`\le 32C^2/(\tau^2(T+1))`.
    """
    _checks.check_positive("tau", tau)

    def schedule(count):
        c = jnp.asarray(count)
        dtype = jnp.result_type(float)
        return jnp.asarray(2.0, dtype) / (jnp.asarray(tau, dtype) * (c.astype(dtype) + 2))

    return schedule


# --------------------------------------------------------------------------- OMD / INPO / SPPO


def _transform_solver(name: str, tx, step_size, tau, ref, anchor_fn) -> Solver:
    """Self-play with a jaxalign.optim transform on the regularised payoff.

    ``anchor_fn(state, log_ref, st)`` gives the anchor of the solver's pairwise loss
    (``st`` = step size × τ); its target is ``step_size / 2`` and pairs come from π_t.
    """

    def init(game, log_policy=None) -> SolverState:
        theta = _start(game, log_policy, ref)
        return SolverState(theta, jnp.zeros([], jnp.int32), tx.init(theta))

    def step(game, state: SolverState) -> SolverState:
        p = _matrix(game)
        theta = state.log_policy
        log_ref = _log_ref(ref, p.shape[0], p.dtype)
        u = _regularised_payoff(p, theta, theta, log_ref, tau)
        updates, opt_state = tx.update(-u, state.opt_state, theta)
        new = jax.nn.log_softmax(optax.apply_updates(theta, updates))
        return SolverState(new, optax.safe_int32_increment(state.count), opt_state)

    def pairwise_target(game, state: SolverState) -> PairwiseTarget:
        p = _matrix(game)
        s = _step_at(step_size, state.count, p.dtype)
        log_ref = _log_ref(ref, p.shape[0], p.dtype)
        st = s * jnp.asarray(tau, p.dtype)
        return PairwiseTarget(anchor_fn(state, log_ref, st), s / 2, state.log_policy)

    return Solver(name, init, step, tau, ref, pairwise_target)


def _mirror_descent_solver(name: str, step_size, tau, ref) -> Solver:
    def anchor(state, log_ref, st):
        return (1 - st) * state.log_policy + st * log_ref

    return _transform_solver(name, mirror_descent(step_size), step_size, tau, ref, anchor)


def inpo(step_size: optax.ScalarOrSchedule, *, tau: float, ref: ArrayLike | None = None) -> Solver:
    r"""INPO / online mirror descent on the KL-regularised game (linearised KL).

    Why: no-regret self-play whose tabular step is the minimiser of a pairwise squared
    loss (INPO), so it runs on an LLM without a reward model or a Nash oracle.

    One iteration, :math:`s = ` ``step_size`` (INPO's :math:`1/\eta`):

    1. win rates :math:`u = P\pi_t`;
    2. :math:`\pi_{t+1} \propto \pi_t^{1 - s\tau}\, \pi_{\rm ref}^{s\tau}\, e^{s u}`
       (a :func:`~jaxalign.optim.mirror_descent` step on
       :math:`-(u - \tau\log(\pi_t/\pi_{\rm ref}))`).

    Pairwise loss: anchor :math:`(1-s\tau)\log\pi_t + s\tau\log\pi_{\rm ref}`, target
    :math:`s/2` (= :math:`1/(2\eta)`), pairs from :math:`\pi_t`.

    Convergence: **average** iterate :math:`O(C\sqrt{D}/\sqrt{T})` (Thm 3); **last**
    iterate with :func:`decaying_step_size`: :math:`\mathrm{KL}(\pi^*\|\pi_T) \le
    32C^2/(\tau^2(T+1))`, :math:`C = \max(B\tau, 1)`, :math:`B \ge |\log\pi/\pi_{\rm ref}|`
    (Thm 4).

    Args:
      step_size: :math:`s` (scalar or schedule), with :math:`s\tau \le 1`.
      tau: KL weight ≥ 0 (0 gives :func:`omd`).
      ref: ``[K]`` reference log-probs (default uniform).

    References:
      Zhang, Yu, Huang, et al., "Iterative Nash Policy Optimization", 2024.
    """
    _check_hparams(step_size, tau)
    return _mirror_descent_solver("inpo", step_size, tau, ref)


def omd(step_size: optax.ScalarOrSchedule) -> Solver:
    r"""Online mirror descent (multiplicative weights) on the unregularised game.

    One iteration: :math:`\pi_{t+1} \propto \pi_t\, e^{s P\pi_t}`.

    Convergence: **average** iterate, :math:`\mathrm{DualGap}(\bar\pi_T) \le
    4\sqrt{D}/\sqrt{T}` with :math:`s = \sqrt{D/T}`, :math:`D = \max_\pi
    \mathrm{KL}(\pi\|\pi_1)` (ONPO Thm 1); the last iterate cycles.

    References:
      Zhang et al. 2025 (ONPO), Thm 1; Freund & Schapire 1999.
    """
    _check_hparams(step_size, 0.0)
    return _mirror_descent_solver("omd", step_size, 0.0, None)


def sppo(step_size: optax.ScalarOrSchedule) -> Solver:
    r"""SPPO's exact update :math:`\pi_{t+1} \propto \pi_t e^{s(P\pi_t - 1/2)}`, s = 1/β.

    Identical to :func:`omd` in the tabular game (the ½ cancels in the
    normalisation); SPPO's own loss is :func:`~jaxalign.games.sppo_population_loss`.
    Convergence: **average** iterate, :math:`O(1/\sqrt T)` for a tuned step.

    References:
      Wu, Sun, Yuan, et al., "Self-Play Preference Optimization", 2024.
    """
    _check_hparams(step_size, 0.0)
    return _mirror_descent_solver("sppo", step_size, 0.0, None)


# --------------------------------------------------------------------------- Nash-MD


def nash_md(
    step_size: optax.ScalarOrSchedule, *, tau: float, ref: ArrayLike | None = None
) -> Solver:
    r"""Nash mirror descent: play against a geometric mixture of the policy and the reference.

    Why: the mixture regularises the opponent, giving last-iterate convergence to the
    regularised Nash without averaging.

    One iteration, :math:`s_t = ` ``step_size`` at :math:`t`:

    1. mixture :math:`\pi^\mu_t \propto \pi_t^{1 - s_t\tau}\, \pi_{\rm ref}^{s_t\tau}`;
    2. :math:`\pi_{t+1} \propto \pi^\mu_t\, e^{s_t P\pi^\mu_t}` (a mirror step from
       :math:`\pi_t` on :math:`-(P\pi^\mu_t - \tau\log(\pi_t/\pi_{\rm ref}))`).

    Pairwise loss: anchor :math:`\log\pi^\mu_t`, target :math:`s_t/2`, pairs from
    :math:`\pi^\mu_t`.

    Convergence: **last** iterate; with :func:`decaying_step_size`
    :math:`\mathrm{KL}(\pi^*_\tau\|\pi_T) \le 8/(\tau^2(T+1))`.
    With a constant step the fixed point is biased by :math:`O(s)` (the mixture, not
    :math:`\pi_t`, is played), so :math:`\pi^*_\tau` is reached only as :math:`s_t \to 0`.

    References:
      Munos, Valko, Calandriello, et al., "Nash Learning from Human Feedback", 2023.
    """
    _check_hparams(step_size, tau)
    tx = mirror_descent(step_size)

    def mixture(p, state):
        s = _step_at(step_size, state.count, p.dtype)
        log_ref = _log_ref(ref, p.shape[0], p.dtype)
        st = s * jnp.asarray(tau, p.dtype)
        return s, log_ref, jax.nn.log_softmax((1 - st) * state.log_policy + st * log_ref)

    def init(game, log_policy=None) -> SolverState:
        theta = _start(game, log_policy, ref)
        return SolverState(theta, jnp.zeros([], jnp.int32), tx.init(theta))

    def step(game, state: SolverState) -> SolverState:
        p = _matrix(game)
        theta = state.log_policy
        _, log_ref, theta_mu = mixture(p, state)
        u = _regularised_payoff(p, theta_mu, theta, log_ref, tau)
        updates, opt_state = tx.update(-u, state.opt_state, theta)
        new = jax.nn.log_softmax(optax.apply_updates(theta, updates))
        return SolverState(new, optax.safe_int32_increment(state.count), opt_state)

    def pairwise_target(game, state: SolverState) -> PairwiseTarget:
        p = _matrix(game)
        s, _, theta_mu = mixture(p, state)
        return PairwiseTarget(theta_mu, s / 2, theta_mu)

    return Solver("nash_md", init, step, tau, ref, pairwise_target)


# --------------------------------------------------------------------------- ONPO


def onpo(
    step_size: optax.ScalarOrSchedule, *, tau: float = 0.0, ref: ArrayLike | None = None
) -> Solver:
    r"""ONPO: optimistic online mirror descent in self-play.

    Why: using the last win rates as a prediction of the next cancels most of the
    regret, so the **average** iterate's gap falls as :math:`O(1/T)` instead of OMD's
    :math:`O(1/\sqrt T)`.

    One iteration, :math:`s = ` ``step_size`` (ONPO's :math:`\eta`), state
    :math:`(\pi_t, \pi'_t)`:

    1. win rates :math:`u = P\pi_t` (minus :math:`\tau\log(\pi_t/\pi_{\rm ref})` if
       ``tau > 0``; the paper's game is unregularised);
    2. :math:`\pi'_{t+1} \propto \pi'_t\, e^{s u}`;
    3. :math:`\pi_{t+1} \propto \pi'_{t+1}\, e^{s u}` (prediction = last payoff),

    i.e. :func:`~jaxalign.optim.optimistic_mirror_descent`, which keeps :math:`\pi'_t`
    in ``state.opt_state.secondary``.

    Pairwise loss (twice per iteration): anchor :math:`\log\pi'_t`, target :math:`s/2`,
    pairs from :math:`\pi_t` gives :math:`\pi'_{t+1}`; the same with anchor
    :math:`\log\pi'_{t+1}` gives :math:`\pi_{t+1}`. ``pairwise_target`` returns the first.

    Convergence (Thm 2 as re-derived; the printed :math:`4\sqrt D/T` is violated
    numerically): for :math:`s \le 1/2`, :math:`\mathrm{DualGap}(\bar\pi_T) \le
    2D/(sT)`, :math:`D = \max_\pi\mathrm{KL}(\pi\|\pi_1)` — **average** iterate. With a
    unique Nash and :math:`s \le 1/8` the **last** iterate converges geometrically at an
    instance-dependent (possibly very slow) rate (Thm 3).

    References:
      Zhang, Zhao, et al., "Improving LLM General Preference Alignment via Optimistic
      Online Mirror Descent", 2025.
    """
    _check_hparams(step_size, tau)

    def anchor(state, log_ref, st):
        return state.opt_state.secondary - st * (state.log_policy - log_ref)

    tx = optimistic_mirror_descent(step_size)
    return _transform_solver("onpo", tx, step_size, tau, ref, anchor)


# --------------------------------------------------------------------------- EGPO


def egpo(step_size: optax.ScalarOrSchedule, *, tau: float, ref: ArrayLike | None = None) -> Solver:
    r"""EGPO: extragradient on the KL-regularised preference game.

    Why: the extrapolated opponent gives last-iterate **linear** convergence to the
    regularised Nash, with no averaging and no decaying step.

    One iteration, :math:`s = ` ``step_size`` (EGPO's :math:`\eta`, :math:`\beta = \tau`):

    1. :math:`\pi_{t+1/2} \propto \pi_t^{1-s\tau}\pi_{\rm ref}^{s\tau} e^{sP\pi_t}`;
    2. :math:`\pi_{t+1} \propto \pi_t^{1-s\tau}\pi_{\rm ref}^{s\tau} e^{sP\pi_{t+1/2}}`,

    two calls of :func:`~jaxalign.optim.extragradient` (the KL term is linearised at
    :math:`\pi_t` in both). Its tabular loss and SGD learning-rate mapping are
    :func:`~jaxalign.games.egpo_regression_loss` /
    :func:`~jaxalign.games.egpo_sgd_learning_rate`.

    Convergence: **last** iterate, :math:`\mathrm{KL}(\pi^*_\tau\|\pi_t) \le
    (1 - s\tau)^t\,\mathrm{KL}(\pi^*_\tau\|\pi_0)` for small enough :math:`s`
    (observed for :math:`s \le 1/(\tau + 1)/2`).

    References:
      Zhou, Fazel, Du, "Extragradient Preference Optimization", 2025; Cen et al. 2021.
    """
    _check_hparams(step_size, tau)
    tx = extragradient(step_size)

    def init(game, log_policy=None) -> SolverState:
        theta = _start(game, log_policy, ref)
        return SolverState(theta, jnp.zeros([], jnp.int32), tx.init(theta))

    def step(game, state: SolverState) -> SolverState:
        p = _matrix(game)
        theta = state.log_policy
        log_ref = _log_ref(ref, p.shape[0], p.dtype)
        u = _regularised_payoff(p, theta, theta, log_ref, tau)
        updates, opt_state = tx.update(-u, state.opt_state, theta)
        half = jax.nn.log_softmax(optax.apply_updates(theta, updates))
        # The regulariser stays linearised at π_t (not π_{t+1/2}), as in EGPO.
        u_half = _regularised_payoff(p, half, theta, log_ref, tau)
        updates, opt_state = tx.update(-u_half, opt_state, half)
        new = jax.nn.log_softmax(optax.apply_updates(half, updates))
        return SolverState(new, optax.safe_int32_increment(state.count), opt_state)

    return Solver("egpo", init, step, tau, ref, None)


# --------------------------------------------------------------------------- MNPO


def mnpo(
    step_size: optax.ScalarOrSchedule,
    *,
    num_players: int,
    tau: float = 0.0,
    ref: ArrayLike | None = None,
    opponent_weights: ArrayLike | None = None,
    opponents: Literal["history", "current"] = "history",
) -> Solver:
    r"""MNPO: multiplicative weights against a population of n - 1 opponents.

    Why: one policy competing with several opponents (past checkpoints, or copies of
    itself under a one-vs-many preference of heterogeneous annotators) rather than one.

    One iteration, :math:`s = ` ``step_size`` (MNPO's :math:`\eta`), opponents
    :math:`\{\pi_j\}_{j=1}^{n-1}` with weights :math:`\lambda_j`:

    1. anchor :math:`a = \sum_j \lambda_j \log\pi_j` (uniform weights: the geometric
       mean :math:`(\prod_j \pi_j)^{1/(n-1)}`), and with ``tau > 0``
       :math:`a \leftarrow (1 - s\tau)a + s\tau\log\pi_{\rm ref}`;
    2. payoff :math:`u(y)`: for a :class:`PreferenceGame`,
       :math:`\sum_j\lambda_j P(y \succ \pi_j)`; for an n-player
       :class:`MultiplayerGame`, :math:`\mathbb{E}\,P(y \succ \{y_j\})` with
       :math:`y_j \sim \pi_j` (uniform weights only);
    3. :math:`\pi_{t+1} \propto e^{a + s u}` (a mirror step taken at the anchor).

    Opponents: ``"history"`` (time-dependent MNPO) uses the last n - 1 iterates
    :math:`\pi_t, \pi_{t-1}, \dots` (all :math:`\pi_0` at the start); ``"current"``
    uses n - 1 copies of :math:`\pi_t` (symmetric n-player self-play). With
    ``num_players = 2`` both reduce exactly to :func:`inpo` (:func:`omd` if ``tau = 0``).

    Pairwise loss (pairwise games): anchor :math:`a`, target :math:`s/2`, pairs drawn
    from the **mixture of the opponents** :math:`\sum_j\lambda_j\pi_j` — drawing them
    from :math:`\pi_t` alone changes the minimiser (see :mod:`~jaxalign.games.population`).

    Convergence: **average** iterate :math:`O(1/\sqrt T)` (MNPO's guarantee).

    Args:
      step_size: :math:`s` (scalar or schedule).
      num_players: n ≥ 2.
      tau: KL weight ≥ 0. ref: reference log-probs (default uniform).
      opponent_weights: ``[n-1]`` weights :math:`\lambda_j` on the simplex (default
        uniform), ordered from the newest opponent.
      opponents: ``"history"`` or ``"current"``.

    References:
      Wu, Huang, Xuan, et al., "Multiplayer Nash Preference Optimization", 2025.
    """
    _check_hparams(step_size, tau)
    n = int(num_players)
    if n < 2:
        raise ValueError(f"num_players must be >= 2, got {num_players}")
    if opponents not in ("history", "current"):
        raise ValueError(f"opponents must be 'history' or 'current', got {opponents!r}")
    m = n - 1
    if opponent_weights is None:
        weights_np = None
    else:
        w = _checks.as_float_array("opponent_weights", opponent_weights, ndim=1)
        if w.shape != (m,):
            raise ValueError(
                f"opponent_weights must have shape ({m},) for num_players={n}, got {w.shape}"
            )
        _checks.check_nonnegative("opponent_weights", w)
        if _checks.is_concrete(w) and abs(float(np.sum(np.asarray(w))) - 1) > 1e-6:
            raise ValueError(f"opponent_weights must sum to 1, got {np.asarray(w)}")
        weights_np = w
    tx = mirror_descent(step_size)

    def _weights(dtype):
        if weights_np is None:
            return jnp.full((m,), 1.0 / m, dtype)
        return jnp.asarray(weights_np, dtype)

    def _tensor(game):
        if isinstance(game, MultiplayerGame):
            t = check_multiplayer_game(game)
            if t.ndim != n:
                raise ValueError(
                    f"mnpo(num_players={n}) got a {t.ndim}-player game; build the game with "
                    f"num_players={n}"
                )
            if weights_np is not None:
                raise ValueError(
                    "opponent_weights apply to pairwise games; an n-player MultiplayerGame "
                    "takes each opponent once"
                )
            return t
        return _matrix(game)

    def _opponents(state):
        if opponents == "current":
            return jnp.broadcast_to(state.log_policy, (m, *state.log_policy.shape))
        return state.history

    def _anchor_payoff(game, state):
        t = _tensor(game)
        dtype, k = t.dtype, t.shape[-1]
        lam = _weights(dtype)
        opp = _opponents(state)
        anchor = lam @ opp
        probs = jnp.exp(opp)
        u = lam @ (probs @ t.T) if t.ndim == 2 else contract_opponents(t, probs)
        s = _step_at(step_size, state.count, dtype)
        log_ref = _log_ref(ref, k, dtype)
        st = s * jnp.asarray(tau, dtype)
        return s, lam, opp, (1 - st) * anchor + st * log_ref, u, anchor, log_ref

    def init(game, log_policy=None) -> MNPOState:
        t = _tensor(game)
        k = t.shape[-1]
        if log_policy is None:
            theta = _log_ref(ref, k, t.dtype)
        else:
            theta = as_log_policy("log_policy", log_policy, k, t.dtype)
        history = jnp.broadcast_to(theta, (m, k))
        return MNPOState(theta, jnp.zeros([], jnp.int32), history, tx.init(theta))

    def step(game, state: MNPOState) -> MNPOState:
        _, _, _, _, u, anchor, log_ref = _anchor_payoff(game, state)
        dtype = anchor.dtype
        grad = -(u - jnp.asarray(tau, dtype) * (anchor - log_ref))
        updates, opt_state = tx.update(grad, state.opt_state, anchor)
        new = jax.nn.log_softmax(optax.apply_updates(anchor, updates))
        history = jnp.concatenate([new[None, :], state.history[:-1]], axis=0)
        return MNPOState(new, optax.safe_int32_increment(state.count), history, opt_state)

    def pairwise_target(game, state: MNPOState) -> PairwiseTarget:
        s, lam, opp, anchor_tau, _, _, _ = _anchor_payoff(game, state)
        if isinstance(game, MultiplayerGame):
            raise ValueError("pairwise_target needs a pairwise PreferenceGame")
        sampling = jax.nn.logsumexp(opp + jnp.log(lam)[:, None], axis=0)
        return PairwiseTarget(anchor_tau, s / 2, sampling)

    return Solver(f"mnpo_{opponents}", init, step, tau, ref, pairwise_target)


# --------------------------------------------------------------------------- run


class Trajectory(NamedTuple):
    """What :func:`run` records, one entry per iteration ``t = 1..T``.

    Entry ``t-1`` describes the iterate after ``t`` updates (**last**) and the average
    :math:`\\bar\\pi_t = \\frac1t\\sum_{i<t}\\pi_i` of the ``t`` iterates whose payoffs
    were played (**average**, the one of the regret bounds; probabilities averaged).
    """

    avg_gap: Float[Array, "T"]  # duality gap of the average iterate
    last_gap: Float[Array, "T"]  # duality gap of the last iterate
    avg_kl: Float[Array, "T"]  # KL(π* ‖ average); NaN without an equilibrium
    last_kl: Float[Array, "T"]  # KL(π* ‖ last); NaN without an equilibrium
    average_log_policy: Float[Array, "K"]  # log of the final average iterate
    final_state: Any  # the solver state after T steps


def _gap_fn(game, tau, ref):
    if isinstance(game, MultiplayerGame):
        return lambda theta: multiplayer_duality_gap(game, theta, None, tau, ref)
    return lambda theta: duality_gap(game, theta, tau, ref)


def run(
    solver: Solver,
    game: PreferenceGame | MultiplayerGame,
    num_steps: int,
    *,
    log_policy: ArrayLike | None = None,
    equilibrium: ArrayLike | None = None,
    tau: float | None = None,
    ref: ArrayLike | None = None,
) -> Trajectory:
    r"""Runs ``num_steps`` iterations of a solver with ``lax.scan``, recording exact gaps.

    Pure and traceable: wrap in ``jax.jit`` (``num_steps`` static) and ``jax.vmap`` over
    a batch of games (stacked ``PreferenceGame`` fields), e.g.
    ``jax.jit(jax.vmap(lambda g: run(onpo(0.1), g, 1000)))(games)``.

    Args:
      solver: a :class:`Solver`.
      game: two-player game (gap: :func:`~jaxalign.games.duality_gap`) or n-player game
        (gap: :func:`~jaxalign.games.multiplayer_duality_gap` in symmetric play).
      num_steps: T ≥ 1 (static).
      log_policy: ``[K]`` starting policy (default: the solver's, :math:`\pi_{\rm ref}`).
      equilibrium: ``[K]`` log-probs of :math:`\pi^*` for the KL columns (optional).
      tau, ref: the game in which gaps are measured (default: the solver's).

    Returns:
      A :class:`Trajectory` with ``[T]`` arrays.
    """
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    tau = solver.tau if tau is None else tau
    ref = solver.ref if ref is None else ref
    state0 = solver.init(game, log_policy)
    theta0 = state0.log_policy
    dtype = theta0.dtype
    gap = _gap_fn(game, tau, ref)
    if equilibrium is None:
        kl_to_nash = lambda theta: jnp.asarray(jnp.nan, dtype)
    else:
        log_star = jnp.asarray(equilibrium, dtype)
        kl_to_nash = lambda theta: kl_divergence(log_star, theta)

    def body(carry, _):
        state, log_avg, t = carry
        tf = t.astype(dtype)
        one = jnp.asarray(1, dtype)
        log_avg = jnp.logaddexp(
            log_avg + jnp.log(tf / (tf + one)), state.log_policy - jnp.log(tf + one)
        )
        state = solver.step(game, state)
        out = (
            gap(log_avg),
            gap(state.log_policy),
            kl_to_nash(log_avg),
            kl_to_nash(state.log_policy),
        )
        return (state, log_avg, t + 1), out

    init = (state0, theta0, jnp.zeros([], jnp.int32))
    (state, log_avg, _), (avg_gap, last_gap, avg_kl, last_kl) = jax.lax.scan(
        body, init, None, length=int(num_steps)
    )
    return Trajectory(avg_gap, last_gap, avg_kl, last_kl, log_avg, state)


__all__ = [
    "MNPOState",
    "Solver",
    "SolverState",
    "Trajectory",
    "decaying_step_size",
    "egpo",
    "inpo",
    "mnpo",
    "nash_md",
    "omd",
    "onpo",
    "run",
    "sppo",
]
