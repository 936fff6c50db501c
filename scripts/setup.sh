#!/usr/bin/env bash
# Create .venv at the repository root and install AutoScorer with its test tools.
# Idempotent: a second run with an unchanged pyproject.toml only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  if ! PY=$(find_python); then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "setup: installing Python 3.11 from Debian packages" >&2
      apt-get update -qq && apt-get install -y -qq python3.11 python3.11-venv >/dev/null
      PY=$(find_python)
    else
      echo "setup: Python 3.11 is required (python3.11 not found)" >&2; exit 1
    fi
  fi
  "$PY" -m venv .venv
fi

stamp=.venv/.autoscorer-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x .venv/bin/autoscorer ]; then
  echo "setup: installing autoscorer into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
