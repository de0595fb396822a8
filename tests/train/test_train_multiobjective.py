"""The multi-objective DPO step (``multiobjective_train_step``) against a direct computation.

Two objectives on the 3-letter testbed whose preferences conflict (objective 1 reverses
12 of objective 0's 16 pairs; its last two rows are filler), a reference policy distinct
from the policy (so the DPO losses are not log 2) and a padded last position. The
per-objective gradients ``g_k`` are computed directly: ``jax.grad`` of the mean over real
pairs of ``−log σ(β[(log π_w − log π_ref,w) − (log π_l − log π_ref,l)])``, with the
log-probabilities from :func:`jaxalign.models.sequence_logprobs`. With SGD(lr) the step's
direction is ``d = (θ − θ') / lr``, so every aggregator's ``d`` is checked against them:
the weighted sum is DPO on ``Σ_k w_k L_k`` (and with ``w = e_j`` the DPO train step on
batch ``j``), MGDA never opposes an objective, every ``d`` is ``Σ_k coef_k g_k``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tiny_models import task_config

from jaxalign.data import PreferenceBatch
from jaxalign.models import CausalLM, ModelConfig, sequence_logprobs
from jaxalign.testbed import Testbed as _Testbed
from jaxalign.train import read_jsonl, train
from jaxalign.train.multiobjective import AGGREGATORS, multiobjective_train_step, uses_weights
from jaxalign.train.state import TrainState
from jaxalign.train.step import dpo_train_step, reference_sequence_logprobs

BETA = 0.5
LR = 0.1
K, B = 2, 16
CONFIG = ModelConfig(vocab_size=3, hidden_size=16, intermediate_size=32, num_layers=1,
                     num_heads=2, num_kv_heads=1, head_dim=8, initializer_range=0.5)  # fmt: skip
TX = optax.sgd(LR)
# The step's keyword arguments besides the aggregator (weights are a traced argument, so
# each aggregator compiles once for all the weights it is run with).
STEP_KW = dict(tx=TX, lr_schedule=optax.constant_schedule(LR), beta=BETA)


def _batch(chosen, rejected, response_mask, example_mask):
    """A padded PreferenceBatch: the sequences plus one padding position at the end."""

    def pad(x):
        return jnp.pad(x, ((0, 0), (0, 1)))

    attention = pad(jnp.ones_like(response_mask))
    loss_mask = pad(response_mask).astype(jnp.float32)
    return PreferenceBatch(pad(chosen), attention, loss_mask, pad(rejected), attention,
                           loss_mask, example_mask)  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    testbed = _Testbed(3, 3)
    graphdef, params = nnx.split(CausalLM.create(CONFIG, key=jax.random.key(0)))
    # π_ref near π (losses ≈ 0.64 / 0.79, not log 2), near enough that the objectives
    # still conflict (cos(g_0, g_1) ≈ −0.64).
    _, other = nnx.split(CausalLM.create(CONFIG, key=jax.random.key(1)))
    reference = jax.tree.map(lambda p, o: p + 0.05 * (o - p), params, other)
    ys = jax.random.randint(jax.random.key(2), (K, 2, B, 3), 0, 3)
    seqs = [testbed.sequences(ys[i, j]) for i in range(K) for j in range(2)]
    mask = seqs[0][1]
    chosen0, rejected0 = seqs[0][0], seqs[1][0]
    # Objective 1 reverses objective 0's first 12 preferences: the gradients conflict.
    chosen1 = seqs[2][0].at[:12].set(rejected0[:12])
    rejected1 = seqs[3][0].at[:12].set(chosen0[:12])
    real = jnp.ones((B,), jnp.float32)
    batches = (
        _batch(chosen0, rejected0, mask, real),
        _batch(chosen1, rejected1, mask, real.at[B - 2 :].set(0.0)),  # two filler rows
    )
    state = TrainState(jnp.zeros((), jnp.int32), params, TX.init(params),
                       jax.random.key_data(jax.random.key(3)))  # fmt: skip
    losses, grads = _direct_gradients(graphdef, params, reference, batches)
    return graphdef, state, reference, batches, losses, grads


def _dpo_loss(graphdef, params, reference, batch):
    """The mean DPO loss over the batch's real pairs, written out."""

    def logp(model, side):
        ids, attention, mask = batch[3 * side : 3 * side + 3]
        return sequence_logprobs(model, ids, mask.astype(jnp.int32), attention).sequence

    policy, ref = nnx.merge(graphdef, params), nnx.merge(graphdef, reference)
    h = (logp(policy, 0) - logp(ref, 0)) - (logp(policy, 1) - logp(ref, 1))
    w = batch.example_mask
    return jnp.sum(w * -jax.nn.log_sigmoid(BETA * h)) / jnp.sum(w)


def _direct_gradients(graphdef, params, reference, batches):
    """``([K] losses, [K, n] flat gradients)`` of each objective's mean DPO loss."""
    value_and_grad = jax.jit(jax.value_and_grad(functools.partial(_dpo_loss, graphdef)))
    out = [value_and_grad(params, reference, batch) for batch in batches]
    flat = [jnp.concatenate([x.reshape(-1) for x in jax.tree.leaves(g)]) for _, g in out]
    return jnp.stack([v for v, _ in out]), jnp.stack(flat)


@functools.cache
def _jitted(graphdef, aggregator, **kw):
    def step(state, reference, batches, weights):
        return multiobjective_train_step(state, reference, batches, graphdef=graphdef,
                                         aggregator=aggregator, weights=weights, **STEP_KW,
                                         **kw)  # fmt: skip

    return jax.jit(step)


def _step(setup, aggregator, weights=None, *, reference=None, batches=None, **kw):
    graphdef, state, default_reference, default_batches, _, _ = setup
    weights = None if weights is None else jnp.asarray(weights, jnp.float32)
    reference = default_reference if reference is None else reference
    batches = default_batches if batches is None else batches
    return _jitted(graphdef, aggregator, **kw)(state, reference, batches, weights)


def _direction(old, new):
    """The flat direction d of an SGD(LR) update ``new = old − LR·d``."""
    pairs = zip(jax.tree.leaves(old.params), jax.tree.leaves(new.params), strict=True)
    return jnp.concatenate([((p - q) / LR).reshape(-1) for p, q in pairs])


def _recovery_error(state):
    """Bound on the rounding of ``(θ − θ') / LR`` in float32: two ulps of the largest θ."""
    largest = max(float(jnp.max(jnp.abs(p))) for p in jax.tree.leaves(state.params))
    return 2 * float(np.finfo(np.float32).eps) * largest / LR


def _per_objective(metrics, name):
    return np.asarray([metrics[f"{name}_{k}"] for k in range(K)])


def test_objectives_conflict(setup):
    *_, losses, g = setup
    assert float(g[0] @ g[1]) < 0
    # π ≠ π_ref: the losses are not the log 2 of the first step from π_ref.
    assert np.all(np.abs(np.asarray(losses) - np.log(2.0)) > 1e-3)


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_direction_combines_the_per_objective_gradients(setup, aggregator):
    """Every aggregator moves along ``d = Σ_k coef_k g_k`` of the true per-objective
    gradients, and its per-objective metrics are theirs; everything is finite."""
    _, state, _, _, losses, g = setup
    weights = [0.3, 0.7] if uses_weights(aggregator) else None
    new, metrics = _step(setup, aggregator, weights)
    assert int(new.step) == 1 and float(metrics["finite"]) == 1.0
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    np.testing.assert_allclose(_per_objective(metrics, "loss"), losses, rtol=1e-5)
    np.testing.assert_allclose(_per_objective(metrics, "grad_norm"),
                               jnp.linalg.norm(g, axis=1), rtol=1e-4)  # fmt: skip
    coef = _per_objective(metrics, "agg_coef")
    d = _direction(state, new)
    np.testing.assert_allclose(d, coef @ g, rtol=1e-4, atol=_recovery_error(state))
    np.testing.assert_allclose(metrics["grad_norm"], jnp.linalg.norm(d), rtol=1e-4)
    # cos(g_k, d) as logged.
    cos = (g @ d) / (jnp.linalg.norm(g, axis=1) * jnp.linalg.norm(d))
    np.testing.assert_allclose(_per_objective(metrics, "agg_cos"), cos, atol=1e-4)
    assert float(metrics["conflict"]) == 1.0


def test_weighted_sum_equals_dpo_on_weighted_loss(setup):
    graphdef, state, reference, batches, losses, _ = setup
    w = jnp.asarray([0.3, 0.7], jnp.float32)
    new, metrics = _step(setup, "weighted_sum", w)

    def weighted_loss(p):
        return sum(w[k] * _dpo_loss(graphdef, p, reference, b) for k, b in enumerate(batches))

    # θ' = θ − LR ∇(Σ_k w_k L_k).
    value, grad = jax.jit(jax.value_and_grad(weighted_loss))(state.params)
    expected = jax.tree.map(lambda p, g: p - LR * g, state.params, grad)
    for a, e in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_per_objective(metrics, "agg_weight"), np.asarray(w))
    np.testing.assert_allclose(_per_objective(metrics, "agg_coef"), np.asarray(w), rtol=1e-6)
    assert float(metrics["loss"]) == pytest.approx(float(value), rel=1e-5)
    assert float(value) == pytest.approx(float(w @ losses), rel=1e-5)
    # Teeth: the unweighted mean gives a different step.
    bad, _ = _step(setup, "weighted_sum", [0.5, 0.5])
    pairs = zip(jax.tree.leaves(bad.params), jax.tree.leaves(expected), strict=True)
    diff = max(float(jnp.max(jnp.abs(a - e))) for a, e in pairs)
    assert diff > 1e-4


@pytest.mark.parametrize("j", range(K))
def test_weighted_sum_with_weights_e_j_is_the_dpo_step_on_batch_j(setup, j):
    """``d = 1·g_j + 0·g_{k≠j}``: the new state and the DPO metrics are the DPO step's."""
    graphdef, state, reference, batches, _, _ = setup
    new, metrics = _step(setup, "weighted_sum", np.eye(K, dtype=np.float32)[j])
    dpo = jax.jit(functools.partial(dpo_train_step, graphdef=graphdef, **STEP_KW))
    expected, dpo_metrics = dpo(state, reference, batches[j])
    for a, e in zip(jax.tree.leaves(new), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-5, atol=1e-7)
    for name in ("loss", "accuracy", "margin", "chosen_reward", "rejected_reward", "kl_ref",
                 "log_ratio", "grad_norm", "update_norm", "param_norm", "lr"):  # fmt: skip
        np.testing.assert_allclose(metrics[name], dpo_metrics[name], rtol=1e-5, atol=1e-7,
                                   err_msg=name)  # fmt: skip
        if name in ("loss", "accuracy", "margin", "kl_ref"):
            np.testing.assert_allclose(metrics[f"{name}_{j}"], dpo_metrics[name], rtol=1e-5,
                                       atol=1e-7, err_msg=name)  # fmt: skip


def test_mgda_step_is_conflict_averse(setup):
    _, state, _, _, _, g = setup
    new, metrics = _step(setup, "mgda")
    # The applied update is −LR·d: recover d and check ⟨g_k, d⟩ ≥ 0 for each k.
    d = _direction(state, new)
    inner = g @ d
    assert bool(jnp.all(inner >= -1e-5 * jnp.linalg.norm(g, axis=1) * jnp.linalg.norm(d)))
    assert np.all(_per_objective(metrics, "agg_cos") >= -1e-5)
    # The min-norm point of the hull: simplex coefficients, both objectives active, and no
    # convex combination of g_0, g_1 is shorter.
    coef = _per_objective(metrics, "agg_coef")
    assert np.all(coef > 0) and coef.sum() == pytest.approx(1.0, rel=1e-5)
    lam = jnp.linspace(0.0, 1.0, 201)[:, None]
    hull = jnp.linalg.norm(lam * g[None, 0] + (1 - lam) * g[None, 1], axis=1)
    assert float(jnp.linalg.norm(d)) <= float(jnp.min(hull)) * (1 + 1e-4)
    # Teeth: the plain weighted sum at a lopsided weight increases one objective.
    ws, _ = _step(setup, "weighted_sum", [0.95, 0.05])
    assert float(jnp.min(g @ _direction(state, ws))) < 0


def test_kl_metric_off_skips_the_reference(setup):
    """Without the KL metric and with precomputed reference log-probs the step never reads
    the reference (a NaN reference changes nothing) and gives the same update; the KL
    metrics are absent, and present (and positive, π ≠ π_ref) by default."""
    graphdef, _, reference, batches, _, _ = setup
    w = [0.3, 0.7]
    new, metrics = _step(setup, "weighted_sum", w)
    assert "kl_ref" in metrics and np.all(_per_objective(metrics, "kl_ref") > 1e-3)
    ref_logp = jax.jit(functools.partial(reference_sequence_logprobs, graphdef=graphdef))
    pre = tuple(b._replace(reference_chosen_logp=c, reference_rejected_logp=r)
                for b in batches for c, r in [ref_logp(reference, b)])  # fmt: skip
    nan_reference = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), reference)
    off, off_metrics = _step(setup, "weighted_sum", w, reference=nan_reference, batches=pre,
                             kl_metric=False)  # fmt: skip
    assert not any(name.startswith("kl_ref") for name in off_metrics)
    assert set(off_metrics) == {n for n in metrics if not n.startswith("kl_ref")}
    for a, e in zip(jax.tree.leaves(off), jax.tree.leaves(new), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-6, atol=1e-7)
    for name, value in off_metrics.items():
        np.testing.assert_allclose(value, metrics[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_engine_run_without_kl_metric(tmp_path):
    """``logging.kl_ref: false`` reaches the step: ``jaxalign train`` logs no KL metric."""
    config = task_config("multiobjective", tmp_path, "run.steps=2", "logging.kl_ref=false",
                         "checkpoint.enabled=false")  # fmt: skip
    result = train(config, quiet=True)
    assert result.status == "completed"
    records = read_jsonl(result.out_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert not any(name.startswith("kl_ref") for name in r), sorted(r)
        assert np.isfinite(r["loss_0"]) and np.isfinite(r["loss_1"])


def test_rejects_bad_arguments(setup):
    graphdef, state, reference, batches, _, _ = setup

    def call(aggregator, weights=None, data=batches):
        multiobjective_train_step(state, reference, data, graphdef=graphdef,
                                  aggregator=aggregator, weights=weights, **STEP_KW)  # fmt: skip

    with pytest.raises(ValueError, match="aggregator"):
        call("nope")
    with pytest.raises(ValueError, match="weights"):
        call("raco")
    with pytest.raises(ValueError, match="weights"):
        call("weighted_sum", None)
    with pytest.raises(ValueError, match=r"weights has shape \(3,\)"):
        call("weighted_sum", jnp.full((3,), 1 / 3, jnp.float32))
    with pytest.raises(ValueError, match="batches is empty"):
        call("mgda", data=())
