#!/bin/sh
# test_cli -- the `statesaver` CLI against the real server: ping, declare,
# save from .npy, fetch --out (bit-exact round trip), ls, drop, stats
# --json, usage errors (exit 2), runtime errors (exit 1), auth, and small
# bench runs whose --json output must hold the documented keys.
set -eu

ROOT=${SS_BUILD_ROOT:?SS_BUILD_ROOT is not set}
CLI=$ROOT/client/statesaver
SERVER=$ROOT/server/statesaver-server
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ss-cli-test-XXXXXX")
PIDS=""

cleanup() {
  if [ -n "${BPID:-}" ]; then kill "$BPID" 2>/dev/null || true; fi
  for p in $PIDS; do
    kill -CONT "$p" 2>/dev/null || true # a stopped server cannot take SIGTERM
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
  echo "FAIL: $*" >&2
  for f in out err; do
    [ -f "$TMP/$f" ] && { echo "--- $f:" >&2; cat "$TMP/$f" >&2; }
  done
  exit 1
}

# start_server DIR [extra flags...]: sets PORT (not a subshell, so that
# PIDS keeps the server's pid for cleanup).
start_server() {
  d=$1; shift
  mkdir -p "$d"
  "$SERVER" --listen 127.0.0.1:0 --data "$d/data" --port-file "$d/port" \
    --sync off "$@" >"$d/server.log" 2>&1 &
  SPID=$!
  PIDS="$PIDS $SPID"
  i=0
  while [ ! -s "$d/port" ]; do
    i=$((i + 1))
    [ $i -le 400 ] || { cat "$d/server.log" >&2; fail "server did not start"; }
    sleep 0.05
  done
  PORT=$(cat "$d/port")
}

# run WANT_STATUS CMD...: run, keep stdout/stderr in $TMP/out, $TMP/err.
run() {
  want=$1; shift
  set +e
  "$@" >"$TMP/out" 2>"$TMP/err"
  got=$?
  set -e
  [ "$got" -eq "$want" ] || fail "'$*' exited $got, expected $want"
}

contains() { grep -q -- "$2" "$TMP/$1" || fail "$1 of the last command lacks '$2'"; }

start_server "$TMP/s1"
S1PID=$SPID
export STATESAVER_SERVER=127.0.0.1:$PORT

# ---- help, version, usage errors (exit 2)
run 0 "$CLI" --help; contains out "usage: statesaver"
run 0 "$CLI" --version; contains out "statesaver "
for cmd in ping declare fetch save ls drop stats bench; do
  run 0 "$CLI" "$cmd" --help; contains out "usage: statesaver $cmd"
done
run 2 "$CLI"
run 2 "$CLI" bogus; contains err "unknown command"
run 2 "$CLI" --timeout-ms x ping
run 2 "$CLI" declare rnn
run 2 "$CLI" declare rnn --state h:float33:4
run 2 "$CLI" declare rnn --state h:float32:0
run 2 "$CLI" fetch rnn
run 2 "$CLI" save rnn k --state h=x.npy
run 2 "$CLI" drop rnn
run 2 "$CLI" drop rnn k --all
run 2 "$CLI" ls a b
run 2 "$CLI" bench --op nope
run 2 "$CLI" bench --state-bytes 5
run 2 "$CLI" ping --nope
# Numbers are strict (common/ss_parse): no sign, no white space, no suffix.
run 2 "$CLI" --timeout-ms " 5" ping
run 2 "$CLI" --timeout-ms "+5" ping
run 2 "$CLI" ping --count " 2"
run 2 "$CLI" declare rnn --state "h:float32:4x 3"
run 2 "$CLI" declare rnn --state "h:float32:4x+3"
run 2 "$CLI" declare rnn --state "h:float32:4x"
run 2 "$CLI" declare rnn --state h:float32:4 --ttl-ms " -1"
run 2 "$CLI" submit rnn --inputs . --outputs . --num-unroll " 4"

# ---- ping, address forms
run 0 "$CLI" ping; contains out PONG
run 0 "$CLI" --server "localhost:$PORT" ping --count 2; contains out PONG
run 1 "$CLI" --server 127.0.0.1:1 ping; contains err "127.0.0.1:1"

# ---- declare with an initial value
"$PY" - "$TMP" <<'PYEOF'
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(7)
np.save(d + "/h0.npy", np.array([0.5, -1, 2, 0.25], dtype=np.float32))
np.save(d + "/h.npy", rng.standard_normal(4).astype(np.float32))
np.save(d + "/c.npy", rng.standard_normal((2, 3)).astype(np.float32))
np.save(d + "/c_batch1.npy", rng.standard_normal((1, 2, 3)).astype(np.float32))
np.save(d + "/bad.npy", np.zeros(5, dtype=np.float32))
np.save(d + "/f64.npy", np.zeros(4, dtype=np.float64))
PYEOF
run 0 "$CLI" declare rnn --state h:float32:4 --state c:float32:2x3 --initial "h=$TMP/h0.npy"
contains out created
run 0 "$CLI" declare rnn --state h:float32:4 --state c:float32:2x3 --initial "h=$TMP/h0.npy"
contains out "same schema"
run 1 "$CLI" declare rnn --state h:float32:8; contains err ALREADY_EXISTS
run 1 "$CLI" declare other --state h:float32:4 --initial "h=$TMP/bad.npy"
contains err bad.npy
run 2 "$CLI" declare other --state h:float32:4 --initial "x=$TMP/h0.npy"

# ---- fetch of a new key gives the initial state
run 0 "$CLI" fetch rnn fresh; contains out "next_segment=0"; contains out "0.5, -1, 2, 0.25"

# ---- save from .npy, fetch --out gives the same bytes
run 0 "$CLI" save rnn seq/1 --segment 0 --state "h=$TMP/h.npy" --state "c=$TMP/c.npy"
contains out "saved segment 0"
mkdir "$TMP/fetched"
run 0 "$CLI" fetch rnn seq/1 --out "$TMP/fetched"
[ -f "$TMP/fetched/seq_1.h.npy" ] || fail "fetch --out wrote no seq_1.h.npy"
[ -f "$TMP/fetched/seq_1.c.npy" ] || fail "fetch --out wrote no seq_1.c.npy"
"$PY" - "$TMP" <<'PYEOF' || fail "fetched .npy differs from the saved one"
import sys, numpy as np
d = sys.argv[1]
for n in ("h", "c"):
    a = np.load(f"{d}/{n}.npy"); b = np.load(f"{d}/fetched/seq_1.{n}.npy")
    assert a.dtype == b.dtype and a.shape == b.shape, (n, a.shape, b.shape)
    assert np.array_equal(a, b), n
PYEOF
run 0 "$CLI" fetch rnn seq/1; contains out "next_segment=1"; contains out norm=
# a [1, ...] file is accepted, the same segment again is already applied
run 0 "$CLI" save rnn seq/1 --segment 0 --state "h=$TMP/h.npy" --state "c=$TMP/c_batch1.npy"
contains out "already applied"
run 1 "$CLI" save rnn seq/1 --segment 5 --state "h=$TMP/h.npy" --state "c=$TMP/c.npy"
contains err FAILED_PRECONDITION; contains err seq/1
run 1 "$CLI" save rnn seq/1 --segment 1 --state "h=$TMP/bad.npy" --state "c=$TMP/c.npy"
contains err "state 'h'"
run 1 "$CLI" save rnn seq/1 --segment 1 --state "h=$TMP/f64.npy" --state "c=$TMP/c.npy"
contains err float64
run 1 "$CLI" save rnn seq/1 --segment 1 --state "h=$TMP/h.npy"; contains err "missing --state c"
run 1 "$CLI" save rnn seq/1 --segment 1 --state "h=$TMP/missing.npy" --state "c=$TMP/c.npy"
contains err missing.npy
run 1 "$CLI" save nosaver k --segment 0 --state "h=$TMP/h.npy"; contains err "not declared"
# Malformed .npy headers the CLI used to read by substring matching: each is
# refused naming the file and the fault, nothing saved (common/ss_npy).
"$PY" - "$TMP" <<'PYEOF' || fail "could not write the malformed .npy files"
import sys
d = sys.argv[1]
def npy(name, header, nbytes):
    h = header.encode() + b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    with open(f"{d}/{name}.npy", "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + b"\0" * nbytes)
npy("commas", "{'descr': '<f4', 'fortran_order': False, 'shape': (,,2 3), }", 24)
npy("extrakey", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", 24)
npy("inval", "{'note': \"'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)\"}", 24)
PYEOF
run 1 "$CLI" save rnn seq/9 --segment 0 --state "h=$TMP/h.npy" --state "c=$TMP/commas.npy"
contains err commas.npy; contains err "shape is not a tuple"
run 1 "$CLI" save rnn seq/9 --segment 0 --state "h=$TMP/h.npy" --state "c=$TMP/extrakey.npy"
contains err extrakey.npy; contains err "header keys"
run 1 "$CLI" save rnn seq/9 --segment 0 --state "h=$TMP/h.npy" --state "c=$TMP/inval.npy"
contains err inval.npy; contains err "header keys"
run 0 "$CLI" fetch rnn seq/9; contains out "next_segment=0"
# fetch --out replaces files atomically: nothing but the .npy files is left.
run 0 "$CLI" fetch rnn seq/1 --out "$TMP/fetched"
[ "$(ls -A "$TMP/fetched" | grep -vc '\.npy$')" -eq 0 ] || fail "fetch --out left other files"
# No fixed "<path>.tmp": a directory of that name does not stop the write.
mkdir -p "$TMP/fixedtmp/seq_1.h.npy.tmp"
run 0 "$CLI" fetch rnn seq/1 --out "$TMP/fixedtmp"
[ -f "$TMP/fixedtmp/seq_1.h.npy" ] || fail "fetch --out did not write past a <path>.tmp directory"
# float64 states round trip through save and fetch --out.
run 0 "$CLI" declare rnn64 --state h:float64:4
"$PY" -c "import numpy as np, sys; np.save(sys.argv[1], np.array([1/3, -2.5, 1e-300, 7], dtype=np.float64))" "$TMP/h64.npy"
run 0 "$CLI" save rnn64 k --segment 0 --state "h=$TMP/h64.npy"
mkdir "$TMP/f64out"
run 0 "$CLI" fetch rnn64 k --out "$TMP/f64out"
"$PY" - "$TMP" <<'PYEOF' || fail "float64 state changed in a save/fetch round trip"
import sys, numpy as np
d = sys.argv[1]
a = np.load(f"{d}/h64.npy"); b = np.load(f"{d}/f64out/k.h.npy")
assert b.dtype == np.float64 and np.array_equal(a, b), (a, b)
PYEOF
run 0 "$CLI" save rnn seq/2 --segment 0 --state "h=$TMP/h.npy" --state "c=$TMP/c.npy" --final
contains out final
run 0 "$CLI" fetch rnn seq/2; contains out "next_segment=0"

# ---- ls
run 0 "$CLI" ls; contains out rnn; contains out "h:float32:4,c:float32:2x3"
run 0 "$CLI" save rnn seq/3 --segment 0 --state "h=$TMP/h.npy" --state "c=$TMP/c.npy"
run 0 "$CLI" ls rnn; contains out "seq/1  next_segment=1"; contains out "seq/3"
run 0 "$CLI" ls rnn --limit 1; contains out seq/1; contains err "more"
[ "$(wc -l <"$TMP/out")" -eq 1 ] || fail "ls --limit 1 printed more than one row"
run 0 "$CLI" ls rnn --prefix seq/3; contains out seq/3
grep -q seq/1 "$TMP/out" && fail "ls --prefix seq/3 listed seq/1"

# ---- stats --json
run 0 "$CLI" stats --json
"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["savers"] >= 1 and "requests" in d, d' \
  "$TMP/out" || fail "stats --json is not the expected JSON"
run 0 "$CLI" stats rnn; contains out sequences

# ---- drop
run 0 "$CLI" drop rnn seq/1; contains out "dropped 1"
run 0 "$CLI" fetch rnn seq/1; contains out "next_segment=0"
run 0 "$CLI" drop rnn --all
run 1 "$CLI" fetch rnn seq/3; contains err NOT_FOUND

# ---- bench: small runs, JSON with the documented keys, saver dropped after
check_bench() {
  "$PY" - "$TMP/out" "$1" "$2" <<'PYEOF' || fail "bench --json output is wrong"
import json, sys
d = json.load(open(sys.argv[1]))
for k in ("op", "clients", "requests", "batch", "state_bytes", "states_per_sec",
          "requests_per_sec", "p50_ms", "p99_ms"):
    assert k in d, k
assert d["op"] == sys.argv[2] and d["requests"] == int(sys.argv[3]), d
assert d["requests_per_sec"] > 0 and d["states_per_sec"] >= d["requests_per_sec"], d
assert 0 < d["p50_ms"] <= d["p99_ms"], d
PYEOF
}
run 0 "$CLI" bench --op fetch --clients 4 --requests 300 --keys 50 --batch 3 --json
check_bench fetch 300
run 0 "$CLI" bench --op save --clients 4 --requests 300 --keys 16 --batch 2 \
  --state-bytes 64 --json
check_bench save 300
run 0 "$CLI" bench --op save --clients 3 --requests 50 --saver bench-text
contains out "requests per second"
run 0 "$CLI" ls
grep -q bench- "$TMP/out" && fail "bench left its saver behind"
run 2 "$CLI" bench --op save --clients 8 --batch 4 --keys 10

# a server that stops answering mid-run: the bench gives up after
# --timeout-ms without a reply instead of hanging
BASE=$("$CLI" stats --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
"$CLI" --timeout-ms 1000 bench --clients 4 --requests 100000000 --keys 8 \
  >"$TMP/out" 2>"$TMP/err" &
BPID=$!
# stop the server only once the timed phase is under way (many requests)
i=0
until "$CLI" stats --json 2>/dev/null |
    "$PY" -c 'import json,sys; sys.exit(json.load(sys.stdin)["requests"] < int(sys.argv[1]) + 5000)' "$BASE"; do
  i=$((i + 1))
  [ $i -le 200 ] || fail "bench made no progress"
  sleep 0.05
done
kill -STOP "$S1PID"
set +e
wait "$BPID"
got=$?
BPID=
set -e
kill -CONT "$S1PID"
[ "$got" -eq 1 ] || fail "bench against a stopped server exited $got, expected 1"
contains err "no reply for"

# ---- authentication
printf 'tok-123\n' >"$TMP/token"
printf 'wrong\n' >"$TMP/wrong"
start_server "$TMP/s2" --auth-token-file "$TMP/token"
APORT=$PORT
run 0 "$CLI" --server "127.0.0.1:$APORT" --token-file "$TMP/token" ping
run 1 "$CLI" --server "127.0.0.1:$APORT" --token-file "$TMP/wrong" ping
contains err UNAUTHENTICATED
run 1 "$CLI" --server "127.0.0.1:$APORT" ping; contains err UNAUTHENTICATED
run 1 "$CLI" --server "127.0.0.1:$APORT" --token-file "$TMP/nonexistent" ping
contains err nonexistent
# Token files (common/ss_token): one trailing line ending is stripped; an
# empty file is refused before connecting, naming the file.
printf 'tok-123\r\n' >"$TMP/token-crlf"
run 0 "$CLI" --server "127.0.0.1:$APORT" --token-file "$TMP/token-crlf" ping
: >"$TMP/token-empty"
run 1 "$CLI" --server "127.0.0.1:$APORT" --token-file "$TMP/token-empty" ping
contains err token-empty; contains err empty
printf '\n' >"$TMP/token-nl"
run 1 "$CLI" --server "127.0.0.1:$APORT" --token-file "$TMP/token-nl" ping
contains err empty
run 0 "$CLI" --server "127.0.0.1:$APORT" --token-file "$TMP/token" bench --clients 2 \
  --requests 20 --keys 4 --json
check_bench fetch 20

echo "PASS: statesaver CLI"
