r"""Exact scoring of LLM-form training on the testbed, and the tabular baselines.

* :class:`TestbedModel` — a policy architecture on a testbed: enumerated log-probs of all
  responses, exact draws from the sequence-level mixture
  :math:`\pi^{1-\alpha}\pi_{\rm ref}^{\alpha}/Z` (Nash-MD's theory), responses as
  sequences, and :func:`~jaxalign.testbed.evaluate` of a parameter tree.
* :class:`ExactHistory` — the scores of every iterate of a run (gaps, KL, win rate) and the
  tracking error :math:`\mathrm{KL}(T(\pi_t)\,\|\,\pi_{t+1})` against the exact tabular
  update :math:`T` of the LLM's own :math:`\pi_t`; JSON state for checkpoints.
* :func:`exact_update` / :func:`population_minimiser` / :func:`tabular_baseline` /
  :func:`average_policy_gaps` — what the LLM form is compared with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from jaxalign import games as G
from jaxalign.games.algorithms import NashAlgorithm
from jaxalign.kl import kl_divergence
from jaxalign.losses import dpo_loss
from jaxalign.losses import pairwise as pw
from jaxalign.testbed.space import Evaluation, Testbed, evaluate, policy_log_probs


class TestbedModel:
    """A policy architecture (``graphdef``) on a testbed: enumeration and exact sampling."""

    __test__ = False  # not a pytest class

    def __init__(self, testbed: Testbed, graphdef: nnx.GraphDef):
        self.testbed, self.graphdef = testbed, graphdef

    def log_probs(self, params: nnx.State) -> Float[Array, " n"]:
        """Exact log π over all ``A^L`` responses (traceable)."""
        return policy_log_probs(nnx.merge(self.graphdef, params), self.testbed)

    def sequences(self, idx: Int[Array, " b"]):
        """``(tokens, attention_mask, response_mask)`` of responses ``idx`` after the prompt."""
        tokens, mask = self.testbed.sequences(self.testbed.responses()[idx])
        return tokens, jnp.ones_like(mask), mask

    def sample_mixture(self, key, params, ref_params, mix, n: int) -> Int[Array, " n"]:
        """Indices of ``n`` exact draws from the sequence-level mixture π^{1−mix} π_ref^{mix}."""
        log_mix = pw.sequence_level_mixture(
            self.log_probs(params), self.log_probs(ref_params), mix=mix
        )
        return jax.random.categorical(key, log_mix, shape=(n,))


def exact_update(
    algorithm: NashAlgorithm, game: G.PreferenceGame, log_ref: Float[Array, " n"]
) -> Callable | None:
    """``log π_t ↦ log T(π_t)``, the tabular update from π_t alone (None for ONPO and MNPO,
    whose update needs π'_t or past iterates too)."""
    if algorithm.name in ("onpo", "mnpo"):
        return None
    solver = algorithm.solver(log_ref)
    return jax.jit(lambda lp: solver.step(game, solver.init(game, lp)).log_policy)


def population_minimiser(
    loss: str,
    game: G.PreferenceGame,
    log_ref: Float[Array, " n"],
    *,
    beta: float = 0.1,
    tau: float = 0.1,
    flip_rate: float = 0.0,
    newton_steps: int = 50,
) -> Float[Array, " n"] | None:
    r"""The exact policy an offline loss's fits move to: the minimiser over all policies of
    its population loss with pairs :math:`a, b \sim \pi_{\rm ref}` labelled by ``game``.

    IPO: :math:`\pi_{\rm ref}e^{P\pi_{\rm ref}/\tau}` (the population-loss lemma). DPO /
    robust DPO: the loss is convex in the logits, solved by Newton's method (for a
    Bradley–Terry game this is :math:`\pi_{\rm ref}e^{r/\beta}`). Returns None when the
    robust loss has no minimiser (clean labels with a flip correction can make it
    unbounded) or the space is too large for a dense Hessian (> 2048 responses).
    """
    if loss == "ipo":
        u = game.preference @ jnp.exp(log_ref)
        return jax.nn.log_softmax(log_ref + u / tau)
    if loss not in ("dpo", "robust_dpo"):
        raise ValueError(f"loss must be 'dpo', 'ipo' or 'robust_dpo', got {loss!r}")
    n = log_ref.shape[0]
    if n > 2048:
        return None
    mu = jnp.exp(log_ref)
    p = jnp.asarray(game.preference, log_ref.dtype)
    weight = mu[:, None] * mu[None, :]

    def objective(f):
        lp = jax.nn.log_softmax(log_ref + f)
        pa = jnp.broadcast_to(lp[:, None], (n, n)).ravel()
        pb = jnp.broadcast_to(lp[None, :], (n, n)).ravel()
        ra = jnp.broadcast_to(log_ref[:, None], (n, n)).ravel()
        rb = jnp.broadcast_to(log_ref[None, :], (n, n)).ravel()
        if loss == "dpo":
            value = dpo_loss(pa, pb, ra, rb, beta=beta).loss
        else:
            value = pw.robust_dpo_loss(pa, pb, ra, rb, beta=beta, flip_rate=flip_rate).loss
        return jnp.sum(weight * p * value.reshape(n, n))  # (a, b) labelled a ≻ b w.p. P_ab

    @jax.jit
    def newton(f):
        g, h = jax.grad(objective)(f), jax.hessian(objective)(f)
        return f - jnp.linalg.pinv(h, hermitian=True) @ g, jnp.max(jnp.abs(g))

    f = jnp.zeros_like(log_ref)
    for _ in range(newton_steps):
        f, grad_max = newton(f)
    target = jax.nn.log_softmax(log_ref + f)
    if not bool(jnp.all(jnp.isfinite(target))) or float(grad_max) > 1e-4:
        return None
    return target


def tabular_baseline(
    algorithm: NashAlgorithm,
    game: G.PreferenceGame,
    log_policy: Float[Array, " n"],
    log_ref: Float[Array, " n"],
    num_steps: int,
) -> G.Trajectory:
    """The algorithm's tabular solver run ``num_steps`` steps from ``log_policy``, gaps in the
    unregularised game (``Trajectory.last_gap`` / ``avg_gap``, ``[num_steps]``)."""
    solver = algorithm.solver(log_ref)
    return G.run(solver, game, num_steps, log_policy=log_policy, tau=0.0, ref=log_ref)


def average_policy_gaps(
    game: G.PreferenceGame, log_policies: Float[Array, "T1 n"]
) -> Float[Array, " T"]:
    r"""Exact unregularised gap of the running average :math:`\bar\pi_t = \frac1t\sum_{i<t}\pi_i`,
    ``t = 1..T`` (the iterate of the no-regret bounds; same convention as :func:`games.run`)."""
    probs = jnp.exp(log_policies[:-1])
    avg = jnp.cumsum(probs, axis=0) / jnp.arange(1, probs.shape[0] + 1, dtype=probs.dtype)[:, None]
    return jax.vmap(lambda p: G.duality_gap(game, jnp.log(p)))(avg)


class History(NamedTuple):
    """Per-iteration records of a testbed run; entry 0 is π_0, entry t the policy after t."""

    duality_gap: Float[Array, "T1"]  # unregularised exact gap of π_t
    regularised_gap: Float[Array, "T1"]  # exact gap in the τ-regularised game (0 if τ = 0)
    kl_to_reference: Float[Array, "T1"]  # KL(π_t ‖ π_ref)
    win_rate_vs_reference: Float[Array, "T1"]  # π_t^T P π_ref
    log_policies: Float[Array, "T1 n"]  # exact enumerated log π_t
    # KL(T(π_t) ‖ π_{t+1}): how far the fitted policy lands from the exact update T applied
    # to the LLM's own π_t (NaN where T needs more than π_t: ONPO, MNPO).
    tracking_kl: Float[Array, "T"]
    # KL(π_{t+1} ‖ π_t) / KL(T(π_t) ‖ π_t): the fitted step's length relative to the exact
    # update's (< 1: under-shoots, > 1: over-shoots; NaN where T is unknown).
    step_ratio: Float[Array, "T"]


class ExactHistory:
    """Exact scores of every iterate: ``record(log π)`` after each step.

    ``update`` maps ``log π_t`` to the exact next policy the step should produce (the
    tabular update, or the population minimiser of an offline loss), or is None.
    """

    def __init__(
        self,
        game: G.PreferenceGame,
        log_ref: Float[Array, " n"],
        log_policy: Float[Array, " n"],
        *,
        tau: float,
        update: Callable | None,
    ):
        self.game, self.log_ref, self.tau, self.update = game, log_ref, tau, update
        self._evaluate = jax.jit(lambda lp: evaluate(lp, game, log_ref, tau=tau))
        self.log_policies = [log_policy]
        self.evaluations = [self._evaluate(log_policy)]
        self.tracking: list[float] = []
        self.ratio: list[float] = []

    def record(self, log_policy: Float[Array, " n"]) -> dict[str, float]:
        """Scores the policy after the latest step, records it and returns the scores."""
        prev = self.log_policies[-1]
        ev = self._evaluate(log_policy)
        self.log_policies.append(log_policy)
        self.evaluations.append(ev)
        out = {k: float(v) for k, v in ev._asdict().items()}
        if self.update is not None:
            target = self.update(prev)
            step = float(kl_divergence(target, prev))
            out["tracking_kl"] = float(kl_divergence(target, log_policy))
            out["step_ratio"] = float(kl_divergence(log_policy, prev)) / max(step, 1e-12)
        else:
            out["tracking_kl"] = out["step_ratio"] = float("nan")
        self.tracking.append(out["tracking_kl"])
        self.ratio.append(out["step_ratio"])
        return out

    def history(self) -> History:
        evs = self.evaluations
        return History(
            duality_gap=jnp.stack([e.duality_gap for e in evs]),
            regularised_gap=jnp.stack([e.regularised_gap for e in evs]),
            kl_to_reference=jnp.stack([e.kl_to_reference for e in evs]),
            win_rate_vs_reference=jnp.stack([e.win_rate_vs_reference for e in evs]),
            log_policies=jnp.stack(self.log_policies),
            tracking_kl=jnp.asarray(self.tracking, jnp.float32),
            step_ratio=jnp.asarray(self.ratio, jnp.float32),
        )

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable history (enumerated log-policies and scores)."""
        return {
            "log_policies": np.asarray(jnp.stack(self.log_policies)).tolist(),
            "evaluations": [[float(x) for x in e] for e in self.evaluations],
            "tracking": [None if np.isnan(x) else x for x in self.tracking],
            "ratio": [None if np.isnan(x) else x for x in self.ratio],
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        dtype = self.log_ref.dtype
        nan = float("nan")
        self.log_policies = [jnp.asarray(x, dtype) for x in d["log_policies"]]
        self.evaluations = [
            Evaluation(*(jnp.asarray(x, dtype) for x in e)) for e in d["evaluations"]
        ]
        self.tracking = [nan if x is None else float(x) for x in d["tracking"]]
        self.ratio = [nan if x is None else float(x) for x in d["ratio"]]


__all__ = [
    "ExactHistory",
    "History",
    "TestbedModel",
    "average_policy_gaps",
    "exact_update",
    "population_minimiser",
    "tabular_baseline",
]
