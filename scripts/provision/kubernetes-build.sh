#!/usr/bin/env bash
# Build what scripts/provision/kubernetes.sh starts: one multi-call binary holding etcd 3.6.8,
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl 1.36.3 (Go module
# deploy/k8s-cluster/; `kubectl` is a symlink to it), and kwok 0.8.0, which plays the kubelet.
# Both go to ~/.cache/autoscorer, outside the repository.
#
# Idempotent: a build is skipped when the cached binary was made from the same go.mod, go.sum and
# main.go (their hash names the cache folder), and kwok when `kwok --version` says v0.8.0.
# Needs only Go and the module proxy; scripts/test.sh runs it in the background at nice 19.
# Cold: about 6-8 minutes and 2.3 GB RAM at link time on 2 cores.
set -euo pipefail

log() { printf 'provision/kubernetes-build: %s\n' "$*" >&2; }

repo="$(cd "$(dirname "$0")/../.." && pwd)"
module="$repo/deploy/k8s-cluster"
cache="${AUTOSCORER_CACHE:-$HOME/.cache/autoscorer}"
k8s_version=v1.36.3
kwok_version=v0.8.0

command -v go >/dev/null || { log "go is not on the PATH"; exit 1; }

# The cluster binary: the folder name is the hash of its sources, so an edit forces a rebuild.
src_hash="$(cat "$module/go.mod" "$module/go.sum" "$module/main.go" | sha256sum | cut -c1-16)"
out_dir="$cache/k8s-cluster/$k8s_version-$src_hash"
binary="$out_dir/k8s-cluster"
if [ -x "$binary" ] && [ "$("$binary" version 2>/dev/null)" = "$k8s_version" ]; then
    log "cached: $binary"
else
    log "building $binary (a cold build takes about 6-8 minutes)"
    mkdir -p "$out_dir"
    start=$(date +%s)
    ver=k8s.io/component-base/version
    ldflags="-s -w -X $ver.gitVersion=$k8s_version -X $ver.gitMajor=1 -X $ver.gitMinor=36"
    ldflags="$ldflags -X $ver.gitTreeState=clean -X $ver.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    (cd "$module" && GOFLAGS=-mod=readonly CGO_ENABLED=0 \
        go build -trimpath -ldflags "$ldflags" -o "$binary.tmp" .)
    mv "$binary.tmp" "$binary"
    log "built in $(( $(date +%s) - start ))s: $(du -h "$binary" | cut -f1)"
fi
ln -sfn k8s-cluster "$out_dir/kubectl"
ln -sfn "$out_dir" "$cache/k8s-cluster/current"
for old in "$cache"/k8s-cluster/v*; do  # binaries of earlier sources: 130 MB each
    [ "$old" = "$out_dir" ] || rm -rf "$old"
done

# kwok: the lead's machine setup may already have built it into the same folder.
kwok="$cache/gobin-kwok/kwok"
if [ -x "$kwok" ] && "$kwok" --version 2>/dev/null | grep -q "version $kwok_version "; then
    log "cached: $kwok"
else
    log "building kwok $kwok_version (about 80 s)"
    mkdir -p "$cache/gobin-kwok"
    GOBIN="$cache/gobin-kwok" CGO_ENABLED=0 go install "sigs.k8s.io/kwok/cmd/kwok@$kwok_version"
fi
log "ready: $cache/k8s-cluster/current/k8s-cluster and $kwok"
