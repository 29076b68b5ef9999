#!/usr/bin/python3
"""test_precision_cmd -- `--precision fp32|bf16` of statesaver-worker's
unroll, serve and bench.

On a CPU with AVX512_BF16: for golden cases of every cell, `unroll
--precision bf16` writes outputs and final states within the documented
bound of the fp32 run (|bf16 - fp32| <= 0.02 * max(1, |fp32|),
SS_UNROLL_BF16_TOL) and not identical to it (bf16 really ran), fp32 stays
within 1e-5 of the float64 golden vectors, and 2 threads give the same
bytes as 1; a model's head is self-checked in bf16 as its stack is. Everywhere: with SS_CPU_NO_BF16=1 (and on a CPU without the
instruction) `--precision bf16` is refused by unroll, serve and bench with
exit status 2, a message naming AVX512_BF16 and nothing written; an
unknown precision is a usage error (exit 2).
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

SOURCE_ROOT = os.environ.get("SS_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("SS_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
WORKER = os.path.join(BUILD_ROOT, "worker", "statesaver-worker")
GOLDEN = os.path.join(SOURCE_ROOT, "tests", "worker", "golden")
BOUND = 0.02
CASES = ["basic_tanh", "lstm_all", "lstm_stack2", "gru", "gru_reset_after_stack2"]
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)


def run(args, env=None, timeout=60):
    e = dict(os.environ)
    e.pop("SS_CPU_NO_BF16", None)
    if env:
        e.update(env)
    r = subprocess.run([WORKER] + args, capture_output=True, text=True, timeout=timeout, env=e)
    return r.returncode, r.stderr


def state_names(case, n):
    if case.startswith("lstm"):
        return [f"cell_{i // 2}/{'c' if i % 2 == 0 else 'h'}" for i in range(n)]
    return [f"cell_{i}/h" for i in range(n)]


def unroll(case, d, prec, threads, env=None):
    g = os.path.join(GOLDEN, case)
    n = len([f for f in os.listdir(g) if f.startswith("state_in_")])
    names = state_names(case, n)
    args = ["unroll", "--model", os.path.join(g, "model.safetensors"),
            "--inputs", os.path.join(g, "inputs.npy"), "--precision", prec,
            "--threads", str(threads), "--outputs", os.path.join(d, f"o_{prec}_{threads}.npy")]
    if os.path.exists(os.path.join(g, "lengths.npy")):
        args += ["--lengths", os.path.join(g, "lengths.npy")]
    for i, name in enumerate(names):
        args += ["--state", f"{name}={os.path.join(g, f'state_in_{i}.npy')}",
                 "--final-state", f"{name}={os.path.join(d, f's{i}_{prec}_{threads}.npy')}"]
    rc, err = run(args, env)
    files = [os.path.join(d, f"o_{prec}_{threads}.npy")] + \
        [os.path.join(d, f"s{i}_{prec}_{threads}.npy") for i in range(n)]
    golden = [os.path.join(g, "outputs.npy")] + \
        [os.path.join(g, f"state_out_{i}.npy") for i in range(n)]
    return rc, err, files, golden


def rel(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b) / np.maximum(1.0, np.abs(b))))


def head_case(d):
    """The head is self-checked in bf16 too: a head within the bound runs,
    one whose kernel bf16 cannot hold (FLT_MAX rounds to infinity) is
    refused before anything is written (it used to run the stack's check
    only and write -inf outputs)."""
    good, bad = os.path.join(d, "head.safetensors"), os.path.join(d, "head-bad.safetensors")
    r = subprocess.run(["/usr/bin/python3", os.path.join(SOURCE_ROOT, "scripts", "make-model.py"),
                        good, "--cell", "lstm", "--input-size", "4", "--num-units", "8",
                        "--num-layers", "1", "--head-out", "5"], capture_output=True, timeout=60)
    check(r.returncode == 0, "head model written")
    raw = open(good, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    import json
    hdr = json.loads(raw[8:8 + n])
    s, _ = hdr["head/kernel"]["data_offsets"]
    body = bytearray(raw[8 + n:])
    body[s:s + 4] = np.array([np.finfo(np.float32).max], "<f4").tobytes()
    open(bad, "wb").write(raw[:8 + n] + bytes(body))
    x = os.path.join(d, "head-x.npy")
    np.save(x, np.random.default_rng(4).standard_normal((6, 2, 4)).astype("<f4"))
    outs = {}
    for model, prec in ((good, "fp32"), (good, "bf16"), (bad, "fp32"), (bad, "bf16")):
        o = os.path.join(d, "head-%s-%s.npy" % (os.path.basename(model), prec))
        rc, err = run(["unroll", "--model", model, "--inputs", x, "--outputs", o,
                       "--precision", prec])
        outs[(model, prec)] = (rc, err, o)
    rc, err, o = outs[(good, "bf16")]
    ok = rc == 0 and outs[(good, "fp32")][0] == 0
    check(ok and rel(np.load(o), np.load(outs[(good, "fp32")][2])) <= BOUND,
          f"head: bf16 unroll within {BOUND} of fp32 ({err.strip()[-200:]})")
    check(outs[(bad, "fp32")][0] == 0, "head: fp32 runs the kernel holding FLT_MAX")
    rc, err, o = outs[(bad, "bf16")]
    check(rc == 1 and "self-check failed" in err and not os.path.exists(o),
          f"head: bf16 refused when the head's product is off, nothing written "
          f"(exit {rc}: {err.strip()[-200:]})")


def main():
    if not os.access(WORKER, os.X_OK):
        print(f"{WORKER} not built")
        return 1
    for cmd in ("unroll", "serve", "bench"):
        h = subprocess.run([WORKER, cmd, "--help"], capture_output=True, text=True)
        check(h.returncode == 0 and "--precision" in h.stdout, f"{cmd} --help documents --precision")
    probe_rc, probe_err = run(["bench", "--cell", "gru", "--input-size", "4", "--num-units", "4",
                               "--batch", "1", "--steps", "1", "--repeat", "1", "--threads", "1",
                               "--precision", "bf16", "--json"])
    has_bf16 = probe_rc == 0
    print(f"CPU runs bf16: {has_bf16}")
    with tempfile.TemporaryDirectory() as d:
        for case in CASES:
            rc32, err32, f32, golden = unroll(case, d, "fp32", 1)
            check(rc32 == 0, f"{case}: fp32 unroll exits 0 ({err32.strip()})")
            rc16, err16, f16, _ = unroll(case, d, "bf16", 1)
            if not has_bf16:
                check(rc16 == 2 and "AVX512_BF16" in err16 and not os.path.exists(f16[0]),
                      f"{case}: bf16 refused on this CPU (exit 2, names AVX512_BF16, nothing "
                      f"written): {rc16} {err16.strip()}")
                continue
            check(rc16 == 0, f"{case}: bf16 unroll exits 0 ({err16.strip()})")
            if rc32 or rc16:
                continue
            worst, differs = 0.0, False
            for a, b, gld in zip(f16, f32, golden):
                x16, x32, xg = np.load(a), np.load(b), np.load(gld)
                check(rel(x32, xg) <= 1e-5, f"{case}: fp32 {os.path.basename(b)} within 1e-5 "
                      f"of golden ({rel(x32, xg):.2g})")
                worst = max(worst, rel(x16, x32))
                differs = differs or not np.array_equal(x16, x32)
            check(worst <= BOUND, f"{case}: bf16 within {BOUND} of fp32 (worst {worst:.3g})")
            check(differs, f"{case}: bf16 results are not the fp32 ones (bf16 really ran)")
            rc2, err2, f16_2, _ = unroll(case, d, "bf16", 2)
            same = rc2 == 0 and all(open(a, "rb").read() == open(b, "rb").read()
                                    for a, b in zip(f16, f16_2))
            check(same, f"{case}: bf16 on 2 threads gives the same bytes as on 1 ({err2.strip()})")
        if has_bf16:
            head_case(d)
        # Refusal forced by the environment, for every command.
        env = {"SS_CPU_NO_BF16": "1"}
        with tempfile.TemporaryDirectory() as d2:
            rc, err, files, _ = unroll("gru", d2, "bf16", 1, env)
            check(rc == 2, f"unroll --precision bf16 with SS_CPU_NO_BF16=1 exits 2 (got {rc})")
            check("AVX512_BF16" in err and "--precision fp32" in err,
                  f"unroll: the message names AVX512_BF16 and the way out: {err.strip()}")
            check(not any(os.path.exists(f) for f in files), "unroll: nothing written")
            rc, err, files, _ = unroll("gru", d2, "fp32", 1, env)
            check(rc == 0, "unroll --precision fp32 still runs with SS_CPU_NO_BF16=1")
        rc, err = run(["serve", "--model", os.path.join(GOLDEN, "gru", "model.safetensors"),
                       "--saver", "s", "--server", "127.0.0.1:1", "--precision", "bf16"], env)
        check(rc == 2 and "AVX512_BF16" in err, f"serve refuses bf16 (exit 2): {rc} {err.strip()}")
        rc, err = run(["bench", "--cell", "lstm", "--input-size", "4", "--num-units", "4",
                       "--batch", "1", "--steps", "1", "--precision", "bf16"], env)
        check(rc == 2 and "AVX512_BF16" in err, f"bench refuses bf16 (exit 2): {rc} {err.strip()}")
        rc, err = run(["unroll", "--model", "m", "--inputs", "x", "--precision", "fp16"])
        check(rc == 2 and "fp32 or bf16" in err, f"unknown precision is a usage error: {err.strip()}")
    if FAILURES:
        print(f"{len(FAILURES)} failure(s)")
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
