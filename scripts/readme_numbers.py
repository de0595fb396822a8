"""Print the headline numbers of a ``jaxalign reproduce`` output folder, for the README.

Every number the README quotes should come from a run of a stated profile. After

    jaxalign reproduce --all --out results/quick              # or --profile full

this prints, per experiment, its profile, wall time and headline numbers (the keys its
``Experiment.headline`` names, read from ``NAME.json``), so the README's sentences can be
rewritten from what the code writes now rather than from memory:

    python scripts/readme_numbers.py results/quick
    python scripts/readme_numbers.py results/quick --all-keys --digits 3
    python scripts/readme_numbers.py results/quick --only llm-kl-frontier raco-pareto

Exit status 2 when the folder holds no run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxalign import experiment


def render(out: Path, *, digits: int = 4, all_keys: bool = False, only: Sequence[str] = ()) -> str:
    """The report text for the runs in ``out`` (empty when there are none)."""
    lines = []
    for meta in experiment.read_runs(out):
        name = meta["experiment"]
        if only and name not in only:
            continue
        pairs = (
            list((meta.get("summary") or {}).items())
            if all_keys
            else experiment.headline_numbers(meta)
        )
        overrides = f", overrides {' '.join(meta['overrides'])}" if meta.get("overrides") else ""
        lines.append(
            f"## {name}  (profile {meta.get('profile')}{overrides}; wall "
            f"{float(meta.get('wall_seconds', 0)):.0f} s; jaxalign "
            f"{meta.get('versions', {}).get('jaxalign', '?')}; {meta.get('created', '')})"
        )
        lines += [f"  {k}: {experiment.format_number(v, digits)}" for k, v in pairs]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="output folder of `jaxalign reproduce`")
    p.add_argument("--digits", type=int, default=4, help="significant digits (default 4)")
    p.add_argument("--all-keys", action="store_true", help="every summary key, not the headline")
    p.add_argument("--only", nargs="+", default=(), metavar="NAME", help="these experiments")
    args = p.parse_args(argv)
    text = render(args.out, digits=args.digits, all_keys=args.all_keys, only=args.only)
    if not text:
        print(f"no jaxalign run (NAME.json) in {args.out}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
