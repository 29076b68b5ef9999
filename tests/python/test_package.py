#!/usr/bin/python3
"""test_package -- client/python is a real package.

- The shipped statesaver/statesaver_pb2.py matches proto/statesaver.proto:
  protoc regenerates the schema's descriptor into a temp dir and the two
  FileDescriptorProtos are equal (and so is the generated source, when the
  protoc here is the one that generated it).
- `pip install --no-index --no-build-isolation` installs it offline (into a
  temp --target); the installed package imports without STATESAVER_PB2_DIR
  from outside the source tree, uses its own statesaver_pb2, and declares
  the statesaver-convert console script.

Run: python3 tests/python/test_package.py   (meson test python-package)
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import harness

PKG = os.path.join(harness.SOURCE_ROOT, "client", "python")
PROTO = os.path.join(harness.SOURCE_ROOT, "proto")
SHIPPED = os.path.join(PKG, "statesaver", "statesaver_pb2.py")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kw)
    if r.returncode != 0:
        raise AssertionError("%s failed (%d): %s %s" % (cmd, r.returncode, r.stdout[-2000:],
                                                       r.stderr[-2000:]))
    return r.stdout


class Package(unittest.TestCase):

    def test_pb2_matches_schema(self):
        protoc = shutil.which("protoc")
        self.assertIsNotNone(protoc, "protoc is needed to check the shipped module")
        with tempfile.TemporaryDirectory() as tmp:
            run([protoc, "--proto_path=" + PROTO, "--python_out=" + tmp,
                 os.path.join(PROTO, "statesaver.proto")])
            fresh = os.path.join(tmp, "statesaver_pb2.py")
            # each module's FileDescriptorProto, loaded in a clean interpreter
            # (two copies of one .proto cannot share a descriptor pool)
            code = ("import importlib.util, sys\n"
                    "s = importlib.util.spec_from_file_location('statesaver_pb2', sys.argv[1])\n"
                    "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
                    "sys.stdout.buffer.write(m.DESCRIPTOR.serialized_pb)\n")
            raws = [subprocess.run([sys.executable, "-c", code, path], capture_output=True,
                                   timeout=60, check=True).stdout for path in (SHIPPED, fresh)]
            from google.protobuf import descriptor_pb2
            shipped, want = (descriptor_pb2.FileDescriptorProto.FromString(r) for r in raws)
            self.assertGreater(len(want.message_type), 10)
            self.assertEqual(shipped, want,
                             "statesaver_pb2.py is stale: regenerate it with protoc "
                             "--proto_path=proto --python_out=client/python/statesaver "
                             "proto/statesaver.proto")
            with open(fresh) as a, open(SHIPPED) as b:
                gen, ship = a.read(), b.read()
            if "3.21." in run([protoc, "--version"]):  # the protoc that made the copy
                self.assertEqual(gen, ship)

    def test_pip_install_offline(self):
        with tempfile.TemporaryDirectory() as tmp:
            target = os.path.join(tmp, "site")
            build = os.path.join(tmp, "src")
            shutil.copytree(PKG, build, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                      "__pycache__"))
            run([sys.executable, "-m", "pip", "install", "--no-index", "--no-build-isolation",
                 "--no-deps", "--quiet", "--target", target, build])
            env = {k: v for k, v in os.environ.items()
                   if k not in ("STATESAVER_PB2_DIR", "PYTHONPATH")}
            env["PYTHONPATH"] = target
            out = run([sys.executable, "-c",
                       "import statesaver, statesaver._pb as p, statesaver.training as t\n"
                       "print(statesaver.__file__); print(p.pb.__name__)\n"
                       "print(p.pb.DESCRIPTOR.message_types_by_name['CancelRequest'].name)"],
                      env=env, cwd=tmp)
            lines = out.split()
            self.assertTrue(lines[0].startswith(target), out)
            self.assertEqual(lines[1], "statesaver.statesaver_pb2")
            self.assertEqual(lines[2], "CancelRequest")
            eps = [os.path.join(dp, f) for dp, _, fs in os.walk(target) for f in fs
                   if f == "entry_points.txt"]
            self.assertTrue(eps, "no entry_points.txt installed")
            with open(eps[0]) as f:
                self.assertIn("statesaver-convert = statesaver.convert.cli:main", f.read())
            self.assertTrue(os.path.exists(os.path.join(target, "bin", "statesaver-convert")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
