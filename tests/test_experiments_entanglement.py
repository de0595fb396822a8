"""`gradient-entanglement`: the registered figure runs, its diagnostic is right on the
testbed transformer, and the library's LM adapter agrees with a real step."""

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign import cli
from jaxalign.losses import entanglement as ent
from jaxalign.models import CausalLM, ModelConfig


def test_gradient_entanglement_quick(tmp_path):
    args = ["reproduce", "gradient-entanglement", "--out", str(tmp_path)]
    args += ["steps=32", "num_pairs=4", "train_length=4", "shared_lengths=[0,3,7]"]
    args += ["num_models=1", "pairs_per_length=8", "hidden_size=16", "num_layers=1"]
    assert cli.main(args) == 0
    summary = json.loads((tmp_path / "gradient-entanglement.json").read_text())["summary"]
    # Cauchy–Schwarz: one DPO step never lowers chosen AND raises rejected (first order).
    assert summary["chosen_down_and_rejected_up_predicted"] == 0.0
    # The jvp prediction of each SGD step has the sign of the measured change.
    assert summary["first_order_sign_agreement"] > 0.95
    # A longer shared suffix entangles more; the unigram table is the closed form's.
    cos = summary["cosine_shared_suffix"]
    assert cos["7"] > cos["0"]
    assert abs(summary["unigram_cosine_table"]["5"] - 0.9407) < 1e-3
    # The normalised update's own steps always raise chosen and lower rejected.
    own = summary["one_pair_per_step"]["normalised"]
    assert own["own_steps_chosen_up"] == 1.0 and own["own_steps_rejected_down"] == 1.0
    assert (tmp_path / "gradient-entanglement.png").stat().st_size > 0


def test_sequence_logp_fn_predicts_a_real_step_of_the_transformer():
    cfg = ModelConfig(vocab_size=4, hidden_size=16, intermediate_size=32, num_layers=1,
                      num_heads=2, num_kv_heads=1, head_dim=8)  # fmt: skip
    graphdef, params = nnx.split(CausalLM.create(cfg, key=jax.random.key(0)))
    logp = ent.sequence_logp_fn(graphdef)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(np.concatenate([np.zeros((2, 3, 1)), rng.integers(0, 4, (2, 3, 5))], 2),
                         jnp.int32)  # fmt: skip
    mask = jnp.asarray(np.tile([0.0, 1, 1, 1, 1, 1], (3, 1)), jnp.float32)
    chosen, rejected = (tokens[0], mask), (tokens[1], mask)
    batched = jax.vmap(logp, in_axes=(None, 0))

    @jax.jit
    def check(params):
        lw, ll = batched(params, chosen), batched(params, rejected)
        d = ent.dpo_derivatives(lw, ll, lw, ll, beta=1.0)  # reference = policy: d = 1/2
        diag = ent.gradient_entanglement(logp, params, chosen, rejected, d, step_size=1e-3)
        # A real DPO step on pair 0 alone (its gradient through the chain rule).
        pick = jnp.asarray([1.0, 0.0, 0.0])
        loss = lambda p: pick @ (-d.d_w * batched(p, chosen) + d.d_l * batched(p, rejected))
        new = jax.tree.map(lambda p, g: p - 1e-3 * g, params, jax.grad(loss)(params))
        moved = batched(new, chosen)[0] - lw[0], batched(new, rejected)[0] - ll[0]
        mapped = ent.pair_gradient_gram(logp, params, chosen, rejected, method="map")
        return diag, moved, mapped

    diag, moved, mapped = check(params)
    np.testing.assert_allclose(moved, (diag.change_w[0], diag.change_l[0]), rtol=5e-2)
    np.testing.assert_allclose(mapped.inner, diag.inner, rtol=1e-4)
    m = ent.entanglement_metrics(diag)
    assert float(m["chosen_down_and_rejected_up"]) == 0.0
