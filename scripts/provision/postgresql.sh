#!/usr/bin/env bash
# Install PostgreSQL (Debian's package), make a cluster, a user and a database for FerretDB, and
# start FerretDB on PostgreSQL: a second MongoDB wire-protocol server for the job store's tests,
# whose findAndModify/update are atomic (see docs/STORE.md), so the store runs there without
# the per-job lock, as on real MongoDB. Idempotent: every step is skipped when already done.
#
#   scripts/provision/postgresql.sh    # install, start PostgreSQL, start FerretDB on it, wait
#
# Environment (all optional):
#   AUTOSCORER_BIN_DIR            where the FerretDB binary is     (default $AUTOSCORER_CACHE/bin, ~/.cache/autoscorer/bin)
#   AUTOSCORER_FERRETDB_PG_ADDR   FerretDB's listen host:port       (default 127.0.0.1:27018)
#   AUTOSCORER_FERRETDB_PG_STATE  FerretDB's state directory        (default /tmp/autoscorer-ferretdb-pg)
#   AUTOSCORER_PG_PORT            PostgreSQL's port                  (default 5432)
#
# The FerretDB binary comes from scripts/provision/ferretdb.sh (built once, cached), which this
# script runs first when the binary is missing. Tests reach this server through
# AUTOSCORER_TEST_MONGO_PG_URL (default mongodb://127.0.0.1:27018).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN_DIR="${AUTOSCORER_BIN_DIR:-${AUTOSCORER_CACHE:-${HOME:-/root}/.cache/autoscorer}/bin}"
ADDR="${AUTOSCORER_FERRETDB_PG_ADDR:-127.0.0.1:27018}"
STATE_DIR="${AUTOSCORER_FERRETDB_PG_STATE:-/tmp/autoscorer-ferretdb-pg}"
PG_PORT="${AUTOSCORER_PG_PORT:-5432}"
PG_USER=autoscorer
PG_PASSWORD=autoscorer  # a throwaway test database on 127.0.0.1 only
PG_DB=ferretdb
LOG_FILE="${STATE_DIR}.log"
HOST="${ADDR%:*}"
PORT="${ADDR##*:}"
WAIT_S=60

log() { echo "[postgresql] $*" >&2; }

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

install() {
    if compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
        log "postgresql already installed"
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null \
        || ! apt-cache show postgresql >/dev/null 2>&1; then
        log "apt-get update"
        apt-get update -q
    fi
    log "apt-get install postgresql"
    apt-get install -y -q --no-install-recommends postgresql >/dev/null
}

cluster() {
    local version
    version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    if ! pg_lsclusters -h | awk '{print $1"/"$2}' | grep -qx "$version/main"; then
        log "creating cluster $version/main on port $PG_PORT"
        pg_createcluster --port "$PG_PORT" "$version" main >/dev/null
    fi
    if ! pg_lsclusters -h | awk '$1=="'"$version"'" && $2=="main" {print $4}' | grep -qx online; then
        log "starting cluster $version/main"
        pg_ctlcluster "$version" main start
    fi
    local deadline=$((SECONDS + WAIT_S))
    until listening 127.0.0.1 "$PG_PORT"; do
        [ "$SECONDS" -lt "$deadline" ] || { log "PostgreSQL not listening on $PG_PORT"; return 1; }
        sleep 0.2
    done
}

psql_q() { su postgres -c "psql -p $PG_PORT -v ON_ERROR_STOP=1 -qtAc \"$1\""; }

database() {
    if [ "$(psql_q "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'")" != "1" ]; then
        log "creating role $PG_USER"
        psql_q "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'"
    fi
    if [ "$(psql_q "SELECT 1 FROM pg_database WHERE datname='$PG_DB'")" != "1" ]; then
        log "creating database $PG_DB"
        psql_q "CREATE DATABASE $PG_DB OWNER $PG_USER"
    fi
}

ferretdb() {
    if listening "$HOST" "$PORT"; then
        log "FerretDB (postgresql) already answering on $ADDR"
        return 0
    fi
    [ -x "$BIN_DIR/ferretdb" ] || bash "$HERE/ferretdb.sh"
    mkdir -p "$STATE_DIR"
    log "starting FerretDB (postgresql) on $ADDR (log $LOG_FILE)"
    nohup "$BIN_DIR/ferretdb" \
        --handler=postgresql \
        --postgresql-url="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB" \
        --listen-addr="$ADDR" \
        --telemetry=disable \
        --debug-addr=- \
        --state-dir="$STATE_DIR" \
        >>"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$STATE_DIR.pid"
    disown || true
    local deadline=$((SECONDS + WAIT_S))
    until listening "$HOST" "$PORT"; do
        if ! kill -0 "$(cat "$STATE_DIR.pid")" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            log "FerretDB (postgresql) not answering on $ADDR; last log lines:"
            tail -n 20 "$LOG_FILE" >&2 || true
            return 1
        fi
        sleep 0.2
    done
    sleep 0.5  # the listener opens before the handler has checked PostgreSQL: still alive?
    kill -0 "$(cat "$STATE_DIR.pid")" 2>/dev/null || { tail -n 20 "$LOG_FILE" >&2; return 1; }
    log "ready on $ADDR"
}

install
cluster
database
ferretdb
