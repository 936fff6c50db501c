#!/usr/bin/env bash
# Provision a Docker engine and the locally built test images for AutoScorer's Docker executor.
#
# For a fresh Debian 12 machine, run as root. Idempotent: every step is skipped when already done,
# and the script is quiet unless something fails. No container registry is needed:
#   - autoscorer-test/busybox:1    busybox-static plus its applet links (about 1 s)
#   - autoscorer-test/python:3.11  mmdebstrap'ed bookworm with python3 + numpy (tarball cached)
# Environment: AUTOSCORER_CACHE (default $HOME/.cache/autoscorer), DOCKERD_LOG (default
# /var/log/dockerd.log), DOCKER_WAIT_S (default 60).
set -euo pipefail

CACHE="${AUTOSCORER_CACHE:-${HOME:-/root}/.cache/autoscorer}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
DOCKER_WAIT_S="${DOCKER_WAIT_S:-60}"
PACKAGES=(docker.io busybox-static mmdebstrap)

log() { echo "provision/docker: $*" >&2; }

. "$(dirname "$0")/lib.sh"  # quiet, find_go

install_packages() {
  local missing=()
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
    quiet apt-get update -qq -o DPkg::Lock::Timeout=600
  fi
  DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}"
}

engine_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_engine() {
  engine_answers && return 0
  log "starting dockerd (log: $DOCKERD_LOG)"
  nohup dockerd --iptables=false --bridge=none >"$DOCKERD_LOG" 2>&1 </dev/null &
  local waited=0
  until engine_answers; do
    sleep 0.5
    waited=$((waited + 1))
    if [ "$waited" -ge $((DOCKER_WAIT_S * 2)) ]; then
      log "dockerd did not answer within ${DOCKER_WAIT_S}s"
      tail -n 30 "$DOCKERD_LOG" >&2 || true
      return 1
    fi
  done
}

# An image is current when it exists with the recipe version this script builds (bump to rebuild).
image_current() {
  [ "$(docker image inspect -f '{{index .Config.Labels "autoscorer.recipe"}}' "$1" 2>/dev/null)" = "$2" ]
}

# After a rebuild, drop the superseded image (if nothing else uses it) so rebuilds leave no debris.
drop_old() { [ -z "$1" ] || docker image rm "$1" >/dev/null 2>&1 || true; }
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

build_busybox() {
  local ref=autoscorer-test/busybox:1 recipe=2
  image_current "$ref" "$recipe" && return 0
  local old dir
  old="$(image_id "$ref")"
  dir="$(mktemp -d)"
  mkdir -p "$dir/bin" "$dir/tmp" "$dir/workspace"
  chmod 1777 "$dir/tmp"  # as in every distribution image; Docker copies it up to the /tmp tmpfs
  cp /bin/busybox "$dir/bin/busybox"
  local applet
  for applet in $("$dir/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
  done
  tar -C "$dir" -c . |
    quiet docker import -c 'ENV PATH=/bin' -c "LABEL autoscorer.recipe=$recipe" - "$ref"
  rm -rf "$dir"
  drop_old "$old"
}

build_python() {
  local ref=autoscorer-test/python:3.11 recipe=1
  image_current "$ref" "$recipe" && return 0
  local old
  old="$(image_id "$ref")"
  local tarball="$CACHE/python-3.11-numpy-bookworm.tar"
  mkdir -p "$CACHE"
  if [ ! -s "$tarball" ]; then
    quiet mmdebstrap --variant=essential --include=python3-minimal,python3-numpy \
      --mode=root bookworm "$CACHE/partial-python.tar"  # the .tar suffix selects the format
    mv "$CACHE/partial-python.tar" "$tarball"
  fi
  quiet docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c "LABEL autoscorer.recipe=$recipe" "$tarball" "$ref"
  drop_old "$old"
}

main() {
  if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (installs packages and starts dockerd)"
    exit 1
  fi
  install_packages
  start_engine
  build_busybox
  build_python
}

main "$@"
