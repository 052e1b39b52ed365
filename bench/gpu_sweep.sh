#!/usr/bin/env bash
# The GPU lever sweep in one command (bench/gpu_sweep.py): each lever alone and combined on
# B/16 @ 224 and L/14 @ 224 (30% masking) within --budget_s (default 480 s), results as JSON
# in $OUT/gpu_sweep.json; --memory: largest H/14 batch per remat policy ($OUT/gpu_memory.json).
# Needs jax with CUDA, flax, optax, numpy; no TensorFlow, seqio, gin or clu; nothing carried.
# Usage: bash bench/gpu_sweep.sh [--smoke] [--memory] [gpu_sweep.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec "${PYTHON:-python3}" bench/gpu_sweep.py "$@"
