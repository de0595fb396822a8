r"""Each Nash preference-optimisation algorithm once: its name, hyperparameters and solver.

:class:`NashAlgorithm` is the record both forms read: the tabular solver of
:mod:`jaxalign.games.solvers` (:meth:`NashAlgorithm.solver`) and the LLM-form online task
(:mod:`jaxalign.train.tasks.nash`), whose pairwise loss has that solver's update as its
population minimiser. Step-size convention: ``step_size`` is the :math:`s` of
:math:`\pi_{t+1}\propto\pi_t^{1-s\tau}\pi_{\rm ref}^{s\tau}e^{s\,P\pi}` (INPO's
:math:`1/\eta`, ONPO's / MNPO's / Nash-MD's / EGPO's :math:`\eta`); online IPO is INPO with
:math:`s = 1/\tau` (its fixed-point iteration :math:`\pi\propto\pi_{\rm ref}e^{P\pi/\tau}`).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxalign.games import solvers

#: The online Nash algorithms.
NASH_ALGORITHMS = ("inpo", "onpo", "online_ipo", "mnpo", "egpo", "nash_md", "sppo")
# Updates π ∝ π_t^{1-sτ} π_ref^{sτ} e^{s·…}: the anchor weight 1 − sτ must be ≥ 0.
MIRROR_ALGORITHMS = ("inpo", "mnpo", "egpo", "nash_md")


@dataclasses.dataclass(frozen=True)
class NashAlgorithm:
    """One Nash algorithm with its hyperparameters (validated at construction).

    Attributes:
      name: one of :data:`NASH_ALGORITHMS`.
      step_size: s > 0 (see the module docstring).
      tau: KL weight to π_ref, ≥ 0 with s·τ ≤ 1 (online IPO: > 0; ONPO: unused).
      num_players: MNPO's n ≥ 2 (the last n − 1 iterates are the opponents).
      opponent_weights: MNPO's λ over the n − 1 opponents, newest first (None: uniform).
    """

    name: str
    step_size: float = 1.0
    tau: float = 0.0
    num_players: int = 3
    opponent_weights: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.name not in NASH_ALGORITHMS:
            raise ValueError(f"name must be one of {NASH_ALGORITHMS}, got {self.name!r}")
        if not self.step_size > 0:
            raise ValueError(f"step_size must be > 0, got {self.step_size}")
        if not self.tau >= 0:
            raise ValueError(f"tau must be >= 0, got {self.tau}")
        if self.name == "online_ipo" and not self.tau > 0:
            raise ValueError(f"online_ipo needs tau > 0 (its target is 1/(2τ)), got {self.tau}")
        if self.name in MIRROR_ALGORITHMS and self.step_size * self.tau > 1:
            raise ValueError(
                f"step_size * tau must be <= 1 (anchor weight 1 - s·tau >= 0), got "
                f"{self.step_size} * {self.tau}"
            )
        if self.num_players < 2:
            raise ValueError(f"num_players must be >= 2, got {self.num_players}")
        if self.opponent_weights is not None:
            w = np.asarray(self.opponent_weights, float)
            if w.shape != (self.num_players - 1,) or (w < 0).any() or abs(w.sum() - 1) > 1e-6:
                raise ValueError(
                    f"opponent_weights must be {self.num_players - 1} non-negative weights "
                    f"summing to 1, got {self.opponent_weights}"
                )
            object.__setattr__(self, "opponent_weights", tuple(float(x) for x in w))

    @property
    def regularisation(self) -> float:
        """τ of the game the algorithm converges in (0 for ONPO and SPPO)."""
        return 0.0 if self.name in ("onpo", "sppo") else float(self.tau)

    def lambdas(self) -> np.ndarray:
        """MNPO's opponent weights λ (uniform when unset)."""
        m = self.num_players - 1
        if self.opponent_weights is None:
            return np.full(m, 1.0 / m)
        return np.asarray(self.opponent_weights, float)

    def solver(self, log_ref: Float[Array, " n"]) -> solvers.Solver:
        """The tabular solver whose update the LLM-form loss minimises."""
        s, tau = self.step_size, self.tau
        if self.name == "inpo":
            return solvers.inpo(s, tau=tau, ref=log_ref)
        if self.name == "onpo":
            return solvers.onpo(s)
        if self.name == "online_ipo":
            return solvers.inpo(1.0 / tau, tau=tau, ref=log_ref)
        if self.name == "nash_md":
            return solvers.nash_md(s, tau=tau, ref=log_ref)
        if self.name == "egpo":
            return solvers.egpo(s, tau=tau, ref=log_ref)
        if self.name == "sppo":
            return solvers.sppo(s)
        return solvers.mnpo(
            s,
            num_players=self.num_players,
            tau=tau,
            ref=log_ref,
            opponent_weights=jnp.asarray(self.lambdas(), log_ref.dtype),
            opponents="history",
        )


__all__ = ["MIRROR_ALGORITHMS", "NASH_ALGORITHMS", "NashAlgorithm"]
