"""Logical axis rules → PartitionSpec / NamedSharding, checked on real shards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxalign.parallel import (
    DEFAULT_RULES,
    LogicalRules,
    MeshConfig,
    logical_to_pspec,
    logical_to_sharding,
    make_mesh,
    tree_logical_to_sharding,
    with_logical_constraint,
)


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))


def test_default_rules_map_the_documented_names():
    assert DEFAULT_RULES["batch"] == ("data", "fsdp")
    assert DEFAULT_RULES["embed"] == ("fsdp",)
    for name in ("mlp", "heads", "kv_heads", "vocab"):
        assert DEFAULT_RULES[name] == ("tensor",)
    assert DEFAULT_RULES["length"] is None


def test_rules_are_immutable_hashable_mappings():
    rules = DEFAULT_RULES.replace(embed=None, extra=["data"])
    assert rules["embed"] is None and rules["extra"] == ("data",)
    assert DEFAULT_RULES["embed"] == ("fsdp",)
    assert rules == LogicalRules(dict(rules)) and hash(rules) == hash(LogicalRules(dict(rules)))
    assert rules != DEFAULT_RULES
    assert dict(LogicalRules([("a", "data")])) == {"a": ("data",)}
    assert LogicalRules({"a": ()})["a"] is None


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"a": 3}, "must map to a mesh axis name"),
        ({"a": ["data", "data"]}, "repeated mesh axes"),
        ({"": "data"}, "non-empty strings"),
        ([("a", "data"), ("a", None)], "appears twice"),
        ([("a",)], "pairs"),
    ],
)
def test_invalid_rules_are_rejected(rules, message):
    with pytest.raises(ValueError, match=message):
        LogicalRules(rules)


def test_parameter_and_activation_specs(mesh):
    assert logical_to_pspec(("embed", "mlp")) == P("fsdp", "tensor")
    assert logical_to_pspec(("vocab", "embed")) == P("tensor", "fsdp")
    # Activations: the batch takes fsdp first, so embed stays whole.
    assert logical_to_pspec(("batch", "length", "embed"), mesh=mesh) == P(
        ("data", "fsdp"), None, None
    )
    assert logical_to_pspec(("batch", "length", "heads", None), mesh=mesh) == P(
        ("data", "fsdp"), None, "tensor", None
    )
    assert logical_to_pspec(P("embed", None)) == P("fsdp", None)
    assert logical_to_pspec((("embed", "mlp"),)) == P(("fsdp", "tensor"))


def test_size_one_axes_are_dropped_when_the_mesh_is_known():
    mesh = make_mesh(MeshConfig(data=1, fsdp=8, tensor=1))
    assert logical_to_pspec(("batch", "embed"), mesh=mesh) == P("fsdp", None)
    assert logical_to_pspec(("embed", "mlp"), mesh=mesh) == P("fsdp", None)


def test_indivisible_dimensions_fall_back_to_replication(mesh):
    # 2 kv heads split by tensor=2 fine; 3 heads cannot be, so they are replicated.
    assert logical_to_pspec(("embed", "kv_heads"), mesh=mesh, shape=(4, 2)) == P("fsdp", "tensor")
    assert logical_to_pspec(("embed", "heads"), mesh=mesh, shape=(4, 3)) == P("fsdp", None)
    # batch of 2 keeps data (2) but drops fsdp (2·2 = 4 does not divide 2).
    assert logical_to_pspec(("batch",), mesh=mesh, shape=(2,)) == P("data")


def test_unknown_names_and_missing_mesh_axes_are_clear_errors(mesh):
    with pytest.raises(ValueError, match="unknown logical axis name 'embd'; did you mean 'embed'"):
        logical_to_pspec(("embd",))
    with pytest.raises(ValueError, match="mesh axis 'expert', which the mesh does not have"):
        logical_to_pspec(("x",), LogicalRules({"x": "expert"}), mesh=mesh)
    with pytest.raises(ValueError, match="at most one name \\(or None\\) per dimension"):
        logical_to_pspec(("embed", None, None), mesh=mesh, shape=(4, 4))
    assert logical_to_pspec(("embed",), mesh=mesh, shape=(4, 4)) == P("fsdp", None)


def test_sharded_array_shards_have_the_expected_blocks(mesh):
    x = np.arange(8 * 6, dtype=np.float32).reshape(8, 6)
    sharding = logical_to_sharding(("embed", "mlp"), mesh)
    y = jax.device_put(x, sharding)
    assert {s.data.shape for s in y.addressable_shards} == {(4, 3)}
    for shard in y.addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), x[shard.index])
    np.testing.assert_array_equal(np.asarray(y), x)
    # replicated over data: both data replicas hold the same block
    assert len({tuple((s.start, s.stop) for s in sh.index) for sh in y.addressable_shards}) == 4


def test_tree_of_logical_specs_to_shardings(mesh):
    specs = {"w": P("embed", "mlp"), "b": P(), "heads": P("embed", "heads"), "n": None}
    shapes = {
        "w": jax.ShapeDtypeStruct((4, 8), jnp.float32),
        "b": jax.ShapeDtypeStruct((8,), jnp.float32),
        "heads": jax.ShapeDtypeStruct((4, 3), jnp.float32),
        "n": jax.ShapeDtypeStruct((5,), jnp.float32),
    }
    out = tree_logical_to_sharding(specs, mesh, shapes=shapes)
    assert out["w"].spec == P("fsdp", "tensor")
    assert out["b"].is_fully_replicated and out["n"].is_fully_replicated
    assert out["heads"].spec == P("fsdp", None)
    params = jax.jit(
        lambda: jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes), out_shardings=out
    )()
    assert params["w"].sharding.is_equivalent_to(out["w"], 2)


def test_tree_of_nnx_partition_specs_to_shardings(mesh):
    nnx = pytest.importorskip("flax.nnx")
    if not hasattr(nnx, "use_eager_sharding"):
        pytest.skip("flax without use_eager_sharding")
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))
    with nnx.use_eager_sharding(False):
        model = nnx.eval_shape(lambda: nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0)))
    state = nnx.state(model)
    out = tree_logical_to_sharding(nnx.get_partition_spec(state), mesh, shapes=state)
    leaves = jax.tree.leaves(out)
    assert sorted(str(s.spec) for s in leaves) == sorted([str(P(None)), str(P("fsdp", "tensor"))])


def test_with_logical_constraint_inside_jit(mesh):
    x = jnp.ones((8, 4, 6))

    @jax.jit
    def f(x):
        return with_logical_constraint(x * 2, ("batch", "length", "embed"), mesh) + 1

    with jax.set_mesh(mesh):
        y = f(x)
    expected = logical_to_sharding(("batch", "length", "embed"), mesh)
    assert y.sharding.is_equivalent_to(expected, 3)
    assert {s.data.shape for s in y.addressable_shards} == {(2, 4, 6)}
    np.testing.assert_array_equal(np.asarray(y), np.full((8, 4, 6), 3.0, np.float32))


def test_default_rules_agree_with_the_model_sharding_helpers(mesh):
    sharding = pytest.importorskip("jaxalign.models.sharding")
    cases = [
        (("embed", "mlp"), (8, 16)),
        (("vocab", "embed"), (64, 8)),
        (("embed", "heads", "head_dim"), (8, 3, 4)),
        (("embed", "kv_heads", "head_dim"), (8, 2, 4)),
        (("batch", "length", "act_embed"), (8, 5, 8)),
        (("batch", "length", "vocab"), (2, 5, 64)),
        (("batch", "length"), (1, 5)),
    ]
    for names, shape in cases:
        ours = logical_to_pspec(names, DEFAULT_RULES, mesh=mesh, shape=shape)
        theirs = sharding.logical_to_spec(names, DEFAULT_RULES.as_pairs(), mesh=mesh, shape=shape)
        assert ours == theirs, (names, shape)
        models_default = sharding.logical_to_spec(names, mesh=mesh, shape=shape)
        assert ours == models_default, (names, shape)
