#!/usr/bin/env bash
# The main job: the CLIPA-v2 schedule in miniature on generated shapes data, on CPU.
# Installs what is needed, generates the data on first use, trains both stages,
# evaluates zero-shot and prints the summary table. Rerunning skips finished stages.
# Usage: bash scripts/demo.sh [MODEL_DIR]      (default: runs/demo_cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh  # the core + matplotlib: no torch
MODEL_DIR=${1:-runs/demo_cpu}
# TensorFlow's start-up lines are filtered by the entry point (clipa_t5x/cli.py).
exec .venv/bin/python -m clipa_t5x.train \
  --gin_file=gin/runs/demo_cpu.gin \
  --gin.MODEL_DIR="'${MODEL_DIR}'"
