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
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pulmo.errors import InputError
from pulmo.io.limits import check_regular, human_bytes, open_regular

#: Budgets of :func:`read_table` (keyword arguments), each above a real cohort: a table of a
#: million patients with 20 columns is 20 million cells, ~100 MB on disk, ~1.2 GB in memory.
#: Largest file (bytes); protects a server from a huge upload.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: Largest number of cells (rows x columns): what sets the memory a table takes (~60 bytes a cell).
DEFAULT_MAX_CELLS = 20_000_000
#: Most lines (rows, blank ones included).
DEFAULT_MAX_ROWS = 2_000_000
#: Most columns.
DEFAULT_MAX_COLUMNS = 10_000
#: Longest line (bytes as stored).
DEFAULT_MAX_LINE_BYTES = 1024 * 1024
#: Longest cell (characters): the csv module's own limit.
MAX_CELL_CHARS = csv.field_size_limit()


@dataclass(frozen=True)
class TableFormat:
    """What :func:`read_table` detected about a file."""

    encoding: str
    delimiter: str
    decimal: str


def _sniff_delimiter(lines: list[str]) -> str:
    lines = [ln for ln in lines if ln.strip()][:50]
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


class _Limits:
    def __init__(self, name, max_cells, max_rows, max_columns, max_line_bytes):
        self.name, self.max_cells, self.max_rows = name, max_cells, max_rows
        self.max_columns, self.max_line = max_columns, max_line_bytes


def _prescan(opener, unit: str, lim: _Limits) -> bool:
    """One pass over the raw bytes (numpy, nothing decoded): refuse a line longer than
    ``lim.max_line`` bytes, more than ``lim.max_rows`` lines, or, in a file without quotes
    (where every separator separates two cells), more than ``lim.max_cells`` cells; before the
    table is parsed, so that these refusals take a fraction of a second. Returns whether the
    file holds a quote character at all."""
    dtype = np.dtype(unit)
    width = dtype.itemsize
    lines = 0
    seps = np.zeros(4, np.int64)
    quotes = False
    run = 0  # code units since the last line break
    pending = b""
    with opener() as fh:
        while True:
            block = fh.read(1 << 22)
            if not block:
                break
            block = pending + block
            cut = len(block) - len(block) % width
            block, pending = block[:cut], block[cut:]
            arr = np.frombuffer(block, dtype=dtype)
            breaks = np.flatnonzero((arr == 10) | (arr == 13))
            if breaks.size:
                longest = max(run + int(breaks[0]), int(np.diff(breaks).max()) - 1 if breaks.size > 1 else 0)
                run = arr.size - int(breaks[-1]) - 1
            else:
                longest = run = run + arr.size
            if longest * width > lim.max_line:
                raise InputError(f"{lim.name}: a line of more than {human_bytes(lim.max_line)} (after line "
                                 f"{lines}), over the limit of {human_bytes(lim.max_line)} per line; this is not a "
                                 "table of patients.", code="table_too_large")
            lines += int(np.count_nonzero(arr == 10)) or int(np.count_nonzero(arr == 13))
            if lines > lim.max_rows:
                raise InputError(f"{lim.name}: more than {lim.max_rows} lines, over the limit of {lim.max_rows} rows "
                                 "for a table.", code="table_too_large")
            for k, d in enumerate(b",;\t|"):
                seps[k] += int(np.count_nonzero(arr == d))
            quotes = quotes or bool(np.count_nonzero(arr == 34))
    if not quotes and int(seps.max()) + lines + 1 > lim.max_cells:
        raise InputError(f"{lim.name}: about {int(seps.max()) + lines + 1} cells (rows x columns), over the limit of "
                         f"{lim.max_cells} cells for a table.", code="table_too_large")
    return quotes


def _parse(opener, encoding: str, lim: _Limits):
    """(rows of raw cells as tuples, their file lines, delimiter, any text at all) of the whole stream."""
    with opener() as raw:
        text = io.TextIOWrapper(raw, encoding=encoding, newline="")
        first = []
        for line in text:
            first.append(line)
            if len(first) >= 200 or sum(1 for ln in first if ln.strip()) >= 50:
                break
    delimiter = _sniff_delimiter(first)
    rows, lines = [], []
    any_text = False
    cells = 0
    with opener() as raw:
        text = io.TextIOWrapper(raw, encoding=encoding, newline="")
        reader = csv.reader(text, delimiter=delimiter)
        start = 1
        try:
            for r in reader:  # the file line each record starts on, so messages name the line a user sees
                if r and (r[0].strip() or any(c.strip() for c in r)):
                    if not rows and len(r) > lim.max_columns:
                        raise InputError(f"{lim.name}: the header has {len(r)} columns, over the limit of "
                                         f"{lim.max_columns} columns.", code="table_too_large")
                    cells += len(r)
                    if cells > lim.max_cells:
                        raise InputError(f"{lim.name}: more than {lim.max_cells} cells (rows x columns) by line "
                                         f"{reader.line_num}, over the limit of {lim.max_cells} cells for a table.",
                                         code="table_too_large")
                    lines.append(start)
                    rows.append(tuple(r))  # tuples of strings leave the garbage collector's watch: 3x faster
                elif len(r) > 1:  # separators only
                    any_text = True
                start = reader.line_num + 1
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise InputError(f"{lim.name}: line {reader.line_num}: a cell of more than {MAX_CELL_CHARS} characters, "
                                 f"over the limit of {MAX_CELL_CHARS} characters per cell (a quote that is never "
                                 "closed?).", code="table_too_large") from None
            raise InputError(f"{lim.name}: not a readable CSV table ({exc}).") from None
    return rows, lines, delimiter, any_text or bool(rows)


def _opener(path, max_bytes: int, source: str | None):
    """(a function returning a new binary stream of the input, its name for messages)."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        raw, name = bytes(path), source or "upload"
    elif hasattr(path, "read"):
        raw, name = path.read(max_bytes + 1), source or getattr(path, "name", "upload")
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
    else:
        p = Path(path)
        name = source or str(p)
        try:
            st = check_regular(p, name, what="CSV file", allow_dir=True)
        except InputError as exc:
            if exc.code == "not_found":
                raise InputError(f"{name}: file not found.") from None
            raise
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{name}: is a folder, expected a CSV file.")
        if st.st_size > max_bytes:
            raise InputError(f"{name}: file of {human_bytes(st.st_size)}, over the limit of {human_bytes(max_bytes)} "
                             "for a table.", code="table_too_large")
        return (lambda: open_regular(p, name, what="CSV file")), name
    if len(raw) > max_bytes:
        raise InputError(f"{name}: more than {human_bytes(max_bytes)}, over the limit of {human_bytes(max_bytes)} "
                         "for a table.", code="table_too_large")
    return (lambda: io.BytesIO(raw)), name


def read_table(
    path: str | os.PathLike | io.IOBase | bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_cells: int = DEFAULT_MAX_CELLS,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_columns: int = DEFAULT_MAX_COLUMNS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    source: str | None = None,
) -> tuple[pd.DataFrame, TableFormat]:
    """Read a CSV-like table, returning all cells as strings.

    Parameters
    ----------
    path
        A file path, an open binary file, or the raw bytes of an upload. A path that is not a
        regular file (a named pipe, a device such as ``/dev/zero``) is refused before it is opened.
    max_bytes
        Refuse files larger than this many bytes.
    max_cells, max_rows, max_columns, max_line_bytes
        Refuse tables of more cells (rows x columns), lines or columns, or with a longer line
        (bytes): checked in one pass over the raw bytes before parsing, then while parsing, which
        stops at the first excess.
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
        Missing, empty, oversized, binary or malformed files, or duplicated column names;
        budgets exceeded (code ``table_too_large``).
    """
    opener, name = _opener(path, max_bytes, source)
    lim = _Limits(name, max_cells, max_rows, max_columns, max_line_bytes)
    with opener() as fh:
        head = fh.read(4096)
    unit = "u1"
    if head.startswith(b"\xef\xbb\xbf"):
        encodings = ("utf-8-sig",)
    elif head.startswith((b"\xff\xfe", b"\xfe\xff")):
        encodings = ("utf-16",)
        unit = "<u2" if head.startswith(b"\xff\xfe") else ">u2"
    elif b"\x00" in head:
        raise InputError(f"{name}: this looks like a binary file, not a CSV table.")
    else:
        # Windows-1252 is a superset of Latin-1 for printable text; Latin-1 decodes any bytes.
        encodings = ("utf-8", "cp1252", "latin-1")
    quoted = _prescan(opener, unit, lim)
    for encoding in encodings:
        try:
            rows, lines, delimiter, any_text = _parse(opener, encoding, lim)
            break
        except UnicodeError as exc:
            if encoding == "utf-16":
                raise InputError(f"{name}: starts like UTF-16 but cannot be decoded ({exc}).") from None
            if encoding == "utf-8-sig":
                raise InputError(f"{name}: starts like UTF-8 (byte-order mark) but is not valid UTF-8 ({exc}).") from None
    else:  # pragma: no cover - latin-1 decodes anything
        raise InputError(f"{name}: cannot decode the file as text.")
    if not rows and not any_text:
        raise InputError(f"{name}: the file is empty.")
    for line, r in zip(lines, rows) if quoted else ():  # only a quoted cell can hold a line break
        if "\n" in "".join(r) or "\r" in "".join(r):
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
    counts = Counter(header)
    dupes = sorted(h for h, k in counts.items() if k > 1)
    if dupes:
        raise InputError(f"{name}: the header repeats column name(s): {', '.join(dupes)}.")
    data, data_lines = rows[1:], lines[1:]
    del rows
    ncol = len(header)
    for line, r in zip(data_lines, data):
        if len(r) > ncol and any(c.strip() for c in r[ncol:]):
            raise InputError(
                f"{name}: line {line} has {len(r)} cells but the header has {ncol} columns."
            )
        if len(r) < ncol:
            raise InputError(
                f"{name}: line {line} has {len(r)} cells but the header has {ncol} columns (a value or a "
                "separator is missing; an empty value still needs its separator)."
            )
    # Column by column (no whole-table temporaries): cells stripped, empty ones NaN.
    columns = {}
    nan = float("nan")
    for h, cells in zip(header, zip(*data) if data else [()] * ncol):
        col = np.empty(len(data), dtype=object)
        col[:] = [s if (s := c.strip()) else nan for c in cells]
        columns[h] = col
    del data
    table = pd.DataFrame(columns, index=pd.Index(data_lines, name="row"), columns=header, copy=False)
    decimal = "."
    if delimiter == ";" and len(table):
        # European exports: "3,5" means 3.5 when the delimiter is a semicolon.
        pattern = r"-?\d+,\d+"
        hits = {h: table[h].astype(str).str.fullmatch(pattern) for h in header}
        if any(bool(m.any()) for m in hits.values()):
            decimal = ","
            for h, m in hits.items():
                if m.any():
                    table[h] = table[h].where(~m, table[h].astype(str).str.replace(",", ".", regex=False))
    return table, TableFormat(encoding=encoding, delimiter=delimiter, decimal=decimal)
