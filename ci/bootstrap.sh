#!/usr/bin/env bash
# Create ./.venv with everything the local service and the test suite need. Idempotent and quick
# when nothing changed (a stamp of pyproject.toml skips the pip run).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # The CPU build of torch first: anything unpinned would pull several GB of CUDA wheels.
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q -e ".[ui,bench,test]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
