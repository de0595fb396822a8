"""The training tasks the engine runs, one per kind of ``algorithm.name``.

* :class:`~jaxalign.train.tasks.offline.OfflinePairwiseTask` — DPO, IPO, robust DPO on
  preference data (padded or packed; reference log-probs in the step or precomputed);
* :class:`~jaxalign.train.tasks.multiobjective.MultiObjectiveTask` — K DPO losses combined by
  an aggregator;
* :class:`~jaxalign.train.tasks.nash.NashTask` — online Nash preference optimisation (INPO,
  ONPO, online IPO, MNPO, EGPO, Nash-MD), and the offline losses on the testbed;
* :class:`~jaxalign.train.tasks.policy_gradient.PolicyGradientTask` — KL-regularised
  policy gradient;
* :class:`~jaxalign.train.tasks.sft.SFTTask` — supervised fine-tuning (completion tokens);
* :class:`~jaxalign.train.tasks.reward_model.RewardModelTask` — a Bradley–Terry reward model
  (scalar head on the causal-LM trunk), exported as ``*ForSequenceClassification``;
* :class:`~jaxalign.train.tasks.preference_model.PreferenceModelTask` — a general
  (antisymmetric, possibly cyclic) pairwise preference model on labelled pairs, exported in
  the format ``oracle.kind: preference_model`` loads.
"""

from __future__ import annotations

from jaxalign.train.tasks.base import RunContext, Task, sharded_init

TASK_KINDS = ("offline", "multiobjective", "nash", "policy_gradient", "sft", "reward_model",
              "preference_model")  # fmt: skip


def make_task(ctx: RunContext) -> Task:
    """The task of ``ctx.config`` (by :attr:`TrainConfig.task_kind`)."""
    kind = ctx.config.task_kind
    if kind == "offline":
        from jaxalign.train.tasks.offline import OfflinePairwiseTask

        return OfflinePairwiseTask(ctx)
    if kind == "multiobjective":
        from jaxalign.train.tasks.multiobjective import MultiObjectiveTask

        return MultiObjectiveTask(ctx)
    if kind == "sft":
        from jaxalign.train.tasks.sft import SFTTask

        return SFTTask(ctx)
    if kind == "reward_model":
        from jaxalign.train.tasks.reward_model import RewardModelTask

        return RewardModelTask(ctx)
    if kind == "preference_model":
        from jaxalign.train.tasks.preference_model import PreferenceModelTask

        return PreferenceModelTask(ctx)
    if kind == "nash":
        from jaxalign.train.tasks.nash import NashTask

        return NashTask(ctx)
    from jaxalign.train.tasks.policy_gradient import PolicyGradientTask

    return PolicyGradientTask(ctx)


__all__ = ["TASK_KINDS", "RunContext", "Task", "make_task", "sharded_init"]
