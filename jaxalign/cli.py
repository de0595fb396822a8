"""The ``jaxalign`` command line.

jaxalign reproduce NAME [NAME ...] [--out DIR] [--profile quick|full] [key=value ...]
jaxalign reproduce --all [--out DIR] [--profile quick|full]
jaxalign reproduce --list
jaxalign train CONFIG.yaml [key=value ...] [--resume | --overwrite] [--out DIR]
jaxalign eval CONFIG.yaml [key=value ...] [--out DIR] [--overwrite]

Errors are one line on stderr, ``jaxalign: error: …``, without a traceback (set
``JAXALIGN_TRACEBACK=1`` to see it). Exit codes: 0 done; 1 the run failed (non-finite
loss, unreadable checkpoints, an unexpected error); 2 a usage error (unknown subcommand,
option or config key, a bad value, a missing or malformed file); 130 interrupted
(SIGINT/SIGTERM, after checkpointing).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxalign.config import ConfigError

#: Exceptions that mean the command was given something wrong (exit code 2).
USAGE_ERRORS = (ConfigError, ValueError, FileNotFoundError, FileExistsError, IsADirectoryError)
TRACEBACK_ENV = "JAXALIGN_TRACEBACK"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the usage block first), and
    options are never abbreviated (``--over`` must not silently mean ``--overwrite``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        sys.stderr.write(f"jaxalign: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def one_line(error: BaseException) -> str:
    """The error's message on one line (multi-line messages, e.g. YAML marks, joined);
    errors of unexpected types are prefixed with their type."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    if isinstance(error, (*USAGE_ERRORS, RuntimeError)) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


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


def _train(args: argparse.Namespace) -> int:
    from jaxalign import train as training

    # Options may also follow the config and overrides: `train cfg.yaml k=v --resume`.
    rest = _train_options(_Parser(prog="jaxalign train"))
    rest.add_argument("overrides", nargs="*")
    more = rest.parse_intermixed_args(args.rest)
    overrides = list(more.overrides)
    args.out = more.out if more.out is not None else args.out
    args.resume = args.resume or more.resume
    args.overwrite = args.overwrite or more.overwrite
    if args.resume and args.overwrite:
        raise ValueError("give --resume or --overwrite, not both")
    if args.out is not None:
        overrides.append(f"run.out_dir={args.out}")
    if args.resume:
        overrides.append("run.resume=true")
    if args.overwrite:
        overrides.append("run.overwrite=true")
    config = training.load_train_config(args.config, overrides)
    result = training.train(config)  # failures are reported by main(): one line, exit 1
    s = result.summary
    if "first_loss" in s:
        print(f"step {result.step}: loss {s['first_loss']:.4f} -> {s['last_loss']:.4f}")
    print(f"run directory: {result.out_dir} ({result.status})")
    return 130 if result.status == "interrupted" else 0


def _train_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", default=None, help="run directory (overrides run.out_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="delete the run directory first")
    return parser


def _eval(args: argparse.Namespace) -> int:
    from jaxalign import eval as evaluation

    rest = _Parser(prog="jaxalign eval")
    _eval_options(rest)
    rest.add_argument("overrides", nargs="*")
    more = rest.parse_intermixed_args(args.rest)
    overrides = list(more.overrides)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"expected key=value overrides after the config, got {bad[0]!r}")
    out = more.out if more.out is not None else args.out
    if out is not None:
        overrides.append(f"out_dir={out}")
    if args.overwrite or more.overwrite:
        overrides.append("overwrite=true")
    config = evaluation.load_eval_config(args.config, overrides)
    evaluation.run(config)
    print(f"wrote {Path(config.out_dir) / 'eval.json'} and {Path(config.out_dir) / 'eval.png'}")
    return 0


def _eval_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", default=None, help="output directory (overrides out_dir)")
    parser.add_argument("--overwrite", action="store_true", help="replace eval.json / eval.png")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxalign", description=__doc__.split("\n")[0])
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
    tr = sub.add_parser(
        "train",
        help="train a policy (offline DPO/IPO/robust DPO, or online Nash) from a YAML config",
    )
    tr.add_argument("config", type=Path, help="YAML config, e.g. configs/train/dpo_tiny.yaml")
    _train_options(tr)
    tr.add_argument(
        "rest", nargs=argparse.REMAINDER, help="dotted key=value overrides (and the options)"
    )
    tr.set_defaults(func=_train)
    ev = sub.add_parser(
        "eval",
        help="a policy vs a reference: win rate, reward, KL, length (exact on the testbed)",
    )
    ev.add_argument("config", type=Path, help="YAML config, e.g. configs/eval/testbed.yaml")
    _eval_options(ev)
    ev.add_argument(
        "rest", nargs=argparse.REMAINDER, help="dotted key=value overrides (and the options)"
    )
    ev.set_defaults(func=_eval)
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
    except KeyboardInterrupt:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print("jaxalign: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get(TRACEBACK_ENV):
            raise
        usage = isinstance(e, USAGE_ERRORS)
        hint = "" if usage else f" (set {TRACEBACK_ENV}=1 for the traceback)"
        print(f"jaxalign: error: {one_line(e)}{hint}", file=sys.stderr, flush=True)
        return 2 if usage else 1


if __name__ == "__main__":
    raise SystemExit(main())
