#!/usr/bin/env bash
# Start the MLflow tracking server on 127.0.0.1 against the embedded sqlite store that
# `ecglm train|tune|demo` write by default (tracking.tracking_uri / tracking.artifact_root).
#   bash mlflow/start_server.sh            # http://127.0.0.1:5000
#   PORT=5001 bash mlflow/start_server.sh
# Runs then log to the same store, or to the server with tracking.tracking_uri=http://127.0.0.1:5000.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-5000}"
HOST="${HOST:-127.0.0.1}"   # never 0.0.0.0 by default: the store holds every run
STORE="${MLFLOW_STORE:-.cache/mlflow/mlflow.db}"
ARTIFACTS="${MLFLOW_ARTIFACTS:-.cache/mlflow/artifacts}"
mkdir -p "$(dirname "$STORE")" "$ARTIFACTS"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
BIN=".venv/bin"; [ -x "$BIN/mlflow" ] || BIN="$(dirname "$(command -v mlflow)")"
exec "$BIN/mlflow" server \
  --backend-store-uri "sqlite:///$(realpath "$STORE")" \
  --default-artifact-root "$(realpath "$ARTIFACTS")" \
  --host "$HOST" --port "$PORT" --workers 1
