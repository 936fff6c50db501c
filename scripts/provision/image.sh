#!/usr/bin/env bash
# Build the AutoScorer service image and the CI stand-ins docker-compose.yml needs, locally: no
# container registry is reachable on the development and CI machines.
#
#   autoscorer-ci/python:3.11-bookworm  base: mmdebstrap'ed Debian bookworm with Python 3.11 and
#                                       what deploy/Dockerfile uses (venv, tini, passwd); the
#                                       tarball is cached, and the build host's CA trust is added
#                                       (pip and apt reach their registries through it here)
#   autoscorer:<version>                deploy/Dockerfile on that base (--network host: pip reaches
#                                       PyPI while building), <version> from pyproject.toml
#   autoscorer-ci/rabbitmq:3.10         Debian's rabbitmq-server      (deploy/compose/rabbitmq)
#   autoscorer-ci/mongo:ferretdb-1.24   the FerretDB binary           (deploy/compose/mongo)
#   autoscorer-ci/prometheus:2.42       Debian's prometheus           (deploy/compose/prometheus)
#   autoscorer-ci/standin:1             an HTTP sink for Jaeger and Grafana (deploy/compose/standin)
#
# Idempotent and quiet unless something fails: each image carries a label with the hash of its
# inputs (recipe files, base image id, the build context) and is rebuilt only when that changes.
# The test command runs this in the background at nice 19 during the main suite: it only adds
# images (and removes the ones it superseded), never touching running containers or services.
# Needs the Docker engine (scripts/provision/docker.sh) and the FerretDB binary
# (scripts/provision/ferretdb.sh). Environment: AUTOSCORER_CACHE (default ~/.cache/autoscorer),
# AUTOSCORER_BIN_DIR (FerretDB's folder, default $AUTOSCORER_CACHE/bin).
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE="${AUTOSCORER_CACHE:-${HOME:-/root}/.cache/autoscorer}"
FERRETDB="${AUTOSCORER_BIN_DIR:-$CACHE/bin}/ferretdb"
BASE=autoscorer-ci/python:3.11-bookworm
BASE_RECIPE=3  # bump when the package list or hooks below change
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,tini,passwd
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)"
export DOCKER_BUILDKIT=0  # the engine's classic builder: BuildKit would want frontend images

log() { echo "provision/image: $*" >&2; }

. "$(dirname "$0")/lib.sh"  # quiet, find_go

label() { docker image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true; }
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
drop_old() {  # the image a rebuild superseded, if nothing else uses it
  [ -z "$1" ] || [ "$1" = "$(image_id "$2")" ] || docker image rm "$1" >/dev/null 2>&1 || true
}

# A digest of files (contents and modes), stable across checkouts.
digest() {
  find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z |
    xargs -0 stat -c '%a %n' | sha256sum | cut -c1-16
  find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z |
    xargs -0 cat | sha256sum | cut -c1-16
}

build_base() {
  [ "$(label "$BASE" autoscorer.recipe)" = "$BASE_RECIPE" ] && return 0
  local tarball="$CACHE/base-python-3.11-bookworm-r$BASE_RECIPE.tar" old
  mkdir -p "$CACHE"
  if [ ! -s "$tarball" ]; then
    # minbase keeps apt, which deploy/Dockerfile runs. The build host's CA certificates are
    # added to the image's trust store: HTTPS to PyPI may pass a TLS-inspecting proxy here.
    # policy-rc.d refuses to start services, as in Debian's own images: a package's postinst
    # (rabbitmq-server, prometheus) must not start a daemon in a build step on the host network.
    quiet mmdebstrap --variant=minbase --include="$BASE_PACKAGES" --skip=chroot/policy-rc.d \
      --customize-hook='printf "#!/bin/sh\nexit 101\n" >"$1/usr/sbin/policy-rc.d"' \
      --customize-hook='chmod 0755 "$1/usr/sbin/policy-rc.d"' \
      --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/usr/local/share/ca-certificates/build-host.crt"' \
      --customize-hook='chroot "$1" update-ca-certificates' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
      --mode=root bookworm "$CACHE/partial-base.tar"  # the .tar suffix selects the format
    mv "$CACHE/partial-base.tar" "$tarball"
  fi
  old="$(image_id "$BASE")"
  quiet docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    -c "LABEL autoscorer.recipe=$BASE_RECIPE" "$tarball" "$BASE"
  drop_old "$old" "$BASE"
}

# build REF INPUTS DOCKER-BUILD-ARGS...: docker build unless REF carries the INPUTS label.
build() {
  local ref="$1" inputs="$2" old
  shift 2
  [ "$(label "$ref" autoscorer.inputs)" = "$inputs" ] && return 0
  old="$(image_id "$ref")"
  # The build steps run in dockerd's containers, outside this script's nice level: one core at
  # most, so that the tests running meanwhile keep the other.
  quiet docker build --network host --force-rm --cpu-period 100000 --cpu-quota 100000 \
    --build-arg "BASE=$BASE" --label "autoscorer.inputs=$inputs" -t "$ref" "$@"
  drop_old "$old" "$ref"
}

inputs() {  # the base image id and a digest of the given files
  { image_id "$BASE"; digest "$@"; } | sha256sum | cut -c1-16
}

build_app() {
  local inputs
  inputs="$(inputs deploy/Dockerfile .dockerignore deploy/autoscorer-service pyproject.toml README.md shared services)"
  # The build stage under a tag of its own: the classic builder would leave it untagged (one
  # ~700 MB leftover per rebuild); tagged, a rebuild replaces it and drop_old removes the last.
  build "autoscorer-ci/build-stage:$VERSION" "$inputs" \
    --build-arg "PYTHON_IMAGE=$BASE" -f deploy/Dockerfile --target build .
  build "autoscorer:$VERSION" "$inputs" --build-arg "PYTHON_IMAGE=$BASE" -f deploy/Dockerfile .
}

build_mongo() {
  if [ ! -x "$FERRETDB" ]; then
    log "no FerretDB binary at $FERRETDB: run scripts/provision/ferretdb.sh first"
    return 1
  fi
  local ref=autoscorer-ci/mongo:ferretdb-1.24 inputs context
  inputs="$(inputs deploy/compose/mongo "$FERRETDB")"
  [ "$(label "$ref" autoscorer.inputs)" = "$inputs" ] && return 0
  context="$(mktemp -d)"
  cp -p deploy/compose/mongo/* "$FERRETDB" "$context/"
  build "$ref" "$inputs" "$context"
  rm -rf "$context"
}

main() {
  docker version >/dev/null 2>&1 || { log "the Docker engine does not answer"; return 1; }
  command -v mmdebstrap >/dev/null || {
    log "mmdebstrap is missing (scripts/provision/docker.sh installs it)"
    return 1
  }
  build_base
  build_app
  build autoscorer-ci/rabbitmq:3.10 "$(inputs deploy/compose/rabbitmq)" deploy/compose/rabbitmq
  build_mongo
  build autoscorer-ci/prometheus:2.42 "$(inputs deploy/compose/prometheus)" deploy/compose/prometheus
  build autoscorer-ci/standin:1 "$(inputs deploy/compose/standin)" deploy/compose/standin
}

main "$@"
