"""Experiment registry and output writer behind ``jaxalign reproduce``.

Every script ``experiments/<name>.py`` defines a module-level ``EXPERIMENT`` (an
:class:`Experiment`) and ``main(argv)``. Its config lives in
``configs/experiments/<name>.yaml``: the top-level keys are the *full* profile;
``profiles: {quick: {...}}`` holds overrides for the quick profile. A run writes
``<name>.png``, ``<name>.csv`` and ``<name>.json`` (config, profile, summary
figures, package versions, device, wall time) into the output directory and
never overwrites an existing file unless asked to. Figures are drawn in the shared
style of :mod:`jaxalign.plotting`. After every run the directory's ``index.html`` and
``REPORT.md`` are rewritten (:func:`write_report`): every figure in the directory with
its title, headline numbers, config, profile and wall time — the page to open first.

Writing a new experiment::

    @dataclasses.dataclass(frozen=True)
    class Config:
        num_steps: int = 1000   # iterations per run

    def run(config: Config, track) -> Result:
        for step in track(range(config.num_steps), "steps"):
            ...
        return Result(figure=fig, table={"step": steps, "gap": gaps}, summary={...})

    EXPERIMENT = Experiment("my-figure", "what it reproduces", Config, run,
                            headline=("final_gap",))  # summary keys for the index

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
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxalign import config as _config
from jaxalign import plotting

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
      headline: the summary keys (dotted for nested ones, e.g. ``"slopes.ONPO"``) shown
        as headline numbers in ``index.html`` / ``REPORT.md`` and by
        ``scripts/readme_numbers.py``; empty means every top-level key.
    """

    name: str
    description: str
    config_cls: type
    run: Callable[[Any, Track], Result]
    headline: tuple[str, ...] = ()

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


def device_info() -> dict[str, Any]:
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

    with plotting.style():
        start = time.perf_counter()
        result = exp.run(config, _tracker(disable=quiet))
        wall = time.perf_counter() - start
        for problem in plotting.problems(result.figure):
            warnings.warn(f"{exp.name} figure: {problem}", stacklevel=2)
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
        "headline": list(exp.headline),
        "wall_seconds": round(wall, 3),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "device": device_info(),
    }
    paths["json"].write_text(json.dumps(meta, indent=2) + "\n")
    report = write_report(out)
    if not quiet:
        print(
            f"[{exp.name}] {wall:.1f}s  figure: {paths['png']}  "
            f"table: {paths['csv']}  meta: {paths['json']}"
        )
        for k, v in meta["summary"].items():
            print(f"    {k}: {v}")
        if "html" in report:
            print(f"    index of {out}: {report['html']}")
    return paths


# --------------------------------------------------------------------------- report

#: Near the top of a generated index.html / REPORT.md; files without it are never replaced.
REPORT_MARKER = "<!-- written by jaxalign reproduce; regenerated after every run -->"


def format_number(value: Any, digits: int = 4) -> str:
    """A summary value as short text: floats to ``digits`` significant digits, containers
    inline (``{key: value, …}``, ``[a, b]``)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{k}: {format_number(v, digits)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_number(v, digits) for v in value) + "]"
    return str(value)


def headline_numbers(meta: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(key, value)`` of the headline numbers of one run's JSON metadata.

    The keys are the experiment's ``headline`` (dotted paths into the summary; a key the
    summary lacks is skipped), or every top-level summary key when it names none.
    """
    summary = meta.get("summary") or {}
    out = []
    for key in meta.get("headline") or list(summary):
        value: Any = summary
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                break
            value = value[part]
        else:
            out.append((key, value))
    return out


def read_runs(out: Path) -> list[dict[str, Any]]:
    """The JSON metadata of every run in ``out``, by experiment name."""
    runs = []
    for path in sorted(Path(out).glob("*.json")):
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and {"experiment", "summary", "config"} <= set(meta):
            runs.append(meta)
    return sorted(runs, key=lambda m: m["experiment"])


def _config_yaml(meta: Mapping[str, Any]) -> str:
    import yaml

    text = yaml.safe_dump(meta["config"], sort_keys=False, default_flow_style=None, width=90)
    if meta.get("overrides"):
        text += "# overrides: " + " ".join(meta["overrides"]) + "\n"
    return text


def _overview(runs: Sequence[Mapping[str, Any]]) -> str:
    profiles = sorted({m.get("profile", "?") for m in runs})
    total = sum(float(m.get("wall_seconds", 0.0)) for m in runs)
    first = runs[0] if runs else {}
    versions = first.get("versions", {})
    device = first.get("device", {})
    return (
        f"{len(runs)} experiment(s), profile {', '.join(profiles)}, total wall time "
        f"{total:.0f} s; jaxalign {versions.get('jaxalign', '?')}, jax "
        f"{versions.get('jax', '?')} on {device.get('backend', '?')} "
        f"({device.get('kind', '?')} × {device.get('devices', '?')})"
    )


_CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#222}h2{border-top:1px solid #ccc;padding-top:1em}img{max-width:100%;
border:1px solid #eee}table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;
padding:.25em .6em;text-align:left;vertical-align:top}td.v{font-family:monospace}
.meta{color:#555}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}"""


def _html_numbers(pairs: Sequence[tuple[str, Any]]) -> str:
    import html

    rows = "".join(
        f'<tr><th>{html.escape(k)}</th><td class="v">{html.escape(format_number(v))}</td></tr>'
        for k, v in pairs
    )
    return f"<table>{rows}</table>"


def _html_section(meta: Mapping[str, Any], out: Path) -> str:
    import html

    name = meta["experiment"]
    e = html.escape
    files = " · ".join(
        f'<a href="{e(name)}.{ext}">{ext}</a>' for ext in ("png", "csv", "json")
        if (out / f"{name}.{ext}").exists()
    )  # fmt: skip
    img = (
        f'<a href="{e(name)}.png"><img src="{e(name)}.png" alt="{e(name)} figure"></a>'
        if (out / f"{name}.png").exists()
        else "<p>(figure missing)</p>"
    )
    return (
        f'<section id="{e(name)}"><h2>{e(name)}</h2><p>{e(meta.get("description", ""))}</p>'
        f'<p class="meta">profile <b>{e(str(meta.get("profile")))}</b> · wall time '
        f"{float(meta.get('wall_seconds', 0)):.1f} s · {e(str(meta.get('created', '')))}"
        f" · {files}</p>{img}<h3>Headline numbers</h3>{_html_numbers(headline_numbers(meta))}"
        f"<details><summary>all summary numbers</summary>"
        f"{_html_numbers(list((meta.get('summary') or {}).items()))}</details>"
        f"<details><summary>config (YAML)</summary><pre>{e(_config_yaml(meta))}</pre>"
        f"</details></section>"
    )


def _index_html(runs: Sequence[Mapping[str, Any]], out: Path) -> str:
    import html

    toc = "".join(
        f'<li><a href="#{html.escape(m["experiment"])}">{html.escape(m["experiment"])}</a> — '
        f"{html.escape(m.get('description', ''))} ({m.get('profile')}, "
        f"{float(m.get('wall_seconds', 0)):.0f} s)</li>"
        for m in runs
    )
    body = "".join(_html_section(m, out) for m in runs)
    return (
        f'<!doctype html>\n{REPORT_MARKER}\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>jaxalign figures — {html.escape(out.name)}</title><style>{_CSS}</style>"
        f'</head><body><h1>jaxalign figures</h1><p class="meta">{html.escape(_overview(runs))}'
        f"</p><ul>{toc}</ul>{body}</body></html>\n"
    )


def _md_cell(value: Any) -> str:
    return format_number(value).replace("|", "\\|").replace("\n", " ")


def _report_md(runs: Sequence[Mapping[str, Any]], out: Path) -> str:
    lines = [REPORT_MARKER, "# jaxalign figures", "", _overview(runs), ""]
    lines += ["| experiment | profile | wall time | description |", "|---|---|---|---|"]
    for m in runs:
        lines.append(
            f"| [{m['experiment']}](#{m['experiment']}) | {m.get('profile')} | "
            f"{float(m.get('wall_seconds', 0)):.1f} s | {_md_cell(m.get('description', ''))} |"
        )
    for m in runs:
        name = m["experiment"]
        lines += ["", f"## {name}", "", m.get("description", ""), ""]
        if (out / f"{name}.png").exists():
            lines += [f"![{name}]({name}.png)", ""]
        lines += [
            f"profile `{m.get('profile')}` · wall time {float(m.get('wall_seconds', 0)):.1f} s"
            f" · [csv]({name}.csv) · [json]({name}.json)",
            "",
            "| headline number | value |",
            "|---|---|",
        ]
        lines += [f"| `{k}` | {_md_cell(v)} |" for k, v in headline_numbers(m)]
        lines += ["", "<details><summary>config</summary>", "", "```yaml"]
        lines += [_config_yaml(m).rstrip("\n"), "```", "", "</details>"]
    return "\n".join(lines) + "\n"


def write_report(out: Path) -> dict[str, Path]:
    """Writes ``index.html`` and ``REPORT.md`` in ``out`` for every run found there.

    Each lists every figure (relative image path) with its title, headline numbers,
    config (YAML), profile and wall time. A file of that name that this function did not
    write (no :data:`REPORT_MARKER` at its top) is left alone, with a warning.

    Returns:
      ``{"html": path, "md": path}`` for the files written.
    """
    out = Path(out)
    runs = read_runs(out)
    written: dict[str, Path] = {}
    if not runs:
        return written
    for kind, name, text in (
        ("html", "index.html", _index_html(runs, out)),
        ("md", "REPORT.md", _report_md(runs, out)),
    ):
        path = out / name
        if path.exists() and REPORT_MARKER not in path.read_text(errors="replace")[:300]:
            warnings.warn(f"{path} was not written by jaxalign; leaving it alone", stacklevel=2)
            continue
        path.write_text(text)
        written[kind] = path
    return written


__all__ = [
    "PROFILES",
    "Experiment",
    "Result",
    "format_number",
    "get",
    "headline_numbers",
    "load_config",
    "package_versions",
    "read_runs",
    "registry",
    "repo_root",
    "reproduce",
    "write_report",
]
