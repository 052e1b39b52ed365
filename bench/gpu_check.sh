#!/usr/bin/env bash
# The GPU check in one command: clipa_t5x vs open_clip train steps in bf16 (bench/gpu_check.py).
# On a GPU machine without internet, carried wheels in .whl/ (bench/fetch_gpu_wheels.sh) are
# installed into a scratch folder first; nothing else is installed.
# Usage: bash bench/gpu_check.sh [--smoke] [gpu_check.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  SITE=${GPU_CHECK_SITE:-/tmp/clipa_gpu_check_site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec "$PY" bench/gpu_check.py "$@"
