"""Reading tabular input (CSV) written by spreadsheets from any locale.

Hospital exports come as UTF-8 with or without a byte-order mark, UTF-16 (Excel's
"Unicode text"), Windows-1252 / Latin-1, comma-, semicolon- or tab-separated, and,
with semicolons, often with a decimal comma ("3,5"). :func:`read_table` detects
all of that and returns every cell as a string (or NaN for an empty cell), so the
caller validates values itself and can name the row and column of a bad one.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pulmo.errors import InputError

#: Largest table accepted by default (bytes). Protects a server from a huge upload.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class TableFormat:
    """What :func:`read_table` detected about a file."""

    encoding: str
    delimiter: str
    decimal: str


def _decode(raw: bytes, source: str) -> tuple[str, str]:
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="strict"), "utf-8-sig"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise InputError(f"{source}: starts like UTF-16 but cannot be decoded ({exc.reason}).") from None
    if b"\x00" in raw[:4096]:
        raise InputError(f"{source}: this looks like a binary file, not a CSV table.")
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        # Windows-1252 is a superset of Latin-1 for printable text; fall back to
        # Latin-1, which decodes any byte string.
        for enc in ("cp1252", "latin-1"):
            try:
                return raw.decode(enc), enc
            except UnicodeDecodeError:
                continue
    raise InputError(f"{source}: cannot decode the file as text.")  # pragma: no cover


def _sniff_delimiter(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()][:50]
    if not lines:
        return ","
    header = lines[0]
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        return ","
    # Prefer a delimiter whose count is consistent across lines; the header is
    # the most reliable single line (numbers with decimal commas live below it).
    return best


def read_table(
    path: str | os.PathLike | io.IOBase | bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    source: str | None = None,
) -> tuple[pd.DataFrame, TableFormat]:
    """Read a CSV-like table, returning all cells as strings.

    Parameters
    ----------
    path
        A file path, an open binary file, or the raw bytes of an upload.
    max_bytes
        Refuse files larger than this many bytes.
    source
        Name used in error messages (defaults to the path).

    Returns
    -------
    (table, format)
        ``table`` has one column per header cell (names stripped of whitespace)
        and string cells (NaN where empty); its index is the 1-based *data* row
        number as a spreadsheet user counts it (header is row 1, first data row 2).

    Raises
    ------
    InputError
        Missing, empty, oversized, binary or malformed files, or duplicated column names.
    """
    if isinstance(path, bytes):
        raw, name = path, source or "upload"
    elif hasattr(path, "read"):
        raw, name = path.read(max_bytes + 1), source or getattr(path, "name", "upload")
    else:
        p = Path(path)
        name = source or str(p)
        if not p.exists():
            raise InputError(f"{name}: file not found.")
        if p.is_dir():
            raise InputError(f"{name}: is a folder, expected a CSV file.")
        if p.stat().st_size > max_bytes:
            raise InputError(f"{name}: file is larger than the limit of {max_bytes} bytes.")
        raw = p.read_bytes()
    if len(raw) > max_bytes:
        raise InputError(f"{name}: file is larger than the limit of {max_bytes} bytes.")
    text, encoding = _decode(raw, name)
    if not text.strip():
        raise InputError(f"{name}: the file is empty.")
    delimiter = _sniff_delimiter(text)
    try:
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        lines, rows = [], []
        start = 1
        for r in reader:  # the file line each record starts on, so messages name the line a user sees
            if any(c.strip() for c in r):
                lines.append(start)
                rows.append(r)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"{name}: not a readable CSV table ({exc}).") from None
    for line, r in zip(lines, rows):
        if any("\n" in c or "\r" in c for c in r):
            raise InputError(f"{name}: line {line}: a cell runs over several lines, which usually means a "
                             'quote (") opened there is never closed, so the lines after it were read into that '
                             "cell; check the quotes.")
    if not rows:
        raise InputError(f"{name}: the file holds only separators, no table.")
    header = [c.strip() for c in rows[0]]
    if any(not h for h in header):
        # Trailing empty header cells from spreadsheet exports are tolerated.
        while header and not header[-1]:
            header.pop()
        if any(not h for h in header):
            raise InputError(f"{name}: the header row has an empty column name.")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise InputError(f"{name}: the header repeats column name(s): {', '.join(dupes)}.")
    data, data_lines = rows[1:], lines[1:]
    ncol = len(header)
    for line, r in zip(data_lines, data):
        extra = r[ncol:]
        if any(c.strip() for c in extra):
            raise InputError(
                f"{name}: line {line} has {len(r)} cells but the header has {ncol} columns."
            )
        if len(r) < ncol:
            raise InputError(
                f"{name}: line {line} has {len(r)} cells but the header has {ncol} columns (a value or a "
                "separator is missing; an empty value still needs its separator)."
            )
    body = [r[:ncol] for r in data]
    table = pd.DataFrame(body, columns=header, dtype=object)
    table = table.apply(lambda col: col.str.strip())
    table = table.mask(table == "")
    table.index = pd.Index(data_lines, name="row")
    decimal = "."
    if delimiter == ";":
        # European exports: "3,5" means 3.5 when the delimiter is a semicolon.
        sample = table.stack().astype(str) if len(table) else pd.Series(dtype=str)
        if sample.str.fullmatch(r"-?\d+,\d+").any():
            decimal = ","
            table = table.apply(
                lambda col: col.where(~col.astype(str).str.fullmatch(r"-?\d+,\d+"),
                                      col.astype(str).str.replace(",", ".", regex=False))
            )
    return table, TableFormat(encoding=encoding, delimiter=delimiter, decimal=decimal)
