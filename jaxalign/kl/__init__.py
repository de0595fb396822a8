r"""KL-constrained RL, exactly: the tilt optimum, its budget solver, best-of-N, asymptotics.

All functions take one instance (``[K]`` log-probabilities and rewards) and are
jittable and vmappable; sequence-level functions (``sequence_reward_law``,
``best_of_n_sequence``) run a jitted core after a host-side lattice check.
"""

from jaxalign.kl.asymptotics import (
    best_of_n_limit_per_token,
    best_of_n_sequence,
    bon_vs_kl_rl_per_token,
    kl_rl_reward_per_token,
    legendre_transform,
    rate_function,
    scaled_cumulant,
    sequence_reward_law,
    tilted_mean,
)
from jaxalign.kl.best_of_n import (
    best_of_n_kl,
    best_of_n_kl_bound,
    best_of_n_policy,
    best_of_n_win_rate,
    reward_cdf,
)
from jaxalign.kl.tilt import (
    RewardKL,
    expected_reward,
    kl_constrained_policy,
    kl_divergence,
    log_mgf,
    max_kl,
    reward_and_kl,
    reward_kl_frontier,
    tilted_policy,
    win_rate,
)

__all__ = [
    "RewardKL",
    "best_of_n_kl",
    "best_of_n_kl_bound",
    "best_of_n_limit_per_token",
    "best_of_n_policy",
    "best_of_n_sequence",
    "best_of_n_win_rate",
    "bon_vs_kl_rl_per_token",
    "expected_reward",
    "kl_constrained_policy",
    "kl_divergence",
    "kl_rl_reward_per_token",
    "legendre_transform",
    "log_mgf",
    "max_kl",
    "rate_function",
    "reward_and_kl",
    "reward_cdf",
    "reward_kl_frontier",
    "scaled_cumulant",
    "sequence_reward_law",
    "tilted_mean",
    "tilted_policy",
    "win_rate",
]
