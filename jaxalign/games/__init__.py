"""Preference games: exact two-player and n-player games, gaps, equilibria and solvers.

* Games: :class:`PreferenceGame` (``[K, K]`` matrix ``P(y ≻ y')``) and
  :class:`MultiplayerGame` (``[K] * n`` one-vs-many tensor), with validating constructors
  (Bradley–Terry, random non-transitive, cyclic/Condorcet, annotator mixtures,
  Plackett–Luce).
* Exact measures: :func:`duality_gap`, :func:`multiplayer_duality_gap`,
  :func:`exploitability`, :func:`best_response`, :func:`kl_divergence`.
* Equilibria: :func:`nash_equilibrium` (LP for τ = 0, fixed point for τ > 0).
* Solvers as ``(init, step)`` pairs: :func:`omd`, :func:`inpo`, :func:`sppo`,
  :func:`nash_md`, :func:`onpo`, :func:`egpo`, :func:`mnpo`; :func:`run` scans one and
  records gaps of the last and average iterates.
* Social choice: :func:`voting_game`, :func:`maximal_lottery`, :func:`three_cycle_lottery`,
  :func:`bradley_terry_fit`, :func:`condorcet_winner` (Condorcet cycles).
* Population forms of the pairwise losses: :func:`pairwise_population_loss` and friends.

All functions handle one game; batch with :func:`jax.vmap`. ``step_size`` multiplies
payoffs (``exp(step_size * payoff)``) everywhere.
"""

from jaxalign.games.algorithms import MIRROR_ALGORITHMS, NASH_ALGORITHMS, NashAlgorithm
from jaxalign.games.equilibrium import nash_equilibrium, nash_residual
from jaxalign.games.game import (
    MultiplayerGame,
    PreferenceGame,
    annotator_mixture_game,
    bradley_terry_game,
    cyclic_game,
    multiplayer_game,
    pairwise_multiplayer_game,
    plackett_luce_game,
    preference_game,
    random_annotator_mixture_game,
    random_game,
)
from jaxalign.games.gaps import (
    best_response,
    duality_gap,
    exploitability,
    kl_divergence,
    multiplayer_duality_gap,
    multiplayer_payoff,
    win_rates,
)
from jaxalign.games.population import (
    PairwiseTarget,
    centred_population_loss,
    egpo_regression_loss,
    egpo_sgd_learning_rate,
    pairwise_population_loss,
    population_minimiser,
    sppo_population_loss,
)
from jaxalign.games.social_choice import (
    borda_scores,
    bradley_terry_fit,
    condorcet_winner,
    majority_margins,
    maximal_lottery,
    strongest_challenger,
    three_cycle_lottery,
    vote_margins,
    voting_game,
)
from jaxalign.games.solvers import (
    MNPOState,
    Solver,
    SolverState,
    Trajectory,
    decaying_step_size,
    egpo,
    inpo,
    mnpo,
    nash_md,
    omd,
    onpo,
    run,
    sppo,
)

__all__ = [
    "MIRROR_ALGORITHMS",
    "NASH_ALGORITHMS",
    "MNPOState",
    "MultiplayerGame",
    "NashAlgorithm",
    "PairwiseTarget",
    "PreferenceGame",
    "Solver",
    "SolverState",
    "Trajectory",
    "annotator_mixture_game",
    "best_response",
    "borda_scores",
    "bradley_terry_fit",
    "bradley_terry_game",
    "centred_population_loss",
    "condorcet_winner",
    "cyclic_game",
    "decaying_step_size",
    "duality_gap",
    "egpo",
    "egpo_regression_loss",
    "egpo_sgd_learning_rate",
    "exploitability",
    "inpo",
    "kl_divergence",
    "majority_margins",
    "maximal_lottery",
    "mnpo",
    "multiplayer_duality_gap",
    "multiplayer_game",
    "multiplayer_payoff",
    "nash_equilibrium",
    "nash_md",
    "nash_residual",
    "omd",
    "onpo",
    "pairwise_multiplayer_game",
    "pairwise_population_loss",
    "plackett_luce_game",
    "population_minimiser",
    "preference_game",
    "random_annotator_mixture_game",
    "random_game",
    "run",
    "sppo",
    "sppo_population_loss",
    "strongest_challenger",
    "three_cycle_lottery",
    "vote_margins",
    "voting_game",
    "win_rates",
]
