#!/bin/sh
# entrypoint -- container entry point: fill in statesaver flags from
# STATESAVER_* environment variables when the command line does not give them.
#   statesaver-server            --listen $STATESAVER_LISTEN --data $STATESAVER_DATA
#                                --sync $STATESAVER_SYNC [--auth-token-file $STATESAVER_AUTH_TOKEN_FILE]
#                                [--metrics-listen $STATESAVER_METRICS_LISTEN]
#                                [--etcd $STATESAVER_ETCD --cluster $STATESAVER_CLUSTER
#                                 --shard $STATESAVER_SHARD --advertise $STATESAVER_ADVERTISE
#                                 --topology-init $STATESAVER_TOPOLOGY_INIT]
#   statesaver-worker serve      --server $STATESAVER_SERVER --model $STATESAVER_MODEL
#                                --saver $STATESAVER_SAVER --batch $STATESAVER_BATCH
#                                [--token-file $STATESAVER_AUTH_TOKEN_FILE]
#                                [--metrics-listen $STATESAVER_WORKER_METRICS_LISTEN]
# An empty or unset *_METRICS_LISTEN leaves the HTTP metrics endpoint off.
# Cluster (docs/cluster.md): in STATESAVER_SHARD and STATESAVER_ADVERTISE,
# {ordinal} becomes the number ending the host name (a StatefulSet pod's
# ordinal: statesaver-shard-2 -> 2) and {hostname} the host name, so every
# pod of one StatefulSet gets its own shard id and address.
#   statesaver ...               reads STATESAVER_SERVER itself
# Any other command runs unchanged (e.g. `sh`).
set -eu

has() {  # has FLAG ARGS...: is --flag (or --flag=...) among ARGS?
  flag=$1; shift
  for a in "$@"; do
    case "$a" in "$flag"|"$flag"=*) return 0 ;; esac
  done
  return 1
}

expand() {  # expand TEXT: {hostname} and {ordinal} filled in
  host=$(hostname)
  ord=$(printf '%s' "$host" | sed -n 's/.*[^0-9]\([0-9][0-9]*\)$/\1/p')
  printf '%s' "$1" | sed -e "s/{hostname}/$host/g" -e "s/{ordinal}/${ord:-0}/g"
}

[ $# -eq 0 ] && set -- statesaver-server
cmd=$1
case "$cmd" in
  statesaver-server)
    shift
    has --listen "$@" || set -- --listen "$STATESAVER_LISTEN" "$@"
    has --data "$@" || set -- --data "$STATESAVER_DATA" "$@"
    has --sync "$@" || set -- --sync "$STATESAVER_SYNC" "$@"
    if [ -n "${STATESAVER_AUTH_TOKEN_FILE:-}" ] && ! has --auth-token-file "$@"; then
      set -- --auth-token-file "$STATESAVER_AUTH_TOKEN_FILE" "$@"
    fi
    if [ -n "${STATESAVER_METRICS_LISTEN:-}" ] && ! has --metrics-listen "$@"; then
      set -- --metrics-listen "$STATESAVER_METRICS_LISTEN" "$@"
    fi
    if [ -n "${STATESAVER_ETCD:-}" ] && ! has --etcd "$@"; then
      set -- --etcd "$STATESAVER_ETCD" "$@"
    fi
    if [ -n "${STATESAVER_CLUSTER:-}" ] && ! has --cluster "$@"; then
      set -- --cluster "$STATESAVER_CLUSTER" "$@"
    fi
    if [ -n "${STATESAVER_SHARD:-}" ] && ! has --shard "$@"; then
      set -- --shard "$(expand "$STATESAVER_SHARD")" "$@"
    fi
    if [ -n "${STATESAVER_ADVERTISE:-}" ] && ! has --advertise "$@"; then
      set -- --advertise "$(expand "$STATESAVER_ADVERTISE")" "$@"
    fi
    if [ -n "${STATESAVER_TOPOLOGY_INIT:-}" ] && ! has --topology-init "$@"; then
      set -- --topology-init "$STATESAVER_TOPOLOGY_INIT" "$@"
    fi
    exec statesaver-server "$@"
    ;;
  statesaver-worker)
    if [ "${2:-}" = serve ]; then
      shift 2
      has --server "$@" || set -- --server "$STATESAVER_SERVER" "$@"
      has --model "$@" || set -- --model "$STATESAVER_MODEL" "$@"
      has --saver "$@" || set -- --saver "$STATESAVER_SAVER" "$@"
      has --batch "$@" || set -- --batch "$STATESAVER_BATCH" "$@"
      if [ -n "${STATESAVER_AUTH_TOKEN_FILE:-}" ] && ! has --token-file "$@"; then
        set -- --token-file "$STATESAVER_AUTH_TOKEN_FILE" "$@"
      fi
      if [ -n "${STATESAVER_WORKER_METRICS_LISTEN:-}" ] && ! has --metrics-listen "$@"; then
        set -- --metrics-listen "$STATESAVER_WORKER_METRICS_LISTEN" "$@"
      fi
      exec statesaver-worker serve "$@"
    fi
    exec "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
