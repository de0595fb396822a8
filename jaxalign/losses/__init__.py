"""Preference-optimisation and KL-regularised RL losses on sequence log-probabilities.

* :func:`dpo_loss` / :func:`dpo_pair_loss` — DPO with label smoothing and reward
  diagnostics (the training engine's loss).
* :func:`pairwise_preference_loss` — the one pairwise loss (anchors, weights, target,
  distance) behind DPO, IPO, robust DPO, INPO, ONPO, MNPO, EGPO; SPPO's pointwise form;
  Nash-MD's token- and sequence-level mixtures (module :mod:`jaxalign.losses.pairwise`;
  :func:`dpo_loss` is its instance with the reference as anchor, logistic distance).
* :func:`kl_regularized_pg_loss` — REINFORCE with leave-one-out / group baselines and the
  k1/k2/k3 KL estimators; :func:`best_of_n_select`.
* :func:`clipped_pg_loss` — its clipped importance-ratio form for several epochs per batch
  (PPO/GRPO clip, DAPO's asymmetric bounds, GSPO's sequence ratio, Dr. GRPO aggregation).
* :func:`simpo_loss`, :func:`orpo_loss` (reference-free, length-normalised), :func:`rpo_loss`
  (DPO + NLL) and :func:`kto_loss` (unpaired data, batch KL reference point).
* :mod:`jaxalign.losses.label_noise` — DPO / cDPO / robust DPO under label flips: population
  minimisers, log-linear estimation; :mod:`jaxalign.losses.ranking` — ranking accuracy,
  idealized ranking accuracy, the DPO flip condition, γ-scaled DPO;
  :mod:`jaxalign.losses.entanglement` — gradient entanglement: ⟨∇log π_w, ∇log π_l⟩, the
  first-order changes of both log-probs, the normalised pairwise update.
"""

from jaxalign.losses import entanglement, label_noise, ranking
from jaxalign.losses.clipped_pg import ClippedPGOutput, batch_advantages, clipped_pg_loss
from jaxalign.losses.dpo import DPOOutput, dpo_loss, dpo_pair_loss
from jaxalign.losses.entanglement import (
    Entanglement,
    entanglement_metrics,
    gradient_entanglement,
    normalised_pairwise_loss,
)
from jaxalign.losses.kto import KTOOutput, kto_loss, kto_reference_point
from jaxalign.losses.label_noise import noisy_preference
from jaxalign.losses.orpo import ORPOOutput, log_odds, orpo_loss
from jaxalign.losses.pairwise import (
    Anchor,
    PairwiseOutput,
    RPOOutput,
    anchored_log_ratio,
    egpo_loss,
    egpo_step_loss,
    inpo_loss,
    ipo_loss,
    length_normalised_logp,
    mnpo_loss,
    nash_md_loss,
    online_ipo_loss,
    onpo_loss,
    pairwise_preference_loss,
    robust_dpo_loss,
    rpo_loss,
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
from jaxalign.losses.ranking import (
    gamma_scaled_dpo_loss,
    idealized_ranking_accuracy,
    ranking_accuracy,
)
from jaxalign.losses.simpo import simpo_loss

__all__ = [
    "Anchor",
    "ClippedPGOutput",
    "DPOOutput",
    "Entanglement",
    "KTOOutput",
    "ORPOOutput",
    "PairwiseOutput",
    "PolicyGradientOutput",
    "RPOOutput",
    "advantages",
    "anchored_log_ratio",
    "batch_advantages",
    "best_of_n_select",
    "clipped_pg_loss",
    "dpo_loss",
    "dpo_pair_loss",
    "egpo_loss",
    "egpo_step_loss",
    "entanglement",
    "entanglement_metrics",
    "gamma_scaled_dpo_loss",
    "gradient_entanglement",
    "idealized_ranking_accuracy",
    "inpo_loss",
    "ipo_loss",
    "kl_estimate",
    "kl_regularized_pg_loss",
    "kto_loss",
    "kto_reference_point",
    "label_noise",
    "length_normalised_logp",
    "log_odds",
    "mnpo_loss",
    "nash_md_loss",
    "noisy_preference",
    "normalised_pairwise_loss",
    "online_ipo_loss",
    "onpo_loss",
    "orpo_loss",
    "pairwise_preference_loss",
    "ranking",
    "ranking_accuracy",
    "robust_dpo_loss",
    "rpo_loss",
    "sequence_level_mixture",
    "simpo_loss",
    "sppo_loss",
    "token_level_mixture",
]
