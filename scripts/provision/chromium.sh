#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for AutoScorer's report check (Debian 12, run as root):
# tests/report/test_report_browser.py opens output/report.html in /usr/bin/chromium --headless and
# talks to it over the DevTools protocol (no chromium-driver needed).
#
# Idempotent and quiet: nothing is done when /usr/bin/chromium already runs; apt-get output is shown
# only when the install fails.
set -euo pipefail

log() { printf 'provision/chromium: %s\n' "$*" >&2; }

if [ -x /usr/bin/chromium ] && /usr/bin/chromium --version >/dev/null 2>&1; then
    log "chromium present: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
    exit 0
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
update() {
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=600 update -qq >"$out" 2>&1 || { cat "$out" >&2; exit 1; }
}
install() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends chromium fonts-dejavu-core >"$out" 2>&1
}
compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null || update
log "installing chromium"
if ! install; then
    update  # stale package lists name versions the mirror no longer has: refresh once, retry
    install || { cat "$out" >&2; exit 1; }
fi
/usr/bin/chromium --version >/dev/null 2>&1
log "chromium installed: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
