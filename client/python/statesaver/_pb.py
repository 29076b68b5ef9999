"""_pb -- the protobuf module generated from proto/statesaver.proto.

The package ships it generated (statesaver/statesaver_pb2.py, made with
`protoc --proto_path=proto --python_out=client/python/statesaver
proto/statesaver.proto`; tests/python/test_package.py checks it matches the
schema). It is found, in order:
  1. the directory named by $STATESAVER_PB2_DIR, when set (a build tree's
     freshly generated copy, e.g. <build>/tests/python),
  2. statesaver/statesaver_pb2.py inside this package (installed or not),
  3. a top-level `statesaver_pb2` module on sys.path.
"""
import importlib
import os
import sys


def _load():
    d = os.environ.get("STATESAVER_PB2_DIR")
    if d and os.path.isfile(os.path.join(d, "statesaver_pb2.py")):
        sys.path.insert(0, d)
        try:
            return importlib.import_module("statesaver_pb2")
        finally:
            sys.path.remove(d)
    try:
        return importlib.import_module(__package__ + ".statesaver_pb2")
    except ImportError:
        pass
    try:
        return importlib.import_module("statesaver_pb2")
    except ImportError:
        pass
    raise ImportError(
        "statesaver_pb2 not found: the package ships statesaver/statesaver_pb2.py; "
        "regenerate it with `protoc --proto_path=proto --python_out=client/python/statesaver "
        "proto/statesaver.proto` or set STATESAVER_PB2_DIR (see docs/python.md)")


pb = _load()
