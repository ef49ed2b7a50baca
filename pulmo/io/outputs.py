"""Outputs that never cost a user's file: the one writer every file of Pulmo goes through.

**How Pulmo recognises its own files.** Every folder Pulmo writes into gets a hidden
``.pulmo-manifest.json`` listing the files Pulmo wrote there, each with its size and SHA-256.
An existing file is Pulmo's when its name is in that manifest and its size and SHA-256 still
match, that is when it holds exactly the bytes Pulmo wrote. Such a file is replaced without
asking, so a command can be run again and again. A file that is not in the manifest, or that
changed since (edited, saved over by a spreadsheet, replaced by a corrected mask), belongs to the
user: it is refused, unless the caller says ``force`` (the command line's ``--force``). Files in a
command's input folders, the inputs themselves, links, folders and special files (pipes, devices)
are refused even then. A content signature was not enough: a CSV has no room for one, and a
file a user edited would still carry it. The manifest is written after each file, under a lock,
and forgets files that are gone; delete it to make Pulmo treat every file there as the user's.

An output *folder* (``pulmo ct ... -o OUT``) is replaced as a whole, so it may hold nothing but
Pulmo's unchanged files (:func:`check_output_folder`); a folder written before the manifest
existed is recognised by the caller's list of the names Pulmo writes.

Also here: :func:`spreadsheet_safe` / :func:`csv_text` / :func:`frame_csv`, which every CSV writer
uses, so that a cell a spreadsheet would run as a formula is written as text (OWASP's advice).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import re
import stat
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

from pulmo.errors import InputError
from pulmo.io.atomic import atomic_path

__all__ = ["MANIFEST", "check_output_file", "check_output_folder", "check_distinct", "check_folder_to_write_into", "output_file", "write_text",
           "write_bytes", "write_folder_manifest", "read_manifest", "is_pulmo_file", "spreadsheet_safe",
           "csv_text", "frame_csv"]

#: The hidden file, in each folder Pulmo writes into, that lists what Pulmo wrote there.
MANIFEST = ".pulmo-manifest.json"
_FORMAT = "pulmo-outputs"
_VERSION = 1
_NOTE = ("Files Pulmo wrote in this folder, with their size and SHA-256. Pulmo replaces a file listed "
         "here only while it is unchanged; delete this file to make Pulmo treat every file here as yours.")
MAX_MANIFEST_BYTES = 8 << 20
#: Files remembered per folder, and entries looked at in an output folder before it is refused.
MAX_ENTRIES = 10_000
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4000
_CHUNK = 1 << 20
_LOCK = threading.Lock()
_SHOWN = 5


# --------------------------------------------------------------------------- names and kinds

def _show(path) -> str:
    """A path as a message shows it: as given, or quoted where it holds invisible characters."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _check_name(path: Path, what: str) -> None:
    text = str(path)
    if not text.strip():
        raise InputError(f"an empty {what} name", code="output_name")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InputError(f"{_show(text)}: the {what} name holds a control character (a line break, tab or NUL); "
                         "give a plain name", code="output_name")
    try:
        name_bytes, path_bytes = len(os.fsencode(path.name)), len(os.fsencode(text))
    except UnicodeError:
        raise InputError(f"{_show(text)}: not a valid {what} name", code="output_name") from None
    if path.name in ("", ".", ".."):
        raise InputError(f"{_show(text)}: not a {what} name", code="output_name")
    if path.name == MANIFEST:
        raise InputError(f"{_show(text)}: {MANIFEST} is the name of Pulmo's record of its outputs; give another name",
                         code="output_name")
    if name_bytes > MAX_NAME_BYTES or path_bytes > MAX_PATH_BYTES:
        raise InputError(f"{_show(text[:80])}...: the {what} name is too long ({name_bytes} bytes for the name, "
                         f"{path_bytes} for the path; file systems allow {MAX_NAME_BYTES} and about {MAX_PATH_BYTES})",
                         code="output_name")


def _check_parent(path: Path, what: str) -> None:
    """The folder that will hold ``path``: the nearest existing one must be a writable folder (the
    ones missing are created when the output is written)."""
    probe = path.parent
    while True:
        try:
            st = os.stat(probe)  # follows links: a linked folder is an ordinary place to write
        except (FileNotFoundError, NotADirectoryError):
            if probe.parent == probe:
                return
            probe = probe.parent
            continue
        except OSError as exc:
            raise InputError(f"{_show(path)}: cannot write the {what} there ({exc.strerror or exc})",
                             code="output_unwritable") from None
        break
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{_show(path)}: cannot write the {what} there: {_show(probe)} is a file, not a folder",
                         code="output_parent_not_folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{_show(path)}: cannot write the {what} there: the folder {_show(probe)} is not writable "
                         "(permission denied)", code="output_unwritable")


def _lstat(path: Path, what: str):
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise InputError(f"{_show(path)}: cannot write the {what} there ({exc.strerror or exc})",
                         code="output_unwritable") from None


def _same_file(a: Path, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _inside(path: Path, folder) -> bool:
    try:
        return path.parent.resolve().is_relative_to(Path(folder).resolve())
    except (OSError, RuntimeError, ValueError):
        return False


# --------------------------------------------------------------------------- the manifest

def _digest(path) -> tuple[int, str]:
    """(size, SHA-256) of a regular file, never following a link nor opening a pipe or device."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        h = hashlib.sha256()
        size = 0
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def read_manifest(folder) -> tuple[str, dict]:
    """``(status, files)`` of ``folder``'s manifest: status ``"absent"``, ``"ok"`` or ``"damaged"``
    (not a regular file, too large, or not Pulmo's format); files: name -> {size, sha256, ...}."""
    path = Path(folder) / MANIFEST
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "absent", {}
    except OSError:
        return "damaged", {}
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MANIFEST_BYTES:
        return "damaged", {}
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            data = json.loads(fh.read(MAX_MANIFEST_BYTES + 1).decode("utf-8"))
    except (OSError, ValueError):
        return "damaged", {}
    if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("files"), dict):
        return "damaged", {}
    files = {k: v for k, v in data["files"].items()
             if isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("size"), int)
             and isinstance(v.get("sha256"), str)}
    return "ok", files


def _state(path: Path, files: dict) -> str:
    """``"pulmo"``: listed and unchanged; ``"changed"``: listed but not the bytes Pulmo wrote;
    ``"foreign"``: not listed."""
    rec = files.get(path.name)
    if rec is None:
        return "foreign"
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size != rec["size"]:
            return "changed"
        return "pulmo" if _digest(path)[1] == rec["sha256"] else "changed"
    except OSError:
        return "changed"


def is_pulmo_file(path) -> bool:
    """Whether ``path`` holds exactly what Pulmo wrote there (its folder's manifest says so)."""
    path = Path(path)
    return _state(path, read_manifest(path.parent)[1]) == "pulmo"


def _manifest_text(files: dict) -> str:
    return json.dumps({"format": _FORMAT, "version": _VERSION, "note": _NOTE, "files": files}, indent=1,
                      ensure_ascii=False) + "\n"


@contextmanager
def _folder_lock(folder: Path):
    """One writer of a folder's manifest at a time: in this process, and (where the system has
    ``flock``) across processes."""
    with _LOCK:
        fd = None
        try:
            import fcntl

            fd = os.open(folder, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _record(folder: Path, entries: dict[str, tuple[int, str]]) -> None:
    """Add ``entries`` (name -> (size, sha256)) to ``folder``'s manifest; best effort: a manifest
    that cannot be written only means the file is treated as the user's next time."""
    try:
        with _folder_lock(folder):
            status, files = read_manifest(folder)
            if status == "damaged":  # not Pulmo's to rewrite
                return
            now = _now()
            for name, (size, sha) in entries.items():
                files[name] = {"size": size, "sha256": sha, "written": now}
            kept = {}
            for name, rec in files.items():  # forget files that are gone (the hash is checked on use)
                try:
                    st = os.lstat(folder / name)
                except (OSError, ValueError):
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_size == rec["size"]:
                    kept[name] = rec
            if len(kept) > MAX_ENTRIES:
                kept = dict(sorted(kept.items(), key=lambda kv: str(kv[1].get("written", "")))[-MAX_ENTRIES:])
            with atomic_path(folder / MANIFEST) as tmp:
                tmp.write_text(_manifest_text(kept), encoding="utf-8")
    except OSError:
        pass


def write_folder_manifest(folder) -> None:
    """Write the manifest of a folder Pulmo has just filled (a staging folder no one else sees):
    every regular file in it."""
    folder = Path(folder)
    now = _now()
    files = {}
    with os.scandir(folder) as it:
        for e in it:
            if e.name != MANIFEST and e.is_file(follow_symlinks=False):
                size, sha = _digest(e.path)
                files[e.name] = {"size": size, "sha256": sha, "written": now}
    (folder / MANIFEST).write_text(_manifest_text(files), encoding="utf-8")


# --------------------------------------------------------------------------- files

def check_output_file(path, *, force: bool = False, inputs: Iterable = (), input_dirs: Iterable = (),
                      what: str = "output file", forceable: bool = True,
                      accept: Callable[[Path], bool] | None = None) -> Path:
    """Refuse (:class:`InputError`) an output file that would cost the user a file, before any work.

    Refused: a bad name (control characters, too long, the manifest's); a path under a file; a
    folder that cannot be written; a link, a folder, a pipe or a device where the file would go;
    one of ``inputs``; an existing file that is not Pulmo's (see the module docstring) unless
    ``force`` (and ``forceable``), and never one inside ``input_dirs``. ``accept(path)``: whether an
    existing file in a folder with no manifest is an earlier output of Pulmo all the same.
    Error codes: ``output_exists`` (``force`` would replace it), ``output_protected``,
    ``output_in_input_folder``, ``output_is_input``, ``output_is_link``, ``output_is_folder``,
    ``output_not_regular``, ``output_parent_not_folder``, ``output_unwritable``, ``output_name``.
    """
    p = Path(path)
    _check_name(p, what)
    st = _lstat(p, what)
    if st is None:
        _check_parent(p, what)
        return p
    if stat.S_ISLNK(st.st_mode):
        try:
            to = f" (to {_show(os.readlink(p))})"
        except OSError:
            to = ""
        raise InputError(f"{_show(p)}: is a symbolic link{to}; Pulmo does not write through links, which would "
                         "replace a file elsewhere: give the path of a regular file", code="output_is_link")
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{_show(p)}: is a folder; give a file name for the {what}", code="output_is_folder")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{_show(p)}: is {_kind(st.st_mode)}, not a regular file; Pulmo writes its outputs to "
                         "regular files only", code="output_not_regular")
    if any(_same_file(p, i) for i in inputs if i is not None):
        raise InputError(f"{_show(p)}: is an input of this command, which Pulmo would overwrite: give another name",
                         code="output_is_input")
    status, files = read_manifest(p.parent)
    state = _state(p, files)
    if state == "pulmo" or (state == "foreign" and status == "absent" and accept is not None and accept(p)):
        return p
    why = "was changed since Pulmo wrote it" if state == "changed" else "was not written by Pulmo"
    home = next((d for d in input_dirs if d is not None and _inside(p, d)), None)
    if home is not None:
        raise InputError(f"{_show(p)}: lies in the input folder {_show(home)} and {why}; Pulmo never replaces "
                         "files in its input folders: give a name outside them", code="output_in_input_folder")
    if force and forceable:
        _check_parent(p, what)
        return p
    if not forceable:
        raise InputError(f"{_show(p)}: the file exists and {why}, so Pulmo does not replace it: move the file, or "
                         "write the output somewhere else", code="output_protected")
    raise InputError(f"{_show(p)}: the file exists and {why}, so Pulmo does not replace it: give another name or "
                     "move the file", code="output_exists")


def check_distinct(outputs: dict) -> None:
    """Refuse two outputs (label -> path; ``None`` and ``"-"`` skipped) that name the same file."""
    seen: list[tuple[str, str, object]] = []
    for label, path in outputs.items():
        if path is None or str(path) == "-":
            continue
        key = os.path.normcase(os.path.realpath(path))
        for other, other_key, other_path in seen:
            if key == other_key or _same_file(Path(path), other_path):
                raise InputError(f"{other} and {label} name the same file ({_show(path)}); give each output its own "
                                 "name", code="output_same")
        seen.append((label, key, path))


@contextmanager
def output_file(path, *, force: bool = False, inputs: Iterable = (), input_dirs: Iterable = (),
                what: str = "output file", forceable: bool = True, accept: Callable[[Path], bool] | None = None):
    """Yield a temporary path to fill; on success it replaces ``path`` atomically and is recorded
    in the folder's manifest. ``path`` is checked (:func:`check_output_file`) before and once more
    just before the rename (a file may have appeared there meanwhile). An operating-system error
    becomes an :class:`InputError` naming the file."""
    inputs, input_dirs = list(inputs), list(input_dirs)
    check = dict(force=force, inputs=inputs, input_dirs=input_dirs, what=what, forceable=forceable, accept=accept)
    target = check_output_file(path, **check)
    done: dict = {}

    def last_look(tmp: Path) -> None:
        check_output_file(target, **check)
        done["entry"] = _digest(tmp)

    try:
        with atomic_path(target, before_replace=last_look) as tmp:
            yield tmp
    except OSError as exc:
        raise InputError(f"{_show(target)}: cannot write the {what} ({exc.strerror or exc})",
                         code="output_unwritable") from None
    _record(target.parent, {target.name: done["entry"]})


def write_bytes(path, data: bytes, **check) -> Path:
    """Write ``data`` to ``path`` through :func:`output_file` (same keyword arguments)."""
    with output_file(path, **check) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str, **check) -> Path:
    """Write ``text`` (UTF-8; characters it cannot encode become ``?``) to ``path`` through
    :func:`output_file` (same keyword arguments)."""
    return write_bytes(path, text.encode("utf-8", "replace"), **check)


# --------------------------------------------------------------------------- folders

def check_output_folder(path, *, legacy_marker: str | None = None,
                        legacy_name: Callable[[str], bool] | None = None) -> Path:
    """Refuse an output folder that Pulmo may not replace as a whole: anything but a folder (or
    nothing) there, a link, or a folder holding anything but Pulmo's unchanged files (its manifest
    says which). A folder without a manifest but with ``legacy_marker`` (an earlier Pulmo's output)
    is replaced when every entry is a regular file whose name ``legacy_name`` accepts."""
    p = Path(path)
    what = "output folder"
    _check_name(p, what)
    st = _lstat(p, what)
    if st is None:
        _check_parent(p, what)
        return p
    if stat.S_ISLNK(st.st_mode):
        raise InputError(f"{_show(p)}: is a symbolic link; Pulmo replaces its output folder as a whole and does not "
                         "follow links to do it: give the folder itself or a new one", code="output_is_link")
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{_show(p)}: exists and is not a folder ({'a file' if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)}); "
                         "give a new or empty folder", code="output_is_folder")
    entries = []
    try:
        with os.scandir(p) as it:
            for e in it:
                if e.name != MANIFEST:
                    entries.append(e)
                if len(entries) > MAX_ENTRIES:
                    break
    except OSError as exc:
        raise InputError(f"{_show(p)}: cannot read the {what} ({exc.strerror or exc})", code="output_unwritable") \
            from None
    if not entries:
        _check_parent(p, what)  # staged beside it and renamed: its folder must be writable
        return p
    status, files = read_manifest(p)
    marker_ok = (legacy_marker is not None and status == "absent"
                 and (p / legacy_marker).is_file() and not (p / legacy_marker).is_symlink())
    if status == "absent" and not marker_ok:
        raise InputError(f"{_show(p)}: the folder exists and holds files that are not Pulmo results (no "
                         f"{legacy_marker or MANIFEST}); Pulmo replaces its output folder as a whole, so give a new or "
                         "empty folder", code="output_folder_not_pulmo")
    if status == "damaged":
        raise InputError(f"{_show(p)}: the folder's record of Pulmo's files ({MANIFEST}) is damaged or not Pulmo's, "
                         "so Pulmo cannot tell its files from yours; Pulmo replaces its output folder as a whole: "
                         "give a new or empty folder", code="output_folder_not_pulmo")
    foreign, changed = [], []
    if len(entries) > MAX_ENTRIES:
        foreign.append(f"more than {MAX_ENTRIES} entries")
    for e in entries[:MAX_ENTRIES]:
        shown = _show(e.name) + ("/" if e.is_dir(follow_symlinks=False) else "")
        if status == "ok":
            state = _state(Path(e.path), files)
            if state != "pulmo":
                (changed if state == "changed" else foreign).append(shown)
        elif not (e.is_file(follow_symlinks=False) and legacy_name is not None and legacy_name(e.name)):
            foreign.append(shown)
    if foreign or changed:
        def some(names):
            names = sorted(names)
            return ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
        parts = ([f"files Pulmo did not write: {some(foreign)}"] if foreign else []) + \
                ([f"files changed since Pulmo wrote them: {some(changed)}"] if changed else [])
        raise InputError(f"{_show(p)}: Pulmo replaces its output folder as a whole, and this one holds "
                         + "; and ".join(parts) + ". Move them out of the folder (or delete them) and run again, or "
                         "give another output folder", code="output_folder_not_pulmo")
    _check_parent(p, what)
    return p


def check_folder_to_write_into(path, what: str = "output folder") -> Path:
    """Refuse a folder that outputs are to be written into (not replaced as a whole): a bad name,
    something other than a folder there (a link to a folder is followed), or a place that cannot
    be written. The files written into it are checked one by one (:func:`check_output_file`,
    :func:`check_output_folder`)."""
    p = Path(path)
    _check_name(p, what)
    try:
        st = os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        _check_parent(p, what)
        return p
    except OSError as exc:  # a loop of links, no permission
        raise InputError(f"{_show(p)}: cannot write the {what} there ({exc.strerror or exc})",
                         code="output_unwritable") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{_show(p)}: exists and is not a folder ({'a file' if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)}); "
                         f"give a folder for the {what}", code="output_is_folder")
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"{_show(p)}: cannot write the {what} there: the folder is not writable (permission denied)",
                         code="output_unwritable")
    return p


# --------------------------------------------------------------------------- CSV

#: A cell starting with one of these is run as a formula by spreadsheets (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


def spreadsheet_safe(value):
    """``value`` as a CSV cell that no spreadsheet runs: text starting with ``= + - @``, a tab or a
    carriage return gets a leading ``'`` (spreadsheets show it as text); numbers (``-3.5``,
    ``+1e-3``), a lone ``-`` (a placeholder) and anything that is not text are returned as they are."""
    if isinstance(value, str) and len(value) > 1 and value[0] in FORMULA_START and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_text(fieldnames: Sequence[str], rows: Iterable, *, lineterminator: str = "\n", restval="") -> str:
    """CSV text of a header and rows (dicts by ``fieldnames``, or sequences), every cell and the
    header through :func:`spreadsheet_safe`."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=lineterminator)
    w.writerow([spreadsheet_safe(str(f)) for f in fieldnames])
    for r in rows:
        cells = [r.get(f, restval) for f in fieldnames] if isinstance(r, dict) else list(r)
        w.writerow([spreadsheet_safe(c) for c in cells])
    return buf.getvalue()


def frame_csv(frame, **to_csv) -> str:
    """``frame.to_csv(**to_csv)`` (a pandas DataFrame; index left out unless asked) with every text
    cell and column name through :func:`spreadsheet_safe`; numeric columns are left alone."""
    out = frame.copy()
    for i in range(out.shape[1]):
        col = out.iloc[:, i]
        if col.dtype == object or str(col.dtype) == "string":
            out.isetitem(i, col.map(spreadsheet_safe))
    out.columns = [spreadsheet_safe(str(c)) for c in out.columns]
    to_csv.setdefault("index", False)
    return out.to_csv(**to_csv)
