"""Typed configuration: frozen dataclasses ← YAML ← dotted command-line overrides.

``load(cls, path, overrides)`` reads a YAML mapping, applies ``key.sub=value``
overrides, and builds the dataclass ``cls`` recursively, checking every key and
type. Mistakes raise one :class:`ConfigError` that names the key, the value and,
for unknown keys, the nearest valid key.

Example::

    @dataclasses.dataclass(frozen=True)
    class Optim:
        lr: float = 1e-3     # peak learning rate

    cfg = from_dict(Optim, {"lr": 3e-4})
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key, type or value is invalid."""


class _DuplicateKey(yaml.YAMLError):
    """A mapping repeats a key; ``line`` and ``first_line`` are 1-based."""

    def __init__(self, key: Any, line: int, first_line: int):
        super().__init__(f"line {line}: duplicate key {key!r} (first set on line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-5`` (no dot) as a string; read it as a float, like YAML 1.2.

    A key repeated in one mapping is refused (PyYAML keeps the last value silently, so
    a second ``lr:`` further down a file would override the first unnoticed). Keys
    brought in by a ``<<`` merge may be overridden, as YAML intends.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, line, seen[key])
                    seen[key] = line
                except TypeError:  # an unhashable key: the base class reports it
                    continue
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


def nearest_key(key: str, candidates: Sequence[str]) -> str | None:
    """The candidate closest to ``key`` (difflib ratio ≥ 0.5), or None."""
    matches = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` and converts lists/tuples/ints."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: value {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            hint = nearest_key(str(value), [str(a) for a in allowed])
            extra = f" (did you mean {hint!r}?)" if hint else ""
            raise ConfigError(f"{where}: value {value!r} is not one of {list(allowed)}{extra}")
        return value
    if origin in (tuple, list, Sequence, typing.Sequence) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {value!r}")
            items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return list(items) if origin is list or tp is list else tuple(items)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {_type_name(tp)}, got {value!r}")
        return from_dict(tp, value, _where=where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, _where: str = "") -> T:
    """Builds dataclass ``cls`` from a mapping, validating keys and types recursively."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_where or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        where = f"{_where}.{key}" if _where else str(key)
        if key not in fields:
            hint = nearest_key(str(key), list(fields))
            extra = f"; did you mean {hint!r}?" if hint else ""
            raise ConfigError(
                f"unknown config key {where!r} (value {value!r}){extra} "
                f"Valid keys: {sorted(fields)}"
            )
        kwargs[key] = _coerce(value, hints[key], where)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{_where or 'config'}: missing required keys {missing}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{_where or cls.__name__}: {e}") from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain (YAML/JSON-serialisable) dict of a config dataclass."""

    def plain(v):
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optimizer.lr=1e-5"`` → (["optimizer", "lr"], 1e-5); values parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: cannot parse value: {e}") from e
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Returns a copy of ``data`` with dotted ``key=value`` overrides applied."""
    out: dict[str, Any] = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a mapping")
            node = child
        node[path[-1]] = value
    return out


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file (``{}`` for an empty file).

    Raises:
        ConfigError: the path is missing or a directory, the file is not UTF-8 text or
            not valid YAML, a mapping repeats a key (``file:line``), or the top level is
            not a mapping.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.yaml"))[:5]
        hint = f"; it holds e.g. {', '.join(found)}" if found else ""
        raise ConfigError(f"config {str(path)!r} is a directory; expected a YAML file{hint}")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        column = e.start - raw.rfind(b"\n", 0, e.start)
        hint = " (it is gzip-compressed)" if raw[:2] == b"\x1f\x8b" else ""
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text: byte 0x{raw[e.start]:02x} at column {column}"
            f"{hint}; a config must be a UTF-8 YAML file"
        ) from None
    try:
        data = _yaml_load(text)
    except _DuplicateKey as e:
        raise ConfigError(
            f"{path}:{e.line}: duplicate key {e.key!r} (first set on line {e.first_line}); "
            "each key may appear once per mapping"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Loads ``cls`` from a YAML file (optional) plus dotted overrides."""
    data = load_yaml(path) if path is not None else {}
    return from_dict(cls, apply_overrides(data, overrides))


__all__ = [
    "ConfigError",
    "apply_overrides",
    "from_dict",
    "load",
    "load_yaml",
    "nearest_key",
    "parse_override",
    "to_dict",
]
