"""Tiny model configurations shared by the model, data and training tests.

One layer, two heads of width 16, hidden size 32: a forward pass, a few generation steps or
a training step compile and run in seconds on CPU.
"""

from __future__ import annotations

from jaxalign.models import ModelConfig

_SHAPE = dict(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, head_dim=16)


def tiny_model_config(
    vocab_size: int = 3, *, num_kv_heads: int = 1, initializer_range: float = 0.5, **changes
) -> ModelConfig:
    """The tiny shape over ``vocab_size`` tokens (the 3-letter testbed by default).

    The large ``initializer_range`` makes a random model's next-token distributions far from
    uniform, so sampling and log-probability tests see distinct probabilities.
    """
    fields = dict(_SHAPE, num_kv_heads=num_kv_heads, initializer_range=initializer_range)
    return ModelConfig(vocab_size=vocab_size, **{**fields, **changes})


def tiny_hf_model_config() -> ModelConfig:
    """The tiny shape over the 384 tokens of ``build_tiny_tokenizer``, with the default
    initialisation: the checkpoint the HF-template runs load."""
    return ModelConfig(vocab_size=384, num_kv_heads=2, **_SHAPE)


# A tiny model and batch so a compile + a few steps take seconds on CPU.
TINY_TRAIN = [
    "model.vocab_size=384",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.num_kv_heads=2",
    "model.head_dim=16",
    "data.batch_size=8",
    "data.max_length=24",
    "data.max_prompt_length=16",
    "tiny_data.num_rows=64",
    "optimizer.lr=3e-3",
    "schedule.warmup_steps=2",
    "schedule.decay_steps=20",  # independent of run.steps: one compiled step for all tests
    "logging.progress_bar=false",
    "logging.peak_flops=1e9",
    "checkpoint.async_save=false",
    "mesh.data=1",
    "mesh.fsdp=1",
    "mesh.tensor=1",
]


def tiny_overrides(out_dir, *extra: str) -> list[str]:
    """:data:`TINY_TRAIN` plus ``run.out_dir`` and ``extra`` overrides."""
    return [*TINY_TRAIN, f"run.out_dir={out_dir}", *extra]


def tiny_config(out_dir, *extra: str):
    """A tiny :class:`jaxalign.train.TrainConfig` writing to ``out_dir``."""
    from jaxalign.train import load_train_config

    return load_train_config(None, tiny_overrides(out_dir, *extra))


# One tiny configuration per task kind of the engine (the engine-guarantee tests run them all).
_TESTBED_MODEL = [
    "model.vocab_size=3",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.num_kv_heads=2",
    "model.head_dim=16",
    "model.initializer_range=0.5",
    "testbed.alphabet_size=3",
    "testbed.response_length=2",
    "testbed.seed=1",
    "logging.progress_bar=false",
    "checkpoint.async_save=false",
    "run.save_model=false",
    "mesh.data=1",
    "mesh.fsdp=1",
    "mesh.tensor=1",
]
TASK_OVERRIDES = {
    "offline": [*TINY_TRAIN, "run.save_model=false"],
    "multiobjective": [*TINY_TRAIN, "run.save_model=false", "algorithm.name=multiobjective_dpo"],
    "nash": [
        *_TESTBED_MODEL,
        "algorithm.name=inpo",
        "algorithm.step_size=2.0",
        "algorithm.tau=0.05",
        "oracle.sample=true",
        "online.batch_size=16",
        "online.inner_steps=3",
        "online.learning_rate=0.03",
    ],
    "sft": [*TINY_TRAIN, "run.save_model=false", "algorithm.name=sft", "logging.kl_ref=false"],
    "reward_model": [
        *TINY_TRAIN,
        "run.save_model=false",
        "algorithm.name=reward_model",
        "logging.kl_ref=false",
    ],
    "preference_model": [
        *TINY_TRAIN,
        "run.save_model=false",
        "algorithm.name=preference_model",
        "logging.kl_ref=false",
    ],
    "policy_gradient": [
        *_TESTBED_MODEL,
        "algorithm.name=kl_pg",
        "algorithm.group_size=2",
        "online.batch_size=4",
        "online.learning_rate=0.01",
        "online.adam_eps=1e-8",
        "testbed.reward_scale=1.0",
    ],
}


def task_config(kind: str, out_dir, *extra: str):
    """A tiny :class:`jaxalign.train.TrainConfig` of task ``kind`` writing to ``out_dir``."""
    from jaxalign.train import load_train_config

    return load_train_config(None, [*TASK_OVERRIDES[kind], f"run.out_dir={out_dir}", *extra])
