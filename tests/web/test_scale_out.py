"""Past one machine (issue 22): 2 API processes and 3 workers on procrastinate share one real
PostgreSQL server and one real S3-compatible store (s3rver), all on loopback. 50 studies go in
through both API processes; one worker is killed with SIGKILL in the middle of an analysis. All 50
finish, none is analysed twice to completion, nothing acknowledged is lost."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

import s3_kit
from web_kit import PASSWORD, REPO, free_port, start_server

pytestmark = pytest.mark.slow
N_STUDIES = 50


def _variants(base_zip: bytes, n: int) -> list[bytes]:
    """``n`` distinct studies (new patient, study, series and instance UIDs) from one zip."""
    import pydicom
    from pydicom.uid import generate_uid

    with zipfile.ZipFile(io.BytesIO(base_zip)) as z:
        members = [(name, z.read(name)) for name in z.namelist()]
    out = []
    for k in range(n):
        study, series = generate_uid(), generate_uid()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for name, data in members:
                ds = pydicom.dcmread(io.BytesIO(data))
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.PatientID, ds.PatientName = f"SCALE-{k:03d}", f"Scale^Test{k:03d}"
                b = io.BytesIO()
                ds.save_as(b, enforce_file_format=True)
                z.writestr(name, b.getvalue())
        out.append(buf.getvalue())
    return out


def _token(http, url: str) -> str:
    r = http.post(url + "/api/auth/token", data={"username": "admin", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def test_two_api_processes_three_workers_fifty_studies_one_worker_killed(postgres, demo_zip, tmp_path):
    httpx = pytest.importorskip("httpx")
    why = s3_kit.available()
    if why:
        pytest.skip(why)
    s3 = s3_kit.S3Server()
    procs: list[subprocess.Popen] = []
    servers = []
    try:
        db = postgres.new_database()
        env = {**s3.env(), "PULMO_DATABASE_URL": db, "PULMO_STORAGE_URL": f"s3://{s3.bucket}/scale",
               "PULMO_TASK_QUEUE": "procrastinate", "PULMO_QUEUE_HEARTBEAT_S": "1", "PULMO_QUEUE_STALLED_S": "4",
               "PULMO_JOB_STALE_S": "8"}
        servers = [start_server(tmp_path / f"api{i}" / "data", "--workers", "0", env=env) for i in range(2)]

        def worker(i: int) -> subprocess.Popen:
            log = open(tmp_path / f"worker{i}.log", "wb")
            return subprocess.Popen([sys.executable, "-m", "pulmo", "worker", "--data-dir", str(tmp_path / f"w{i}")],
                                    env={**os.environ, "PYTHONPATH": str(REPO), **env}, stdout=log,
                                    stderr=subprocess.STDOUT)

        procs = [worker(i) for i in range(3)]
        studies = _variants(demo_zip, N_STUDIES)
        with httpx.Client(timeout=120) as http:
            tokens = [_token(http, s.url) for s in servers]

            def send(k: int) -> int:
                i = k % 2
                r = http.post(servers[i].url + "/api/studies", headers={"Authorization": "Bearer " + tokens[i]},
                              files={"file": (f"s{k}.zip", studies[k], "application/zip")})
                assert r.status_code == 201, r.text
                return r.json()["id"]

            with ThreadPoolExecutor(4) as pool:
                ids = list(pool.map(send, range(N_STUDIES)))
            assert len(set(ids)) == N_STUDIES

            # kill a worker while it is analysing (its job row names its pid)
            from sqlalchemy import create_engine, text

            engine = create_engine(db.replace("postgresql://", "postgresql+psycopg://"))
            victim = None
            end = time.time() + 120
            while victim is None and time.time() < end:
                with engine.connect() as c:
                    running = [w for (w,) in c.execute(text("SELECT worker FROM jobs WHERE state = 'running'"))]
                for w in running:
                    pid = int(w.split(":")[1].split("/")[0])
                    if pid in [p.pid for p in procs]:
                        victim = pid
                        break
                time.sleep(0.2)
            assert victim is not None, "no worker was seen analysing"
            os.kill(victim, signal.SIGKILL)
            killed_at = time.time()

            end = time.time() + 900
            states = {}
            while time.time() < end:
                with engine.connect() as c:
                    states = dict(c.execute(text("SELECT status, count(*) FROM studies GROUP BY status")).all())
                if states.get("done", 0) + states.get("failed", 0) == N_STUDIES:
                    break
                time.sleep(2)
            assert states.get("done") == N_STUDIES, states
            with engine.connect() as c:
                done_jobs = dict(c.execute(text(
                    "SELECT study_id, count(*) FROM jobs WHERE state = 'done' GROUP BY study_id")).all())
                analysed = dict(c.execute(text(
                    "SELECT target_id, count(*) FROM audit_log WHERE action = 'study.analysed' GROUP BY target_id")).all())
                instances = c.execute(text("SELECT count(*) FROM instances")).scalar()
                retried = c.execute(text("SELECT count(*) FROM jobs WHERE attempts > 1")).scalar()
            assert sorted(done_jobs) == sorted(ids) and set(done_jobs.values()) == {1}
            assert sorted(int(k) for k in analysed) == sorted(ids) and set(analysed.values()) == {1}
            assert retried >= 1                                     # the killed worker's job was run again
            per_study = len(zipfile.ZipFile(io.BytesIO(studies[0])).namelist())
            assert instances == N_STUDIES * per_study               # every acknowledged instance kept
            # both API processes serve the same results from the shared store
            for i, s in enumerate(servers):
                sid = ids[(i + 1) % N_STUDIES]
                r = http.get(f"{s.url}/api/studies/{sid}/viewer/hu/axial/5",
                             headers={"Authorization": "Bearer " + tokens[i]})
                assert r.status_code == 200 and r.content
            print(f"\n50 studies done {time.time() - killed_at:.0f} s after the kill; retried jobs: {retried}")
            engine.dispose()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        for s in servers:
            s.stop()
        s3.stop()
