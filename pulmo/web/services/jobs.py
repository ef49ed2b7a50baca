"""The analysis queue of a single installation, kept in the database.

A study gets one queued job when instances arrive (none while one is already waiting). A worker
claims the oldest queued job atomically (the row moves to ``running`` only if it is still
queued: with several workers exactly one wins), beats its heartbeat while it works, and ends it
``done`` or ``failed``. A job whose heartbeat is older than ``stale_s`` (its worker was killed)
goes back to the queue, up to ``max_attempts`` tries. Nothing acknowledged is lost: a job row is
committed with the upload that made it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from pulmo.web.db import NEW_JOBS
from pulmo.web.models import Job, Study, utcnow


def enqueue(session: Session, study: Study) -> Job | None:
    """Queue an analysis of ``study`` unless one is already waiting (a running one finishes and
    a new one analyses what arrived since)."""
    waiting = select(Job).where(Job.study_id == study.id, Job.state == "queued")
    if session.bind.dialect.name == "postgresql":
        # locked: a worker claiming it meanwhile either waits for this commit (and then analyses
        # what it added) or has claimed it already (the row is no longer queued: a new job is made)
        waiting = waiting.with_for_update()
    waiting = session.execute(waiting).scalar()
    if waiting is not None:
        return None
    job = Job(study_id=study.id)
    session.add(job)
    study.status = "queued" if study.status != "running" else study.status
    session.flush()
    session.info.setdefault(NEW_JOBS, []).append(job.id)   # handed to a task queue after the commit
    return job


def claim_job(session: Session, job_id: int, worker: str) -> Job | None:
    """Job ``job_id`` made ``running`` for ``worker`` if it is still queued, else None (another
    worker has it, or it ended): however often a task queue delivers a job, one run wins."""
    now = utcnow()
    won = session.execute(update(Job).where(Job.id == job_id, Job.state == "queued").values(
        state="running", worker=worker, started_at=now, heartbeat_at=now, attempts=Job.attempts + 1)
        .execution_options(synchronize_session=False)).rowcount
    if not won:
        return None
    job = session.get(Job, job_id, populate_existing=True)
    session.execute(update(Study).where(Study.id == job.study_id).values(status="running", error=""))
    return job


def queued_ids(session: Session, older_than_s: float = 0.0, limit: int = 1000) -> list[int]:
    """Ids of queued jobs created at least ``older_than_s`` seconds ago, oldest first."""
    limit_at = utcnow() - dt.timedelta(seconds=older_than_s)
    return list(session.execute(select(Job.id).where(Job.state == "queued", Job.created_at <= limit_at)
                                .order_by(Job.created_at, Job.id).limit(limit)).scalars())


def claim(session: Session, worker: str) -> Job | None:
    """The oldest queued job, now ``running`` for ``worker``; None when the queue is empty."""
    candidates = select(Job.id).where(Job.state == "queued").order_by(Job.created_at, Job.id).limit(5)
    if session.bind.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    for (job_id,) in session.execute(candidates).all():
        job = claim_job(session, job_id, worker)
        if job is not None:
            return job
    return None


def heartbeat(session: Session, job_id: int, worker: str) -> bool:
    """Keep a running job alive; False when it is no longer this worker's (given back as stale)."""
    return bool(session.execute(update(Job).where(Job.id == job_id, Job.worker == worker, Job.state == "running")
                                .values(heartbeat_at=utcnow())).rowcount)


def finish(session: Session, job_id: int, worker: str, error: str = "") -> bool:
    """End a job ``done`` (or ``failed`` with ``error``); False when it is no longer this worker's."""
    return bool(session.execute(update(Job).where(Job.id == job_id, Job.worker == worker, Job.state == "running")
                                .values(state="failed" if error else "done", finished_at=utcnow(),
                                        error=error)).rowcount)


def requeue_stale(session: Session, stale_s: float, max_attempts: int, dead_workers: tuple[str, ...] = ()) -> int:
    """Give back running jobs whose heartbeat is older than ``stale_s`` seconds, or whose worker is
    one of ``dead_workers``; a job that has had ``max_attempts`` tries fails instead. Returns how
    many were given back."""
    limit = utcnow() - dt.timedelta(seconds=stale_s)
    cond = Job.heartbeat_at < limit
    if dead_workers:
        cond = or_(cond, Job.worker.in_(dead_workers))
    stale = session.execute(select(Job).where(Job.state == "running", cond)).scalars().all()
    back = 0
    for job in stale:
        study = session.get(Study, job.study_id)
        if job.attempts >= max_attempts:
            job.state, job.finished_at = "failed", utcnow()
            job.error = f"the analysis stopped {job.attempts} times without finishing (worker lost); not retried"
            if study is not None:
                study.status, study.error = "failed", job.error
        else:
            job.state, job.worker = "queued", ""
            if study is not None:
                study.status = "queued"
            back += 1
    return back


def counts(session: Session) -> dict:
    from sqlalchemy import func

    rows = session.execute(select(Job.state, func.count(Job.id)).group_by(Job.state)).all()
    return {state: n for state, n in rows}
