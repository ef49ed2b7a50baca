"""Crash recovery (issue 21, "Bad input and attacks"): a real ``pulmo serve`` process (SQLite, and
PostgreSQL) is killed with SIGKILL, together with its analysis worker, in the middle of uploads
and of analyses, and started again on the same data folder.

* an upload whose request body was only half sent when the server died leaves nothing behind;
* an upload killed after its files were written but before its database transaction committed
  (the test holds a database lock so that the kill lands exactly there) leaves the study list
  unchanged, and sending it again stores it whole (nothing counts as a duplicate);
* a worker killed in the middle of an analysis: the server gives the job to a new worker at once;
* the server and its worker killed together in the middle of an analysis: after a restart the
  job is retried once its heartbeat is stale (``PULMO_JOB_STALE_S``) and the study reaches
  ``done``;
* in the end every acknowledged upload is present with all its instances and files, every job
  ended ``done`` and saved its result exactly once, and the audit chain is intact.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from web_kit import PASSWORD, REPO, free_port

pytestmark = pytest.mark.slow
STALE_S = "2"   # a job whose worker stopped beating for 2 s is given back to the queue


class Server:
    """``pulmo serve`` in its own process group (the server and its worker processes), so that
    one SIGKILL takes them all down as a power cut or the OOM killer would."""

    def __init__(self, data_dir: Path, database_url: str | None, workers: int):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = data_dir.parent / f"server-{port}.log"
        tmp = data_dir.parent / "tmp"   # what a killed process leaves in its temporary folder stays here
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(REPO), "PULMO_ADMIN_PASSWORD": PASSWORD, "PULMO_JOB_STALE_S": STALE_S,
               "TMPDIR": str(tmp)}
        env.pop("PULMO_DATABASE_URL", None)
        if database_url:
            env["PULMO_DATABASE_URL"] = database_url
        self.proc = subprocess.Popen([sys.executable, "-m", "pulmo", "serve", "--port", str(port), "--data-dir",
                                      str(data_dir), "--workers", str(workers)], env=env,
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        end = time.time() + 60
        while time.time() < end:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.kill()
        raise AssertionError("pulmo serve did not answer: " + self.log.read_text()[-3000:])

    def kill(self) -> None:
        """SIGKILL to the server's process group (the server and its workers)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def _variant(base_zip: bytes, patient: str, study_uid: str | None = None) -> tuple[bytes, str]:
    """The zip's instances with new series and SOP Instance UIDs, in study ``study_uid`` (a new
    one when None) of patient ``patient``; returns (zip, study UID)."""
    import pydicom
    from pydicom.uid import generate_uid

    study_uid = study_uid or generate_uid()
    series = generate_uid()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(base_zip)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            ds = pydicom.dcmread(io.BytesIO(zin.read(name)))
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.PatientID, ds.PatientName = patient, f"Crash^{patient}"
            b = io.BytesIO()
            ds.save_as(b, enforce_file_format=True)
            zout.writestr(name, b.getvalue())
    return out.getvalue(), study_uid


def _multipart(data: bytes, name: str = "study.zip") -> tuple[bytes, str]:
    boundary = "pulmo-crash-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/zip\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Db:
    """Direct reads of the platform's database (and, for SQLite, its file)."""

    def __init__(self, data_dir: Path, database_url: str | None):
        from sqlalchemy import create_engine

        self.sqlite = database_url is None
        self.path = data_dir / "pulmo.db"
        url = f"sqlite:///{self.path}" if self.sqlite else database_url.replace("postgresql://", "postgresql+psycopg://")
        self.url = database_url
        self.engine = create_engine(url)

    def rows(self, sql: str, **params) -> list:
        from sqlalchemy import text

        with self.engine.connect() as c:
            return list(c.execute(text(sql), params).all())

    def one(self, sql: str, **params):
        return self.rows(sql, **params)[0][0]

    def snapshot(self) -> dict:
        return {"studies": self.rows("SELECT id, study_uid, n_instances FROM studies ORDER BY id"),
                "instances": self.one("SELECT count(*) FROM instances"),
                "patients": self.one("SELECT count(*) FROM patients"),
                "jobs": self.rows("SELECT id, study_id, state FROM jobs ORDER BY id")}

    def hold_write_lock(self):
        """Block the platform's writes to ``instances`` (SQLite: every write) until released."""
        if self.sqlite:
            con = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            con.execute("BEGIN IMMEDIATE")
            return con
        import psycopg

        con = psycopg.connect(self.url)
        con.execute("LOCK TABLE instances IN SHARE ROW EXCLUSIVE MODE")
        return con


def _wait(what: str, check, timeout: float, every: float = 0.1):
    end = time.time() + timeout
    while time.time() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _token(http, url: str, username: str) -> str:
    r = http.post(url + "/api/auth/token", data={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def _running_job(db: Db, study_id: int) -> tuple[int, int] | None:
    """(job id, worker pid) of the study's running job, once a worker has it."""
    rows = db.rows("SELECT id, worker FROM jobs WHERE study_id = :s AND state = 'running'", s=study_id)
    if rows and rows[0][1]:
        return rows[0][0], int(rows[0][1].rsplit(":", 1)[1])
    return None


def test_sigkill_during_uploads_and_analyses_loses_nothing(database_url, demo_zip, tmp_path):
    httpx = pytest.importorskip("httpx")
    t_start = time.time()
    data_dir = tmp_path / "data"
    db = None
    files_dir = data_dir / "files"
    n = len(zipfile.ZipFile(io.BytesIO(demo_zip)).namelist())
    zip_a, uid_a = _variant(demo_zip, "CRASH-A")
    zip_a2, _ = _variant(demo_zip, "CRASH-A", study_uid=uid_a)      # a second series of study A
    zip_b, uid_b = _variant(demo_zip, "CRASH-B")
    servers: list[Server] = []

    def serve(workers: int) -> Server:
        servers.append(Server(data_dir, database_url, workers))
        return servers[-1]

    def upload(http, url, token, data, name="study.zip"):
        return http.post(url + "/api/studies", headers={"Authorization": "Bearer " + token},
                         files={"file": (name, data, "application/zip")})

    try:
        with httpx.Client(timeout=120) as http:
            # --- 1. an acknowledged upload, then the server killed while a request body is half sent
            s1 = serve(workers=0)
            admin = _token(http, s1.url, "admin")
            r = http.post(s1.url + "/api/users", headers={"Authorization": "Bearer " + admin},
                          json={"username": "rad", "password": PASSWORD, "role": "radiologist",
                                "organisation": "Hospital A"})
            assert r.status_code == 201, r.text
            token = _token(http, s1.url, "rad")
            r = upload(http, s1.url, token, zip_a)
            assert r.status_code == 201 and r.json()["stored"] == n, r.text
            id_a = r.json()["id"]
            db = Db(data_dir, database_url)
            before = db.snapshot()
            body, ctype = _multipart(zip_b)
            with socket.create_connection(("127.0.0.1", int(s1.url.rsplit(":", 1)[1]))) as sock:
                sock.sendall((f"POST /api/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                              f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode())
                sock.sendall(body[:len(body) // 2])
                time.sleep(0.5)
                s1.kill()
            assert db.snapshot() == before                           # nothing of the half-sent upload
            assert len(list(files_dir.glob("orgs/*/studies/*/dicom/*.dcm"))) == n

            # --- 2. the server killed after an upload's files were written, before its commit
            s2 = serve(workers=0)
            dicom_a = next(files_dir.glob(f"orgs/*/studies/{id_a}/dicom"))
            lock = db.hold_write_lock()
            answer: list = []
            sender = threading.Thread(target=lambda: answer.append(_try(upload, http, s2.url, token, zip_a2)))
            sender.start()
            _wait("the upload's files", lambda: len(list(dicom_a.glob("*.dcm"))) >= 2 * n, 60, every=0.05)
            time.sleep(0.5)
            assert not answer, "the upload was answered while its transaction could not commit"
            s2.kill()
            lock.close()                                             # (its transaction rolled back)
            sender.join(30)
            assert answer and isinstance(answer[0], Exception)       # the client saw the connection drop
            assert db.snapshot() == before                           # the study list is unchanged

            # --- 3. a worker killed in the middle of an analysis (the server stays up)
            s3 = serve(workers=1)
            token = _token(http, s3.url, "rad")
            job_1, pid = _wait("the worker to start analysing study A", lambda: _running_job(db, id_a), 60)
            time.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            state, finished = db.rows("SELECT state, finished_at FROM jobs WHERE id = :j", j=job_1)[0]
            assert state in ("running", "queued") and finished is None   # killed mid-analysis (or given back)
            r = upload(http, s3.url, token, zip_a2)                    # sent again: stored whole
            assert r.status_code == 201, r.text
            assert (r.json()["stored"], r.json()["duplicates"], r.json()["id"]) == (n, 0, id_a)
            r = upload(http, s3.url, token, zip_b)                     # the one lost in 1.
            assert r.status_code == 201 and r.json()["stored"] == n, r.text
            id_b = r.json()["id"]
            _wait("study A analysed", lambda: http.get(f"{s3.url}/api/studies/{id_a}", headers={
                "Authorization": "Bearer " + token}).json()["status"] == "done", 90, every=0.3)
            assert db.one("SELECT attempts FROM jobs WHERE id = :j", j=job_1) == 2

            # --- 4. the server and its worker killed together in the middle of an analysis
            job_b, _ = _wait("the worker to start analysing study B", lambda: _running_job(db, id_b), 90)
            time.sleep(0.3)
            s3.kill()
            assert db.one("SELECT state FROM jobs WHERE id = :j", j=job_b) == "running"
            s4 = serve(workers=1)
            token = _token(http, s4.url, "rad")
            _wait("study B analysed after the restart", lambda: http.get(f"{s4.url}/api/studies/{id_b}", headers={
                "Authorization": "Bearer " + token}).json()["status"] == "done", 90, every=0.3)

            # --- every acknowledged upload is there, whole, analysed once per job
            listed = http.get(s4.url + "/api/studies", headers={"Authorization": "Bearer " + token}).json()
            assert sorted(s["id"] for s in listed["items"]) == sorted([id_a, id_b])
            assert {s["id"]: (s["status"], s["n_instances"]) for s in listed["items"]} == \
                {id_a: ("done", 2 * n), id_b: ("done", n)}
            assert sorted(db.rows("SELECT study_uid FROM studies")) == sorted([(uid_a,), (uid_b,)])
            assert db.one("SELECT count(*) FROM instances WHERE study_id = :s", s=id_a) == 2 * n
            assert db.one("SELECT count(*) FROM instances WHERE study_id = :s", s=id_b) == n
            for (key,) in db.rows("SELECT key FROM instances"):
                assert (files_dir / key).is_file(), key
            jobs = db.rows("SELECT id, study_id, state, attempts FROM jobs ORDER BY id")
            assert all(state == "done" for _, _, state, _ in jobs), jobs
            assert {j: a for j, _, _, a in jobs if j in (job_1, job_b)} == {job_1: 2, job_b: 2}
            analysed = [d for (d,) in db.rows("SELECT detail FROM audit_log WHERE action = 'study.analysed'")]
            per_job = [json.loads(d)["job"] for d in analysed]
            assert sorted(per_job) == sorted(j for j, *_ in jobs)      # each job's result saved exactly once
            r = http.get(f"{s4.url}/api/studies/{id_b}/viewer/hu/axial/10", headers={"Authorization": "Bearer " + token})
            assert r.status_code == 200 and r.content
            assert http.get(f"{s4.url}/api/studies/{id_a}", headers={
                "Authorization": "Bearer " + token}).json()["results"]["quantification"]
        s4.stop()
        if db.sqlite:
            with sqlite3.connect(db.path) as con:
                assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        from sqlalchemy.orm import Session

        from pulmo.web.services import audit

        with Session(db.engine) as s:
            chain = audit.verify(s)
        assert chain["ok"], chain
        print(f"\ncrash recovery ({'sqlite' if db.sqlite else 'postgresql'}): {time.time() - t_start:.0f} s")
    finally:
        for s in servers:
            s.stop()
        if db is not None:
            db.engine.dispose()


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the connection dropped by the kill
        return exc
