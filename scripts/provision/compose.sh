#!/usr/bin/env bash
# Build (once) Docker Compose v2 from the Go module proxy and install it as a Docker CLI plugin,
# so `docker compose ...` works with Debian's docker.io (which ships only Compose v1).
#
# Idempotent and quiet unless something fails: a cached binary that reports the wanted version is
# only (re)linked into the plugin folder. Environment (all optional):
#   AUTOSCORER_COMPOSE_VERSION  module version to build          (default v2.28.1)
#   AUTOSCORER_CACHE            cache folder                     (default ~/.cache/autoscorer)
#   DOCKER_CLI_PLUGINS          plugin folder                    (default /usr/local/lib/docker/cli-plugins
#                                                                 as root, else ~/.docker/cli-plugins)
#
# v2.35 and later cannot be built with `go install`: their go.mod has `exclude` directives.
# First build: about 4 minutes on 2 cores (1.5 with a warm Go cache); later runs: well under 1 s.
set -euo pipefail

MODULE=github.com/docker/compose/v2
VERSION="${AUTOSCORER_COMPOSE_VERSION:-v2.28.1}"
CACHE="${AUTOSCORER_CACHE:-${HOME:-/root}/.cache/autoscorer}"
BIN_DIR="$CACHE/compose-$VERSION"
BIN="$BIN_DIR/docker-compose"
if [ "$(id -u)" -eq 0 ]; then
  PLUGINS="${DOCKER_CLI_PLUGINS:-/usr/local/lib/docker/cli-plugins}"
else
  PLUGINS="${DOCKER_CLI_PLUGINS:-${HOME}/.docker/cli-plugins}"
fi

log() { echo "provision/compose: $*" >&2; }

. "$(dirname "$0")/lib.sh"  # quiet, find_go


# `docker-compose version --short` prints the version set at link time (without the leading v).
current() { [ -x "$BIN" ] && [ "$("$BIN" version --short 2>/dev/null)" = "${VERSION#v}" ]; }

build() {
  current && return 0
  local go_bin tmp
  go_bin="$(find_go)"
  tmp="$(mktemp -d)"
  # Without -X the binary calls itself "dev"; release builds set the same variable.
  (cd / && GOBIN="$tmp" GOFLAGS=-buildvcs=false quiet "$go_bin" install -trimpath \
    -ldflags "-s -w -X $MODULE/internal.Version=$VERSION" "$MODULE/cmd@$VERSION")
  mkdir -p "$BIN_DIR"
  mv "$tmp/cmd" "$BIN.tmp"
  rm -rf "$tmp"
  mv "$BIN.tmp" "$BIN"
  current || { log "built $BIN but it does not report $VERSION"; return 1; }
}

install_plugin() {
  mkdir -p "$PLUGINS"
  [ "$(readlink "$PLUGINS/docker-compose" 2>/dev/null)" = "$BIN" ] && return 0
  ln -sfn "$BIN" "$PLUGINS/docker-compose"
}

build
install_plugin
if ! out="$(docker compose version --short 2>&1)" || [ "$out" != "${VERSION#v}" ]; then
  log "docker compose version says: $out (wanted ${VERSION#v})"
  exit 1
fi
