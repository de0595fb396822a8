"""shard_batch: process-local numpy in, global sharded arrays out, equal to the batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxalign.data import PreferenceBatch, TokenizedPair, collate_preference_batch
from jaxalign.parallel import (
    MeshConfig,
    batch_sharding,
    data_shard_info,
    make_mesh,
    process_batch_slice,
    shard_batch,
)

MESHES = [(1, -1, 1), (2, -1, 1), (2, 2, 2), (1, 1, -1), (-1, 1, 2)]


def _preference_batch(batch_size, length=12, seed=0):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(batch_size):
        n_prompt, n_c, n_r = rng.integers(1, 4, size=3)
        ids = lambda n: rng.integers(3, 50, size=n).astype(np.int32)
        pairs.append(TokenizedPair(ids(n_prompt), ids(n_c), ids(n_r), False, False))
    return collate_preference_batch(pairs, length, pad_id=0)


@pytest.mark.parametrize("sizes", MESHES)
def test_sharded_batch_equals_the_global_batch(sizes):
    mesh = make_mesh(MeshConfig(*sizes))
    batch = _preference_batch(8)
    sharded = shard_batch(batch, mesh)
    assert isinstance(sharded, PreferenceBatch)
    expected = batch_sharding(mesh, ndim=2)
    for name in batch._fields:
        local, arr = getattr(batch, name), getattr(sharded, name)
        if local is None:  # optional fields (precomputed reference log-probs) stay None
            assert arr is None
            continue
        assert isinstance(arr, jax.Array)
        assert arr.shape == local.shape and arr.dtype == local.dtype
        np.testing.assert_array_equal(np.asarray(arr), local)
        assert arr.sharding.is_equivalent_to(batch_sharding(mesh, ndim=arr.ndim), arr.ndim)
    # shards: the batch is split over data × fsdp, the rest replicated
    n_batch_shards = dict(mesh.shape)["data"] * dict(mesh.shape)["fsdp"]
    assert {s.data.shape for s in sharded.chosen_input_ids.addressable_shards} == {
        (8 // n_batch_shards, 12)
    }
    assert expected.spec[1] is None


def test_jitted_reduction_of_sharded_batch_matches_numpy():
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    batch = _preference_batch(16, seed=3)
    sharded = shard_batch(batch, mesh)

    @jax.jit
    def masked_token_sum(b):
        ids = b.chosen_input_ids.astype(jnp.float32)
        return jnp.sum(ids * b.chosen_loss_mask), jnp.sum(b.rejected_loss_mask)

    total, count = masked_token_sum(sharded)
    assert float(total) == float(np.sum(batch.chosen_input_ids * batch.chosen_loss_mask))
    assert float(count) == float(batch.rejected_loss_mask.sum())


def test_logical_axes_can_shard_more_than_the_batch_dimension():
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    rules_x = {"batch": ("data", "fsdp"), "length": "tensor"}
    x = np.arange(8 * 4, dtype=np.int32).reshape(8, 4)
    out = shard_batch({"x": x}, mesh, rules_x, logical_axes=("batch", "length"))
    assert out["x"].sharding.spec == P(("data", "fsdp"), "tensor")
    np.testing.assert_array_equal(np.asarray(out["x"]), x)


def test_single_process_owns_the_whole_batch():
    mesh = make_mesh(MeshConfig(data=2, fsdp=-1))
    assert process_batch_slice(16, mesh) == slice(0, 16)
    assert data_shard_info(16, mesh) == (0, 1)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({"a": np.zeros((6, 2)), "b": np.zeros((8,))}, "same leading \\(batch\\) size"),
        ({"a": np.zeros(())}, "same leading \\(batch\\) size"),
        ({"a": np.zeros((6, 2))}, "cannot shard local batch leaf of shape \\(6, 2\\)"),
        ({}, "no array leaves"),
    ],
)
def test_bad_batches_are_clear_errors(batch, message):
    mesh = make_mesh(MeshConfig(data=2, fsdp=-1))
    with pytest.raises(ValueError, match=message):
        shard_batch(batch, mesh)


def test_global_batch_size_must_split_over_batch_shards():
    mesh = make_mesh(MeshConfig(data=2, fsdp=-1))
    with pytest.raises(ValueError, match="multiple of the 8 batch shards"):
        process_batch_slice(12, mesh)
