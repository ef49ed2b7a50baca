"""What a table cell or a column header means: one reading for every table Pulmo takes.

Every reader of tabular input (triage admission data :mod:`pulmo.triage.schema`, clinical-score
inputs :mod:`pulmo.triage.scores_io`, training cohorts :mod:`pulmo.triage.training.cohort`,
validation data :mod:`pulmo.stats.io`) turns cells into numbers here, so that "NA", "yes" or
"Direct bilirubin (µmol/L)" mean the same thing whichever face (command line, web service)
and whichever reader gets them.

Cells are compared as stripped, lower-case text. Cells of a numeric or boolean column (a
DataFrame built in code) are taken as they are. The parsers return plain arrays and masks, never
raise for a bad cell: the reader decides whether an unreadable or missing cell fails the row,
fails the file or is imputed, and names the row and column in its own message.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__ = ["MISSING_TOKENS", "TRUE_TOKENS", "FALSE_TOKENS", "AMBIGUOUS_BINARY_TOKENS", "normalise_header",
           "cell_text", "missing_cells", "parse_numbers", "parse_binary"]

#: Cells that mean "no value" (compared stripped and lower-cased). An empty cell is missing too.
MISSING_TOKENS: frozenset[str] = frozenset({
    "", "na", "n/a", "#n/a", "<na>", "nan", "null", "none", "?", ".", "-", "missing", "unknown", "not known", "nk",
})
#: Cells that mean yes (1) in a yes/no column.
TRUE_TOKENS: frozenset[str] = frozenset({"1", "1.0", "yes", "y", "true", "t", "positive", "pos"})
#: Cells that mean no (0) in a yes/no column.
FALSE_TOKENS: frozenset[str] = frozenset({"0", "0.0", "no", "n", "false", "f", "negative", "neg"})
#: Missing in a number column, but unreadable in a yes/no column, where "none" could mean "no"
#: as well as "not recorded"; it is also the "no comorbidity" of a list of names.
AMBIGUOUS_BINARY_TOKENS: frozenset[str] = frozenset({"none"})


def normalise_header(name: object) -> str:
    """A column header or key as matched: 'Direct bilirubin (µmol/L)' -> 'direct_bilirubin_umol_l'.

    Lower case, µ/μ -> u, subscript ₂ -> 2 ('SpO₂ %' -> 'spo2'), every run of other characters
    -> '_', no leading or trailing '_'.
    """
    s = str(name).strip().lower().replace("µ", "u").replace("μ", "u").replace("₂", "2")
    return re.sub(r"[^0-9a-z]+", "_", s).strip("_")


def cell_text(cells: pd.Series) -> pd.Series:
    """Cells as stripped lower-case text (``string`` dtype: True -> 'true', 37.5 -> '37.5'), <NA> where empty."""
    return cells.astype("string").str.strip().str.lower()


def missing_cells(cells: pd.Series, *, none_is_missing: bool = True) -> np.ndarray:
    """Boolean mask of empty cells and :data:`MISSING_TOKENS` (without "none" if ``none_is_missing`` is False)."""
    tokens = MISSING_TOKENS if none_is_missing else MISSING_TOKENS - AMBIGUOUS_BINARY_TOKENS
    text = cell_text(cells)
    return (text.isna() | text.isin(tokens)).to_numpy(dtype=bool)


def _numeric_dtype(cells: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(cells.dtype) and not pd.api.types.is_bool_dtype(cells.dtype)


def parse_numbers(cells: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells -> ``(values, missing, unreadable)``: float64 values and two boolean masks.

    Text cells: a :data:`MISSING_TOKENS` cell is missing, a number (decimal point; the table
    reader has already turned decimal commas into points) is read, anything else, infinities
    included, is unreadable. ``values`` is NaN where missing or unreadable.

    A numeric column is taken as it is: NaN is missing, nothing is unreadable, and infinities
    are left for the caller's range check. A boolean column is text ('true'), so unreadable.
    """
    if _numeric_dtype(cells):
        values = cells.to_numpy(dtype=np.float64, na_value=np.nan)
        return values, np.isnan(values), np.zeros(values.size, dtype=bool)
    text = cell_text(cells)
    missing = (text.isna() | text.isin(MISSING_TOKENS)).to_numpy(dtype=bool)
    values = pd.to_numeric(text.where(~missing), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    unreadable = ~missing & ~np.isfinite(values)
    values[unreadable] = np.nan
    return values, missing, unreadable


def parse_binary(cells: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Yes/no cells -> ``(values, missing, unreadable)``: 1.0 for yes, 0.0 for no, NaN otherwise.

    Text cells: :data:`TRUE_TOKENS` -> 1, :data:`FALSE_TOKENS` -> 0, :data:`MISSING_TOKENS` (but
    "none", see :data:`AMBIGUOUS_BINARY_TOKENS`) missing, another finite number as that number
    (the caller refuses what is not 0 or 1, naming the value), anything else unreadable. A boolean
    column gives 1/0, a numeric column its numbers (NaN missing).
    """
    if pd.api.types.is_bool_dtype(cells.dtype) or _numeric_dtype(cells):
        values = cells.to_numpy(dtype=np.float64, na_value=np.nan)
        return values, np.isnan(values), np.zeros(values.size, dtype=bool)
    text = cell_text(cells)
    yes = text.isin(TRUE_TOKENS).to_numpy(dtype=bool)
    no = text.isin(FALSE_TOKENS).to_numpy(dtype=bool)
    missing = (text.isna() | text.isin(MISSING_TOKENS - AMBIGUOUS_BINARY_TOKENS)).to_numpy(dtype=bool)
    values = np.full(len(cells), np.nan)
    values[yes], values[no] = 1.0, 0.0
    other = ~(yes | no | missing)
    if other.any():
        number = pd.to_numeric(text.where(other), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        readable = other & np.isfinite(number)
        values[readable] = number[readable]
    unreadable = other & np.isnan(values)
    return values, missing, unreadable
