"""_pb -- locate the protobuf module generated from proto/statesaver.proto.

The generated code is never committed. It is produced at build time by
`protoc --python_out=DIR proto/statesaver.proto` (the meson build does this
in tests/python/, giving <build>/tests/python/statesaver_pb2.py). This
module finds it, in order:
  1. statesaver/statesaver_pb2.py inside this package (an installed copy),
  2. a top-level `statesaver_pb2` module on sys.path,
  3. the directory named by $STATESAVER_PB2_DIR.
"""
import importlib
import os
import sys


def _load():
    try:
        return importlib.import_module(__package__ + ".statesaver_pb2")
    except ImportError:
        pass
    try:
        return importlib.import_module("statesaver_pb2")
    except ImportError:
        pass
    d = os.environ.get("STATESAVER_PB2_DIR")
    if d and os.path.isfile(os.path.join(d, "statesaver_pb2.py")):
        sys.path.insert(0, d)
        return importlib.import_module("statesaver_pb2")
    raise ImportError(
        "statesaver_pb2 not found: generate it with "
        "`protoc --proto_path=proto --python_out=DIR proto/statesaver.proto` "
        "and put DIR on PYTHONPATH or in STATESAVER_PB2_DIR (see docs/python.md)")


pb = _load()
