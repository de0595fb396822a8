"""Multi-objective DPO step: weighted sum = DPO on the weighted loss; MGDA is conflict-averse."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxalign.losses import dpo_loss
from jaxalign.models import CausalLM, ModelConfig, sequence_logprobs
from jaxalign.testbed import Testbed as _Testbed
from jaxalign.train.multiobjective import (
    PreferenceBatches,
    multiobjective_dpo_step,
    per_objective_dpo_grads,
    reference_logprobs,
)

BETA = 0.5


@pytest.fixture(scope="module")
def setup():
    testbed = _Testbed(3, 3)
    cfg = ModelConfig(vocab_size=3, hidden_size=16, intermediate_size=32, num_layers=1,
                      num_heads=2, num_kv_heads=1, head_dim=8, initializer_range=0.5)  # fmt: skip
    ref = CausalLM.create(cfg, key=jax.random.key(0))
    graphdef, ref_params = nnx.split(ref)
    params = ref_params  # the first DPO step, from π_ref
    k, b = 2, 16
    ys = jax.random.randint(jax.random.key(2), (k, 2, b, 3), 0, 3)
    seqs = [testbed.sequences(ys[i, j]) for i in range(k) for j in range(2)]
    ct = jnp.stack([seqs[2 * i][0] for i in range(k)])
    cm = jnp.stack([seqs[2 * i][1] for i in range(k)])
    # Objective 2 reverses objective 1's first 12 preferences: the gradients conflict.
    rt = jnp.stack([seqs[1][0], ct[0].at[12:].set(seqs[3][0][12:])])
    rm = jnp.stack([seqs[1][1], cm[0]])
    ct = ct.at[1, :12].set(seqs[1][0][:12])
    batches = PreferenceBatches(ct, cm, rt, rm, *reference_logprobs(ref, ct, cm, rt, rm))
    return graphdef, params, batches


def _step(setup, aggregator, weights=None):
    graphdef, params, batches = setup
    tx = optax.sgd(0.1)
    fn = jax.jit(functools.partial(multiobjective_dpo_step, graphdef=graphdef, tx=tx, beta=BETA,
                                   aggregator=aggregator, weights=weights))  # fmt: skip
    return fn(params, tx.init(params), batches)


def _direction(old, new):
    """The flat direction d of an SGD(0.1) update ``new = old − 0.1·d``."""
    pairs = zip(jax.tree.leaves(old), jax.tree.leaves(new), strict=True)
    return jnp.concatenate([((p - q) / 0.1).reshape(-1) for p, q in pairs])


def test_weighted_sum_equals_dpo_on_weighted_loss(setup):
    graphdef, params, batches = setup
    w = jnp.asarray([0.3, 0.7], jnp.float32)
    new, _, metrics = _step(setup, "weighted_sum", w)

    def weighted_loss(p):
        model = nnx.merge(graphdef, p)
        total = jnp.zeros((), jnp.float32)
        for i in range(2):
            pc = sequence_logprobs(model, batches.chosen_tokens[i], batches.chosen_mask[i])
            pr = sequence_logprobs(model, batches.rejected_tokens[i], batches.rejected_mask[i])
            loss = dpo_loss(pc.sequence, pr.sequence, batches.ref_chosen[i],
                            batches.ref_rejected[i], beta=BETA).loss  # fmt: skip
            total = total + w[i] * jnp.mean(loss)
        return total

    grad = jax.grad(weighted_loss)(params)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, params, grad)
    for a, e in zip(jax.tree.leaves(new), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(metrics.info.weights), np.asarray(w))
    assert float(weighted_loss(params)) == pytest.approx(float(w @ metrics.losses), rel=1e-5)
    # Teeth: the unweighted mean gives a different step.
    bad, _, _ = _step(setup, "weighted_sum", jnp.asarray([0.5, 0.5], jnp.float32))
    pairs = zip(jax.tree.leaves(bad), jax.tree.leaves(expected), strict=True)
    diff = max(float(jnp.max(jnp.abs(a - e))) for a, e in pairs)
    assert diff > 1e-4


def test_mgda_step_is_conflict_averse(setup):
    graphdef, params, batches = setup
    _, grads = per_objective_dpo_grads(params, graphdef, batches, beta=BETA)
    g = jnp.concatenate([x.reshape(2, -1) for x in jax.tree.leaves(grads)], axis=1)
    assert float(g[0] @ g[1]) < 0  # the objectives conflict
    new, _, metrics = _step(setup, "mgda")
    # The applied update is −0.1·d: recover d and check ⟨g_k, d⟩ ≥ 0 for each k.
    d = _direction(params, new)
    inner = g @ d
    assert bool(jnp.all(inner >= -1e-5 * jnp.linalg.norm(g, axis=1) * jnp.linalg.norm(d)))
    assert bool(jnp.all(metrics.info.cosines >= -1e-5))
    # Teeth: the plain weighted sum at a lopsided weight increases one objective.
    ws, _, _ = _step(setup, "weighted_sum", jnp.asarray([0.95, 0.05], jnp.float32))
    dw = _direction(params, ws)
    assert float(jnp.min(g @ dw)) < 0


@pytest.mark.parametrize("aggregator", ["cagrad", "raco"])
def test_other_aggregators_finite(setup, aggregator):
    new, _, metrics = _step(setup, aggregator, jnp.asarray([0.5, 0.5], jnp.float32))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new))
    assert metrics.losses.shape == (2,)


def test_rejects_bad_arguments(setup):
    with pytest.raises(ValueError, match="aggregator"):
        _step(setup, "nope")
    with pytest.raises(ValueError, match="weights"):
        _step(setup, "raco")
