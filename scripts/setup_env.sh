#!/usr/bin/env bash
# Creates .venv with the tested package set (idempotent: a no-op when nothing changed).
# Usage: bash scripts/setup_env.sh            (PYTHON=/path/to/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  # jax >= 0.11 needs Python >= 3.12; 3.11 gets the older tested set.
  local candidates=("${PYTHON:-}" python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 python3.11 python3)
  for py in "${candidates[@]}"; do
    [ -n "$py" ] || continue
    if "$py" -c 'import sys; assert sys.version_info[:2] in ((3, 11), (3, 12))' >/dev/null 2>&1; then
      echo "$py"; return 0
    fi
  done
  echo "error: need Python 3.11 or 3.12 (set PYTHON=/path/to/python)" >&2
  return 1
}

PY=$(pick_python)
VERSION=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
CONSTRAINTS="constraints-py${VERSION}.txt"
STAMP=".venv/.installed-$(cat "$CONSTRAINTS" setup.py | sha256sum | cut -c1-16)"

if [ -x .venv/bin/python ] && [ -f "$STAMP" ]; then
  exit 0  # already installed from these exact files
fi
if [ -x .venv/bin/python ] && ! .venv/bin/python -c 'import sys; assert f"{sys.version_info[0]}{sys.version_info[1]}" == "'"$VERSION"'"' 2>/dev/null; then
  rm -rf .venv  # made by another Python version
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c "$CONSTRAINTS" -e '.[test,torch,experiments]'
rm -f .venv/.installed-*
touch "$STAMP"
echo "installed clipa_t5x into .venv (Python $VERSION, $CONSTRAINTS)"
