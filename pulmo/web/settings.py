"""Configuration of the web platform: one object, built at the edge (``pulmo serve``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Settings:
    """Where the platform keeps its data and how it runs.

    ``data_dir``: the platform's folder (database file, images, results, secret key).
    ``database_url``: SQLAlchemy URL; None: SQLite at ``data_dir/pulmo.db`` (WAL mode).
    ``workers``: analysis worker processes started beside the web server (0: none; run
    ``pulmo worker`` elsewhere). ``max_upload_mb``: largest upload accepted (one request).
    ``session_hours`` / ``token_hours``: lifetime of a web session / an API bearer token.
    ``login_attempts`` per ``login_window_min``: failed logins allowed per user name and
    address before further attempts are refused for the rest of the window.
    ``triage_model``: a ``.pulmo-triage`` file to load at start (else an imported one, or the
    classic scores only). ``secure_cookies``: mark cookies Secure (behind HTTPS).
    ``storage_url``: ``s3://bucket[/prefix]`` to keep images and results in an S3-compatible
    object store at ``s3_endpoint_url`` (None: files under ``data_dir/files``).
    ``task_queue``: ``"database"`` (one installation's queue in its database, the default) or
    ``"procrastinate"`` (PostgreSQL only: workers on any machine, :mod:`pulmo.web.task_queue`);
    ``queue_heartbeat_s`` / ``queue_stalled_s``: its workers' heartbeat, and the silence after
    which a worker counts as dead and its job is retried. ``job_stale_s``: the same for a job row.
    ``dicom_port``: the port of the DICOM Storage SCP started beside the web server (None: none),
    ``dicom_ae_title`` its AE title; a study received over the network counts as complete, and is
    queued for analysis, ``dicom_quiet_s`` seconds after its last instance arrived.
    ``delivery_retry_s`` / ``delivery_retry_cap_s``: the first wait after a failed delivery of
    results, doubled at each failure up to the cap; ``delivery_give_up_h``: a delivery that has
    failed for this long is marked failed (a manual resend starts it again).
    """

    data_dir: Path = field(default_factory=lambda: Path("pulmo-data"))
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_upload_mb: float = 2048.0
    session_hours: float = 12.0
    token_hours: float = 24.0
    login_attempts: int = 5
    login_window_min: float = 15.0
    job_stale_s: float = 120.0
    job_max_attempts: int = 3
    triage_model: Path | None = None
    secure_cookies: bool = False
    storage_url: str | None = None
    s3_endpoint_url: str | None = None
    task_queue: str = "database"
    queue_heartbeat_s: float = 5.0
    queue_stalled_s: float = 20.0
    dicom_port: int | None = None
    dicom_ae_title: str = "PULMO"
    dicom_quiet_s: float = 10.0
    delivery_retry_s: float = 5.0
    delivery_retry_cap_s: float = 300.0
    delivery_give_up_h: float = 24.0

    def __post_init__(self):
        self.data_dir = Path(self.data_dir)

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'pulmo.db').resolve()}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"
