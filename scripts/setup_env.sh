#!/usr/bin/env bash
# Creates .venv with the tested package set (idempotent: a no-op when nothing changed).
# Usage: bash scripts/setup_env.sh [EXTRAS]
#   EXTRAS: setup.py extras, comma-separated (default: demo, what scripts/demo.sh needs: the
#   core and matplotlib, no torch). scripts/test.sh asks for test,torch,experiments.
#   PYTHON=/path/to/python chooses the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${1:-demo}

pick_python() {
  # jax >= 0.11 needs Python >= 3.12; 3.11 gets the older tested set. A pyenv-installed
  # 3.12 counts even when pyenv's active version is another one (its shim then refuses).
  local candidates=("${PYTHON:-}" python3.12)
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.12*/bin/python3.12)
  fi
  candidates+=(python3.11 python3)
  for py in "${candidates[@]}"; do
    [ -n "$py" ] || continue
    if "$py" -c 'import sys; assert sys.version_info[:2] in ((3, 11), (3, 12))' >/dev/null 2>&1; then
      echo "$py"; return 0
    fi
  done
  echo "error: need Python 3.11 or 3.12 (set PYTHON=/path/to/python)" >&2
  return 1
}

# The extras as a sorted, comma-separated set ("test,torch" == "torch,test").
normalize() { tr ',' '\n' <<<"$1" | sed '/^$/d' | sort -u | paste -sd, -; }

PY=$(pick_python)
VERSION=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
CONSTRAINTS="constraints-py${VERSION}.txt"
# The stamp names the exact files installed from and lists the extras installed: a later
# call that asks for no more extras is a no-op, one that asks for more adds them.
STAMP=".venv/.installed-$(cat "$CONSTRAINTS" setup.py | sha256sum | cut -c1-16)"
WANTED=$(normalize "$EXTRAS")
HAVE=""
if [ -x .venv/bin/python ] && [ -f "$STAMP" ]; then
  HAVE=$(normalize "$(cat "$STAMP")")
  MISSING=$(comm -23 <(tr ',' '\n' <<<"$WANTED") <(tr ',' '\n' <<<"$HAVE") | paste -sd, -)
  [ -n "$MISSING" ] || exit 0  # already installed from these exact files, with these extras
fi
if [ -x .venv/bin/python ] && ! .venv/bin/python -c 'import sys; assert f"{sys.version_info[0]}{sys.version_info[1]}" == "'"$VERSION"'"' 2>/dev/null; then
  rm -rf .venv  # made by another Python version
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
ALL=$(normalize "$WANTED,$HAVE")
.venv/bin/python -m pip install --quiet -c "$CONSTRAINTS" -e ".[${ALL}]"
rm -f .venv/.installed-*
echo "$ALL" >"$STAMP"
echo "installed clipa_t5x[${ALL}] into .venv (Python $VERSION, $CONSTRAINTS)"
