#!/bin/sh
# healthcheck -- container health: a protocol Ping to the statesaver server.
# In a server container that is the local server (port of $STATESAVER_LISTEN);
# set STATESAVER_HEALTH_SERVER to ping another address (e.g. from a worker,
# whose health is that of its server). With STATESAVER_AUTH_TOKEN_FILE set
# (a server with --auth-token-file) the Ping presents that token.
# Exit 0 healthy, 1 not. The HTTP /healthz of --metrics-listen will be an
# alternative once it exists.
set -u
port=${STATESAVER_LISTEN##*:}
target=${STATESAVER_HEALTH_SERVER:-127.0.0.1:${port:-7450}}
if [ -n "${STATESAVER_AUTH_TOKEN_FILE:-}" ]; then
  set -- --token-file "$STATESAVER_AUTH_TOKEN_FILE"
fi
timeout 4 statesaver --server "$target" --timeout-ms 3000 "$@" ping >/dev/null 2>&1 || exit 1
exit 0
