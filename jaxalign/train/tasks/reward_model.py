"""Reward-model training (``algorithm.name: reward_model``): Bradley–Terry on preference pairs.

The model is a :class:`~jaxalign.models.RewardModel`: the causal-LM trunk (from
``init.pretrained``, a ``*ForCausalLM`` or ``*ForSequenceClassification`` checkpoint, or
random from ``model``) and a linear ``score`` head read at each sequence's last real token,
exactly as HF ``*ForSequenceClassification`` does. With ``r_w = r(x, y_w)`` and
``r_l = r(x, y_l)`` the rewards of the chosen and rejected response, the per-pair loss is

.. math::
    \\ell = -\\log \\sigma(r_w - r_l - m) + \\lambda \\, (r_w + r_l)^2,

the Bradley–Terry negative log-likelihood of the label (Bradley & Terry 1952; Ouyang et al.
2022), with an optional margin ``m = algorithm.margin`` ≥ 0 (the chosen reward must exceed
the rejected one by ``m``; Touvron et al. 2023 use per-pair margins from rating gaps) and an
optional centering regulariser ``λ = algorithm.center_weight`` ≥ 0 that pins the reward's
free additive constant (BT only identifies ``r`` up to a constant per prompt; Eisenstein et
al. 2023). The batch loss is the mean over real pairs; the step is one AdamW update on its
gradient (accumulated over ``grad_accum_steps`` micro-batches, as the DPO step).

Metrics: ``loss``, ``accuracy`` (share of pairs with ``r_w > r_l``), ``margin`` (mean
``r_w − r_l``), ``chosen_reward``, ``rejected_reward``, ``reward_mean`` (mean of
``(r_w + r_l)/2``, what the centering term pulls to 0), norms and ``lr``; every
``logging.eval_every`` steps (and at the end) ``eval_accuracy`` and ``eval_loss`` on the
held-out pairs (``data.eval_path``, or a held-out tiny file). The final model is written to
``<out>/model`` as an HF ``LlamaForSequenceClassification`` / ``Qwen2…`` / ``Qwen3…``
checkpoint (with the tokenizer), which ``transformers`` loads and which ``oracle.path`` of
the online algorithms accepts.

With LoRA (``lora``) the trunk gets adapters and the ``score`` head stays fully trainable (it
is new): the train state and AdamW state cover the adapters and the head, the trunk's base
weights are frozen (``lora.base_dtype``); the export merges the adapters into the
``*ForSequenceClassification`` checkpoint and writes ``<out>/adapter/`` in the PEFT format
(``task_type: SEQ_CLS``, the head as ``modules_to_save``).

References:
  Bradley, R. A. and Terry, M. E. (1952). Rank Analysis of Incomplete Block Designs.
  Ouyang, L. et al. (2022). Training language models to follow instructions with human
  feedback (arXiv:2203.02155).
  Eisenstein, J. et al. (2023). Helping or Herding? Reward Model Ensembles Mitigate but do
  not Eliminate Reward Hacking (arXiv:2312.09244) — the centering term.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxalign.data import (
    PreferenceBatch,
    format_data_stats,
    load_preference_dataset,
    make_tiny_preference_dataset,
    pad_token_id,
)
from jaxalign.models import (
    ModelConfig,
    RewardModel,
    axis_rules,
    reward_model_from_pretrained,
    state_shardings,
)
from jaxalign.models.lora import merge_adapters, parameter_report, save_adapter
from jaxalign.parallel import shard_batch
from jaxalign.train.metrics import dpo_step_flops
from jaxalign.train.optim import make_optimizer
from jaxalign.train.state import Shardings, TrainState, apply_gradients, train_shardings
from jaxalign.train.tasks import common
from jaxalign.train.tasks.base import RunContext, Task
from jaxalign.train.tasks.sft import (
    constrain_micro_batch,
    eval_every,
    heldout_config,
    row_multiple,
    split_micro_batches,
)


class BradleyTerryLoss(NamedTuple):
    """Per-pair outputs of :func:`bradley_terry_loss`, each ``(B,)``."""

    loss: jax.Array  # −log σ(r_w − r_l − m) + λ (r_w + r_l)²
    nll: jax.Array  # −log σ(r_w − r_l − m)
    centering: jax.Array  # (r_w + r_l)²


def bradley_terry_loss(
    chosen_reward: jax.Array,
    rejected_reward: jax.Array,
    *,
    margin: float = 0.0,
    center_weight: float = 0.0,
) -> BradleyTerryLoss:
    """Bradley–Terry loss of reward pairs with a margin and a centering term.

    .. math::
        \\ell = \\operatorname{softplus}(-(r_w - r_l - m)) + \\lambda (r_w + r_l)^2,

    ``softplus(−z) = −log σ(z)``, computed stably. The margin ``m ≥ 0`` asks the chosen
    reward to exceed the rejected one by ``m`` (``m = 0``: plain BT); ``λ ≥ 0`` keeps the
    rewards centred at 0 (BT is invariant to adding a constant to both).

    Args:
        chosen_reward, rejected_reward: ``r_w``, ``r_l``, shape ``(B,)``.
        margin: ``m ≥ 0``.
        center_weight: ``λ ≥ 0``.

    Example::

        bradley_terry_loss(jnp.array([1.0]), jnp.array([0.0])).loss  # softplus(−1) ≈ 0.313

    Raises:
        ValueError: a negative ``margin`` or ``center_weight``.
    """
    for name, value in (("margin", margin), ("center_weight", center_weight)):
        if isinstance(value, int | float) and not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    r_w, r_l = jnp.asarray(chosen_reward), jnp.asarray(rejected_reward)
    if r_w.shape != r_l.shape:
        raise ValueError(
            f"chosen_reward.shape={r_w.shape} must equal rejected_reward.shape={r_l.shape}"
        )
    nll = jax.nn.softplus(-(r_w - r_l - jnp.asarray(margin, r_w.dtype)))
    centering = jnp.square(r_w + r_l)
    return BradleyTerryLoss(nll + jnp.asarray(center_weight, r_w.dtype) * centering, nll, centering)


_SUMMED = ("loss", "accuracy", "margin", "chosen_reward", "rejected_reward", "reward_mean")


def _pair_sums(
    params, batch: PreferenceBatch, *, graphdef, margin, center_weight, frozen=None,
    dropout=0.0, key=None,
):  # fmt: skip
    """Summed (over real pairs) loss and metric sums of one (micro-)batch (LoRA: ``params``
    the adapters and head on the frozen trunk weights ``frozen``, adapter dropout
    ``dropout`` drawn from ``key``)."""
    model = common.policy_model(graphdef, params, frozen, dropout=dropout, key=key)
    ids = jnp.concatenate([batch.chosen_input_ids, batch.rejected_input_ids])
    attn = jnp.concatenate([batch.chosen_attention_mask, batch.rejected_attention_mask])
    r = model(ids, attention_mask=attn)[:, 0]  # one trunk pass for both sides
    b = batch.example_mask.shape[0]
    r_w, r_l = r[:b], r[b:]
    out = bradley_terry_loss(r_w, r_l, margin=margin, center_weight=center_weight)
    w = batch.example_mask
    detached = jax.lax.stop_gradient
    sums = {
        "loss": jnp.sum(w * out.loss),
        "accuracy": jnp.sum(w * (r_w > r_l).astype(w.dtype)),
        "margin": jnp.sum(w * detached(r_w - r_l)),
        "chosen_reward": jnp.sum(w * detached(r_w)),
        "rejected_reward": jnp.sum(w * detached(r_l)),
        "reward_mean": jnp.sum(w * detached(r_w + r_l)) * jnp.asarray(0.5, w.dtype),
    }
    return sums["loss"], sums


def reward_model_train_step(
    state: TrainState,
    batch: PreferenceBatch,
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    lr_schedule: optax.Schedule,
    margin: float = 0.0,
    center_weight: float = 0.0,
    grad_accum_steps: int = 1,
    batch_sharding: Any = None,
    frozen: nnx.State | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Bradley–Terry optimizer step of a reward model (pure; jit it with ``state`` donated).

    The gradient of the summed per-pair loss over real pairs (``example_mask``), accumulated
    over ``grad_accum_steps`` micro-batches (row ``i`` → micro-batch ``i mod k``), divided by
    the number of real pairs: the gradient of the batch mean. A non-finite loss or gradient
    keeps the old state.

    Args:
        state: :class:`~jaxalign.train.state.TrainState` of the reward model.
        batch: a global padded :class:`~jaxalign.data.PreferenceBatch`.
        graphdef: the :class:`~jaxalign.models.RewardModel` graph (static).
        tx, lr_schedule: the optimizer and its schedule (for the ``lr`` metric).
        margin, center_weight: ``m`` and ``λ`` of :func:`bradley_terry_loss`.
        grad_accum_steps: micro-batches ``k``.
        batch_sharding: sharding of a ``(batch, length)`` micro-batch array, or None.
        frozen: LoRA: the frozen trunk weights; ``state.params`` are then the adapters and
            the ``score`` head, ``graphdef`` the adapted graph.
        dropout, key: LoRA dropout rate on the adapters' input and this step's key (None:
            no dropout; micro-batch ``i`` draws from ``fold_in(key, i)``).

    Returns:
        ``(new_state, metrics)`` (see the module docstring).
    """

    k = grad_accum_steps
    sums_fn = functools.partial(
        _pair_sums, graphdef=graphdef, margin=margin, center_weight=center_weight, frozen=frozen,
        dropout=dropout,
    )  # fmt: skip
    grad_fn = jax.grad(lambda p, mb, mb_key: sums_fn(p, mb, key=mb_key), has_aux=True)
    if k == 1:
        grads, sums = grad_fn(state.params, batch, key)
    else:

        def body(carry, xs):
            mb, i = xs if key is not None else (xs, None)
            mb = constrain_micro_batch(mb, batch_sharding)
            g, s = grad_fn(state.params, mb, common.micro_key(key, i))
            g = jax.tree.map(lambda x: x.astype(jnp.float32), g)
            return jax.tree.map(jnp.add, carry, (g, s)), None

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
        init = (zeros, {n: jnp.zeros((), jnp.float32) for n in _SUMMED})
        micro = split_micro_batches(batch, k)
        xs = micro if key is None else (micro, jnp.arange(k))
        (grads, sums), _ = jax.lax.scan(body, init, xs)
    count = jnp.maximum(jnp.sum(batch.example_mask), jnp.ones((), jnp.float32))
    grads = jax.tree.map(
        lambda g, p: (g.astype(jnp.float32) / count).astype(p.dtype), grads, state.params
    )
    metrics = {name: sums[name] / count for name in _SUMMED}
    new_state, update_metrics = apply_gradients(
        state, grads, tx, lr_schedule, ok=jnp.isfinite(metrics["loss"])
    )
    tokens = jnp.sum(batch.chosen_attention_mask) + jnp.sum(batch.rejected_attention_mask)
    metrics.update(
        update_metrics,
        tokens=tokens.astype(jnp.float32),
        computed_tokens=jnp.asarray(2 * batch.chosen_input_ids.size, jnp.float32),
    )
    return new_state, metrics


def _eval_sums(params, frozen, batch, *, graphdef, margin, center_weight):
    """(summed loss, correctly ordered pairs, real pairs) of one held-out batch."""
    _, sums = _pair_sums(
        params, batch, graphdef=graphdef, margin=margin, center_weight=center_weight,
        frozen=frozen,
    )  # fmt: skip
    return sums["loss"], sums["accuracy"], jnp.sum(batch.example_mask)


@dataclasses.dataclass
class RewardModelParts:
    """A trainable reward model: architecture, graph, optimizer, shardings, pretrained start."""

    config: ModelConfig
    graphdef: nnx.GraphDef
    tx: Any
    lr_schedule: Any
    shardings: Shardings
    pretrained: nnx.State | None
    lora: Any = None  # LoRAConfig: adapters on the trunk, the head trained whole
    base_graphdef: nnx.GraphDef | None = None  # LoRA: the plain model's graph
    report: dict[str, float] | None = None  # LoRA: trainable fraction, optimizer bytes


#: The reward model's new head: fully trained under LoRA.
HEADS = ("score",)


def build_reward_model(ctx: RunContext, total_steps: int) -> RewardModelParts:
    """The reward model of ``ctx.config``: ``init.pretrained`` (a causal-LM checkpoint gets a
    fresh ``score`` head drawn from the run seed; a sequence-classification one keeps its
    head) placed straight into its shardings, or a random one from ``model``."""
    config, m = ctx.config, ctx.config.model
    model_config, pretrained = m, None
    if config.init.pretrained:
        head_key = jax.random.fold_in(jax.random.key(config.run.seed), 1)
        loaded = reward_model_from_pretrained(
            config.init.pretrained,
            dtype=m.dtype,
            param_dtype=m.param_dtype,
            mesh=ctx.mesh,
            rules=ctx.rule_pairs,
            key=head_key,
            config_overrides=common.runtime_overrides(m),
        )
        if loaded.num_labels != 1:
            raise ValueError(
                f"init.pretrained={config.init.pretrained!r} has num_labels="
                f"{loaded.num_labels}; a reward model has one scalar head (num_labels=1)"
            )
        model_config, pretrained = loaded.config, nnx.split(loaded)[1]
    with axis_rules(ctx.rule_pairs):
        abstract = nnx.eval_shape(
            lambda: RewardModel(model_config, rngs=nnx.Rngs(params=jax.random.key(0)))
        )
    graphdef, abstract_params = nnx.split(abstract)
    tx, lr_schedule = make_optimizer(config.optimizer, config.schedule, total_steps)
    if config.lora is None:
        shardings = train_shardings(abstract_params, tx, ctx.mesh, ctx.rule_pairs)
        return RewardModelParts(model_config, graphdef, tx, lr_schedule, shardings, pretrained)
    build = lambda: RewardModel(model_config, rngs=nnx.Rngs(params=jax.random.key(0)))
    lora_graphdef, trainable, frozen = common.abstract_lora_with_heads(
        build, config.lora, HEADS, ctx.rule_pairs
    )
    shardings = train_shardings(trainable, tx, ctx.mesh, ctx.rule_pairs)
    shardings = shardings._replace(reference=state_shardings(frozen, ctx.mesh, ctx.rule_pairs))
    report = parameter_report(trainable, frozen, abstract_params, tx)
    return RewardModelParts(model_config, lora_graphdef, tx, lr_schedule, shardings, pretrained,
                            config.lora, graphdef, report)  # fmt: skip


class RewardModelTask(Task):
    """``algorithm.name: reward_model`` on preference pairs (padded)."""

    name = "reward_model"
    reports_flops = True

    def __init__(self, ctx: RunContext):
        config = self.config = ctx.config
        self.ctx = ctx
        self.tokenizer = common.load_run_tokenizer(ctx)
        self.rm = build_reward_model(ctx, config.run.steps)
        common.check_vocab(self.tokenizer, self.rm.config)
        self.model_config = self.rm.config
        sh = self.rm.shardings
        self.state_shardings = sh.state
        # LoRA: the frozen trunk weights (no frozen model otherwise).
        self.frozen_shardings = sh.reference if self.rm.lora is not None else None
        (data,) = common.preference_data_configs(ctx, 1)
        (self.loader,) = common.preference_loaders(ctx, self.tokenizer, [data], sh.batch)
        self.batch_shardings = PreferenceBatch(*(sh.batch,) * 6, sh.example)
        algo = config.algorithm
        hyper = dict(margin=algo.margin, center_weight=algo.center_weight)
        self._step = functools.partial(
            reward_model_train_step,
            graphdef=self.rm.graphdef,
            tx=self.rm.tx,
            lr_schedule=self.rm.lr_schedule,
            grad_accum_steps=config.optimizer.grad_accum_steps,
            batch_sharding=sh.batch,
            dropout=common.lora_dropout(config),
            **hyper,
        )
        self._eval = jax.jit(functools.partial(_eval_sums, graphdef=self.rm.graphdef, **hyper))
        tiny = config.tiny_data
        tiny_eval = functools.partial(
            make_tiny_preference_dataset, num_words=tiny.num_words, rule=tiny.objectives[0]
        )
        self.eval_data = heldout_config(ctx, tiny_eval)
        self.eval_dataset = None
        if self.eval_data is not None:
            self.eval_dataset = load_preference_dataset(self.eval_data, self.tokenizer)
            self._eval_shard = row_multiple(ctx, sh.batch)[:2]

    def init(self, key: jax.Array):
        rm = self.rm
        state, frozen = common.init_head_model(
            rm, lambda k: RewardModel(rm.config, rngs=nnx.Rngs(params=k)), HEADS, key
        )
        if rm.lora is not None:
            self.frozen = frozen
        return state

    def batch(self, step: int, key: jax.Array):
        return shard_batch(
            next(self.loader), self.ctx.mesh, self.ctx.rules, logical_axes=("batch",)
        )

    def batch_signature(self, batch) -> tuple:
        return tuple(batch.chosen_input_ids.shape)

    def poison(self, batch):
        return batch._replace(example_mask=batch.example_mask * np.float32(np.nan))

    def step(self, state, frozen, batch, key):
        # frozen: the LoRA trunk, or None; the key only feeds the LoRA dropout (if any).
        return self._step(state, batch, frozen=frozen, key=common.dropout_key(self.config, key))

    def flops(self, batch) -> float:
        rows, length = batch.chosen_input_ids.shape
        return dpo_step_flops(self.rm.config, rows, length, reference_forward=False)

    def score(self, state, step: int) -> dict[str, float]:
        """``eval_accuracy`` (held-out pairs with ``r_w > r_l``) and ``eval_loss``."""
        if self.eval_dataset is None or not eval_every(self.config, step):
            return {}
        return common.heldout_pair_metrics(self, self._eval, state.params, self._eval_shard)

    def position(self) -> dict[str, Any]:
        return {"data": self.loader.state_dict()}

    def restore(self, position: dict[str, Any]) -> None:
        if "data" in position:
            self.loader.restore(position["data"])

    def describe(self) -> list[str]:
        lines = [*common.lora_describe(self.rm.report)]
        lines.append(format_data_stats(self.loader.dataset.stats))
        if self.eval_dataset is not None:
            lines.append("held-out " + format_data_stats(self.eval_dataset.stats))
        pad, eos = pad_token_id(self.tokenizer), getattr(self.tokenizer, "eos_token_id", None)
        if pad == eos:
            lines.append(
                "warning: the tokenizer pads with its EOS token; transformers' "
                "*ForSequenceClassification reads the last non-pad token, so it would skip a "
                "trailing EOS that jaxalign scores (give the tokenizer its own pad token)"
            )
        return lines

    def summary(self, history) -> dict[str, Any]:
        out = {**common.loss_summary(history, "accuracy", "eval_accuracy", "eval_loss"),
               **common.lora_summary(self.rm.report),
               "data": self.loader.dataset.stats}  # fmt: skip
        evals = [r["eval_accuracy"] for r in history if "eval_accuracy" in r]
        if evals:
            out["first_eval_accuracy"] = evals[0]
        return out

    def export(self, state, directory: Path) -> Path:
        """The reward model as an HF ``*ForSequenceClassification`` checkpoint (+ tokenizer);
        ``pad_token_id`` is the tokenizer's, which transformers needs to find the last real
        token of a padded batch. LoRA: the adapters merged into the trunk, and the PEFT
        adapter (``SEQ_CLS``, the trained ``score`` head as ``modules_to_save``) in
        ``<out>/adapter/``."""
        from jaxalign.models import save_pretrained

        model = common.policy_model(self.rm.graphdef, state.params, self.frozen)
        if self.rm.lora is not None:
            head = np.asarray(jax.device_get(model.score.kernel.get_value()), np.float32)
            save_adapter(
                model,
                self.rm.lora,
                directory.parent / "adapter",
                base_model_name_or_path=self.config.init.pretrained,
                task_type="SEQ_CLS",
                modules_to_save={"score": {"weight": head.T}},
            )
            model = merge_adapters(model)
        path = save_pretrained(
            model, directory, extra_config={"pad_token_id": pad_token_id(self.tokenizer)}
        )
        if self.ctx.is_main:
            self.tokenizer.save_pretrained(str(path))
        return path


__all__ = [
    "BradleyTerryLoss",
    "RewardModelParts",
    "RewardModelTask",
    "bradley_terry_loss",
    "build_reward_model",
    "reward_model_train_step",
]
