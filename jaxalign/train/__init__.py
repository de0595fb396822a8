"""Sharded training of preference-optimisation objectives: offline (DPO, IPO, robust DPO)
and online (INPO, ONPO, online IPO, MNPO, Nash-MD, EGPO).

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
* :class:`OnlineTrainer` / :func:`online_train` — online Nash preference optimisation
  (INPO, ONPO, online IPO, MNPO, Nash-MD, EGPO) of a causal LM with a preference oracle
  (:mod:`jaxalign.train.oracles`), on real prompts or scored exactly on the enumerable
  testbed; :func:`tabular_baseline` runs the matching :mod:`jaxalign.games` solver.
* :class:`PolicyGradientTrainer` — KL-regularised policy gradient (RLOO / GRPO baselines,
  k1/k2/k3 KL) against a reward model, scored exactly against π_ref e^{r/β} on the testbed.
"""

from jaxalign.train.checkpoint import Checkpointer, CheckpointError
from jaxalign.train.config import (
    OFFLINE_ALGORITHMS,
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
    TrainDataConfig,
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
    PER_OBJECTIVE_METRICS,
    MultiObjectiveMetrics,
    PreferenceBatches,
    multiobjective_dpo_step,
    multiobjective_train_step,
)
from jaxalign.train.online import ALGORITHMS as ONLINE_ALGORITHMS
from jaxalign.train.online import (
    FixedPrompt,
    OnlineConfig,
    OnlineHistory,
    OnlineResult,
    OnlineTrainer,
    PolicySampler,
    PromptSource,
    TestbedTask,
    average_policy_gaps,
    online_train,
    tabular_baseline,
    tabular_solver,
)
from jaxalign.train.online_run import (
    OnlineTrainConfig,
    load_online_config,
    train_online,
)
from jaxalign.train.optim import make_optimizer, make_schedule
from jaxalign.train.oracles import (
    Oracle,
    Responses,
    annotator_mixture_oracle,
    enumerated_game,
    load_oracle,
    preference_model_oracle,
    responses_from_generation,
    reward_model_oracle,
    testbed_oracle,
    testbed_responses,
)
from jaxalign.train.policy_gradient import (
    KLScorer,
    PolicyGradientConfig,
    PolicyGradientTrainer,
    reward_model_fn,
    testbed_pg_trainer,
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
)

__all__ = [
    "LOSSES",
    "OFFLINE_ALGORITHMS",
    "ONLINE_ALGORITHMS",
    "PER_OBJECTIVE_METRICS",
    "AlgorithmConfig",
    "CheckpointConfig",
    "CheckpointError",
    "Checkpointer",
    "DebugConfig",
    "FixedPrompt",
    "InitConfig",
    "KLScorer",
    "LoggingConfig",
    "MultiObjectiveMetrics",
    "NonFiniteError",
    "OnlineConfig",
    "OnlineHistory",
    "OnlineResult",
    "OnlineTrainConfig",
    "OnlineTrainer",
    "OptimizerConfig",
    "Oracle",
    "PolicyGradientConfig",
    "PolicyGradientTrainer",
    "PolicySampler",
    "PreferenceBatches",
    "PromptSource",
    "Responses",
    "RunConfig",
    "ScheduleConfig",
    "ShardingConfig",
    "Shardings",
    "TestbedTask",
    "TinyDataConfig",
    "TrainConfig",
    "TrainDataConfig",
    "TrainResult",
    "TrainState",
    "abstract_model",
    "annotator_mixture_oracle",
    "average_policy_gaps",
    "config_to_dict",
    "dpo_step_flops",
    "dpo_train_step",
    "enumerated_game",
    "init_train_state",
    "load_online_config",
    "load_oracle",
    "load_train_config",
    "make_optimizer",
    "make_schedule",
    "matmul_params",
    "measure_matmul_peak",
    "multiobjective_dpo_step",
    "multiobjective_train_step",
    "online_train",
    "preference_gradient",
    "preference_model_oracle",
    "preference_train_step",
    "read_jsonl",
    "responses_from_generation",
    "reward_model_fn",
    "reward_model_oracle",
    "save_run_summary",
    "tabular_baseline",
    "tabular_solver",
    "testbed_oracle",
    "testbed_pg_trainer",
    "testbed_responses",
    "train",
    "train_config_from_dict",
    "train_online",
    "train_shardings",
]
