"""Regularised matrix-game solving: jaxalign (jitted, vmapped) vs OpenSpiel's MMD.

The same KL/entropy-regularised preference games (K = 16 responses, τ = α = 0.2,
uniform reference = magnet) are solved by

* **OpenSpiel** ``open_spiel.python.algorithms.mmd_dilated.MMDDilatedEnt`` on the
  zero-sum matrix game ``A = P - 1/2`` (converted to turn-based), one game at a time,
  ``update_sequences()`` per iteration — the tool a user would pick instead;
* **jaxalign** :func:`jaxalign.games.egpo` (two mirror steps per iteration), T
  iterations in one ``lax.fori_loop``, ``jax.vmap`` over the batch, one ``jax.jit``.

Both converge to the same point — MMD's α-QRE with uniform magnet is the τ-regularised
Nash :math:`\\pi^* \\propto e^{P\\pi^*/\\tau}` — which is checked against
:func:`jaxalign.games.nash_equilibrium`. Reported: game-iterations per second for
batches of 1, 64 and 1024 games (T = 1000) and their ratio, measured in the same run.
OpenSpiel processes games sequentially in Python, so its rate does not depend on the
batch; it is measured on ``--peer-games`` games per batch size (each run for the full T).

Usage (peer installed only in the benchmark venv, see benchmarks/README_games.md)::

    /work/bench-venv/bin/python benchmarks/games_vs_openspiel.py
    python benchmarks/games_vs_openspiel.py --smoke   # seconds, no peer needed
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from jaxalign import games as G

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


def time_jaxalign(games, tau, step, num_steps, repeats=3):
    fn = jaxalign_solver(tau, step, num_steps)
    out = fn(games).block_until_ready()  # compile + warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(games).block_until_ready()
        times.append(time.perf_counter() - t0)
    batch = games.preference.shape[0]
    return batch * num_steps / statistics.median(times), np.asarray(out)


def time_openspiel(pref: np.ndarray, tau: float, step: float, num_steps: int):
    """Runs MMD on each game in ``pref`` [n, K, K]; returns (rate, player-0 policies)."""
    import pyspiel
    from open_spiel.python.algorithms import mmd_dilated

    policies, elapsed = [], 0.0
    for p in pref:
        a = (p - 0.5).astype(np.float64)
        game = pyspiel.convert_to_turn_based(pyspiel.create_matrix_game(a.tolist(), (-a).tolist()))
        mmd = mmd_dilated.MMDDilatedEnt(game, alpha=tau, stepsize=step)
        t0 = time.perf_counter()
        for _ in range(num_steps):
            mmd.update_sequences()
        elapsed += time.perf_counter() - t0
        policies.append(np.asarray(mmd.get_policies().action_probability_array[0]))
    return len(pref) * num_steps / elapsed, np.stack(policies)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, skip the peer")
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 64, 1024])
    ap.add_argument("--num-steps", type=int, default=1000)
    ap.add_argument("--num-responses", type=int, default=16)
    ap.add_argument("--tau", type=float, default=0.2)
    ap.add_argument("--peer-games", type=int, default=3, help="games timed per batch for the peer")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.batches, args.num_steps, args.num_responses = [1, 8], 50, 6

    tau = args.tau
    step = 0.5 / (tau + 1)  # EGPO's step; used as MMD's stepsize too
    try:
        import pyspiel  # noqa: F401

        have_peer = not args.smoke
    except ImportError:
        have_peer = False
    if not have_peer:
        print(
            "OpenSpiel peer column skipped: "
            + ("--smoke mode" if args.smoke else "open_spiel is not installed in this env")
            + " (install it in the benchmark venv, see benchmarks/README_games.md)"
        )

    rows = []
    for batch in args.batches:
        games = make_games(batch, args.num_responses)
        rate_jax, pol_jax = time_jaxalign(games, tau, step, args.num_steps)
        n_check = min(batch, max(args.peer_games, 1))
        stars = [
            np.exp(np.asarray(G.nash_equilibrium(G.PreferenceGame(games.preference[i]), tau)))
            for i in range(n_check)
        ]
        err_jax = max(float(np.abs(np.exp(pol_jax[i]) - stars[i]).max()) for i in range(n_check))
        row = {
            "batch": batch,
            "num_responses": args.num_responses,
            "num_steps": args.num_steps,
            "jaxalign_game_iters_per_s": rate_jax,
            "jaxalign_max_abs_err_to_nash": err_jax,
        }
        if have_peer:
            rate_os, pol_os = time_openspiel(
                np.asarray(games.preference[:n_check], np.float64), tau, step, args.num_steps
            )
            row["openspiel_games_timed"] = n_check
            row["openspiel_game_iters_per_s"] = rate_os
            row["openspiel_max_abs_err_to_nash"] = max(
                float(np.abs(pol_os[i] - stars[i]).max()) for i in range(n_check)
            )
            row["max_abs_diff_jaxalign_vs_openspiel"] = max(
                float(np.abs(pol_os[i] - np.exp(pol_jax[i])).max()) for i in range(n_check)
            )
            row["speedup"] = rate_jax / rate_os
        rows.append(row)

    print(f"{'batch':>6} {'jaxalign it/s':>14} {'openspiel it/s':>15} {'ratio':>8} {'err':>9}")
    for r in rows:
        os_rate = r.get("openspiel_game_iters_per_s")
        peer = f"{os_rate:.3g}" if os_rate else "skipped"
        ratio = f"{r['speedup']:.1f}x" if os_rate else "-"
        err = r["jaxalign_max_abs_err_to_nash"]
        rate = r["jaxalign_game_iters_per_s"]
        print(f"{r['batch']:>6} {rate:>14.3g} {peer:>15} {ratio:>8} {err:>9.1e}")
    result = {
        "benchmark": "games_vs_openspiel",
        "smoke": args.smoke,
        "peer": "open_spiel MMDDilatedEnt" if have_peer else None,
        "tau": tau,
        "step_size": step,
        "device": str(jax.devices()[0]),
        "jax_version": jax.__version__,
        "rows": rows,
    }
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
