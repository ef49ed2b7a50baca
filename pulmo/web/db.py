"""The store: an SQLAlchemy engine (SQLite in WAL mode by default, PostgreSQL by URL), sessions,
and schema migrations with Alembic (``pulmo/web/migrations``), run at every start."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from pulmo.errors import InputError, PulmoError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine for ``url``. SQLite: WAL journal (readers never wait for the writer), foreign
    keys on, a 30 s busy timeout, one connection per thread. PostgreSQL: ``postgresql://`` or
    ``postgresql+psycopg://`` (psycopg 3), a pool with pre-ping."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if not url.startswith("postgresql"):
        raise InputError(f"database URL {url.split(':')[0]}:...: only sqlite:/// and postgresql:// are supported")
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest version (Alembic ``upgrade head``): a new data folder is
    created, an older one upgraded in place without losing anything."""
    from alembic import command
    from alembic.config import Config

    from sqlalchemy.exc import OperationalError

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot reach the database ({engine.url.render_as_string(hide_password=True)}): "
                                  f"{reason}") from None


class DatabaseUnavailable(PulmoError):
    """The database cannot be reached (down, wrong address or credentials)."""


#: ``session.info`` key under which :func:`pulmo.web.services.jobs.enqueue` lists the jobs it added.
NEW_JOBS = "pulmo_new_jobs"


def session_factory(engine: Engine, on_new_jobs=None) -> sessionmaker[Session]:
    """Sessions on ``engine``. ``on_new_jobs(job_ids)``: called after a commit that queued jobs
    (the distributed task queue hands them to its workers then, never before they exist)."""
    factory = sessionmaker(engine, expire_on_commit=False)
    if on_new_jobs is not None:
        @event.listens_for(factory, "after_commit")
        def _committed(session):
            ids = session.info.pop(NEW_JOBS, None)
            if ids:
                on_new_jobs(list(ids))

        @event.listens_for(factory, "after_rollback")
        def _rolled_back(session):
            session.info.pop(NEW_JOBS, None)
    return factory


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session committed at the end of the block, rolled back on any error."""
    with factory() as session:
        with session.begin():
            yield session


def exclusive(session: Session, key: int) -> None:
    """Serialise the rest of this transaction with every other transaction that asks for the
    same ``key``: a PostgreSQL advisory lock, or SQLite's write lock (taken now by a write that
    changes nothing; there is one writer at a time anyway). Released at commit or rollback."""
    dialect = session.bind.dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(key)})
    elif dialect == "sqlite":
        session.execute(text("UPDATE audit_log SET id = id WHERE id = -1"))
