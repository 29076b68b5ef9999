#!/usr/bin/python3
"""test_worker_flags -- numeric flags of statesaver-worker are strict (the
--metrics-listen port included), and
its --token-file follows the one rule (common/ss_parse, common/ss_token).

Every numeric flag of `serve`, `bench` and `unroll` goes through
ss_parse_u64: " -1" (which strtoull wraps to 2^64-1), "+3", "1e3", "12k",
" 5" and "" are refused with exit 2 and a message naming the flag. An
empty token file (or one holding only a newline) is refused naming the
file, before any connection is tried. No server is needed.
"""
import os
import subprocess
import sys
import tempfile

SOURCE_ROOT = os.environ.get("SS_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("SS_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
WORKER = os.environ.get("SS_TEST_WORKER") or os.path.join(BUILD_ROOT, "worker",
                                                          "statesaver-worker")
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)


def run(args, timeout=30):
    try:
        r = subprocess.run([WORKER] + args, capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stderr
    except subprocess.TimeoutExpired:
        return None, "(timed out)"


def main():
    if not os.access(WORKER, os.X_OK):
        print("not built: " + WORKER)
        return 1
    tmp = tempfile.mkdtemp(prefix="ss-worker-flags-")
    model = os.path.join(tmp, "absent.safetensors")
    serve = ["serve", "--model", model, "--saver", "s", "--server", "127.0.0.1:1"]
    for flag in ("--batch", "--lease-ms", "--wait-ms", "--ttl-ms", "--threads",
                 "--timeout-ms", "--max-batches", "--log-every"):
        for bad in (" -1", "+3", "1e3", "12k", " 5", ""):
            rc, err = run(serve + [flag, bad])
            check(rc == 2 and flag + " must be an integer" in err,
                  "serve %s %r: exit 2 naming the flag (exit %s: %s)"
                  % (flag, bad, rc, err.strip()[:120]))
    tiny = ["bench", "--cell", "basic_rnn", "--input-size", "1", "--num-units", "1",
            "--batch", "1", "--layers", "1", "--repeat", "1", "--max-mb", "16"]
    for flag in ("--steps", "--threads", "--repeat"):
        for bad in (" 1", "+1", "-1", "1x"):
            args = [a for a in tiny]
            if flag in args:
                i = args.index(flag)
                del args[i:i + 2]
            rc, err = run(args + [flag, bad] + ([] if flag == "--steps" else ["--steps", "1"]))
            check(rc == 2 and flag in err,
                  "bench %s %r: exit 2 naming the flag (exit %s: %s)"
                  % (flag, bad, rc, err.strip()[:120]))
    for bad in (" 2", "+2", "2 "):
        rc, err = run(["unroll", "--model", model, "--inputs", model, "--outputs",
                       os.path.join(tmp, "o.npy"), "--threads", bad])
        check(rc == 2 and "--threads must be an integer" in err,
              "unroll --threads %r: exit 2 naming the flag (exit %s: %s)"
              % (bad, rc, err.strip()[:120]))
    for name, data in (("empty", b""), ("newline", b"\n")):
        path = os.path.join(tmp, "token-" + name)
        with open(path, "wb") as f:
            f.write(data)
        rc, err = run(serve + ["--token-file", path])
        check(rc == 2 and path in err and "empty" in err,
              "serve --token-file %s: refused naming the file (exit %s: %s)"
              % (name, rc, err.strip()[:160]))
    # The port of --metrics-listen is a number like any other (common/ss_http).
    model_ok = os.path.join(tmp, "image.safetensors")
    r = subprocess.run(["/usr/bin/python3", os.path.join(SOURCE_ROOT, "scripts", "make-model.py"),
                        model_ok, "--preset", "image"], capture_output=True, timeout=60)
    check(r.returncode == 0, "image model written")
    for bad in (" 0", "+0", "0x0"):
        rc, err = run(["serve", "--model", model_ok, "--saver", "s", "--server", "127.0.0.1:1",
                       "--metrics-listen", "127.0.0.1:" + bad], timeout=10)
        check(rc == 2 and "--metrics-listen: bad address" in err,
              "serve --metrics-listen 127.0.0.1:%r: exit 2 (exit %s: %s)"
              % (bad, rc, err.strip()[-160:]))
    # --metrics-port-fd (how a cluster worker's per-shard processes report
    # their port): a descriptor number >= 3, and only with --metrics-listen.
    for bad in ("1", "x", "-3", " 7"):
        rc, err = run(["serve", "--model", model_ok, "--saver", "s", "--server", "127.0.0.1:1",
                       "--metrics-listen", "127.0.0.1:0", "--metrics-port-fd", bad], timeout=10)
        check(rc == 2 and "--metrics-port-fd must be an integer" in err,
              "serve --metrics-port-fd %r: exit 2 naming the flag (exit %s: %s)"
              % (bad, rc, err.strip()[-160:]))
    rc, err = run(["serve", "--model", model_ok, "--saver", "s", "--server", "127.0.0.1:1",
                   "--metrics-port-fd", "5"], timeout=10)
    check(rc == 2 and "need --metrics-listen" in err,
          "serve --metrics-port-fd without --metrics-listen: exit 2 (exit %s: %s)"
          % (rc, err.strip()[-160:]))
    big = os.path.join(tmp, "token-big")
    with open(big, "wb") as f:
        f.write(b"a" * 4097)
    rc, err = run(serve + ["--token-file", big])
    check(rc == 2 and "larger than 4096" in err,
          "serve --token-file of 4097 bytes: refused (exit %s: %s)" % (rc, err.strip()[:160]))
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)
    print("%d failure(s)" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
