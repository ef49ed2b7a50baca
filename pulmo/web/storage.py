"""Files of the platform (DICOM instances, analysis results, viewer volumes), addressed by keys
such as ``orgs/3/studies/12/dicom/1.2.3.dcm``. The default keeps them under the data folder;
another store (object storage) offers the same methods."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath


def _check_key(key: str) -> PurePosixPath:
    p = PurePosixPath(key)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"invalid storage key {key!r}")
    return p


class LocalStorage:
    """Keys are relative paths under ``root``. Writes land in a temporary file renamed into place
    (a reader never sees half a file)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).parts)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".up-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, src: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".up-")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_tree(self, prefix: str, folder: Path) -> list[str]:
        """Copy every file of ``folder`` under ``prefix``; returns the keys."""
        keys = []
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                key = f"{prefix}/{p.relative_to(folder).as_posix()}"
                self.put_file(key, p)
                keys.append(key)
        return keys

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def local_path(self, key: str) -> Path:
        """A path on this machine holding the object (here: the file itself)."""
        return self.path(key)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)
