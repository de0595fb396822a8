"""One process of the 2-process online training test (test_train_online_distributed.py).

Each process has 2 fake CPU devices; together they form one 4-device mesh. The process
joins through the JAXALIGN_* environment variables and runs ``jaxalign train`` (through
``jaxalign.cli.main``) with ``argv[1:]``; it then prints its run summary as one JSON line.
"""

import json
import os
import sys


def main():
    # Before jax is imported: 2 fake CPU devices in this process.
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")

    from jaxalign import cli
    from jaxalign.train import online_run

    # Keep the summary that `jaxalign train` computes (it returns only an exit code).
    summary = {}
    train_online = online_run.train_online

    def keep_summary(config, **kwargs):
        summary.update(train_online(config, **kwargs))
        return summary

    online_run.train_online = keep_summary
    rc = cli.main(["train", *sys.argv[1:]])
    result = {
        "rc": rc,
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "summary": summary,
    }
    print("RESULT " + json.dumps(result), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
