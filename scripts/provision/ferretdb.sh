#!/usr/bin/env bash
# Build (once) and start (if needed) FerretDB, the MongoDB wire-protocol server the job store's
# tests run against. Idempotent: every step is skipped when already done.
#
#   scripts/provision/ferretdb.sh          # build if missing, start if not answering, wait
#
# Environment (all optional):
#   AUTOSCORER_FERRETDB_VERSION  module version to build           (default v1.24.2)
#   AUTOSCORER_BIN_DIR           where the binary goes             (default $AUTOSCORER_CACHE/bin, ~/.cache/autoscorer/bin)
#   AUTOSCORER_FERRETDB_DATA     SQLite data directory             (default /tmp/autoscorer-ferretdb)
#   AUTOSCORER_FERRETDB_ADDR     listen address host:port          (default 127.0.0.1:27017)
#   AUTOSCORER_FERRETDB_WAIT     seconds to wait for it to answer  (default 60)
#
# Needs Go on PATH or in /usr/local/go/bin. FerretDB 1.24.2 asks for Go >= 1.24; an older Go
# fetches that toolchain from the module proxy by itself (GOTOOLCHAIN=auto, the default).
#
# The first build downloads FerretDB's modules from the Go proxy and compiles them: a few minutes
# on 2 cores. Later runs find the binary and only start the server (about a second).
set -euo pipefail

MODULE=github.com/FerretDB/FerretDB
VERSION="${AUTOSCORER_FERRETDB_VERSION:-v1.24.2}"
BIN_DIR="${AUTOSCORER_BIN_DIR:-${AUTOSCORER_CACHE:-${HOME:-/root}/.cache/autoscorer}/bin}"
DATA_DIR="${AUTOSCORER_FERRETDB_DATA:-/tmp/autoscorer-ferretdb}"
ADDR="${AUTOSCORER_FERRETDB_ADDR:-127.0.0.1:27017}"
WAIT_S="${AUTOSCORER_FERRETDB_WAIT:-60}"
LOG_FILE="${DATA_DIR}.log"
HOST="${ADDR%:*}"
PORT="${ADDR##*:}"

log() { echo "[ferretdb] $*" >&2; }

. "$(dirname "$0")/lib.sh"  # quiet, find_go

module_dir() {
    # Download the module (checked against the checksum database through the proxy) and print
    # where the Go module cache unpacked it.
    local go_bin="$1"
    (cd / && "$go_bin" mod download -json "$MODULE@$VERSION") |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

build() {
    if [ -x "$BIN_DIR/ferretdb" ]; then
        log "binary present: $BIN_DIR/ferretdb"
        return 0
    fi
    local go_bin src
    go_bin="$(find_go)"
    src="$(module_dir "$go_bin")"
    if [ -z "$src" ]; then
        log "could not download $MODULE@$VERSION from the Go module proxy"
        return 1
    fi
    mkdir -p "$BIN_DIR"
    log "building $MODULE/cmd/ferretdb@$VERSION with $go_bin (first time: about 2 minutes)"
    # Not `go install ...@version`, for two reasons:
    # - it also asks the proxy for the module's version list (to look for deprecation notices),
    #   which a proxy that serves only pinned versions refuses with "403 Forbidden";
    # - a binary built from the bare module panics at start-up ("Invalid build/version/version.txt
    #   file content"): FerretDB's release builds generate that file, the module zip lacks it.
    # So build a writable copy of the module (its own go.mod and go.sum) with version.txt added.
    local work
    work="$(mktemp -d)"
    cp -R "$src/." "$work"
    chmod -R u+w "$work"
    echo "$VERSION" >"$work/build/version/version.txt"
    (cd "$work" && GOFLAGS=-buildvcs=false \
        "$go_bin" build -trimpath -o "$BIN_DIR/ferretdb.tmp" ./cmd/ferretdb)
    rm -rf "$work"
    mv "$BIN_DIR/ferretdb.tmp" "$BIN_DIR/ferretdb"
}

answering() {
    # A bare TCP connect is enough to know the listener is up; bash's /dev/tcp needs no extra tools.
    (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

start() {
    if answering; then
        log "already answering on $ADDR"
        return 0
    fi
    mkdir -p "$DATA_DIR"
    log "starting on $ADDR (data $DATA_DIR, log $LOG_FILE)"
    nohup "$BIN_DIR/ferretdb" \
        --handler=sqlite \
        --sqlite-url="file:$DATA_DIR/" \
        --listen-addr="$ADDR" \
        --telemetry=disable \
        --state-dir="$DATA_DIR" \
        >>"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$DATA_DIR.pid"
    disown || true
}

alive() {
    [ ! -f "$DATA_DIR.pid" ] || kill -0 "$(cat "$DATA_DIR.pid")" 2>/dev/null
}

wait_ready() {
    local deadline=$((SECONDS + WAIT_S))
    until answering; do
        if ! alive || [ "$SECONDS" -ge "$deadline" ]; then
            log "not answering on $ADDR (waited up to ${WAIT_S}s); last log lines:"
            tail -n 20 "$LOG_FILE" >&2 || true
            return 1
        fi
        sleep 0.2
    done
    log "ready on $ADDR"
}

build
start
wait_ready
