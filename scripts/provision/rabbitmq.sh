#!/usr/bin/env bash
# Install and start a local RabbitMQ broker for AutoScorer's tests (Debian 12, run as root).
#
# Idempotent: every step is skipped when it is already done, so the README test command can
# call it on every run. Leaves guest/guest listening on 127.0.0.1:5672.
set -euo pipefail

HOST=127.0.0.1
PORT=5672

log() { printf 'provision/rabbitmq: %s\n' "$*" >&2; }

answering() {
    # Not just a TCP connect: send the AMQP 0-9-1 protocol header and expect the broker's
    # Connection.Start frame (type 1). A wedged node still accepts TCP but never answers.
    local first
    first=$(timeout 5 bash -c "exec 3<>/dev/tcp/${HOST}/${PORT} && printf 'AMQP\\x00\\x00\\x09\\x01' >&3 && head -c 1 <&3 | od -An -tu1" 2>/dev/null | tr -d ' ')
    [ "$first" = "1" ]
}

wedged() {
    # TCP open but no AMQP greeting: a node that stopped serving (seen after app restarts
    # under load on RabbitMQ 3.10). Only a throwaway test broker is ever reset this way.
    (exec 3<>"/dev/tcp/${HOST}/${PORT}") 2>/dev/null && ! answering
}

apt_lists_present() {
    compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null
}

install_server() {
    if command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ]; then
        log "rabbitmq-server already installed"
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt_lists_present || ! apt-cache show rabbitmq-server >/dev/null 2>&1; then
        log "apt-get update"
        apt-get update -q
    fi
    log "apt-get install rabbitmq-server"
    # policy-rc.d-less containers may try to start the service; tolerate a failed start here,
    # the start step below starts it detached.
    apt-get install -y -q --no-install-recommends rabbitmq-server
}

start_server() {
    if answering; then
        log "broker already answering on ${HOST}:${PORT}"
        return
    fi
    export PATH="/usr/sbin:/usr/lib/rabbitmq/bin:${PATH}"
    if wedged; then
        log "broker accepts TCP but does not speak AMQP: killing it and starting afresh"
        pkill -9 -f 'beam.smp.*rabbit' || true
        pkill -9 -x epmd || true
        sleep 1
        rm -rf /var/lib/rabbitmq/mnesia/*
    elif timeout 20 rabbitmqctl -q ping >/dev/null 2>&1; then
        # The Erlang node runs but the app is stopped (e.g. an interrupted restart test).
        log "node is up with the app stopped: rabbitmqctl start_app"
        rabbitmqctl start_app >/dev/null || true  # a node still booting refuses; await below
        return
    fi
    log "starting rabbitmq-server -detached"
    ulimit -n 65536 2>/dev/null || true  # quorum queues and test churn need more than 1024 fds
    rabbitmq-server -detached
}

await_startup() {
    export PATH="/usr/sbin:/usr/lib/rabbitmq/bin:${PATH}"
    # `rabbitmq-server -detached` returns before the node registers: wait until it answers pings.
    for _ in $(seq 1 60); do
        rabbitmqctl -q ping >/dev/null 2>&1 && break
        sleep 1
    done
    log "rabbitmqctl await_startup"
    rabbitmqctl await_startup --timeout 120 >/dev/null
    for _ in $(seq 1 60); do
        if answering; then
            log "ready on ${HOST}:${PORT}"
            return
        fi
        sleep 1
    done
    log "broker started but ${HOST}:${PORT} does not answer"
    exit 1
}

install_server
start_server
await_startup
