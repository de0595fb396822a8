"""Logical-axis sharding: rules resolution, sharded loading/creation on 8 CPU devices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hf_reference import padded_batch
from jax.sharding import PartitionSpec as P

from jaxalign.models import (
    CausalLM,
    ModelConfig,
    from_pretrained,
    logical_to_spec,
    sequence_logprobs,
    state_shardings,
)
from jaxalign.models.hf import TensorSpec


def _mesh():
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake CPU) devices; the root conftest sets XLA_FLAGS")
    return jax.make_mesh((2, 4), ("fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _specs(model):
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {".".join(map(str, p)): v.get_value().sharding.spec for p, v in flat}


def test_rules_drop_absent_reused_and_non_dividing_axes():
    mesh = jax.sharding.AbstractMesh((2, 4), ("fsdp", "tensor"))
    rules = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("heads", "tensor"), ("x", "fsdp"))
    assert logical_to_spec(("batch", "embed"), rules, mesh=mesh) == P("fsdp", None)
    assert logical_to_spec(("embed", "heads"), rules, mesh=mesh, shape=(8, 4)) == P(
        "fsdp", "tensor"
    )
    assert logical_to_spec(("embed", "heads"), rules, mesh=mesh, shape=(8, 2)) == P("fsdp", None)
    assert logical_to_spec(("x", "embed"), rules, mesh=mesh) == P("fsdp", None)
    assert logical_to_spec(("unknown", None), rules, mesh=mesh) == P(None, None)
    assert logical_to_spec(("batch",), rules) == P(("data", "fsdp"))  # no mesh: rules verbatim


def test_sharded_load_matches_unsharded_and_params_carry_expected_shardings(hf_checkpoints):
    mesh = _mesh()
    directory, _ = hf_checkpoints["llama_gqa"]  # 4 heads, 2 kv heads, d=64, mlp=96, vocab=128
    plain = from_pretrained(directory)
    sharded = from_pretrained(directory, mesh=mesh)
    specs = _specs(sharded)
    # Stacked layers: a leading (replicated) layer axis on every layer parameter.
    layer = "model.layers"
    assert specs[f"{layer}.self_attn.q_proj.kernel"] == P(None, "fsdp", "tensor", None)
    # 2 kv heads do not divide tensor=4: replicated over tensor, still FSDP-sharded.
    assert specs[f"{layer}.self_attn.k_proj.kernel"] == P(None, "fsdp", None, None)
    assert specs[f"{layer}.self_attn.o_proj.kernel"] == P(None, "tensor", None, "fsdp")
    assert specs[f"{layer}.mlp.gate_proj.kernel"] == P(None, "fsdp", "tensor")
    assert specs[f"{layer}.mlp.down_proj.kernel"] == P(None, "tensor", "fsdp")
    assert specs["model.embed_tokens"] == P("tensor", "fsdp")
    assert specs["lm_head.kernel"] == P("fsdp", "tensor")
    q = sharded.model.layers.self_attn.q_proj.kernel.get_value()
    num_layers = plain.config.num_layers
    assert {s.data.shape for s in q.addressable_shards} == {(num_layers, 32, 1, 16)}
    np.testing.assert_array_equal(
        np.asarray(q), np.asarray(plain.model.layers.self_attn.q_proj.kernel.get_value())
    )

    tokens, mask = padded_batch(seed=7, length=8)
    tokens, mask = np.concatenate([tokens, tokens[:1]]), np.concatenate([mask, mask[:1]])
    response = np.zeros_like(mask)
    response[:, 5:] = mask[:, 5:]
    graphdef, state = nnx.split(sharded)

    @jax.jit
    def forward(state, tokens, mask, response):
        model = nnx.merge(graphdef, state)
        return model(tokens, attention_mask=mask), sequence_logprobs(model, tokens, response, mask)

    args = (jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(response))
    expected, expected_lp = forward(nnx.state(plain), *args)
    with jax.set_mesh(mesh):
        got, got_lp = forward(state, *args)
    # The LM head is vocabulary-parallel: logits split over the vocabulary (fsdp × tensor).
    assert got.sharding.spec[2] == ("fsdp", "tensor")
    assert len(got.sharding.device_set) == 8
    np.testing.assert_allclose(
        np.asarray(got)[mask == 1], np.asarray(expected)[mask == 1], atol=1e-4
    )
    np.testing.assert_allclose(
        np.asarray(got_lp.sequence), np.asarray(expected_lp.sequence), atol=1e-4
    )


def test_creation_with_and_without_mesh_gives_the_same_parameters():
    mesh = _mesh()
    config = ModelConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        num_heads=4,
        num_kv_heads=4,
        head_dim=8,
    )
    key = jax.random.key(3)
    plain = CausalLM.create(config, key=key)
    sharded = CausalLM.create(config, key=key, mesh=mesh)
    with jax.set_mesh(mesh):  # plain constructor under an active mesh: sharded at birth
        born = CausalLM(config, rngs=nnx.Rngs(params=key))
    for model in (sharded, born):
        spec = _specs(model)["model.layers.self_attn.q_proj.kernel"]
        assert spec == P(None, "fsdp", "tensor", None)
        for a, b in zip(jax.tree.leaves(nnx.state(plain)), jax.tree.leaves(nnx.state(model))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert len(plain.model.embed_tokens.get_value().devices()) == 1
    shardings = state_shardings(nnx.state(plain), mesh)
    assert shardings["model"]["embed_tokens"].get_value().spec == P("tensor", "fsdp")


class _RecordingSlice:
    def __init__(self, array):
        self.array, self.requests = array, []

    def __getitem__(self, index):
        self.requests.append(index)
        return self.array[index]


def test_shard_reads_touch_only_the_needed_rows():
    # q_proj: HF (heads*head_dim, embed) = (4*3, 5) → ours (embed, heads, head_dim).
    hf = np.arange(60, dtype=np.float32).reshape(12, 5)
    spec = TensorSpec(("q",), "q", (5, 4, 3), None, ((4, 3), (5,)), (2, 0, 1))
    full = np.transpose(hf.reshape(4, 3, 5), (2, 0, 1))
    np.testing.assert_array_equal(spec.to_hf(full), hf)
    recorder = _RecordingSlice(hf)
    part = spec.read(recorder, (slice(1, 3), slice(2, 4), slice(None)), np.float32)
    np.testing.assert_array_equal(part, full[1:3, 2:4, :])
    assert recorder.requests == [(slice(6, 12), slice(1, 3))]  # heads 2-3 only, embed 1-2 only
