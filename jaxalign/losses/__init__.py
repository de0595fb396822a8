"""Preference-optimisation and KL-regularised RL losses on sequence log-probabilities.

* :func:`dpo_loss` / :func:`dpo_pair_loss` — DPO with label smoothing and reward
  diagnostics (the training engine's loss).
* :func:`pairwise_preference_loss` — the one pairwise loss (anchors, weights, target,
  distance) behind DPO, IPO, robust DPO, INPO, ONPO, MNPO, EGPO; SPPO's pointwise form;
  Nash-MD's token- and sequence-level mixtures (module :mod:`jaxalign.losses.pairwise`,
  whose ``dpo_loss`` is the unified instance equal to :func:`dpo_loss`).
* :func:`kl_regularized_pg_loss` — REINFORCE with leave-one-out / group baselines and the
  k1/k2/k3 KL estimators; :func:`best_of_n_select`.
"""

from jaxalign.losses.dpo import DPOOutput, dpo_loss, dpo_pair_loss
from jaxalign.losses.pairwise import (
    Anchor,
    PairwiseOutput,
    anchored_log_ratio,
    egpo_loss,
    egpo_step_loss,
    inpo_loss,
    ipo_loss,
    mnpo_loss,
    nash_md_loss,
    online_ipo_loss,
    onpo_loss,
    pairwise_preference_loss,
    robust_dpo_loss,
    sequence_level_mixture,
    sppo_loss,
    token_level_mixture,
)
from jaxalign.losses.policy_gradient import (
    PolicyGradientOutput,
    advantages,
    best_of_n_select,
    kl_estimate,
    kl_regularized_pg_loss,
)

__all__ = [
    "Anchor",
    "DPOOutput",
    "PairwiseOutput",
    "PolicyGradientOutput",
    "advantages",
    "anchored_log_ratio",
    "best_of_n_select",
    "dpo_loss",
    "dpo_pair_loss",
    "egpo_loss",
    "egpo_step_loss",
    "inpo_loss",
    "ipo_loss",
    "kl_estimate",
    "kl_regularized_pg_loss",
    "mnpo_loss",
    "nash_md_loss",
    "online_ipo_loss",
    "onpo_loss",
    "pairwise_preference_loss",
    "robust_dpo_loss",
    "sequence_level_mixture",
    "sppo_loss",
    "token_level_mixture",
]
