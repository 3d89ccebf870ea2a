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
  # torch first, pinned, so that nothing below pulls an unpinned one (PyPI's Linux wheel brings several GB
  # of CUDA libraries; TORCH_INDEX_URL, e.g. PyTorch's CPU index, picks the CPU-only build instead).
  "$VENV/bin/pip" install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
  "$VENV/bin/pip" install -q -e ".[ui,bench,test]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
