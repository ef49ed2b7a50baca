"""`GET /api/health` tells an administrator what is wrong: the store gone, jobs nobody takes."""

from __future__ import annotations

import datetime as dt

import pytest

import s3_kit
from web_kit import make_platform, upload


def test_health_is_admin_only_and_all_green_on_a_fresh_platform(platform):
    assert platform.client.get("/api/health").status_code == 401
    assert platform.client.get("/api/health", headers=platform.headers("rad")).status_code == 403
    r = platform.client.get("/api/health", headers=platform.headers("admin"))
    assert r.status_code == 200 and r.json()["ok"] is True
    assert {c["name"] for c in r.json()["checks"]} == {"database", "file store", "analysis queue", "DICOM deliveries"}


def test_a_job_nobody_takes_is_reported(sqlite_platform, demo_zip):
    from sqlalchemy import update

    from pulmo.web.db import transaction
    from pulmo.web.models import Job

    p = sqlite_platform
    assert upload(p, demo_zip).status_code == 201
    with transaction(p.app.state.sessions) as s:
        s.execute(update(Job).values(created_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
                                     - dt.timedelta(hours=1)))
    body = p.client.get("/api/health", headers=p.headers("admin")).json()
    q = next(c for c in body["checks"] if c["name"] == "analysis queue")
    assert body["ok"] is False and q["ok"] is False and "no worker is taking jobs" in q["detail"]


def test_object_store_down_is_reported_and_pages_answer_503(tmp_path, monkeypatch, demo_zip):
    why = s3_kit.available()
    if why:
        pytest.skip(why)
    s3 = s3_kit.S3Server()
    try:
        for k, v in s3.env().items():
            monkeypatch.setenv(k, v)
        p = make_platform(tmp_path / "data", storage_url=f"s3://{s3.bucket}/h", s3_endpoint_url=s3.url)
        assert p.client.get("/api/health", headers=p.headers("admin")).json()["ok"] is True
        s3.process.kill()
        s3.process.wait()
        body = p.client.get("/api/health", headers=p.headers("admin")).json()
        st = next(c for c in body["checks"] if c["name"] == "file store")
        assert st["ok"] is False and "object store" in st["detail"]
        r = upload(p, demo_zip)
        assert r.status_code == 503 and "not reachable" in r.json()["detail"]
        p.client.close()
        p.app.state.engine.dispose()
    finally:
        s3.stop()
