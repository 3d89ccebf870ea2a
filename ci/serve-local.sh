#!/usr/bin/env bash
# README command 1: run the service on this machine with the embedded default model.
#   ci/serve-local.sh [--port 8000] [--model-id embedded|HUB_ID|DIR] [--backend cpu|cuda|neuron] [--ui]
#                     [--set FIELD=VALUE ...]
# Creates ./.venv on first use (ci/bootstrap.sh), generates the embedded model if absent, deploys the app
# at http://127.0.0.1:PORT/serve (and the web UI at /ui with --ui) and prints a curl line.
# Ctrl-C stops Serve and Ray (everything this script started).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/bootstrap.sh
export PYTHONUNBUFFERED=1
# exec: Ctrl-C goes straight to the Python process, which shuts Serve and Ray down.
exec .venv/bin/python -m app.local_run "$@"
