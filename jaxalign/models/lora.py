"""Low-rank adapters (LoRA) on the projections of a :class:`~jaxalign.models.CausalLM`.

A targeted projection ``y = x W`` (``W`` the ``(in..., out...)`` kernel of a
:class:`~jaxalign.models.layers.Dense`) becomes

.. math::

    y = x W + \\frac{\\alpha}{r} \\, (x A) B, \\qquad A \\in \\mathbb{R}^{in \\times r},\\;
    B \\in \\mathbb{R}^{r \\times out},

with ``A`` drawn kaiming-uniform (bound ``1/sqrt(fan_in)``, the usual LoRA default) and
``B = 0``, so a freshly adapted model computes exactly the base model. The adapters are
:class:`LoRAParam` variables stored next to the kernel and stacked per layer like it
(leading ``layers`` axis, the rank axis unsharded), so the scanned trunk carries them with
no extra code.

How training uses it (every task of :mod:`jaxalign.train.tasks`):

1. ``nnx.split(model, LoRAParam, ...)`` separates the adapters (trained; the only arrays
   with optimizer state) from the base weights (frozen; may be bf16, ``base_dtype``); the
   reward and preference models also train their new heads whole;
2. the policy is ``nnx.merge(graphdef, adapters, base)``; the reference policy is the base
   *graph* without adapters applied to the same base arrays
   (``nnx.merge(base_graphdef, base)``; the online loops run it as zero adapters on the
   same base, which computes the base exactly): adapters off, no second copy of the
   weights; the online tasks' past iterates are adapter snapshots;
3. training forwards may drop the adapters' input (:func:`with_dropout`, ``dropout``): a
   fresh mask per step from the step's key; the base path, the reference, sampling and
   evaluation never see it;
4. export: :func:`merge_adapters` folds ``W + (α/r)·A B`` into an adapter-free model for
   :func:`~jaxalign.models.save_pretrained`, and :func:`save_adapter` writes the adapters
   alone as ``adapter_config.json`` + ``adapter_model.safetensors`` (the PEFT layout:
   ``lora_A.weight`` (r, in), ``lora_B.weight`` (out, r) under
   ``base_model.model.<module path>``).

References: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from jaxalign.models.layers import Dense
from jaxalign.models.sharding import constrain, variable_names
from jaxalign.models.transformer import CausalLM

#: Projections LoRA can adapt (the HF module names of the attention and MLP layers).
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_BASE_DTYPES = ("float32", "bfloat16", "float16")


class LoRAParam(nnx.Param):
    """A low-rank adapter weight: with LoRA on, the only variables the optimizer updates."""


class LoRADropoutKey(nnx.Variable):
    """Key data of one training forward's adapter-dropout masks (one key per layer when the
    projection is stacked); set by :func:`with_dropout`, never stored or trained."""


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """The ``lora:`` section of a train config (absent/null = no adapters)."""

    rank: int  # r ≥ 1: inner dimension of each adapter
    alpha: float = 16.0  # α > 0: the update is scaled by α / r
    dropout: float = 0.0  # dropout rate on the adapter's input in training, in [0, 1)
    # Names of the projections that get adapters (subset of PROJECTIONS).
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    base_dtype: str = ""  # dtype of the frozen base weights; "" = model.param_dtype

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"lora.rank={self.rank!r} is invalid; expected an integer ≥ 1")
        if not self.alpha > 0:
            raise ValueError(f"lora.alpha={self.alpha!r} is invalid; expected a number > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout={self.dropout!r} is invalid; expected 0 ≤ dropout < 1")
        targets = tuple(self.targets)
        if not targets:
            raise ValueError(
                f"lora.targets={list(targets)} is empty; expected some of {PROJECTIONS}"
            )
        unknown = [t for t in targets if t not in PROJECTIONS]
        if unknown or len(set(targets)) != len(targets):
            raise ValueError(
                f"lora.targets={list(targets)} is invalid; expected distinct names from "
                f"{list(PROJECTIONS)}"
            )
        object.__setattr__(self, "targets", targets)
        if self.base_dtype and self.base_dtype not in _BASE_DTYPES:
            raise ValueError(
                f"lora.base_dtype={self.base_dtype!r} is invalid; expected one of "
                f"{list(_BASE_DTYPES)} or '' (the model's param_dtype)"
            )

    @property
    def scale(self) -> float:
        """α / r, the factor of the low-rank update."""
        return self.alpha / self.rank


def _targeted(model: nnx.Module, targets: tuple[str, ...]) -> list[tuple[tuple, Dense]]:
    """``(path, Dense)`` of every targeted projection, in path order."""
    found = [
        (tuple(path), node)
        for path, node in nnx.iter_graph(model)
        if isinstance(node, Dense) and path and str(path[-1]) in targets
    ]
    return sorted(found, key=lambda item: tuple(str(p) for p in item[0]))


def add_adapters(model: nnx.Module, lora: LoRAConfig, *, key: jax.Array) -> nnx.Module:
    """Attaches LoRA adapters to the targeted projections of ``model`` (in place; returns it).

    Each targeted :class:`Dense` with kernel ``(L?, in..., out...)`` gets
    ``lora_a`` ``(L?, in..., r)`` — uniform in ``±1/sqrt(prod(in))`` — and ``lora_b``
    ``(L?, r, out...)`` = 0, both float32 :class:`LoRAParam`, with the kernel's logical axis
    names (the rank axis is unsharded). At B = 0 the model's outputs are unchanged.

    Raises:
        ValueError: when no projection of ``model`` matches ``lora.targets``.
    """
    modules = _targeted(model, lora.targets)
    if not modules:
        raise ValueError(f"lora.targets={list(lora.targets)} match no projection of the model")
    for index, (_, dense) in enumerate(modules):
        kernel = dense.kernel
        shape = tuple(kernel.get_value().shape)
        names = variable_names(kernel) or (None,) * len(shape)
        lead = 1 if names[0] == "layers" else 0
        split = lead + dense.n_in
        a_shape = (*shape[:split], lora.rank)
        b_shape = (*shape[:lead], lora.rank, *shape[split:])
        a_names = (*names[:split], None)
        b_names = (*names[:lead], None, *names[split:])
        bound = 1.0 / math.sqrt(math.prod(shape[lead:split]))
        a = jax.random.uniform(jax.random.fold_in(key, index), a_shape, jnp.float32, -bound, bound)
        b = jnp.zeros(b_shape, jnp.float32)
        dense.lora_a = LoRAParam(constrain(a, a_names), out_sharding=a_names, eager_sharding=False)
        dense.lora_b = LoRAParam(constrain(b, b_names), out_sharding=b_names, eager_sharding=False)
        dense.lora_scale = float(lora.scale)
    return model


def _cast_base(model: nnx.Module, dtype: str) -> None:
    """Casts every non-adapter parameter of ``model`` to ``dtype`` (in place)."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Param) and not isinstance(node, LoRAParam):
            node.set_value(node.get_value().astype(dtype))


def adapted(model: nnx.Module, lora: LoRAConfig, *, key: jax.Array) -> nnx.Module:
    """``model`` with its base weights in ``lora.base_dtype`` (if set) and adapters added."""
    if lora.base_dtype:
        _cast_base(model, lora.base_dtype)
    return add_adapters(model, lora, key=key)


def lora_delta(dense: Dense) -> jax.Array:
    """``(α/r)·A B`` of an adapted projection, shaped like its kernel, float32."""
    a = dense.lora_a.get_value().astype(jnp.float32)
    b = dense.lora_b.get_value().astype(jnp.float32)
    if a.ndim and variable_names(dense.lora_a)[0] == "layers":  # stacked: per layer
        delta = jax.vmap(lambda a_, b_: jnp.tensordot(a_, b_, axes=1))(a, b)
    else:
        delta = jnp.tensordot(a, b, axes=1)
    return delta * jnp.asarray(dense.lora_scale, jnp.float32)


def with_dropout(model: nnx.Module, rate: float, *, key: jax.Array | None) -> nnx.Module:
    """Switches adapter dropout on for the training forwards of ``model`` (in place; returns
    it): each adapted projection computes ``x W + (α/r)·(dropout(x) A) B``, the dropout mask
    (keep probability ``1 − rate``, kept entries scaled by ``1/(1 − rate)``) on the adapter's
    input only — the base path ``x W`` never sees it. Every projection and layer draws its
    own mask from ``key`` (``fold_in`` by projection, ``split`` by layer).

    Call it on a model merged inside the train step (the reference, the sampler and
    evaluation use models without it: dropout off). ``rate == 0`` or ``key is None`` leaves
    ``model`` untouched, so such training is bitwise the dropout-free computation.
    """
    if rate == 0 or key is None:
        return model
    for index, (_, dense) in enumerate(_targeted(model, PROJECTIONS)):
        if getattr(dense, "lora_a", None) is None:
            continue
        k = jax.random.fold_in(key, index)
        if variable_names(dense.lora_a)[0] == "layers":  # stacked: one key per layer
            k = jax.random.split(k, dense.lora_a.get_value().shape[0])
        dense.lora_dropout_key = LoRADropoutKey(jax.random.key_data(k))
        dense.lora_dropout = float(rate)
    return model


def has_adapters(model: nnx.Module) -> bool:
    return any(isinstance(node, LoRAParam) for _, node in nnx.iter_graph(model))


def merge_adapters(model: nnx.Module) -> nnx.Module:
    """A copy of ``model`` without adapters whose kernels are ``W + (α/r)·A B``.

    Same outputs as the adapted model (up to rounding in the kernel dtype); the result is
    a plain model that :func:`~jaxalign.models.save_pretrained` writes as an HF checkpoint.
    """
    merged = nnx.clone(model)
    for _, dense in _targeted(merged, PROJECTIONS):
        if getattr(dense, "lora_a", None) is None:
            continue
        kernel = dense.kernel.get_value()
        dense.kernel.set_value(
            (kernel.astype(jnp.float32) + lora_delta(dense)).astype(kernel.dtype)
        )
        del dense.lora_a, dense.lora_b, dense.lora_scale
    return merged


def _hf_module_name(path: tuple, layer: int | None) -> str:
    parts = [str(p) for p in path]
    if layer is not None:
        at = parts.index("layers") + 1
        parts = [*parts[:at], str(layer), *parts[at:]]
    return ".".join(parts)


def adapter_tensors(model: nnx.Module) -> dict[str, np.ndarray]:
    """The adapters in the PEFT layout, float32: for each adapted module (per layer)
    ``base_model.model.<path>.lora_A.weight`` (r, in) and ``….lora_B.weight`` (out, r)."""
    tensors: dict[str, np.ndarray] = {}
    for path, dense in _targeted(model, PROJECTIONS):
        if getattr(dense, "lora_a", None) is None:
            continue
        a = np.asarray(jax.device_get(dense.lora_a.get_value()), np.float32)
        b = np.asarray(jax.device_get(dense.lora_b.get_value()), np.float32)
        stacked = variable_names(dense.lora_a)[0] == "layers"
        layers = range(a.shape[0]) if stacked else [None]
        for layer in layers:
            a_l, b_l = (a[layer], b[layer]) if stacked else (a, b)
            rank = a_l.shape[-1]
            name = f"base_model.model.{_hf_module_name(path, layer)}"
            tensors[f"{name}.lora_A.weight"] = np.ascontiguousarray(a_l.reshape(-1, rank).T)
            tensors[f"{name}.lora_B.weight"] = np.ascontiguousarray(b_l.reshape(rank, -1).T)
    return tensors


def save_adapter(
    model: nnx.Module,
    lora: LoRAConfig,
    path: str | os.PathLike,
    *,
    base_model_name_or_path: str = "",
    task_type: str = "CAUSAL_LM",
    modules_to_save: dict[str, dict[str, np.ndarray]] | None = None,
) -> Path:
    """Writes the adapters of ``model`` alone in the PEFT format (``adapter_config.json`` +
    ``adapter_model.safetensors``), loadable with ``peft.PeftModel.from_pretrained(base,
    path)`` on top of the base checkpoint. Returns the directory.

    ``task_type`` is PEFT's (``CAUSAL_LM``, ``SEQ_CLS``); ``modules_to_save`` maps the HF
    name of a fully trained module (e.g. a new ``score`` head) to its tensors
    (``{"weight": (out, in)}``), stored whole as PEFT's ``<name>.modules_to_save`` copy.
    """
    tensors = adapter_tensors(model)
    if not tensors:
        raise ValueError("save_adapter: the model has no LoRA adapters")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if jax.process_index() != 0:
        return path
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path or None,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": sorted(lora.targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": sorted(modules_to_save) if modules_to_save else None,
        "use_rslora": False,
        "use_dora": False,
    }
    for name, weights in (modules_to_save or {}).items():
        for key, value in weights.items():
            tensors[f"base_model.model.{name}.{key}"] = np.ascontiguousarray(value, np.float32)
    save_file(tensors, str(path / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (path / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    return path


def _nbytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def parameter_report(trainable, frozen, full, tx) -> dict[str, float]:
    """Trainable parameters and optimizer-state bytes of a run that trains ``trainable``
    (e.g. the adapters, plus a new score head) on top of ``frozen``, next to training
    ``full`` (every weight of the same model without adapters) with ``tx``. Shapes only:
    the trees may be abstract (``jax.ShapeDtypeStruct``); nothing is allocated.

    Returns:
        ``total_params`` (trainable + frozen), ``trainable_params``, ``trainable_fraction``,
        ``optimizer_state_bytes`` (state of ``tx`` over ``trainable``), ``param_bytes``
        (trainable + frozen, their dtypes), ``full_trainable_params`` and
        ``full_optimizer_state_bytes`` (the same without LoRA).
    """
    train, total = _count(trainable), _count(trainable) + _count(frozen)
    return {
        "total_params": total,
        "trainable_params": train,
        "trainable_fraction": train / total,
        "optimizer_state_bytes": _nbytes(jax.eval_shape(tx.init, trainable)),
        "param_bytes": _nbytes(trainable) + _nbytes(frozen),
        "full_trainable_params": _count(full),
        "full_optimizer_state_bytes": _nbytes(jax.eval_shape(tx.init, full)),
    }


def format_report(report: dict[str, float]) -> str:
    """One line of :func:`parameter_report` for a run's log."""
    return (
        f"LoRA: {report['trainable_params']:,} of {report['total_params']:,} parameters "
        f"trainable ({100 * report['trainable_fraction']:.3f}%), optimizer state "
        f"{report['optimizer_state_bytes']:,} B (full fine-tuning: "
        f"{report['full_optimizer_state_bytes']:,} B)"
    )


def lora_report(model_config, lora: LoRAConfig | None, tx) -> dict[str, float]:
    """Trainable parameters and optimizer-state bytes of ``model_config`` with ``tx``
    (e.g. AdamW), without (``lora=None``) or with adapters — shapes only
    (``jax.eval_shape``; nothing is allocated).

    Returns:
        ``total_params`` (base + adapters), ``trainable_params``, ``trainable_fraction``,
        ``optimizer_state_bytes`` and ``param_bytes`` (all parameters, their dtypes).
    """
    key = jax.random.key(0)

    def build():
        model = CausalLM(model_config, rngs=nnx.Rngs(params=key))
        return model if lora is None else adapted(model, lora, key=key)

    model = nnx.eval_shape(build)
    params = nnx.state(model, nnx.Param)
    trainable = params if lora is None else nnx.state(model, LoRAParam)
    opt = jax.eval_shape(tx.init, trainable)
    total, train = _count(params), _count(trainable)
    return {
        "total_params": total,
        "trainable_params": train,
        "trainable_fraction": train / total,
        "optimizer_state_bytes": _nbytes(opt),
        "param_bytes": _nbytes(params),
    }


__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "PROJECTIONS",
    "LoRAConfig",
    "LoRADropoutKey",
    "LoRAParam",
    "adapted",
    "adapter_tensors",
    "add_adapters",
    "format_report",
    "has_adapters",
    "lora_delta",
    "lora_report",
    "merge_adapters",
    "parameter_report",
    "save_adapter",
    "with_dropout",
]
