"""Analysis workers: processes that take queued jobs from the database and run them.

``pulmo serve`` starts ``Settings.workers`` of them beside the web server (and restarts one that
dies); ``run_worker`` is also what a worker on another machine runs. A worker never holds a job
silently: it beats the job's heartbeat every ``HEARTBEAT_S``; a job whose worker was killed is
given back to the queue (:func:`pulmo.web.services.jobs.requeue_stale`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback

from sqlalchemy import select

from pulmo.errors import PulmoError
from pulmo.web.db import make_engine, session_factory, transaction
from pulmo.web.models import Job, Study
from pulmo.web.services import analysis, audit, deliveries, jobs
from pulmo.web.settings import Settings
from pulmo.web.storage import make_storage

log = logging.getLogger("pulmo.worker")
HEARTBEAT_S = 5.0
IDLE_S = 0.5


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def beat_interval(settings: Settings) -> float:
    """Seconds between a running job's heartbeats: a quarter of the staleness limit, at most 5 s."""
    return min(HEARTBEAT_S, settings.job_stale_s / 4)


def _beat(factory, job_id: int, name: str, stop: threading.Event, every_s: float = HEARTBEAT_S) -> None:
    while not stop.wait(every_s):
        try:
            with transaction(factory) as s:
                if not jobs.heartbeat(s, job_id, name):
                    return
        except Exception:  # noqa: BLE001 - a missed beat is retried; the job is not lost
            log.warning("heartbeat of job %s failed", job_id, exc_info=True)


def run_one(factory, storage, settings: Settings, name: str) -> bool:
    """Claim and run one job; False when the queue was empty."""
    with transaction(factory) as s:
        jobs.requeue_stale(s, settings.job_stale_s, settings.job_max_attempts)
        job = jobs.claim(s, name)
        if job is None:
            return False
        job_id, study_id = job.id, job.study_id
    run_job(factory, storage, job_id, study_id, name, beat_interval(settings))
    return True


def run_job(factory, storage, job_id: int, study_id: int, name: str, beat_s: float = HEARTBEAT_S) -> None:
    """Run job ``job_id`` (analysis of ``study_id``), already claimed by worker ``name``: beat its
    heartbeat, save the result (only while the job is still this worker's), or record the failure."""
    stop = threading.Event()
    beat = threading.Thread(target=_beat, args=(factory, job_id, name, stop, beat_s), daemon=True)
    beat.start()
    error = ""
    try:
        with transaction(factory) as s:
            study = s.get(Study, study_id)
            prefix, keys = analysis.study_prefix(study), analysis.instance_keys(s, study)
        result = analysis.compute(storage, prefix, keys)
        with transaction(factory) as s:
            if not jobs.finish(s, job_id, name):  # given away meanwhile: this result is not kept
                raise _Lost()
            study = s.get(Study, study_id)
            pending = s.execute(select(Job.id).where(Job.study_id == study_id, Job.state == "queued")).first()
            analysis.save(study, result, pending=pending is not None)
            deliveries.after_analysis(s, study)   # results out to the organisation's DICOM destinations
            audit.record(s, "study.analysed", None, "study", study_id, detail={"job": job_id, "worker": name},
                         organisation_id=study.organisation_id)
        try:  # the follow-up comparison with the patient's earlier study; never fails the analysis
            from pulmo.web.services import comparison

            comparison.after_analysis(factory, storage, study_id, result)
        except Exception:  # noqa: BLE001
            log.warning("comparison after the analysis of study %s failed", study_id, exc_info=True)
    except _Lost:
        log.warning("job %s was given to another worker; result dropped", job_id)
    except PulmoError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - the study shows that it failed and why
        log.error("job %s failed:\n%s", job_id, traceback.format_exc())
        error = f"internal error while analysing ({type(exc).__name__}); the administrator's log has details"
    finally:
        stop.set()
    if error:
        with transaction(factory) as s:
            if jobs.finish(s, job_id, name, error=error):
                study = s.get(Study, study_id)
                study.status, study.error = "failed", error
                audit.record(s, "study.failed", None, "study", study_id, detail={"error": error[:500]},
                             organisation_id=study.organisation_id)


class _Lost(Exception):
    pass


def run_worker(settings: Settings, stop: threading.Event | None = None, once: bool = False) -> None:
    """Run jobs until ``stop`` is set (or the queue is empty, with ``once``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("highdicom", "pydicom"):  # their INFO lines describe every object they build
        logging.getLogger(noisy).setLevel(logging.WARNING)
    engine = make_engine(settings.url)
    factory = session_factory(engine)
    storage = make_storage(settings)
    name = worker_name()
    stop = stop or threading.Event()
    log.info("worker %s started", name)
    while not stop.is_set():
        try:
            did = run_one(factory, storage, settings, name)
        except Exception:  # noqa: BLE001 - e.g. the database away for a moment: wait, try again
            log.warning("worker %s: could not take a job", name, exc_info=True)
            did = False
            stop.wait(2.0)
        if not did:
            if once:
                break
            stop.wait(IDLE_S)
    engine.dispose()


def worker_process(settings: Settings) -> None:
    """Entry point of a worker process started by ``pulmo serve`` (stops on SIGTERM)."""
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    parent = os.getppid()

    def orphaned():   # the serving process is gone (killed): stop too, the job goes back to the queue
        while not stop.wait(2.0):
            if os.getppid() != parent:
                stop.set()
    threading.Thread(target=orphaned, daemon=True).start()
    if settings.task_queue == "procrastinate":
        from pulmo.web import task_queue

        task_queue.run_worker(settings, stop)
    else:
        run_worker(settings, stop)


def job_summary(session) -> dict:
    return jobs.counts(session)


__all__ = ["run_worker", "run_one", "worker_process", "worker_name", "Job"]
