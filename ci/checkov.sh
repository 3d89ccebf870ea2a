#!/usr/bin/env bash
# Install checkov in its own virtual environment (./.venv-checkov): its pinned dependencies clash
# with the serving stack, so it never shares .venv. Idempotent: a stamp of the pin skips pip.
# tests/chart/test_chart_checkov.py runs "$REPO/.venv-checkov/bin/checkov" on the rendered chart.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOV_VERSION=${CHECKOV_VERSION:-3.3.30}
VENV=${CHECKOV_VENV:-.venv-checkov}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-checkov-$CHECKOV_VERSION"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  "$VENV/bin/checkov" --version >/dev/null
  rm -f "$VENV"/.installed-checkov-*
  touch "$stamp"
fi
