"""Backup and restore of a single-machine platform (SQLite and files in the data folder).

:func:`backup` writes one ``.tar`` while the platform runs: a consistent copy of the database
(SQLite's online backup, so writes may go on) and every file of the data folder except caches
and SQLite's journal files, with ``pulmo-backup.json`` (version, schema revision, counts) first.
:func:`restore` unpacks such an archive into an empty folder (members checked: no absolute
paths, no ``..``, no links) and upgrades the schema when the archive is older than this
version. With PostgreSQL or an object store, back those up with their own tools
(``pg_dump`` / ``pg_restore``, bucket versioning or replication; see docs/deployment.md).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from pulmo import __version__
from pulmo.errors import InputError
from pulmo.web.settings import Settings

MANIFEST = "pulmo-backup.json"
DATABASE = "pulmo.db"
SKIP = {"cache", "pulmo.db", "pulmo.db-wal", "pulmo.db-shm"}


def _single_machine(settings: Settings) -> None:
    if settings.database_url:
        raise InputError("this platform keeps its data in PostgreSQL: back it up with pg_dump (see "
                         "docs/deployment.md); this backup covers the single-machine default (SQLite)",
                         code="backup_not_sqlite")
    if settings.storage_url:
        raise InputError("this platform keeps its files in an object store: back the bucket up with the store's "
                         "own tools (see docs/deployment.md)", code="backup_not_local")


def backup(settings: Settings, out: Path) -> dict:
    """Write the archive ``out`` (replaced only once complete); returns the manifest."""
    _single_machine(settings)
    data = Path(settings.data_dir)
    db_file = data / DATABASE
    if not db_file.is_file():
        raise InputError(f"{data}: no Pulmo platform here (no {DATABASE})", code="no_platform")
    out = Path(out)
    if out.resolve().is_relative_to(data.resolve()):
        raise InputError("write the backup outside the data folder", code="backup_inside")
    with tempfile.TemporaryDirectory(prefix="pulmo-backup-") as tmp:
        snap = Path(tmp) / DATABASE
        src = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
        dst = sqlite3.connect(snap)
        try:
            src.backup(dst)   # a consistent copy while the platform keeps writing
            revision = dst.execute("SELECT version_num FROM alembic_version").fetchone()[0]
            studies = dst.execute("SELECT count(*) FROM studies").fetchone()[0]
        finally:
            dst.close()
            src.close()
        files = sorted(p for p in data.rglob("*") if p.is_file() and not p.is_symlink()
                       and p.relative_to(data).parts[0] not in SKIP and not p.name.startswith(".up-"))
        manifest = {"format": 1, "pulmo_version": __version__, "schema_revision": revision, "studies": studies,
                    "files": len(files)}
        (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=1))
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
        os.close(fd)
        try:
            with tarfile.open(part, "w") as tar:
                tar.add(Path(tmp) / MANIFEST, MANIFEST)
                tar.add(snap, DATABASE)
                for p in files:
                    tar.add(p, p.relative_to(data).as_posix(), recursive=False)
            os.replace(part, out)
        except BaseException:
            Path(part).unlink(missing_ok=True)
            raise
    return manifest


def restore(archive: Path, data_dir: Path) -> dict:
    """Unpack ``archive`` into ``data_dir`` (absent or empty) and bring its schema up to date;
    returns the manifest."""
    from pulmo.web.db import make_engine, migrate

    data_dir = Path(data_dir)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise InputError(f"{data_dir} is not empty: restore into a new folder", code="restore_target_not_empty")
    try:
        tar = tarfile.open(archive, "r:")
    except (OSError, tarfile.TarError) as exc:
        raise InputError(f"{archive}: not a Pulmo backup ({exc})", code="not_a_backup") from None
    with tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        if MANIFEST not in names or DATABASE not in names:
            raise InputError(f"{archive}: not a Pulmo backup (no {MANIFEST} or {DATABASE})", code="not_a_backup")
        for m in members:
            parts = PurePosixPath(m.name).parts
            if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
                raise InputError(f"{archive}: refused member {m.name!r} (absolute path, '..' or a link)",
                                 code="not_a_backup")
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        if manifest.get("format") != 1:
            raise InputError(f"{archive}: backup format {manifest.get('format')!r} is not known to this version",
                             code="not_a_backup")
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=data_dir.parent, prefix=f".{data_dir.name}.restore-"))
        try:
            try:
                tar.extractall(work, members=[m for m in members if m.name != MANIFEST], filter="data")
            except (OSError, tarfile.TarError) as exc:
                raise InputError(f"{archive}: damaged backup ({exc})", code="not_a_backup") from None
            engine = make_engine(f"sqlite:///{(work / DATABASE).resolve()}")
            try:
                migrate(engine)   # an archive of an older version is upgraded here
            finally:
                engine.dispose()
            if data_dir.exists():
                data_dir.rmdir()   # empty, checked above
            os.replace(work, data_dir)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return manifest
