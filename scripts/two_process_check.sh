#!/usr/bin/env bash
# Runs one training command as two processes on this machine, as a two-host launch runs it: each
# process sees 2 CPU devices, jax.distributed joins them over localhost (gloo collectives), so the
# mesh, the per-host data layout and every preflight check see 2 hosts x 2 devices.
#
# Usage: bash scripts/two_process_check.sh [TRAIN ARGS...]
#   no arguments: `train --check` of the CPU demo recipe on a small demo data set in a temp folder.
#   With arguments they are passed to both processes, e.g.
#     bash scripts/two_process_check.sh --check --gin_file=gin/runs/my_run.gin --gin.MODEL_DIR="'runs/check'"
# Exit status: 0 when both processes succeed, else the first failure's. Both logs are printed.
# PYTHON=/path/to/python picks the interpreter (default .venv/bin/python); PORT the coordinator port.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PORT=${PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ $# -eq 0 ]; then
  # Two train shards: each host reads its own file.
  set -- --check --gin_file=gin/runs/demo_cpu.gin "--gin.MODEL_DIR='$WORK/run'" \
    "--gin.demo_data.DemoData.data_dir='$WORK/demo_data'" --gin.demo_data.DemoData.num_train=256 \
    --gin.demo_data.DemoData.num_eval=60 --gin.demo_data.DemoData.num_train_shards=2
  # Generated once here, so the two processes do not both write it.
  "$PY" -c "from clipa_t5x.demo import data as demo_data; demo_data.DemoData('$WORK/demo_data', num_train=256, num_eval=60, num_train_shards=2).files('train')"
fi
pids=()
for i in 0 1; do
  XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu \
  JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo TF_CPP_MIN_LOG_LEVEL=2 \
    "$PY" -m clipa_t5x.train --coordinator_address="localhost:$PORT" --process_count=2 \
    --process_index=$i "$@" >"$WORK/process_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || { code=$?; [ "$status" -ne 0 ] || status=$code; }
done
for i in 0 1; do
  echo "=== process $i of 2"
  cat "$WORK/process_$i.log"
done
exit "$status"
