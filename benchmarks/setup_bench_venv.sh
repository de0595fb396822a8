#!/usr/bin/env bash
# Creates the benchmark virtual environment: jaxalign plus its peers (TRL, Tunix, OpenSpiel,
# transformers + torch). CI never runs this; the project venv never holds the peers.
#
#   bash benchmarks/setup_bench_venv.sh [VENV]        # default VENV: /work/bench-venv
#
# jax, jaxlib, flax, optax, torch (2.13.0, CPU wheel), transformers and the rest stay at the
# versions of constraints.txt. One conflict is left on purpose: google-tunix 0.1.7 declares
# safetensors<0.8 while transformers 5.23 (constraints.txt) needs safetensors>=0.8, so Tunix
# is installed after its other dependencies with --no-deps and runs on safetensors 0.8
# (the benchmark only uses Tunix's safetensors loader on a float32/bf16 checkpoint, which
# works); `pip check` reports exactly this one conflict.
set -euo pipefail

VENV="${1:-/work/bench-venv}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONSTRAINTS="$ROOT/constraints.txt"

python3 -m venv "$VENV"
PIP="$VENV/bin/pip"

# jaxalign with the torch parity extra, TRL, OpenSpiel, and google-tunix 0.1.7's own
# requirements (its METADATA, minus the safetensors pin).
"$PIP" install -c "$CONSTRAINTS" -e "$ROOT[torch-parity]" \
    "trl==1.16.*" open_spiel \
    datasets "google-metrax>=0.2.3" grain hf_transfer importlib_resources jinja2 kagglehub \
    numba omegaconf pylatexenc python-dotenv perfetto "qwix>=0.1.6" sentencepiece sympy \
    tensorflow_datasets tenacity
"$PIP" install -c "$CONSTRAINTS" --no-deps "google-tunix==0.1.7"

"$VENV/bin/python" - <<'EOF'
from importlib import metadata

for name in ("jax", "flax", "optax", "torch", "transformers", "trl", "accelerate",
             "google-tunix", "open_spiel", "safetensors"):
    print(f"{name:14} {metadata.version(name)}")
EOF
"$PIP" check || true  # expected: google-tunix's safetensors<0.8 (see above)
