"""Extracting and reading ZIP archives from users without trusting them.

:func:`open_zip` checks the archive before :mod:`zipfile` parses it: a regular file (not a
FIFO or a device), and a central directory (read from the end record) of at most
``max_members`` entries and a bounded size, so that an archive of a million tiny members is
refused at once instead of being parsed into memory.

:func:`extract_zip` refuses path traversal (absolute names, ``..``, drive letters), symbolic
links, encrypted members and compression methods Python cannot decode, members or totals over
the given limits (declared sizes first, then the bytes actually extracted: headers are not
trusted), and compression ratios no real file reaches (a "zip bomb"); it reports a corrupt
member clearly. :func:`read_member` reads one member the same way, into memory. Every problem
is an :class:`~pulmo.errors.InputError` with a ``code``:

``too_many_files``, ``zip_too_large`` (bytes after decompression), ``zip_bomb`` (ratio),
``zip_unsupported`` (encryption, compression method), ``zip_unsafe`` (traversal, link),
``zip_corrupt``, and the codes of :mod:`pulmo.io.limits` (``special_file``).
"""

from __future__ import annotations

import stat
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from pulmo.errors import InputError
from pulmo.io.limits import KiB, MiB, human_bytes, open_regular

__all__ = ["extract_zip", "open_zip", "read_member", "MAX_MEMBERS", "MAX_RATIO", "RATIO_MIN_BYTES"]

#: Members in one archive, by default (a CT study of several series holds a few thousand files).
MAX_MEMBERS = 10_000
#: Bytes after decompression per byte stored, past which a member is a bomb, not data: real DICOM
#: slices deflate 2-5:1 (noise in the image), text files up to ~20:1; zeros deflate ~1000:1.
MAX_RATIO = 200
#: The ratio rule applies to members (and whole archives) that unpack to more than this.
RATIO_MIN_BYTES = 1 * MiB
#: Folders a member's name may nest (a real study: a handful).
MAX_DEPTH = 32
#: Central-directory bytes allowed per member (names, extra fields, comments).
DIRECTORY_BYTES_PER_MEMBER = 1 * KiB

_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_METHOD_NAMES = {9: "Deflate64", 10: "PKWARE DCL Implode", 6: "Implode", 93: "Zstandard", 95: "xz", 96: "JPEG",
                 97: "WavPack", 98: "PPMd", 99: "AES encryption", 1: "Shrink", 2: "Reduce", 3: "Reduce",
                 4: "Reduce", 5: "Reduce"}
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError,
                RuntimeError, OverflowError, MemoryError)


def _directory(fh, size: int) -> tuple[int, int] | None:
    """(entries, central-directory bytes) from the end record (zip64 too), or None if not found."""
    tail_len = min(size, 65535 + 22 + 20)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" and tail[-2:] == b"\x00\x00" else tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        return None
    _, _, _, _, entries, cd_size, _, _ = struct.unpack("<4s4H2LH", tail[pos:pos + 22])
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF:  # zip64: the locator sits right before the end record
        loc = tail[pos - 20:pos] if pos >= 20 else b""
        if loc[:4] == b"PK\x06\x07":
            (offset,) = struct.unpack("<Q", loc[8:16])
            if offset + 56 <= size:
                fh.seek(offset)
                rec = fh.read(56)
                if rec[:4] == b"PK\x06\x06":
                    entries, cd_size = struct.unpack("<QQ", rec[32:48])
    return int(entries), int(cd_size)


def open_zip(zip_path: Path, *, max_members: int = MAX_MEMBERS, label: str | None = None) -> zipfile.ZipFile:
    """A :class:`zipfile.ZipFile` on ``zip_path`` once its directory is known to be within budget."""
    zip_path = Path(zip_path)
    name = label or zip_path.name
    fh = open_regular(zip_path, name, what="zip archive")
    try:
        size = fh.seek(0, 2)
        found = _directory(fh, size)
        if found is not None:
            entries, cd_size = found
            if entries > max_members:
                raise InputError(f"{name}: holds {entries} members, over the limit of {max_members} files",
                                 code="too_many_files")
            if cd_size > max(64 * KiB, max_members * DIRECTORY_BYTES_PER_MEMBER):
                raise InputError(f"{name}: its table of contents is {human_bytes(cd_size)}, over the limit of "
                                 f"{human_bytes(max(64 * KiB, max_members * DIRECTORY_BYTES_PER_MEMBER))}",
                                 code="too_many_files")
        fh.seek(0)
        zf = _OwnedZip(fh)
    except InputError:
        fh.close()
        raise
    except (*_READ_ERRORS, struct.error) as exc:
        fh.close()
        raise InputError(f"{name}: not a readable zip archive ({exc})", code="zip_corrupt") from None
    zf.own = fh
    if len(zf.infolist()) > max_members:  # the end record understated it
        zf.close()
        raise InputError(f"{name}: holds {len(zf.infolist())} members, over the limit of {max_members} files",
                         code="too_many_files")
    return zf


class _OwnedZip(zipfile.ZipFile):
    """A ZipFile on a file object that it closes with itself."""

    own = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.own is not None:
                self.own.close()


def _check_member(m: zipfile.ZipInfo, name: str, max_member_bytes: int, max_ratio: float,
                  code: str = "file_too_large") -> None:
    if m.flag_bits & 0x1:
        raise InputError(f"{name}: member '{m.filename}' is encrypted; give an archive without a password",
                         code="zip_unsupported")
    if m.compress_type not in _METHODS:
        method = _METHOD_NAMES.get(m.compress_type, f"number {m.compress_type}")
        raise InputError(f"{name}: member '{m.filename}' uses the compression method {method}, which cannot be "
                         "read; re-create the archive with the standard (deflate) compression",
                         code="zip_unsupported")
    if m.file_size > max_member_bytes:
        raise InputError(f"{name}: member '{m.filename}' unpacks to {human_bytes(m.file_size)}, over the limit of "
                         f"{human_bytes(max_member_bytes)} per file", code=code)
    if m.file_size > RATIO_MIN_BYTES and m.file_size > max_ratio * max(m.compress_size, 1):
        raise InputError(f"{name}: member '{m.filename}' would unpack {m.file_size / max(m.compress_size, 1):.0f} "
                         f"times its stored size, over the limit of {max_ratio:g}:1 (a zip bomb, not data)",
                         code="zip_bomb")


def _unsafe(m: zipfile.ZipInfo, name: str) -> None:
    fn = m.filename
    parts = PurePosixPath(fn.replace("\\", "/")).parts
    if fn.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]) or "\x00" in fn:
        raise InputError(f"{name}: refused, member '{fn}' would be written outside the extraction folder "
                         "(path traversal)", code="zip_unsafe")
    if len(parts) > MAX_DEPTH:
        raise InputError(f"{name}: refused, member '{fn[:80]}...' is nested {len(parts) - 1} folders deep, over the "
                         f"limit of {MAX_DEPTH}", code="zip_unsafe")
    if stat.S_ISLNK(m.external_attr >> 16):
        raise InputError(f"{name}: refused, member '{fn}' is a symbolic link", code="zip_unsafe")


class _Budget:
    """Bytes actually extracted, against the per-member, total and ratio limits."""

    def __init__(self, name: str, max_member_bytes: int, max_total_bytes: int, max_ratio: float,
                 code: str = "file_too_large"):
        self.name, self.max_member, self.max_total, self.max_ratio = name, max_member_bytes, max_total_bytes, max_ratio
        self.code = code
        self.total = 0
        self.stored = 0  # compressed bytes of the members begun

    def start(self, m: zipfile.ZipInfo) -> None:
        self.stored += max(m.compress_size, 1)

    def add(self, m: zipfile.ZipInfo, member_bytes: int, n: int) -> None:
        self.total += n
        if member_bytes > self.max_member:
            raise InputError(f"{self.name}: member '{m.filename}' unpacks to more than {human_bytes(self.max_member)}, "
                             f"over the limit of {human_bytes(self.max_member)} per file", code=self.code)
        if member_bytes > RATIO_MIN_BYTES and member_bytes > self.max_ratio * max(m.compress_size, 1):
            raise InputError(f"{self.name}: member '{m.filename}' unpacks more than {self.max_ratio:g} times its stored "
                             f"size, over the limit of {self.max_ratio:g}:1 (a zip bomb, not data)", code="zip_bomb")
        if self.total > self.max_total:
            raise InputError(f"{self.name}: unpacks to more than {human_bytes(self.max_total)}, over the limit of "
                             f"{human_bytes(self.max_total)} in all", code="zip_too_large")
        if self.total > 64 * RATIO_MIN_BYTES and self.total > self.max_ratio * self.stored:
            raise InputError(f"{self.name}: unpacks more than {self.max_ratio:g} times its stored size, over the limit "
                             f"of {self.max_ratio:g}:1 (a zip bomb, not data)", code="zip_bomb")


def _copy(zf: zipfile.ZipFile, m: zipfile.ZipInfo, out, budget: _Budget) -> None:
    """Stream one member into ``out`` (``None``: read and count only)."""
    budget.start(m)
    done = 0
    try:
        src = zf.open(m)
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise InputError(f"{budget.name}: member '{m.filename}' cannot be read ({exc})", code="zip_corrupt") from None
    with src:
        while True:
            try:
                block = src.read(1 << 20)
            except _READ_ERRORS as exc:
                raise InputError(f"{budget.name}: member '{m.filename}' is corrupt ({exc})", code="zip_corrupt") from None
            except Exception as exc:  # noqa: BLE001 - zlib.error, lzma.LZMAError ...: damaged bytes
                raise InputError(f"{budget.name}: member '{m.filename}' is corrupt ({type(exc).__name__}: {exc})",
                                 code="zip_corrupt") from None
            if not block:
                return
            done += len(block)
            budget.add(m, done, len(block))
            if out is not None:
                try:
                    out.write(block)
                except OSError as exc:
                    raise InputError(f"{budget.name}: member '{m.filename}' cannot be extracted "
                                     f"({exc.strerror or exc})") from None


def extract_zip(
    zip_path: Path,
    dest: Path,
    *,
    max_member_bytes: int,
    max_total_bytes: int,
    max_members: int = MAX_MEMBERS,
    max_ratio: float = MAX_RATIO,
    keep: Callable[[PurePosixPath], bool] | None = None,
    code: str = "file_too_large",
) -> None:
    """Extract ``zip_path`` into ``dest`` (all members, or those for which ``keep`` is true).

    Every member's name, type, method and declared size is checked before anything is written;
    while extracting, the bytes actually produced are counted against ``max_member_bytes`` per
    member, ``max_total_bytes`` in all and ``max_ratio`` (bytes out per byte stored, for members
    and totals over :data:`RATIO_MIN_BYTES`), and extraction stops at the first excess.
    """
    zip_path = Path(zip_path)
    name = zip_path.name
    zf = open_zip(zip_path, max_members=max_members)
    try:
        members = zf.infolist()
        declared = 0
        for m in members:
            _unsafe(m, name)
            if m.is_dir():
                continue
            _check_member(m, name, max_member_bytes, max_ratio, code)
            declared += m.file_size
        if declared > max_total_bytes:
            raise InputError(f"{name}: unpacks to {human_bytes(declared)}, over the limit of "
                             f"{human_bytes(max_total_bytes)} in all", code="zip_too_large")
        budget = _Budget(name, max_member_bytes, max_total_bytes, max_ratio, code)
        dest = Path(dest)
        for m in members:
            if m.is_dir():
                continue
            rel = PurePosixPath(m.filename.replace("\\", "/"))
            if keep is not None and not keep(rel):
                continue
            if not rel.parts:
                continue
            target = dest.joinpath(*rel.parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                out = open(target, "wb")
            except OSError as exc:
                raise InputError(f"{name}: member '{m.filename}' cannot be extracted ({exc.strerror or exc})") from None
            with out:
                _copy(zf, m, out, budget)
    finally:
        zf.close()


def read_member(zf: zipfile.ZipFile, member: str, max_bytes: int, label: str, *,
                max_ratio: float = MAX_RATIO, code: str = "file_too_large") -> bytes:
    """The bytes of ``member`` of an archive opened with :func:`open_zip`, counted as they are
    decompressed and refused past ``max_bytes`` (or ``max_ratio``); ``KeyError`` if absent."""
    m = zf.getinfo(member)
    _check_member(m, label, max_bytes, max_ratio, code)
    parts: list[bytes] = []

    class _Sink:
        def write(self, block):
            parts.append(block)

    _copy(zf, m, _Sink(), _Budget(label, max_bytes, max_bytes, max_ratio, code))
    return b"".join(parts)
