r"""General preference-model training (``algorithm.name: preference_model``).

The model is a :class:`~jaxalign.models.PreferenceModel`: the causal-LM trunk and, at each
sequence's last real token, a scalar score :math:`r` and a :math:`2k`-dim embedding
:math:`v` (``k = algorithm.rank``), combined into the antisymmetric logit

.. math::
    s(a, b) = r(a) - r(b) + \sum_{j<k} \bigl(v_{2j}(a) v_{2j+1}(b) - v_{2j+1}(a) v_{2j}(b)\bigr),
    \qquad \hat P(a \succ b) = \sigma(s(a, b)).

``s(a, b) = −s(b, a)`` holds exactly, so :math:`\hat P(a \succ b) + \hat P(b \succ a) = 1`
up to one rounding of σ, and with ``k ≥ 1`` the model can express cyclic
(rock–paper–scissors) preferences that no reward model can (Zhang et al. 2024).

**Data: labelled pairs, fed in both orders.** A pair ``(a, b)`` with label
:math:`y = P(a \succ b) \in [0, 1]` is trained as the two rows ``(a, b, y)`` and
``(b, a, 1 − y)``:

* on preference files (``data.path`` / tiny data, as ``reward_model``): ``a`` = chosen,
  ``b`` = rejected, ``y = 1`` — so the rows are (chosen, rejected, 1) and
  (rejected, chosen, 0);
* on the enumerable testbed (``testbed.enabled: true``): each step draws ``data.batch_size``
  ordered pairs of responses uniformly from all :math:`n^2` and labels them with the
  testbed's exact preference: the **soft** label :math:`y = P_{ab}` (default,
  ``oracle.sample: false``) or a Bernoulli(:math:`P_{ab}`) hard label
  (``oracle.sample: true``).

**Loss**: the binary cross-entropy of :math:`\hat P`, averaged over the real rows,

.. math::
    \ell(a, b, y) = -y \log \hat P(a \succ b) - (1 - y) \log \hat P(b \succ a)
                  = y\,\mathrm{softplus}(-s) + (1 - y)\,\mathrm{softplus}(s),

whose population minimiser over all pairs is :math:`\hat P = P` when the head can express
``P``. (For an exactly antisymmetric head the two orders of a pair contribute the same
loss; feeding both keeps the estimator symmetric for any head and is what the
``antisymmetry_error`` metric reads.) The step is one AdamW update on the gradient
(accumulated over ``grad_accum_steps`` micro-batches of pairs, each keeping both orders).
One trunk pass computes the features of both sides ``[a; b]``; both orders are formed
from them.

Metrics: ``loss``, ``accuracy`` (:math:`\sum_\text{rows} y\,[s > 0] + (1 - y)\,[s < 0]`
over the rows: plain accuracy for hard labels), ``antisymmetry_error``
(:math:`\max |\hat P(a \succ b) + \hat P(b \succ a) - 1|` over the batch), norms and
``lr``. Every ``logging.eval_every`` steps (and at the end): on preference files
``eval_accuracy`` (held-out pairs with :math:`\hat P(\text{chosen} \succ \text{rejected}) >
½`) and ``eval_loss``; on the testbed the exact scores over all :math:`n^2` pairs —
``eval_max_abs_error`` :math:`\max_{ab} |\hat P_{ab} - P_{ab}|`, ``eval_mean_abs_error``,
``eval_loss`` (cross-entropy against the soft labels ``P``) and ``eval_accuracy`` (share of
pairs with :math:`P_{ab} \ne ½` on which :math:`\hat P` picks the same winner).

The final model is written to ``<out>/model`` by ``save_pretrained`` (``config.json`` with
``preference_model.rank``, safetensors; plus the tokenizer on text data): the directory
``oracle.kind: preference_model`` / ``oracle.path`` of the online algorithms loads
(:func:`~jaxalign.train.oracles.load_oracle`).

References:
  Zhang, Y. et al. (2024). Beyond Bradley-Terry Models: A General Preference Model for
  Language Model Alignment (arXiv:2410.02197).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxalign import testbed as tb
from jaxalign.data import (
    PreferenceBatch,
    format_data_stats,
    load_preference_dataset,
    make_tiny_preference_dataset,
    pad_token_id,
)
from jaxalign.models import (
    ModelConfig,
    PreferenceModel,
    RewardModel,
    axis_rules,
    preference_model_from_pretrained,
    state_shardings,
)
from jaxalign.models.heads import preference_logit
from jaxalign.models.lora import merge_adapters, parameter_report
from jaxalign.parallel import shard_batch
from jaxalign.train.metrics import dpo_step_flops
from jaxalign.train.optim import make_optimizer
from jaxalign.train.state import Shardings, TrainState, apply_gradients, train_shardings
from jaxalign.train.tasks import common
from jaxalign.train.tasks.base import RunContext, Task
from jaxalign.train.tasks.sft import (
    constrain_micro_batch,
    eval_every,
    heldout_config,
    row_multiple,
    split_micro_batches,
)


class PairBatch(NamedTuple):
    """Labelled pairs ``(a, b, y)``, ``y`` the target of :math:`P(a \\succ b)` (a pytree).

    Both sides are right-padded to one length ``L``; the step adds the reversed order.
    """

    tokens_a: Any  # (B, L) int32
    mask_a: Any  # (B, L) int32, 1 on real tokens
    tokens_b: Any  # (B, L) int32
    mask_b: Any  # (B, L) int32
    label: Any  # (B,) float32 in [0, 1]: 1 = a preferred, 0 = b preferred, else soft
    example_mask: Any  # (B,) float32, 0 for filler rows of a partial last batch


def pairs_from_preference_batch(batch: PreferenceBatch) -> PairBatch:
    """(chosen, rejected) rows as pairs ``a = chosen``, ``b = rejected``, label 1 (numpy)."""
    rows = batch.example_mask.shape[0]
    return PairBatch(
        batch.chosen_input_ids,
        batch.chosen_attention_mask,
        batch.rejected_input_ids,
        batch.rejected_attention_mask,
        np.ones((rows,), np.float32),
        batch.example_mask,
    )


class OrderedPairs(NamedTuple):
    """Rows of the loss, ``2B``: the ``B`` pairs ``(a, b, y)`` then ``(b, a, 1 − y)``."""

    logit: jax.Array  # s of each row
    label: jax.Array  # its target
    weight: jax.Array  # example mask of each row


def ordered_pair_logits(model: PreferenceModel, batch: PairBatch) -> OrderedPairs:
    """Both orders of every pair from one trunk pass over ``[a; b]``.

    Row ``i < B`` is ``(a_i, b_i)`` with label ``y_i``; row ``B + i`` is ``(b_i, a_i)`` with
    label ``1 − y_i`` and logit ``s(b_i, a_i) = −s(a_i, b_i)`` (exactly, by the head).
    """
    b = batch.label.shape[0]
    r, v = model.features(
        jnp.concatenate([batch.tokens_a, batch.tokens_b]),
        jnp.concatenate([batch.mask_a, batch.mask_b]),
    )
    r_a, v_a, r_b, v_b = r[:b], v[:b], r[b:], v[b:]
    s_ab = preference_logit(r_a, v_a, r_b, v_b)
    s_ba = preference_logit(r_b, v_b, r_a, v_a)
    y = batch.label.astype(jnp.float32)
    w = batch.example_mask.astype(jnp.float32)
    return OrderedPairs(
        jnp.concatenate([s_ab, s_ba]), jnp.concatenate([y, 1.0 - y]), jnp.concatenate([w, w])
    )


def preference_cross_entropy(logit: jax.Array, label: jax.Array) -> jax.Array:
    """Per-row binary cross-entropy of :math:`\\hat P = \\sigma(s)` against ``label`` y.

    .. math:: \\ell = y\\,\\mathrm{softplus}(-s) + (1 - y)\\,\\mathrm{softplus}(s)
              = -y \\log \\sigma(s) - (1 - y) \\log \\sigma(-s).

    Example::

        preference_cross_entropy(jnp.zeros(1), jnp.ones(1))  # log 2
    """
    s, y = jnp.asarray(logit), jnp.asarray(label, jnp.asarray(logit).dtype)
    if s.shape != y.shape:
        raise ValueError(f"logit.shape={s.shape} must equal label.shape={y.shape}")
    return y * jax.nn.softplus(-s) + (1 - y) * jax.nn.softplus(s)


_SUMMED = ("loss", "accuracy")


def _pair_sums(params, batch: PairBatch, *, graphdef, frozen=None, dropout=0.0, key=None):
    """Summed (over real rows, both orders) loss, metric sums and the antisymmetry error
    (LoRA: ``params`` the adapters and heads on the frozen trunk weights ``frozen``, adapter
    dropout ``dropout`` drawn from ``key``)."""
    model = common.policy_model(graphdef, params, frozen, dropout=dropout, key=key)
    rows = ordered_pair_logits(model, batch)
    w, s, y = rows.weight, rows.logit, rows.label
    loss = preference_cross_entropy(s, y)
    correct = y * (s > 0).astype(s.dtype) + (1 - y) * (s < 0).astype(s.dtype)
    p = jax.nn.sigmoid(jax.lax.stop_gradient(s))
    b = batch.label.shape[0]
    antisymmetry = jnp.max(
        jnp.where(batch.example_mask > 0, jnp.abs(p[:b] + p[b:] - 1), 0.0), initial=0.0
    )
    sums = {"loss": jnp.sum(w * loss), "accuracy": jnp.sum(w * correct)}
    return sums["loss"], (sums, antisymmetry)


def preference_model_train_step(
    state: TrainState,
    batch: PairBatch,
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    lr_schedule: optax.Schedule,
    grad_accum_steps: int = 1,
    batch_sharding: Any = None,
    frozen: nnx.State | None = None,
    dropout: float = 0.0,
    key: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One cross-entropy step of a preference model (pure; jit it with ``state`` donated).

    The gradient of :math:`\\sum_\\text{rows} w\\,\\ell(s, y)` over both orders of every real
    pair (:func:`ordered_pair_logits`, :func:`preference_cross_entropy`), accumulated over
    ``grad_accum_steps`` micro-batches of pairs (pair ``i`` → micro-batch ``i mod k``),
    divided by the number of rows ``2 Σ w``: the gradient of the mean row loss. A
    non-finite loss or gradient keeps the old state.

    Args:
        state: :class:`~jaxalign.train.state.TrainState` of the preference model.
        batch: a global :class:`PairBatch`.
        graphdef: the :class:`~jaxalign.models.PreferenceModel` graph (static).
        tx, lr_schedule: the optimizer and its schedule (for the ``lr`` metric).
        grad_accum_steps: micro-batches ``k``.
        batch_sharding: sharding of a ``(batch, length)`` micro-batch array, or None.
        frozen: LoRA: the frozen trunk weights; ``state.params`` are then the adapters and
            the ``reward`` / ``embedding`` heads, ``graphdef`` the adapted graph.
        dropout, key: LoRA dropout rate on the adapters' input and this step's key (None:
            no dropout; micro-batch ``i`` draws from ``fold_in(key, i)``).

    Returns:
        ``(new_state, metrics)`` (see the module docstring).
    """
    k = grad_accum_steps
    sums_fn = functools.partial(_pair_sums, graphdef=graphdef, frozen=frozen, dropout=dropout)
    grad_fn = jax.grad(lambda p, mb, mb_key: sums_fn(p, mb, key=mb_key), has_aux=True)
    if k == 1:
        grads, (sums, antisymmetry) = grad_fn(state.params, batch, key)
    else:

        def body(carry, xs):
            mb, i = xs if key is not None else (xs, None)
            mb = constrain_micro_batch(mb, batch_sharding)
            g, (s, a) = grad_fn(state.params, mb, common.micro_key(key, i))
            g = jax.tree.map(lambda x: x.astype(jnp.float32), g)
            acc_g, acc_s, acc_a = carry
            return (jax.tree.map(jnp.add, acc_g, g), jax.tree.map(jnp.add, acc_s, s),
                    jnp.maximum(acc_a, a)), None  # fmt: skip

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
        init = (zeros, {n: jnp.zeros((), jnp.float32) for n in _SUMMED}, jnp.zeros(()))
        micro = split_micro_batches(batch, k)
        xs = micro if key is None else (micro, jnp.arange(k))
        (grads, sums, antisymmetry), _ = jax.lax.scan(body, init, xs)
    count = jnp.maximum(2 * jnp.sum(batch.example_mask), jnp.ones((), jnp.float32))
    grads = jax.tree.map(
        lambda g, p: (g.astype(jnp.float32) / count).astype(p.dtype), grads, state.params
    )
    metrics = {name: sums[name] / count for name in _SUMMED}
    new_state, update_metrics = apply_gradients(
        state, grads, tx, lr_schedule, ok=jnp.isfinite(metrics["loss"])
    )
    tokens = jnp.sum(batch.mask_a) + jnp.sum(batch.mask_b)
    metrics.update(
        update_metrics,
        antisymmetry_error=antisymmetry.astype(jnp.float32),
        tokens=tokens.astype(jnp.float32),
        computed_tokens=jnp.asarray(2 * batch.tokens_a.size, jnp.float32),
    )
    return new_state, metrics


def _eval_sums(params, frozen, batch: PairBatch, *, graphdef):
    """(summed loss, correctly ordered pairs, real pairs) of one held-out batch (one order:
    both orders give the same values for an antisymmetric head)."""
    model = common.policy_model(graphdef, params, frozen)
    rows = ordered_pair_logits(model, batch)
    b = batch.label.shape[0]
    s, w = rows.logit[:b], batch.example_mask
    loss = preference_cross_entropy(s, batch.label.astype(s.dtype))
    return jnp.sum(w * loss), jnp.sum(w * (s > 0).astype(w.dtype)), jnp.sum(w)


# ----------------------------------------------------------------------------- testbed


def testbed_pair_batch(
    key: jax.Array,
    testbed: tb.Testbed,
    preference: np.ndarray,
    batch_size: int,
    *,
    sample: bool = False,
) -> PairBatch:
    """``batch_size`` ordered pairs ``(a, b)`` drawn uniformly from the :math:`n^2` pairs of
    testbed responses, labelled ``y = P_{ab}`` (``sample=False``) or ``y ~ Bernoulli(P_{ab})``.

    Args:
        key: PRNG key of the draw.
        testbed: the enumerable response space.
        preference: ``[n, n]`` exact preference matrix ``P`` (rows beat columns).
        batch_size: pairs ``B``.
        sample: hard Bernoulli labels instead of the soft ``P``.

    Returns:
        A numpy :class:`PairBatch` of ``[B, len(prompt) + L]`` sequences (all tokens real).
    """
    n = testbed.num_responses
    p = np.asarray(preference, np.float32)
    if p.shape != (n, n):
        raise ValueError(f"preference must have shape ({n}, {n}), got {p.shape}")
    k_pair, k_label = jax.random.split(key)
    idx = np.asarray(jax.random.randint(k_pair, (2, batch_size), 0, n))
    label = p[idx[0], idx[1]]
    if sample:
        u = np.asarray(jax.random.uniform(k_label, (batch_size,)))
        label = (u < label).astype(np.float32)
    tokens, _ = testbed.sequences(testbed.responses())
    tokens = np.asarray(tokens, np.int32)
    ones = np.ones((batch_size, tokens.shape[1]), np.int32)
    return PairBatch(tokens[idx[0]], ones, tokens[idx[1]], ones, label.astype(np.float32),
                     np.ones((batch_size,), np.float32))  # fmt: skip


def testbed_preference_matrix(
    model: PreferenceModel | RewardModel, testbed: tb.Testbed
) -> jax.Array:
    """The model's :math:`\\hat P_{ab}` over all testbed responses, ``[n, n]`` float32.

    One trunk pass over the ``n`` sequences; a :class:`~jaxalign.models.PreferenceModel`
    gives :math:`\\sigma(s(a, b))`, a :class:`~jaxalign.models.RewardModel` (Bradley–Terry)
    :math:`\\sigma(r(a) - r(b))`. Jittable (``nnx.jit``).
    """
    tokens, _ = testbed.sequences(testbed.responses())
    n = tokens.shape[0]
    if isinstance(model, RewardModel):
        r = model(tokens)[:, 0]
        return jax.nn.sigmoid(r[:, None] - r[None, :])
    if not isinstance(model, PreferenceModel):
        raise ValueError(f"model must be a PreferenceModel or RewardModel, got {model!r}")
    r, v = model.features(tokens)
    ia, ib = jnp.repeat(jnp.arange(n), n), jnp.tile(jnp.arange(n), n)
    return jax.nn.sigmoid(preference_logit(r[ia], v[ia], r[ib], v[ib])).reshape(n, n)


def testbed_errors(estimate, preference) -> dict[str, float]:
    """Exact scores of an estimate :math:`\\hat P` of the testbed's ``P`` over all pairs:
    ``max_abs_error``, ``mean_abs_error``, ``loss`` (mean cross-entropy
    :math:`-P\\log\\hat P - (1-P)\\log(1-\\hat P)`) and ``accuracy`` (share of pairs with
    :math:`P \\ne ½` whose winner :math:`\\hat P` gets right)."""
    q = np.clip(np.asarray(estimate, np.float64), 1e-12, 1 - 1e-12)
    p = np.asarray(preference, np.float64)
    if q.shape != p.shape:
        raise ValueError(f"estimate.shape={q.shape} must equal preference.shape={p.shape}")
    err = np.abs(q - p)
    decided = np.abs(p - 0.5) > 1e-9
    agree = (q > 0.5) == (p > 0.5)
    return {
        "max_abs_error": float(err.max()),
        "mean_abs_error": float(err.mean()),
        "loss": float(np.mean(-p * np.log(q) - (1 - p) * np.log1p(-q))),
        "accuracy": float(agree[decided].mean()) if decided.any() else 1.0,
    }


def bradley_terry_floor(preference, *, iterations: int = 60) -> tuple[float, np.ndarray]:
    r"""The smallest max error any Bradley–Terry model can reach on ``P``, and its scores.

    .. math::
        \varepsilon^\star = \min_{r \in \mathbb R^n} \max_{a, b}
        |\sigma(r_a - r_b) - P_{ab}|.

    ``max |σ(r_a − r_b) − P_ab| ≤ ε`` holds iff every difference satisfies
    :math:`r_a - r_b \le \operatorname{logit}(\min(P_{ab} + \varepsilon, 1))` (the lower
    bound of a pair is the upper bound of its reverse, as :math:`P_{ba} = 1 - P_{ab}`): a
    system of difference constraints, feasible iff the graph with an edge ``b → a`` of
    length :math:`\operatorname{logit}(P_{ab} + \varepsilon)` has no negative cycle
    (Floyd–Warshall); then the shortest-path distances are a feasible ``r``. ε* is found by
    bisection on ``[0, max |P − ½|]`` (``r = 0`` reaches the upper end); exact up to
    ``2^-iterations``. No reward model — trained or fitted by likelihood — can do better.

    Args:
        preference: ``[n, n]`` with ``P + Pᵀ = 1``.
        iterations: bisection steps.

    Returns:
        ``(ε*, r)`` with ``r`` centred scores reaching ε* (up to the bisection tolerance).
    """
    p = np.asarray(preference, np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or not np.allclose(p + p.T, 1.0, atol=1e-6):
        raise ValueError(f"preference must be a square matrix with P + Pᵀ = 1, got {p.shape}")
    n = p.shape[0]

    def potentials(eps: float) -> np.ndarray | None:
        with np.errstate(divide="ignore"):
            hi = np.clip(p + eps, 0.0, 1.0)
            bound = np.where(hi >= 1.0, np.inf, np.log(hi) - np.log1p(-hi))
        dist = bound.T.copy()  # dist[b, a]: edge b → a, r_a ≤ r_b + bound[a, b]
        for k in range(n):
            dist = np.minimum(dist, dist[:, k : k + 1] + dist[k : k + 1, :])
        if np.any(np.diag(dist) < -1e-12):
            return None
        r = np.min(np.minimum(dist, 0.0), axis=0)  # distances from a virtual source
        return r - r.mean()

    lo, hi = 0.0, float(np.max(np.abs(p - 0.5)))
    best = potentials(hi)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        r = potentials(mid)
        if r is None:
            lo = mid
        else:
            hi, best = mid, r
    return hi, best


def testbed_setup(config) -> tuple[tb.Testbed, np.ndarray]:
    """The testbed and its exact preference matrix of a config's ``testbed`` section (the
    game the online algorithms' ``testbed_game`` builds from the same section)."""
    from jaxalign.train.tasks.online_setup import testbed_game

    t = config.testbed
    testbed = tb.Testbed(alphabet_size=t.alphabet_size, response_length=t.response_length)
    return testbed, np.asarray(testbed_game(t, testbed).preference, np.float64)


# ----------------------------------------------------------------------------- the task


@dataclasses.dataclass
class PreferenceModelParts:
    """A trainable preference model: architecture, graph, optimizer, shardings, start."""

    config: ModelConfig
    rank: int
    graphdef: nnx.GraphDef
    tx: Any
    lr_schedule: Any
    shardings: Shardings
    pretrained: nnx.State | None
    lora: Any = None  # LoRAConfig: adapters on the trunk, the heads trained whole
    base_graphdef: nnx.GraphDef | None = None  # LoRA: the plain model's graph
    report: dict[str, float] | None = None  # LoRA: trainable fraction, optimizer bytes


#: The preference model's new heads: fully trained under LoRA.
HEADS = ("reward", "embedding")


def build_preference_model(ctx: RunContext, total_steps: int) -> PreferenceModelParts:
    """The preference model of ``ctx.config``: ``init.pretrained`` (a saved preference model
    keeps its heads, which must have rank ``algorithm.rank``; a causal-LM or reward-model
    checkpoint gets fresh heads drawn from the run seed), or a random one from ``model``."""
    config, m = ctx.config, ctx.config.model
    rank = config.algorithm.rank
    model_config, pretrained = m, None
    if config.init.pretrained:
        from jaxalign.models.heads import PREFERENCE_CONFIG_KEY
        from jaxalign.models.hf import read_hf_config

        saved = PREFERENCE_CONFIG_KEY in read_hf_config(config.init.pretrained)
        head_key = jax.random.fold_in(jax.random.key(config.run.seed), 1)
        loaded = preference_model_from_pretrained(
            config.init.pretrained,
            rank=rank,
            dtype=m.dtype,
            param_dtype=m.param_dtype,
            mesh=ctx.mesh,
            rules=ctx.rule_pairs,
            key=None if saved else head_key,
            config_overrides=common.runtime_overrides(m),
        )
        model_config, pretrained = loaded.config, nnx.split(loaded)[1]
    with axis_rules(ctx.rule_pairs):
        abstract = nnx.eval_shape(
            lambda: PreferenceModel(
                model_config, rngs=nnx.Rngs(params=jax.random.key(0)), rank=rank
            )
        )
    graphdef, abstract_params = nnx.split(abstract)
    tx, lr_schedule = make_optimizer(config.optimizer, config.schedule, total_steps)
    if config.lora is None:
        shardings = train_shardings(abstract_params, tx, ctx.mesh, ctx.rule_pairs)
        return PreferenceModelParts(
            model_config, rank, graphdef, tx, lr_schedule, shardings, pretrained
        )
    build = lambda: PreferenceModel(model_config, rngs=nnx.Rngs(params=jax.random.key(0)),
                                    rank=rank)  # fmt: skip
    lora_graphdef, trainable, frozen = common.abstract_lora_with_heads(
        build, config.lora, HEADS, ctx.rule_pairs
    )
    shardings = train_shardings(trainable, tx, ctx.mesh, ctx.rule_pairs)
    shardings = shardings._replace(reference=state_shardings(frozen, ctx.mesh, ctx.rule_pairs))
    report = parameter_report(trainable, frozen, abstract_params, tx)
    return PreferenceModelParts(model_config, rank, lora_graphdef, tx, lr_schedule, shardings,
                                pretrained, config.lora, graphdef, report)  # fmt: skip


class PreferenceModelTask(Task):
    """``algorithm.name: preference_model`` on preference files or the testbed."""

    name = "preference_model"
    reports_flops = True

    def __init__(self, ctx: RunContext):
        config = self.config = ctx.config
        self.ctx = ctx
        self.on_testbed = config.testbed.enabled
        self.pm = build_preference_model(ctx, config.run.steps)
        self.model_config = self.pm.config
        sh = self.pm.shardings
        self.state_shardings = sh.state
        # LoRA: the frozen trunk weights (no frozen model otherwise).
        self.frozen_shardings = sh.reference if self.pm.lora is not None else None
        self.batch_shardings = PairBatch(*(sh.batch,) * 4, sh.example, sh.example)
        self._step = functools.partial(
            preference_model_train_step,
            graphdef=self.pm.graphdef,
            tx=self.pm.tx,
            lr_schedule=self.pm.lr_schedule,
            grad_accum_steps=config.optimizer.grad_accum_steps,
            batch_sharding=sh.batch,
            dropout=common.lora_dropout(config),
        )
        self.tokenizer = self.loader = self.eval_dataset = None
        if self.on_testbed:
            self.testbed, self.preference = testbed_setup(config)
            graphdef = self.pm.graphdef
            self._matrix = jax.jit(
                lambda params, frozen: testbed_preference_matrix(
                    common.policy_model(graphdef, params, frozen), self.testbed
                )
            )
            return
        self.tokenizer = common.load_run_tokenizer(ctx)
        common.check_vocab(self.tokenizer, self.pm.config)
        (data,) = common.preference_data_configs(ctx, 1)
        (self.loader,) = common.preference_loaders(ctx, self.tokenizer, [data], sh.batch)
        self._eval = jax.jit(functools.partial(_eval_sums, graphdef=self.pm.graphdef))
        tiny = config.tiny_data
        tiny_eval = functools.partial(
            make_tiny_preference_dataset, num_words=tiny.num_words, rule=tiny.objectives[0]
        )
        self.eval_data = heldout_config(ctx, tiny_eval)
        if self.eval_data is not None:
            self.eval_dataset = load_preference_dataset(self.eval_data, self.tokenizer)
            self._eval_shard = row_multiple(ctx, sh.batch)[:2]

    def init(self, key: jax.Array):
        pm = self.pm
        state, frozen = common.init_head_model(
            pm,
            lambda k: PreferenceModel(pm.config, rngs=nnx.Rngs(params=k), rank=pm.rank),
            HEADS,
            key,
        )
        if pm.lora is not None:
            self.frozen = frozen
        return state

    def batch(self, step: int, key: jax.Array):
        if self.on_testbed:
            pairs = testbed_pair_batch(
                key,
                self.testbed,
                self.preference,
                self.config.data.batch_size,
                sample=self.config.oracle.sample,
            )
        else:
            pairs = pairs_from_preference_batch(next(self.loader))
        return shard_batch(pairs, self.ctx.mesh, self.ctx.rules, logical_axes=("batch",))

    def batch_signature(self, batch) -> tuple:
        return tuple(batch.tokens_a.shape)

    def poison(self, batch):
        return batch._replace(example_mask=batch.example_mask * np.float32(np.nan))

    def step(self, state, frozen, batch, key):
        # frozen: the LoRA trunk, or None; the key only feeds the LoRA dropout (the testbed
        # pairs are drawn in batch()).
        return self._step(state, batch, frozen=frozen, key=common.dropout_key(self.config, key))

    def flops(self, batch) -> float:
        rows, length = batch.tokens_a.shape
        return dpo_step_flops(self.pm.config, rows, length, reference_forward=False)

    def testbed_matrix(self, params) -> np.ndarray:
        """The trained model's ``[K, K]`` matrix P̂(y ≻ y') over every testbed response
        (testbed runs only; with LoRA, ``params`` are the adapters and heads)."""
        if not self.on_testbed:
            raise ValueError("testbed_matrix needs a testbed run (testbed.enabled: true)")
        return np.asarray(jax.device_get(self._matrix(params, self.frozen)))

    def score(self, state, step: int) -> dict[str, float]:
        """Held-out pairs (text) or the exact errors over all testbed pairs."""
        if not eval_every(self.config, step):
            return {}
        if self.on_testbed:
            estimate = self.testbed_matrix(state.params)
            return {f"eval_{k}": v for k, v in testbed_errors(estimate, self.preference).items()}
        if self.eval_dataset is None:
            return {}
        return common.heldout_pair_metrics(
            self, self._eval, state.params, self._eval_shard, to_batch=pairs_from_preference_batch
        )

    def position(self) -> dict[str, Any]:
        return {} if self.loader is None else {"data": self.loader.state_dict()}

    def restore(self, position: dict[str, Any]) -> None:
        if "data" in position and self.loader is not None:
            self.loader.restore(position["data"])

    def describe(self) -> list[str]:
        return [*common.lora_describe(self.pm.report), *self._describe_data()]

    def _describe_data(self) -> list[str]:
        if self.on_testbed:
            t = self.config.testbed
            label = "Bernoulli(P)" if self.config.oracle.sample else "soft P"
            return [
                f"testbed: {self.testbed.num_responses} responses ({t.alphabet_size}^"
                f"{t.response_length}), {t.preference} preference; pairs drawn uniformly, "
                f"labels {label}, both orders; rank k={self.pm.rank}"
            ]
        lines = [format_data_stats(self.loader.dataset.stats)]
        if self.eval_dataset is not None:
            lines.append("held-out " + format_data_stats(self.eval_dataset.stats))
        return lines

    def summary(self, history) -> dict[str, Any]:
        keys = ("accuracy", "eval_accuracy", "eval_loss")
        if self.on_testbed:
            keys = (*keys, "eval_max_abs_error", "eval_mean_abs_error")
        out = common.loss_summary(history, *keys)
        out.update(common.lora_summary(self.pm.report))
        if not self.on_testbed:
            out["data"] = self.loader.dataset.stats
        return out

    def export(self, state, directory: Path) -> Path:
        """The preference model by ``save_pretrained`` (``oracle.kind: preference_model``
        loads it), with the tokenizer on text data. LoRA: the adapters merged into the trunk
        (the heads are not HF modules, so there is no PEFT adapter export)."""
        from jaxalign.models import save_pretrained

        model = common.policy_model(self.pm.graphdef, state.params, self.frozen)
        if self.pm.lora is not None:
            model = merge_adapters(model)
        extra = {}
        if self.tokenizer is not None:
            extra["pad_token_id"] = pad_token_id(self.tokenizer)
        path = save_pretrained(model, directory, extra_config=extra)
        if self.ctx.is_main and self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(path))
        return path


__all__ = [
    "OrderedPairs",
    "PairBatch",
    "PreferenceModelParts",
    "PreferenceModelTask",
    "bradley_terry_floor",
    "build_preference_model",
    "ordered_pair_logits",
    "pairs_from_preference_batch",
    "preference_cross_entropy",
    "preference_model_train_step",
    "testbed_errors",
    "testbed_pair_batch",
    "testbed_preference_matrix",
    "testbed_setup",
]
