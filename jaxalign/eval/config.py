"""The typed config of ``jaxalign eval`` (YAML ← dotted ``key=value`` overrides).

Every section is a frozen dataclass with a comment per field; unknown keys, wrong types
and bad values raise :class:`~jaxalign.config.ConfigError` naming the key. The testbed
and model sections are the training config's own, so a training config's values carry over.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from jaxalign import config as _config
from jaxalign.config import ConfigError
from jaxalign.models import ModelConfig
from jaxalign.train.config import TestbedConfig


def _bad(key: str, value: Any, expected: str):
    raise ConfigError(f"{key}: got {value!r}; expected {expected}")


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """Where a policy (or the reference) comes from."""

    # local HF *ForCausalLM directory (e.g. <run dir>/model of `jaxalign train`);
    # "" = a fresh init of the `model` section
    path: str = ""
    # path "": the init key; the same draw as π_0 of `jaxalign train` with run.seed = init_seed
    init_seed: int = 0


@dataclasses.dataclass(frozen=True)
class EvalPromptsConfig:
    """Prompts on text (ignored on the testbed, whose prompt is fixed)."""

    path: str = ""  # JSONL/Parquet file or directory of prompts (a preference file works)
    num_prompts: int = 0  # evaluate the first N prompts; 0 = all
    max_prompt_length: int = 256  # prompts keep their last tokens, left-padded to this
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    skip_malformed: bool = False  # true: skip and count malformed rows instead of stopping
    use_chat_template: bool = True  # render chat prompts with the tokenizer's template

    def __post_init__(self):
        if self.num_prompts < 0:
            _bad("prompts.num_prompts", self.num_prompts, "an integer >= 0 (0 = all)")
        if self.max_prompt_length < 1:
            _bad("prompts.max_prompt_length", self.max_prompt_length, "a positive integer")


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """Who compares a policy response with a reference response."""

    # testbed: the testbed's preference game (and its additive reward);
    # reward_model: Bradley–Terry on a learned reward model (also gives the mean reward);
    # preference_model: a general (possibly non-transitive) learned preference model
    kind: Literal["testbed", "reward_model", "preference_model"] = "testbed"
    path: str = ""  # local HF directory of the reward / preference model
    temperature: float = 1.0  # T > 0 of P(a ≻ b) = σ(score / T) (learned judges)

    def __post_init__(self):
        if not self.temperature > 0:
            _bad("judge.temperature", self.temperature, "> 0")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How responses are drawn (policy and reference alike, seeded by ``seed``)."""

    samples_per_prompt: int = 4  # N responses per prompt from each of policy and reference
    batch_size: int = 256  # rows (prompt × sample) per jitted call; the last batch is padded
    # KL estimates are of the temperature-1, untruncated policy: they assume these defaults
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64  # response length cap (ignored on the testbed: L)

    def __post_init__(self):
        for name in ("samples_per_prompt", "batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                _bad(f"sampling.{name}", getattr(self, name), "a positive integer")
        if not self.temperature > 0:
            _bad("sampling.temperature", self.temperature, "> 0")
        if not 0 < self.top_p <= 1:
            _bad("sampling.top_p", self.top_p, "a number in (0, 1]")


def _default_model() -> ModelConfig:
    return ModelConfig(vocab_size=3, hidden_size=32, intermediate_size=64, num_layers=1,
                       num_heads=2, num_kv_heads=2, head_dim=16)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """``jaxalign eval``: a policy against a reference, on the testbed or on text prompts."""

    policy: CheckpointSource = dataclasses.field(default_factory=CheckpointSource)
    reference: CheckpointSource = dataclasses.field(default_factory=CheckpointSource)
    model: ModelConfig = dataclasses.field(default_factory=_default_model)  # fresh inits
    tokenizer: str = ""  # text prompts: local HF tokenizer directory; "" = policy.path's
    testbed: TestbedConfig = dataclasses.field(default_factory=TestbedConfig)
    prompts: EvalPromptsConfig = dataclasses.field(default_factory=EvalPromptsConfig)
    judge: JudgeConfig = dataclasses.field(default_factory=JudgeConfig)
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    seed: int = 0  # sampling key (policy and reference draw from split keys)
    out_dir: str = "eval/testbed"  # where eval.json and eval.png go
    overwrite: bool = False  # replace an existing eval.json / eval.png in out_dir

    def __post_init__(self):
        if self.testbed.enabled:
            if self.judge.kind != "testbed":
                _bad("judge.kind", self.judge.kind, "'testbed' with testbed.enabled=true")
            for side in ("policy", "reference"):
                if not getattr(self, side).path and self.model.vocab_size != (
                    self.testbed.alphabet_size
                ):
                    want = f"testbed.alphabet_size={self.testbed.alphabet_size} on the testbed"
                    _bad("model.vocab_size", self.model.vocab_size, want)
        else:
            if self.judge.kind == "testbed":
                _bad("judge.kind", "testbed", "reward_model or preference_model on text "
                     "prompts (or set testbed.enabled=true)")  # fmt: skip
            if not self.prompts.path:
                _bad("prompts.path", "", "a prompt file on text (or set testbed.enabled=true)")
            if not self.policy.path:
                _bad("policy.path", "", "a checkpoint directory on text prompts")
            if not self.reference.path:
                _bad("reference.path", "", "a checkpoint directory on text prompts")
        if self.judge.kind != "testbed" and not self.judge.path:
            _bad(
                "judge.path", "", f"the {self.judge.kind} directory (judge.kind={self.judge.kind})"
            )
        for key, path, want_dir in (
            ("policy.path", self.policy.path, True),
            ("reference.path", self.reference.path, True),
            ("judge.path", self.judge.path if self.judge.kind != "testbed" else "", True),
            ("tokenizer", self.tokenizer, True),
            ("prompts.path", "" if self.testbed.enabled else self.prompts.path, False),
        ):
            if path and not Path(path).exists():
                raise ConfigError(f"{key}: {path!r} does not exist")
            if path and want_dir and not Path(path).is_dir():
                raise ConfigError(f"{key}: {path!r} is not a directory (expected a checkpoint "
                                  "directory with config.json)")  # fmt: skip


def load_eval_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> EvalConfig:
    """The :class:`EvalConfig` of a YAML file (optional) with dotted overrides applied."""
    return _config.load(EvalConfig, path, overrides)


__all__ = [
    "CheckpointSource",
    "EvalConfig",
    "EvalPromptsConfig",
    "JudgeConfig",
    "SamplingConfig",
    "load_eval_config",
]
