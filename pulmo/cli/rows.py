"""Shared output handling for the row-by-row table commands (predict, score)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from pulmo.errors import InputError
from pulmo.io.atomic import atomic_path

MAX_LISTED_ERRORS = 20


def report_row_errors(result: pd.DataFrame, *, strict: bool) -> tuple[int, bool]:
    """Print the ``error`` column's messages to stderr (at most 20).

    Returns (number of failed rows, whether to stop without writing: ``--strict``
    with at least one failed row).
    """
    failed = result["error"] != ""
    n_failed = int(failed.sum())
    for msg in result.loc[failed, "error"].head(MAX_LISTED_ERRORS):
        print(f"pulmo: {msg}", file=sys.stderr)
    if n_failed > MAX_LISTED_ERRORS:
        print(f"pulmo: ... and {n_failed - MAX_LISTED_ERRORS} more rows with errors", file=sys.stderr)
    stop = strict and n_failed > 0
    if stop:
        print(f"pulmo: error: {n_failed} of {len(result)} rows are invalid; nothing written (--strict).",
              file=sys.stderr)
    return n_failed, stop


def report_row_warnings(result: pd.DataFrame, shown: int = 3) -> int:
    """Say on stderr how many rows carry warnings (implausible values, unit guesses, ...), with the
    first few; they are also in the output's ``warnings`` column. Returns that number."""
    if "warnings" not in result:
        return 0
    warned = result["warnings"].fillna("").astype(str) != ""
    n = int(warned.sum())
    if n:
        print(f"pulmo: warning: {n} row(s) have values to check (see the warnings column), e.g.:", file=sys.stderr)
        for i, msg in result.loc[warned, "warnings"].head(shown).items():
            print(f"pulmo:   row {i}: {msg}", file=sys.stderr)  # the index is the file line
    return n


def write_text(path: str | None, text: str) -> None:
    """Write ``text`` atomically to ``path``, or to standard output when ``path`` is None."""
    if path:
        if Path(path).is_dir():
            raise InputError(f"{path}: is a folder; give an output file name.")
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
