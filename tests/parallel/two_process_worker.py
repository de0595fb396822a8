"""One process of the 2-process jax.distributed test (run by test_parallel_distributed.py).

Each process has 4 fake CPU devices; together they form one 8-device mesh. The
process loads its slice of every global batch with the data loader, builds the
global array with shard_batch and reduces it; it prints one JSON line.
"""

import json
import os
import sys

import numpy as np

from jaxalign.data import PreferenceDataset, PreferenceLoader, TokenizedPair, process_slice


def tiny_dataset(n=24, seed=0):
    rng = np.random.default_rng(seed)
    ids = lambda k: rng.integers(3, 50, size=k).astype(np.int32)
    return PreferenceDataset(
        [
            TokenizedPair(
                ids(rng.integers(1, 5)),
                ids(rng.integers(1, 6)),
                ids(rng.integers(1, 6)),
                False,
                False,
            )
            for _ in range(n)
        ]
    )


def main():
    # Before jax is imported: 4 fake CPU devices in this process.
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")

    from jaxalign.parallel import initialize_distributed

    assert initialize_distributed()  # from the JAXALIGN_* environment variables

    import jax.numpy as jnp
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxalign.parallel import (
        MeshConfig,
        data_shard_info,
        make_mesh,
        process_batch_slice,
        shard_batch,
    )

    global_batch = int(sys.argv[1])
    steps = int(sys.argv[2])
    mesh = make_mesh(MeshConfig(data=2, fsdp=-1, tensor=1))
    shard, count = data_shard_info(global_batch, mesh)
    rows = process_batch_slice(global_batch, mesh)
    assert rows == process_slice(global_batch, shard, count), (rows, shard, count)
    dataset = tiny_dataset()
    kw = dict(batch_size=global_batch, seed=5, bucket_sizes=(4, 8, 16))
    loader = PreferenceLoader(dataset, process_index=shard, process_count=count, **kw)
    reference = PreferenceLoader(dataset, **kw)  # the single-process view, for checking

    @jax.jit
    def reduce(b):
        ids = b.chosen_input_ids.astype(jnp.float32)
        return jnp.sum(ids * b.chosen_loss_mask), jnp.sum(b.rejected_attention_mask)

    def psum_rows(x):  # explicit collective over the batch axes
        return jax.lax.psum(jnp.sum(x, axis=0, keepdims=True), ("data", "fsdp"))

    psum = jax.jit(
        jax.shard_map(
            psum_rows, mesh=mesh, in_specs=P(("data", "fsdp"), None), out_specs=P(None, None)
        )
    )
    results = []
    for _ in range(steps):
        local = next(loader)
        full = next(reference)
        sharded = shard_batch(local, mesh)
        gathered = multihost_utils.process_allgather(sharded.chosen_input_ids, tiled=True)
        assert np.array_equal(gathered, full.chosen_input_ids)
        total, attended = reduce(sharded)
        column_sums = psum(sharded.rejected_input_ids)
        replicated = NamedSharding(mesh, P())
        assert total.sharding.is_equivalent_to(replicated, 0)
        results.append(
            {
                "total": float(total),
                "attended": float(attended),
                "column_sums": np.asarray(column_sums.addressable_data(0)).ravel().tolist(),
                "length": int(sharded.chosen_input_ids.shape[1]),
            }
        )
    print(
        "RESULT "
        + json.dumps(
            {
                "process": jax.process_index(),
                "process_count": jax.process_count(),
                "devices": jax.device_count(),
                "local_devices": jax.local_device_count(),
                "rows": [rows.start, rows.stop],
                "steps": results,
                "state": loader.state_dict(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
