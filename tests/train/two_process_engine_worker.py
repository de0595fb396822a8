"""One process of the engine's 2-process test (run by test_engine.py).

Each process has 4 fake CPU devices; together they form one (2, 2, 2) mesh. The run joins
through the JAXALIGN_* environment variables and prints one ``RESULT <json>`` line.
"""

import json
import os
import sys


def main():
    # Before jax is imported: 4 fake CPU devices in this process.
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")

    from jaxalign.train import load_train_config, train

    result = train(load_train_config(sys.argv[1]), quiet=True)
    print(
        "RESULT "
        + json.dumps(
            {
                "process": jax.process_index(),
                "devices": jax.device_count(),
                "step": result.step,
                "losses": [r["loss"] for r in result.history],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
