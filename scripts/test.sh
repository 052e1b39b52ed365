#!/usr/bin/env bash
# Installs what is needed (scripts/setup_env.sh), then runs the test suite.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not slow"
# The test files run in parallel, one pytest-xdist worker per core (a file stays on one worker,
# so its module fixtures are built once); CLIPA_TEST_WORKERS=0 runs them in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
# The test extras on top of the demo's: pytest and friends, torch + open_clip for the
# interop checks, matplotlib for experiments/.
bash scripts/setup_env.sh test,torch,experiments,demo
# The [torch] extra is installed above: its open_clip tests must run, not skip.
export CLIPA_REQUIRE_TORCH=1
exec .venv/bin/python -m pytest -n "${CLIPA_TEST_WORKERS:-auto}" --dist loadfile "$@"
