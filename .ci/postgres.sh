#!/usr/bin/env bash
# Start a throwaway PostgreSQL on 127.0.0.1:55432 and print its URL (for the sweep tests).
set -euo pipefail
PGPORT=55432
PGDATA=${PGDATA_DIR:-/tmp/adrlab-pgdata}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  else
    echo "no PostgreSQL server binaries and no way to install them" >&2; exit 1
  fi
fi
run_as=""
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd -r -m postgres
  run_as="runuser -u postgres --"
fi
if ! $run_as "$bindir/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  rm -rf "$PGDATA"; mkdir -p "$PGDATA"; [ -n "$run_as" ] && chown postgres "$PGDATA"
  $run_as "$bindir/initdb" -D "$PGDATA" -U postgres -A trust >&2
  $run_as "$bindir/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" \
    -o "-p $PGPORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200" -w start >&2
fi
$run_as "$bindir/psql" -h 127.0.0.1 -p $PGPORT -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='adrlab_test'" \
  | grep -q 1 || $run_as "$bindir/createdb" -h 127.0.0.1 -p $PGPORT -U postgres adrlab_test >&2
echo "postgresql://postgres@127.0.0.1:$PGPORT/adrlab_test"
