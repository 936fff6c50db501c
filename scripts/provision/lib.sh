# Helpers the provision scripts share; source it after defining log(), e.g.
#   . "$(dirname "$0")/lib.sh"

quiet() {  # run a command, print its output only when it fails
  local out
  if ! out="$("$@" 2>&1)"; then
    log "failed: $*"
    echo "$out" >&2
    return 1
  fi
}

find_go() {  # the Go toolchain: on PATH or in /usr/local/go/bin
  if command -v go >/dev/null 2>&1; then
    command -v go
  elif [ -x /usr/local/go/bin/go ]; then
    echo /usr/local/go/bin/go
  else
    log "no Go toolchain on PATH or in /usr/local/go/bin: install Go >= 1.22 first"
    return 1
  fi
}
