"""The ``jaxalign`` command line.

jaxalign reproduce NAME [NAME ...] [--out DIR] [--profile quick|full] [key=value ...]
jaxalign reproduce --all [--out DIR] [--profile quick|full]
jaxalign reproduce --list
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxalign.config import ConfigError


def _reproduce(args: argparse.Namespace) -> int:
    from jaxalign import experiment

    reg = experiment.registry()
    if args.list:
        width = max((len(n) for n in reg), default=0)
        for name, exp in sorted(reg.items()):
            print(f"{name:<{width}}  {exp.description}")
        return 0
    names = [a for a in args.names if "=" not in a]
    overrides = [a for a in args.names if "=" in a]
    if args.all:
        if names:
            raise ValueError("give experiment names or --all, not both")
        if overrides:
            raise ValueError("key=value overrides apply to one experiment; drop --all")
        names = sorted(reg)
    if not names:
        raise ValueError("name an experiment (see `jaxalign reproduce --list`) or pass --all")
    if overrides and len(names) > 1:
        raise ValueError("key=value overrides apply to one experiment at a time")
    exps = [experiment.get(n) for n in names]
    out = args.out if args.out is not None else experiment.default_out_dir()
    for i, exp in enumerate(exps, 1):
        print(f"== ({i}/{len(exps)}) {exp.name}: {exp.description}", flush=True)
        experiment.reproduce(
            exp,
            out=out,
            profile=args.profile,
            config_path=args.config,
            overrides=overrides,
            overwrite=args.overwrite,
        )
    print(f"outputs in {out}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxalign", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run registered paper figures / studies")
    rep.add_argument("names", nargs="*", help="experiment names and key=value overrides")
    rep.add_argument("--all", action="store_true", help="run every registered experiment")
    rep.add_argument("--list", action="store_true", help="list registered experiments")
    rep.add_argument(
        "--out", type=Path, default=None, help="output directory (default results/<timestamp>)"
    )
    rep.add_argument("--profile", choices=("quick", "full"), default="quick")
    rep.add_argument(
        "--config", type=Path, default=None, help="YAML config for a single experiment"
    )
    rep.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    rep.set_defaults(func=_reproduce)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may follow options (`reproduce NAME --out D k=v`); argparse leaves
    # such trailing positionals unparsed, so collect them here.
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if "=" not in e or e.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        if not hasattr(args, "names"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.names = [*args.names, *extra]
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"jaxalign: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
