#!/usr/bin/python3
"""make-corpus -- write the seed corpora of the fuzz harnesses.

Usage: tests/fuzz/make-corpus.py   (from anywhere; needs protoc,
python3-protobuf and numpy: scripts/install-deps --test)

Writes tests/fuzz/corpus/<harness>/<name> for every harness. The seeds are
small valid inputs of each format, so fuzzing starts from the accepted
paths; they are committed, and this script is how they were made.
"""
import io
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "corpus")


def load_pb2():
    tmp = tempfile.mkdtemp()
    subprocess.run(["protoc", "--proto_path=" + os.path.join(ROOT, "proto"),
                    "--python_out=" + tmp, "statesaver.proto"], check=True)
    sys.path.insert(0, tmp)
    import statesaver_pb2  # noqa: E402
    return statesaver_pb2


pb = load_pb2()
F32 = pb.DT_FLOAT32


def tensor(arr, dtype=F32):
    a = np.ascontiguousarray(arr)
    return pb.Tensor(dtype=dtype, shape=list(a.shape), data=a.tobytes())


def write(harness, name, data):
    d = os.path.join(OUT, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def req(id_, **body):
    return pb.Request(id=id_, **body).SerializeToString()


# ---- Requests: one of each body -----------------------------------------
SPECS = [pb.StateSpec(name="c", dtype=F32, shape=[4]),
         pb.StateSpec(name="h", dtype=F32, shape=[4],
                      initial=tensor(np.ones(4, np.float32)))]
K = [b"seq-1", b"seq-2"]
requests = {
    "hello": req(1, hello=pb.HelloRequest(token=b"secret", client="fuzz")),
    "declare": req(2, declare=pb.DeclareRequest(saver="lm", states=SPECS,
                                                idle_ttl_ms=0, keep_final=True)),
    "fetch": req(3, fetch=pb.FetchRequest(saver="lm", keys=K, min_segment=0, wait_ms=5)),
    "save": req(4, save=pb.SaveRequest(
        saver="lm", keys=K, segment=[0, 0], final=[False, True],
        states=[tensor(np.zeros((2, 4), np.float32)),
                tensor(np.full((2, 4), 0.5, np.float32))])),
    "drop": req(5, drop=pb.DropRequest(saver="lm", keys=K[:1])),
    "drop-all": req(6, drop=pb.DropRequest(saver="lm", all=True)),
    "list-savers": req(7, list=pb.ListRequest()),
    "list-keys": req(8, list=pb.ListRequest(saver="lm", prefix=b"seq", limit=1)),
    "stats": req(9, stats=pb.StatsRequest(saver="lm")),
    "ping": req(10, ping=pb.PingRequest(payload=b"hi")),
    "submit": req(11, submit=pb.SubmitRequest(
        saver="lm", key=b"seq-1", segment=0, length=2, last=True,
        inputs=tensor(np.arange(6, dtype=np.float32).reshape(3, 2)))),
    "lease": req(12, lease=pb.LeaseRequest(saver="lm", max_batch=4, wait_ms=5,
                                           lease_ms=50, worker="w")),
    "complete": req(13, complete=pb.CompleteRequest(saver="lm", lease_id=0, items=[
        pb.CompletedSegment(key=b"seq-1", segment=0,
                            outputs=tensor(np.ones((3, 4), np.float32)),
                            states=[tensor(np.zeros(4, np.float32)),
                                    tensor(np.ones(4, np.float32))])])),
    "complete-error": req(14, complete=pb.CompleteRequest(saver="lm", lease_id=0, items=[
        pb.CompletedSegment(key=b"seq-1", segment=0, error="worker failed")])),
    "await": req(15, await_segment=pb.AwaitRequest(saver="lm", key=b"seq-1", segment=0,
                                                   wait_ms=5, collect=True)),
}
for name, payload in requests.items():
    write("request", name, payload)


# ---- frames: streams of whole, partial and oversized frames -------------
def frame(payload):
    return struct.pack(">I", len(payload)) + payload


write("frame", "one", frame(requests["ping"]))
write("frame", "pipelined", b"".join(frame(requests[n]) for n in
                                      ("hello", "declare", "save", "fetch")))
write("frame", "partial", frame(requests["declare"]) + frame(requests["save"])[:9])
write("frame", "empty-payload", frame(b"") + frame(requests["stats"]))
write("frame", "too-big", frame(requests["ping"]) + struct.pack(">I", 1 << 20) + b"xx")


# ---- handlers: a mode byte (bit 0: pipelined), then records of ---------
# [u16 le length][Request payload]; sent one by one, a Complete with
# lease_id 0 gets the last lease's id (tests/fuzz/fuzz_handlers.c).
def seq(pipelined, *names):
    return bytes([1 if pipelined else 0]) + b"".join(
        struct.pack("<H", len(requests[n])) + requests[n] for n in names)


write("handlers", "states", seq(True, "declare", "save", "fetch", "list-savers",
                                "list-keys", "stats", "drop", "fetch"))
write("handlers", "states-one-by-one", seq(False, "declare", "save", "fetch",
                                           "list-keys", "drop-all", "fetch"))
write("handlers", "jobs", seq(False, "declare", "submit", "lease", "complete", "await",
                              "stats"))
write("handlers", "job-failed", seq(False, "declare", "submit", "lease",
                                    "complete-error", "await"))
write("handlers", "jobs-pipelined", seq(True, "declare", "submit", "lease", "await"))
write("handlers", "wait", seq(True, "declare", "fetch", "lease", "await", "drop-all"))
write("handlers", "admin", seq(False, "hello", "ping", "stats", "list-savers"))
write("handlers", "malformed", seq(True, "ping") + struct.pack("<H", 3) + b"\xff\xff\xff")


# ---- .npy files ---------------------------------------------------------
def npy(arr, version=None):
    b = io.BytesIO()
    if version is None:
        np.save(b, arr)
    else:
        np.lib.format.write_array(b, arr, version=version)
    return b.getvalue()


write("npy", "f32-2d", npy(np.arange(12, dtype="<f4").reshape(3, 4)))
write("npy", "i32-1d", npy(np.array([3, 1, 2], dtype="<i4")))
write("npy", "i64-scalar", npy(np.array(7, dtype="<i8")))
write("npy", "f64-2d", npy(np.eye(2, dtype="<f8")))
write("npy", "f32-v2", npy(np.ones((2, 2), dtype="<f4"), version=(2, 0)))
write("npy", "f32-v3", npy(np.ones((1, 3), dtype="<f4"), version=(3, 0)))
write("npy", "f32-empty", npy(np.zeros((0, 4), dtype="<f4")))


# ---- safetensors files --------------------------------------------------
def safetensors(tensors, meta=None):
    header, blobs, off = {}, [], 0
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


w = np.arange(8, dtype="<f4").tobytes()
write("safetensors", "two-f32", safetensors(
    [("cell_0/kernel", "F32", [2, 2], w[:16]), ("cell_0/bias", "F32", [4], w[16:] + w[:0])],
    meta={"cell": "lstm", "num_units": "1"}))
write("safetensors", "mixed-dtypes", safetensors(
    [("a", "F64", [1], np.ones(1, "<f8").tobytes()), ("b", "I32", [], b"\x01\0\0\0"),
     ("c", "BF16", [2], b"\0\0\0\0"), ("d", "F32", [0], b"")]))
write("safetensors", "misaligned", safetensors(
    [("u", "U8", [1], b"\x07"), ("f", "F32", [2], np.ones(2, "<f4").tobytes())]))


# ---- job records (server/jobs_store.h) ----------------------------------
def jobrec(state, last, segment, saver, key, reason, inputs, length,
           outputs=None, finals=()):
    in_rows, in_cols = inputs.shape
    out_rows, out_cols = outputs.shape if outputs is not None else (0, 0)
    hdr = struct.pack("<BBBBIIIIIIHHIIQQQ", 1, state, 1 if last else 0, len(finals),
                      length, 2, in_rows, in_cols, out_rows, out_cols,
                      len(saver), len(key), len(reason), 0, segment, 1700000000000,
                      1700000000500 if state != 1 else 0)
    assert len(hdr) == 64
    body = saver + key + reason + inputs.astype("<f4").tobytes()
    if outputs is not None:
        body += outputs.astype("<f4").tobytes()
    for name, dtype, arr in finals:
        body += struct.pack("<HBB", len(name), dtype, arr.ndim)
        body += b"".join(struct.pack("<q", d) for d in arr.shape)
        data = arr.tobytes()
        body += struct.pack("<Q", len(data)) + name + data
    return hdr + body


x = np.arange(6, dtype="<f4").reshape(3, 2)
write("jobrec", "queued", jobrec(1, False, 0, b"lm", b"seq-1", b"", x, 3))
write("jobrec", "queued-retried", jobrec(1, False, 4, b"lm", b"seq-2", b"lease expired", x, 2))
write("jobrec", "done-last", jobrec(3, True, 1, b"lm", b"seq-1", b"", x, 3,
                                    outputs=np.ones((3, 4), "<f4"),
                                    finals=[(b"c", F32, np.zeros(4, "<f4")),
                                            (b"h", F32, np.ones(4, "<f4"))]))
write("jobrec", "failed", jobrec(4, False, 2, b"lm", b"k", b"poison: nan in outputs", x, 1))
print("wrote", sum(len(f) for _, _, f in os.walk(OUT)), "seeds under", OUT)
