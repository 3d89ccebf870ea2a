#!/usr/bin/env bash
# README command 2: install what the suite needs, then run it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/bootstrap.sh
# checkov pins its own dependency set, so it lives in a venv of its own (.venv-checkov).
ci/checkov.sh
if [ ! -x /usr/bin/chromium ]; then
  # The browser tests drive Debian's chromium; never a browser downloaded by a test tool.
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest "$@"
