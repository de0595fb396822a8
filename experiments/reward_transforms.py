"""LSC reward transform vs the raw reward sum, with an exploitable spike, exactly on the testbed.

Two properties ("helpful", "harmless") on the enumerable testbed (A^L responses): gold
rewards additive over positions (unit spread, correlation ``gold_correlation``), and two
proxy reward models equal to gold except that the helpful RM has an **exploitable spike**:
it adds ``spike_height`` (in units of the gold standard deviation) on the ``spike_fraction``
of responses that are *least* harmless. The base policy π₀ is a product of random
per-position token distributions.

For a grid of KL budgets Δ the exact KL-constrained RL optimum (``kl.kl_constrained_policy``,
the tilt π₀ e^{R/β} with KL(π‖π₀) = Δ) is computed for three combined rewards:

* raw sum R = r_h + r_s;
* LSC AND R = log σ(r_h − r_ref,h) + log σ(r_s − r_ref,s), r_ref the exact ``quantile``
  of each proxy under π₀ (``kl.lsc_reward``);
* LSC with the Gaussian shortcut r_ref = mean + Φ⁻¹(q)·std (the trap of the notes);
* control: the raw sum of the spike-free (gold) rewards.

Measured exactly (finite sums over all responses), averaged over ``num_instances`` random
instances in one jitted vmap: the probability of responses **good in both** (gold above the
π₀-median on both properties), the gold win rate against π₀ on each property, and the mass
on the spike.

(d-f) the LLM form on the training engine (:func:`jaxalign.train.engine.run`, no separate
loop): a tiny random transformer is π_ref on the same testbed; for each KL budget in
``transformer_budgets`` the engine's KL-PG task (``algorithm.name: kl_pg``; RLOO baseline,
k2 KL in the loss) is trained once on the raw sum and once on the LSC AND, both rescaled to
[0, 1] (an affine map: the same tilts), with β the one whose exact tilt of π_ref has KL = Δ.
The rewards, r_ref and the "good" thresholds are computed from π_ref's exact distribution at
``init`` (a :class:`~jaxalign.train.tasks.policy_gradient.PolicyGradientTask` subclass, as in
``infalign``'s panel (e)); the instance (gold rewards, spike) is the typical one: the median,
over the ``num_instances`` instances of (a-c), of the raw sum's exact spike mass at the first
transformer budget, with its π₀ replaced by the transformer's π_ref. Each trained policy is
scored exactly (KL to π_ref, mass good in both, spike mass, gold win rates, KL to its Gibbs
target) next to the exact optima of the same π_ref.

    jaxalign reproduce reward-transforms --out results/reward-transforms
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import kl, plotting
from jaxalign.experiment import Experiment, Result
from jaxalign.testbed import Testbed
from jaxalign.testbed.space import additive_reward


@dataclasses.dataclass(frozen=True)
class Config:
    alphabet_size: int = 4  # tokens A
    response_length: int = 4  # L; A^L responses are enumerated
    num_instances: int = 32  # random (π₀, gold, spike) instances, vmapped
    base_scale: float = 1.0  # std of π₀'s per-position token logits
    gold_correlation: float = -0.3  # correlation of helpful and harmless token rewards
    spike_fraction: float = 0.04  # fraction of responses (least harmless first) with a spike
    spike_height: float = 4.0  # spike added to the helpful RM, in gold standard deviations
    quantile: float = 0.85  # r_ref = this quantile of each proxy RM under π₀
    good_quantile: float = 0.5  # "good": gold above this quantile of gold under π₀
    num_budgets: int = 40  # KL budgets Δ, log-spaced
    min_kl: float = 0.01  # smallest budget (nats)
    max_kl: float = 5.0  # largest budget (nats)
    report_kl: float = 2.0  # budget at which the summary compares the methods
    seed: int = 0
    # Panels (d-f): a tiny random transformer π_ref on the same testbed (the gold rewards and
    # spike of instance 0), trained by KL-PG (the training engine's kl_pg task: RLOO, k2 KL
    # in the loss) on the raw sum and on the LSC AND, β solved per KL budget.
    transformer_budgets: tuple[float, ...] = (2.0,)  # empty: no transformer panels
    hidden_size: int = 32  # model width
    num_layers: int = 1  # model depth
    init_scale: float = 0.1  # weight std of the random reference
    pg_steps: int = 600  # engine steps per run
    pg_group_size: int = 32  # responses sampled per step (RLOO group)
    pg_learning_rate: float = 0.004

    def __post_init__(self):
        if min(self.transformer_budgets, default=1.0) <= 0:
            raise ValueError(f"transformer_budgets must be > 0, got {self.transformer_budgets}")
        if self.pg_steps < 1 or self.pg_group_size < 2:
            raise ValueError("need pg_steps >= 1 and pg_group_size >= 2 (RLOO)")


METHODS = ("raw sum", "LSC AND", "LSC AND, Gaussian $r_{\\rm ref}$")
CONTROL = "raw sum, spike-free RMs"  # the raw sum of the gold rewards: what the spike costs


def _standardise(r: jax.Array) -> jax.Array:
    return (r - jnp.mean(r)) / jnp.std(r)


def _instance(
    cfg: Config, testbed: Testbed, key: jax.Array, log_base: jax.Array | None = None
) -> dict[str, jax.Array]:
    """One instance: π₀ (a random product distribution, or ``log_base`` when given), the gold
    and proxy rewards, the combined rewards and the good-in-both / spike indicators."""
    k_base, k_h, k_s = jax.random.split(key, 3)
    shape = (cfg.response_length, cfg.alphabet_size)
    if log_base is None:
        token_logp = jax.nn.log_softmax(jax.random.normal(k_base, shape) * cfg.base_scale, -1)
        log_base = additive_reward(testbed, token_logp)  # a product of per-position dists
    z_h, z_s = jax.random.normal(k_h, shape), jax.random.normal(k_s, shape)
    rho = cfg.gold_correlation
    gold_h = _standardise(additive_reward(testbed, z_h))
    gold_s = _standardise(additive_reward(testbed, rho * z_h + np.sqrt(1 - rho**2) * z_s))
    n_spike = max(1, round(cfg.spike_fraction * testbed.num_responses))
    spike = jnp.zeros(testbed.num_responses).at[jnp.argsort(gold_s)[:n_spike]].set(1.0)
    proxies = jnp.stack([gold_h + cfg.spike_height * spike, gold_s])
    q = cfg.quantile
    refs_exact = jax.vmap(lambda r: kl.reference_reward(log_base, r, q))(proxies)
    refs_gauss = jax.vmap(lambda r: kl.gaussian_reference_reward(log_base, r, q))(proxies)
    rewards = jnp.stack(
        [
            proxies.sum(0),
            kl.and_combination(proxies, refs_exact),
            kl.and_combination(proxies, refs_gauss),
            gold_h + gold_s,
        ]
    )
    thresholds = jax.vmap(lambda g: kl.reference_reward(log_base, g, cfg.good_quantile))(
        jnp.stack([gold_h, gold_s])
    )
    good_both = ((gold_h > thresholds[0]) & (gold_s > thresholds[1])).astype(log_base.dtype)
    return dict(
        log_base=log_base,
        gold=jnp.stack([gold_h, gold_s]),
        spike=spike,
        good_both=good_both,
        rewards=rewards,
        refs_exact=refs_exact,
        refs_gauss=refs_gauss,
        # The π₀-quantile level actually hit by the Gaussian r_ref of the spiked RM.
        gauss_level=jnp.exp(log_base) @ (proxies[0] <= refs_gauss[0]).astype(log_base.dtype),
    )


def _curves(inst: dict[str, jax.Array], budgets: jax.Array) -> dict[str, jax.Array]:
    """[methods, budgets] exact metrics of the KL-constrained optimum of each reward."""
    log_base = inst["log_base"]

    def one(reward, delta):
        log_pi, _ = kl.kl_constrained_policy(log_base, reward, delta)
        pi = jnp.exp(log_pi)
        wins = jax.vmap(lambda g: kl.win_rate(log_pi, log_base, g))(inst["gold"])
        return dict(
            kl=kl.kl_divergence(log_pi, log_base),
            good_both=pi @ inst["good_both"],
            spike=pi @ inst["spike"],
            win_helpful=wins[0],
            win_harmless=wins[1],
        )

    per_budget = jax.vmap(one, in_axes=(None, 0))
    return jax.vmap(per_budget, in_axes=(0, None))(inst["rewards"], budgets)


# ---------------------------------------------------------------------------------------------
# Transformer panels: a tiny transformer π_ref on the same testbed, trained by KL-PG (the
# training engine's PolicyGradientTask) on the raw sum and on the LSC AND, scored exactly.

TRANSFORMER_METHODS = (0, 1)  # rows of ``_instance(...)["rewards"]``: raw sum, LSC AND


def _pg_config(cfg: Config, out_dir):
    from jaxalign.train import testbed_run_config

    return testbed_run_config(
        {"name": "kl_pg", "beta": 1.0,  # replaced once π_ref is known
         "group_size": cfg.pg_group_size, "baseline": "leave_one_out", "estimator": "k2",
         "kl_mode": "loss"},
        alphabet_size=cfg.alphabet_size, response_length=cfg.response_length,
        hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, init_scale=cfg.init_scale,
        steps=cfg.pg_steps, seed=cfg.seed, out_dir=out_dir,
        online={"batch_size": 1, "learning_rate": cfg.pg_learning_rate},
        testbed={"preference": "bradley_terry", "seed": cfg.seed},
    )  # fmt: skip


def _transformer_instance(cfg: Config, testbed: Testbed, key: jax.Array):
    """A jitted ``(log_ref, budget) -> (instance, phi [2, K], targets [2, K], betas [2])`` on
    the transformer's π_ref: the instance of ``key`` with π₀ replaced by π_ref; ``phi`` the
    raw sum and LSC AND rescaled to [0, 1] (an affine map: the same tilts, a
    learning-rate-friendly scale); ``targets``, ``betas`` their tilts of π_ref with KL =
    ``budget``."""

    @jax.jit
    def prepare(log_ref, budget):
        inst = _instance(cfg, testbed, key, log_base=log_ref)
        r = inst["rewards"][jnp.asarray(TRANSFORMER_METHODS)]
        lo, hi = r.min(axis=1, keepdims=True), r.max(axis=1, keepdims=True)
        phi = (r - lo) / (hi - lo)
        targets, betas = jax.vmap(lambda p: kl.kl_constrained_policy(log_ref, p, budget))(phi)
        return inst, phi, targets, betas

    return prepare


def _train_transformers(cfg: Config, track, keys: jax.Array, index: int) -> list[dict]:
    """One engine run of KL-PG per (reward, budget), all from the same random π_ref, on
    instance ``index`` (gold rewards, spike) with its π₀ replaced by the transformer's
    enumerated π_ref (r_ref and "good" are quantiles under π_ref)."""
    import tempfile
    from pathlib import Path

    from jaxalign.train.engine import run as engine_run
    from jaxalign.train.tasks.policy_gradient import PolicyGradientTask

    testbed = Testbed(cfg.alphabet_size, cfg.response_length)
    prepare = _transformer_instance(cfg, testbed, keys[index])  # compiled once for all runs

    def combined_reward(method, budget, info):
        """KL-PG's combined reward (and β: its tilt of π_ref has KL = ``budget``) from π_ref's
        exact distribution; the instance and target are recorded in ``info``."""

        def make(log_ref, _testbed_reward):
            inst, phi, targets, betas = prepare(jax.nn.log_softmax(log_ref), budget)
            m = TRANSFORMER_METHODS.index(method)
            info.update(inst=inst, instance=index, target=targets[m], beta=float(betas[m]))
            return phi[m], float(betas[m])

        return make

    runs = []
    jobs = [(m, d) for d in cfg.transformer_budgets for m in TRANSFORMER_METHODS]
    with tempfile.TemporaryDirectory(prefix="reward-transforms-") as tmp:
        for i, (method, budget) in enumerate(track(jobs, "KL-PG runs (transformer)")):
            info = {}
            make = combined_reward(method, budget, info)
            factory = lambda ctx, make=make: PolicyGradientTask(ctx, testbed_reward=make)
            result = engine_run(_pg_config(cfg, Path(tmp) / f"run-{i}"), factory, quiet=True)
            log_pi = jax.nn.log_softmax(result.task.exact_log_probs(result.state.params))
            runs.append(dict(method=method, budget=float(budget), log_pi=log_pi, **info))
    return runs


@jax.jit
def _trained_metrics(log_pi, inst, target) -> dict[str, jax.Array]:
    log_ref, pi, q = inst["log_base"], jnp.exp(log_pi), jnp.exp(target)
    wins = jax.vmap(lambda g: kl.win_rate(log_pi, log_ref, g))(inst["gold"])
    return dict(
        kl=kl.kl_divergence(log_pi, log_ref),
        good_both=pi @ inst["good_both"],
        spike=pi @ inst["spike"],
        win_helpful=wins[0],
        win_harmless=wins[1],
        kl_to_target=kl.kl_divergence(log_pi, target),
        target_good_both=q @ inst["good_both"],
        target_spike=q @ inst["spike"],
    )


def _score_transformers(cfg: Config, runs: list[dict], budgets: jax.Array) -> dict:
    """Exact metrics of every trained policy, and the exact curves of the transformer's π_ref."""
    inst = runs[0]["inst"]
    curves = {k: np.asarray(v) for k, v in jax.jit(_curves)(inst, budgets).items()}
    trained = []
    for r in runs:
        out = _trained_metrics(r["log_pi"], inst, r["target"])
        trained.append(
            dict(
                method=METHODS[r["method"]],
                budget=r["budget"],
                beta=r["beta"],
                **{k: float(v) for k, v in out.items()},
            )
        )
    base = jnp.exp(inst["log_base"])
    return dict(
        curves=curves,
        trained=trained,
        good_both_base=float(base @ inst["good_both"]),
        spike_base=float(base @ inst["spike"]),
    )


def _transformer_panels(cfg: Config, axes, x, transformer: dict, colours) -> None:
    """(d-f): the exact curves of the transformer's own π_ref and the KL-PG policies on them."""
    curves, trained = transformer["curves"], transformer["trained"]
    markers = ("o", "s", "^", "D")
    budgets = sorted({o["budget"] for o in trained})
    panels = [
        ("good_both", "P(good in both) under gold rewards", "(d) good in both"),
        ("win", "gold win rate vs $\\pi_{\\rm ref}$", "(e) gold win rate vs $\\pi_{\\rm ref}$"),
        ("spike", "probability on the spike", "(f) mass on the RM spike"),
    ]
    for ax, (key, ylabel, title) in zip(axes, panels):
        for m in TRANSFORMER_METHODS:
            name = METHODS[m]
            if key == "win":
                ax.plot(curves["kl"][m], curves["win_helpful"][m], "-", color=colours[m])
                ax.plot(curves["kl"][m], curves["win_harmless"][m], ":", color=colours[m], lw=2)
            else:
                ax.plot(curves["kl"][m], curves[key][m], "-", color=colours[m],
                        label=f"{name}: exact optimum")  # fmt: skip
        for o in trained:
            m = METHODS.index(o["method"])
            mk = markers[budgets.index(o["budget"]) % len(markers)]
            if key == "win":
                ax.plot(o["kl"], o["win_helpful"], mk, ms=8, color=colours[m], mec="k")
                ax.plot(o["kl"], o["win_harmless"], mk, ms=8, mfc="none", mec=colours[m], mew=1.6)
            else:
                ax.plot(o["kl"], o[key], mk, ms=8, color=colours[m], mec="k", zorder=4)
        ax.set_xscale("log")
        ax.set_xlabel("KL$(\\pi\\,\\|\\,\\pi_{\\rm ref})$ (nats)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: transformer $\\pi_{{\\rm ref}}$, KL-PG", fontsize=9.5)
        ax.grid(True, which="both", alpha=0.3)
    base = transformer["good_both_base"]
    axes[0].axhline(base, color="k", lw=1, ls=":", label="$\\pi_{\\rm ref}$ (no RL)")
    axes[0].plot([], [], "o", ms=8, color="0.7", mec="k",
                 label=f"trained by KL-PG ({cfg.pg_steps} steps)")  # fmt: skip
    axes[0].legend(fontsize=8, loc="upper left")
    axes[1].plot([], [], "ko", ms=7, label="helpful (filled, solid)")
    axes[1].plot([], [], "o", ms=7, mfc="none", mec="k", label="harmless (open, dotted)")
    axes[1].legend(fontsize=7, loc="lower left")
    axes[2].axhline(transformer["spike_base"], color="k", lw=1, ls=":")
    axes[2].legend(fontsize=8, loc="upper left")


def run(cfg: Config, track) -> Result:

    testbed = Testbed(cfg.alphabet_size, cfg.response_length)
    budgets = jnp.geomspace(cfg.min_kl, cfg.max_kl, cfg.num_budgets)
    keys = jax.random.split(jax.random.key(cfg.seed), cfg.num_instances)

    @jax.jit
    def study(keys):
        def one(key):
            inst = _instance(cfg, testbed, key)
            base = jnp.exp(inst["log_base"])
            return _curves(inst, budgets), dict(
                good_both_base=base @ inst["good_both"],
                spike_base=base @ inst["spike"],
                refs_exact=inst["refs_exact"],
                refs_gauss=inst["refs_gauss"],
                gauss_level=inst["gauss_level"],
            )

        return jax.vmap(one)(keys)

    curves, extra = next(iter(track([study(keys)], "exact tilts (all instances)")))
    curves = {k: np.asarray(v) for k, v in curves.items()}  # [instances, methods, budgets]
    extra = {k: np.asarray(v) for k, v in extra.items()}
    mean = {k: v.mean(0) for k, v in curves.items()}
    x = np.asarray(budgets)

    transformer = None
    if cfg.transformer_budgets:
        # The typical instance, not a chosen one: the median over instances of the raw sum's
        # exact spike mass (exact study, product π₀) at the first transformer budget.
        b = int(np.argmin(np.abs(x - cfg.transformer_budgets[0])))
        index = int(np.argsort(curves["spike"][:, 0, b])[(cfg.num_instances - 1) // 2])
        runs = _train_transformers(cfg, track, keys, index)
        transformer = _score_transformers(cfg, runs, budgets)

    colours = ("C3", "C0", "C2")
    styles = ("-", "-", "--")
    rows = 1 if transformer is None else 2
    fig, flat = plotting.figure(
        rows,
        3,
        panel_size=(5.0, 4.0),
        suptitle=(
            f"Raw sum vs LSC AND on the testbed (A={cfg.alphabet_size}, L={cfg.response_length},"
            f" {testbed.num_responses} responses): helpful RM spiked by "
            f"{cfg.spike_height:g} sd on the {cfg.spike_fraction:.0%} least harmless responses"
        ),
    )
    axes = flat[:3]
    panels = [
        ("good_both", "P(good in both) under gold rewards", "(a) responses good in both"),
        ("win_helpful", "gold win rate vs $\\pi_0$", "(b) gold win rate vs $\\pi_0$"),
        ("spike", "probability on the spike", "(c) mass on the RM spike (reward hacking)"),
    ]
    for ax, (key, ylabel, title) in zip(axes, panels):
        for m, name in enumerate(METHODS):
            if key == "win_helpful":
                ax.plot(x, mean["win_helpful"][m], styles[m], color=colours[m], label=None)
                ax.plot(x, mean["win_harmless"][m], ":", color=colours[m], lw=2)
            else:
                lo, hi = np.quantile(curves[key][:, m], [0.25, 0.75], axis=0)
                ax.fill_between(x, lo, hi, color=colours[m], alpha=0.12, lw=0)
                ax.plot(x, mean[key][m], styles[m], color=colours[m], label=name)
        ax.set_xscale("log")
        ax.set_xlabel("KL budget $\\Delta$ = KL$(\\pi\\,\\|\\,\\pi_0)$ (nats)")
        ax.set_ylabel(ylabel)
        ax.set_title(
            f"{title}\nmean of {cfg.num_instances} product $\\pi_0$ instances, IQR shaded"
            if key != "win_helpful"
            else f"{title}\nmean of {cfg.num_instances} product $\\pi_0$ instances",
            fontsize=9.5,
        )
        ax.grid(True, which="both", alpha=0.3)
    axes[0].plot(x, mean["good_both"][3], "-.", color="0.45", lw=1.2, label=CONTROL)
    axes[0].axhline(
        extra["good_both_base"].mean(), color="k", lw=1, ls=":", label="$\\pi_0$ (no RL)"
    )
    axes[0].legend(fontsize=8, loc="upper left")
    axes[1].plot([], [], "k-", label="helpful (solid)")
    axes[1].plot([], [], "k:", lw=2, label="harmless (dotted)")
    for m, name in enumerate(METHODS):
        axes[1].plot([], [], styles[m], color=colours[m], label=name)
    axes[1].legend(fontsize=7, loc="lower left")
    axes[2].legend(fontsize=8, loc="upper left")
    if transformer is not None:
        _transformer_panels(cfg, flat[3:], x, transformer, colours)

    at = int(np.argmin(np.abs(x - cfg.report_kl)))
    u_worked = np.asarray(kl.and_combination(np.array([[6.0, 1.0], [-3.0, 1.0]]), np.zeros(2)))
    summary = {
        "report_kl": float(x[at]),
        "good_both_at_report_kl": {
            n: float(mean["good_both"][m, at]) for m, n in enumerate(METHODS)
        },
        "good_both_max_over_kl": {
            n: float(mean["good_both"][m].max()) for m, n in enumerate(METHODS)
        },
        "good_both_control_raw_sum_without_spike": {
            "at_report_kl": float(mean["good_both"][3, at]),
            "max_over_kl": float(mean["good_both"][3].max()),
        },
        "good_both_base": float(extra["good_both_base"].mean()),
        "spike_mass_at_report_kl": {n: float(mean["spike"][m, at]) for m, n in enumerate(METHODS)},
        "spike_mass_at_max_kl": {n: float(mean["spike"][m, -1]) for m, n in enumerate(METHODS)},
        "spike_mass_base": float(extra["spike_base"].mean()),
        "win_helpful_at_report_kl": {
            n: float(mean["win_helpful"][m, at]) for m, n in enumerate(METHODS)
        },
        "win_harmless_at_report_kl": {
            n: float(mean["win_harmless"][m, at]) for m, n in enumerate(METHODS)
        },
        "lsc_beats_raw_good_both_fraction_of_instances": float(
            np.mean(curves["good_both"][:, 1, at] > curves["good_both"][:, 0, at])
        ),
        "r_ref_spiked_rm_exact_mean": float(extra["refs_exact"][:, 0].mean()),
        "r_ref_spiked_rm_gaussian_mean": float(extra["refs_gauss"][:, 0].mean()),
        "gaussian_r_ref_true_quantile_level_mean": float(extra["gauss_level"].mean()),
        "worked_example_u_and": [float(v) for v in u_worked],
    }
    if transformer is not None:
        trained, tc = transformer["trained"], transformer["curves"]
        label = lambda o: f"{o['method']} @ {o['budget']:g}"
        at_own_kl = lambda o, m, k: float(np.interp(o["kl"], tc["kl"][m], tc[k][m]))
        summary["transformer"] = {
            "instance": runs[0]["instance"],
            "good_both_reference": transformer["good_both_base"],
            "spike_mass_reference": transformer["spike_base"],
            "kl": {label(o): o["kl"] for o in trained},
            "good_both": {label(o): o["good_both"] for o in trained},
            "spike_mass": {label(o): o["spike"] for o in trained},
            # The raw sum's exact optimum at each trained policy's own KL (same budget).
            "raw_sum_exact_at_same_kl": {
                label(o): {k: at_own_kl(o, 0, k) for k in ("good_both", "spike")} for o in trained
            },
            "runs": {
                label(o): {
                    k: o[k]
                    for k in (
                        "beta",
                        "win_helpful",
                        "win_harmless",
                        "kl_to_target",
                        "target_good_both",
                        "target_spike",
                    )
                }
                for o in trained
            },
        }
    table: dict[str, list] = {"kl_budget": [float(v) for v in x]}
    for m, name in enumerate(("raw", "lsc", "lsc_gaussian", "raw_spike_free")):
        for key in ("kl", "good_both", "spike", "win_helpful", "win_harmless"):
            table[f"{name}_{key}"] = [float(v) for v in mean[key][m]]
    if transformer is not None:  # the exact curves of the transformer's π_ref
        for m, name in zip(TRANSFORMER_METHODS, ("raw", "lsc")):
            for key in ("kl", "good_both", "spike", "win_helpful", "win_harmless"):
                table[f"transformer_{name}_{key}"] = [
                    float(v) for v in transformer["curves"][key][m]
                ]
    return Result(figure=fig, table=table, summary=summary)


EXPERIMENT = Experiment(
    "reward-transforms",
    "LSC transform (Wang et al. 2024): raw sum vs LSC AND of two RMs, one spiked; exact on T",
    Config,
    run,
    headline=(
        "good_both_at_report_kl",
        "spike_mass_at_max_kl",
        "transformer.kl",
        "transformer.good_both",
        "transformer.spike_mass",
        "transformer.raw_sum_exact_at_same_kl",
    ),
)


def main(argv=None):
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
