"""``pulmo serve`` (the web platform) and ``pulmo worker`` (an analysis worker for it)."""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

from pulmo.cli.types import number

ENV = {"admin_password": "PULMO_ADMIN_PASSWORD", "triage_model": "PULMO_TRIAGE_MODEL",
       "data_dir": "PULMO_DATA_DIR", "database_url": "PULMO_DATABASE_URL", "storage_url": "PULMO_STORAGE_URL",
       "s3_endpoint_url": "PULMO_S3_ENDPOINT_URL", "task_queue": "PULMO_TASK_QUEUE",
       "job_stale_s": "PULMO_JOB_STALE_S", "queue_stalled_s": "PULMO_QUEUE_STALLED_S",
       "queue_heartbeat_s": "PULMO_QUEUE_HEARTBEAT_S", "dicom_port": "PULMO_DICOM_PORT",
       "dicom_ae_title": "PULMO_DICOM_AE_TITLE", "dicom_quiet_s": "PULMO_DICOM_QUIET_S",
       "delivery_retry_s": "PULMO_DELIVERY_RETRY_S"}


def _common(p) -> None:
    p.add_argument("--data-dir", default=None, help="the platform's folder: database, images, results "
                   f"(default ${ENV['data_dir']} or ./pulmo-data)")
    p.add_argument("--database-url", default=None, help="postgresql://user:pass@host/db to use PostgreSQL "
                   f"(default ${ENV['database_url']}, else SQLite in the data folder)")
    p.add_argument("--storage-url", default=None, help="s3://BUCKET[/PREFIX] to keep images and results in an "
                   f"S3-compatible object store (default ${ENV['storage_url']}, else files in the data folder; the "
                   f"endpoint from ${ENV['s3_endpoint_url']}, credentials from AWS_ACCESS_KEY_ID / "
                   "AWS_SECRET_ACCESS_KEY)")
    p.add_argument("--task-queue", choices=("database", "procrastinate"), default=None,
                   help="where analyses wait: 'database' (this installation's own queue, the default) or "
                        "'procrastinate' (PostgreSQL: workers on any number of machines; default "
                        f"${ENV['task_queue']})")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="run the web platform (worklist, viewer, reports, triage calculator)",
        description="Run the Pulmo web platform on one machine: the web server and analysis workers, SQLite and "
        "files in the data folder (or PostgreSQL). The first start creates the user 'admin' with the password in "
        f"${ENV['admin_password']}, or prints a generated one once. A research tool, not a medical device.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=number(1, 65535, integer=True), default=8000, help="port (default 8000)")
    _common(p)
    p.add_argument("--workers", type=number(0, 64, integer=True), default=1,
                   help="analysis worker processes started beside the server (default 1; 0: run 'pulmo worker')")
    p.add_argument("--max-upload-mb", type=number(1, 65536), default=2048.0, help="largest upload (default 2048)")
    p.add_argument("--demo", action="store_true", help="add demo content when the platform is empty: synthetic "
                   "chest CTs made by Pulmo (marked SYNTHETIC) and made-up patients")
    p.add_argument("--secure-cookies", action="store_true", help="mark cookies Secure (behind HTTPS)")
    p.add_argument("--dicom-port", type=number(1, 65535, integer=True), default=None,
                   help="also run a DICOM Storage SCP on this port (same --host) for PACS and modalities registered "
                        f"as sources (POST /api/dicom-nodes; default ${ENV['dicom_port']}, else none)")
    p.add_argument("--dicom-ae-title", default=None, help="the Storage SCP's AE title (default "
                   f"${ENV['dicom_ae_title']} or PULMO; also the calling AE title of result deliveries)")
    p.add_argument("--dicom-quiet-s", type=number(0.5, 86400), default=None,
                   help="a study received over the network is complete, and analysed, this many seconds after its "
                        f"last instance (default ${ENV['dicom_quiet_s']} or 10)")
    p.set_defaults(func=_serve)
    w = subparsers.add_parser("worker", help="run an analysis worker for a platform (another process or machine)",
                              description="Take queued analyses from the platform's database and run them.")
    _common(w)
    w.add_argument("--once", action="store_true", help="stop when the queue is empty")
    w.set_defaults(func=_worker)
    b = subparsers.add_parser("backup", help="back up a single-machine platform (database and files) to one file",
                              description="Write a consistent backup of the platform's data folder (SQLite database "
                              "and files) while it runs. PostgreSQL and object stores: see docs/deployment.md.")
    b.add_argument("-o", "--output", required=True, help="the backup file to write (.tar)")
    b.add_argument("--data-dir", default=None, help=f"the platform's folder (default ${ENV['data_dir']} or ./pulmo-data)")
    b.set_defaults(func=_backup)
    r = subparsers.add_parser("restore", help="restore a backup into a new data folder",
                              description="Unpack a backup made by 'pulmo backup' into an empty folder and upgrade its "
                              "schema to this version; then start 'pulmo serve --data-dir' on it.")
    r.add_argument("backup", help="the backup file")
    r.add_argument("--data-dir", required=True, help="the new data folder (absent or empty)")
    r.set_defaults(func=_restore)


def settings_from(args, environ=None):
    from pulmo.web.settings import Settings

    env = os.environ if environ is None else environ
    model = env.get(ENV["triage_model"], "").strip()
    return Settings(data_dir=Path(getattr(args, "data_dir", None) or env.get(ENV["data_dir"], "") or "pulmo-data"),
                    database_url=getattr(args, "database_url", None) or env.get(ENV["database_url"], "").strip() or None,
                    storage_url=getattr(args, "storage_url", None) or env.get(ENV["storage_url"], "").strip() or None,
                    s3_endpoint_url=env.get(ENV["s3_endpoint_url"], "").strip() or None,
                    task_queue=getattr(args, "task_queue", None) or env.get(ENV["task_queue"], "").strip() or "database",
                    **_tuning(env),
                    host=getattr(args, "host", "127.0.0.1"), port=getattr(args, "port", 8000),
                    workers=getattr(args, "workers", 0), max_upload_mb=getattr(args, "max_upload_mb", 2048.0),
                    triage_model=Path(model) if model else None,
                    secure_cookies=getattr(args, "secure_cookies", False), **_dicom(args, env))


def _dicom(args, env) -> dict:
    """The DICOM listener's settings from the command line, else the environment."""
    from pulmo.errors import InputError
    from pulmo.web.services.dicom_nodes import NodeError, check_ae_title

    out = {}
    port = getattr(args, "dicom_port", None)
    raw = env.get(ENV["dicom_port"], "").strip()
    if port is None and raw:
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise InputError(f"{ENV['dicom_port']}={raw!r}: expected a port from 1 to 65535")
        port = int(raw)
    if port is not None:
        out["dicom_port"] = int(port)
    title = getattr(args, "dicom_ae_title", None) or env.get(ENV["dicom_ae_title"], "").strip()
    if title:
        try:
            out["dicom_ae_title"] = check_ae_title(title)
        except NodeError as exc:
            raise InputError(f"--dicom-ae-title: {exc}") from None
    quiet = getattr(args, "dicom_quiet_s", None)
    if quiet is not None:
        out["dicom_quiet_s"] = float(quiet)
    return out


def _tuning(env) -> dict:
    """Timing settings from the environment (seconds; for tests and unusual deployments)."""
    from pulmo.errors import InputError

    out = {}
    for key in ("job_stale_s", "queue_stalled_s", "queue_heartbeat_s", "dicom_quiet_s", "delivery_retry_s"):
        raw = env.get(ENV[key], "").strip()
        if raw:
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if not 0.5 <= value <= 86400:
                raise InputError(f"{ENV[key]}={raw!r}: expected seconds between 0.5 and 86400")
            out[key] = value
    if env.get(ENV["task_queue"], "").strip() not in ("", "database", "procrastinate"):
        raise InputError(f"{ENV['task_queue']}: expected 'database' or 'procrastinate'")
    return out


def _supervise(settings, stop: threading.Event) -> list:
    """Start ``settings.workers`` worker processes; restart one that dies (its job goes back to
    the queue at once)."""
    from pulmo.web.db import make_engine, session_factory, transaction
    from pulmo.web.services import jobs
    from pulmo.web.worker import worker_process

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker_process, args=(settings,), daemon=True) for _ in range(settings.workers)]
    for pr in procs:
        pr.start()
    factory = session_factory(make_engine(settings.url))

    def watch():
        import socket

        while not stop.wait(1.0):
            for i, pr in enumerate(procs):
                if not pr.is_alive() and not stop.is_set():
                    dead = f"{socket.gethostname()}:{pr.pid}"
                    try:
                        with transaction(factory) as s:
                            jobs.requeue_stale(s, settings.job_stale_s, settings.job_max_attempts, (dead,))
                    except Exception:  # noqa: BLE001 - retried at the next tick
                        pass
                    procs[i] = ctx.Process(target=worker_process, args=(settings,), daemon=True)
                    procs[i].start()

    threading.Thread(target=watch, daemon=True).start()
    return procs


def _serve(args) -> int:
    import uvicorn

    from pulmo.web.app import create_app
    from pulmo.web.db import transaction
    from pulmo.web.services import accounts

    settings = settings_from(args)
    if settings.triage_model is not None and not settings.triage_model.is_file():
        print(f"pulmo: error: {ENV['triage_model']}: {settings.triage_model} is not a file", file=sys.stderr)
        return 2
    app = create_app(settings)
    from pulmo.web.services.ingest import remove_stale_temp

    remove_stale_temp()   # left by a process killed mid-upload or mid-analysis
    with transaction(app.state.sessions) as s:
        admin, generated = accounts.bootstrap_admin(s, os.environ.get(ENV["admin_password"], ""))
        demo_ids = []
        if args.demo:
            from pulmo.web.demo import load_demo

            org = accounts.organisation(s, accounts.DEFAULT_ORGANISATION, create=True)
            print("pulmo: making the demo content (synthetic CTs; about a minute the first time) ...", file=sys.stderr)
            demo_ids = load_demo(s, app.state.storage, org.id)
    if demo_ids:
        from pulmo.web.demo import demo_clinical

        with transaction(app.state.sessions) as s:
            demo_clinical(s, app, demo_ids)
    stop = threading.Event()
    procs = _supervise(settings, stop) if settings.workers else []
    dicom = _start_dicom(settings, stop) if settings.dicom_port else []
    from pulmo.web.services.deliveries import Sender

    Sender(settings, app.state.sessions, app.state.storage, stop).start()   # results out to DICOM destinations
    url = f"http://{settings.host if settings.host not in ('0.0.0.0', '::') else '127.0.0.1'}:{settings.port}/"
    print(f"Pulmo is running at {url}  (API documentation: {url}api/docs)")
    if generated:
        print(f"First start: sign in as 'admin' with the password  {generated}  (shown once; change it, or set "
              f"{ENV['admin_password']} before the first start).")
    elif admin is not None:
        print(f"First start: sign in as 'admin' with the password in {ENV['admin_password']}.")
    else:
        print("Sign in with your user name and password.")
    if settings.dicom_port:
        print(f"DICOM Storage SCP: AE title {settings.dicom_ae_title} on {settings.host}:{settings.dicom_port} "
              f"(sources registered with POST /api/dicom-nodes; a study is analysed {settings.dicom_quiet_s:g} s after "
              "its last instance)")
    if demo_ids:
        print(f"Demo content: {len(demo_ids)} synthetic studies queued for analysis (SYNTHETIC, not patients).")
    print("Pulmo is a research tool, not a certified medical device. Stop with Ctrl+C.", flush=True)
    import signal

    def stop_serving(signum, frame):   # uvicorn shuts down, then passes SIGTERM on to this handler
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop_serving)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    finally:
        stop.set()
        for pr in procs + dicom:
            pr.terminate()
        for pr in procs + dicom:
            pr.join(timeout=10)
    return 0


def _start_dicom(settings, stop: threading.Event) -> list:
    """The DICOM listener in a process of its own (restarted if it dies); its spool keeps what it
    acknowledged, so a restart loses nothing."""
    import socket

    from pulmo.web.dicom_listener import listener_process

    with socket.socket() as probe:   # a port in use is a clear error at start, not a dead child
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.dicom_port))
        except OSError as exc:
            from pulmo.errors import InputError

            raise InputError(f"--dicom-port {settings.dicom_port}: cannot listen on {settings.host}:"
                             f"{settings.dicom_port} ({exc.strerror})") from None
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=listener_process, args=(settings,), daemon=True)]
    procs[0].start()

    def watch():
        while not stop.wait(2.0):
            if not procs[0].is_alive() and not stop.is_set():
                procs[0] = ctx.Process(target=listener_process, args=(settings,), daemon=True)
                procs[0].start()

    threading.Thread(target=watch, daemon=True).start()
    return procs


def _backup(args) -> int:
    from pulmo.web.backup import backup

    settings = settings_from(args)
    m = backup(settings, Path(args.output))
    print(f"backup written: {args.output} ({m['studies']} studies, {m['files']} files, schema {m['schema_revision']})")
    return 0


def _restore(args) -> int:
    from pulmo.web.backup import restore

    m = restore(Path(args.backup), Path(args.data_dir))
    print(f"restored into {args.data_dir}: {m['studies']} studies, {m['files']} files (backup of Pulmo "
          f"{m['pulmo_version']}); start it with: pulmo serve --data-dir {args.data_dir}")
    return 0


def _worker(args) -> int:
    from pulmo.web.db import make_engine, migrate
    from pulmo.web.worker import run_worker

    settings = settings_from(args)
    migrate(make_engine(settings.url))
    from pulmo.web.services.ingest import remove_stale_temp

    remove_stale_temp()   # left by a worker killed mid-analysis
    if not args.once:
        from pulmo.web.services.deliveries import Sender

        Sender(settings).start()   # results out to DICOM destinations, beside the analyses
    if settings.task_queue == "procrastinate":
        from pulmo.web import task_queue

        task_queue.conninfo(settings.url)  # PostgreSQL, or a clear error
        task_queue.run_worker(settings)
        return 0
    run_worker(settings, once=args.once)
    return 0


def _wait_for(url: str, seconds: float = 30.0) -> bool:  # used by tests and scripts
    import urllib.request

    end = time.time() + seconds
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False
