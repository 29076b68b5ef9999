"""harness -- start the real statesaver-server (and worker) for Python tests.

Paths come from SS_BUILD_ROOT / SS_SOURCE_ROOT (set by meson's test_env).
The generated statesaver_pb2 module is looked up in the directory given as
the test's first argument (meson passes <build>/tests/python), else in
$STATESAVER_PB2_DIR.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SOURCE_ROOT = os.environ.get("SS_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("SS_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
SERVER = os.path.join(BUILD_ROOT, "server", "statesaver-server")
WORKER = os.path.join(BUILD_ROOT, "worker", "statesaver-worker")
MAKE_MODEL = os.path.join(SOURCE_ROOT, "scripts", "make-model.py")


def setup_path(argv):
    """Put the package and the generated protobuf module on sys.path; return
    argv without the pb2 directory argument."""
    sys.path.insert(0, os.path.join(SOURCE_ROOT, "client", "python"))
    if len(argv) > 1 and os.path.isdir(argv[1]):
        os.environ["STATESAVER_PB2_DIR"] = argv[1]
        argv = argv[:1] + argv[2:]
    return argv


def worker_can_serve():
    """True once `statesaver-worker serve` exists in this build."""
    if not os.access(WORKER, os.X_OK):
        return False
    r = subprocess.run([WORKER, "serve", "--help"], capture_output=True, timeout=20)
    return r.returncode == 0


class Server:
    """statesaver-server on 127.0.0.1, ephemeral port, temp LMDB dir."""

    def __init__(self, extra=(), data_dir=None, env=None):
        if not os.access(SERVER, os.X_OK):
            raise FileNotFoundError("server not built: %s" % SERVER)
        self.tmp = tempfile.mkdtemp(prefix="ss-pytest-")
        self.data = data_dir or os.path.join(self.tmp, "data")
        port_file = os.path.join(self.tmp, "port")
        self.log = open(os.path.join(self.tmp, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [SERVER, "--listen", "127.0.0.1:0", "--data", self.data, "--sync", "off",
             "--port-file", port_file, "--log-level", "warn"] + list(extra),
            stdout=self.log, stderr=subprocess.STDOUT,
            env=dict(os.environ, **env) if env else None)
        deadline = time.monotonic() + 20
        self.port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited with %d: %s" % (self.proc.returncode,
                                                                  self.log_text()))
            try:
                with open(port_file) as f:
                    text = f.read().strip()
                if text:
                    self.port = int(text)
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        if self.port is None:
            self.stop()
            raise RuntimeError("server did not write its port file within 20 s")
        self.address = "127.0.0.1:%d" % self.port

    def log_text(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def stop(self):
        """SIGTERM, then SIGKILL after 10 s; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Worker:
    """statesaver-worker serve against a server, bounded by stop()."""

    def __init__(self, address, model, saver, batch=4, log_dir=None):
        self.log = tempfile.NamedTemporaryFile(prefix="ss-worker-", suffix=".log",
                                               dir=log_dir, delete=False)
        self.proc = subprocess.Popen(
            [WORKER, "serve", "--server", address, "--model", model, "--saver", saver,
             "--batch", str(batch)], stdout=self.log, stderr=subprocess.STDOUT)

    def log_text(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        os.unlink(self.log.name)
        return self.proc.returncode
