"""Budgets of the readers: what a file may cost before Pulmo reads it.

Every reader of user files (CT images, tables, masks, model files, zip archives) goes through
these checks, so that an upload cannot exhaust memory or hang a worker:

* :func:`check_regular` refuses what is not a regular file (named pipes, character and block
  devices such as ``/dev/zero``, sockets) from its ``stat``, before anything opens it: a FIFO
  with no writer would block ``open()`` for ever, a device would be read without end;
* :func:`check_file` adds the file's size against a budget;
* :func:`open_regular` opens without blocking and checks the opened file again (``fstat``);
* :func:`read_bounded` reads a stream (for example a member being decompressed) and stops at
  the budget, counting the bytes actually produced, never a header's word;
* :func:`walk_files` lists a folder tree without recursion and stops at a budget of entries;
* :func:`check_nifti_header` bounds where a NIfTI's voxel data start (its header and extensions).

Every refusal is an :class:`~pulmo.errors.InputError` whose message names the file and the
limit (``"over the limit of 1.0 GiB"``) and carries a stable ``code`` for the faces' hints.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from pulmo.errors import InputError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

__all__ = ["KiB", "MiB", "GiB", "human_bytes", "check_regular", "check_file", "open_regular", "read_bounded",
           "walk_files", "kind_of", "check_nifti_header"]


def human_bytes(n: float) -> str:
    """``1.0 GiB``, ``512 MiB``, ``64 KiB``, ``100 bytes`` (binary units, as budgets are set)."""
    n = float(n)
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            v = n / size
            return f"{v:.1f} {unit}" if v < 10 and unit == "GiB" else f"{v:.0f} {unit}"
    return f"{n:.0f} bytes"


def kind_of(mode: int) -> str | None:
    """What a ``stat`` mode is when it is not a regular file or a folder (None for those)."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "not a regular file"


def _label(path, label: str | None) -> str:
    return label if label is not None else str(path)


def check_regular(path: str | os.PathLike, label: str | None = None, *, what: str = "file",
                  allow_dir: bool = False) -> os.stat_result:
    """The ``stat`` of ``path`` (symbolic links followed) when it is a regular file (or a folder,
    with ``allow_dir``); :class:`InputError` otherwise, without opening it."""
    name = _label(path, label)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file or folder", code="not_found") from None
    except OSError as exc:  # permission, name too long, link loop, ...
        raise InputError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    kind = kind_of(st.st_mode)
    if kind is not None:
        raise InputError(f"{name}: {kind}, not a regular {what}; only regular files are read",
                         code="special_file")
    if stat.S_ISDIR(st.st_mode) and not allow_dir:
        raise InputError(f"{name}: a folder, expected a {what}")
    return st


def check_file(path: str | os.PathLike, max_bytes: int, label: str | None = None, *, what: str = "file",
               code: str = "file_too_large") -> int:
    """The size of the regular file ``path``; refused when over ``max_bytes`` (before reading it)."""
    st = check_regular(path, label, what=what)
    if st.st_size > max_bytes:
        raise InputError(f"{_label(path, label)}: {what} of {human_bytes(st.st_size)}, over the limit of "
                         f"{human_bytes(max_bytes)}", code=code)
    return st.st_size


def open_regular(path: str | os.PathLike, label: str | None = None, *, what: str = "file"):
    """``open(path, "rb")`` for a regular file only: checked by ``stat`` first, opened without
    blocking (a FIFO swapped in meanwhile cannot hang it) and checked again on the open file."""
    check_regular(path, label, what=what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise InputError(f"{_label(path, label)}: cannot be read ({exc.strerror or exc})") from None
    try:
        kind = kind_of(os.fstat(fd).st_mode)
        if kind is not None:
            raise InputError(f"{_label(path, label)}: {kind}, not a regular {what}; only regular files are read",
                             code="special_file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(stream, max_bytes: int, label: str, *, what: str = "data", code: str = "file_too_large",
                 chunk: int = 1 << 20) -> bytes:
    """All of ``stream`` (``read(n)``), refused as soon as it passes ``max_bytes``: the bytes
    actually produced are counted (a compressed member's declared size is not trusted)."""
    parts, total = [], 0
    while True:
        block = stream.read(min(chunk, max_bytes + 1 - total))
        if not block:
            break
        total += len(block)
        if total > max_bytes:
            raise InputError(f"{label}: {what} over the limit of {human_bytes(max_bytes)}", code=code)
        parts.append(block)
    return b"".join(parts)


def walk_files(root: str | os.PathLike, max_entries: int, label: str | None = None, *,
               skip: Callable[[str], bool] | None = None, folders: bool = False) -> list[Path]:
    """The regular files under ``root`` (sorted per folder; links to files followed, links to
    folders not; hidden names and names for which ``skip`` is true left out), listed without
    recursion; refused with code ``too_many_files`` when the tree holds more than
    ``max_entries`` files and folders. Special files (FIFOs, devices, sockets) are left out;
    the folders are listed too with ``folders``."""
    name = _label(root, label)
    out: list[Path] = []
    count = 0
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue  # unreadable or vanished folder: nothing to read there
        subdirs = []
        for e in entries:
            if e.name.startswith(".") or (skip is not None and skip(e.name)):
                continue
            count += 1
            if count > max_entries:
                raise InputError(f"{name}: holds more than {max_entries} files and folders, over the limit of "
                                 f"{max_entries}", code="too_many_files")
            try:
                if e.is_dir(follow_symlinks=False):
                    subdirs.append(Path(e.path))
                    if folders:
                        out.append(Path(e.path))
                elif e.is_file(follow_symlinks=True):  # FIFOs, devices, sockets and dangling links are not
                    out.append(Path(e.path))
            except OSError:
                continue
        stack.extend(reversed(subdirs))
    return out


def check_nifti_header(path: str | os.PathLike, max_header_bytes: int, label: str | None = None, *,
                       code: str = "image_too_large") -> None:
    """Refuse a NIfTI (``.nii`` or gzip-compressed) whose voxel data start past ``max_header_bytes``
    (``vox_offset``): readers decompress up to there, and read its header extensions into memory,
    before they look at anything else. Reads at most 540 bytes; a file that is not NIfTI passes
    (its reader says what it is)."""
    import gzip
    import math
    import struct

    name = _label(path, label)
    with open_regular(path, name) as fh:
        magic = fh.read(2)
        fh.seek(0)
        try:
            raw = gzip.GzipFile(fileobj=fh).read(540) if magic == b"\x1f\x8b" else fh.read(540)
        except (OSError, EOFError) as exc:
            raise InputError(f"{name}: not a readable gzip-compressed file ({exc})") from None
    if len(raw) < 348:
        raise InputError(f"{name}: truncated: {len(raw)} bytes, shorter than a NIfTI header (348 bytes)")
    offset = None
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", raw[:4])
        if sizeof_hdr == 348:
            (offset,) = struct.unpack(endian + "f", raw[108:112])
            break
        if sizeof_hdr == 540 and len(raw) >= 540:
            (offset,) = struct.unpack(endian + "q", raw[168:176])
            break
    if offset is None:
        return
    if not math.isfinite(offset) or offset > max_header_bytes:
        where = human_bytes(offset) if math.isfinite(offset) else str(offset)
        raise InputError(f"{name}: the header says the voxel data start {where} into the file, over the limit of "
                         f"{human_bytes(max_header_bytes)} of header", code=code)
