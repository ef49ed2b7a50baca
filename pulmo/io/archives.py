"""Extracting ZIP archives from users without trusting them.

:func:`extract_zip` refuses path traversal (absolute names, ``..``, drive letters),
symbolic links, and members or totals over the given limits, and reports a corrupt
member clearly; every problem is an :class:`~pulmo.errors.InputError`.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from pulmo.errors import InputError


def extract_zip(
    zip_path: Path,
    dest: Path,
    *,
    max_member_bytes: int,
    max_total_bytes: int,
    keep: Callable[[PurePosixPath], bool] | None = None,
) -> None:
    """Extract ``zip_path`` into ``dest`` (all members, or those for which ``keep`` is true).

    Every member is checked before anything is written.
    """
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{zip_path.name}: not a readable zip archive ({exc})") from None
    with zf:
        total = 0
        members = zf.infolist()
        for m in members:
            name = m.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise InputError(f"{zip_path.name}: refused, member '{name}' would be written outside the "
                                 "extraction folder (path traversal)")
            if stat.S_ISLNK(m.external_attr >> 16):
                raise InputError(f"{zip_path.name}: refused, member '{name}' is a symbolic link")
            if m.file_size > max_member_bytes:
                raise InputError(f"{zip_path.name}: member '{name}' is {m.file_size / 2**20:.0f} MiB, over the "
                                 f"limit of {max_member_bytes / 2**20:.0f} MiB")
            total += m.file_size
        if total > max_total_bytes:
            raise InputError(f"{zip_path.name}: unpacks to {total / 2**20:.0f} MiB, over the limit of "
                             f"{max_total_bytes / 2**20:.0f} MiB")
        for m in members:
            if m.is_dir():
                continue
            rel = PurePosixPath(m.filename.replace("\\", "/"))
            if keep is not None and not keep(rel):
                continue
            target = dest.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(m) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            except (zipfile.BadZipFile, EOFError, OSError) as exc:
                raise InputError(f"{zip_path.name}: member '{m.filename}' is corrupt ({exc})") from None
