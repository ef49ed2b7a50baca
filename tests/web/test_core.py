"""The platform's core on both stores: login and tokens, users by role, upload and dedup, the
queue and a worker, the worklist order, viewer slices, the triage calculator."""

from __future__ import annotations

import pytest
from web_kit import PASSWORD, analyse_all, upload


def test_token_and_me(platform):
    r = platform.client.get("/api/me", headers=platform.headers("rad"))
    assert r.status_code == 200 and r.json()["role"] == "radiologist" and r.json()["organisation"] == "Hospital A"
    assert platform.client.get("/api/me").status_code == 401
    assert platform.client.get("/api/me", headers={"Authorization": "Bearer forged"}).status_code == 401
    r = platform.client.post("/api/auth/token", data={"username": "rad", "password": "wrong password!"})
    assert r.status_code == 401 and "wrong user name or password" in r.json()["detail"]


def test_login_attempts_are_limited(platform):
    for _ in range(platform.settings.login_attempts):
        assert platform.client.post("/api/auth/token", data={"username": "clin", "password": "nope-nope-1"}).status_code == 401
    r = platform.client.post("/api/auth/token", data={"username": "clin", "password": PASSWORD})
    assert r.status_code == 429 and "too many failed logins" in r.json()["detail"]


def test_only_admin_creates_users(platform):
    body = {"username": "new_user", "password": "a long password", "role": "clinician", "organisation": "Hospital C"}
    assert platform.client.post("/api/users", json=body, headers=platform.headers("rad")).status_code == 403
    assert platform.client.post("/api/users", json=body).status_code == 401
    r = platform.client.post("/api/users", json=body, headers=platform.headers("admin"))
    assert r.status_code == 201 and r.json()["organisation"] == "Hospital C"
    assert platform.client.post("/api/users", json=body, headers=platform.headers("admin")).status_code == 409
    bad = {**body, "username": "x2", "password": "short"}
    assert platform.client.post("/api/users", json=bad, headers=platform.headers("admin")).status_code == 400


def test_upload_dedup_analyse_and_view(platform, demo_zip):
    r = upload(platform, demo_zip)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["stored"] == 96 and r.json()["duplicates"] == 0
    again = upload(platform, demo_zip)
    assert again.status_code == 201 and again.json()["stored"] == 0 and again.json()["duplicates"] == 96
    h = platform.headers("rad")
    assert platform.client.get(f"/api/studies/{sid}", headers=h).json()["status"] == "queued"
    analyse_all(platform)
    s = platform.client.get(f"/api/studies/{sid}", headers=h).json()
    assert s["status"] == "done", s["error"]
    assert s["flag"] == "positive" and s["percent_involved"] > 0.5 and s["results"]["quantification"]
    assert s["synthetic"] is True and s["patient"]["name"].startswith("SYNTHETIC")
    meta = platform.client.get(f"/api/studies/{sid}/viewer", headers=h).json()
    nz, ny, nx = meta["shape"]
    r = platform.client.get(f"/api/studies/{sid}/viewer/hu/axial/{meta['key_slice']}", headers=h)
    assert r.status_code == 200 and len(r.content) == ny * nx * 2 and r.headers["x-dtype"] == "int16"
    r = platform.client.get(f"/api/studies/{sid}/viewer/labels/coronal/{ny // 2}", headers=h)
    assert r.status_code == 200 and len(r.content) == nz * nx
    assert platform.client.get(f"/api/studies/{sid}/viewer/hu/axial/{nz}", headers=h).status_code == 404
    r = platform.client.get(f"/api/studies/{sid}/files/seg.dcm", headers=h)
    assert r.status_code == 200 and r.content[128:132] == b"DICM"
    r = platform.client.get(f"/api/studies/{sid}/files/..%2F..%2F..%2Fpulmo.db", headers=h)
    assert r.status_code == 404 and b"SQLite" not in r.content


def test_not_dicom_is_refused_and_nothing_stored(platform):
    r = platform.client.post("/api/studies", files={"file": ("notes.txt", b"hello", "text/plain")},
                             headers=platform.headers("rad"))
    assert r.status_code == 415 and "no DICOM instance" in r.json()["detail"]
    assert platform.client.get("/api/studies", headers=platform.headers("rad")).json()["total"] == 0


def test_triage_calculator_scores_without_a_model(platform):
    patient = {"age": 70, "respiratory_rate": 31, "urea_mmol_l": 9, "systolic_bp": 85, "confusion": 1}
    r = platform.client.post("/api/triage/predict", json=patient, headers=platform.headers("clin"))
    assert r.status_code == 200
    out = r.json()
    assert out["prediction"] is None and out["model"]["installed"] is False
    assert "cojocchen/covid19_critically_ill" in out["model"]["repository"]
    assert out["scores"]["curb65"]["total"] == 5


def test_an_upload_to_a_queued_study_is_not_missed_by_a_worker_claiming_it(platform, demo_zip):
    """PostgreSQL: while an upload adds instances to a study whose job is still queued, a worker
    claiming that job waits for the upload's commit (so it analyses what was added); SQLite
    serialises writers anyway."""
    import threading
    import time

    from sqlalchemy import select

    from pulmo.web.db import transaction
    from pulmo.web.models import Job, Study
    from pulmo.web.services import jobs

    if platform.settings.url.startswith("sqlite"):
        pytest.skip("SQLite serialises writers: there is no such race to test")
    sid = upload(platform, demo_zip).json()["id"]
    factory = platform.app.state.sessions
    claimed_at = []
    with transaction(factory) as upload_tx:
        study = upload_tx.get(Study, sid)
        assert jobs.enqueue(upload_tx, study) is None          # one is waiting: locked, not duplicated
        job_id = upload_tx.execute(select(Job.id).where(Job.study_id == sid)).scalar()

        def worker():
            with transaction(factory) as s:
                jobs.claim_job(s, job_id, "test-worker")
            claimed_at.append(time.monotonic())
        t = threading.Thread(target=worker)
        t.start()
        time.sleep(1.0)
        assert claimed_at == []                                # the claim waits for the upload
        committed_at = time.monotonic()
    t.join(10)
    assert claimed_at and claimed_at[0] >= committed_at


def test_stale_temporary_folders_are_removed(tmp_path):
    import os
    import time

    from pulmo.web.services.ingest import remove_stale_temp

    old, young, other = tmp_path / "pulmo-upload-abc", tmp_path / "pulmo-study-def", tmp_path / "pulmo-data"
    for d in (old, young, other):
        d.mkdir()
        (d / "f").write_bytes(b"x")
    past = time.time() - 3 * 86400
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    assert remove_stale_temp(24, tmp_path) == 1
    assert not old.exists() and young.exists() and other.exists()   # a live one and the user's data stay
