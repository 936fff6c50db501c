#!/usr/bin/env bash
# Install Prometheus's promtool for AutoScorer's tests (Debian 12, run as root): the tests run
# `promtool check config` and `promtool test rules` on deploy/prometheus/.
#
# Idempotent: nothing is done when promtool is already on the PATH. Debian's `prometheus`
# package brings promtool and the server binary; no server is started here.
set -euo pipefail

log() { printf 'provision/prometheus: %s\n' "$*" >&2; }

if command -v promtool >/dev/null 2>&1; then
    log "promtool present: $(promtool --version 2>&1 | head -n 1)"
    exit 0
fi
if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    log "apt-get update"
    apt-get update -qq
fi
log "installing the prometheus package (promtool)"
# policy-rc.d 101: the package's maintainer scripts must not start a server on this machine
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
[ "$created_policy" = 1 ] && rm -f "$policy"
command -v promtool >/dev/null
log "promtool installed: $(promtool --version 2>&1 | head -n 1)"
