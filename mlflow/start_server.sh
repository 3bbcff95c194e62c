#!/usr/bin/env bash
# Start the MLflow tracking server (tracking + model registry + proxied artifacts).
#
# Laptop default: the embedded sqlite store that `ecglm train|tune|demo` write
# (tracking.tracking_uri / tracking.artifact_root), on 127.0.0.1:5000:
#   bash mlflow/start_server.sh
#   PORT=5001 bash mlflow/start_server.sh
# Cluster head (see cluster.yaml): a database and a shared artifact destination; clients log
# artifacts *through* the server (experiments created via the server get `mlflow-artifacts:/`
# locations), so no node needs the artifact store mounted:
#   BACKEND_STORE_URI=postgresql://mlflow:...@db/mlflow \
#   ARTIFACTS_DESTINATION=s3://my-bucket/mlflow HOST=<head private ip> bash mlflow/start_server.sh
#
# Variables: PORT (5000), HOST (127.0.0.1: never 0.0.0.0 by default, the store holds every run),
# BACKEND_STORE_URI (default sqlite:///<MLFLOW_STORE>, MLFLOW_STORE=.cache/mlflow/mlflow.db),
# ARTIFACTS_DESTINATION (default <MLFLOW_ARTIFACTS>, MLFLOW_ARTIFACTS=.cache/mlflow/artifacts:
# the folder local runs already write, so their artifacts stay readable), ALLOWED_HOSTS
# (extra Host headers the server accepts, e.g. the head's address; comma-separated),
# WORKERS (1).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-5000}"
HOST="${HOST:-127.0.0.1}"
STORE="${MLFLOW_STORE:-.cache/mlflow/mlflow.db}"
ARTIFACTS="${MLFLOW_ARTIFACTS:-.cache/mlflow/artifacts}"
if [ -z "${BACKEND_STORE_URI:-}" ]; then
  mkdir -p "$(dirname "$STORE")"
  BACKEND_STORE_URI="sqlite:///$(realpath "$STORE")"
fi
if [ -z "${ARTIFACTS_DESTINATION:-}" ]; then
  mkdir -p "$ARTIFACTS"
  ARTIFACTS_DESTINATION="$(realpath "$ARTIFACTS")"
fi
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
BIN=".venv/bin"
if [ ! -x "$BIN/mlflow" ]; then
  if ! command -v mlflow >/dev/null; then
    echo "error: mlflow not found (no .venv/bin/mlflow, none on PATH): run 'make install'" \
         "or activate the venv that has ecglm installed" >&2
    exit 127
  fi
  BIN="$(dirname "$(command -v mlflow)")"
fi
EXTRA=()
if [ -n "${ALLOWED_HOSTS:-}" ]; then
  EXTRA+=(--allowed-hosts "localhost,127.0.0.1,localhost:$PORT,127.0.0.1:$PORT,$ALLOWED_HOSTS")
fi
echo "[mlflow] tracking + registry on http://$HOST:$PORT (store: ${BACKEND_STORE_URI%%://*}://...," \
     "artifacts proxied to $ARTIFACTS_DESTINATION)" >&2
exec "$BIN/mlflow" server \
  --backend-store-uri "$BACKEND_STORE_URI" \
  --serve-artifacts --artifacts-destination "$ARTIFACTS_DESTINATION" \
  --host "$HOST" --port "$PORT" --workers "${WORKERS:-1}" "${EXTRA[@]}"
