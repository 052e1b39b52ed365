#!/usr/bin/env bash
# Downloads the pure-Python wheels the GPU check needs beyond a stock CUDA jax+torch image
# (open_clip_torch and its two small dependencies ftfy and wcwidth) into .whl/ (git-ignored),
# for a GPU machine that cannot reach a package index. About 2 MB in all.
# Usage: bash bench/fetch_gpu_wheels.sh        then carry .whl/ and run bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation py --implementation cp --platform any -d .whl \
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.2.13
ls -la .whl
