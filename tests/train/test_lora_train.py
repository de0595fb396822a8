"""DPO with LoRA: at init (B = 0) the policy is the reference exactly; the step's gradient
is ``jax.grad`` of the loss written with merged kernels ``W + (α/r)·A B``; only the
adapters carry optimizer state and change; ``configs/train/dpo_lora_tiny.yaml`` trains
through the engine and writes the merged model and the PEFT adapter; a bad ``lora`` section
(a dropout rate outside [0, 1) included) is refused naming the key."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tiny_models import TINY_TRAIN

from jaxalign.config import ConfigError
from jaxalign.data import PreferenceBatch
from jaxalign.experiment import repo_root
from jaxalign.models import CausalLM, ModelConfig
from jaxalign.models.layers import Dense
from jaxalign.models.lora import LoRAConfig, LoRAParam, adapted, merge_adapters
from jaxalign.train import load_train_config, train
from jaxalign.train.state import TrainState
from jaxalign.train.step import preference_gradient, preference_train_step

CONFIGS = repo_root() / "configs" / "train"
B, L, V, BETA = 4, 10, 32, 0.5
CFG = ModelConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_layers=2,
                  num_heads=2, num_kv_heads=1, head_dim=8, initializer_range=0.3)  # fmt: skip
LORA = LoRAConfig(rank=2, alpha=6.0, targets=("q_proj", "v_proj", "o_proj", "down_proj"))


@pytest.fixture(scope="module")
def setup():
    base = CausalLM.create(CFG, key=jax.random.key(0))
    base_graphdef, _ = nnx.split(base)
    model = adapted(nnx.clone(base), LORA, key=jax.random.key(1))
    graphdef, adapters, frozen = nnx.split(model, LoRAParam, ...)
    rng = np.random.default_rng(0)

    def side(lengths):
        ids = rng.integers(0, V, (B, L)).astype(np.int32)
        attn = (np.arange(L)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
        return ids, attn, (attn.astype(bool) & (np.arange(L)[None] >= 4)).astype(np.float32)

    chosen, rejected = side([10, 8, 6, 9]), side([7, 10, 10, 6])
    example = np.ones(B, np.float32)
    batch = PreferenceBatch(*(jnp.asarray(x) for x in (*chosen, *rejected, example)))
    return graphdef, base_graphdef, adapters, frozen, batch


def _trained_b(adapters, seed=3):
    """Adapters with non-zero B, as after some training."""
    key = jax.random.key(seed)
    leaves, tree = jax.tree.flatten(adapters)
    leaves = [x + 0.3 * jax.random.normal(jax.random.fold_in(key, i), x.shape)
              for i, x in enumerate(leaves)]  # fmt: skip
    return jax.tree.unflatten(tree, leaves)


def _gradient(adapters, frozen, batch, graphdef, base_graphdef):
    return preference_gradient(adapters, frozen, batch, graphdef=graphdef, algorithm="dpo",
                               beta=BETA, kl_metric=False, base_graphdef=base_graphdef)  # fmt: skip


def test_fresh_adapters_make_the_policy_the_reference(setup):
    graphdef, base_graphdef, adapters, frozen, batch = setup
    _, metrics = _gradient(adapters, frozen, batch, graphdef, base_graphdef)
    # π = π_ref: zero log-ratios and rewards, loss log 2 (the forward is bit-identical,
    # tests/models/test_lora.py; inside the differentiated step XLA fuses the two passes
    # differently, which leaves float32 rounding of the sequence sums).
    for name in ("log_ratio", "chosen_reward", "rejected_reward"):
        assert abs(float(metrics[name])) < 1e-6, name
    np.testing.assert_allclose(float(metrics["loss"]), np.log(2.0), rtol=1e-6)


def _seq_logp(model, ids, attn, mask):
    logits = model(ids, attention_mask=attn)
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    return jnp.sum(picked * mask[:, 1:] * attn[:, 1:].astype(jnp.float32), axis=-1)


def _merged_loss(adapters, frozen, batch, graphdef, base_graphdef):
    """DPO written by hand on the *merged* model W + (α/r)·A B; π_ref = the base."""
    policy = merge_adapters(nnx.merge(graphdef, adapters, frozen))
    ref = nnx.merge(base_graphdef, frozen)
    c, r = batch[:3], batch[3:6]
    h = (_seq_logp(policy, *c) - _seq_logp(ref, *c)) - (_seq_logp(policy, *r) - _seq_logp(ref, *r))
    return jnp.mean(jax.nn.softplus(-BETA * h))


def test_gradient_is_that_of_the_merged_model(setup):
    graphdef, base_graphdef, adapters, frozen, batch = setup
    adapters = _trained_b(adapters)
    grads, metrics = _gradient(adapters, frozen, batch, graphdef, base_graphdef)
    loss_fn = functools.partial(_merged_loss, graphdef=graphdef, base_graphdef=base_graphdef)
    want_loss, want = jax.value_and_grad(loss_fn)(adapters, frozen, batch)
    np.testing.assert_allclose(float(metrics["loss"]), float(want_loss), rtol=1e-5)
    assert abs(float(want_loss) - np.log(2.0)) > 1e-3  # trained adapters move the loss
    for (path, g), w in zip(jax.tree.leaves_with_path(grads), jax.tree.leaves(want)):
        assert float(jnp.abs(w).max()) > 0, path
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-4, atol=1e-6,
                                   err_msg=str(path))  # fmt: skip


def test_step_updates_only_the_adapters(setup):
    graphdef, base_graphdef, adapters, frozen, batch = setup
    tx = optax.adamw(1e-2)
    state = TrainState(jnp.zeros((), jnp.int32), adapters, tx.init(adapters),
                       jax.random.key_data(jax.random.key(0)))  # fmt: skip
    frozen_before = jax.tree.map(np.asarray, frozen)
    step = jax.jit(functools.partial(preference_train_step, graphdef=graphdef, tx=tx,
                                     lr_schedule=optax.constant_schedule(1e-2), beta=BETA,
                                     kl_metric=True, base_graphdef=base_graphdef))  # fmt: skip
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int and float scalars
        new, metrics = step(state, frozen, batch)
    assert float(metrics["finite"]) == 1.0 and abs(float(metrics["kl_ref"])) < 1e-6  # π = π_ref
    # The state holds adapters only; every B moved off zero, the base is untouched.
    flat = nnx.to_flat_state(new.params)
    assert flat and all(isinstance(v, LoRAParam) for _, v in flat)
    for path, var in flat:
        if path[-1] == "lora_b":
            assert float(jnp.abs(var.get_value()).max()) > 0, path
    jax.tree.map(np.testing.assert_array_equal, frozen_before, jax.tree.map(np.asarray, frozen))
    # Optimizer state: two moments per adapter weight, nothing for the base.
    n_adapter = sum(x.size for x in jax.tree.leaves(adapters))
    n_opt = sum(x.size for x in jax.tree.leaves(new.opt_state))
    assert 2 * n_adapter <= n_opt <= 2 * n_adapter + 4
    n_base = sum(x.size for x in jax.tree.leaves(frozen))
    assert n_adapter < 0.2 * n_base


def test_tiny_lora_config_trains_and_exports(tmp_path):
    cfg = load_train_config(
        CONFIGS / "dpo_lora_tiny.yaml",
        [*TINY_TRAIN, f"run.out_dir={tmp_path / 'run'}", "run.steps=4", "checkpoint.every_steps=4",
         "optimizer.lr=3e-2", "lora.base_dtype=bfloat16"],
    )  # fmt: skip
    assert cfg.lora == LoRAConfig(
        rank=8, alpha=16.0, targets=cfg.lora.targets, base_dtype="bfloat16"
    )
    result = train(cfg, quiet=True)
    assert result.status == "completed" and result.step == 4
    losses = [r["loss"] for r in result.history]
    np.testing.assert_allclose(losses[0], np.log(2.0), rtol=1e-5)  # B = 0: π = π_ref
    assert losses[-1] < losses[0]
    task = result.task
    assert all(isinstance(v, LoRAParam) for _, v in nnx.to_flat_state(result.state.params))
    assert {x.dtype for x in jax.tree.leaves(task.frozen)} == {jnp.dtype(jnp.bfloat16)}
    out = result.out_dir
    assert (out / "model" / "config.json").exists() and (
        out / "model" / "model.safetensors"
    ).exists()
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and set(adapter["target_modules"]) == set(cfg.lora.targets)
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    # The merged export is the adapted policy (kernels rounded to the bf16 base dtype).
    from jaxalign.models import from_pretrained

    reloaded = from_pretrained(out / "model", param_dtype="float32")
    policy = nnx.merge(task.policy.graphdef, result.state.params, task.frozen)
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 300, (2, 12)), jnp.int32)
    np.testing.assert_allclose(np.asarray(reloaded(ids)), np.asarray(policy(ids)), atol=5e-2)
    merged_once = merge_adapters(policy)
    np.testing.assert_array_equal(np.asarray(reloaded(ids)), np.asarray(merged_once(ids)))
    dense = [d for _, d in nnx.iter_graph(merged_once) if isinstance(d, Dense)]
    assert all(getattr(d, "lora_a", None) is None for d in dense)


@pytest.mark.parametrize(
    "extra, message",
    [(["lora.dropout=1.0"], "lora.dropout"),
     (["lora.rank=0"], "lora.rank"), (["lora.targets=[qkv]"], "lora.targets"),
     (["lora.rnak=2"], "rank")],
)  # fmt: skip
def test_lora_config_errors_name_the_key(extra, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(CONFIGS / "dpo_lora_tiny.yaml", [*TINY_TRAIN, *extra])
