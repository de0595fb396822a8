"""HuggingFace checkpoints in and out: ``config.json`` + safetensors (single or sharded).

Loading is shape-first and shard-local: the parameter tree comes from
``nnx.eval_shape`` (no weights are materialised), each parameter's logical axis
names resolve to a ``NamedSharding`` on the mesh, and
``jax.make_array_from_callback`` asks, per device, for exactly the slice that device
holds; the callback reads only that slice from the memory-mapped safetensors file
(plus, for split head axes, the enclosing rows). No device ever receives, and the
host never assembles, a full copy of a sharded tensor.

Layout conversion. HF stores a linear layer as ``weight`` of shape (out, in); here
kernels are (in..., out...) with heads split out, e.g. ``q_proj.kernel`` is
(embed, heads, head_dim) = ``q_proj.weight`` (heads·head_dim, embed) reshaped and
transposed. Each parameter is described by a :class:`TensorSpec`: the HF tensor,
reshaped so its axes split into ``groups``, then permuted by ``perm``.

Only safetensors are read (never pickles), nothing is downloaded, no remote code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy so safetensors can read it)
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxalign.models.config import ModelConfig
from jaxalign.models.sharding import DEFAULT_RULES, LogicalRules, logical_sharding, variable_names

CONFIG_NAME = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Buffers some exporters write that carry no learned weights.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """How one parameter maps to one HF tensor.

    ``ours = transpose(reshape(hf, concat(groups)), perm)``: HF axis ``i`` splits into
    the axes ``groups[i]`` and ours axis ``j`` is the reshaped axis ``perm[j]``.
    """

    path: tuple[Any, ...]  # path of the parameter in the NNX state
    hf_name: str  # name of the tensor in the safetensors files
    shape: tuple[int, ...]  # our shape
    names: tuple[str | None, ...] | None  # logical axis names
    groups: tuple[tuple[int, ...], ...]  # HF axis → the sizes of the axes it splits into
    perm: tuple[int, ...]  # our axis j = reshaped axis perm[j]
    # For a stacked (scanned) layer parameter: the layer this HF tensor is; ``shape`` and
    # ``names`` are then those of one layer's slice (without the leading layer axis).
    layer: int | None = None

    @property
    def hf_shape(self) -> tuple[int, ...]:
        return tuple(math.prod(g) for g in self.groups)

    def to_hf(self, value: np.ndarray) -> np.ndarray:
        """Our layout → HF layout."""
        return np.ascontiguousarray(np.transpose(value, np.argsort(self.perm))).reshape(
            self.hf_shape
        )

    def read(self, tensor_slice, index: tuple[slice, ...], dtype) -> np.ndarray:
        """Reads the part of the HF tensor that becomes ``ours[index]``, in our layout."""
        flat_groups = [size for group in self.groups for size in group]
        wanted: list[slice] = [slice(None)] * len(flat_groups)
        for axis, sl in enumerate(index):
            start, stop, step = sl.indices(self.shape[axis])
            if step != 1:
                raise ValueError(f"strided shard index {sl} for {self.hf_name}")
            wanted[self.perm[axis]] = slice(start, stop)
        hf_index, chunk_shape, inner = [], [], []
        pos = 0
        for group in self.groups:
            outer = wanted[pos]
            start, stop, _ = outer.indices(group[0])
            stride = math.prod(group[1:])
            # The leading split axis is read as a row range; inner split axes are cut after.
            hf_index.append(slice(start * stride, stop * stride))
            chunk_shape.extend((stop - start, *group[1:]))
            inner.append(slice(None))
            inner.extend(wanted[pos + 1 : pos + len(group)])
            pos += len(group)
        chunk = tensor_slice[tuple(hf_index)] if hf_index else tensor_slice[...]
        chunk = np.asarray(chunk).reshape(chunk_shape)[tuple(inner)]
        return np.ascontiguousarray(np.transpose(chunk, self.perm)).astype(dtype)


def _hf_name(path: tuple[Any, ...]) -> str:
    *module, leaf = (str(p) for p in path)
    suffix = {"kernel": "weight", "scale": "weight", "bias": "bias"}.get(leaf)
    if suffix is None:  # a bare parameter such as embed_tokens
        return ".".join([*module, leaf, "weight"])
    return ".".join([*module, suffix])


def _spec(
    path: tuple[Any, ...],
    shape: tuple[int, ...],
    names: tuple[str | None, ...] | None,
    layer: int | None = None,
) -> TensorSpec:
    leaf = path[-1]
    hf_path = path
    if layer is not None:  # model.layers.<layer>.…: the HF name of one stacked slice
        at = path.index("layers") + 1
        hf_path = (*path[:at], layer, *path[at:])
    if leaf == "kernel":
        n_in = 2 if path[-2] == "o_proj" else 1
        ins, outs = shape[:n_in], shape[n_in:]
        # HF (prod(outs), prod(ins)) → reshaped (outs..., ins...) → ours (ins..., outs...).
        perm = tuple(range(len(outs), len(shape))) + tuple(range(len(outs)))
        groups = (outs, ins)
    elif leaf == "bias":
        groups, perm = (shape,), tuple(range(len(shape)))
    else:
        groups, perm = tuple((s,) for s in shape), tuple(range(len(shape)))
    return TensorSpec(
        path=tuple(path),
        hf_name=_hf_name(hf_path),
        shape=shape,
        names=names,
        groups=tuple(tuple(g) for g in groups),
        perm=perm,
        layer=layer,
    )


def _is_stacked(names: tuple[str | None, ...] | None) -> bool:
    return bool(names) and names[0] == "layers"


def _variable_specs(path: tuple[Any, ...], variable: nnx.Variable) -> list[TensorSpec]:
    """The HF tensor(s) of one parameter: one per layer for a stacked layer parameter."""
    shape = tuple(variable.get_value().shape)
    names = variable_names(variable)
    if not _is_stacked(names):
        return [_spec(tuple(path), shape, names)]
    return [_spec(tuple(path), shape[1:], names[1:], layer) for layer in range(shape[0])]


def tensor_specs(model_or_state) -> list[TensorSpec]:
    """The HF tensor for every parameter of a model (or of an abstract/concrete state).

    A stacked layer parameter (leading ``layers`` axis) maps to one HF tensor per layer
    (``model.layers.<i>.…``).
    """
    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state)
    return [
        spec for path, var in nnx.to_flat_state(state) for spec in _variable_specs(tuple(path), var)
    ]


# ----------------------------------------------------------------------------- reading


class _Checkpoint(contextlib.ExitStack):
    """The safetensors files of an HF directory, opened lazily (memory-mapped)."""

    def __init__(self, directory: Path):
        super().__init__()
        self.directory = directory
        index, single = directory / INDEX_FILE, directory / SINGLE_FILE
        if index.exists():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ValueError(f"{index} has no 'weight_map' object naming each tensor's file")
            files = sorted(set(weight_map.values()))
        elif single.exists():
            weight_map, files = None, [SINGLE_FILE]
        else:
            raise ValueError(
                f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE}; only safetensors "
                "checkpoints are read (pickled *.bin files are refused)"
            )
        self.tensors: dict[str, Any] = {}
        self.source: dict[str, str] = {}
        missing_files = [f for f in files if not (directory / f).exists()]
        if missing_files:
            raise ValueError(f"{directory / INDEX_FILE} lists missing files: {missing_files}")
        try:
            for file in files:
                handle = self.enter_context(_open_safetensors(directory / file))
                for name in handle.keys():
                    if weight_map is not None and weight_map.get(name) != file:
                        continue
                    self.tensors[name] = handle.get_slice(name)
                    self.source[name] = file
        except BaseException:
            self.close()  # the files opened so far
            raise
        if weight_map is not None:
            absent = sorted(n for n, f in weight_map.items() if self.source.get(n) != f)
            if absent:
                raise ValueError(
                    f"tensors listed in {INDEX_FILE} but absent from their file: {absent}"
                )

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensors[name].get_shape())


def _open_safetensors(path: Path):
    """``safe_open(path)``; a truncated or corrupt file is a ValueError naming it."""
    try:
        return safe_open(str(path), framework="numpy")
    except Exception as e:  # safetensors raises its own SafetensorError (not a ValueError)
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(64)
        hint = (
            "it is a Git LFS pointer, not the weights (fetch them: git lfs pull)"
            if head.startswith(b"version https://git-lfs")
            else "the file is truncated or corrupt (an interrupted download or copy?); "
            "download or save it again"
        )
        raise ValueError(
            f"{path} is not a readable safetensors file ({e}; {size} bytes): {hint}"
        ) from None


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; invalid JSON is a ValueError naming the file and line."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte offset {e.start}); expected JSON") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _check(specs: Sequence[TensorSpec], ckpt: _Checkpoint, ignore: Callable[[str], bool]) -> None:
    expected = {s.hf_name: s for s in specs}
    missing = sorted(n for n in expected if n not in ckpt.tensors)
    unexpected = sorted(
        n
        for n in ckpt.tensors
        if n not in expected and not n.endswith(_IGNORED_SUFFIXES) and not ignore(n)
    )
    mismatched = [
        f"{n}: checkpoint {ckpt.shape(n)} vs expected {expected[n].hf_shape}"
        for n in sorted(expected)
        if n in ckpt.tensors and ckpt.shape(n) != expected[n].hf_shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    if mismatched:
        problems.append(f"shape mismatches [{'; '.join(mismatched)}]")
    if problems:
        raise ValueError(
            f"checkpoint {ckpt.directory} does not match the model: " + ", ".join(problems)
        )


def read_hf_config(path: str | os.PathLike) -> dict:
    """The ``config.json`` of a local HF directory as a dict."""
    file = Path(path) / CONFIG_NAME
    if not file.exists():
        raise ValueError(f"{path} is not a local HF model directory: {CONFIG_NAME} not found")
    return _read_json(file)


def _dtype_name(dtype) -> str | None:
    return None if dtype is None else jnp.dtype(dtype).name


def load_pretrained(
    cls,
    path: str | os.PathLike,
    *,
    dtype=None,
    param_dtype=None,
    mesh: jax.sharding.Mesh | None = None,
    rules: LogicalRules | None = None,
    fresh: Callable[[str], bool] | None = None,
    key: jax.Array | None = None,
    ignore: Callable[[str], bool] = lambda name: False,
    config_overrides: dict[str, Any] | None = None,
    **kwargs,
):
    """Builds ``cls(config, **kwargs)`` from an HF directory (see :func:`from_pretrained`).

    ``fresh(hf_name)`` marks parameters that may be absent from the checkpoint and are
    then initialised from ``key`` (e.g. a new reward head on a language-model trunk).
    """
    path = Path(path)
    dtype_name = _dtype_name(dtype) or "float32"
    config = ModelConfig.from_hf_config(
        read_hf_config(path),
        dtype=dtype_name,
        param_dtype=_dtype_name(param_dtype) or dtype_name,
        **(config_overrides or {}),
    )
    rules = DEFAULT_RULES if rules is None else tuple(rules)
    abstract = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0), **kwargs))
    graphdef, state = nnx.split(abstract)
    flat = list(nnx.to_flat_state(state))
    per_variable = [_variable_specs(tuple(p), v) for p, v in flat]
    specs = [spec for group in per_variable for spec in group]
    with _Checkpoint(path) as ckpt:
        absent = {s.hf_name for s in specs if s.hf_name not in ckpt.tensors}
        fresh_names = {n for n in absent if fresh is not None and fresh(n)}
        if fresh_names:
            if key is None:
                raise ValueError(f"key is required to initialise {sorted(fresh_names)}")
            init_state = nnx.state(cls.create(config, key=key, mesh=mesh, rules=rules, **kwargs))
            init_flat = dict(nnx.to_flat_state(init_state))
        _check([s for s in specs if s.hf_name not in fresh_names], ckpt, ignore)
        for group, (var_path, variable) in zip(per_variable, flat):
            if any(spec.hf_name in fresh_names for spec in group):
                variable.set_value(init_flat[tuple(var_path)].get_value())
                continue
            value = variable.get_value()
            target = np.dtype(value.dtype)
            shape = tuple(value.shape)
            if mesh is None:
                sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            else:
                names = variable_names(variable) or (None,) * len(shape)
                sharding = logical_sharding(names, mesh, rules, shape=shape)
            read = _shard_reader(group, ckpt, shape, target)
            variable.set_value(jax.make_array_from_callback(shape, sharding, read))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _shard_reader(
    group: Sequence[TensorSpec], ckpt: _Checkpoint, shape: tuple[int, ...], target
) -> Callable[[tuple[slice, ...]], np.ndarray]:
    """Callback for ``jax.make_array_from_callback``: one shard of a parameter, read from
    its HF tensor (or, for a stacked parameter, from the per-layer tensors it spans)."""
    cache: dict[tuple, np.ndarray] = {}

    def read(index: tuple[slice, ...]) -> np.ndarray:
        bounds = tuple(sl.indices(n)[:2] for sl, n in zip(index, shape))
        if bounds in cache:  # replicated shards are read once
            return cache[bounds]
        if group[0].layer is None:
            spec = group[0]
            out = spec.read(ckpt.tensors[spec.hf_name], index, target)
        else:
            start, stop = bounds[0]
            out = np.stack(
                [
                    group[i].read(ckpt.tensors[group[i].hf_name], index[1:], target)
                    for i in range(start, stop)
                ]
            )
        cache[bounds] = out
        return out

    return read


def from_pretrained(
    path: str | os.PathLike,
    *,
    dtype=None,
    param_dtype=None,
    mesh: jax.sharding.Mesh | None = None,
    rules: LogicalRules | None = None,
    config_overrides: dict[str, Any] | None = None,
):
    """Loads a local HF ``*ForCausalLM`` directory (Llama, Qwen2, Qwen3) as a :class:`CausalLM`.

    Args:
      path: directory with ``config.json`` and ``model.safetensors`` or
        ``model.safetensors.index.json`` plus its shards.
      dtype: computation dtype (default float32).
      param_dtype: storage dtype of the parameters (default: ``dtype``); checkpoint
        tensors (e.g. bf16) are cast to it.
      mesh: when given, each parameter is created directly in its target sharding
        (``rules`` maps logical names to mesh axes; default ``DEFAULT_RULES``).
      config_overrides: :class:`ModelConfig` fields that are not part of the checkpoint,
        e.g. ``{"remat": "full", "attention": "cudnn", "logprob_chunk_size": 128}``.

    Raises:
      ValueError: unsupported ``model_type``/options, missing or unexpected tensors,
        shape mismatches (all named in one message), no safetensors in ``path``.
    """
    from jaxalign.models.transformer import CausalLM

    config = read_hf_config(path)
    tied = bool(config.get("tie_word_embeddings", False))
    # A tied checkpoint may still contain the (duplicate) LM head.
    return load_pretrained(
        CausalLM,
        path,
        dtype=dtype,
        param_dtype=param_dtype,
        mesh=mesh,
        rules=rules,
        ignore=lambda name: tied and name == "lm_head.weight",
        config_overrides=config_overrides,
    )


# ----------------------------------------------------------------------------- writing


def _host(value: jax.Array) -> np.ndarray:
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        from jax.experimental import multihost_utils

        value = multihost_utils.process_allgather(value, tiled=True)
    return np.asarray(jax.device_get(value))


def save_pretrained(
    model,
    path: str | os.PathLike,
    *,
    max_shard_size: int = 2 * 1024**3,
    extra_config: dict | None = None,
) -> Path:
    """Writes ``model`` as an HF directory: ``config.json`` + safetensors (sharded with an index).

    ``transformers.AutoModelForCausalLM.from_pretrained(path)`` (or
    ``AutoModelForSequenceClassification`` for a :class:`RewardModel`) loads the result.
    Tensors keep the parameter dtype. Shards hold at most ``max_shard_size`` bytes
    (a single larger tensor gets its own shard). Stale ``model*.safetensors`` files from
    an earlier save into the same directory are removed so loaders never mix the two.

    Returns:
      The directory.
    """
    if max_shard_size <= 0:
        raise ValueError(f"max_shard_size must be > 0 bytes, got {max_shard_size}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hf_config = model.hf_config() if hasattr(model, "hf_config") else model.config.to_hf_config()
    hf_config.update(extra_config or {})
    state = nnx.state(model, nnx.Param)
    tensors: dict[str, np.ndarray] = {}
    for path_parts, variable in nnx.to_flat_state(state):
        value = _host(variable.get_value())
        for spec in _variable_specs(tuple(path_parts), variable):
            tensors[spec.hf_name] = spec.to_hf(value if spec.layer is None else value[spec.layer])
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].nbytes
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    if jax.process_index() != 0:
        return path
    for stale in [*path.glob("model*.safetensors"), path / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(path / SINGLE_FILE), metadata=metadata)
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(path / file), metadata=metadata)
            weight_map.update(dict.fromkeys(shard, file))
        total = sum(t.nbytes for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (path / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True))
    (path / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2, sort_keys=True))
    return path
