"""``DIR/eval.json`` (every number, the config, versions) and ``DIR/eval.png`` (a small
point plot with ±2 standard-error bars, exact values marked on the testbed)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from jaxalign.eval.config import EvalConfig
from jaxalign.eval.evaluate import EvalResult, config_dict, evaluate

JSON_NAME, PLOT_NAME = "eval.json", "eval.png"

#: (panel title, [(metric, label)]) of the figure; a metric missing from a result is skipped.
PANELS = (
    ("win rate vs reference", [("win_rate", "P(π ≻ ref)"), ("decisive_win_rate", "decisive")]),
    ("KL(π ‖ π_ref)", [("kl_k1", "k1"), ("kl_k3", "k3")]),
    ("reward", [("reward", "π"), ("reference_reward", "ref")]),
    ("response length", [("response_length", "π"), ("reference_response_length", "ref")]),
)


def result_dict(result: EvalResult, config: EvalConfig) -> dict[str, Any]:
    """The JSON document of an evaluation."""
    from jaxalign.experiment import device_info, package_versions

    metrics = {}
    for name, e in result.sampled.items():
        entry = {"estimate": e.mean, "stderr": e.stderr, "n": e.n}
        if name in result.exact:
            entry["exact"] = result.exact[name]
        elif name.startswith("kl_") and "kl" in result.exact:
            entry["exact"] = result.exact["kl"]
        metrics[name] = entry
    return {
        "metrics": metrics,
        "exact": result.exact,
        **result.info,
        "config": config_dict(config),
        "versions": package_versions(),
        "device": device_info(),
    }


def plot(doc: dict[str, Any], path: Path) -> Path:
    """The figure of an evaluation document: one panel per metric group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxalign import plotting

    metrics = doc["metrics"]
    panels = [(t, [(m, lab) for m, lab in items if m in metrics]) for t, items in PANELS]
    panels = [p for p in panels if p[1]]
    with plotting.style():
        fig, axes = plotting.figure(1, len(panels), panel_size=(2.6, 2.6))
        for ax, (title, items) in zip(axes, panels):
            xs = range(len(items))
            for x, (name, _) in zip(xs, items):
                e = metrics[name]
                ax.errorbar([x], [e["estimate"]], yerr=[2 * e["stderr"]], fmt="o",
                            color=plotting.PALETTE[0], capsize=3)  # fmt: skip
                if "exact" in e:
                    ax.plot([x], [e["exact"]], marker="_", markersize=18,
                            color=plotting.REFERENCE_COLOR)  # fmt: skip
            if title.startswith("win"):
                plotting.reference_line(ax, y=0.5, horizontal=True)
            ax.set_xticks(list(xs), [lab for _, lab in items])
            ax.set_xlim(-0.6, len(items) - 0.4)
            ax.set_title(title)
        fig.suptitle(f"{doc['mode']}: sampled ±2 s.e." + (" (bar: exact)" if doc["exact"] else ""))
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return path


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run(config: EvalConfig, *, log=print) -> dict[str, Any]:
    """Evaluates and writes ``out_dir/eval.json`` and ``out_dir/eval.png``; returns the JSON
    document. Existing outputs are kept unless ``config.overwrite``."""
    out = Path(config.out_dir)
    targets = [out / JSON_NAME, out / PLOT_NAME]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not config.overwrite:
        raise FileExistsError(
            f"{existing[0]} exists; pass --overwrite (overwrite=true) or another --out"
        )
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {str(out)!r} is a file; expected a directory")
    start = time.perf_counter()
    result = evaluate(config)
    doc = _finite(result_dict(result, config))
    doc["runtime_s"] = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_NAME).write_text(json.dumps(doc, indent=2))
    plot(doc, out / PLOT_NAME)
    for line in summary_lines(doc):
        log(line)
    return doc


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """One line per metric: ``name  estimate ± stderr  [exact]``."""
    lines = [f"{doc['mode']}: {doc['num_pairs']} pairs, judge {doc['judge']}"]
    for name, e in doc["metrics"].items():
        exact = f"   exact {e['exact']:.4f}" if "exact" in e else ""
        lines.append(f"  {name:<26} {e['estimate']:.4f} ± {e['stderr']:.4f}{exact}")
    return lines


__all__ = ["JSON_NAME", "PLOT_NAME", "plot", "result_dict", "run", "summary_lines"]
