#!/bin/sh
# MONGO_INITDB_ROOT_USERNAME/_PASSWORD become FerretDB's setup user in the admin database; with
# --test-enable-new-auth FerretDB checks SCRAM credentials as MongoDB does.
set -eu
set -- --handler=sqlite --sqlite-url=file:/data/db/ --state-dir=/data/db \
  --listen-addr=0.0.0.0:27017 --debug-addr=127.0.0.1:8088 --telemetry=disable "$@"
if [ -n "${MONGO_INITDB_ROOT_USERNAME:-}" ]; then
  set -- "$@" --test-enable-new-auth --setup-database=admin \
    --setup-username="$MONGO_INITDB_ROOT_USERNAME" \
    --setup-password="${MONGO_INITDB_ROOT_PASSWORD:?}"
fi
exec /usr/local/bin/ferretdb "$@"
