r"""Social choice over a finite response set: voting profiles, Condorcet cycles, maximal lotteries.

Why: annotator groups can each rank responses transitively while their majority is
cyclic (the Condorcet paradox). Then no single response is majority-unbeaten, a
Bradley–Terry reward fitted to the pairwise rates still names a winner — which a majority
beats — and the Nash equilibrium of the majority game (the **maximal lottery**, NLHF's
target without KL) is the only policy no response beats.

Objects (one instance each; the LP is on the host):

* A **voting profile**: ``rankings [G, K]`` (each row a permutation of the K responses,
  best first) and ``group_sizes [G]``. :func:`voting_game` gives the preference game of
  vote fractions :math:`P(i \succ j) = \#\{i \succ j\}/N`; :func:`vote_margins` the raw
  margins :math:`M_{ij} = \#\{i\succ j\} - \#\{j \succ i\}`. With full rankings
  :math:`M = N(2P - 1)`.
* The **maximal lottery** of a skew-symmetric margin matrix :math:`M`: a :math:`p \in
  \Delta` with :math:`M^\top p \ge 0`, i.e. :math:`\max_p \min_j (M^\top p)_j` (value 0),
  by LP (:func:`maximal_lottery`). It is the symmetric Nash equilibrium of the game
  :math:`P` (:func:`~jaxalign.games.nash_equilibrium`), unchanged by positive scaling of
  :math:`M` (group sizes times k, or raw margins instead of :math:`P - \tfrac12`).
* For three responses in a majority cycle A ≻ B ≻ C ≻ A the lottery is closed-form
  (:func:`three_cycle_lottery`): each response is weighted by the margin of the
  **opposite** edge, :math:`p_A \propto m_{BC},\ p_B \propto m_{CA},\ p_C \propto m_{AB}`
  (check: :math:`(M^\top p)_A = p_C m_{CA} - p_B m_{AB} \propto m_{AB}m_{CA} - m_{CA}m_{AB}
  = 0`, and likewise for B, C — every response beats :math:`p` with probability exactly ½).
  Weighting by a response's own edge fails :math:`M^\top p \ge 0` unless all margins are
  equal.
* :func:`bradley_terry_fit`: the maximum-likelihood BT scores of pairwise rates. With every
  pair compared equally often its stationarity condition is
  :math:`\sum_j \sigma(s_i - s_j) = \sum_j P_{ij}` (the Borda score), so the BT ranking is
  the Borda ranking [derived: the left side is increasing in :math:`s_i`; settled by the
  tests] — in a cycle its winner is beaten by a majority.

Condorcet example [derived, checked in ``theory_tests/test_social_choice.py``]: groups
A≻B≻C (4), B≻C≻A (3), C≻A≻B (3) give :math:`P(A\succ B) = P(B \succ C) = .7`,
:math:`P(C \succ A) = .6`; maximal lottery :math:`(.4, .2, .4)`; BT scores
:math:`(.134, 0, -.134)` (Borda 11/10/9), so RLHF-BT outputs A, which C beats 6 to 4.
Every pair has a strict majority in this cyclic profile iff :math:`n_1+n_3 > n_2`,
:math:`n_1+n_2 > n_3` and :math:`n_2 + n_3 > n_1`.

References:
  Mishra, "AI Alignment and Social Choice: Fundamental Limitations and Policy
  Implications", 2023 (arXiv 2310.16048); Fishburn, "Probabilistic social choice based on
  simple voting comparisons", 1984 (maximal lotteries); Munos et al., "Nash Learning from
  Human Feedback", 2023.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from jaxalign import _checks
from jaxalign.games.game import PreferenceGame, check_game

_SKEW_TOL = {np.dtype("float32"): 1e-5, np.dtype("float64"): 1e-10}


# --------------------------------------------------------------------------- voting profiles


def _profile(rankings: ArrayLike, group_sizes: ArrayLike) -> tuple[jax.Array, jax.Array]:
    ranks = jnp.asarray(rankings)
    if ranks.ndim != 2 or ranks.shape[0] == 0 or ranks.shape[1] == 0:
        raise ValueError(
            f"rankings must be a non-empty [G, K] array (one ranking per group, best first), "
            f"got shape {ranks.shape}"
        )
    if not jnp.issubdtype(ranks.dtype, jnp.integer):
        raise ValueError(f"rankings must hold integer response ids, got dtype {ranks.dtype}")
    sizes = _checks.as_float_array("group_sizes", group_sizes, ndim=1)
    if sizes.shape[0] != ranks.shape[0]:
        raise ValueError(
            f"group_sizes must have shape ({ranks.shape[0]},) (one per ranking), got {sizes.shape}"
        )
    _checks.check_nonnegative("group_sizes", sizes)
    if _checks.is_concrete(ranks):
        a = np.asarray(ranks)
        k = a.shape[1]
        for g, row in enumerate(a):
            if sorted(row.tolist()) != list(range(k)):
                raise ValueError(
                    f"rankings[{g}] = {row.tolist()} is not a permutation of 0..{k - 1}; each "
                    "group must rank every response exactly once"
                )
    if _checks.is_concrete(sizes) and float(np.sum(np.asarray(sizes))) <= 0:
        raise ValueError(f"group_sizes must have a positive total, got {np.asarray(sizes)}")
    return ranks.astype(jnp.int32), sizes


@jax.jit  # one compilation per profile shape (eager argsort/einsum compile op by op)
def _votes(ranks: jax.Array, sizes: jax.Array) -> jax.Array:
    """``[K, K]`` total weight of voters ranking i strictly above j."""
    position = jnp.argsort(ranks, axis=1)  # position[g, y] = place of y in group g's ranking
    above = (position[:, :, None] < position[:, None, :]).astype(sizes.dtype)
    return jnp.einsum("g,gij->ij", sizes, above)


def vote_margins(
    rankings: Int[ArrayLike, "G K"], group_sizes: Float[ArrayLike, "G"]
) -> Float[Array, "K K"]:
    r"""Raw majority margins :math:`M_{ij} = \#\{\text{voters}: i \succ j\} - \#\{j \succ i\}`.

    Skew-symmetric; :math:`M_{ij} > 0` means a majority prefers i to j.

    Args:
      rankings: ``[G, K]`` integer rankings, best first (each row a permutation).
      group_sizes: ``[G]`` number (or weight) of voters holding each ranking.
    """
    ranks, sizes = _profile(rankings, group_sizes)
    votes = _votes(ranks, sizes)
    return votes - votes.T


def voting_game(
    rankings: Int[ArrayLike, "G K"], group_sizes: Float[ArrayLike, "G"]
) -> PreferenceGame:
    r"""The preference game of a voting profile: :math:`P(i \succ j) = \#\{i \succ j\} / N`.

    A uniformly drawn voter prefers i to j with probability :math:`P_{ij}`; the diagonal is ½.
    With full rankings :math:`P - \tfrac12 = M / (2N)` for the margins of :func:`vote_margins`.

    Example (the Condorcet cycle of the module docstring)::

        game = voting_game([[0, 1, 2], [1, 2, 0], [2, 0, 1]], [4, 3, 3])
    """
    ranks, sizes = _profile(rankings, group_sizes)
    k = ranks.shape[1]
    p = _votes(ranks, sizes) / jnp.sum(sizes)
    return PreferenceGame(p + jnp.asarray(0.5, p.dtype) * jnp.eye(k, dtype=p.dtype))


def majority_margins(game: PreferenceGame) -> Float[Array, "K K"]:
    r"""The skew-symmetric majority game :math:`M = P - \tfrac12` of a preference game."""
    p = check_game(game)
    return p - jnp.asarray(0.5, p.dtype)


# --------------------------------------------------------------------------- majority winners


def condorcet_winner(game: PreferenceGame) -> Int[Array, ""]:
    r"""The response that beats every other by a strict majority, or ``-1`` if none (jittable).

    In a majority cycle there is none: every response is beaten by some majority.
    """
    return _condorcet_winner(check_game(game))


@jax.jit
def _condorcet_winner(p: jax.Array) -> jax.Array:
    beats = (p > 0.5) | jnp.eye(p.shape[0], dtype=bool)
    wins_all = jnp.all(beats, axis=1)
    return jnp.where(jnp.any(wins_all), jnp.argmax(wins_all), -1).astype(jnp.int32)


def strongest_challenger(
    game: PreferenceGame, policy: Float[ArrayLike, "K"]
) -> tuple[Int[Array, ""], Float[Array, ""]]:
    r"""The response that beats ``policy`` most often, and how often: :math:`\max_y (P\pi)_y`.

    A policy is **majority-unbeaten** iff this rate is ≤ ½ (the maximal lottery is; in a
    Condorcet cycle no single response is).

    Args:
      game: ``[K, K]`` preference game.
      policy: ``[K]`` probabilities (not log-probs: a vertex is ``one_hot(i)``).

    Returns:
      ``(index, win_rate)``.
    """
    p = check_game(game)
    pi = _checks.as_float_array("policy", policy, ndim=1).astype(p.dtype)
    if pi.shape != (p.shape[0],):
        raise ValueError(f"policy must have shape ({p.shape[0]},), got {pi.shape}")
    if _checks.is_concrete(pi):
        a = np.asarray(pi, dtype=np.float64)
        if (a < -1e-12).any() or abs(a.sum() - 1) > 1e-6:
            raise ValueError(
                f"policy must be probabilities (non-negative, summing to 1), got {a.tolist()}"
            )
    return _challenger(p, pi)


@jax.jit
def _challenger(p: jax.Array, pi: jax.Array) -> tuple[jax.Array, jax.Array]:
    rates = p @ pi
    best = jnp.argmax(rates)
    return best.astype(jnp.int32), rates[best]


# --------------------------------------------------------------------------- maximal lottery


def _check_skew(margins: jax.Array) -> None:
    if margins.ndim != 2 or margins.shape[0] != margins.shape[1] or margins.shape[0] == 0:
        raise ValueError(f"margins must be a non-empty square [K, K] matrix, got {margins.shape}")
    if _checks.is_concrete(margins):
        a = np.asarray(margins, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError("margins must be finite")
        scale = max(1.0, float(np.abs(a).max()))
        err = float(np.abs(a + a.T).max())
        if err > _SKEW_TOL.get(np.dtype(margins.dtype), 1e-5) * scale:
            raise ValueError(
                f"margins must be skew-symmetric (M = -Mᵀ, e.g. P - 1/2 or vote margins); "
                f"max |M + Mᵀ| = {err:.3g}"
            )


def maximal_lottery(margins: Float[ArrayLike, "K K"]) -> Float[Array, "K"]:
    r"""The maximal lottery of a skew-symmetric margin matrix, by linear programming.

    .. math:: p^* \in \arg\max_{p\in\Delta}\ \min_j\, (M^\top p)_j, \qquad
              \text{value } 0,\ M^\top p^* \ge 0.

    :math:`p^*` beats or ties every response; it is the symmetric Nash equilibrium of the
    majority game (with :math:`M = P - \tfrac12`, the τ = 0 NLHF target). Invariant to
    positive scaling of :math:`M`. Unique when all off-diagonal margins are non-zero and
    the number of voters is odd (Laffond, Laslier, Le Breton 1997); otherwise one
    solution is returned. Solved with ``scipy.optimize.linprog`` (HiGHS) on the host: not
    traceable.

    Args:
      margins: ``[K, K]`` skew-symmetric margins :math:`M_{ij}` of i over j.

    Returns:
      ``[K]`` probabilities.
    """
    m = _checks.as_float_array("margins", margins)
    _check_skew(m)
    if not _checks.is_concrete(m):
        raise ValueError(
            "maximal_lottery solves an LP on the host and cannot run under jit/vmap; call it "
            "on concrete margins"
        )
    from scipy.optimize import linprog

    a = np.asarray(m, dtype=np.float64)
    a = a / max(1e-300, float(np.abs(a).max()))  # scale-free: the LP sees M / max|M|
    k = a.shape[0]
    # variables (p_1..p_K, v): maximise v  s.t.  v - (Mᵀp)_j <= 0,  Σp = 1,  p >= 0.
    c = np.zeros(k + 1)
    c[-1] = -1.0
    a_ub = np.concatenate([-a.T, np.ones((k, 1))], axis=1)
    a_eq = np.concatenate([np.ones((1, k)), np.zeros((1, 1))], axis=1)
    res = linprog(
        c,
        A_ub=a_ub,
        b_ub=np.zeros(k),
        A_eq=a_eq,
        b_eq=np.ones(1),
        bounds=[(0, None)] * k + [(None, None)],
        method="highs",
    )
    if not res.success:  # pragma: no cover - the LP is feasible and bounded
        raise RuntimeError(f"linprog failed to find the maximal lottery: {res.message}")
    p = np.clip(res.x[:k], 0.0, None)
    p[p < 1e-13] = 0.0
    return jnp.asarray(p / p.sum(), m.dtype)


def three_cycle_lottery(game: PreferenceGame) -> Float[Array, "3"]:
    r"""Closed-form maximal lottery of a three-response majority cycle (opposite-edge rule).

    For a cycle :math:`a \succ b \succ c \succ a` with margins :math:`m_{ab}, m_{bc},
    m_{ca} > 0` (of :math:`M = P - \tfrac12`): :math:`p_a \propto m_{bc}`, :math:`p_b
    \propto m_{ca}`, :math:`p_c \propto m_{ab}`. In index form :math:`p_i \propto |M_{jk}|`
    for :math:`\{j, k\}` the other two responses (jittable).

    Raises:
      ValueError: (concrete inputs) K ≠ 3, or the strict majority is not a cycle.
    """
    p = check_game(game)
    if p.shape[0] != 3:
        raise ValueError(f"three_cycle_lottery needs K = 3 responses, got K = {p.shape[0]}")
    if _checks.is_concrete(p):
        a = np.asarray(p, dtype=np.float64)
        cyclic = (a[0, 1] > 0.5) == (a[1, 2] > 0.5) == (a[2, 0] > 0.5)
        strict = min(abs(a[0, 1] - 0.5), abs(a[1, 2] - 0.5), abs(a[2, 0] - 0.5)) > 0
        if not (cyclic and strict):
            raise ValueError(
                "three_cycle_lottery needs a strict majority cycle (0≻1≻2≻0 or 0≺1≺2≺0); "
                f"got P(0≻1)={a[0, 1]:.4g}, P(1≻2)={a[1, 2]:.4g}, P(2≻0)={a[2, 0]:.4g}; use "
                "maximal_lottery for other games"
            )
    m = jnp.abs(p - jnp.asarray(0.5, p.dtype))
    w = jnp.stack([m[1, 2], m[2, 0], m[0, 1]])
    return w / jnp.sum(w)


# --------------------------------------------------------------------------- Bradley–Terry fit


def borda_scores(game: PreferenceGame) -> Float[Array, "K"]:
    r"""Borda scores :math:`\sum_{j \ne i} P(i \succ j)` (times N: points of a voting profile)."""
    p = check_game(game)
    return jnp.sum(p, axis=1) - jnp.asarray(0.5, p.dtype)


def _strongly_connected(adj: np.ndarray) -> bool:
    k = adj.shape[0]
    reach = adj | np.eye(k, dtype=bool)
    for _ in range(max(1, int(np.ceil(np.log2(k))) + 1)):
        reach = reach | ((reach.astype(np.int64) @ reach.astype(np.int64)) > 0)
    return bool(reach.all())


def bradley_terry_fit(
    game: PreferenceGame,
    pair_weights: Float[ArrayLike, "K K"] | None = None,
    *,
    l2: float = 0.0,
    num_steps: int = 100,
) -> Float[Array, "K"]:
    r"""Maximum-likelihood Bradley–Terry scores of pairwise preference rates (RLHF's reward fit).

    .. math:: \max_s \sum_{i \ne j} c_{ij}\, P_{ij} \log\sigma(s_i - s_j) -
              \tfrac{\ell_2}{2}\|s\|^2, \qquad \textstyle\sum_i s_i = 0,

    with :math:`c_{ij}` how often the pair is compared (default: every pair equally).
    Concave; solved by damped Newton steps (each coordinate moves at most 1 per step,
    ``num_steps`` static), jittable. With equal pair weights the fit ranks responses by
    Borda score (see the module docstring).

    Args:
      game: ``[K, K]`` pairwise preference rates.
      pair_weights: ``[K, K]`` symmetric non-negative comparison weights (default all ones).
      l2: ridge weight ≥ 0. Without it the MLE exists only if the "beats" graph
        (:math:`i \to j` when :math:`c_{ij}P_{ij} > 0`) is strongly connected — a
        unanimous pair sends scores to infinity.
      num_steps: Newton steps.

    Returns:
      ``[K]`` centred scores.

    Raises:
      ValueError: (concrete inputs) bad weights, ``l2 < 0``, or no MLE with ``l2 = 0``.
    """
    p = check_game(game)
    k = p.shape[0]
    _checks.check_nonnegative("l2", l2)
    if pair_weights is None:
        c = jnp.ones((k, k), p.dtype)
    else:
        c = _checks.as_float_array("pair_weights", pair_weights, ndim=2).astype(p.dtype)
        if c.shape != (k, k):
            raise ValueError(f"pair_weights must have shape ({k}, {k}), got {c.shape}")
        _checks.check_nonnegative("pair_weights", c)
        if _checks.is_concrete(c) and not np.allclose(np.asarray(c), np.asarray(c).T):
            raise ValueError("pair_weights must be symmetric (c_ij = c_ji)")
    c = c * (1 - jnp.eye(k, dtype=p.dtype))
    if float(l2) == 0 and _checks.is_concrete(p) and _checks.is_concrete(c):
        adj = (np.asarray(c) * np.asarray(p)) > 0
        if not _strongly_connected(adj):
            raise ValueError(
                "bradley_terry_fit: the maximum-likelihood scores do not exist (some set of "
                "responses is never beaten by the rest, e.g. a unanimous pair); pass l2 > 0"
            )
    return _bt_newton(p, c, jnp.asarray(l2, p.dtype), int(num_steps))


@functools.partial(jax.jit, static_argnums=3)  # a whole solver with a static step count
def _bt_newton(p, c, l2, num_steps):
    k = p.shape[0]
    ones = jnp.ones((k, k), p.dtype) / k

    def step(_, s):
        d = s[:, None] - s[None, :]
        sig = jax.nn.sigmoid(d)
        grad = jnp.sum(c * (p - sig), axis=1) - l2 * s
        curv = c * sig * (1 - sig)
        hess = curv - jnp.diag(jnp.sum(curv, axis=1)) - l2 * jnp.eye(k, dtype=p.dtype)
        # The likelihood is flat along 1 (scores are identified up to a shift): fix the gauge.
        delta = jnp.linalg.solve(hess - ones, -grad)
        delta = delta / jnp.maximum(1, jnp.max(jnp.abs(delta)))
        s = s + delta
        return s - jnp.mean(s)

    return jax.lax.fori_loop(0, num_steps, step, jnp.zeros((k,), p.dtype))


__all__ = [
    "borda_scores",
    "bradley_terry_fit",
    "condorcet_winner",
    "majority_margins",
    "maximal_lottery",
    "strongest_challenger",
    "three_cycle_lottery",
    "vote_margins",
    "voting_game",
]
