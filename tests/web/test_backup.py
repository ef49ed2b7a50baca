"""Backups and restores, as docs/deployment.md tells an administrator to make them: `pulmo backup`
/ `pulmo restore` for the single-machine default, pg_dump / pg_restore for PostgreSQL."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import pytest

from web_kit import PASSWORD, PG_BIN, REPO, analyse_all, make_platform, upload


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pulmo", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def _check_restored(data_dir, sid, database_url=None):
    from fastapi.testclient import TestClient

    from pulmo.web.app import create_app
    from pulmo.web.db import transaction
    from pulmo.web.services import audit
    from pulmo.web.settings import Settings

    app = create_app(Settings(data_dir=data_dir, database_url=database_url, workers=0))
    try:
        with TestClient(app) as client:
            tok = client.post("/api/auth/token", data={"username": "rad", "password": PASSWORD}).json()["access_token"]
            h = {"Authorization": "Bearer " + tok}
            got = client.get(f"/api/studies/{sid}", headers=h).json()
            assert got["status"] == "done" and got["results"]["quantification"]
            if database_url is None:   # files travel with the single-machine backup
                assert client.get(f"/api/studies/{sid}/viewer/hu/axial/3", headers=h).status_code == 200
                assert client.get(f"/api/studies/{sid}/files/seg.dcm", headers=h).content[128:132] == b"DICM"
        with transaction(app.state.sessions) as s:
            assert audit.verify(s)["ok"]
    finally:
        app.state.engine.dispose()


@pytest.mark.slow
def test_backup_while_running_and_restore_into_a_new_folder(tmp_path, demo_zip):
    p = make_platform(tmp_path / "data")
    try:
        sid = upload(p, demo_zip).json()["id"]
        analyse_all(p)
        r = _cli("backup", "-o", tmp_path / "b.tar", "--data-dir", tmp_path / "data")
        assert r.returncode == 0, r.stderr
        assert "1 studies" in r.stdout
    finally:
        p.client.close()
        p.app.state.engine.dispose()
    names = tarfile.open(tmp_path / "b.tar").getnames()
    assert names[0] == "pulmo-backup.json" and "pulmo.db" in names
    assert not any(n.startswith("cache") or n.endswith("-wal") for n in names)
    r = _cli("restore", tmp_path / "b.tar", "--data-dir", tmp_path / "restored")
    assert r.returncode == 0, r.stderr
    _check_restored(tmp_path / "restored", sid)
    # the same archive again: the folder is taken now
    r = _cli("restore", tmp_path / "b.tar", "--data-dir", tmp_path / "restored")
    assert r.returncode == 2 and "not empty" in r.stderr and "Traceback" not in r.stderr


def test_bad_backups_and_targets_are_refused(tmp_path):
    p = make_platform(tmp_path / "data")
    p.client.close()
    p.app.state.engine.dispose()
    r = _cli("backup", "-o", tmp_path / "data" / "inside.tar", "--data-dir", tmp_path / "data")
    assert r.returncode == 2 and "outside the data folder" in r.stderr
    r = _cli("backup", "-o", tmp_path / "x.tar", "--data-dir", tmp_path / "nothing")
    assert r.returncode == 2 and "no Pulmo platform" in r.stderr
    r = _cli("backup", "-o", tmp_path / "x.tar", "--data-dir", tmp_path / "data",
             env={"PULMO_DATABASE_URL": "postgresql://u@127.0.0.1:9/x"})
    assert r.returncode == 2 and "pg_dump" in r.stderr and not (tmp_path / "x.tar").exists()
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as t:
        for name, data in (("pulmo-backup.json", b'{"format": 1}'), ("pulmo.db", b""), ("../escape.txt", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    (tmp_path / "evil.tar").write_bytes(evil.getvalue())
    for bad, words in (("junk.tar", "not a Pulmo backup"), ("evil.tar", "refused member")):
        r = _cli("restore", tmp_path / bad, "--data-dir", tmp_path / f"r-{bad}")
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / f"r-{bad}").exists()
    assert not (tmp_path.parent / "escape.txt").exists()


@pytest.mark.slow
def test_postgresql_dump_and_restore(tmp_path, postgres, demo_zip):
    if not (PG_BIN / "pg_dump").exists():
        pytest.skip("pg_dump not installed")
    url = postgres.new_database()
    p = make_platform(tmp_path / "data", url)
    try:
        sid = upload(p, demo_zip).json()["id"]
        analyse_all(p)
    finally:
        p.client.close()
        p.app.state.engine.dispose()
    dump = tmp_path / "pulmo.dump"
    base = ["-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres"]
    subprocess.run([str(PG_BIN / "pg_dump"), *base, "-Fc", "-f", str(dump), url.rsplit("/", 1)[1]], check=True,
                   timeout=120)
    target = postgres.new_database()
    subprocess.run([str(PG_BIN / "pg_restore"), *base, "--no-owner", "-d", target.rsplit("/", 1)[1], str(dump)],
                   check=True, timeout=120)
    _check_restored(tmp_path / "data2", sid, database_url=target)
