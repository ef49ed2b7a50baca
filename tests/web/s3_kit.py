"""A real S3-compatible object store on loopback for the tests: ``s3rver`` from npm (installed by
scripts/setup.sh under ``.cache/node``), which refuses any access key but its own (``S3RVER``;
secret ``S3RVER``). (Measured: s3rver 3.7.1 accepted a wrong secret, so only the key id is checked.)"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
S3RVER = REPO / ".cache" / "node" / "node_modules" / ".bin" / "s3rver"
ACCESS_KEY = SECRET_KEY = "S3RVER"


def available() -> str | None:
    """None when s3rver can run here, else why not."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not S3RVER.exists():
        return "s3rver is not installed (scripts/setup.sh installs it with npm under .cache/node)"
    return None


class S3Server:
    def __init__(self, bucket: str = "pulmo"):
        self.dir = Path(tempfile.mkdtemp(prefix="pulmo-s3-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.bucket = bucket
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.dir / "log", "wb")
        self.process = subprocess.Popen(
            [shutil.which("node"), str(S3RVER), "-d", str(self.dir / "data"), "-a", "127.0.0.1", "-p", str(self.port),
             "--no-vhost-buckets", "--configure-bucket", bucket], stdout=self.log, stderr=subprocess.STDOUT)
        end = time.time() + 30
        while time.time() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"s3rver did not start: {(self.dir / 'log').read_text()[-2000:]}")

    def env(self) -> dict:
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
                "PULMO_S3_ENDPOINT_URL": self.url}

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
