"""Typed configuration of a training run (YAML under ``configs/train/`` + dotted overrides).

Example::

    cfg = load_train_config("configs/train/dpo_tiny.yaml", ["optimizer.lr=1e-5"])

Every section is a frozen dataclass with a comment per field; unknown keys,
wrong types and invalid values raise one :class:`jaxalign.config.ConfigError`
naming the key, the value and (for unknown keys) the nearest valid key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from jaxalign.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from jaxalign.data import DataConfig
from jaxalign.data.synthetic import TINY_RULES
from jaxalign.games import algorithms as games_algorithms
from jaxalign.models import ModelConfig
from jaxalign.models.lora import LoRAConfig
from jaxalign.parallel import DistributedConfig, MeshConfig


def _bad(key: str, value: Any, expected: str):
    raise ValueError(f"{key}={value!r} is invalid; expected {expected}")


@dataclasses.dataclass(frozen=True)
class InitConfig:
    """Where the policy (and reference) weights and the tokenizer come from."""

    pretrained: str = ""  # local HF model directory; "" = random init from `model`
    tokenizer: str = ""  # local HF tokenizer directory; "" = build the tiny BPE one
    tiny_tokenizer_vocab_size: int = 384  # vocabulary of the tiny tokenizer (≤ model.vocab_size)


@dataclasses.dataclass(frozen=True)
class TrainDataConfig(DataConfig):
    """:class:`jaxalign.data.DataConfig` plus ``paths``, one dataset per objective.

    The single-objective losses (``dpo``, ``ipo``, ``robust_dpo``, ``rpo``, ``simpo``,
    ``orpo``; ``kto`` with unpaired rows) read ``path``; ``multiobjective_dpo`` reads
    ``paths`` (K ≥ 2 datasets, objective k's preferences in ``paths[k]``), every other
    field applying to each of them alike (one batch of ``batch_size`` pairs per
    objective per step). Both empty: the tiny generator writes the data (``tiny_data``).
    """

    paths: tuple[str, ...] = ()  # multiobjective_dpo: one dataset (file/directory) per objective
    # sft / reward_model: held-out rows (the format of `path`) scored every
    # logging.eval_every steps (sft: eval_loss; reward_model: eval_accuracy); "" = none, or
    # with tiny data a held-out tiny file of tiny_data.eval_rows rows
    eval_path: str = ""
    # Compute log π_ref of every response once, before training (cached in the run
    # directory), instead of a reference forward pass in every step (frozen reference).
    precompute_reference: bool = False

    def __post_init__(self):
        super().__post_init__()
        paths = tuple(self.paths)
        if any(not isinstance(p, str) or not p for p in paths):
            raise ValueError(f"paths must be non-empty strings, got {list(paths)}")
        if paths and self.path:
            raise ValueError(
                f"give path={self.path!r} (one dataset: dpo / ipo / robust_dpo) or "
                f"paths={list(paths)} (one per objective: multiobjective_dpo), not both"
            )
        object.__setattr__(self, "paths", paths)


@dataclasses.dataclass(frozen=True)
class TinyDataConfig:
    """The synthetic sorting-preference dataset(s) used when ``data.path`` (and ``data.paths``)
    are empty."""

    num_rows: int = 512  # rows generated into <run dir>/data/ (per dataset)
    seed: int = 0  # the rows are a function of this seed
    num_words: int = 4  # words per prompt (2 … 16)
    # The chosen order of each generated dataset: sorted (alphabetical) or reversed. The
    # single-objective losses use the first; multiobjective_dpo one dataset per entry (the
    # same prompts and random rejected orders, labelled by conflicting rules).
    objectives: tuple[str, ...] = ("sorted", "reversed")
    # sft / reward_model: held-out rows drawn with another seed (0 = no eval split)
    eval_rows: int = 128

    def __post_init__(self):
        if self.num_rows < 1:
            _bad("num_rows", self.num_rows, "a positive integer")
        if self.eval_rows < 0:
            _bad("eval_rows", self.eval_rows, "an integer >= 0")
        if not 2 <= self.num_words <= 16:
            _bad("num_words", self.num_words, "an integer in [2, 16]")
        objectives = tuple(self.objectives)
        if not objectives or any(rule not in TINY_RULES for rule in objectives):
            _bad("objectives", list(objectives), f"a non-empty list of rules from {TINY_RULES}")
        object.__setattr__(self, "objectives", objectives)


@dataclasses.dataclass(frozen=True)
class ShardingConfig:
    """Logical-axis → mesh-axis rules, on top of ``jaxalign.parallel.DEFAULT_RULES``."""

    # e.g. {embed: null} to replicate parameters' embed dimension (no FSDP of weights)
    rules: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with global-norm clipping and gradient accumulation."""

    name: Literal["adamw"] = "adamw"  # optax.adamw
    lr: float = 1e-4  # peak learning rate (the schedule's maximum)
    b1: float = 0.9  # Adam first-moment decay
    b2: float = 0.999  # Adam second-moment decay
    eps: float = 1e-8  # Adam denominator epsilon
    weight_decay: float = 0.0  # decoupled weight decay (AdamW)
    clip_norm: float | None = 1.0  # clip the global gradient norm to this; null = no clipping
    grad_accum_steps: int = 1  # micro-batches per step (the global batch is split)

    def __post_init__(self):
        if not self.lr > 0:
            _bad("lr", self.lr, "> 0")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            _bad("b1/b2", (self.b1, self.b2), "values in [0, 1)")
        if not self.eps > 0:
            _bad("eps", self.eps, "> 0")
        if self.weight_decay < 0:
            _bad("weight_decay", self.weight_decay, ">= 0")
        if self.clip_norm is not None and not self.clip_norm > 0:
            _bad("clip_norm", self.clip_norm, "> 0 or null")
        if self.grad_accum_steps < 1:
            _bad("grad_accum_steps", self.grad_accum_steps, "a positive integer")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule: linear warmup to ``optimizer.lr``, then decay."""

    kind: Literal["constant", "cosine", "linear"] = "cosine"  # decay after warmup
    warmup_steps: int = 0  # linear warmup from 0 to the peak
    decay_steps: int | None = None  # steps of decay after warmup; null = run.steps − warmup
    end_lr_ratio: float = 0.1  # final lr / peak lr (cosine and linear)

    def __post_init__(self):
        if self.warmup_steps < 0:
            _bad("warmup_steps", self.warmup_steps, ">= 0")
        if self.decay_steps is not None and self.decay_steps < 1:
            _bad("decay_steps", self.decay_steps, "a positive integer or null")
        if not 0 <= self.end_lr_ratio <= 1:
            _bad("end_lr_ratio", self.end_lr_ratio, "a number in [0, 1]")


#: Every ``algorithm.name`` of ``jaxalign train``, by the task that runs it.
OFFLINE_ALGORITHMS = ("dpo", "ipo", "robust_dpo", "rpo", "simpo", "orpo", "kto")  # data
TESTBED_OFFLINE_ALGORITHMS = ("dpo", "ipo", "robust_dpo")  # also on the testbed
REFERENCE_FREE_ALGORITHMS = ("simpo", "orpo")  # no reference model at all
UNPAIRED_ALGORITHMS = ("kto",)  # unpaired rows: prompt, completion, label
MULTIOBJECTIVE_ALGORITHMS = ("multiobjective_dpo",)  # K preference datasets
NASH_ALGORITHMS = games_algorithms.NASH_ALGORITHMS  # online
POLICY_GRADIENT_ALGORITHMS = ("kl_pg",)  # online, against a reward
SFT_ALGORITHMS = ("sft",)  # supervised fine-tuning on prompt/completion or chat rows
REWARD_MODEL_ALGORITHMS = ("reward_model",)  # Bradley–Terry reward model on preference pairs
# general (antisymmetric, possibly cyclic) pairwise preference model on labelled pairs
PREFERENCE_MODEL_ALGORITHMS = ("preference_model",)
ALGORITHMS = (
    *OFFLINE_ALGORITHMS,
    *MULTIOBJECTIVE_ALGORITHMS,
    *NASH_ALGORITHMS,
    *POLICY_GRADIENT_ALGORITHMS,
    *SFT_ALGORITHMS,
    *REWARD_MODEL_ALGORITHMS,
    *PREFERENCE_MODEL_ALGORITHMS,
)

# The hyperparameters each algorithm reads; the others must keep their defaults.
_ALGORITHM_FIELDS = {
    "dpo": ("beta", "label_smoothing"),
    "ipo": ("tau",),
    "robust_dpo": ("beta", "flip_rate"),
    "rpo": ("beta", "nll_weight"),
    "simpo": ("beta", "gamma"),
    "orpo": ("odds_ratio_weight",),
    "kto": ("beta", "desirable_weight", "undesirable_weight"),
    "multiobjective_dpo": ("beta", "label_smoothing", "aggregator", "weights", "radius"),
    "inpo": ("step_size", "tau"),
    "onpo": ("step_size",),
    "online_ipo": ("tau",),
    "mnpo": ("step_size", "tau", "num_players", "opponent_weights"),
    "egpo": ("step_size", "tau"),
    "nash_md": ("step_size", "tau", "mixture"),
    "sppo": ("step_size",),
    "kl_pg": (
        *("beta", "group_size", "baseline", "estimator", "kl_mode", "normalise"),
        *("ppo_epochs", "clip_low", "clip_high", "ratio_level", "loss_aggregation"),  # clipped
    ),
    "sft": (),
    "reward_model": ("margin", "center_weight"),
    "preference_model": ("rank",),
}

# Within multiobjective_dpo: the fields each aggregator reads (the keys are
# jaxalign.train.multiobjective.AGGREGATORS, the `aggregator` Literal below).
_AGGREGATOR_FIELDS = {
    "weighted_sum": ("weights",),
    "mgda": (),
    "cagrad": ("radius",),
    "raco": ("weights", "radius"),
}

# τ when a config leaves it unset: IPO's log-ratio target 1/(2τ) needs τ > 0.
_TAU_DEFAULTS = {"ipo": 0.1, "online_ipo": 0.1}


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
    """The training objective: an offline loss on preference pairs, multi-objective DPO, an
    online Nash algorithm or KL-regularised policy gradient.

    With ``h = (log π_w − log π_ref,w) − (log π_l − log π_ref,l)`` the anchored log-ratio:

    * ``dpo`` (Rafailov et al. 2023): ``(1−ε)·softplus(−βh) + ε·softplus(βh)``, ε =
      ``label_smoothing`` (conservative DPO: the expected loss under label flips);
    * ``ipo`` (Azar et al. 2023): ``(h − 1/(2τ))²``;
    * ``robust_dpo`` (Chowdhury et al. 2024): ``[(1−ε)·softplus(−βh) − ε·softplus(βh)]/(1−2ε)``,
      ε = ``flip_rate``: unbiased for the clean DPO loss under labels flipped at rate ε;
    * ``rpo`` (Pang et al. 2024): DPO's ``softplus(−βh)`` plus ``α·(−log π_w/|y_w|)``, α =
      ``nll_weight`` (the chosen responses' mean token NLL);
    * ``simpo`` (Meng et al. 2024), reference-free: ``softplus(−(β ā_w − β ā_l − γ))``,
      ``ā = log π(y)/|y|`` the mean token log-prob, γ = ``gamma`` the target reward margin;
    * ``orpo`` (Hong et al. 2024), reference-free: ``−ā_w + λ·softplus(−(log odds(y_w) −
      log odds(y_l)))``, ``log odds = ā − log(1 − e^ā)``, λ = ``odds_ratio_weight``;
    * ``kto`` (Ethayarajh et al. 2024) on unpaired rows (``prompt``, ``completion``,
      ``label``): ``λ_D σ(−β(r − z₀))`` for desirable and ``λ_U σ(β(r − z₀))`` for undesirable
      completions, ``r = log π − log π_ref``, z₀ the batch's mismatched-pair KL estimate
      (clamped at 0, detached); λ_D, λ_U = ``desirable_weight``, ``undesirable_weight``;
    * ``multiobjective_dpo`` (Zhou et al. 2024): one DPO loss ``L_k`` (β, ε as ``dpo``) per
      dataset of ``data.paths``; each step combines the K gradients with ``aggregator``:
      ``weighted_sum`` (``Σ_k w_k g_k``), ``mgda`` (min-norm point of the gradients' convex
      hull), ``cagrad`` (radius ``c`` around the mean gradient) or ``raco`` (radius ``c``
      around ``Σ_k w_k g_k``, clipped by ``w``);
    * ``inpo``, ``onpo``, ``online_ipo``, ``mnpo``, ``egpo``, ``nash_md``, ``sppo``: online Nash
      preference optimisation, one outer iteration per step (sample pairs from the
      algorithm's policy, label them with ``oracle``, fit the pairwise loss whose population
      minimiser is the tabular update with step size ``step_size`` and KL weight ``tau``);
      see :mod:`jaxalign.train.tasks.nash`;
    * ``kl_pg``: KL-regularised policy gradient, maximising ``E r − β KL(π‖π_ref)`` with a
      group baseline (``group_size`` responses per prompt); see
      :mod:`jaxalign.train.tasks.policy_gradient`;
    * ``sft``: supervised fine-tuning, the mean token NLL ``−Σ log π(y_t | x, y_<t) / Σ 1``
      over completion (assistant) tokens only, prompts masked; see
      :mod:`jaxalign.train.tasks.sft`;
    * ``reward_model``: a scalar head on the causal-LM trunk fitted to preference pairs
      with the Bradley–Terry loss ``−log σ(r_w − r_l − m) + λ·(r_w + r_l)²``, m =
      ``margin``, λ = ``center_weight``; see :mod:`jaxalign.train.tasks.reward_model`;
    * ``preference_model``: the antisymmetric pairwise head (scalar score + ``rank`` skew
      pairs) on the causal-LM trunk fitted to labelled pairs in both orders with the
      cross-entropy ``−y log P̂(a ≻ b) − (1 − y) log P̂(b ≻ a)``, on preference files or
      (``testbed.enabled``) on the testbed's exact preference; see
      :mod:`jaxalign.train.tasks.preference_model`.

    A field the chosen algorithm does not read must keep its default (a set ``tau`` with
    ``name: dpo`` is an error rather than silently ignored); within ``multiobjective_dpo``
    the same holds for ``weights`` (weighted_sum, raco) and ``radius`` (cagrad, raco).
    """

    name: Literal[
        "dpo", "ipo", "robust_dpo", "rpo", "simpo", "orpo", "kto", "multiobjective_dpo",
        "inpo", "onpo", "online_ipo", "mnpo", "egpo", "nash_md", "sppo", "kl_pg", "sft",
        "reward_model", "preference_model",
    ] = "dpo"  # fmt: skip
    # dpo, robust_dpo, rpo, simpo, kto, multiobjective_dpo: logistic scale β > 0 (SimPO's
    # paper uses 2 – 2.5); kl_pg: KL coefficient β ≥ 0
    beta: float = 0.1
    label_smoothing: float = 0.0  # dpo, multiobjective_dpo: ε ∈ [0, ½), conservative DPO
    # ipo / online_ipo: τ > 0 (log-ratio target 1/(2τ); default 0.1); inpo, mnpo, egpo,
    # nash_md: KL weight to π_ref, s·τ ≤ 1 (default 0)
    tau: float | None = None
    flip_rate: float = 0.0  # robust_dpo: assumed label-flip rate ε ∈ [0, ½)
    gamma: float = 0.0  # simpo: target reward margin γ ≥ 0 (the paper: γ/β ≈ 0.5)
    nll_weight: float = 1.0  # rpo: α ≥ 0, weight of the chosen responses' mean token NLL
    odds_ratio_weight: float = 0.1  # orpo: λ ≥ 0, weight of the odds-ratio term
    desirable_weight: float = 1.0  # kto: λ_D > 0
    undesirable_weight: float = 1.0  # kto: λ_U > 0
    # multiobjective_dpo: how the K per-objective gradients become one update direction
    aggregator: Literal["weighted_sum", "mgda", "cagrad", "raco"] = "weighted_sum"
    weights: tuple[float, ...] = ()  # multiobjective_dpo: user weights w on the simplex; () = 1/K
    radius: float = 0.5  # multiobjective_dpo cagrad / raco: radius c >= 0 (raco: c < 1)
    step_size: float = 1.0  # Nash algorithms: s, the update multiplies payoffs (π ∝ … e^{s·Pπ})
    num_players: int = 3  # mnpo: the last num_players − 1 iterates are the opponents
    opponent_weights: tuple[float, ...] | None = None  # mnpo: λ, newest first; null = uniform
    mixture: Literal["token", "sequence"] = "token"  # nash_md: opponent sampler
    group_size: int = 4  # kl_pg: responses per prompt (online.batch_size prompts per step)
    baseline: Literal["none", "leave_one_out", "group_mean"] = "leave_one_out"  # kl_pg
    estimator: Literal["k1", "k2", "k3"] = "k2"  # kl_pg: KL estimator of the loss term
    kl_mode: Literal["loss", "reward"] = "loss"  # kl_pg: KL as a loss term or reward penalty
    normalise: bool = False  # kl_pg: divide group-mean advantages by the group std (GRPO)
    # kl_pg, clipped surrogate (jaxalign.losses.clipped_pg; PPO/GRPO/DAPO/GSPO/Dr. GRPO):
    ppo_epochs: int = 1  # optimizer steps per sampled batch (1 and no clip = plain REINFORCE)
    clip_low: float | None = None  # ε_low ∈ (0, 1): ratios below 1 − ε_low clipped; null = none
    clip_high: float | None = None  # ε_high > 0 (DAPO: > ε_low): above 1 + ε_high clipped
    ratio_level: Literal["token", "sequence"] = "token"  # per-token (PPO) or GSPO's sequence
    # token_sum: Σ_it ℓ / B (Dr. GRPO, REINFORCE's); sequence_mean: mean_i (Σ_t ℓ / |y_i|)
    # (GRPO); token_mean: Σ_it ℓ / Σ|y_i| (DAPO)
    loss_aggregation: Literal["token_sum", "sequence_mean", "token_mean"] = "token_sum"
    margin: float = 0.0  # reward_model: m >= 0, the loss is −log σ(r_w − r_l − m)
    center_weight: float = 0.0  # reward_model: λ >= 0 of the centering term λ·(r_w + r_l)²
    # preference_model: k >= 0 skew pairs of the logit Σ_j (v_2j(a) v_2j+1(b) − v_2j+1(a) v_2j(b))
    # (k = 0: a Bradley–Terry model; k >= 1 can express cyclic preferences)
    rank: int = 2

    def __post_init__(self):
        if not self.beta >= 0 or (self.name != "kl_pg" and not self.beta > 0):
            _bad("beta", self.beta, "> 0 (kl_pg: >= 0)")
        if not 0 <= self.label_smoothing < 0.5:
            _bad("label_smoothing", self.label_smoothing, "a number in [0, 0.5)")
        if self.tau is not None and not self.tau >= 0:
            _bad("tau", self.tau, ">= 0")
        if self.name in ("ipo", "online_ipo") and not self.resolved_tau > 0:
            _bad("tau", self.tau, f"> 0 for {self.name} (its log-ratio target is 1/(2τ))")
        if not 0 <= self.flip_rate < 0.5:
            _bad("flip_rate", self.flip_rate, "a number in [0, 0.5)")
        for name in ("gamma", "nll_weight", "odds_ratio_weight", "margin", "center_weight"):
            if not getattr(self, name) >= 0:
                _bad(name, getattr(self, name), ">= 0")
        for name in ("desirable_weight", "undesirable_weight"):
            if not getattr(self, name) > 0:
                _bad(name, getattr(self, name), "> 0")
        weights = tuple(self.weights)
        object.__setattr__(self, "weights", weights)
        if any(w < 0 for w in weights) or (weights and abs(sum(weights) - 1) > 1e-6):
            _bad("weights", list(weights), "non-negative numbers summing to 1 (one per objective)")
        if not self.radius >= 0:
            _bad("radius", self.radius, ">= 0")
        if self.aggregator == "raco" and not self.radius < 1:
            _bad("radius", self.radius, "< 1 for aggregator=raco")
        if not self.step_size > 0:
            _bad("step_size", self.step_size, "> 0")
        if (
            self.name in ("inpo", "mnpo", "egpo", "nash_md")
            and self.step_size * self.resolved_tau > 1
        ):
            _bad("step_size * tau", self.step_size * self.resolved_tau,
                 "<= 1 (the anchor weight 1 − s·τ must be >= 0)")  # fmt: skip
        if self.num_players < 2:
            _bad("num_players", self.num_players, ">= 2")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0:
            _bad("rank", self.rank, "an integer >= 0")
        if self.opponent_weights is not None:
            w = tuple(self.opponent_weights)
            object.__setattr__(self, "opponent_weights", w)
            if len(w) != self.num_players - 1 or any(x < 0 for x in w) or abs(sum(w) - 1) > 1e-6:
                _bad("opponent_weights", list(w),
                     f"{self.num_players - 1} non-negative weights summing to 1")  # fmt: skip
        if self.group_size < 1 or (self.baseline != "none" and self.group_size < 2):
            _bad("group_size", self.group_size, ">= 2 with a baseline (>= 1 without)")
        if isinstance(self.ppo_epochs, bool) or not (
            isinstance(self.ppo_epochs, int) and self.ppo_epochs >= 1
        ):
            _bad("ppo_epochs", self.ppo_epochs, "an integer >= 1")
        if self.clip_low is not None and not 0 < self.clip_low < 1:
            _bad("clip_low", self.clip_low, "a number in (0, 1) or null (no lower clip)")
        if self.clip_high is not None and not self.clip_high > 0:
            _bad("clip_high", self.clip_high, "a number > 0 or null (no upper clip)")
        used = _ALGORITHM_FIELDS[self.name]
        for field in dataclasses.fields(self):
            if field.name == "name" or field.name in used:
                continue
            value = getattr(self, field.name)
            if value != _default(field):
                users = [n for n, keys in _ALGORITHM_FIELDS.items() if field.name in keys]
                raise ValueError(
                    f"{field.name}={value!r} is not used by name={self.name!r} (only by "
                    f"{' / '.join(users)}); remove it or leave it at its default "
                    f"{_default(field)!r}. {self.name} reads: {', '.join(used) or 'nothing'}"
                )
        if self.name == "multiobjective_dpo":
            reads = _AGGREGATOR_FIELDS[self.aggregator]
            for name in ("weights", "radius"):
                field = next(f for f in dataclasses.fields(self) if f.name == name)
                value = getattr(self, name)
                if name not in reads and value != _default(field):
                    users = [a for a, keys in _AGGREGATOR_FIELDS.items() if name in keys]
                    raise ValueError(
                        f"{name}={value!r} is not used by aggregator={self.aggregator!r} (only "
                        f"by {' / '.join(users)}); remove it or leave it at its default "
                        f"{_default(field)!r}"
                    )

    @property
    def resolved_tau(self) -> float:
        """τ, or the algorithm's default when unset (0.1 for IPO, 0 otherwise)."""
        return _TAU_DEFAULTS.get(self.name, 0.0) if self.tau is None else float(self.tau)

    def objective_weights(self, num_objectives: int) -> tuple[float, ...]:
        """The user weights ``w`` of ``multiobjective_dpo`` (uniform ``1/K`` when unset)."""
        if self.weights:
            return self.weights
        return (1.0 / num_objectives,) * num_objectives


@dataclasses.dataclass(frozen=True)
class OnlineLoopConfig:
    """Sampling and fitting of the online algorithms (Nash, kl_pg; dpo/ipo/robust_dpo on
    the testbed)."""

    batch_size: int = 64  # pairs per step (Nash: two responses per prompt; kl_pg: prompts)
    inner_steps: int = 20  # Nash: Adam steps per fit (ONPO and EGPO fit twice)
    learning_rate: float = 1e-2  # Adam learning rate of each fit (kl_pg: of the AdamW step)
    adam_eps: float = 1e-3  # Adam ε, well above float32 round-off of the log-ratios
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling mass (1 = off)
    max_new_tokens: int = 64  # response length cap (ignored on the testbed: L)
    # dpo / ipo / robust_dpo on the testbed: true = one fixed data set of batch_size pairs,
    # sampled from π_ref and labelled once (from run.seed), refitted every iteration (an
    # offline data set); false = fresh pairs from π_ref each iteration (unlimited data).
    fixed_pairs: bool = False

    def __post_init__(self):
        for name in ("batch_size", "inner_steps", "max_new_tokens"):
            if getattr(self, name) < 1:
                _bad(name, getattr(self, name), "a positive integer")
        for name in ("learning_rate", "adam_eps", "temperature"):
            if not getattr(self, name) > 0:
                _bad(name, getattr(self, name), "> 0")
        if not 0 < self.top_p <= 1:
            _bad("top_p", self.top_p, "a number in (0, 1]")


@dataclasses.dataclass(frozen=True)
class TestbedConfig:
    """The enumerable testbed and its synthetic preference (every response enumerated,
    every iterate scored exactly)."""

    __test__ = False  # not a pytest class

    # dpo / ipo / robust_dpo: train on pairs from π_ref on the testbed instead of text data
    # (the online algorithms use the testbed whenever prompts.path is empty)
    enabled: bool = False
    alphabet_size: int = 3  # A = the model's vocab_size
    response_length: int = 2  # L: A^L responses
    preference: Literal["cyclic", "bradley_terry", "annotators"] = "cyclic"
    strength: float = 2.0  # cyclic: rock-paper-scissors logit between styles
    reward_scale: float = 0.5  # std of the random additive (per-position) rewards
    num_annotators: int = 3  # annotators: BT annotators with different rewards
    seed: int = 0  # the preference is a function of this seed

    def __post_init__(self):
        if self.alphabet_size < 2:
            _bad("alphabet_size", self.alphabet_size, ">= 2")
        if self.response_length < 1:
            _bad("response_length", self.response_length, ">= 1")
        if self.num_annotators < 1:
            _bad("num_annotators", self.num_annotators, ">= 1")


@dataclasses.dataclass(frozen=True)
class PromptsConfig:
    """Prompts of the online algorithms on text (a preference file works: chosen/rejected
    are ignored)."""

    path: str = ""  # JSONL/Parquet file or directory; "" = the testbed (or tiny prompts)
    max_prompt_length: int = 256  # prompts keep their last tokens, left-padded to this
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    skip_malformed: bool = False  # true: skip and count malformed rows instead of stopping
    use_chat_template: bool = True  # render chat prompts with the tokenizer's template
    tiny: bool = False  # true (with path ""): the synthetic tiny prompts, tokenizer and model


@dataclasses.dataclass(frozen=True)
class OracleConfig:
    """Who labels the pairs (Nash algorithms) or rewards the responses (kl_pg)."""

    kind: Literal["testbed", "reward_model", "preference_model", "mixture"] = "testbed"
    path: str = ""  # local HF directory of the reward / preference model
    sample: bool = False  # true: Bernoulli 0/1 labels; false: soft P(a ≻ b)
    # mixture of annotators: one kind and path per annotator, and their weights
    kinds: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    weights: tuple[float, ...] | None = None
    # ε ∈ [0, ½): each label flipped independently with probability ε (a noisy annotator,
    # jaxalign.train.oracles.noisy_oracle); 0 = the oracle's own labels
    flip_rate: float = 0.0

    def __post_init__(self):
        if isinstance(self.flip_rate, bool) or not 0 <= self.flip_rate < 0.5:
            _bad("oracle.flip_rate", self.flip_rate, "a number in [0, 0.5)")


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Orbax checkpoints under ``<run dir>/checkpoints``."""

    enabled: bool = True  # write checkpoints at all
    every_steps: int = 100  # save every this many steps (and at the end)
    keep: int = 3  # keep the newest N checkpoints
    async_save: bool = True  # write in the background while training continues

    def __post_init__(self):
        if self.every_steps < 1:
            _bad("every_steps", self.every_steps, "a positive integer")
        if self.keep < 1:
            _bad("keep", self.keep, "a positive integer")


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    """Metrics to ``<run dir>/metrics.jsonl`` (one JSON object per logged step) and
    TensorBoard event files in ``<run dir>/tensorboard/``."""

    every_steps: int = 1  # log every this many steps
    tensorboard: bool = True  # also write TensorBoard scalars
    progress_bar: bool = True  # tqdm bar on process 0
    peak_flops: float | None = None  # device peak FLOP/s for MFU; null = measure a matmul
    # The kl_ref metric: exact KL(π‖π_ref) over the whole vocabulary along the data. Costs
    # a reference forward pass and a second pass over the vocabulary in every step.
    kl_ref: bool = True
    # Online algorithms on text prompts: the oracle's win rate of π_t against π_ref on
    # eval_prompts fresh prompts, every eval_every steps (the testbed scores every step).
    eval_every: int = 10
    eval_prompts: int = 64
    # Weights & Biases (the jaxalign[wandb] extra): log there too; mode "offline" (or
    # WANDB_MODE=offline) needs no network and writes <run dir>/wandb/ for a later sync.
    wandb: bool = False
    wandb_project: str = "jaxalign"
    wandb_mode: str | None = None

    def __post_init__(self):
        if self.every_steps < 1:
            _bad("every_steps", self.every_steps, "a positive integer")
        if self.eval_every < 1 or self.eval_prompts < 1:
            _bad("eval_every/eval_prompts", (self.eval_every, self.eval_prompts), "positive")
        if self.peak_flops is not None and not self.peak_flops > 0:
            _bad("peak_flops", self.peak_flops, "> 0 or null")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Length, seed and place of a run."""

    # steps in total (a resumed run continues to this); online algorithms: outer iterations
    steps: int = 100
    seed: int = 0  # model init and per-step RNG (step t uses fold_in(key, t))
    out_dir: str = "runs/dpo_tiny"  # run directory (config, metrics, checkpoints)
    resume: bool = False  # continue from the newest good checkpoint in out_dir
    overwrite: bool = False  # delete an existing out_dir first
    save_model: bool = True  # write the final policy to <out_dir>/model (HF format)

    def __post_init__(self):
        if self.steps < 1:
            _bad("steps", self.steps, "a positive integer")
        if not self.out_dir:
            _bad("out_dir", self.out_dir, "a directory path")
        if self.resume and self.overwrite:
            _bad("resume/overwrite", (self.resume, self.overwrite), "at most one of them true")


@dataclasses.dataclass(frozen=True)
class DebugConfig:
    """Fault injection, for testing the failure paths."""

    nan_at_step: int | None = None  # make the loss NaN at this step (1-based)
    sigkill_after_step: int | None = None  # SIGKILL this process after logging this step


def _default_model() -> ModelConfig:
    return ModelConfig()


#: Tasks (``TrainConfig.task_kind``) that train LoRA adapters (the ``lora`` section).
LORA_TASKS = (
    "offline",
    "multiobjective",
    "sft",
    "nash",
    "policy_gradient",
    "reward_model",
    "preference_model",
)
#: Tasks whose train step applies ``lora.dropout`` (> 0) to the adapters' input: every task
#: of :data:`LORA_TASKS` (the offline and multi-objective preference steps draw their masks in
#: the policy's forwards only, never the reference's).
LORA_DROPOUT_TASKS = ("offline", "multiobjective", "sft", "reward_model", "preference_model",
                      "nash", "policy_gradient")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A whole training run of any algorithm; see ``configs/train/*.yaml``.

    Which sections an algorithm reads: offline losses ``data`` / ``tiny_data`` (or, with
    ``testbed.enabled``, ``online`` + ``testbed`` + ``oracle``); ``multiobjective_dpo``
    ``data.paths`` / ``tiny_data``; ``sft`` and ``reward_model`` ``data`` (plus
    ``data.eval_path``) / ``tiny_data``; the Nash algorithms and ``kl_pg`` ``online``, ``oracle``
    and either ``testbed`` (``prompts.path`` empty) or ``prompts``. ``optimizer`` and
    ``schedule`` are the AdamW of the offline losses; the online fits use ``online``.
    """

    model: ModelConfig = dataclasses.field(default_factory=_default_model)
    init: InitConfig = dataclasses.field(default_factory=InitConfig)
    data: TrainDataConfig = dataclasses.field(default_factory=TrainDataConfig)
    tiny_data: TinyDataConfig = dataclasses.field(default_factory=TinyDataConfig)
    online: OnlineLoopConfig = dataclasses.field(default_factory=OnlineLoopConfig)
    testbed: TestbedConfig = dataclasses.field(default_factory=TestbedConfig)
    prompts: PromptsConfig = dataclasses.field(default_factory=PromptsConfig)
    oracle: OracleConfig = dataclasses.field(default_factory=OracleConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    sharding: ShardingConfig = dataclasses.field(default_factory=ShardingConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    algorithm: AlgorithmConfig = dataclasses.field(default_factory=AlgorithmConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    debug: DebugConfig = dataclasses.field(default_factory=DebugConfig)
    # Low-rank adapters (``lora.rank=N`` switches them on); None = train every weight.
    # Parsed in __post_init__ (a LoRAConfig | None) so its errors name the bad key.
    lora: Any = None

    @property
    def task_kind(self) -> str:
        """``offline``, ``multiobjective``, ``nash`` (incl. offline losses on the testbed),
        ``policy_gradient``, ``sft`` or ``reward_model``: which task of
        :mod:`jaxalign.train.tasks` runs this config."""
        name = self.algorithm.name
        if name in SFT_ALGORITHMS:
            return "sft"
        if name in REWARD_MODEL_ALGORITHMS:
            return "reward_model"
        if name in PREFERENCE_MODEL_ALGORITHMS:
            return "preference_model"
        if name in MULTIOBJECTIVE_ALGORITHMS:
            return "multiobjective"
        if name in POLICY_GRADIENT_ALGORITHMS:
            return "policy_gradient"
        if name in NASH_ALGORITHMS or self.testbed.enabled:
            return "nash"
        return "offline"

    @property
    def testbed_mode(self) -> bool:
        """Online algorithms: sampled on the enumerable testbed and scored exactly."""
        if self.task_kind not in ("nash", "policy_gradient"):
            return False
        return self.testbed.enabled or (not self.prompts.path and not self.prompts.tiny)

    def __post_init__(self):
        if self.run.resume and not self.checkpoint.enabled:
            raise ValueError("run.resume=true needs checkpoint.enabled=true")
        if self.lora is not None and not isinstance(self.lora, LoRAConfig):
            if not isinstance(self.lora, dict):
                _bad("lora", self.lora, "a mapping {rank, alpha, dropout, targets} or null")
            object.__setattr__(self, "lora", from_dict(LoRAConfig, self.lora, _where="lora"))
        kind = self.task_kind
        if self.lora is not None:
            self._check_lora()
        if kind in ("sft", "reward_model"):
            self._check_supervised_data()
        elif kind == "preference_model":
            self._check_preference_model()
        elif kind in ("offline", "multiobjective"):
            self._check_preference_data()
        else:
            self._check_online()
        if self.oracle.flip_rate and kind != "nash":
            raise ValueError(
                f"oracle.flip_rate={self.oracle.flip_rate} flips the oracle's pairwise labels, "
                f"which only the online Nash algorithms and the offline losses on the testbed "
                f"draw; algorithm.name={self.algorithm.name} (task {kind!r}) does not: set "
                "oracle.flip_rate=0"
            )
        if self.data.eval_path and kind not in ("sft", "reward_model", "preference_model"):
            raise ValueError(
                f"data.eval_path={self.data.eval_path!r} is only read by algorithm.name=sft / "
                f"reward_model / preference_model; {self.algorithm.name} has no held-out "
                "evaluation: remove it"
            )

    def _check_lora(self) -> None:
        """LoRA trains the tasks of :data:`LORA_TASKS`; dropout those of
        :data:`LORA_DROPOUT_TASKS` (today the same tasks: the dropout check only guards a
        task added to the first but not yet to the second)."""
        kind = self.task_kind
        if kind not in LORA_TASKS:
            raise ValueError(
                f"lora={{rank: {self.lora.rank}, ...}} is supported by the tasks "
                f"{', '.join(LORA_TASKS)}; algorithm.name={self.algorithm.name!r} (task "
                f"{kind!r}) cannot train adapters: remove the lora section"
            )
        if self.lora.dropout > 0 and kind not in LORA_DROPOUT_TASKS:
            supported = ", ".join(LORA_DROPOUT_TASKS) or "none"
            raise ValueError(
                f"lora.dropout={self.lora.dropout} is implemented for the tasks {supported}; "
                f"task {kind!r} (algorithm.name={self.algorithm.name!r}) does not draw "
                "adapter-dropout masks yet: expected lora.dropout=0"
            )

    def _check_supervised_data(self) -> None:
        """sft and reward_model: one dataset, no reference model, no testbed."""
        name, data = self.algorithm.name, self.data
        if self.testbed.enabled:
            _bad("testbed.enabled", True, f"false: {name} trains on text data")
        accum = self.optimizer.grad_accum_steps
        if data.batch_size % accum:
            raise ValueError(
                f"data.batch_size={data.batch_size} must be divisible by "
                f"optimizer.grad_accum_steps={accum}"
            )
        if self.logging.kl_ref:
            raise ValueError(
                f"logging.kl_ref=true needs a reference model, which {name} never builds; set "
                "logging.kl_ref=false"
            )
        if data.precompute_reference:
            _bad("data.precompute_reference", True, f"false: {name} has no reference model")
        if data.paths:
            _bad("data.paths", list(data.paths), f"[] ({name} reads one dataset: data.path)")
        if data.share_prompt:
            _bad("data.share_prompt", True, f"false: {name} rows have no pair of responses")
        if name in ("reward_model", "preference_model") and data.packing:
            _bad("data.packing", True, f"false for {name} (padded pairs, read at the "
                 "last real token as HF *ForSequenceClassification does)")  # fmt: skip

    def _check_preference_model(self) -> None:
        """preference_model: preference files (as reward_model), or with
        ``testbed.enabled`` pairs of testbed responses labelled by its exact preference."""
        if not self.testbed.enabled:
            if self.oracle.kind != "testbed" or self.oracle.sample:
                raise ValueError(
                    "oracle.kind / oracle.sample label testbed pairs (testbed.enabled=true); "
                    "preference_model on data.path reads its labels from the file: leave the "
                    "oracle section at its defaults"
                )
            self._check_supervised_data()
            return
        if self.init.pretrained:
            _bad("init.pretrained", self.init.pretrained, '"" with testbed.enabled=true')
        if self.model.vocab_size != self.testbed.alphabet_size:
            raise ValueError(
                f"model.vocab_size={self.model.vocab_size} must equal "
                f"testbed.alphabet_size={self.testbed.alphabet_size} with testbed.enabled=true"
            )
        for key, value in (("data.path", self.data.path), ("data.eval_path", self.data.eval_path)):
            if value:
                _bad(key, value, '"" with testbed.enabled=true (pairs come from the testbed)')
        if self.oracle.kind != "testbed":
            _bad("oracle.kind", self.oracle.kind,
                 "testbed (preference_model learns the exact testbed preference)")  # fmt: skip
        if self.logging.kl_ref:
            raise ValueError(
                "logging.kl_ref=true needs a reference model, which preference_model never "
                "builds; set logging.kl_ref=false"
            )
        accum = self.optimizer.grad_accum_steps
        if self.data.batch_size % accum:
            raise ValueError(
                f"data.batch_size={self.data.batch_size} must be divisible by "
                f"optimizer.grad_accum_steps={accum}"
            )

    def _check_preference_data(self) -> None:
        accum = self.optimizer.grad_accum_steps
        if self.data.batch_size % accum:
            raise ValueError(
                f"data.batch_size={self.data.batch_size} must be divisible by "
                f"optimizer.grad_accum_steps={accum}"
            )
        algo, data = self.algorithm, self.data
        if data.precompute_reference and self.logging.kl_ref:
            raise ValueError(
                "data.precompute_reference=true removes the reference forward pass from the "
                "step, but logging.kl_ref=true needs it; set logging.kl_ref=false"
            )
        if algo.name in REFERENCE_FREE_ALGORITHMS:
            if self.logging.kl_ref:
                raise ValueError(
                    f"logging.kl_ref=true needs the reference model, which {algo.name} (reference-"
                    "free) never builds; set logging.kl_ref=false"
                )
            if data.precompute_reference:
                raise ValueError(
                    f"data.precompute_reference=true: {algo.name} is reference-free, there are no "
                    "reference log-probs to precompute; set it to false"
                )
        if algo.name in UNPAIRED_ALGORITHMS and (data.packing or data.precompute_reference):
            raise ValueError(
                f"data.packing and data.precompute_reference are not supported for {algo.name} "
                "(unpaired rows, padded batches, reference computed in the step); set both false"
            )
        if algo.name == "multiobjective_dpo" and (data.packing or data.precompute_reference):
            raise ValueError(
                "data.packing and data.precompute_reference are for the single-objective losses "
                "(dpo, ipo, robust_dpo); multiobjective_dpo pads its K batches"
            )
        if algo.name != "multiobjective_dpo":
            if data.paths:
                raise ValueError(
                    f"data.paths={list(data.paths)} is only read by algorithm.name="
                    f"multiobjective_dpo (one dataset per objective); {algo.name} reads data.path"
                )
            return
        if data.path:
            raise ValueError(
                f"algorithm.name=multiobjective_dpo reads one dataset per objective from "
                f"data.paths (a list of K >= 2 paths), not data.path={data.path!r}"
            )
        k = self.num_objectives
        if k < 2:
            where = "data.paths" if data.paths else "tiny_data.objectives"
            raise ValueError(
                f"algorithm.name=multiobjective_dpo needs K >= 2 objectives, got {k} in "
                f"{where}; use algorithm.name=dpo for one dataset"
            )
        if algo.weights and len(algo.weights) != k:
            raise ValueError(
                f"algorithm.weights={list(algo.weights)} has {len(algo.weights)} entries but "
                f"there are K={k} objectives (data.paths, or tiny_data.objectives when empty)"
            )

    def _check_online(self) -> None:
        name = self.algorithm.name
        if name in OFFLINE_ALGORITHMS and name not in TESTBED_OFFLINE_ALGORITHMS:
            raise ValueError(
                f"testbed.enabled=true runs {' / '.join(TESTBED_OFFLINE_ALGORITHMS)} (and the "
                f"online algorithms) on the testbed; {name} trains on text data: set "
                f"testbed.enabled=false (configs/train/{name}_tiny.yaml)"
            )
        if self.testbed_mode:
            if self.init.pretrained:
                _bad("init.pretrained", self.init.pretrained, '"" in testbed mode')
            if self.model.vocab_size != self.testbed.alphabet_size:
                raise ValueError(
                    f"model.vocab_size={self.model.vocab_size} must equal "
                    f"testbed.alphabet_size={self.testbed.alphabet_size} in testbed mode"
                )
        elif self.oracle.kind == "testbed":
            raise ValueError(
                "oracle.kind=testbed labels testbed responses only: set prompts.path to '' "
                "(and prompts.tiny=false), or choose reward_model / preference_model / mixture"
            )
        if self.online.fixed_pairs and name not in TESTBED_OFFLINE_ALGORITHMS:
            raise ValueError(
                f"online.fixed_pairs=true fixes the data set of the offline losses on the "
                f"testbed ({' / '.join(TESTBED_OFFLINE_ALGORITHMS)}); {name} samples its own "
                f"pairs each iteration: set online.fixed_pairs=false"
            )
        if name in OFFLINE_ALGORITHMS and not self.testbed_mode:
            raise ValueError(
                f"{name} with testbed.enabled=true runs on the testbed only; for text data "
                f"leave testbed.enabled=false (configs/train/{name}_hf.yaml)"
            )
        if name == "nash_md" and self.algorithm.mixture == "sequence" and not self.testbed_mode:
            raise ValueError(
                "algorithm.mixture=sequence samples the exact sequence-level mixture, which "
                "needs the enumerable testbed; use mixture=token on text prompts"
            )
        if name == "kl_pg" and self.oracle.kind not in ("testbed", "reward_model"):
            raise ValueError(
                f"kl_pg needs a reward: oracle.kind=testbed (the testbed's additive reward) or "
                f"reward_model, got {self.oracle.kind!r}"
            )
        if self.oracle.kind in ("reward_model", "preference_model") and not self.oracle.path:
            _bad("oracle.path", "", f"a local {self.oracle.kind} directory")
        if self.oracle.kind == "mixture":
            o = self.oracle
            if not o.paths or len(o.kinds) != len(o.paths):
                raise ValueError(
                    "oracle.kind=mixture needs oracle.kinds and oracle.paths, one entry per "
                    f"annotator, got kinds={o.kinds} paths={o.paths}"
                )

    @property
    def num_objectives(self) -> int:
        """K: ``len(data.paths)``, else (tiny data) ``len(tiny_data.objectives)``;
        1 for the single-objective losses."""
        if self.algorithm.name != "multiobjective_dpo":
            return 1
        return len(self.data.paths) if self.data.paths else len(self.tiny_data.objectives)


def load_train_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file plus dotted ``key=value`` overrides.

    Raises:
        ConfigError: naming the key, the value and the nearest valid key.
    """
    data = load_yaml(path) if path is not None else {}
    return train_config_from_dict(apply_overrides(data, overrides))


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a plain mapping (e.g. a saved ``config.yaml``)."""
    try:
        return from_dict(TrainConfig, data)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # pragma: no cover - from_dict wraps these
        raise ConfigError(str(e)) from e


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain dict of ``config`` (YAML/JSON-serialisable; ``load`` gives it back)."""
    return to_dict(config)


def testbed_run_config(
    algorithm: dict[str, Any],
    *,
    alphabet_size: int,
    response_length: int,
    hidden_size: int = 32,
    num_layers: int = 1,
    num_kv_heads: int = 1,
    init_scale: float,
    steps: int,
    seed: int,
    out_dir: str | Path,
    online: dict[str, Any] | None = None,
    testbed: dict[str, Any] | None = None,
    oracle: dict[str, Any] | None = None,
    logging: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> TrainConfig:
    """The config of a light run of a tiny transformer over the enumerable testbed.

    For experiments and tests that train a small model whose every response the testbed
    enumerates: one device (``mesh`` 1×1×1, however many there are), no checkpoints,
    TensorBoard, progress bar or saved model. The model's vocabulary is the testbed alphabet;
    it has ``num_layers`` layers of width ``hidden_size`` (MLP ``2 * hidden_size``, two heads
    of ``hidden_size // 2``, ``num_kv_heads`` KV heads) and weight std ``init_scale``;
    ``run.seed = seed`` draws π_ref (the testbed's preference has its own
    ``testbed["seed"]``); the oracle is the testbed's own preference.

    Args:
      algorithm: the ``algorithm`` section (``name`` and its hyperparameters).
      alphabet_size, response_length: the testbed's A and L (A^L responses).
      hidden_size, num_layers, num_kv_heads, init_scale: the model.
      steps, seed, out_dir: the ``run`` section.
      online, testbed, oracle, logging: merged over the defaults of those sections.
      **sections: any other section (``run={"save_model": True}``, ``model={...}``,
        ``optimizer={...}``), merged over its defaults key by key.

    Returns:
      The :class:`TrainConfig` (validated as :func:`train_config_from_dict` validates).

    Example::

      config = testbed_run_config({"name": "inpo", "tau": 0.0}, alphabet_size=3,
                                  response_length=2, init_scale=0.5, steps=10, seed=0,
                                  out_dir="/tmp/run")
      assert config.task_kind == "nash"
    """
    h = hidden_size
    data: dict[str, dict[str, Any]] = {
        "algorithm": dict(algorithm),
        "online": dict(online or {}),
        "model": {
            "vocab_size": alphabet_size,
            "hidden_size": h,
            "intermediate_size": 2 * h,
            "num_layers": num_layers,
            "num_heads": 2,
            "num_kv_heads": num_kv_heads,
            "head_dim": h // 2,
            "initializer_range": init_scale,
        },
        "testbed": {
            "alphabet_size": alphabet_size,
            "response_length": response_length,
            **(testbed or {}),
        },
        "oracle": {"kind": "testbed", **(oracle or {})},
        "mesh": {"data": 1, "fsdp": 1, "tensor": 1},  # one device, however many there are
        "run": {"steps": steps, "seed": seed, "out_dir": str(out_dir), "save_model": False},
        "checkpoint": {"enabled": False},
        "logging": {"progress_bar": False, "tensorboard": False, **(logging or {})},
    }
    for name, section in sections.items():
        data[name] = {**data.get(name, {}), **section}
    return train_config_from_dict(data)


__all__ = [
    "ALGORITHMS",
    "MULTIOBJECTIVE_ALGORITHMS",
    "NASH_ALGORITHMS",
    "OFFLINE_ALGORITHMS",
    "POLICY_GRADIENT_ALGORITHMS",
    "PREFERENCE_MODEL_ALGORITHMS",
    "REFERENCE_FREE_ALGORITHMS",
    "REWARD_MODEL_ALGORITHMS",
    "SFT_ALGORITHMS",
    "TESTBED_OFFLINE_ALGORITHMS",
    "UNPAIRED_ALGORITHMS",
    "AlgorithmConfig",
    "CheckpointConfig",
    "DebugConfig",
    "InitConfig",
    "LoggingConfig",
    "OnlineLoopConfig",
    "OptimizerConfig",
    "OracleConfig",
    "PromptsConfig",
    "RunConfig",
    "ScheduleConfig",
    "ShardingConfig",
    "TestbedConfig",
    "TinyDataConfig",
    "TrainConfig",
    "TrainDataConfig",
    "config_to_dict",
    "load_train_config",
    "testbed_run_config",
    "train_config_from_dict",
]
