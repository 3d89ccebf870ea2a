#!/usr/bin/env bash
# README command 2: install what the suite needs, then run it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/bootstrap.sh
# checkov pins its own dependency set, so it lives in a venv of its own (.venv-checkov).
ci/checkov.sh
# Real servers from Debian, installed when missing: chromium for the browser tests (never a browser
# downloaded by a test tool), redis-server for the GCS fault-tolerance drills (tests/reliability).
missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -x /usr/bin/redis-server ] || missing="$missing redis-server"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  # shellcheck disable=SC2086 # one word per package
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
export PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest "$@"
