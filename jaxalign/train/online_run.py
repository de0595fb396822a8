"""``jaxalign train`` for the online algorithms: a YAML config → an online run.

Algorithms: the online Nash family (INPO, ONPO, online IPO, MNPO, EGPO, Nash-MD;
:class:`~jaxalign.train.online.OnlineTrainer`), KL-regularised policy gradient (``kl_pg``;
:class:`~jaxalign.train.policy_gradient.PolicyGradientTrainer`) and, on the testbed only,
the offline losses DPO / IPO / robust DPO with pairs from π_ref, scored against their exact
population minimiser. Two modes, chosen by the config:

* **testbed** (``prompts.path: ""`` and ``oracle.kind: testbed``): a transformer whose
  vocabulary is the testbed alphabet is trained against a synthetic preference over all
  ``A^L`` responses (:mod:`jaxalign.testbed`); every iteration logs the *exact*
  duality gaps, KL and win rate, and the summary compares them with the matching tabular
  solver of :mod:`jaxalign.games` from the same start (``configs/train/<alg>_testbed.yaml``).
* **prompts** (``prompts.path`` set, or the tiny synthetic prompts): a local Hugging Face
  checkpoint (``init.pretrained``) samples responses to the prompts of a JSONL/Parquet file,
  a local reward or preference model (``oracle.kind``/``oracle.path``, or a mixture of
  annotators) labels them, and the pairwise loss is fitted — sharded over the mesh, on one
  or many hosts (``configs/train/<alg>_hf.yaml``). Logged per iteration: the fitted loss,
  the mean label, KL(π_t‖π_ref) estimates (k1, k3) on the samples, the mean response length
  and (every ``logging.eval_every``) the oracle's win rate of π_t against π_ref.

The run directory holds ``config.yaml``, ``metrics.jsonl``, ``tensorboard/``,
``summary.json``, ``checkpoints/<iteration>/`` (Orbax: the policy, the anchors the algorithm
keeps — ONPO's π'_t, MNPO's past iterates — and, on the testbed, the exact history) and the
final policy as a Hugging Face checkpoint in ``model/``. ``--resume`` continues from the
newest checkpoint; iteration ``t`` draws its randomness from ``fold_in(key, t)``, so a
resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from jaxalign.games import duality_gap
from jaxalign.kl import kl_divergence
from jaxalign.models import CausalLM, ModelConfig, axis_rules, from_pretrained, save_pretrained
from jaxalign.parallel import DEFAULT_RULES, DistributedConfig, MeshConfig, initialize_distributed
from jaxalign.train.config import CheckpointConfig, InitConfig, ShardingConfig, _bad
from jaxalign.train.online import (
    ALGORITHMS,
    OFFLINE_ALGORITHMS,
    OnlineConfig,
    OnlineTrainer,
    TestbedScorer,
    average_policy_gaps,
    population_minimiser,
    testbed_trainer,
)
from jaxalign.train.online import tabular_baseline as _tabular_baseline
from jaxalign.train.policy_gradient import (
    PolicyGradientConfig,
    PolicyGradientTrainer,
    reward_model_fn,
    testbed_pg_trainer,
)


@dataclasses.dataclass(frozen=True)
class OnlineAlgorithmConfig:
    """The online algorithm and its update (see :class:`jaxalign.train.OnlineConfig`)."""

    name: Literal[
        "inpo", "onpo", "online_ipo", "mnpo", "egpo", "nash_md", "kl_pg",
        "dpo", "ipo", "robust_dpo",
    ] = "inpo"  # fmt: skip
    # (dpo / ipo / robust_dpo here: offline pairs from π_ref on the testbed, scored exactly;
    #  on text data they run through the offline engine, configs/train/<name>_tiny.yaml)
    step_size: float = 1.0  # s: the update multiplies payoffs, π ∝ … e^{s·Pπ}
    tau: float = 0.0  # KL weight to π_ref (s·τ ≤ 1; online IPO: > 0; ONPO: unused)
    num_players: int = 3  # MNPO: the last num_players − 1 iterates are the opponents
    opponent_weights: tuple[float, ...] | None = None  # MNPO λ, newest first; null = uniform
    mixture: Literal["token", "sequence"] = "token"  # Nash-MD opponent sampler
    # kl_pg (KL-regularised policy gradient against a reward; one AdamW step per iteration):
    beta: float = 0.1  # kl_pg: maximise E r − β KL(π‖π_ref); dpo / robust_dpo: logistic β
    flip_rate: float = 0.0  # robust_dpo: label-flip rate ε ∈ [0, ½)
    group_size: int = 4  # responses per prompt (batch_size prompts per iteration)
    baseline: Literal["none", "leave_one_out", "group_mean"] = "leave_one_out"
    estimator: Literal["k1", "k2", "k3"] = "k2"  # KL estimator of the loss term
    kl_mode: Literal["loss", "reward"] = "loss"  # KL as a loss term or a reward penalty
    normalise: bool = False  # divide group-mean advantages by the group std (GRPO)


@dataclasses.dataclass(frozen=True)
class OnlineLoopConfig:
    """Per-iteration sampling and fitting."""

    batch_size: int = 64  # pairs per iteration (global; two responses per prompt)
    inner_steps: int = 20  # Adam steps per fit (ONPO and EGPO fit twice)
    learning_rate: float = 1e-2  # Adam learning rate of each fit
    adam_eps: float = 1e-3  # Adam ε (see OnlineConfig)
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling mass (1 = off)
    max_new_tokens: int = 64  # response length cap (ignored on the testbed: L)


@dataclasses.dataclass(frozen=True)
class TestbedConfig:
    """The enumerable testbed and its synthetic preference (testbed mode)."""

    __test__ = False  # not a pytest class

    alphabet_size: int = 3  # A = the model's vocab_size
    response_length: int = 2  # L: A^L responses
    preference: Literal["cyclic", "bradley_terry", "annotators"] = "cyclic"
    strength: float = 2.0  # cyclic: rock-paper-scissors logit between styles
    reward_scale: float = 0.5  # std of the random additive (per-position) rewards
    num_annotators: int = 3  # annotators: BT annotators with different rewards
    seed: int = 0  # the preference is a function of this seed

    def __post_init__(self):
        if self.alphabet_size < 2:
            _bad("alphabet_size", self.alphabet_size, ">= 2")
        if self.response_length < 1:
            _bad("response_length", self.response_length, ">= 1")
        if self.num_annotators < 1:
            _bad("num_annotators", self.num_annotators, ">= 1")


@dataclasses.dataclass(frozen=True)
class PromptsConfig:
    """Prompts of the prompts mode (a preference file works: chosen/rejected are ignored)."""

    path: str = ""  # JSONL/Parquet file or directory; "" = the testbed (or tiny prompts)
    max_prompt_length: int = 256  # prompts keep their last tokens, left-padded to this
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    skip_malformed: bool = False  # true: skip and count malformed rows instead of stopping
    use_chat_template: bool = True  # render chat prompts with the tokenizer's template
    tiny: bool = False  # true (with path ""): the synthetic tiny prompts, tokenizer and model


@dataclasses.dataclass(frozen=True)
class OracleConfig:
    """Who labels the pairs."""

    kind: Literal["testbed", "reward_model", "preference_model", "mixture"] = "testbed"
    path: str = ""  # local HF directory of the reward / preference model
    sample: bool = False  # true: Bernoulli 0/1 labels; false: soft P(a ≻ b)
    # mixture of annotators: one kind and path per annotator, and their weights
    kinds: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    weights: tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class OnlineLoggingConfig:
    """Metrics to ``metrics.jsonl`` and TensorBoard."""

    tensorboard: bool = True  # also write TensorBoard scalars
    eval_every: int = 10  # prompts mode: oracle win rate of π_t vs π_ref every N iterations
    eval_prompts: int = 64  # prompts for that win rate


@dataclasses.dataclass(frozen=True)
class OnlineRunConfig:
    """Length, seed and place of an online run."""

    iterations: int = 10  # outer iterations T
    seed: int = 0  # model init, prompts, sampling and labels
    out_dir: str = "runs/online"  # run directory
    overwrite: bool = False  # delete an existing out_dir first
    resume: bool = False  # continue from the newest checkpoint in out_dir
    save_model: bool = True  # write the final policy to <out_dir>/model (HF format)

    def __post_init__(self):
        if self.iterations < 1:
            _bad("iterations", self.iterations, "a positive integer")
        if self.resume and self.overwrite:
            _bad("resume/overwrite", (self.resume, self.overwrite), "at most one of them true")


@dataclasses.dataclass(frozen=True)
class OnlineTrainConfig:
    """A whole online run; see ``configs/train/inpo_testbed.yaml`` and ``inpo_hf.yaml``."""

    algorithm: OnlineAlgorithmConfig = dataclasses.field(default_factory=OnlineAlgorithmConfig)
    online: OnlineLoopConfig = dataclasses.field(default_factory=OnlineLoopConfig)
    model: ModelConfig = dataclasses.field(
        default_factory=lambda: ModelConfig(
            vocab_size=3,
            hidden_size=32,
            intermediate_size=64,
            num_layers=1,
            num_heads=2,
            num_kv_heads=2,
            head_dim=16,
            initializer_range=0.5,
        )
    )
    init: InitConfig = dataclasses.field(default_factory=InitConfig)
    testbed: TestbedConfig = dataclasses.field(default_factory=TestbedConfig)
    prompts: PromptsConfig = dataclasses.field(default_factory=PromptsConfig)
    oracle: OracleConfig = dataclasses.field(default_factory=OracleConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    sharding: ShardingConfig = dataclasses.field(default_factory=ShardingConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    logging: OnlineLoggingConfig = dataclasses.field(default_factory=OnlineLoggingConfig)
    # Orbax checkpoints of the loop state (policy, anchors, iteration) every N iterations
    checkpoint: CheckpointConfig = dataclasses.field(
        default_factory=lambda: CheckpointConfig(every_steps=10, keep=2)
    )
    run: OnlineRunConfig = dataclasses.field(default_factory=OnlineRunConfig)

    def __post_init__(self):
        if self.run.resume and not self.checkpoint.enabled:
            raise ValueError("run.resume=true needs checkpoint.enabled=true")
        if self.testbed_mode:
            if self.init.pretrained:
                _bad("init.pretrained", self.init.pretrained, '"" in testbed mode')
            if self.model.vocab_size != self.testbed.alphabet_size:
                raise ValueError(
                    f"model.vocab_size={self.model.vocab_size} must equal "
                    f"testbed.alphabet_size={self.testbed.alphabet_size} in testbed mode"
                )
        elif self.oracle.kind == "testbed":
            raise ValueError(
                "oracle.kind=testbed labels testbed responses only: set prompts.path to '' "
                "(and prompts.tiny=false), or choose reward_model / preference_model / mixture"
            )
        if self.algorithm.name in OFFLINE_ALGORITHMS and not self.testbed_mode:
            raise ValueError(
                f"{self.algorithm.name} runs here only on the testbed; for text data use the "
                f"offline engine (configs/train/{self.algorithm.name}_hf.yaml)"
            )
        if self.algorithm.name == "kl_pg" and self.oracle.kind not in ("testbed", "reward_model"):
            raise ValueError(
                f"kl_pg needs a reward: oracle.kind=testbed (the testbed's additive reward) or "
                f"reward_model, got {self.oracle.kind!r}"
            )
        if self.oracle.kind in ("reward_model", "preference_model") and not self.oracle.path:
            _bad("oracle.path", "", f"a local {self.oracle.kind} directory")
        if self.oracle.kind == "mixture":
            o = self.oracle
            if not o.paths or len(o.kinds) != len(o.paths):
                raise ValueError(
                    "oracle.kind=mixture needs oracle.kinds and oracle.paths, one entry per "
                    f"annotator, got kinds={o.kinds} paths={o.paths}"
                )
        # validates the algorithm's hyperparameters
        self.pg_config() if self.algorithm.name == "kl_pg" else self.online_config()

    @property
    def testbed_mode(self) -> bool:
        return not self.prompts.path and not self.prompts.tiny

    def online_config(self) -> OnlineConfig:
        a, o = self.algorithm, self.online
        return OnlineConfig(
            algorithm=a.name,
            num_iterations=self.run.iterations,
            batch_size=o.batch_size,
            inner_steps=o.inner_steps,
            learning_rate=o.learning_rate,
            step_size=a.step_size,
            tau=a.tau,
            num_players=a.num_players,
            opponent_weights=a.opponent_weights,
            mixture=a.mixture,
            beta=a.beta,
            flip_rate=a.flip_rate,
            temperature=o.temperature,
            top_p=o.top_p,
            max_new_tokens=o.max_new_tokens,
            adam_eps=o.adam_eps,
        )

    def pg_config(self) -> PolicyGradientConfig:
        a, o = self.algorithm, self.online
        return PolicyGradientConfig(
            num_iterations=self.run.iterations,
            batch_size=o.batch_size,
            group_size=a.group_size,
            learning_rate=o.learning_rate,
            beta=a.beta,
            baseline=a.baseline,
            estimator=a.estimator,
            kl_mode=a.kl_mode,
            normalise=a.normalise,
            max_new_tokens=o.max_new_tokens,
            adam_eps=o.adam_eps,
        )


ONLINE_RUN_ALGORITHMS: tuple[str, ...] = (*ALGORITHMS, "kl_pg")
TESTBED_OFFLINE_ALGORITHMS: tuple[str, ...] = OFFLINE_ALGORITHMS


def is_online_config(data: dict[str, Any]) -> bool:
    """Whether a config mapping is for this driver: ``algorithm.name`` is an online Nash
    algorithm or ``kl_pg``, or an offline loss (dpo / ipo / robust_dpo) with a ``testbed``
    section (offline pairs from π_ref on the testbed, scored exactly)."""
    name = (data.get("algorithm") or {}).get("name")
    return name in ONLINE_RUN_ALGORITHMS or (
        name in TESTBED_OFFLINE_ALGORITHMS and "testbed" in data
    )


def online_config_from_dict(data: dict[str, Any]) -> OnlineTrainConfig:
    try:
        return from_dict(OnlineTrainConfig, data)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # pragma: no cover - from_dict wraps these
        raise ConfigError(str(e)) from e


def load_online_config(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> OnlineTrainConfig:
    """An :class:`OnlineTrainConfig` from YAML plus dotted ``key=value`` overrides."""
    data = load_yaml(path) if path is not None else {}
    return online_config_from_dict(apply_overrides(data, overrides))


# ---------------------------------------------------------------------------------------------


def _testbed_game(cfg: TestbedConfig, testbed):
    from jaxalign import testbed as tb

    key = jax.random.key(cfg.seed)
    if cfg.preference == "cyclic":
        return tb.cyclic_preference(
            testbed, strength=cfg.strength, reward_scale=cfg.reward_scale, key=key
        )
    shape = (cfg.num_annotators, testbed.response_length, testbed.alphabet_size)
    rewards = jax.random.normal(key, shape) * cfg.reward_scale
    if cfg.preference == "bradley_terry":
        return tb.bradley_terry_preference(testbed, rewards[0])
    return tb.annotator_mixture_preference(testbed, rewards)


def _oracle(cfg: OnlineTrainConfig, mesh, rules):
    from jaxalign.train import oracles

    o = cfg.oracle
    if o.kind in ("reward_model", "preference_model"):
        return oracles.load_oracle(o.kind, o.path, mesh=mesh, rules=rules, sample=o.sample)
    members = [
        oracles.load_oracle(kind, path, mesh=mesh, rules=rules, sample=False)
        for kind, path in zip(o.kinds, o.paths)
    ]
    return oracles.annotator_mixture_oracle(members, o.weights, sample=o.sample)


class _Logger:
    """metrics.jsonl + TensorBoard on process 0; keeps every record for the summary."""

    def __init__(self, out: Path, cfg: OnlineTrainConfig, is_main: bool, start: int):
        from jaxalign.train.metrics import JsonlWriter, read_jsonl, truncate_jsonl
        from jaxalign.train.tensorboard import SummaryWriter

        path = out / "metrics.jsonl"
        self.history: list[dict[str, float]] = []
        if start and path.exists():
            self.history = [r for r in read_jsonl(path) if r.get("iteration", 0) <= start]
        if is_main:
            truncate_jsonl(path, start, key="iteration")
        self.jsonl = JsonlWriter(path) if is_main else None
        self.tb = (
            SummaryWriter(out / "tensorboard") if is_main and cfg.logging.tensorboard else None
        )

    def __call__(self, t: int, metrics: dict[str, float]) -> None:
        record = {"iteration": t, **metrics}
        self.history.append(record)
        if self.jsonl is not None:
            self.jsonl.write(record)
        if self.tb is not None:
            self.tb.scalars(t, {k: v for k, v in record.items() if k != "iteration"})

    def close(self):
        for w in (self.jsonl, self.tb):
            if w is not None:
                w.close()


def train_online(config: OnlineTrainConfig, *, quiet: bool = False) -> dict[str, Any]:
    """Runs (or resumes) an online training run; returns (and writes to ``summary.json``)
    its summary."""
    from jaxalign.train.loop import _make_mesh, _prepare_run_dir

    initialize_distributed(config=config.distributed)
    quiet = quiet or jax.process_index() > 0
    say = (lambda *a: None) if quiet else functools.partial(print, flush=True)
    out = _prepare_run_dir(config)
    is_main = jax.process_index() == 0
    if is_main:
        import yaml

        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    mesh = _make_mesh(config)
    rules = DEFAULT_RULES.replace(dict(config.sharding.rules)).as_pairs()
    name = config.algorithm.name
    oc = config.pg_config() if name == "kl_pg" else config.online_config()
    key_model, key_train = jax.random.split(jax.random.key(config.run.seed))
    t0 = time.perf_counter()
    build = {
        (True, False): _testbed_run,
        (False, False): _prompts_run,
        (True, True): _pg_testbed_run,
        (False, True): _pg_prompts_run,
    }[config.testbed_mode, name == "kl_pg"]
    trainer, scorer, summarise = build(config, oc, mesh, rules, key_model, out)

    checkpointer = None
    if config.checkpoint.enabled:
        from jaxalign.train.checkpoint import Checkpointer

        checkpointer = Checkpointer(out / "checkpoints", config.checkpoint)
    start = 0
    if config.run.resume and checkpointer is not None:
        start = _restore(checkpointer, trainer, scorer, say)
    logger = _Logger(out, config, is_main, start)
    try:
        for t in range(start, oc.num_iterations):
            metrics = trainer.iteration(jax.random.fold_in(key_train, t))
            if scorer is not None:
                metrics.update(scorer.score(trainer.state.params))
            elif isinstance(trainer, OnlineTrainer) and (
                (t + 1) % config.logging.eval_every == 0 or t + 1 == oc.num_iterations
            ):
                metrics["win_rate_vs_reference"] = trainer.win_rate_vs_reference(
                    jax.random.fold_in(jax.random.fold_in(key_train, 2**31 - 1), t),
                    config.logging.eval_prompts,
                )
            logger(t + 1, metrics)
            done = t + 1 == oc.num_iterations
            if checkpointer is not None and ((t + 1) % config.checkpoint.every_steps == 0 or done):
                meta = {"step": t + 1, "config": to_dict(config)}
                if scorer is not None:
                    meta["testbed"] = scorer.state_dict()
                checkpointer.save(t + 1, trainer.state_tree(), meta, force=done)
    finally:
        logger.close()
        if checkpointer is not None:
            checkpointer.close()
    summary = summarise(logger.history) if logger.history else {}
    summary.update(
        algorithm=name,
        iterations=oc.num_iterations,
        resumed_from=start or None,
        runtime_s=time.perf_counter() - t0,
        out_dir=str(out),
    )
    if config.run.save_model:
        with jax.set_mesh(mesh), axis_rules(rules):
            save_pretrained(trainer.model(), out / "model")
        summary["model_dir"] = str(out / "model")
    if is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    say(f"jaxalign: online {name}: {json.dumps(_headline(summary))}")
    return summary


def _restore(checkpointer, trainer, scorer, say) -> int:
    def abstract(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)

    target = jax.tree.map(abstract, trainer.state_tree())
    restored = checkpointer.restore_latest(target)
    if restored is None:
        say(f"jaxalign: no checkpoint in {checkpointer.directory}; starting from iteration 0")
        return 0
    step, tree, meta = restored
    trainer.load_state_tree(step, tree)
    if scorer is not None:
        scorer.load_state_dict(meta["testbed"])
    say(f"jaxalign: resumed from checkpoint iteration {step}")
    return step


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("initial_duality_gap", "final_duality_gap", "final_regularised_gap",
            "final_average_iterate_gap", "tabular_final_duality_gap",
            "tabular_final_average_gap", "final_kl_to_target", "target_duality_gap",
            "initial_objective_gap", "final_objective_gap",
            "final_exact_reward", "optimal_reward", "final_loss", "final_reward_mean",
            "final_win_rate_vs_reference")  # fmt: skip
    return {k: round(summary[k], 4) for k in keys if k in summary}


def _testbed_run(config, oc, mesh, rules, key_model, out):
    from jaxalign import testbed as tb

    del out
    testbed = tb.Testbed(
        alphabet_size=config.testbed.alphabet_size,
        response_length=config.testbed.response_length,
    )
    game = _testbed_game(config.testbed, testbed)
    model = CausalLM.create(config.model, key=key_model)
    trainer, task = testbed_trainer(model, testbed, game, oc, mesh=mesh, rules=rules)
    scorer = TestbedScorer(task, trainer)

    def summarise(history):
        h = scorer.history([r["loss"] for r in history])
        avg = average_policy_gaps(game, h.log_policies)
        out = {
            "mode": "testbed",
            "num_responses": testbed.num_responses,
            "initial_duality_gap": float(h.duality_gap[0]),
            "final_duality_gap": float(h.duality_gap[-1]),
            "min_duality_gap": float(jnp.min(h.duality_gap)),
            "initial_regularised_gap": float(h.regularised_gap[0]),
            "final_regularised_gap": float(h.regularised_gap[-1]),
            "final_kl_to_reference": float(h.kl_to_reference[-1]),
            "final_win_rate_vs_reference": float(h.win_rate_vs_reference[-1]),
            "final_loss": float(h.loss[-1]),
            "final_average_iterate_gap": float(avg[-1]),
        }
        if oc.algorithm in OFFLINE_ALGORITHMS:
            target = population_minimiser(oc, game, scorer.log_ref)
            if target is not None:
                out.update(
                    final_kl_to_target=float(h.tracking_kl[-1]),
                    target_duality_gap=float(duality_gap(game, target)),
                    target_kl_to_reference=float(kl_divergence(target, scorer.log_ref)),
                )
            return out
        tab = _tabular_baseline(oc, game, h.log_policies[0], scorer.log_ref)
        out.update(
            tabular_final_duality_gap=float(tab.last_gap[-1]),
            tabular_final_average_gap=float(tab.avg_gap[-1]),
        )
        return out

    return trainer, scorer, summarise


def _testbed_reward(cfg: TestbedConfig, testbed):
    """The additive reward r(y) = Σ_i R[i, y_i] of the testbed (R ~ N(0, reward_scale²),
    seeded by ``testbed.seed``; the Bradley–Terry preference's reward)."""
    from jaxalign import testbed as tb

    shape = (cfg.num_annotators, testbed.response_length, testbed.alphabet_size)
    rewards = jax.random.normal(jax.random.key(cfg.seed), shape) * cfg.reward_scale
    return tb.additive_reward(testbed, rewards[0])


def _pg_testbed_run(config, pc, mesh, rules, key_model, out):
    from jaxalign import testbed as tb

    del out
    testbed = tb.Testbed(
        alphabet_size=config.testbed.alphabet_size,
        response_length=config.testbed.response_length,
    )
    reward = _testbed_reward(config.testbed, testbed)
    model = CausalLM.create(config.model, key=key_model)
    trainer, scorer = testbed_pg_trainer(model, testbed, reward, pc, mesh=mesh, rules=rules)
    initial = scorer._scores(scorer.log_ref)

    def summarise(history):
        last = scorer.records[-1]
        out = {
            "mode": "testbed",
            "num_responses": testbed.num_responses,
            "final_exact_reward": last["exact_reward"],
            "final_kl_to_reference": last["kl_to_reference"],
            "final_loss": history[-1]["loss"],
            "final_reward_mean": history[-1]["reward_mean"],
            "initial_exact_reward": initial["exact_reward"],
        }
        if pc.beta > 0:
            out.update(
                initial_objective_gap=initial["objective_gap"],
                final_objective_gap=last["objective_gap"],
                optimal_reward=scorer.optimum["exact_reward"],
                optimal_kl_to_reference=scorer.optimum["kl_to_reference"],
            )
        return out

    return trainer, scorer, summarise


def _pg_prompts_run(config, pc, mesh, rules, key_model, out):
    tokenizer, prompts, model = _prompts_policy(config, mesh, rules, key_model, out)
    from jaxalign.models import reward_model_from_pretrained

    with jax.set_mesh(mesh), axis_rules(rules):
        rm = reward_model_from_pretrained(config.oracle.path, mesh=mesh, rules=rules)
    sampler = _sampler_kwargs(tokenizer, prompts, mesh, rules)
    trainer = PolicyGradientTrainer(model, pc, reward_fn=reward_model_fn(rm), **sampler)

    def summarise(history):
        return {
            "mode": "prompts",
            "num_prompts": len(prompts),
            "truncated_prompts": int(prompts.num_truncated),
            "first_reward_mean": history[0]["reward_mean"],
            "final_reward_mean": history[-1]["reward_mean"],
            "final_kl_estimate": history[-1]["kl_estimate"],
            "final_loss": history[-1]["loss"],
            "median_iteration_s": float(np.median([r["time_s"] for r in history])),
        }

    return trainer, None, summarise


def _tokenizer(config, out: Path):
    from jaxalign.models import build_tiny_tokenizer, load_tokenizer

    if config.init.tokenizer:
        return load_tokenizer(config.init.tokenizer)
    directory = out / f"tokenizer-p{jax.process_index()}"
    build_tiny_tokenizer(directory, vocab_size=config.init.tiny_tokenizer_vocab_size)
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)


def _sampler_kwargs(tokenizer, prompts, mesh, rules) -> dict[str, Any]:
    """Prompts, stop/pad tokens and placement shared by the prompts-mode trainers."""
    eos = tokenizer.eos_token_id
    return dict(
        prompts=prompts,
        eos_token_id=() if eos is None else int(eos),
        pad_token_id=int(prompts.pad_token_id),
        mesh=mesh,
        rules=rules,
    )


def _prompts_policy(config, mesh, rules, key_model, out: Path):
    """(tokenizer, prompt dataset, policy) of a prompts-mode run."""
    from jaxalign.data import load_prompt_dataset, make_tiny_preference_dataset

    tokenizer = _tokenizer(config, out)
    path = config.prompts.path
    if not path:
        path = make_tiny_preference_dataset(
            out / "data" / f"tiny-p{jax.process_index()}.jsonl", 256, config.run.seed
        )
    prompts = load_prompt_dataset(
        path,
        tokenizer,
        max_prompt_length=config.prompts.max_prompt_length,
        fmt=config.prompts.format,
        skip_malformed=config.prompts.skip_malformed,
        use_chat_template=config.prompts.use_chat_template,
    )
    with jax.set_mesh(mesh), axis_rules(rules):
        if config.init.pretrained:
            model = from_pretrained(config.init.pretrained, mesh=mesh, rules=rules)
        else:
            model = CausalLM.create(config.model, key=key_model)
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
            f"{model.config.vocab_size}"
        )
    return tokenizer, prompts, model


def _prompts_run(config, oc, mesh, rules, key_model, out: Path):
    tokenizer, prompts, model = _prompts_policy(config, mesh, rules, key_model, out)
    sampler = _sampler_kwargs(tokenizer, prompts, mesh, rules)
    trainer = OnlineTrainer(model, oc, oracle=_oracle(config, mesh, rules), **sampler)

    def summarise(history):
        summary = {
            "mode": "prompts",
            "num_prompts": len(prompts),
            "truncated_prompts": int(prompts.num_truncated),
            "first_loss": history[0]["loss"],
            "final_loss": history[-1]["loss"],
            "final_kl_k3": history[-1]["kl_k3"],
            "median_iteration_s": float(np.median([r["time_s"] for r in history])),
        }
        wins = [r["win_rate_vs_reference"] for r in history if "win_rate_vs_reference" in r]
        if wins:
            summary["final_win_rate_vs_reference"] = wins[-1]
        return summary

    return trainer, None, summarise


__all__ = [
    "OnlineAlgorithmConfig",
    "OnlineLoggingConfig",
    "OnlineLoopConfig",
    "OnlineRunConfig",
    "OnlineTrainConfig",
    "OracleConfig",
    "PromptsConfig",
    "TestbedConfig",
    "is_online_config",
    "load_online_config",
    "online_config_from_dict",
    "train_online",
]
