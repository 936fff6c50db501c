#!/bin/sh
# As the official image does: the default user from RABBITMQ_DEFAULT_USER/_PASS, written as a
# conf.d file of its own (10-, so that the compose file's 90-autoscorer.conf comes later).
set -eu
if [ -n "${RABBITMQ_DEFAULT_USER:-}" ] && [ -w /etc/rabbitmq/conf.d ]; then
  printf 'default_user = %s\ndefault_pass = %s\nloopback_users = none\n' \
    "$RABBITMQ_DEFAULT_USER" "${RABBITMQ_DEFAULT_PASS:?}" >/etc/rabbitmq/conf.d/10-defaults.conf
fi
exec "$@"
