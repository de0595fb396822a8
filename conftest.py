"""Test-wide setup shared by ``tests/`` and ``theory_tests/``.

* 8 fake CPU devices so sharding code runs on a laptop or CI: ``XLA_FLAGS`` must be
  set before jax is first imported, which is why this happens at import time here.
* A hypothesis profile that is derandomised, has no deadline (first calls compile)
  and bounded example counts so the whole suite stays fast.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "jaxalign",
    derandomize=True,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    parent=settings.get_profile("jaxalign"),
    max_examples=500,
)
settings.load_profile(os.environ.get("JAXALIGN_HYPOTHESIS_PROFILE", "jaxalign"))
