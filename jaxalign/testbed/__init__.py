"""The enumerable testbed: the bridge between the exact (tabular) theory and the LLM form.

A real transformer policy over a tiny vocabulary and a short response length, so its
exact distribution over *all* responses is computable and every LLM-form iterate can be
scored with the theory's exact quantities (duality gaps, KL, win rates, the population
minimiser of a loss, the tabular update it should track).

* :mod:`jaxalign.testbed.space` — the response space, exact policy log-probs, the
  synthetic preferences (Bradley–Terry, cyclic, annotator mixtures) and their evaluation.
"""

from jaxalign.testbed.space import (
    Evaluation,
    Testbed,
    additive_reward,
    annotator_mixture_preference,
    bradley_terry_preference,
    cyclic_preference,
    evaluate,
    policy_log_probs,
)

__all__ = [
    "Evaluation",
    "Testbed",
    "additive_reward",
    "annotator_mixture_preference",
    "bradley_terry_preference",
    "cyclic_preference",
    "evaluate",
    "policy_log_probs",
]
