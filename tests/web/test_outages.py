"""The database going down and coming back: a worker on the distributed queue survives the outage
and the study uploaded after it is analysed; nothing acknowledged is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from web_kit import PG_BIN, REPO, make_platform, upload

pytestmark = pytest.mark.slow


def test_worker_outlives_a_database_restart(postgres, tmp_path, demo_zip):
    from test_scale_out import _variants

    url = postgres.new_database()
    p = make_platform(tmp_path / "data", url, task_queue="procrastinate")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PULMO_DATABASE_URL": url, "PULMO_TASK_QUEUE": "procrastinate",
           "PULMO_DATA_DIR": str(p.settings.data_dir)}
    log = tmp_path / "worker.log"
    w = subprocess.Popen([sys.executable, "-m", "pulmo", "worker"], env=env, stdout=open(log, "wb"),
                         stderr=subprocess.STDOUT)
    first, second = _variants(demo_zip, 2)

    def wait_done(sid, seconds=120):
        end = time.time() + seconds
        while time.time() < end:
            st = p.client.get(f"/api/studies/{sid}", headers=p.headers("rad")).json()["status"]
            if st in ("done", "failed"):
                return st
            time.sleep(0.3)
        return st

    try:
        assert wait_done(upload(p, first).json()["id"]) == "done"
        postgres._run([str(PG_BIN / "pg_ctl"), "-D", str(postgres.data), "-m", "immediate", "stop"])
        time.sleep(6)
        assert w.poll() is None, log.read_text()[-2000:]          # still there, waiting for the database
        postgres._run([str(PG_BIN / "pg_ctl"), "-D", str(postgres.data), "-l", str(postgres.dir / "log"), "-w", "-o",
                       f"-p {postgres.port} -k {postgres.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])
        r = None
        for _ in range(20):   # the API's pool reconnects on its own
            r = upload(p, second)
            if r.status_code == 201:
                break
            time.sleep(0.5)
        assert r.status_code == 201, r.text
        assert wait_done(r.json()["id"]) == "done", log.read_text()[-2000:]
        assert w.poll() is None
    finally:
        w.terminate()
        w.wait(30)
        p.client.close()
        p.app.state.engine.dispose()
