r"""A general preference model recovers a cyclic preference; a Bradley–Terry reward model cannot.

On the enumerable testbed (``configs/train/preference_model_testbed.yaml``: 9 responses, a
rock–paper–scissors cycle between response styles on top of an additive reward) both models
are trained on the same pairs — drawn uniformly, labelled with the exact preference P, fed in
both orders — for the same steps with the same optimizer:

* the preference model (``jaxalign train``, ``algorithm.name: preference_model``):
  :math:`\hat P(a \succ b) = \sigma(s(a, b))`, ``s`` antisymmetric with skew pairs;
* a Bradley–Terry reward model (the ``reward_model`` task's step,
  :func:`~jaxalign.train.tasks.reward_model.reward_model_train_step`, on the same pairs
  with soft labels as pair weights): :math:`\hat P(a \succ b) = \sigma(r(a) - r(b))`.

Reported: :math:`\max_{a,b} |\hat P_{ab} - P_{ab}|` over all pairs for both, and the floor no
reward model can beat, :math:`\varepsilon^\star = \min_r \max_{ab} |\sigma(r_a - r_b) -
P_{ab}|`, computed exactly (:func:`~jaxalign.train.tasks.preference_model.bradley_terry_floor`),
next to the likelihood-optimal BT fit (:func:`jaxalign.games.social_choice.bradley_terry_fit`).
Then, end to end, online INPO (``configs/train/inpo_testbed.yaml``) is run with the trained
preference model as its oracle (``oracle.path``) and with the true testbed oracle, both scored
with the exact duality gap under the TRUE preference.

    jaxalign reproduce preference-model-vs-bt --out results/pm_vs_bt
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign import plotting
from jaxalign.data import PreferenceBatch
from jaxalign.experiment import Experiment, Result, repo_root
from jaxalign.games import PreferenceGame
from jaxalign.games.social_choice import bradley_terry_fit
from jaxalign.models import RewardModel
from jaxalign.train import load_train_config, train
from jaxalign.train.optim import make_optimizer
from jaxalign.train.state import TrainState
from jaxalign.train.tasks import preference_model as pm
from jaxalign.train.tasks.reward_model import reward_model_train_step


@dataclasses.dataclass(frozen=True)
class Config:
    steps: int = 600  # optimizer steps of both models
    batch_size: int = 64  # pairs per step (both orders)
    rank: int = 2  # skew pairs of the preference model
    seed: int = 0  # model init and pair draws
    e2e_steps: int = 5  # INPO iterations with the learned vs the true oracle (0 = skip)

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.rank < 1 or self.e2e_steps < 0:
            raise ValueError("need steps, batch_size, rank >= 1 and e2e_steps >= 0")


def _train_config(config: Config, out: Path):
    return load_train_config(
        repo_root() / "configs" / "train" / "preference_model_testbed.yaml",
        [f"run.out_dir={out}", f"run.steps={config.steps}", f"run.seed={config.seed}",
         f"data.batch_size={config.batch_size}", f"algorithm.rank={config.rank}",
         "checkpoint.enabled=false", "logging.progress_bar=false", "logging.tensorboard=false",
         f"logging.eval_every={config.steps}"],
    )  # fmt: skip


def _train_bradley_terry(cfg, testbed, preference):
    """The reward model's BT step on the pairs the preference-model run drew (same keys):
    ``(a, b)`` weighted by ``P_ab`` and ``(b, a)`` by ``1 − P_ab`` (soft-label BT)."""
    model = RewardModel(cfg.model, rngs=nnx.Rngs(params=jax.random.key(cfg.run.seed)))
    graphdef, params = nnx.split(model)
    tx, schedule = make_optimizer(cfg.optimizer, cfg.schedule, cfg.run.steps)
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jnp.zeros(2, jnp.uint32))
    step = jax.jit(lambda s, b: reward_model_train_step(
        s, b, graphdef=graphdef, tx=tx, lr_schedule=schedule))  # fmt: skip
    step_key = jax.random.split(jax.random.key(cfg.run.seed))[1]  # the engine's step keys
    for t in range(cfg.run.steps):
        pairs = pm.testbed_pair_batch(jax.random.fold_in(step_key, t), testbed, preference,
                                      cfg.data.batch_size, sample=cfg.oracle.sample)  # fmt: skip
        ids = np.concatenate([pairs.tokens_a, pairs.tokens_b])
        swapped = np.concatenate([pairs.tokens_b, pairs.tokens_a])
        mask = np.ones_like(ids)
        weight = np.concatenate([pairs.label, 1 - pairs.label]).astype(np.float32)
        batch = PreferenceBatch(ids, mask, mask.astype(np.float32), swapped, mask,
                                mask.astype(np.float32), weight)  # fmt: skip
        with jax.numpy_dtype_promotion("standard"):  # as the engine compiles its steps
            state, _ = step(state, jax.tree.map(jnp.asarray, batch))
    return np.asarray(pm.testbed_preference_matrix(nnx.merge(graphdef, state.params), testbed))


def _inpo(out: Path, steps: int, *extra):
    cfg = load_train_config(
        repo_root() / "configs" / "train" / "inpo_testbed.yaml",
        [f"run.out_dir={out}", f"run.steps={steps}", "checkpoint.enabled=false",
         "logging.progress_bar=false", "logging.tensorboard=false", *extra],
    )  # fmt: skip
    result = train(cfg, quiet=True)
    return [result.summary["initial_duality_gap"]] + [r["duality_gap"] for r in result.history]


def run(config: Config, track) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = _train_config(config, tmp / "pm")
        testbed, preference = pm.testbed_setup(cfg)
        for _ in track(range(1), "preference model"):
            result = train(cfg, quiet=True)
        p_pm = result.task.testbed_matrix(result.state.params)
        for _ in track(range(1), "Bradley–Terry reward model"):
            p_bt = _train_bradley_terry(cfg, testbed, preference)
        floor, floor_scores = pm.bradley_terry_floor(preference)
        mle = np.asarray(bradley_terry_fit(PreferenceGame(jnp.asarray(preference))))
        p_mle = 1 / (1 + np.exp(-(mle[:, None] - mle[None, :])))
        gaps = {}
        if config.e2e_steps:
            model_dir = result.out_dir / "model"
            gaps["learned preference model"] = _inpo(
                tmp / "inpo_pm", config.e2e_steps, "oracle.kind=preference_model",
                f"oracle.path={model_dir}",
            )  # fmt: skip
            gaps["true preference"] = _inpo(tmp / "inpo_true", config.e2e_steps)

    err = {name: pm.testbed_errors(q, preference)
           for name, q in (("preference_model", p_pm), ("bradley_terry", p_bt),
                           ("bradley_terry_mle", p_mle))}  # fmt: skip
    rows = [{"model": k, **v} for k, v in err.items()]
    rows.append({"model": "bradley_terry_floor", "max_abs_error": floor})
    for name, g in gaps.items():
        rows += [{"model": f"inpo[{name}]", "iteration": t, "duality_gap": float(x)}
                 for t, x in enumerate(g)]  # fmt: skip

    panels = 4 if gaps else 3
    fig, axes = plotting.figure(
        1, panels, panel_size=(4.2, 3.8),
        suptitle="Cyclic testbed preference: general preference model vs Bradley–Terry",
    )  # fmt: skip
    titles = (
        ("(a) true $P$", preference),
        (rf"(b) preference model, max err {err['preference_model']['max_abs_error']:.3f}", p_pm),
        (rf"(c) Bradley–Terry, max err {err['bradley_terry']['max_abs_error']:.3f}", p_bt),
    )
    for ax, (title, matrix) in zip(axes, titles):
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="RdBu_r")
        ax.set_title(title)
        ax.set_xlabel("response $b$")
        ax.set_ylabel("response $a$")
    fig.colorbar(image, ax=axes[2], fraction=0.046, label=r"$P(a \succ b)$")
    axes[2].text(0.02, -0.28, f"no reward model beats max err {floor:.3f}",
                 transform=axes[2].transAxes, fontsize=8)  # fmt: skip
    if gaps:
        ax = axes[3]
        for name, g in gaps.items():
            ax.plot(range(len(g)), g, "o-", label=name)
        ax.set_xlabel("INPO iteration")
        ax.set_ylabel("exact duality gap (true $P$)")
        ax.set_title("(d) INPO judged by the learned model")
        plotting.legend(ax)

    summary = {
        "max_abs_error": {
            "preference_model": err["preference_model"]["max_abs_error"],
            "bradley_terry_trained": err["bradley_terry"]["max_abs_error"],
            "bradley_terry_mle_fit": err["bradley_terry_mle"]["max_abs_error"],
            "bradley_terry_floor": floor,
        },
        "mean_abs_error": {k: v["mean_abs_error"] for k, v in err.items()},
        "preference_model_beats_bt_floor": err["preference_model"]["max_abs_error"] < floor,
        "antisymmetry_error": float(np.abs(p_pm + p_pm.T - 1).max()),
        "bt_floor_scores": [float(x) for x in floor_scores],
        "inpo_duality_gap": {k: [float(x) for x in g] for k, g in gaps.items()},
    }
    return Result(figure=fig, table=rows, summary=summary)


EXPERIMENT = Experiment(
    name="preference-model-vs-bt",
    description="A general preference model recovers a cyclic preference that Bradley–Terry "
    "cannot; then judges an online INPO run",
    config_cls=Config,
    run=run,
)


def main(argv=None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
