"""What is wrong with the platform right now, in words an administrator acts on: the database,
the file or object store, the analysis queue (jobs waiting too long, workers gone silent, recent
failures). Each check answers ``{"name", "ok", "detail"}``; a check that cannot run says why."""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from pulmo.web.models import Job, utcnow

#: A queued job older than this, with nothing running, means no worker is taking jobs.
QUEUE_WAIT_WARN_S = 300.0


def _check(name: str, fn) -> dict:
    t0 = time.perf_counter()
    try:
        ok, detail = fn()
    except Exception as exc:  # noqa: BLE001 - the point is to say what failed
        ok, detail = False, f"{type(exc).__name__}: {str(exc)[:300]}"
    return {"name": name, "ok": ok, "detail": detail, "ms": round(1000 * (time.perf_counter() - t0), 1)}


def database(session: Session) -> dict:
    def run():
        session.execute(text("SELECT 1"))
        return True, f"{session.bind.dialect.name} answers"
    return _check("database", run)


def store(storage) -> dict:
    def run():
        check = getattr(storage, "check", None)
        if check is not None:
            check()
            return True, f"object store bucket {storage.bucket!r} reachable"
        key = "health/probe"
        storage.put_bytes(key, b"ok")
        ok = storage.read_bytes(key) == b"ok"
        return ok, "data folder writable" if ok else "the data folder did not give back what was written"
    return _check("file store", run)


def queue(session: Session, stale_s: float) -> dict:
    def run():
        counts = dict(session.execute(select(Job.state, func.count(Job.id)).group_by(Job.state)).all())
        now = utcnow()
        oldest = session.execute(select(func.min(Job.created_at)).where(Job.state == "queued")).scalar()
        stale = session.execute(select(func.count(Job.id)).where(
            Job.state == "running", Job.heartbeat_at < now - dt.timedelta(seconds=stale_s))).scalar()
        failed_day = session.execute(select(func.count(Job.id)).where(
            Job.state == "failed", Job.finished_at >= now - dt.timedelta(days=1))).scalar()
        problems = []
        wait = (now - oldest).total_seconds() if oldest else 0.0
        if oldest and wait > QUEUE_WAIT_WARN_S and not counts.get("running"):
            problems.append(f"a job has waited {wait / 60:.0f} min with none running: no worker is taking jobs "
                            "(start 'pulmo worker', or 'pulmo serve --workers 1')")
        if stale:
            problems.append(f"{stale} running job(s) without a heartbeat for {stale_s:.0f} s: their worker stopped, "
                            "they are given back to the queue")
        summary = (f"queued {counts.get('queued', 0)}, running {counts.get('running', 0)}, done {counts.get('done', 0)}, "
                   f"failed {counts.get('failed', 0)} ({failed_day} in the last 24 h)")
        return not problems, "; ".join(problems + [summary])
    return _check("analysis queue", run)


def dicom_deliveries(session: Session) -> dict:
    from pulmo.web.services import deliveries

    return _check("DICOM deliveries", lambda: deliveries.health(session))


def report(session: Session, storage, settings) -> dict:
    """Every check; ``ok`` when all pass."""
    checks = [database(session), store(storage), queue(session, settings.job_stale_s), dicom_deliveries(session)]
    return {"ok": all(c["ok"] for c in checks), "checks": checks, "at": utcnow().isoformat() + "Z"}
