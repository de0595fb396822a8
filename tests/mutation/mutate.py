"""Mutation testing of the theory layer: do the property tests catch plausible bugs?

Plants each mutant of :mod:`mutants` (a small, plausible bug in ``jaxalign/{kl, games,
optim, multiobjective, losses}``) one at a time and runs the tests against it; a mutant is
*killed* when some test fails, and the first failing test is reported as its killer. Not
part of CI (each mutant is a fresh pytest run). Run from the repository root::

    .venv/bin/python tests/mutation/mutate.py                      # theory_tests/, per module
    .venv/bin/python tests/mutation/mutate.py --tests all          # theory_tests/ and tests/
    .venv/bin/python tests/mutation/mutate.py --only games-onpo-anchor-is-pi-t --only kl-
    .venv/bin/python tests/mutation/mutate.py --rev HEAD           # the committed tree
    .venv/bin/python tests/mutation/mutate.py --list               # check the snippets apply

**The working tree is never modified.** The library and the tests are copied into a
temporary directory (``--rev`` exports that commit with ``git archive`` instead), the
mutants are planted in that copy, and the copy's file is restored from memory in a
``finally`` block (Ctrl-C included) before the next one; the copy is deleted at the end.
``python -m pytest`` run inside the copy imports the copy's ``jaxalign`` (the current
directory comes first on ``sys.path``, before the editable install's finder).

By default each mutant runs only the test files of its module (``MODULE_TESTS``) with
``-x``: a mutant killed there is killed by ``theory_tests/`` alone; ``--select full`` runs
all of ``theory_tests/`` per mutant instead (slower; can only raise the kill count).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[2]
COPIED = ["jaxalign", "theory_tests", "tests", "conftest.py", "pyproject.toml"]

# Theory test files that state the properties of each module. Losses and games share the
# population-minimiser tests; optim transforms drive the game solvers.
MODULE_TESTS = {
    "kl": ["theory_tests/test_kl.py"],
    "games": [
        "theory_tests/test_games_population.py",
        "theory_tests/test_games_solvers.py",
        "theory_tests/test_games.py",
        "theory_tests/test_losses.py",
    ],
    "optim": [
        "theory_tests/test_optim.py",
        "theory_tests/test_games_solvers.py",
        "theory_tests/test_games.py",
    ],
    "multiobjective": [
        "theory_tests/test_multiobjective.py",
        "theory_tests/test_multiobjective_float32.py",
    ],
    "losses": ["theory_tests/test_losses.py"],
}
UNIT_TESTS = {
    "kl": ["tests/kl"],
    "games": ["tests/games"],
    "optim": ["tests/optim", "tests/games"],
    "multiobjective": ["tests/multiobjective"],
    "losses": ["tests/losses"],
}


def _module(m: Mutant) -> str:
    return m.path.split("/")[1]


def _export(workdir: Path, rev: str | None) -> None:
    if rev is None:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
        for name in COPIED:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, workdir / name, ignore=ignore)
            elif src.exists():
                shutil.copy2(src, workdir / name)
        return
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, *COPIED], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)


def _selection(m: Mutant, tests: str, select: str, workdir: Path) -> list[str]:
    if select == "full":
        files = ["theory_tests"]
    else:
        files = [f for f in MODULE_TESTS[_module(m)] if (workdir / f).exists()]
    if tests == "all":
        files += UNIT_TESTS[_module(m)] if select != "full" else ["tests"]
    return files


_FAILED = re.compile(r"^(FAILED|ERROR) (\S+)", re.MULTILINE)


def _run_pytest(workdir: Path, files: list[str], timeout: float) -> tuple[str, str]:
    """Returns (status, detail): ``killed``/first failing test, ``survived``, ``timeout``."""
    if not files:  # e.g. --rev of a tree without theory tests for this module
        return "survived", "no test file selected"
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider"]
    cmd += ["-o", "addopts=", *files]
    try:
        proc = subprocess.run(
            cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", f"no result within {timeout:.0f} s"
    out = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return "survived", ""
    hit = _FAILED.search(out)
    if hit:
        return "killed", hit.group(2)
    return "killed", f"pytest exit code {proc.returncode}: " + out.strip().splitlines()[-1]


def _check(m: Mutant, text: str) -> str | None:
    n = text.count(m.old)
    return None if n == m.count else f"snippet found {n} times, expected {m.count}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tests", choices=["theory", "all"], default="theory")
    ap.add_argument("--select", choices=["module", "full"], default="module")
    ap.add_argument("--only", action="append", default=[], help="mutant id prefix (repeat)")
    ap.add_argument("--rev", default=None, help="git revision to test instead of the tree")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per mutant")
    ap.add_argument("--baseline", action="store_true", help="first check the tests pass")
    ap.add_argument("--list", action="store_true", help="list mutants and check snippets")
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    args = ap.parse_args(argv)

    chosen = [m for m in MUTANTS if not args.only or any(m.id.startswith(p) for p in args.only)]
    if len({m.id for m in MUTANTS}) != len(MUTANTS):
        raise SystemExit("duplicate mutant ids")
    workdir = Path(tempfile.mkdtemp(prefix="jaxalign-mutants-"))
    # SIGTERM/SIGHUP unwind through the finally blocks below like Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    results = []
    try:
        _export(workdir, args.rev)
        if args.list:
            bad = 0
            for m in chosen:
                problem = _check(m, (workdir / m.path).read_text())
                bad += problem is not None
                print(f"{m.id:45s} {m.path:40s} {problem or 'ok'}")
            print(f"{len(chosen)} mutants, {bad} not applicable")
            return 1 if bad else 0
        if args.baseline:
            groups = {tuple(_selection(m, args.tests, args.select, workdir)) for m in chosen}
            for files in sorted(groups):
                status, detail = _run_pytest(workdir, list(files), args.timeout)
                print(f"baseline {' '.join(files)}: {'ok' if status == 'survived' else detail}")
                if status != "survived":
                    return 2
        for i, m in enumerate(chosen, 1):
            path = workdir / m.path
            original = path.read_text()
            problem = _check(m, original)
            if problem:
                results.append({**m._asdict(), "status": "n/a", "detail": problem, "secs": 0})
                print(f"[{i}/{len(chosen)}] {m.id}: n/a ({problem})", flush=True)
                continue
            files = _selection(m, args.tests, args.select, workdir)
            start = time.time()
            try:
                path.write_text(original.replace(m.old, m.new))
                status, detail = _run_pytest(workdir, files, args.timeout)
            finally:
                path.write_text(original)
            secs = time.time() - start
            results.append({**m._asdict(), "status": status, "detail": detail, "secs": secs})
            print(f"[{i}/{len(chosen)}] {m.id}: {status} {detail} ({secs:.0f} s)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    counted = [r for r in results if r["status"] != "n/a"]
    killed = [r for r in counted if r["status"] in ("killed", "timeout")]
    print("\n| mutant | module | bug | result |\n|---|---|---|---|")
    for r in results:
        what = r["detail"] if r["status"] == "killed" else r["status"].upper()
        print(f"| {r['id']} | {r['path'].split('/')[1]} | {r['why']} | {what} |")
    rate = 100 * len(killed) / max(len(counted), 1)
    print(f"\nkilled {len(killed)} / {len(counted)} applicable mutants ({rate:.1f} %)")
    if args.json:
        args.json.write_text(json.dumps({"tests": args.tests, "rev": args.rev, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
