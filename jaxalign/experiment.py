"""Experiment registry and output writer behind ``jaxalign reproduce``.

Every script ``experiments/<name>.py`` defines a module-level ``EXPERIMENT`` (an
:class:`Experiment`) and ``main(argv)``. Its config lives in
``configs/experiments/<name>.yaml``: the top-level keys are the *full* profile;
``profiles: {quick: {...}}`` holds overrides for the quick profile. A run writes
``<name>.png``, ``<name>.csv`` and ``<name>.json`` (config, profile, summary
figures, package versions, device, wall time) into the output directory and
never overwrites an existing file unless asked to.

Writing a new experiment::

    @dataclasses.dataclass(frozen=True)
    class Config:
        num_steps: int = 1000   # iterations per run

    def run(config: Config, track) -> Result:
        for step in track(range(config.num_steps), "steps"):
            ...
        return Result(figure=fig, table={"step": steps, "gap": gaps}, summary={...})

    EXPERIMENT = Experiment("my-figure", "what it reproduces", Config, run)

    def main(argv=None):
        return EXPERIMENT.main(argv)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxalign import config as _config

PROFILES = ("quick", "full")
_PACKAGES = ("jaxalign", "jax", "jaxlib", "flax", "optax", "numpy", "scipy", "matplotlib")

Track = Callable[..., Iterable]


@dataclasses.dataclass
class Result:
    """What an experiment returns.

    Attributes:
      figure: a matplotlib Figure, saved as PNG.
      table: columns (name → equal-length sequence) or a list of row dicts, saved as CSV.
      summary: JSON-serialisable headline numbers, saved in the JSON metadata and printed.
    """

    figure: Any
    table: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered, reproducible figure.

    Attributes:
      name: registry name used by ``jaxalign reproduce NAME``.
      description: one line: what it reproduces (paper and figure).
      config_cls: frozen dataclass of the experiment's parameters.
      run: ``run(config, track) -> Result``; ``track(iterable, description, total=None)``
        wraps loops in a progress bar.
    """

    name: str
    description: str
    config_cls: type
    run: Callable[[Any, Track], Result]

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Command-line entry for ``python experiments/<name>.py``."""
        p = argparse.ArgumentParser(
            prog=f"experiments/{self.name}.py", description=self.description
        )
        p.add_argument(
            "--config",
            type=Path,
            default=None,
            help="YAML config (default: configs/experiments/NAME.yaml)",
        )
        p.add_argument("--out", type=Path, default=None, help="output directory")
        p.add_argument("--profile", choices=PROFILES, default="quick")
        p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. num_steps=100")
        args = p.parse_args(argv)
        reproduce(
            self,
            out=args.out,
            profile=args.profile,
            config_path=args.config,
            overrides=args.overrides,
            overwrite=args.overwrite,
        )
        return 0


def repo_root() -> Path:
    """The source checkout holding ``experiments/`` and ``configs/``.

    ``JAXALIGN_HOME`` overrides it; otherwise the directory above the package (an
    editable install, as in the README).
    """
    env = os.environ.get("JAXALIGN_HOME")
    root = Path(env) if env else Path(__file__).resolve().parents[1]
    if not (root / "experiments").is_dir():
        raise FileNotFoundError(
            f"no experiments/ directory under {root}; install jaxalign from a source checkout "
            "(pip install -e .) or set JAXALIGN_HOME to one"
        )
    return root


def _load_module(path: Path):
    mod_name = f"_jaxalign_experiments.{path.stem.replace('-', '_')}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


def registry() -> dict[str, Experiment]:
    """All experiments found in ``experiments/*.py``, by name."""
    found: dict[str, Experiment] = {}
    for path in sorted((repo_root() / "experiments").glob("*.py")):
        if path.name.startswith("_"):
            continue
        exp = getattr(_load_module(path), "EXPERIMENT", None)
        if isinstance(exp, Experiment):
            if exp.name in found:
                raise ValueError(f"experiment name {exp.name!r} registered twice ({path})")
            found[exp.name] = exp
    return found


def get(name: str) -> Experiment:
    reg = registry()
    if name not in reg:
        hint = _config.nearest_key(name, list(reg))
        extra = f"; did you mean {hint!r}?" if hint else ""
        raise ValueError(f"unknown experiment {name!r}{extra} Registered: {sorted(reg)}")
    return reg[name]


def load_config(
    exp: Experiment,
    profile: str = "quick",
    config_path: Path | None = None,
    overrides: Sequence[str] = (),
):
    """The experiment's config: YAML full profile, then profile overrides, then CLI overrides."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    path = config_path or repo_root() / "configs" / "experiments" / f"{exp.name}.yaml"
    data = _config.load_yaml(path) if Path(path).exists() else {}
    profiles = data.pop("profiles", {}) or {}
    unknown = set(profiles) - set(PROFILES)
    if unknown:
        raise _config.ConfigError(
            f"{path}: unknown profiles {sorted(unknown)}; expected {PROFILES}"
        )
    data = {**data, **(profiles.get(profile) or {})}
    data = _config.apply_overrides(data, overrides)
    return _config.from_dict(exp.config_cls, data)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _device_info() -> dict[str, Any]:
    import jax

    devs = jax.devices()
    return {"backend": jax.default_backend(), "devices": len(devs), "kind": devs[0].device_kind}


def _tracker(disable: bool) -> Track:
    from tqdm.auto import tqdm

    def track(iterable, description: str = "", total: int | None = None):
        return tqdm(iterable, desc=description, total=total, disable=disable, leave=False)

    return track


def _rows(table) -> tuple[list[str], list[list[Any]]]:
    if isinstance(table, Mapping):
        cols = list(table)
        lengths = {len(table[c]) for c in cols}
        if len(lengths) > 1:
            raise ValueError(
                f"table columns have different lengths: { {c: len(table[c]) for c in cols} }"
            )
        n = lengths.pop() if lengths else 0
        return cols, [[table[c][i] for c in cols] for i in range(n)]
    cols: list[str] = []
    for row in table:
        cols += [k for k in row if k not in cols]
    return cols, [[row.get(c, "") for c in cols] for row in table]


def _jsonable(v):
    import numpy as np

    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if hasattr(v, "tolist"):
        return _jsonable(np.asarray(v).tolist())
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return v


def default_out_dir() -> Path:
    return Path("results") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def reproduce(
    exp: Experiment,
    *,
    out: Path | None = None,
    profile: str = "quick",
    config_path: Path | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, Path]:
    """Runs one experiment and writes its PNG, CSV and JSON; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = load_config(exp, profile, config_path, overrides)
    out = Path(out) if out is not None else default_out_dir()
    paths = {ext: out / f"{exp.name}.{ext}" for ext in ("png", "csv", "json")}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"refusing to overwrite {existing}; pass --overwrite or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    result = exp.run(config, _tracker(disable=quiet))
    wall = time.perf_counter() - start

    result.figure.savefig(paths["png"], dpi=130, bbox_inches="tight")
    plt.close(result.figure)
    cols, rows = _rows(result.table)
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(cols)
        writer.writerows(rows)
    meta = {
        "experiment": exp.name,
        "description": exp.description,
        "profile": profile,
        "config": _config.to_dict(config),
        "overrides": list(overrides),
        "summary": _jsonable(result.summary),
        "wall_seconds": round(wall, 3),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "device": _device_info(),
    }
    paths["json"].write_text(json.dumps(meta, indent=2) + "\n")
    if not quiet:
        print(
            f"[{exp.name}] {wall:.1f}s  figure: {paths['png']}  "
            f"table: {paths['csv']}  meta: {paths['json']}"
        )
        for k, v in meta["summary"].items():
            print(f"    {k}: {v}")
    return paths


__all__ = [
    "PROFILES",
    "Experiment",
    "Result",
    "get",
    "load_config",
    "package_versions",
    "registry",
    "repo_root",
    "reproduce",
]
