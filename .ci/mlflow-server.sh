#!/usr/bin/env bash
# Start an MLflow tracking server for the multi-node tests and print its URL: its backend is a
# database on the CI PostgreSQL (see .ci/postgres.sh), artifacts are served through the server
# from a local folder, and it listens on 127.0.0.1 only. Stop it with `.ci/mlflow-server.sh stop`.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=${ADRLAB_TEST_POSTGRES_URL:?"run .ci/postgres.sh first and export ADRLAB_TEST_POSTGRES_URL"}
DB=${ADRLAB_MLFLOW_DB:-adrlab_mlflow}
PORT=${ADRLAB_MLFLOW_PORT:-55500}
ARTIFACTS=${ADRLAB_MLFLOW_ARTIFACTS:-/tmp/adrlab-mlflow-artifacts-$PORT}
PIDFILE=/tmp/adrlab-mlflow-$PORT.pid
LOG=/tmp/adrlab-mlflow-$PORT.log
BIN=${ADRLAB_VENV:-.venv}/bin
URL="http://127.0.0.1:$PORT"

if [ "${1:-}" = stop ]; then
  # its own process group (setsid below): the server and its workers stop together
  [ -f "$PIDFILE" ] && kill -- "-$(cat "$PIDFILE")" 2>/dev/null || true
  rm -f "$PIDFILE"; exit 0
fi
healthy() { "$BIN/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/health', timeout=2)" "$URL" 2>/dev/null; }
if healthy; then echo "$URL"; exit 0; fi

# The server's own database, created once (no password here: trust auth in CI, ~/.pgpass elsewhere).
"$BIN/python" - "$PG" "$DB" <<'PY' >&2
import sys, sqlalchemy
url = sqlalchemy.engine.make_url(sys.argv[1])
engine = sqlalchemy.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
with engine.connect() as conn:
    if not conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname=:d"), {"d": sys.argv[2]}).scalar():
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{sys.argv[2]}"'))
PY
backend="${PG%/*}/$DB"
mkdir -p "$ARTIFACTS"
setsid nohup "$BIN/mlflow" server --host 127.0.0.1 --port "$PORT" --workers 2 \
  --backend-store-uri "$backend" --artifacts-destination "$ARTIFACTS" >"$LOG" 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 1 180); do
  if healthy; then echo "$URL"; exit 0; fi
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { echo "mlflow server exited:" >&2; tail -20 "$LOG" >&2; exit 1; }
  sleep 1
done
echo "mlflow server did not answer on $URL within 180 s:" >&2; tail -20 "$LOG" >&2; exit 1
