"""Regularised matrix-game solving: jaxalign (jitted, vmapped) vs OpenSpiel's MMD, interleaved.

The same KL/entropy-regularised preference games (K = 16 responses, τ = α = 0.2,
uniform reference = magnet) are solved by

* **OpenSpiel** ``open_spiel.python.algorithms.mmd_dilated.MMDDilatedEnt`` on the
  zero-sum matrix game ``A = P - 1/2`` (converted to turn-based), one game at a time,
  ``update_sequences()`` per iteration — the tool a user would pick instead;
* **jaxalign** :func:`jaxalign.games.egpo` (two mirror steps per iteration), T
  iterations in one ``lax.fori_loop``, ``jax.vmap`` over the batch, one ``jax.jit``.

Both converge to the same point — MMD's α-QRE with uniform magnet is the τ-regularised
Nash :math:`\\pi^* \\propto e^{P\\pi^*/\\tau}` — which is checked against
:func:`jaxalign.games.nash_equilibrium` after the first T iterations of each side.

Timed unit: T = 1000 iterations. A jaxalign call solves a whole batch (1, 64 or 1024
games) from the start, ending in ``block_until_ready``; an OpenSpiel call runs T more
``update_sequences()`` on one game (OpenSpiel works one game at a time in Python, so its
rate does not depend on the batch; its solver object is built once, outside the timing).
All four sides run interleaved in one loop (``benchmarks/harness.py``: warm-up, wait for a
quiet machine, ``--repeats`` rounds, min and median). Reported: game-iterations per
second and, per batch size, the ratio jaxalign / OpenSpiel of the medians and of the mins.

Usage (peer installed only in the benchmark venv, see benchmarks/README.md)::

    /work/bench-venv/bin/python benchmarks/games_vs_openspiel.py
    python benchmarks/games_vs_openspiel.py --smoke   # seconds, no peer needed
"""

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

from jaxalign import games as G

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

RESULTS = Path(__file__).resolve().parent / "results" / "games_vs_openspiel.json"


def make_games(batch: int, k: int, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), batch)
    return jax.vmap(lambda key: G.random_game(k, key=key, scale=2.0))(keys)


def jaxalign_solver(tau: float, step: float, num_steps: int):
    solver = G.egpo(step, tau=tau)

    def solve(game):
        state = jax.lax.fori_loop(
            0, num_steps, lambda _, s: solver.step(game, s), solver.init(game)
        )
        return state.log_policy

    return jax.jit(jax.vmap(solve))


def openspiel_solver(pref: np.ndarray, tau: float, step: float, num_steps: int):
    """A call that runs ``num_steps`` more MMD iterations on one game; returns π (player 0)."""
    import pyspiel
    from open_spiel.python.algorithms import mmd_dilated

    a = (pref - 0.5).astype(np.float64)
    game = pyspiel.convert_to_turn_based(pyspiel.create_matrix_game(a.tolist(), (-a).tolist()))
    mmd = mmd_dilated.MMDDilatedEnt(game, alpha=tau, stepsize=step)

    def run():
        for _ in range(num_steps):
            mmd.update_sequences()
        return np.asarray(mmd.get_policies().action_probability_array[0])

    return run


def _rate(median: float, best: float) -> str:
    return f"{median:.3g} ({best:.3g})"


def _have_peer() -> bool:
    try:
        import pyspiel  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, skip the peer")
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 64, 1024])
    ap.add_argument("--num-steps", type=int, default=1000)
    ap.add_argument("--num-responses", type=int, default=16)
    ap.add_argument("--tau", type=float, default=0.2)
    harness.add_protocol_args(ap, repeats=5, warmup=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.batches, args.num_steps, args.num_responses, args.repeats = [1, 8], 50, 6, 2

    tau, T = args.tau, args.num_steps
    step = 0.5 / (tau + 1)  # EGPO's step; used as MMD's stepsize too
    have_peer = not args.smoke and _have_peer()
    if not have_peer:
        print(
            "OpenSpiel peer column skipped: "
            + ("--smoke mode" if args.smoke else "open_spiel is not installed in this env")
            + " (install it in the benchmark venv, see benchmarks/README.md)"
        )
    games = make_games(max(args.batches), args.num_responses)
    solve = jaxalign_solver(tau, step, T)
    batches = {b: jax.tree.map(lambda x, b=b: x[:b], games) for b in args.batches}
    sides = {
        f"jaxalign b={b}": (lambda g=g: np.asarray(jax.block_until_ready(solve(g))))
        for b, g in batches.items()
    }
    if have_peer:
        sides["openspiel"] = openspiel_solver(np.asarray(games.preference[0]), tau, step, T)
    m = harness.run_interleaved(
        sides,
        repeats=args.repeats,
        warmup=args.warmup,
        max_wait=args.max_wait,
        quiet_load=args.quiet_load,
        smoke=args.smoke,
    )

    # Accuracy after the first T iterations (the first warm-up call of every side).
    n_check = 3
    stars = [
        np.exp(np.asarray(G.nash_equilibrium(G.PreferenceGame(games.preference[i]), tau)))
        for i in range(n_check)
    ]
    rows = []
    for b in args.batches:
        name = f"jaxalign b={b}"
        pol = m.outputs[name][0]
        stats = m.stats(name)
        row = {
            "batch": b,
            "num_responses": args.num_responses,
            "num_steps": T,
            "jaxalign": stats,
            "jaxalign_game_iters_per_s_median": b * T / stats["median_s"],
            "jaxalign_game_iters_per_s_best": b * T / stats["min_s"],
            "jaxalign_max_abs_err_to_nash": max(
                float(np.abs(np.exp(pol[i]) - stars[i]).max()) for i in range(min(b, n_check))
            ),
        }
        if have_peer:
            r = m.ratio("openspiel", name)  # per call; a jaxalign call solves b games
            row["ratio_jaxalign_over_openspiel"] = {k: b * v for k, v in r.items()}
        rows.append(row)
    peer = None
    if have_peer:
        stats = m.stats("openspiel")
        pol_os = m.outputs["openspiel"][0]
        peer = {
            **stats,
            "game_iters_per_s_median": T / stats["median_s"],
            "game_iters_per_s_best": T / stats["min_s"],
            "max_abs_err_to_nash": float(np.abs(pol_os - stars[0]).max()),
            "max_abs_diff_to_jaxalign": float(
                np.abs(pol_os - np.exp(m.outputs[f"jaxalign b={args.batches[-1]}"][0][0])).max()
            ),
        }

    record = harness.machine(("open_spiel",) if have_peer else ())
    print(f"τ = α = {tau}, step {step:.4f}, K = {args.num_responses}, T = {T} iterations per call")
    print(harness.describe_machine(record))
    print("game-iterations/s: median (best) of the interleaved rounds; ratio jaxalign / "
          "OpenSpiel: of medians / of mins")  # fmt: skip
    print(f"{'batch':>6} {'jaxalign it/s':>22} {'openspiel it/s':>22} {'ratio':>17} {'err':>9}")
    for r in rows:
        rate = _rate(r["jaxalign_game_iters_per_s_median"], r["jaxalign_game_iters_per_s_best"])
        if peer:
            os_rate = _rate(peer["game_iters_per_s_median"], peer["game_iters_per_s_best"])
            q = r["ratio_jaxalign_over_openspiel"]
            ratio = f"{q['ratio_of_medians']:.0f}x / {q['ratio_of_mins']:.0f}x"
        else:
            os_rate, ratio = "skipped", "-"
        err = r["jaxalign_max_abs_err_to_nash"]
        print(f"{r['batch']:>6} {rate:>22} {os_rate:>22} {ratio:>17} {err:>9.1e}")
    if peer:
        print(f"OpenSpiel: max |π − π*| {peer['max_abs_err_to_nash']:.1e}, max |π_os − π_jaxalign| "
              f"{peer['max_abs_diff_to_jaxalign']:.1e} (game 0)")  # fmt: skip
    harness.print_verdict(m)
    result = {
        "benchmark": "games_vs_openspiel",
        "smoke": args.smoke,
        "label": m.label,
        "peer": "open_spiel MMDDilatedEnt" if have_peer else None,
        "tau": tau,
        "step_size": step,
        "rows": rows,
        "openspiel": peer,
        "conditions": m.conditions(),
        "machine": record,
    }
    if not args.smoke:
        path = harness.write_json(args.out, result)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
