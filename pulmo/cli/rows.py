"""Shared output handling for the row-by-row table commands (predict, score)."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from pulmo.io import outputs

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


def add_output_options(p: argparse.ArgumentParser) -> None:
    """``-o/--output`` and ``--force`` of the row-by-row commands."""
    p.add_argument("-o", "--output", help="output file (default: standard output); an existing file is replaced "
                   "only when Pulmo wrote it (its folder's .pulmo-manifest.json says so) or with --force")
    p.add_argument("--force", action="store_true",
                   help="replace an existing output file that Pulmo did not write (or that changed since)")


def output_checks(args: argparse.Namespace) -> dict:
    """How ``-o`` is checked (:func:`pulmo.io.outputs.check_output_file`): never the input (nor
    ``args.input_files``, e.g. the model), never over a file Pulmo did not write unless --force."""
    inputs = [getattr(args, "input", None), *getattr(args, "input_files", ())]
    return dict(force=getattr(args, "force", False), inputs=inputs, what="output file")


def check_output(args: argparse.Namespace) -> None:
    """Refuse an unusable ``-o`` before any work."""
    if args.output:
        outputs.check_output_file(args.output, **output_checks(args))


def table_text(result: pd.DataFrame, as_json: bool, **to_csv) -> str:
    """The output table as JSON records or as CSV whose text cells no spreadsheet runs as a formula
    (:func:`pulmo.io.outputs.frame_csv`)."""
    if as_json:
        return result.to_json(orient="records", indent=1, force_ascii=False)
    return outputs.frame_csv(result, **to_csv)


def write_text(path: str | None, text: str, args: argparse.Namespace | None = None) -> None:
    """Write ``text`` to ``path`` through Pulmo's one output writer (:mod:`pulmo.io.outputs`), or
    to standard output when ``path`` is None."""
    if path:
        outputs.write_text(path, text, **(output_checks(args) if args is not None else {}))
    else:
        sys.stdout.write(text)
