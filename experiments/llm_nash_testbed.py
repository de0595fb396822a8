"""Online LLM-form Nash algorithms on the enumerable testbed vs their tabular solvers.

A tiny transformer (vocabulary = the testbed alphabet) is trained online with INPO, ONPO,
online IPO, MNPO, EGPO and Nash-MD (with the exact sequence-level mixture and with
Nash-MD-PG's token-level mixture, ``algorithm.mixture``), one training-engine run per
algorithm (:func:`jaxalign.train.train` on a :class:`~jaxalign.train.TrainConfig` built
here): each iteration samples pairs with the KV-cache sampler, labels them with Bernoulli
draws from a non-transitive (cyclic) preference game over all ``A^L`` responses, and fits
the pairwise loss. Because the response space is enumerable, the engine scores the
*exact* duality gap of every iterate (the task's ``exact_history``); it is drawn, with the
gap of the running average, next to the tabular solver of the same
:class:`~jaxalign.games.algorithms.NashAlgorithm` (same step size, same game, from the same
initial policy: the model's enumerated π_0, also the reference). Every run shares
``seed``: the same π_0 (``run.seed``) and the same game (``testbed.seed``). The last panel
shows how far each fitted policy lands from the exact tabular update of the LLM's own π_t
(``tracking_kl``).

Run: ``jaxalign reproduce llm-nash-testbed`` (quick profile: about a minute on a CPU).
"""

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxalign import plotting
from jaxalign.experiment import Experiment, Result
from jaxalign.testbed import scoring
from jaxalign.train import TrainConfig, testbed_run_config, train


@dataclasses.dataclass(frozen=True)
class Config:
    alphabet_size: int = 3  # A (= vocab_size)
    response_length: int = 2  # L; A^L responses
    strength: float = 2.0  # cyclic logit of the rock-paper-scissors styles
    reward_scale: float = 0.5  # std of the additive reward on top
    hidden_size: int = 32
    num_layers: int = 1
    init_scale: float = 0.5  # initializer_range: a non-uniform π_0
    algorithms: tuple[str, ...] = (
        "inpo",
        "onpo",
        "online_ipo",
        "mnpo",
        "egpo",
        "nash_md",
        "nash_md_token",
    )
    num_iterations: int = 20  # T outer iterations (engine steps)
    batch_size: int = 256  # pairs per iteration
    inner_steps: int = 30  # Adam steps per fit
    learning_rate: float = 0.03
    step_size: float = 2.0  # s of INPO / ONPO / MNPO / EGPO / Nash-MD
    tau: float = 0.05  # KL weight of INPO, MNPO, EGPO and Nash-MD
    ipo_tau: float = 0.5  # τ of online IPO (its step is 1/τ)
    num_players: int = 3  # MNPO: the last n − 1 iterates are the opponents
    soft_labels: bool = False  # True: P(a ≻ b) instead of Bernoulli labels
    seed: int = 0  # run.seed (π_0, sampling) and testbed.seed (the game)


LABELS = {
    "inpo": "INPO",
    "onpo": "ONPO",
    "online_ipo": "online IPO",
    "mnpo": "MNPO",
    "egpo": "EGPO",
    "nash_md": "Nash-MD (sequence mixture)",
    "nash_md_token": "Nash-MD (token mixture)",
}


def _algorithm_section(cfg: Config, algorithm: str) -> dict:
    """The ``algorithm`` section: each algorithm sets only the fields it reads."""
    name = "nash_md" if algorithm == "nash_md_token" else algorithm
    section: dict = {"name": name}
    if name == "online_ipo":
        section["tau"] = cfg.ipo_tau
    else:
        section["step_size"] = cfg.step_size
        if name != "onpo":  # ONPO has no KL weight
            section["tau"] = cfg.tau
    if name == "mnpo":
        section["num_players"] = cfg.num_players
    if name == "nash_md":
        section["mixture"] = "token" if algorithm == "nash_md_token" else "sequence"
    return section


def train_config(cfg: Config, algorithm: str, out_dir: Path) -> TrainConfig:
    """The engine config of one algorithm's run (light: no checkpoints, TensorBoard,
    progress bar or saved model)."""
    return testbed_run_config(
        _algorithm_section(cfg, algorithm),
        alphabet_size=cfg.alphabet_size,
        response_length=cfg.response_length,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        init_scale=cfg.init_scale,
        steps=cfg.num_iterations,
        seed=cfg.seed,
        out_dir=out_dir,
        online={
            "batch_size": cfg.batch_size,
            "inner_steps": cfg.inner_steps,
            "learning_rate": cfg.learning_rate,
        },
        testbed={
            "preference": "cyclic",
            "strength": cfg.strength,
            "reward_scale": cfg.reward_scale,
            "seed": cfg.seed,
        },
        oracle={"sample": not cfg.soft_labels},
    )


def _curves(result) -> tuple[dict[str, np.ndarray], scoring.History]:
    """Gap curves (LLM and tabular, last and average iterate) of one engine run, and its
    exact per-iteration history."""
    task = result.task
    h = task.exact_history.history()
    game, steps = task.setup.game, len(h.log_policies) - 1
    avg = np.asarray(scoring.average_policy_gaps(game, h.log_policies))
    tab = scoring.tabular_baseline(task.algorithm, game, h.log_policies[0], task.log_ref, steps)
    gaps = np.asarray(h.duality_gap)
    g0 = gaps[:1]
    curves = {
        "llm_last": gaps,
        "llm_avg": np.concatenate([g0, avg]),
        "llm_reg": np.asarray(h.regularised_gap),
        "tab_last": np.concatenate([g0, np.asarray(tab.last_gap)]),
        "tab_avg": np.concatenate([g0, np.asarray(tab.avg_gap)]),
    }
    return curves, h


def run(cfg: Config, track) -> Result:
    for a in cfg.algorithms:
        if a not in LABELS:
            raise ValueError(f"algorithms must be among {tuple(LABELS)}, got {a!r}")
    num_responses = cfg.alphabet_size**cfg.response_length
    ts = np.arange(cfg.num_iterations + 1)
    curves: dict[str, dict[str, np.ndarray]] = {}
    runtime, kl, tracking, ratio = {}, {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="llm-nash-testbed-") as runs:
        for algorithm in track(cfg.algorithms, "algorithms"):
            t0 = time.perf_counter()
            result = train(train_config(cfg, algorithm, Path(runs) / algorithm), quiet=True)
            curves[algorithm], h = _curves(result)
            runtime[algorithm] = time.perf_counter() - t0
            kl[algorithm] = float(h.kl_to_reference[-1])
            tk = np.asarray(h.tracking_kl)
            if np.all(np.isfinite(tk)):  # NaN where T needs more than π_t (ONPO, MNPO)
                tracking[algorithm] = tk
                ratio[algorithm] = np.asarray(h.step_ratio)

    n = len(curves) + 1
    fig, flat = plotting.panel_grid(
        n,
        max_cols=4,
        panel_size=(3.7, 3.0),
        suptitle=(
            f"online LLM-form vs tabular solvers, cyclic game over {num_responses} responses "
            f"($A={cfg.alphabet_size}$, $L={cfg.response_length}$; $B={cfg.batch_size}$ pairs, "
            f"{cfg.inner_steps} Adam steps, $s={cfg.step_size:g}$, $\\tau={cfg.tau:g}$)"
        ),
    )
    for i, (ax, (algorithm, c)) in enumerate(zip(flat, curves.items(), strict=False)):
        ax.plot(ts, c["llm_last"], "-o", ms=3, color="C0", label="LLM, last iterate")
        ax.plot(ts, c["llm_avg"], "-", color="C2", label="LLM, average iterate")
        ax.plot(ts, c["tab_last"], "--", color="C1", label="tabular, last iterate")
        ax.plot(ts, c["tab_avg"], ":", color="C3", label="tabular, average iterate")
        ax.set_title(LABELS[algorithm])
        ax.set_xlabel("outer iteration $t$")
        ax.set_ylim(bottom=0)
        if i % 4 == 0:
            ax.set_ylabel("exact duality gap")
    plotting.figure_legend(fig, flat[:1], ncols=4)
    ax = flat[len(curves)]
    for algorithm, tk in tracking.items():
        ax.semilogy(ts[1:], tk, "-o", ms=3, label=LABELS[algorithm])
    ax.set_title("fit vs exact update of the LLM's $\\pi_t$")
    ax.set_xlabel("outer iteration $t$")
    ax.set_ylabel(r"$\mathrm{KL}(T(\pi_t)\,\|\,\pi_{t+1})$  [nats]")
    # The exact update T of ONPO and MNPO needs more than π_t (π'_t, past iterates):
    # say so in the legend instead of dropping them silently.
    untracked = [LABELS[a] for a in curves if a not in tracking]
    note = f"not shown: {', '.join(untracked)}\n(exact update needs more than $\\pi_t$)"
    if tracking:
        plotting.legend(ax, outside=True, fontsize=7, title=note if untracked else None)
        if untracked:
            ax.get_legend().get_title().set_fontsize(7)
    else:
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize=7)

    table = {"t": [int(t) for t in ts]}
    for algorithm, c in curves.items():
        for name, v in c.items():
            table[f"{algorithm}_{name}"] = [float(x) for x in v]
        if algorithm in tracking:
            table[f"{algorithm}_tracking_kl"] = [float("nan")] + [
                float(x) for x in tracking[algorithm]
            ]
    first = next(iter(curves.values()))
    summary = {
        "num_responses": num_responses,
        "initial_gap": float(first["llm_last"][0]),
        "final_gap_llm": {a: float(c["llm_last"][-1]) for a, c in curves.items()},
        "final_gap_tabular": {a: float(c["tab_last"][-1]) for a, c in curves.items()},
        "final_avg_gap_llm": {a: float(c["llm_avg"][-1]) for a, c in curves.items()},
        "final_avg_gap_tabular": {a: float(c["tab_avg"][-1]) for a, c in curves.items()},
        "final_regularised_gap_llm": {a: float(c["llm_reg"][-1]) for a, c in curves.items()},
        "min_gap_llm": {a: float(c["llm_last"].min()) for a, c in curves.items()},
        "final_kl_to_reference": kl,
        "first_step_ratio": {a: float(r[0]) for a, r in ratio.items()},
        "median_step_ratio_after_first": {a: float(np.median(r[1:])) for a, r in ratio.items()},
        "median_tracking_kl": {a: float(np.median(v)) for a, v in tracking.items()},
        "runtime_s": runtime,
    }
    return Result(figure=fig, table=table, summary=summary)


EXPERIMENT = Experiment(
    "llm-nash-testbed",
    "Online INPO/ONPO/online IPO/MNPO/EGPO/Nash-MD on a tiny transformer: exact gaps vs tabular",
    Config,
    run,
    headline=(
        "initial_gap",
        "final_gap_llm",
        "final_gap_tabular",
        "final_avg_gap_llm",
        "final_avg_gap_tabular",
        "final_regularised_gap_llm",
        "median_tracking_kl",
    ),
)


def main(argv=None):
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
