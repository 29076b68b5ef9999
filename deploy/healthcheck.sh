#!/bin/sh
# healthcheck -- container health: a protocol Ping to the statesaver server.
# In a server container that is the local server (port of $STATESAVER_LISTEN);
# set STATESAVER_HEALTH_SERVER to ping another address (e.g. from a worker,
# whose health is that of its server). Exit 0 healthy, 1 not.
# The HTTP /healthz of --metrics-listen will be an alternative once it exists.
set -u
port=${STATESAVER_LISTEN##*:}
target=${STATESAVER_HEALTH_SERVER:-127.0.0.1:${port:-7450}}
timeout 4 statesaver --server "$target" ping >/dev/null 2>&1 || exit 1
exit 0
