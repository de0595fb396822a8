"""Online vs offline preference optimisation on the testbed, scored exactly against the frontier.

Replicates the controlled comparison of "Understanding the performance gap between online and
offline alignment algorithms" (Tang et al. 2024) with a tabular policy (one logit per response)
on the enumerable testbed and a gold Bradley–Terry oracle on an additive reward:

* offline: n pairs drawn once from π_ref, labelled once by the gold oracle, IPO or DPO
  (β = τ) trained by Adam on mini-batches of that fixed set for many epochs;
* online (gold): every step draws a fresh batch of pairs from the *current* policy
  (stop-gradient) and labels it with the gold oracle;
* online (proxy): the same, labelled by a learned Bradley–Terry reward model (log-linear on
  the one-hot token features) fitted to the offline data set — the same gold labels as offline.

(a, b) exact win rate against π_ref vs exact KL(π‖π_ref) of every checkpoint, against the
exact Gibbs frontier π_ref e^{C/β}, C = P(y ≻ π_ref) (:mod:`jaxalign.kl.frontier`); no point
may exceed it (checked, tolerance 1e-9). Diamonds: the exact population targets — offline
IPO's π_ref e^{C/τ} (on the frontier) and online IPO's fixed point, the regularised Nash
equilibrium π ∝ π_ref e^{P(·≻π)/τ}.
(c) the discriminative/generative split: expected held-out pairwise accuracy of the implicit
reward log π/π_ref on pairs from π_ref (exact in the gold labels) vs the win rate.

(d) the same comparison with function approximation, on the training engine
(:func:`jaxalign.train.train`, no separate loop): a tiny random transformer π_ref over the
same testbed size (its own Bradley–Terry game, ``testbed.seed = seed``), trained by offline
DPO / IPO on one fixed data set (``configs/train/dpo_testbed.yaml``, ``ipo_testbed.yaml``
with ``online.fixed_pairs=true``: ``transformer_batch_size`` pairs drawn once from π_ref and
labelled once, refitted every iteration; ``transformer_fixed_pairs=false`` draws fresh
off-policy pairs each iteration instead) and by online IPO (``online_ipo_testbed.yaml``: fresh
pairs from π_t each iteration), all with Bernoulli gold labels. Every iterate is scored
exactly from its enumerated log-probabilities (the task's
exact history), in float64: win rate against π_ref and KL(π‖π_ref) under the exact frontier
of the transformer's own π_ref (checked like the tabular points), and the held-out pairwise
accuracy of its implicit reward. The engine has no online DPO (its ``dpo`` samples from π_ref
only), so the online side is online IPO.

    jaxalign reproduce online-vs-offline --out results/online-vs-offline
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxalign import games, kl, plotting
from jaxalign.experiment import Experiment, Result
from jaxalign.losses import pairwise as PW
from jaxalign.testbed import Testbed, additive_reward

MODES = ("offline", "online_gold", "online_proxy")
_LABELS = {
    "offline": "offline (fixed pairs from $\\pi_{\\rm ref}$)",
    "online_gold": "online, gold labels",
    "online_proxy": "online, learned BT labels",
}
_COLORS = {"offline": plotting.PALETTE[0], "online_gold": plotting.PALETTE[1]}
_COLORS["online_proxy"] = plotting.PALETTE[2]
LOSSES = ("ipo", "dpo")
ENGINE_ALGORITHMS = ("dpo", "ipo", "online_ipo")  # what panel (d) trains on the engine
_ENGINE_LABELS = {
    "dpo": "offline DPO (one fixed set of pairs from $\\pi_{\\rm ref}$)",
    "ipo": "offline IPO (one fixed set of pairs from $\\pi_{\\rm ref}$)",
    "online_ipo": "online IPO (pairs from $\\pi_t$)",
}


@dataclasses.dataclass(frozen=True)
class Config:
    alphabet_size: int = 4  # tokens A
    response_length: int = 3  # L; A^L responses
    reward_scale: float = 1.0  # std of the gold per-position token rewards
    ref_scale: float = 1.5  # std of π_ref's logits (larger: more responses rarely seen)
    seed: int = 0  # gold reward and π_ref
    num_seeds: int = 4  # replicates (offline data set, sampling) per setting
    num_pairs: int = 256  # offline pairs from π_ref (also the proxy's training data)
    num_val_pairs: int = 1000  # held-out pairs from π_ref (distinct responses)
    taus: tuple[float, ...] = (0.1, 0.25, 1.0)  # IPO τ (DPO β = τ)
    losses: tuple[str, ...] = LOSSES
    batch_size: int = 32  # pairs per Adam step (offline: resampled from the fixed set)
    steps: int = 600  # Adam steps
    eval_every: int = 20  # steps between exact checkpoints
    learning_rate: float = 0.05
    proxy_ridge: float = 1.0  # L2 penalty of the learned BT reward model (sum over pairs)
    frontier_tol: float = 1e-9  # allowed excess of a checkpoint over the frontier
    # Panel (d): a tiny random transformer π_ref on the same testbed size, trained by the
    # training engine (offline DPO / IPO: one fixed labelled set of pairs from π_ref;
    # online IPO: pairs from π_t), gold Bradley–Terry labels of the engine's testbed game;
    # every iterate scored exactly against the frontier of the transformer's own π_ref.
    transformer_algorithms: tuple[str, ...] = ENGINE_ALGORITHMS  # empty: no panel (d)
    transformer_tau: float = 0.25  # IPO τ, DPO β
    transformer_iterations: int = 20  # engine steps (sample, label, fit)
    transformer_batch_size: int = 512  # pairs per iteration
    transformer_inner_steps: int = 20  # Adam steps per fit (warm-started)
    transformer_learning_rate: float = 0.005
    # Offline runs of panel (d): true = one fixed data set of transformer_batch_size pairs
    # (online.fixed_pairs); false = fresh pairs from π_ref every iteration (unlimited data).
    transformer_fixed_pairs: bool = True
    hidden_size: int = 32  # model width
    num_layers: int = 1  # model depth
    init_scale: float = 0.1  # weight std of the random reference (near-uniform π_ref)

    def __post_init__(self):
        if not self.taus or min(self.taus) <= 0:
            raise ValueError(f"taus must be non-empty and > 0, got {self.taus}")
        bad = [name for name in self.losses if name not in LOSSES]
        if bad or not self.losses:
            raise ValueError(f"losses must be a non-empty subset of {LOSSES}, got {self.losses}")
        if self.steps < self.eval_every or self.steps % self.eval_every:
            raise ValueError(
                f"steps must be a positive multiple of eval_every, got {self.steps}, "
                f"{self.eval_every}"
            )
        for name in ("num_seeds", "num_pairs", "num_val_pairs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.proxy_ridge < 0:
            raise ValueError("need learning_rate > 0 and proxy_ridge >= 0")
        bad = [a for a in self.transformer_algorithms if a not in ENGINE_ALGORITHMS]
        if bad:
            raise ValueError(f"transformer_algorithms must be among {ENGINE_ALGORITHMS}, got {bad}")
        if self.transformer_tau <= 0 or self.transformer_iterations < 1:
            raise ValueError("need transformer_tau > 0 and transformer_iterations >= 1")


def run(config: Config, track) -> Result:
    transformer = None
    if config.transformer_algorithms:  # float32 training, the engine's own precision
        runs = _train_transformers(config, track)
    # optax's Adam mixes int and float (its step count), which strict promotion rejects.
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        if config.transformer_algorithms:
            transformer = _score_transformers(config, runs)
        return _run(config, track, transformer)


# ---------------------------------------------------------------------------------------------
# Panel (d): the tiny transformer trained by the training engine, scored exactly.


def _engine_config(config: Config, algorithm: str, out_dir):
    from jaxalign.train import testbed_run_config

    offline = algorithm in ("dpo", "ipo")
    loss = (
        {"beta": config.transformer_tau} if algorithm == "dpo" else {"tau": config.transformer_tau}
    )
    return testbed_run_config(
        {"name": algorithm, **loss},
        alphabet_size=config.alphabet_size, response_length=config.response_length,
        hidden_size=config.hidden_size, num_layers=config.num_layers,
        init_scale=config.init_scale, steps=config.transformer_iterations, seed=config.seed,
        out_dir=out_dir,
        online={"batch_size": config.transformer_batch_size,
                "inner_steps": config.transformer_inner_steps,
                "learning_rate": config.transformer_learning_rate,
                "fixed_pairs": config.transformer_fixed_pairs and offline},
        testbed={"enabled": True, "preference": "bradley_terry",
                 "reward_scale": config.reward_scale, "seed": config.seed},
        oracle={"sample": True},  # Bernoulli gold labels
    )  # fmt: skip


def _train_transformers(config: Config, track) -> dict[str, dict]:
    """One engine run per algorithm, all from the same random π_ref (``run.seed``) on the same
    game (``testbed.seed``): the enumerated log π of every iterate and the gold reward."""
    import tempfile
    from pathlib import Path

    from jaxalign.testbed import Testbed as _Testbed
    from jaxalign.train import train
    from jaxalign.train.tasks.online_setup import testbed_reward

    runs = {}
    with tempfile.TemporaryDirectory(prefix="online-vs-offline-") as tmp:
        for algorithm in track(config.transformer_algorithms, "engine runs (transformer)"):
            cfg = _engine_config(config, algorithm, Path(tmp) / algorithm)
            result = train(cfg, quiet=True)
            task = result.task
            testbed = _Testbed(config.alphabet_size, config.response_length)
            runs[algorithm] = dict(
                log_policies=np.asarray(task.exact_history.history().log_policies),
                log_ref=np.asarray(task.log_ref),
                reward=np.asarray(testbed_reward(cfg.testbed, testbed)),
            )
    return runs


def _score_transformers(config: Config, runs: dict[str, dict]) -> dict:
    """Exact (float64) win rate against π_ref, KL(π‖π_ref) and frontier gap of every iterate,
    and the exact frontier of the transformer's own π_ref (its Bradley–Terry game)."""
    first = next(iter(runs.values()))
    reward = jnp.asarray(first["reward"], jnp.float64)
    game = games.bradley_terry_game(reward)
    log_ref = jax.nn.log_softmax(jnp.asarray(first["log_ref"], jnp.float64))

    # Held-out pairs (distinct responses) from the transformer's π_ref, as in panel (c).
    rng = np.random.default_rng([config.seed, 1])
    val = jnp.asarray(_pairs(rng, np.exp(np.asarray(log_ref)), config.num_val_pairs, True))

    def score(lp, pairs):
        return (
            kl.preference_win_rate(game, lp, log_ref),
            kl.kl_divergence(lp, log_ref),
            kl.frontier_gap(game, lp, log_ref),
            kl.implicit_reward_accuracy(game, lp, log_ref, pairs),
        )

    score_all = jax.jit(jax.vmap(score, in_axes=(0, None)))
    scored = {}
    for algorithm, r in runs.items():
        lps = jax.nn.log_softmax(jnp.asarray(r["log_policies"], jnp.float64), axis=-1)
        wr, kld, gap, acc = (np.asarray(v) for v in score_all(lps, val))
        scored[algorithm] = dict(wr=wr, kl=kld, gap=gap, acc=acc)
    max_kl = max(float(v["kl"].max()) for v in scored.values())
    budgets = np.linspace(0.0, 1.05 * max_kl, 200)
    front = kl.win_rate_frontier(game, log_ref, budgets)
    tau = config.transformer_tau
    targets = {
        "offline IPO": kl.offline_ipo_target(game, log_ref, tau),
        "regularised Nash": games.nash_equilibrium(game, tau, ref=log_ref),
    }
    targets = {
        k: (float(kl.preference_win_rate(game, lp, log_ref)), float(kl.kl_divergence(lp, log_ref)))
        for k, lp in targets.items()
    }
    return dict(
        runs=scored,
        # F(Δ) against the budget Δ: flat beyond −log π_ref(argmax C), where KL stops growing.
        frontier=(budgets, np.asarray(front.win_rate)),
        targets=targets,
        max_excess=max(float(-v["gap"].min()) for v in scored.values()),
    )


def _instance(config: Config):
    """(log π_ref [K], gold reward [K], gold P [K, K], features [K, d])."""
    testbed = Testbed(config.alphabet_size, config.response_length)
    k_r, k_ref = jax.random.split(jax.random.key(config.seed))
    shape = (config.response_length, config.alphabet_size)
    token_rewards = jax.random.normal(k_r, shape, jnp.float64) * config.reward_scale
    r = additive_reward(testbed, token_rewards)
    k = testbed.num_responses
    log_ref = jax.nn.log_softmax(jax.random.normal(k_ref, (k,), jnp.float64) * config.ref_scale)
    onehot = jax.nn.one_hot(testbed.responses(), config.alphabet_size, dtype=jnp.float64)
    features = onehot[:, :, 1:].reshape(k, -1)  # token 0 dropped: identifiable
    return log_ref, r, games.bradley_terry_game(r), features


def _pairs(rng, probs, n, distinct):
    a = rng.choice(len(probs), size=4 * n if distinct else n, p=probs)
    b = rng.choice(len(probs), size=a.shape[0], p=probs)
    if distinct:
        keep = a != b
        a, b = a[keep][:n], b[keep][:n]
    return np.stack([a, b], axis=1)


def _fit_proxy(features, winners, losers, ridge, steps=25):
    """Log-linear BT reward ŵ by Newton on Σ softplus(−x·w) + ridge/2 ‖w‖², x = φ(w) − φ(l)."""
    x = features[winners] - features[losers]
    d = x.shape[1]

    def newton(w, _):
        s = jax.nn.sigmoid(x @ w)
        grad = -x.T @ (1 - s) + ridge * w
        hess = (x * (s * (1 - s))[:, None]).T @ x + (ridge + 1e-9) * jnp.eye(d)
        return w - jnp.linalg.solve(hess, grad), None

    w, _ = jax.lax.scan(newton, jnp.zeros(d, x.dtype), None, length=steps)
    return features @ w


def _batch_loss(theta, log_ref, winners, losers, tau, loss):
    lp = jax.nn.log_softmax(theta)
    if loss == "ipo":
        out = PW.ipo_loss(lp[winners], lp[losers], log_ref[winners], log_ref[losers], tau=tau)
    else:  # DPO with β = τ
        out = PW.pairwise_preference_loss(
            lp[winners],
            lp[losers],
            [PW.Anchor(log_ref[winners], log_ref[losers])],
            distance="logistic",
            scale=tau,
        )
    return jnp.mean(out.loss)


@functools.partial(
    jax.jit, static_argnames=("lr", "loss", "online", "batch_size", "steps", "eval_every")
)
def _train(key, log_ref, label_p, data, tau, *, lr, loss, online, batch_size, steps, eval_every):
    """Checkpoints ``[steps/eval_every + 1, K]`` of log π for one run.

    ``online``: pairs from the current policy labelled by ``label_p`` (winner a w.p. P[a, b]);
    otherwise mini-batches of the fixed labelled ``data`` ``[n, 2]`` (winner, loser).
    """
    opt = optax.adam(lr)
    theta0 = log_ref
    grad_fn = jax.grad(_batch_loss)

    def step(carry, t):
        theta, state = carry
        k = jax.random.fold_in(key, t)
        k1, k2, k3 = jax.random.split(k, 3)
        if online:
            logits = jax.lax.stop_gradient(theta)  # on-policy pairs: no gradient through them
            a = jax.random.categorical(k1, logits, shape=(batch_size,))
            b = jax.random.categorical(k2, logits, shape=(batch_size,))
            a_wins = jax.random.uniform(k3, (batch_size,)) < label_p[a, b]
            winners, losers = jnp.where(a_wins, a, b), jnp.where(a_wins, b, a)
        else:
            idx = jax.random.randint(k1, (batch_size,), 0, data.shape[0])
            winners, losers = data[idx, 0], data[idx, 1]
        g = grad_fn(theta, log_ref, winners, losers, tau, loss)
        updates, state = opt.update(g, state, theta)
        return (optax.apply_updates(theta, updates), state), None

    def block(carry, c):
        carry, _ = jax.lax.scan(step, carry, c * eval_every + jnp.arange(eval_every))
        return carry, jax.nn.log_softmax(carry[0])

    n_blocks = steps // eval_every
    _, lps = jax.lax.scan(block, (theta0, opt.init(theta0)), jnp.arange(n_blocks))
    return jnp.concatenate([log_ref[None], lps], axis=0)


def _run(config: Config, track, transformer: dict | None) -> Result:
    log_ref, _, game, features = _instance(config)
    ref = np.exp(np.asarray(log_ref))
    p_gold = np.asarray(game.preference)
    steps_axis = np.arange(0, config.steps + 1, config.eval_every)
    taus = jnp.asarray(config.taus, jnp.float64)

    # Per seed: offline data (gold labels), held-out pairs, learned BT proxy.
    seeds = []
    for s in range(config.num_seeds):
        rng = np.random.default_rng([config.seed, s])
        pairs = _pairs(rng, ref, config.num_pairs, distinct=False)
        a_wins = rng.uniform(size=len(pairs)) < p_gold[pairs[:, 0], pairs[:, 1]]
        data = np.where(a_wins[:, None], pairs, pairs[:, ::-1])
        val = _pairs(rng, ref, config.num_val_pairs, distinct=True)
        r_hat = _fit_proxy(features, data[:, 0], data[:, 1], config.proxy_ridge)
        proxy = jax.nn.sigmoid(r_hat[:, None] - r_hat[None, :])
        seeds.append((jnp.asarray(data), jnp.asarray(val), proxy))

    def score(lp, val):
        return (
            kl.preference_win_rate(game, lp, log_ref),
            kl.kl_divergence(lp, log_ref),
            kl.frontier_gap(game, lp, log_ref),
            kl.implicit_reward_accuracy(game, lp, log_ref, val),
        )

    score_all = jax.jit(jax.vmap(jax.vmap(score, in_axes=(0, None)), in_axes=(0, None)))
    results, rows = {}, []
    jobs = [(loss, mode) for loss in config.losses for mode in MODES]
    for loss, mode in track(jobs, "training runs"):
        per_seed = []
        for s, (data, val, proxy) in enumerate(seeds):
            label_p = proxy if mode == "online_proxy" else jnp.asarray(p_gold)
            key = jax.random.key(config.seed * 1000 + s)
            train = functools.partial(
                _train,
                lr=config.learning_rate,
                loss=loss,
                online=mode != "offline",
                batch_size=config.batch_size,
                steps=config.steps,
                eval_every=config.eval_every,
            )
            lps = jax.vmap(train, in_axes=(None, None, None, None, 0))(
                key, log_ref, label_p, data, taus
            )
            per_seed.append([np.asarray(x) for x in score_all(lps, val)])
        wr, kld, gap, acc = (np.stack([p[i] for p in per_seed]) for i in range(4))
        results[loss, mode] = dict(wr=wr, kl=kld, gap=gap, acc=acc)  # each [S, T, C]
        for s in range(config.num_seeds):
            for i, tau in enumerate(config.taus):
                for c, st in enumerate(steps_axis):
                    rows.append(
                        dict(
                            loss=loss,
                            mode=mode,
                            seed=s,
                            tau=tau,
                            step=int(st),
                            kl=float(kld[s, i, c]),
                            win_rate=float(wr[s, i, c]),
                            frontier_gap=float(gap[s, i, c]),
                            heldout_accuracy=float(acc[s, i, c]),
                        )
                    )

    # Exact population targets per τ (IPO): offline π_ref e^{C/τ}, online regularised Nash.
    targets = {}
    for tau in config.taus:
        off = kl.offline_ipo_target(game, log_ref, tau)
        log_nash = games.nash_equilibrium(game, tau, ref=log_ref)
        targets[tau] = {
            name: (
                float(kl.preference_win_rate(game, lp, log_ref)),
                float(kl.kl_divergence(lp, log_ref)),
                float(kl.frontier_gap(game, lp, log_ref)),
            )
            for name, lp in (("offline", off), ("online", log_nash))
        }

    max_kl = max(float(v["kl"].max()) for v in results.values())
    budgets = np.linspace(0.0, 1.05 * max_kl, 200)
    front = kl.win_rate_frontier(game, log_ref, budgets)
    f_kl, f_wr = np.asarray(front.kl), np.asarray(front.win_rate)
    max_excess = max(float(-v["gap"].min()) for v in results.values())

    # Best win rate within a KL budget (upper envelope over τ and checkpoints, seed-averaged
    # curves): the "fixed budget" comparison. Budget: the median final KL of offline IPO.
    ref_loss = config.losses[0]
    budget = float(np.median(results[ref_loss, "offline"]["kl"][:, :, -1]))
    summary = {
        "kl_budget": budget,
        "frontier_at_budget": float(np.interp(budget, f_kl, f_wr)),
        "max_frontier_excess": max_excess,
        "all_points_below_frontier": bool(max_excess <= config.frontier_tol),
        "population_targets": {
            f"{tau:g}": {
                "offline_ipo_gap": t["offline"][2],
                "online_ipo_gap": t["online"][2],
                "offline_ipo_kl": t["offline"][1],
                "online_ipo_kl": t["online"][1],
            }
            for tau, t in targets.items()
        },
    }
    for (loss, mode), v in results.items():
        mean_wr, mean_kl = v["wr"].mean(0), v["kl"].mean(0)  # [T, C]
        within = np.where(mean_kl <= budget, mean_wr, -np.inf)
        final_acc = v["acc"].mean(0)[:, -1]
        summary[f"{loss}.{mode}"] = {
            "best_win_rate_within_budget": float(within.max()),
            "final_win_rate": {f"{t:g}": float(x) for t, x in zip(config.taus, mean_wr[:, -1])},
            "final_kl": {f"{t:g}": float(x) for t, x in zip(config.taus, mean_kl[:, -1])},
            "final_heldout_accuracy": {f"{t:g}": float(x) for t, x in zip(config.taus, final_acc)},
            "mean_final_gap": float(v["gap"][:, :, -1].mean()),
        }

    if transformer is not None:
        summary["transformer"] = {
            "tau": config.transformer_tau,
            "max_frontier_excess": transformer["max_excess"],
            "all_points_below_frontier": bool(transformer["max_excess"] <= config.frontier_tol),
            "final_win_rate": {a: float(v["wr"][-1]) for a, v in transformer["runs"].items()},
            "final_kl": {a: float(v["kl"][-1]) for a, v in transformer["runs"].items()},
            "final_frontier_gap": {a: float(v["gap"][-1]) for a, v in transformer["runs"].items()},
            "final_heldout_accuracy": {
                a: float(v["acc"][-1]) for a, v in transformer["runs"].items()
            },
            "targets": {
                k: {"win_rate": w, "kl": d} for k, (w, d) in transformer["targets"].items()
            },
        }
        for a, v in transformer["runs"].items():
            for t in range(len(v["wr"])):
                rows.append(dict(loss=a, mode="transformer", seed=0, tau=config.transformer_tau,
                                 step=t, kl=float(v["kl"][t]), win_rate=float(v["wr"][t]),
                                 frontier_gap=float(v["gap"][t]),
                                 heldout_accuracy=float(v["acc"][t])))  # fmt: skip
    fig = _figure(config, results, targets, f_kl, f_wr, budget, transformer)
    return Result(figure=fig, table=rows, summary=summary)


def _figure(config, results, targets, f_kl, f_wr, budget, transformer=None):
    n_loss = len(config.losses)
    fig, axes = plotting.figure(
        1,
        n_loss + 1 + (transformer is not None),
        panel_size=(4.8, 4.0),
        suptitle=(
            "Online vs offline preference optimisation on the testbed "
            f"({config.alphabet_size**config.response_length} responses, tabular policy, "
            "gold Bradley–Terry oracle)"
        ),
    )
    markers = ("o", "s", "^", "v", "D")
    for j, loss in enumerate(config.losses):
        ax = axes[j]
        ax.plot(
            f_kl,
            f_wr,
            color=plotting.REFERENCE_COLOR,
            lw=2.2,
            zorder=plotting.Z_REFERENCE,
            label=r"exact frontier $\pi_{\rm ref}e^{C/\beta}$",
        )
        for mode in MODES:
            v = results[loss, mode]
            for i in range(len(config.taus)):
                ax.plot(
                    v["kl"].mean(0)[i],
                    v["wr"].mean(0)[i],
                    marker=markers[i % len(markers)],
                    ms=3.5,
                    color=_COLORS[mode],
                    label=_LABELS[mode] if i == 0 else None,
                    alpha=0.85,
                )
        if loss == "ipo":
            for i, t in enumerate(targets.values()):
                for name, color in (
                    ("offline", _COLORS["offline"]),
                    ("online", _COLORS["online_gold"]),
                ):
                    wr_, kl_, _ = t[name]
                    ax.plot(
                        kl_,
                        wr_,
                        "D",
                        ms=8,
                        mfc="none",
                        mec=color,
                        mew=1.6,
                        label=(
                            r"population targets (offline: $\pi_{\rm ref}e^{C/\tau}$; "
                            "online: regularised Nash)"
                        )
                        if i == 0 and name == "offline"
                        else None,
                    )
        ax.axvline(budget, color=plotting.REFERENCE_COLOR, ls=":", lw=1)
        ax.set_xlabel(r"$\mathrm{KL}(\pi\,\|\,\pi_{\rm ref})$ [nats]")
        ax.set_ylabel(r"gold win rate vs $\pi_{\rm ref}$")
        taus = ", ".join(f"{t:g}" for t in config.taus)
        ax.set_title(
            f"({'ab'[j]}) {loss.upper()}: exact win rate vs KL " + rf"($\tau \in \{{{taus}\}}$)",
            fontsize=9.5,
        )
        plotting.legend(ax, loc="lower right")

    ax = axes[n_loss]
    for mode in MODES:
        for j, loss in enumerate(config.losses):
            v = results[loss, mode]
            ax.scatter(
                v["wr"].mean(0).ravel(),
                v["acc"].mean(0).ravel(),
                s=9,
                marker=markers[j],
                color=_COLORS[mode],
                alpha=0.6,
                label=f"{_LABELS[mode]}, {loss.upper()}",
            )
    ax.set_xlabel(r"gold win rate vs $\pi_{\rm ref}$ (generation)")
    ax.set_ylabel(r"held-out pairwise accuracy of $\log\pi/\pi_{\rm ref}$")
    ax.set_title("(c) discriminative vs generative", fontsize=9.5)
    plotting.legend(ax, loc="lower right")
    if transformer is not None:
        _transformer_panel(config, axes[-1], transformer)
    return fig


def _transformer_panel(config, ax, transformer):
    tkl, twr = transformer["frontier"]
    ax.plot(tkl, twr, color=plotting.REFERENCE_COLOR, lw=2.2, zorder=plotting.Z_REFERENCE,
            label=r"exact frontier of the transformer's $\pi_{\rm ref}$")  # fmt: skip
    colors = {"dpo": plotting.PALETTE[3], "ipo": plotting.PALETTE[0],
              "online_ipo": plotting.PALETTE[1]}  # fmt: skip
    for a, v in transformer["runs"].items():
        ax.plot(v["kl"], v["wr"], "-o", ms=3, lw=0.8, alpha=0.6, color=colors[a])
        ax.plot(v["kl"][-1], v["wr"][-1], "o", ms=8, mec="k", color=colors[a],
                label=f"{_ENGINE_LABELS[a]}, last iterate")  # fmt: skip
    for (name, (w, d)), c in zip(transformer["targets"].items(), ("ipo", "online_ipo")):
        ax.plot(d, w, "D", ms=8, mfc="none", mec=colors[c], mew=1.6,
                label=f"population target: {name}")  # fmt: skip
    ax.set_xlabel(r"$\mathrm{KL}(\pi\,\|\,\pi_{\rm ref})$ [nats]")
    ax.set_ylabel(r"gold win rate vs $\pi_{\rm ref}$")
    ax.set_title(
        f"(d) transformer, training engine: {config.transformer_iterations} iterations, "
        + rf"$\tau = {config.transformer_tau:g}$",
        fontsize=9.5,
    )
    plotting.legend(ax, loc="lower right")


EXPERIMENT = Experiment(
    name="online-vs-offline",
    description=(
        "Online vs offline IPO/DPO on the testbed: exact win rate vs KL against the exact "
        "Gibbs frontier, and held-out pairwise accuracy vs win rate (Tang et al. 2024)"
    ),
    config_cls=Config,
    run=run,
    headline=(
        "all_points_below_frontier",
        "ipo.offline.best_win_rate_within_budget",
        "ipo.online_gold.best_win_rate_within_budget",
        "transformer.all_points_below_frontier",
        "transformer.final_win_rate",
        "transformer.final_kl",
        "transformer.final_frontier_gap",
    ),
)


def main(argv=None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
