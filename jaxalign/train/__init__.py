"""Sharded training of every alignment objective through one engine.

* :class:`TrainConfig` / :func:`load_train_config` — one typed run config for every
  algorithm (``configs/train/*.yaml`` plus dotted overrides).
* :func:`train` — runs a config through the engine (:mod:`jaxalign.train.engine`): run
  directory and lock, config snapshot, mesh, shape-first sharded init, one jitted step
  with donation, Orbax checkpoints with exact resume, SIGTERM/SIGINT checkpointing, NaN
  stops, JSONL/TensorBoard/W&B metrics and a summary; the task
  (:mod:`jaxalign.train.tasks`) says what a step computes:

  - offline pairwise losses (DPO, IPO, robust DPO) on preference data — padded or packed
    batches, reference log-probs in the step or precomputed
    (:func:`preference_train_step`);
  - multi-objective DPO (:func:`multiobjective_train_step`);
  - online Nash preference optimisation (INPO, ONPO, online IPO, MNPO, EGPO, Nash-MD) with
    a preference oracle (:mod:`jaxalign.train.oracles`), on prompts or scored exactly on
    the enumerable testbed (:class:`~jaxalign.train.tasks.nash.NashIteration`);
  - KL-regularised policy gradient (:class:`~jaxalign.train.tasks.policy_gradient.PGStep`).
"""

from jaxalign.train.checkpoint import (
    Checkpointer,
    CheckpointError,
    CheckpointMismatchError,
    check_checkpoint_model,
)
from jaxalign.train.config import (
    ALGORITHMS,
    MULTIOBJECTIVE_ALGORITHMS,
    NASH_ALGORITHMS,
    OFFLINE_ALGORITHMS,
    POLICY_GRADIENT_ALGORITHMS,
    AlgorithmConfig,
    CheckpointConfig,
    DebugConfig,
    InitConfig,
    LoggingConfig,
    OnlineLoopConfig,
    OptimizerConfig,
    OracleConfig,
    PromptsConfig,
    RunConfig,
    ScheduleConfig,
    ShardingConfig,
    TestbedConfig,
    TinyDataConfig,
    TrainConfig,
    TrainDataConfig,
    config_to_dict,
    load_train_config,
    testbed_run_config,
    train_config_from_dict,
)
from jaxalign.train.engine import NonFiniteError, RunLockedError, TrainResult, run
from jaxalign.train.metric_writer import MetricWriter, read_jsonl
from jaxalign.train.metrics import dpo_step_flops, matmul_params, measure_matmul_peak
from jaxalign.train.multiobjective import (
    PER_OBJECTIVE_METRICS,
    multiobjective_train_step,
)
from jaxalign.train.optim import make_optimizer, make_schedule
from jaxalign.train.oracles import (
    Oracle,
    Responses,
    annotator_mixture_oracle,
    bind_oracle,
    enumerated_game,
    load_oracle,
    noisy_oracle,
    oracle_params,
    preference_model_oracle,
    responses_from_generation,
    reward_model_oracle,
    testbed_oracle,
    testbed_responses,
)
from jaxalign.train.state import (
    Shardings,
    TrainState,
    abstract_model,
    init_train_state,
    train_shardings,
)
from jaxalign.train.step import (
    LOSSES,
    dpo_train_step,
    preference_gradient,
    preference_train_step,
    reference_sequence_logprobs,
    shard_preference_batch,
)
from jaxalign.train.tasks import TASK_KINDS, RunContext, Task, make_task


def train(config: TrainConfig, *, quiet: bool = False) -> TrainResult:
    """Runs (or resumes) ``config`` with its task (:func:`~jaxalign.train.tasks.make_task`)
    through the engine; see :func:`jaxalign.train.engine.run` for the guarantees."""
    return run(config, make_task, quiet=quiet)


__all__ = [
    "ALGORITHMS",
    "LOSSES",
    "MULTIOBJECTIVE_ALGORITHMS",
    "NASH_ALGORITHMS",
    "OFFLINE_ALGORITHMS",
    "PER_OBJECTIVE_METRICS",
    "POLICY_GRADIENT_ALGORITHMS",
    "TASK_KINDS",
    "AlgorithmConfig",
    "CheckpointConfig",
    "CheckpointError",
    "CheckpointMismatchError",
    "Checkpointer",
    "DebugConfig",
    "InitConfig",
    "LoggingConfig",
    "MetricWriter",
    "NonFiniteError",
    "OnlineLoopConfig",
    "OptimizerConfig",
    "Oracle",
    "OracleConfig",
    "PromptsConfig",
    "Responses",
    "RunConfig",
    "RunContext",
    "RunLockedError",
    "ScheduleConfig",
    "ShardingConfig",
    "Shardings",
    "Task",
    "TestbedConfig",
    "TinyDataConfig",
    "TrainConfig",
    "TrainDataConfig",
    "TrainResult",
    "TrainState",
    "abstract_model",
    "annotator_mixture_oracle",
    "bind_oracle",
    "check_checkpoint_model",
    "config_to_dict",
    "dpo_step_flops",
    "dpo_train_step",
    "enumerated_game",
    "init_train_state",
    "load_oracle",
    "load_train_config",
    "make_optimizer",
    "make_schedule",
    "make_task",
    "matmul_params",
    "measure_matmul_peak",
    "multiobjective_train_step",
    "noisy_oracle",
    "oracle_params",
    "preference_gradient",
    "preference_model_oracle",
    "preference_train_step",
    "read_jsonl",
    "reference_sequence_logprobs",
    "responses_from_generation",
    "reward_model_oracle",
    "run",
    "shard_preference_batch",
    "testbed_oracle",
    "testbed_responses",
    "testbed_run_config",
    "train",
    "train_config_from_dict",
    "train_shardings",
]
