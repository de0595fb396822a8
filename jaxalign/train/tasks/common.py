"""What several tasks build the same way: the tokenizer, the policy (pretrained or fresh)
with its optimizer and train-state shardings, the preference datasets and loaders."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.data import (
    build_preference_loader,
    build_unpaired_loader,
    make_tiny_preference_dataset,
    make_tiny_unpaired_dataset,
)
from jaxalign.data.config import DataConfig
from jaxalign.models import (
    CausalLM,
    ModelConfig,
    build_tiny_tokenizer,
    from_pretrained,
    load_tokenizer,
)
from jaxalign.models.lora import (
    LoRAConfig,
    LoRAParam,
    adapted,
    format_report,
    merge_adapters,
    parameter_report,
    save_adapter,
    with_dropout,
)
from jaxalign.models.sharding import axis_rules, state_shardings
from jaxalign.parallel import data_shard_info, shard_batch
from jaxalign.train.optim import make_optimizer
from jaxalign.train.state import (
    Shardings,
    TrainState,
    abstract_model,
    init_train_state,
    train_shardings,
)
from jaxalign.train.tasks.base import RunContext, Task, sharded_init


def load_run_tokenizer(ctx: RunContext):
    """``init.tokenizer`` (a local HF directory) or the tiny BPE tokenizer built in the run
    directory (one copy per process)."""
    config = ctx.config
    if config.init.tokenizer:
        return load_tokenizer(config.init.tokenizer)
    directory = ctx.out / f"tokenizer-p{jax.process_index()}"
    build_tiny_tokenizer(directory, vocab_size=config.init.tiny_tokenizer_vocab_size)
    # The fast-tokenizer class directly: AutoTokenizer would import torch (seconds).
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)


def runtime_overrides(model: ModelConfig) -> dict[str, Any]:
    """The "how to compute" fields of ``model`` that a pretrained checkpoint does not fix."""
    return {
        "remat": model.remat,
        "attention": model.attention,
        "logprob_chunk_size": model.logprob_chunk_size,
        "scan_unroll": model.scan_unroll,
    }


def load_policy(ctx: RunContext) -> tuple[ModelConfig, nnx.State | None]:
    """``(model config, pretrained parameters or None)``: ``init.pretrained`` placed straight
    into its shardings (its architecture from the checkpoint, how to compute from
    ``model``), else None and the ``model`` section."""
    config, m = ctx.config, ctx.config.model
    if not config.init.pretrained:
        return m, None
    loaded = from_pretrained(
        config.init.pretrained,
        dtype=m.dtype,
        param_dtype=m.param_dtype,
        mesh=ctx.mesh,
        rules=ctx.rule_pairs,
        config_overrides=runtime_overrides(m),
    )
    return loaded.config, nnx.split(loaded)[1]


@dataclasses.dataclass
class Policy:
    """A trainable policy's pieces: graph, optimizer, shardings, pretrained start.

    With LoRA (``lora`` set): ``graphdef`` is the adapted model's graph, ``base_graphdef``
    the plain model's; the train state's ``params`` are the adapters alone and
    ``shardings.reference`` those of the frozen base weights (:meth:`init_lora`).
    """

    config: ModelConfig
    graphdef: nnx.GraphDef
    tx: Any
    lr_schedule: Any
    shardings: Shardings
    pretrained: nnx.State | None
    lora: LoRAConfig | None = None
    base_graphdef: nnx.GraphDef | None = None
    #: LoRA: trainable fraction and optimizer bytes, with and without adapters
    #: (:func:`~jaxalign.models.lora.parameter_report`).
    report: dict[str, float] | None = None

    @property
    def reference_graphdef(self) -> nnx.GraphDef:
        """The graph π_ref runs with: the plain model (adapters off under LoRA)."""
        return self.graphdef if self.base_graphdef is None else self.base_graphdef

    def init_state(self, key: jax.Array, rules) -> Any:
        """The sharded :class:`~jaxalign.train.state.TrainState` (random or pretrained)."""
        return init_train_state(
            self.config, self.tx, self.shardings, key=key, rules=rules, params=self.pretrained
        )

    def init_lora(self, key: jax.Array, rules) -> tuple[TrainState, nnx.State]:
        """``(state over the adapters, frozen base weights)``, both sharded at birth.

        The base is the one a full fine-tune would start from (the same init key, or
        ``init.pretrained``), cast to ``lora.base_dtype``; the adapters are drawn from
        ``fold_in(init key, 1)`` with B = 0, so the initial policy is the base exactly.
        """
        init_key, step_key = jax.random.split(key)
        base_graphdef, lora, tx = self.base_graphdef, self.lora, self.tx

        def init(k, pretrained):
            if pretrained is None:
                model = CausalLM(self.config, rngs=nnx.Rngs(params=k))
            else:
                model = nnx.merge(base_graphdef, pretrained)
            model = adapted(model, lora, key=jax.random.fold_in(k, 1))
            _, adapters, base = nnx.split(model, LoRAParam, ...)
            state = TrainState(
                step=jnp.zeros((), jnp.int32),
                params=adapters,
                opt_state=tx.init(adapters),
                rng=jax.random.key_data(step_key),
            )
            return state, base

        mesh = self.shardings.replicated.mesh
        out = (self.shardings.state, self.shardings.reference)
        with jax.set_mesh(mesh), axis_rules(rules):
            return jax.jit(init, out_shardings=out)(init_key, self.pretrained)

    def copy_params(self, params: nnx.State) -> nnx.State:
        """A separate copy (e.g. the frozen reference), so donating the state keeps it."""
        copy = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=self.shardings.reference)
        return copy(params)


def build_policy(ctx: RunContext, total_steps: int) -> Policy:
    """The policy of ``ctx.config`` with AdamW (``optimizer``/``schedule``) and shardings;
    with ``lora`` the optimizer and train state cover the adapters only."""
    config = ctx.config
    model_config, pretrained = load_policy(ctx)
    graphdef, abstract = abstract_model(model_config, ctx.rule_pairs)
    tx, lr_schedule = make_optimizer(config.optimizer, config.schedule, total_steps)
    lora = getattr(config, "lora", None)
    if lora is None:
        shardings = train_shardings(abstract, tx, ctx.mesh, ctx.rule_pairs)
        return Policy(model_config, graphdef, tx, lr_schedule, shardings, pretrained)
    lora_graphdef, adapters, base = abstract_lora_model(model_config, lora, ctx.rule_pairs)
    shardings = train_shardings(adapters, tx, ctx.mesh, ctx.rule_pairs)
    shardings = shardings._replace(reference=state_shardings(base, ctx.mesh, ctx.rule_pairs))
    report = parameter_report(adapters, base, abstract, tx)
    return Policy(
        model_config, lora_graphdef, tx, lr_schedule, shardings, pretrained, lora, graphdef,
        report,
    )  # fmt: skip


def head_filter(heads: tuple[str, ...]):
    """The variables a LoRA run of a model with new heads trains: the adapters and every
    parameter under the top-level ``heads`` (e.g. a reward model's ``score``)."""
    return nnx.Any(LoRAParam, *(nnx.PathContains(h) for h in heads))


def _adapt_trunk(model, lora: LoRAConfig, heads: tuple[str, ...], key: jax.Array):
    """``model`` adapted, its ``heads`` kept in ``model.config.param_dtype`` (they are new,
    hence fully trained; only the trunk's base takes ``lora.base_dtype``)."""
    model = adapted(model, lora, key=key)
    for name in heads:
        head = getattr(model, name, None)
        for _, node in nnx.iter_graph(head) if head is not None else ():
            if isinstance(node, nnx.Param):
                node.set_value(node.get_value().astype(model.config.param_dtype))
    return model


def adapted_with_heads(model, lora: LoRAConfig, heads: tuple[str, ...], *, key: jax.Array):
    """``(trainable, frozen)`` of ``model`` with adapters on its trunk: the adapters and the
    ``heads`` train, the rest is the frozen base (in ``lora.base_dtype``)."""
    _, trainable, frozen = nnx.split(_adapt_trunk(model, lora, heads, key), head_filter(heads), ...)
    return trainable, frozen


def heldout_pair_metrics(
    task, eval_fn, params, shard: tuple[int, int], *, to_batch=lambda b: b
) -> dict[str, float]:
    """``eval_loss`` and ``eval_accuracy`` of a reward / preference model on its held-out
    preference file: ``eval_fn(params, frozen, batch) -> (loss sum, correct, pairs)`` summed
    over this process's ``shard = (index, count)`` of ``task.eval_dataset``; ``to_batch`` maps
    a loader batch to the model's batch before sharding."""
    shard, count = shard
    loader = build_preference_loader(task.eval_data, task.tokenizer, process_index=shard,
                                     process_count=count, dataset=task.eval_dataset)  # fmt: skip
    loss = correct = pairs = 0.0
    for batch in loader:
        batch = shard_batch(to_batch(batch), task.ctx.mesh, task.ctx.rules,
                            logical_axes=("batch",))  # fmt: skip
        sums = jax.device_get(eval_fn(params, task.frozen, batch))
        loss, correct = loss + float(sums[0]), correct + float(sums[1])
        pairs += float(sums[2])
    return {"eval_loss": loss / max(pairs, 1.0), "eval_accuracy": correct / max(pairs, 1.0)}


def init_head_model(parts, build: Callable[[jax.Array], Any], heads: tuple[str, ...], key):
    """``(state, frozen)`` of a scalar- or pairwise-head model (reward / preference model).

    ``parts`` carries ``tx``, ``lora``, ``base_graphdef``, ``shardings`` and ``pretrained``
    (the task's build result); ``build(k)`` makes a fresh model from key ``k`` when nothing is
    pretrained. Without LoRA ``frozen`` is None and the state holds every parameter; with LoRA
    the trunk gets adapters drawn from ``fold_in(init key, 1)`` (B = 0, so the model starts
    exactly at the base) and the state holds the adapters and the ``heads``.
    """
    init_key, step_key = jax.random.split(key)
    tx, lora = parts.tx, parts.lora

    def make(k, params):
        if params is None:
            params = nnx.split(build(k))[1]
        frozen = None
        if lora is not None:
            model = nnx.merge(parts.base_graphdef, params)
            adapter_key = jax.random.fold_in(init_key, 1)
            params, frozen = adapted_with_heads(model, lora, heads, key=adapter_key)
        state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params),
                           jax.random.key_data(step_key))  # fmt: skip
        return state, frozen

    shardings = parts.shardings
    out = (shardings.state, None if lora is None else shardings.reference)
    if parts.pretrained is None:
        return sharded_init(lambda k: make(k, None), out, init_key)
    # Under LoRA the checkpoint is already placed (from_pretrained) and split in make.
    params = parts.pretrained
    if lora is None:
        params = jax.device_put(params, shardings.reference)
    return sharded_init(lambda p: make(None, p), out, params)


def abstract_lora_with_heads(
    build, lora: LoRAConfig, heads: tuple[str, ...], rules
) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """``(graphdef, abstract trainable, abstract frozen)`` of ``build()`` adapted, heads
    trainable (:func:`adapted_with_heads`)."""
    key = jax.random.key(0)
    with axis_rules(rules):
        model = nnx.eval_shape(lambda: _adapt_trunk(build(), lora, heads, key))
    return nnx.split(model, head_filter(heads), ...)


def policy_model(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    frozen: nnx.State | None = None,
    *,
    dropout: float = 0.0,
    key: jax.Array | None = None,
):
    """The trained model: ``params`` alone, or under LoRA the adapters ``params`` on the
    frozen base weights ``frozen`` (``graphdef`` the adapted graph); with ``dropout`` > 0 and
    a ``key`` its adapters drop their inputs (:func:`~jaxalign.models.lora.with_dropout`:
    training forwards only)."""
    model = nnx.merge(graphdef, params) if frozen is None else nnx.merge(graphdef, params, frozen)
    return with_dropout(model, dropout, key=key)


#: ``fold_in`` index of the adapter-dropout key in a step's key (apart from its other draws).
DROPOUT_STREAM = 0x4C6F5241


def lora_dropout(config) -> float:
    """``lora.dropout`` of a train config (0 without LoRA)."""
    return 0.0 if config.lora is None else float(config.lora.dropout)


def dropout_key(config, key: jax.Array) -> jax.Array | None:
    """The adapter-dropout key of one step (``fold_in(step key, DROPOUT_STREAM)``), or None
    when the run has no LoRA dropout (then the step is bitwise the dropout-free one)."""
    return jax.random.fold_in(key, DROPOUT_STREAM) if lora_dropout(config) > 0 else None


def micro_key(key: jax.Array | None, index) -> jax.Array | None:
    """Micro-batch / inner step ``index``'s dropout key (None stays None)."""
    return None if key is None else jax.random.fold_in(key, index)


def lora_describe(report: dict[str, float] | None) -> list[str]:
    """The run-log line of a LoRA parameter report (none without LoRA)."""
    return [] if report is None else [format_report(report)]


def lora_summary(report: dict[str, float] | None) -> dict[str, Any]:
    """``{"lora": report}`` for ``summary.json`` (empty without LoRA)."""
    return {} if report is None else {"lora": report}


def export_model(
    ctx: RunContext,
    graphdef: nnx.GraphDef,
    params: nnx.State,
    frozen: nnx.State | None,
    lora: LoRAConfig | None,
    directory: Path,
    *,
    tokenizer=None,
    adapter_task_type: str = "CAUSAL_LM",
) -> Path:
    """The trained model as an HF checkpoint in ``directory`` (with ``tokenizer``).

    Under LoRA (``lora`` set, ``params`` the adapters on ``frozen``) the checkpoint holds
    the merged kernels ``W + (α/r)·A B`` and ``directory.parent / "adapter"`` the adapters
    alone in the PEFT format (``adapter_task_type``: PEFT's ``task_type``).
    """
    from jaxalign.models import save_pretrained

    if lora is None:
        path = save_pretrained(nnx.merge(graphdef, params), directory)
    else:
        model = policy_model(graphdef, params, frozen)
        save_adapter(
            model,
            lora,
            directory.parent / "adapter",
            base_model_name_or_path=ctx.config.init.pretrained,
            task_type=adapter_task_type,
        )
        path = save_pretrained(merge_adapters(model), directory)
    if tokenizer is not None and ctx.is_main:
        tokenizer.save_pretrained(str(path))
    return path


def abstract_lora_model(
    config: ModelConfig, lora: LoRAConfig, rules
) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """``(graphdef, abstract adapters, abstract base weights)`` of the adapted model."""
    key = jax.random.key(0)
    build = lambda: adapted(CausalLM(config, rngs=nnx.Rngs(params=key)), lora, key=key)
    with axis_rules(rules):
        model = nnx.eval_shape(build)
    return nnx.split(model, LoRAParam, ...)


def preference_data_configs(
    ctx: RunContext, num_objectives: int, *, unpaired: bool = False
) -> list[DataConfig]:
    """One data config per objective: ``data.paths`` (K datasets), ``data.path``, or the
    tiny synthetic datasets written into the run directory (``tiny_data``; ``unpaired``:
    labelled single answers for KTO, ``tiny-unpaired-p<pid>.jsonl``)."""
    config = ctx.config
    data, tiny = config.data, config.tiny_data
    if data.paths:
        return [dataclasses.replace(data, path=p, paths=()) for p in data.paths]
    if data.path:
        return [data]
    pid = jax.process_index()
    if unpaired:
        path = make_tiny_unpaired_dataset(
            ctx.out / "data" / f"tiny-unpaired-p{pid}.jsonl",
            tiny.num_rows,
            tiny.seed,
            num_words=tiny.num_words,
            rule=tiny.objectives[0],
        )
        return [dataclasses.replace(data, path=str(path))]
    configs = []
    for k, rule in enumerate(tiny.objectives[:num_objectives]):
        # The single-objective file keeps its historical name (tiny-p<pid>.jsonl).
        name = f"tiny-{k}-{rule}-p{pid}.jsonl" if num_objectives > 1 else f"tiny-p{pid}.jsonl"
        path = make_tiny_preference_dataset(
            ctx.out / "data" / name, tiny.num_rows, tiny.seed, num_words=tiny.num_words, rule=rule
        )
        configs.append(dataclasses.replace(data, path=str(path)))
    return configs


def preference_loaders(
    ctx: RunContext, tokenizer, data_configs, batch_sharding, *, unpaired: bool = False
) -> list:
    """One resumable loader per data config; each process loads its slice of every global
    batch; packed rows per micro-batch are a multiple of this process's batch shards
    (``unpaired``: :class:`~jaxalign.data.UnpairedLoader` s of KTO rows)."""
    config = ctx.config
    size = data_configs[0].batch_size
    shard, count = data_shard_info(size, ctx.mesh, ctx.rules)
    if unpaired:
        return [
            build_unpaired_loader(
                dc,
                tokenizer,
                process_index=shard,
                process_count=count,
                micro_batches=config.optimizer.grad_accum_steps,
            )
            for dc in data_configs
        ]
    axes = batch_sharding.spec[0] if len(batch_sharding.spec) else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
    batch_shards = int(np.prod([ctx.mesh.shape[a] for a in axes]))
    return [
        build_preference_loader(
            dc,
            tokenizer,
            process_index=shard,
            process_count=count,
            micro_batches=config.optimizer.grad_accum_steps,
            row_multiple=max(1, batch_shards // count),
        )
        for dc in data_configs
    ]


def check_vocab(tokenizer, model_config: ModelConfig) -> None:
    if len(tokenizer) > model_config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but model.vocab_size="
            f"{model_config.vocab_size}; raise model.vocab_size"
        )


def loss_summary(history: list[dict[str, Any]], *keys: str) -> dict[str, Any]:
    """First/last loss and the last values of ``keys``, medians of throughput."""
    if not history:
        return {}
    out: dict[str, Any] = {"first_loss": history[0]["loss"], "last_loss": history[-1]["loss"]}
    for key in keys:
        if key in history[-1]:
            out[f"last_{key}"] = history[-1][key]
    for key in ("tokens_per_s", "mfu"):
        values = [r[key] for r in history if key in r]
        if values:
            out[f"median_{key}"] = float(np.median(values))
    return out


class PreferenceTask(Task):
    """What the tasks on preference datasets share: the tokenizer, the trainable policy
    (AdamW state sharded like it), the frozen reference π_ref = π_0 (none when
    ``reference=False``: the reference-free losses never build it), one resumable loader
    per dataset (``unpaired``: KTO rows), and the HF export of the final policy."""

    reports_flops = True

    def __init__(
        self,
        ctx: RunContext,
        num_objectives: int,
        *,
        unpaired: bool = False,
        reference: bool = True,
    ):
        config = self.config = ctx.config
        self.ctx = ctx
        self.tokenizer = load_run_tokenizer(ctx)
        self.policy = build_policy(ctx, config.run.steps)
        check_vocab(self.tokenizer, self.policy.config)
        self.model_config = self.policy.config
        sh = self.policy.shardings
        self.uses_reference = reference
        self.state_shardings = sh.state
        self.lora = self.policy.lora
        # Under LoRA the frozen base is always needed (it is the policy's own weights too).
        self.frozen_shardings = sh.reference if reference or self.lora else None
        self.data_configs = preference_data_configs(ctx, num_objectives, unpaired=unpaired)
        self.loaders = preference_loaders(
            ctx, self.tokenizer, self.data_configs, sh.batch, unpaired=unpaired
        )

    def init(self, key: jax.Array):
        if self.lora is not None:
            # π_ref = the base with adapters off: the frozen base is the only copy.
            state, self.frozen = self.policy.init_lora(key, self.ctx.rule_pairs)
            return state
        state = self.policy.init_state(key, self.ctx.rule_pairs)
        # π_ref = the initial policy; the reference-free losses keep no copy at all.
        self.frozen = self.policy.copy_params(state.params) if self.uses_reference else None
        return state

    def export(self, state, directory: Path) -> Path:
        """The final policy as an HF checkpoint in ``directory``, with the run's tokenizer
        (so the next stage of a pipeline, or ``jaxalign eval``, can load it by path);
        LoRA: merged weights there, the PEFT adapter in ``<out>/adapter/``."""
        frozen = self.frozen if self.lora is not None else None
        return export_model(
            self.ctx, self.policy.graphdef, state.params, frozen, self.lora, directory,
            tokenizer=self.tokenizer,
        )  # fmt: skip

    def lora_lines(self) -> list[str]:
        return lora_describe(self.policy.report)


def save_policy(graphdef, params, directory: Path) -> Path:
    """The policy as an HF checkpoint that transformers loads."""
    from jaxalign.models import save_pretrained

    return save_pretrained(nnx.merge(graphdef, params), directory)


__all__ = [
    "Policy",
    "PreferenceTask",
    "abstract_lora_model",
    "abstract_lora_with_heads",
    "adapted_with_heads",
    "build_policy",
    "check_vocab",
    "dropout_key",
    "export_model",
    "head_filter",
    "heldout_pair_metrics",
    "init_head_model",
    "load_policy",
    "load_run_tokenizer",
    "lora_describe",
    "lora_dropout",
    "lora_summary",
    "loss_summary",
    "micro_key",
    "policy_model",
    "preference_data_configs",
    "preference_loaders",
    "runtime_overrides",
    "save_policy",
]
