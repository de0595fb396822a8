"""Sharded training of preference-optimisation objectives (DPO for now).

* :class:`TrainConfig` / :func:`load_train_config` — typed run config from YAML
  (``configs/train/*.yaml``) plus dotted overrides.
* :func:`train` — the driver: shape-first sharded init, one jitted step with
  donation, gradient accumulation, AdamW with warmup + decay and clipping,
  JSONL metrics (loss, DPO margins/accuracy, norms, KL estimates, tokens/s,
  MFU), Orbax checkpoints with exact resume, SIGTERM/SIGINT checkpointing and
  NaN stops.
* :func:`dpo_train_step` — the pure step function; :class:`TrainState`,
  :func:`init_train_state`, :func:`train_shardings` — its state.
* :func:`multiobjective_dpo_step` — K DPO losses combined by a
  :mod:`jaxalign.multiobjective` aggregator inside one jitted step.
* :func:`online_train` — online Nash preference optimisation (INPO, ONPO, online IPO,
  MNPO) of a causal LM with a preference oracle, scored exactly on the enumerable
  testbed; :func:`tabular_baseline` runs the matching :mod:`jaxalign.games` solver.
"""

from jaxalign.train.checkpoint import Checkpointer, CheckpointError
from jaxalign.train.config import (
    AlgorithmConfig,
    CheckpointConfig,
    DebugConfig,
    InitConfig,
    LoggingConfig,
    OptimizerConfig,
    RunConfig,
    ScheduleConfig,
    ShardingConfig,
    TinyDataConfig,
    TrainConfig,
    config_to_dict,
    load_train_config,
    train_config_from_dict,
)
from jaxalign.train.loop import NonFiniteError, TrainResult, save_run_summary, train
from jaxalign.train.metrics import (
    dpo_step_flops,
    matmul_params,
    measure_matmul_peak,
    read_jsonl,
)
from jaxalign.train.multiobjective import (
    MultiObjectiveMetrics,
    PreferenceBatches,
    multiobjective_dpo_step,
)
from jaxalign.train.online import ALGORITHMS as ONLINE_ALGORITHMS
from jaxalign.train.online import (
    OnlineConfig,
    OnlineHistory,
    OnlineResult,
    Oracle,
    average_policy_gaps,
    online_train,
    tabular_baseline,
    tabular_solver,
    testbed_oracle,
)
from jaxalign.train.optim import make_optimizer, make_schedule
from jaxalign.train.state import (
    Shardings,
    TrainState,
    abstract_model,
    init_train_state,
    train_shardings,
)
from jaxalign.train.step import dpo_train_step

__all__ = [
    "ONLINE_ALGORITHMS",
    "AlgorithmConfig",
    "CheckpointConfig",
    "CheckpointError",
    "Checkpointer",
    "DebugConfig",
    "InitConfig",
    "LoggingConfig",
    "MultiObjectiveMetrics",
    "NonFiniteError",
    "OnlineConfig",
    "OnlineHistory",
    "OnlineResult",
    "OptimizerConfig",
    "Oracle",
    "PreferenceBatches",
    "RunConfig",
    "ScheduleConfig",
    "ShardingConfig",
    "Shardings",
    "TinyDataConfig",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "abstract_model",
    "average_policy_gaps",
    "config_to_dict",
    "dpo_step_flops",
    "dpo_train_step",
    "init_train_state",
    "load_train_config",
    "make_optimizer",
    "make_schedule",
    "matmul_params",
    "measure_matmul_peak",
    "multiobjective_dpo_step",
    "online_train",
    "read_jsonl",
    "save_run_summary",
    "tabular_baseline",
    "tabular_solver",
    "testbed_oracle",
    "train",
    "train_config_from_dict",
    "train_shardings",
]
