"""Helpers of the web platform tests (used by conftest.py and the test modules): a platform on a
fresh data folder, users of every role in two organisations, uploads, a live ``pulmo serve``
process, a real PostgreSQL server on loopback, sign-in in a real browser."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None) \
    if Path("/usr/lib/postgresql").is_dir() else None
PASSWORD = "correct horse battery"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
USERS = {  # username: (role, organisation)
    "admin": ("admin", "Pulmo"), "rad": ("radiologist", "Hospital A"), "clin": ("clinician", "Hospital A"),
    "rad_b": ("radiologist", "Hospital B"), "clin_b": ("clinician", "Hospital B"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A throw-away PostgreSQL cluster on loopback (Debian's server binaries, run as the
    ``postgres`` user when the tests run as root)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="pulmo-pg-"))
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o",
                   f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])
        self.n = 0

    def _run(self, cmd):
        subprocess.run(self.as_user + cmd, check=True, capture_output=True, timeout=120)

    def new_database(self) -> str:
        self.n += 1
        name = f"pulmo_test_{self.n}"
        self._run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name])
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self):
        subprocess.run(self.as_user + [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Platform:
    app: object
    client: object
    settings: object
    tokens: dict          # username -> bearer token
    users: dict           # username -> (role, organisation)

    def headers(self, username: str | None) -> dict:
        return {"Authorization": "Bearer " + self.tokens[username]} if username else {}


def make_platform(data_dir: Path, database_url: str | None = None, **settings_kw) -> Platform:
    from fastapi.testclient import TestClient

    from pulmo.web.app import create_app
    from pulmo.web.db import transaction
    from pulmo.web.services import accounts
    from pulmo.web.settings import Settings

    settings = Settings(data_dir=data_dir, database_url=database_url, workers=0, **settings_kw)
    app = create_app(settings)
    with transaction(app.state.sessions) as s:
        accounts.bootstrap_admin(s, PASSWORD)
        for name, (role, org) in USERS.items():
            if name != "admin":
                accounts.create_user(s, name, PASSWORD, role, org)
    client = TestClient(app)
    tokens = {}
    for name in USERS:
        r = client.post("/api/auth/token", data={"username": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        tokens[name] = r.json()["access_token"]
    return Platform(app, client, settings, tokens, dict(USERS))


def demo_zip_bytes(folder: Path, seed: int = 0, opacities: bool = True, patient_index: int = 0) -> bytes:
    """The demo phantom (synthetic chest CT) as a zip of DICOM files."""
    from pulmo.web.demo import PATIENTS, phantom, write_dicom

    ct = write_dicom(phantom(seed, opacities), folder / f"ct{seed}", PATIENTS[patient_index], "20261201")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(ct.iterdir()):
            z.write(f, f"ct/{f.name}")
    return buf.getvalue()


def upload(platform: Platform, data: bytes, user: str = "rad", name: str = "study.zip"):
    return platform.client.post("/api/studies", files={"file": (name, data, "application/zip")},
                                headers=platform.headers(user))


def analyse_all(platform: Platform) -> None:
    """Run the queued analyses here (as a worker would)."""
    from pulmo.web.worker import run_worker

    run_worker(platform.settings, once=True)


def analysed_study(platform: Platform, data: bytes, user: str = "rad") -> int:
    """Upload ``data`` as ``user``, analyse it here, and return the study's id (checked done)."""
    r = upload(platform, data, user)
    assert r.status_code == 201, r.text
    analyse_all(platform)
    sid = r.json()["id"]
    assert platform.client.get(f"/api/studies/{sid}", headers=platform.headers(user)).json()["status"] == "done"
    return sid


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    process: subprocess.Popen
    log: Path

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_server(data_dir: Path, *extra: str, env: dict | None = None, wait_s: float = 90.0) -> LiveServer:
    """``pulmo serve`` in its own process on a free port; returns when /healthz answers."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = data_dir.parent / f"server-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "PULMO_ADMIN_PASSWORD": PASSWORD, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "pulmo", "serve", "--port", str(port), "--data-dir",
                             str(data_dir), *extra], env=full_env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    end = time.time() + wait_s
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"pulmo serve exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return LiveServer(url, data_dir, proc, log)
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"pulmo serve did not answer: {log.read_text()[-3000:]}")


def sign_in(page, url: str, username: str = "admin", password: str = PASSWORD) -> None:
    page.goto(url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
