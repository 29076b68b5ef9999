#!/bin/sh
# test-image -- build the statesaver container image for real and run it.
#
# Engine: Docker when `docker info` works; otherwise buildah with chroot
# isolation (installed with apt-get when missing). Without a reachable
# registry the debian:bookworm-slim base is made by debootstrap and
# `podman import` (deploy/make-base.sh, cached in /var/cache/statesaver).
#
# Then, all on 127.0.0.1 with host networking:
#   1. the image runs as its non-root user, has the three programs, their
#      shared libraries and the default model;
#   2. the server starts from the image on an ephemeral port with /data on a
#      host directory; `statesaver ping` answers from the host build and from
#      inside the image, and the image's HEALTHCHECK command succeeds; its
#      metrics endpoint (ephemeral port) answers /healthz, /readyz and a
#      /metrics that the host's strict exposition parser accepts;
#   3. states saved from the host (Python client) survive a server restart
#      from the image on the same /data;
#   4. two workers (`statesaver-worker serve`) from the image run a submit
#      from the host; the outputs equal a whole-sequence unroll in the image.
# Everything it created (containers, the image, temp dirs) is removed; the
# base image and the build's layer cache are kept so reruns are fast
# (SS_IMAGE_PRUNE=1 prunes the layer cache too).
#
# Usage: deploy/test-image.sh      exit 0 pass, 1 fail, 77 skipped (no engine)
set -eu
cd "$(dirname "$0")/.."
src=$PWD
t0=$(date +%s)
say() { echo "test-image: $*" >&2; }
die() { say "FAIL: $*"; exit 1; }

tag=localhost/statesaver:test-$$
work=$(mktemp -d /tmp/ss-image-test.XXXXXX)
pids=""
ctrs=""
engine=""

cleanup() {
  rc=$?
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  if [ "$engine" = buildah ]; then
    for c in $ctrs; do buildah rm "$c" >/dev/null 2>&1 || true; done
    buildah rmi "$tag" >/dev/null 2>&1 || true
    [ "${SS_IMAGE_PRUNE:-0}" = 1 ] && buildah rmi --prune >/dev/null 2>&1 || true
  elif [ "$engine" = docker ]; then
    for c in $ctrs; do docker rm -f "$c" >/dev/null 2>&1 || true; done
    docker rmi "$tag" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  [ $rc -eq 0 ] && say "passed in $(( $(date +%s) - t0 )) s"
  exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ---- engine ------------------------------------------------------------------
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  engine=docker
else
  need=""
  for p in buildah podman debootstrap; do
    command -v $p >/dev/null 2>&1 || need="$need $p"
  done
  if [ -n "$need" ]; then
    if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; then
      sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
      say "no Docker engine; installing$need"
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
        buildah podman debootstrap >"$work/apt.log" 2>&1 ||
        { $sudo apt-get update -q >/dev/null 2>&1 &&
          DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
            buildah podman debootstrap >"$work/apt.log" 2>&1; } ||
        { tail -n 5 "$work/apt.log" >&2
          say "SKIP: no Docker engine, and buildah/podman/debootstrap cannot be installed"
          exit 77; }
    else
      say "SKIP: no Docker engine, and buildah is missing with no root or sudo to install it"
      exit 77
    fi
  fi
  engine=buildah
fi
say "engine: $engine"

# ---- base image ----------------------------------------------------------------
base=docker.io/library/debian:bookworm-slim
if [ "$engine" = buildah ]; then
  if podman image exists "$base"; then
    say "base $base present"
  elif timeout 60 podman pull -q "$base" >/dev/null 2>&1; then
    say "base $base pulled"
  else
    say "no registry reachable: making $base with debootstrap"
    deploy/make-base.sh
  fi
fi

# ---- build ---------------------------------------------------------------------
tb=$(date +%s)
say "building $tag (log: build.log in $work while running)"
if [ "$engine" = docker ]; then
  docker build -f deploy/Dockerfile -t "$tag" . >"$work/build.log" 2>&1 ||
    { tail -n 40 "$work/build.log" >&2; die "docker build failed"; }
else
  buildah bud --isolation chroot --layers --force-rm --pull=never -f deploy/Dockerfile -t "$tag" . \
    >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; die "buildah bud failed"; }
fi
build_s=$(( $(date +%s) - tb ))
if [ "$engine" = buildah ]; then
  size=$(buildah images --format '{{.Size}}' "$tag" 2>/dev/null | head -n1)
else
  size=$(docker image inspect --format '{{.Size}}' "$tag" 2>/dev/null)
fi
say "image built in ${build_s} s, size ${size:-unknown}"

# ---- helpers: run the image ----------------------------------------------------
data=$work/data
mkdir -p "$data" "$work/jobs"
chown 10001:10001 "$data" "$work/jobs" 2>/dev/null || chmod 0777 "$data" "$work/jobs"
n=0
# new_ctr NAME: sets $ctr to a new container name for the image (a buildah
# working container; a docker --name). Not in a subshell: $ctrs must grow.
new_ctr() {
  n=$((n + 1))
  ctr=ss-test-$$-$1-$n
  if [ "$engine" = buildah ]; then
    buildah from --pull=never --name "$ctr" "$tag" >/dev/null
  fi
  ctrs="$ctrs $ctr"
}
# run_image NAME [ENV=V...] -- CMD...: exec CMD in the image with /data and
# /jobs mounted and host networking (replaces the calling (sub)shell).
run_image() {
  name=$1; shift
  envs=""
  while [ "$1" != "--" ]; do envs="$envs --env $1"; shift; done
  shift
  if [ "$engine" = buildah ]; then
    # shellcheck disable=SC2086
    exec buildah run --isolation chroot --network host -v "$data:/data" -v "$work/jobs:/jobs" \
      $envs "$name" -- "$@"
  else
    # shellcheck disable=SC2086
    exec docker run --rm --name "$name" --network host -v "$data:/data" -v "$work/jobs:/jobs" \
      $envs --entrypoint "" "$tag" "$@"
  fi
}
in_image() { ( run_image "$@" ); }
# start_bg NAME LOG [ENV=V...] -- CMD...: run_image in the background; the
# engine's client process is $last_pid (it stops the container on SIGTERM).
start_bg() {
  name=$1; logf=$2; shift 2
  run_image "$name" "$@" >"$logf" 2>&1 &
  last_pid=$!
  pids="$pids $last_pid"
}
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  pids=$(echo "$pids" | tr ' ' '\n' | grep -vx "$1" | tr '\n' ' ')
}

# ---- 1. the image as built -------------------------------------------------------
new_ctr probe
probe=$ctr
uid=$(in_image "$probe" -- id -u)
[ "$uid" = 10001 ] || die "image runs as uid $uid, want 10001 (non-root)"
in_image "$probe" -- sh -c 'statesaver-server --version && statesaver-worker --version &&
  statesaver --version && test -s "$STATESAVER_MODEL" && test -d /data' >"$work/probe.log" 2>&1 ||
  { cat "$work/probe.log" >&2; die "programs, libraries or default model missing in the image"; }
say "image: uid $uid, $(head -n1 "$work/probe.log"), default model present"

# ---- 2. server from the image ------------------------------------------------------
start_server() {
  rm -f "$data/port" "$data/mport"
  new_ctr server
  srv=$ctr
  # Host networking: ephemeral ports, not the image's default :9450.
  start_bg "$srv" "$work/server.log" -- statesaver-entrypoint statesaver-server \
    --listen 127.0.0.1:0 --port-file /data/port \
    --metrics-listen 127.0.0.1:0 --metrics-port-file /data/mport
  server_pid=$last_pid
  i=0
  while [ ! -s "$data/port" ] || [ ! -s "$data/mport" ]; do
    i=$((i + 1))
    [ $i -gt 200 ] && { cat "$work/server.log" >&2; die "server did not start within 20 s"; }
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; die "server exited"; }
    sleep 0.1
  done
  port=$(cat "$data/port")
  mport=$(cat "$data/mport")
  addr=127.0.0.1:$port
}
start_server
say "server from the image listening on $addr"

host_cli=""
for b in "${SS_BUILD_ROOT:-}" build; do
  [ -n "$b" ] && [ -x "$b/client/statesaver" ] && { host_cli=$b/client/statesaver; break; }
done
if [ -n "$host_cli" ]; then
  "$host_cli" --server "$addr" ping >/dev/null || die "ping from the host ($host_cli) failed"
  say "ping from the host build: ok"
else
  say "no host build of the CLI; ping checked from inside the image only"
fi
in_image "$probe" -- statesaver --server "$addr" ping >/dev/null || die "ping from the image failed"
in_image "$probe" "STATESAVER_HEALTH_SERVER=$addr" -- statesaver-healthcheck ||
  die "the image's HEALTHCHECK command failed against a live server"
say "ping and HEALTHCHECK from inside the image: ok"
/usr/bin/python3 - "$mport" <<'PYEOF' || die "metrics endpoint of the server in the image"
import sys, urllib.request
sys.path.insert(0, "tests/metrics")
from test_metrics_e2e import parse_exposition, value
base = "http://127.0.0.1:%s" % sys.argv[1]
for path in ("/healthz", "/readyz"):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        assert r.status == 200, (path, r.status)
with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
    fams = parse_exposition(r.read().decode())
pings = value(fams, "statesaver_requests_total", op="ping", code="OK")
assert pings and pings >= 1, "no ping counted: %r" % pings
print("test-image: metrics: %d families, %d pings counted" % (len(fams), pings), file=sys.stderr)
PYEOF

# ---- 3. durable /data across a restart ------------------------------------------------
protoc --proto_path=proto --python_out="$work" proto/statesaver.proto ||
  die "protoc (protobuf-compiler) is needed for the host-side Python client"
export STATESAVER_PB2_DIR="$work" SS_SOURCE_ROOT="$src"
py=/usr/bin/python3
$py tests/deploy/image_client.py "$addr" save "$work/saved.npz" || die "save from the host failed"
stop_pid "$server_pid"
in_image "$probe" "STATESAVER_HEALTH_SERVER=$addr" -- statesaver-healthcheck 2>/dev/null &&
  die "HEALTHCHECK still succeeds with the server stopped"
[ -s "$data/data.mdb" ] || die "no LMDB file in the /data volume after the server stopped"
start_server
$py tests/deploy/image_client.py "$addr" check "$work/saved.npz" || die "states lost across restart"

# ---- 4. two workers from the image, a submit from the host --------------------------
if in_image "$probe" -- statesaver-worker serve --help >/dev/null 2>&1; then
  for w in 1 2; do
    new_ctr worker
    wc=$ctr
    start_bg "$wc" "$work/worker$w.log" "STATESAVER_SERVER=$addr" STATESAVER_SAVER=image-jobs \
      STATESAVER_BATCH=2 -- statesaver-entrypoint statesaver-worker serve
  done
  chmod 0777 "$work/jobs"
  $py tests/deploy/image_client.py "$addr" jobs "$work/jobs" ||
    { tail -n 20 "$work"/worker*.log >&2; die "submit/await through the workers failed"; }
  # The compose file's one-shot demo client, run from the image.
  in_image "$probe" "STATESAVER_SERVER=$addr" STATESAVER_SAVER=image-jobs \
    STATESAVER_DEMO_KEY=demo STATESAVER_DEMO_OUTPUTS=/jobs/demo-out TMPDIR=/jobs \
    -- statesaver-demo >"$work/demo.log" 2>&1 || { cat "$work/demo.log" >&2; die "statesaver-demo failed"; }
  $py tests/deploy/image_client.py - demo "$work/jobs" || die "statesaver-demo outputs missing"
  say "statesaver-demo from the image: ok"
  for x in "$work"/jobs/x-*.npy; do
    k=${x##*/x-}; k=${k%.npy}
    in_image "$probe" -- statesaver-worker unroll --model /opt/statesaver/models/default.safetensors \
      --inputs "/jobs/x-$k.npy" --outputs "/jobs/u-$k.npy" || die "unroll in the image failed"
  done
  $py tests/deploy/image_client.py - compare "$work/jobs" || die "job outputs differ from unroll"
else
  die "statesaver-worker serve is missing from the image"
fi

say "image build ${build_s} s (engine $engine)"
