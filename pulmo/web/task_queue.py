"""Analyses across machines on procrastinate, a distributed task queue that lives in PostgreSQL.

With ``Settings.task_queue == "procrastinate"`` (PostgreSQL only) every API process hands the
jobs it queued to procrastinate right after its commit, and any number of ``pulmo worker``
processes, on any machine that reaches the database and the object store, run them. The job
rows of :mod:`pulmo.web.services.jobs` stay the record of what must be analysed; procrastinate
brings delivery to a free worker (LISTEN/NOTIFY), priorities, worker heartbeats and stalled-job
detection:

* ``pulmo.analyze(job_id)`` claims the job row (queued -> running, one winner however often the
  task is delivered), runs the analysis, and saves it only while the row is still its own;
* ``pulmo.recover`` (periodic, every 10 s, one at a time): retries procrastinate jobs whose
  worker stopped sending heartbeats (killed), gives back job rows whose heartbeat went stale
  (:func:`~pulmo.web.services.jobs.requeue_stale`), and defers any queued row that has no
  waiting task (queued by a process without the queue, or lost between commit and hand-over).

The single-machine default (``"database"``) keeps the simple in-database queue of
:mod:`pulmo.web.worker`.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import text

from pulmo.errors import InputError
from pulmo.web.settings import Settings

log = logging.getLogger("pulmo.queue")
ANALYZE = "pulmo.analyze"
RECOVER = "pulmo.recover"
ANALYSIS_QUEUE = "analysis"
MAINTENANCE_QUEUE = "maintenance"
_SCHEMA_LOCK = 7_354_119  # PostgreSQL advisory lock: one process applies procrastinate's schema


def conninfo(database_url: str) -> str:
    """The libpq URL of a SQLAlchemy PostgreSQL URL."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://"):
        if database_url.startswith(prefix):
            return "postgresql://" + database_url[len(prefix):]
    if not database_url.startswith("postgresql://"):
        raise InputError("the distributed task queue (procrastinate) needs a PostgreSQL database: give "
                         "postgresql://... as the database URL", code="queue_needs_postgresql")
    return database_url


def make_app(settings: Settings, factory=None, storage=None):
    """The procrastinate app with Pulmo's tasks. ``factory`` / ``storage`` (a worker's session
    factory and object store) are needed only to run the tasks, not to defer them."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(settings.url)))

    @app.task(name=ANALYZE, queue=ANALYSIS_QUEUE, pass_context=True)
    def analyze(context, job_id: int) -> str:
        from pulmo.web.db import transaction
        from pulmo.web.services import jobs
        from pulmo.web.worker import beat_interval, run_job, worker_name

        name = f"{worker_name()}/{context.job.id}"
        with transaction(factory) as s:
            job = jobs.claim_job(s, job_id, name)
            if job is None:
                return "not queued (taken by another worker, or ended)"
            study_id = job.study_id
        run_job(factory, storage, job_id, study_id, name, beat_interval(settings))
        return "ran"

    @app.periodic(cron="* * * * * */10", periodic_id="recover")
    @app.task(name=RECOVER, queue=MAINTENANCE_QUEUE, queueing_lock=RECOVER, pass_context=False)
    async def recover(timestamp: int) -> dict:
        import asyncio

        stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=settings.queue_stalled_s)
        for job in stalled:
            await app.job_manager.retry_job(job)
        deferred = await asyncio.to_thread(_reconcile, settings, factory, app)
        return {"stalled_retried": len(stalled), "deferred": deferred}

    return app


def _reconcile(settings: Settings, factory, app) -> int:
    from pulmo.web.db import transaction
    from pulmo.web.services import jobs

    with transaction(factory) as s:
        jobs.requeue_stale(s, settings.job_stale_s, settings.job_max_attempts)
    with transaction(factory) as s:
        ids = jobs.queued_ids(s, older_than_s=5.0)
    return defer(app, ids)


def defer(app, job_ids: list[int]) -> int:
    """Hand queued job rows to the task queue (a row that already has a waiting task is skipped:
    the task's queueing lock). Returns how many were handed over."""
    from procrastinate.exceptions import AlreadyEnqueued

    n = 0
    for job_id in job_ids:
        try:
            app.configure_task(ANALYZE, queueing_lock=f"job-{job_id}").defer(job_id=int(job_id))
            n += 1
        except AlreadyEnqueued:
            pass
    return n


def ensure_schema(settings: Settings, engine) -> None:
    """Create procrastinate's tables in the platform's database unless they exist (one process
    at a time, under an advisory lock)."""
    import procrastinate

    conninfo(settings.url)
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
        if conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is not None:
            return
        # the driver's own connection, no parameters: the schema's % signs are not placeholders
        conn.connection.driver_connection.execute(procrastinate.schema.SchemaManager.get_schema())


class Dispatcher:
    """Hands the jobs an API process queued to procrastinate after each commit (the session
    factory's ``on_new_jobs``). A failure to hand over is logged, not raised: the row is
    committed, and ``pulmo.recover`` defers it within seconds."""

    def __init__(self, settings: Settings):
        self.app = make_app(settings)
        self._lock = threading.Lock()
        self._open = False

    def __call__(self, job_ids: list[int]) -> None:
        try:
            with self._lock:
                if not self._open:
                    self.app.open()
                    self._open = True
            defer(self.app, job_ids)
        except Exception:  # noqa: BLE001 - recovered by the periodic task
            log.warning("could not hand jobs %s to the task queue; they are picked up within seconds", job_ids,
                        exc_info=True)

    def close(self) -> None:
        with self._lock:
            if self._open:
                self.app.close()
                self._open = False


def run_worker(settings: Settings, stop: threading.Event | None = None) -> None:
    """A procrastinate worker running Pulmo's tasks until ``stop`` is set (or SIGTERM/SIGINT)."""
    import asyncio

    from pulmo.web.db import make_engine, session_factory
    from pulmo.web.storage import make_storage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("highdicom", "pydicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    engine = make_engine(settings.url)
    ensure_schema(settings, engine)
    app = make_app(settings, session_factory(engine), make_storage(settings))

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

    async def main():
        async with app.open_async():
            worker = asyncio.create_task(app.run_worker_async(
                queues=[ANALYSIS_QUEUE, MAINTENANCE_QUEUE], concurrency=1,
                update_heartbeat_interval=settings.queue_heartbeat_s,
                stalled_worker_timeout=settings.queue_stalled_s, install_signal_handlers=False))
            while not stop.is_set() and not worker.done():
                await asyncio.sleep(0.2)
            if not worker.done():
                worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass

    # the database going away ends procrastinate's worker: start it again (backing off) until
    # asked to stop, so that a worker outlives a database restart
    pause = 1.0
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                asyncio.run(main())
            except Exception as exc:  # noqa: BLE001 - logged, retried
                log.warning("task queue worker stopped (%s: %s); starting again in %.0f s", type(exc).__name__,
                            str(exc)[:200], pause)
            if stop.is_set():
                break
            if time.monotonic() - started > 60:
                pause = 1.0
            stop.wait(pause)
            pause = min(pause * 2, 30.0)
    finally:
        engine.dispose()
