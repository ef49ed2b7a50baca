"""Write files so that a reader never sees a half-written result.

This is the low-level step (a temporary file renamed into place); what may be written where, and
the record of what Pulmo wrote, is :mod:`pulmo.io.outputs`, which every writer of Pulmo uses.
"""

from __future__ import annotations

import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable


_UMASK_LOCK = threading.Lock()
#: Characters of the target's name kept in the temporary file's name: a target whose name is
#: near the file system's limit (255 bytes) must still get a temporary name that fits.
_TMP_NAME_CHARS = 40


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), so that
    threads writing files at the same moment never see a temporary one."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore it (other threads' files may then be created with 022)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | os.PathLike, before_replace: Callable[[Path], None] | None = None):
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is untouched. The file gets
    the existing target's permissions, or those of a new file under the current umask.
    ``before_replace(tmp)``: called with the finished temporary file just before the rename; an
    exception it raises cancels the write (used to check the target once more).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:_TMP_NAME_CHARS]}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:  # mkstemp makes the file private (0600): give it the mode a plain open() would
            mode = target.stat().st_mode & 0o777 if target.is_file() else 0o666 & ~_umask()
            os.chmod(tmp_path, mode)
        except OSError:
            pass
        if before_replace is not None:
            before_replace(tmp_path)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
