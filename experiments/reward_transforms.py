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

    jaxalign reproduce reward-transforms --out results/reward-transforms
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import kl
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


METHODS = ("raw sum", "LSC AND", "LSC AND, Gaussian $r_{\\rm ref}$")
CONTROL = "raw sum, spike-free RMs"  # the raw sum of the gold rewards: what the spike costs


def _standardise(r: jax.Array) -> jax.Array:
    return (r - jnp.mean(r)) / jnp.std(r)


def _instance(cfg: Config, testbed: Testbed, key: jax.Array) -> dict[str, jax.Array]:
    k_base, k_h, k_s = jax.random.split(key, 3)
    shape = (cfg.response_length, cfg.alphabet_size)
    token_logp = jax.nn.log_softmax(jax.random.normal(k_base, shape) * cfg.base_scale, axis=-1)
    log_base = additive_reward(testbed, token_logp)  # a product of per-position distributions
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


def run(cfg: Config, track) -> Result:
    import matplotlib.pyplot as plt

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

    colours = ("C3", "C0", "C2")
    styles = ("-", "-", "--")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
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
        ax.set_title(title, fontsize=10)
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
    fig.suptitle(
        f"Raw sum vs LSC AND on the testbed (A={cfg.alphabet_size}, L={cfg.response_length}, "
        f"{testbed.num_responses} responses): helpful RM spiked by "
        f"{cfg.spike_height:g} sd on the {cfg.spike_fraction:.0%} least harmless responses; "
        f"mean of {cfg.num_instances} instances, IQR shaded",
        fontsize=10,
    )
    fig.tight_layout()

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
    table: dict[str, list] = {"kl_budget": [float(v) for v in x]}
    for m, name in enumerate(("raw", "lsc", "lsc_gaussian", "raw_spike_free")):
        for key in ("kl", "good_both", "spike", "win_helpful", "win_harmless"):
            table[f"{name}_{key}"] = [float(v) for v in mean[key][m]]
    return Result(figure=fig, table=table, summary=summary)


EXPERIMENT = Experiment(
    "reward-transforms",
    "LSC transform (Wang et al. 2024): raw sum vs LSC AND of two RMs, one spiked; exact on T",
    Config,
    run,
)


def main(argv=None):
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
