"""``jaxalign eval``: a policy against a reference — win rate under a judge, mean reward,
KL(π‖π_ref) with its estimator named, response length; exact values on the testbed.

* :mod:`jaxalign.eval.config` — :class:`EvalConfig` from YAML + dotted overrides.
* :mod:`jaxalign.eval.metrics` — the per-pair metrics, estimators and exact testbed values.
* :mod:`jaxalign.eval.evaluate` — loading, seeded sampling and judging (one jit per batch).
* :mod:`jaxalign.eval.report` — ``eval.json`` and ``eval.png``.
"""

from jaxalign.eval.config import EvalConfig, load_eval_config
from jaxalign.eval.evaluate import EvalResult, evaluate
from jaxalign.eval.metrics import Estimate, exact_testbed_metrics, sequence_kl_estimates, verdict
from jaxalign.eval.report import run

__all__ = [
    "Estimate",
    "EvalConfig",
    "EvalResult",
    "evaluate",
    "exact_testbed_metrics",
    "load_eval_config",
    "run",
    "sequence_kl_estimates",
    "verdict",
]
