"""Online LLM-form Nash algorithms on the enumerable testbed vs their tabular solvers.

A tiny transformer (vocabulary = the testbed alphabet) is trained online with INPO, ONPO,
online IPO, MNPO, EGPO and Nash-MD (with the exact sequence-level mixture and with
Nash-MD-PG's token-level mixture) by :func:`jaxalign.train.online.online_train`: each
iteration samples pairs with the KV-cache sampler, labels them with Bernoulli draws from a
non-transitive (cyclic) preference game over all ``A^L`` responses, and fits the pairwise
loss. Because the response space is enumerable, the *exact* duality gap of every iterate
(and of the running average) is drawn next to the tabular solver of :mod:`jaxalign.games`
with the same step size, on the same game, from the same initial policy (the model's
enumerated π_0, also the reference). The last panel shows how far each fitted policy lands
from the exact tabular update of the LLM's own π_t (``tracking_kl``).

Run: ``jaxalign reproduce llm-nash-testbed`` (quick profile: about two minutes on a CPU).
"""

import dataclasses
import time

import jax
import numpy as np

from jaxalign.data import testbed as tb
from jaxalign.experiment import Experiment, Result
from jaxalign.models import CausalLM, ModelConfig
from jaxalign.train import online as ol


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
    num_iterations: int = 20  # T outer iterations
    batch_size: int = 256  # pairs per iteration
    inner_steps: int = 30  # Adam steps per fit
    learning_rate: float = 0.03
    step_size: float = 2.0  # s of INPO / ONPO / MNPO
    tau: float = 0.05  # KL weight of INPO, MNPO, EGPO and Nash-MD
    ipo_tau: float = 0.5  # τ of online IPO (its step is 1/τ)
    num_players: int = 3  # MNPO: the last n − 1 iterates are the opponents
    soft_labels: bool = False  # True: P(a ≻ b) instead of Bernoulli labels
    seed: int = 0


LABELS = {
    "inpo": "INPO",
    "onpo": "ONPO",
    "online_ipo": "online IPO",
    "mnpo": "MNPO",
    "egpo": "EGPO",
    "nash_md": "Nash-MD (sequence mixture)",
    "nash_md_token": "Nash-MD (token mixture)",
}


def _online_config(cfg: Config, algorithm: str) -> ol.OnlineConfig:
    tau = {"online_ipo": cfg.ipo_tau, "onpo": 0.0}.get(algorithm, cfg.tau)
    return ol.OnlineConfig(
        algorithm="nash_md" if algorithm == "nash_md_token" else algorithm,
        mixture="token" if algorithm == "nash_md_token" else "sequence",
        num_iterations=cfg.num_iterations,
        batch_size=cfg.batch_size,
        inner_steps=cfg.inner_steps,
        learning_rate=cfg.learning_rate,
        step_size=cfg.step_size,
        tau=tau,
        num_players=cfg.num_players,
    )


def run(cfg: Config, track) -> Result:
    import matplotlib.pyplot as plt

    for a in cfg.algorithms:
        if a not in LABELS:
            raise ValueError(f"algorithms must be among {tuple(LABELS)}, got {a!r}")
    testbed = tb.Testbed(alphabet_size=cfg.alphabet_size, response_length=cfg.response_length)
    key_model, key_game, key_train = jax.random.split(jax.random.key(cfg.seed), 3)
    model_config = ModelConfig(
        vocab_size=cfg.alphabet_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=2 * cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=2,
        num_kv_heads=1,
        head_dim=cfg.hidden_size // 2,
        initializer_range=cfg.init_scale,
    )
    model = CausalLM.create(model_config, key=key_model)
    game = tb.cyclic_preference(
        testbed, strength=cfg.strength, reward_scale=cfg.reward_scale, key=key_game
    )
    oracle = ol.testbed_oracle(testbed, game, sample=not cfg.soft_labels)

    ts = np.arange(cfg.num_iterations + 1)
    curves: dict[str, dict[str, np.ndarray]] = {}
    runtime, kl, tracking, ratio = {}, {}, {}, {}
    for algorithm in track(cfg.algorithms, "algorithms"):
        oc = _online_config(cfg, algorithm)
        t0 = time.perf_counter()
        res = ol.online_train(model, testbed, game, oc, key=key_train, oracle=oracle)
        gaps = np.asarray(res.history.duality_gap)
        runtime[algorithm] = time.perf_counter() - t0
        lps = res.history.log_policies
        avg = np.asarray(ol.average_policy_gaps(game, lps))
        tab = ol.tabular_baseline(oc, game, lps[0], res.log_ref)
        g0 = gaps[:1]
        curves[algorithm] = {
            "llm_last": gaps,
            "llm_avg": np.concatenate([g0, avg]),
            "llm_reg": np.asarray(res.history.regularised_gap),
            "tab_last": np.concatenate([g0, np.asarray(tab.last_gap)]),
            "tab_avg": np.concatenate([g0, np.asarray(tab.avg_gap)]),
        }
        kl[algorithm] = float(res.history.kl_to_reference[-1])
        tk = np.asarray(res.history.tracking_kl)
        if np.all(np.isfinite(tk)):
            tracking[algorithm] = tk
            ratio[algorithm] = np.asarray(res.history.step_ratio)

    n = len(curves) + (1 if tracking else 0)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    flat = axes.ravel()
    for ax, (algorithm, c) in zip(flat, curves.items()):
        ax.plot(ts, c["llm_last"], "-o", ms=3, color="C0", label="LLM, last iterate")
        ax.plot(ts, c["llm_avg"], "-", color="C2", label="LLM, average iterate")
        ax.plot(ts, c["tab_last"], "--", color="C1", label="tabular, last iterate")
        ax.plot(ts, c["tab_avg"], ":", color="C3", label="tabular, average iterate")
        ax.set_title(LABELS[algorithm], fontsize=10)
        ax.set_xlabel("outer iteration t", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("exact duality gap")
    flat[0].legend(fontsize=7)
    if tracking:
        ax = flat[len(curves)]
        for algorithm, tk in tracking.items():
            ax.semilogy(ts[1:], tk, "-o", ms=3, label=LABELS[algorithm])
        ax.set_title("KL(T(π_t) ‖ π_{t+1}): fit vs exact update", fontsize=9)
        ax.set_xlabel("outer iteration t", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    for ax in flat[n:]:
        ax.axis("off")
    fig.suptitle(
        f"online LLM-form vs tabular solvers, cyclic game over {testbed.num_responses} responses "
        f"(A={cfg.alphabet_size}, L={cfg.response_length}; B={cfg.batch_size} pairs, "
        f"{cfg.inner_steps} Adam steps, s={cfg.step_size:g}, τ={cfg.tau:g})",
        fontsize=10,
    )
    fig.tight_layout()

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
        "num_responses": testbed.num_responses,
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
)


def main(argv=None):
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
