"""A training cohort: features, follow-up time and event, validated.

:func:`cohort_from_table` turns a table read by :func:`pulmo.io.tables.read_table`
(string cells, index = spreadsheet row number) into a :class:`Cohort`, refusing
bad input with messages that name the column and the rows:

* the time or event column is absent; a feature named with ``features`` is absent;
* an event cell that is not 0 or 1; a time cell that is empty, not a number, NaN,
  infinite, zero or negative (rows without follow-up cannot be used);
* a feature cell that is not a number, or, for a feature Pulmo knows (age, ldh, copd, ...), a value
  outside its possible range (age -40, copd 7);
* a feature that has a single value among the rows used;
* fewer than ``min_events`` events.

Rows with an **empty feature cell** (or NA/NaN/null/..., :data:`pulmo.io.cells.MISSING_TOKENS`)
are **dropped**, counted per feature, and reported (complete-case training); the trained model
imputes such values at prediction time from its donor table.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pulmo.errors import InputError
from pulmo.io.cells import normalise_header, parse_numbers
from pulmo.triage.schema import BY_NAME, FEATURE_NAMES, ID_COLUMNS, feature_for_column

#: Minimum number of events to train at all (a reliable model needs far more).
MIN_EVENTS = 10

#: How messages name the choices of :func:`cohort_from_table` (``time``, ``event``,
#: ``features``); a face passes its own words (a form field, an option) as ``setting_names``.
SETTING_NAMES: dict[str, str] = {"time": "the time column", "event": "the event column",
                                 "features": "the feature list"}


def _names(setting_names: dict[str, str] | None) -> dict[str, str]:
    return {**SETTING_NAMES, **(setting_names or {})}


@dataclass
class Cohort:
    """Complete rows of a training cohort.

    Attributes
    ----------
    X : (n, p) float64 raw feature values (the cohort's own units).
    time : (n,) follow-up time in days (> 0).
    event : (n,) 1.0 = event (e.g. critical illness), 0.0 = censored.
    features : p feature names (model input order).
    rows : (n,) spreadsheet row numbers of the rows kept.
    binary : (p,) True where the feature only takes the values 0 and 1.
    columns : feature name -> input column it came from.
    source : description of the input (file name) for provenance.
    rows_read : number of data rows in the input.
    dropped_missing : number of rows dropped for missing feature values.
    missing_by_feature : feature -> number of empty cells among the rows read.
    dropped_rows : the first dropped row numbers (at most 50), for the report.
    time_column, event_column : names of the outcome columns.
    sha256 : checksum of the input file, when read from a file.
    """

    X: np.ndarray
    time: np.ndarray
    event: np.ndarray
    features: list[str]
    rows: np.ndarray | None = None
    binary: np.ndarray | None = None
    columns: dict[str, str] = field(default_factory=dict)
    source: str = ""
    rows_read: int = 0
    dropped_missing: int = 0
    missing_by_feature: dict[str, int] = field(default_factory=dict)
    dropped_rows: list[int] = field(default_factory=list)
    time_column: str = "time"
    event_column: str = "event"
    sha256: str | None = None

    def __post_init__(self) -> None:
        self.X = np.asarray(self.X, dtype=np.float64)
        self.time = np.asarray(self.time, dtype=np.float64).reshape(-1)
        self.event = np.asarray(self.event, dtype=np.float64).reshape(-1)
        n = self.time.size
        if self.X.ndim != 2 or self.X.shape != (n, len(self.features)):
            raise InputError(f"feature matrix {self.X.shape} does not match {n} rows x {len(self.features)} features")
        if self.rows is None:
            self.rows = np.arange(2, n + 2)
        if self.binary is None:
            self.binary = np.array([_is_binary(self.X[:, j]) for j in range(self.X.shape[1])], dtype=bool)
        if not self.rows_read:
            self.rows_read = n
        if not self.columns:
            self.columns = {f: f for f in self.features}

    @property
    def n(self) -> int:
        return int(self.time.size)

    @property
    def n_events(self) -> int:
        return int(self.event.sum())

    def validate(self, min_events: int = MIN_EVENTS, setting_names: dict[str, str] | None = None) -> "Cohort":
        """Check times, events, constant features and the number of events.

        ``setting_names``: how messages name the feature choice (see :data:`SETTING_NAMES`).
        """
        if len(self.features) == 0:
            raise InputError("no features to train on.")
        if self.n == 0:
            raise InputError("no complete rows to train on.")
        bad_t = ~np.isfinite(self.time) | (self.time <= 0)
        if bad_t.any():
            raise InputError(f"column '{self.time_column}': follow-up times must be positive numbers; "
                             + _rows_text(self.rows[bad_t], self.time[bad_t]))
        bad_e = ~np.isin(self.event, (0.0, 1.0))
        if bad_e.any():
            raise InputError(f"column '{self.event_column}': the event must be 0 (censored) or 1 (event); "
                             + _rows_text(self.rows[bad_e], self.event[bad_e]))
        if not np.all(np.isfinite(self.X)):
            i, j = np.argwhere(~np.isfinite(self.X))[0]
            raise InputError(f"row {self.rows[i]}, feature '{self.features[j]}': value is not a finite number.")
        for j, f in enumerate(self.features):
            vals = np.unique(self.X[:, j])
            if vals.size < 2:
                raise InputError(
                    f"feature '{f}' has the same value ({vals[0]:g}) in all {self.n} rows used for "
                    f"training, so it carries no information; leave it out of {_names(setting_names)['features']}."
                )
        if self.n_events < min_events:
            raise InputError(
                f"only {self.n_events} event(s) ({self.event_column} = 1) among the {self.n} rows used; "
                f"at least {min_events} are needed to train a model (and about 10 per feature for a "
                "reliable one)."
            )
        if self.n_events == self.n:
            raise InputError(f"every row has an event ({self.event_column} = 1); a survival model "
                             "needs censored rows too (e.g. patients discharged without the event).")
        return self


def _is_binary(col: np.ndarray) -> bool:
    col = col[np.isfinite(col)]
    return bool(col.size) and bool(np.all((col == 0) | (col == 1)))


def _rows_text(rows, values=None, limit: int = 5) -> str:
    """'rows 3, 5' or 'row 3 has -1, row 5 has 0', then ' and N more row(s)'."""
    rows = [int(r) for r in rows]
    if values is None:
        shown = ("row " if len(rows) == 1 else "rows ") + ", ".join(str(r) for r in rows[:limit])
    else:
        shown = ", ".join(f"row {r} has {_fmt(v)}" for r, v in zip(rows[:limit], list(values)[:limit]))
    more = f" and {len(rows) - limit} more row(s)" if len(rows) > limit else ""
    return f"{shown}{more}."


def _fmt(v) -> str:
    if isinstance(v, str):
        return repr(v)
    v = float(v)
    return "NaN" if np.isnan(v) else f"{v:g}"


def _suggest(name: str, columns: list[str]) -> str:
    hit = difflib.get_close_matches(name, columns, n=1, cutoff=0.6)
    if not hit:
        norm = {normalise_header(c): c for c in columns}
        h = difflib.get_close_matches(normalise_header(name), list(norm), n=1, cutoff=0.6)
        hit = [norm[h[0]]] if h else []
    return f" (did you mean '{hit[0]}'?)" if hit else ""


def _find_column(table: pd.DataFrame, name: str, what: str) -> str:
    if name in table.columns:
        return name
    norm = {normalise_header(c): c for c in table.columns}
    if normalise_header(name) in norm:
        return norm[normalise_header(name)]
    cols = [str(c) for c in table.columns]
    raise InputError(f"the {what} column '{name}' is not in the table{_suggest(name, cols)}; "
                     f"columns are: {', '.join(cols)}.")


def _canonical_map(columns: list[str]) -> dict[str, str] | None:
    """If the columns are exactly the ten published features (under their canonical,
    original or alias names, in the model's units), map column -> canonical name."""
    mapped = {c: feature_for_column(c) for c in columns}
    if None in mapped.values() or sorted(mapped.values()) != sorted(FEATURE_NAMES):
        return None
    return mapped


def cohort_from_table(
    table: pd.DataFrame,
    *,
    time: str,
    event: str,
    features: list[str] | None = None,
    source: str = "",
    min_events: int = MIN_EVENTS,
    setting_names: dict[str, str] | None = None,
) -> Cohort:
    """Validate a cohort table and return its complete rows as a :class:`Cohort`.

    Parameters
    ----------
    table
        Cells as strings or numbers; an integer index is taken as the spreadsheet row
        number for messages (as :func:`pulmo.io.tables.read_table` returns).
    time, event
        Names of the follow-up time (days) and event (0/1) columns.
    features
        Feature columns in the wanted order; default: every other column except an ID
        column (patient_id, id, mrn, ...). When they are the ten features of the
        published model (under any accepted name), the model uses the canonical
        names and order, so predictions check ranges and units as for the published model.
    source
        The input's name (a file name) for messages and provenance.
    min_events
        Fewest events accepted.
    setting_names
        How messages name ``time``, ``event`` and ``features`` (default :data:`SETTING_NAMES`),
        e.g. a command line's option names.
    """
    say = _names(setting_names)
    if len(table) == 0:
        raise InputError(f"{source or 'the table'}: the table has a header but no rows.")
    n = len(table)
    rows = (table.index.to_numpy(dtype=np.int64) if pd.api.types.is_integer_dtype(table.index.dtype)
            else np.arange(2, n + 2))
    tcol = _find_column(table, time, "time")
    ecol = _find_column(table, event, "event")
    if tcol == ecol:
        raise InputError(f"{say['time']} and {say['event']} name the same column '{tcol}'.")
    if features is None:
        feat_cols = [c for c in table.columns
                     if c not in (tcol, ecol) and normalise_header(c) not in ID_COLUMNS]
        if not feat_cols:
            raise InputError("the table has no feature columns besides the time and event columns.")
    else:
        if not features:
            raise InputError(f"{say['features']} names no feature.")
        dupes = sorted({f for f in features if features.count(f) > 1})
        if dupes:
            raise InputError(f"{say['features']} repeats: {', '.join(dupes)}.")
        cols = [str(c) for c in table.columns]
        unknown = [f for f in features if f not in table.columns
                   and normalise_header(f) not in {normalise_header(c) for c in cols}]
        if unknown:
            raise InputError(f"unknown feature(s) in {say['features']}: "
                             + "; ".join(f"'{u}'{_suggest(u, cols)}" for u in unknown)
                             + f". Columns are: {', '.join(cols)}.")
        feat_cols = [_find_column(table, f, "feature") for f in features]
        for c in feat_cols:
            if c in (tcol, ecol):
                raise InputError(f"'{c}' is the {'time' if c == tcol else 'event'} column and cannot "
                                 "also be a feature.")
        if len(set(feat_cols)) != len(feat_cols):
            raise InputError(f"{say['features']} names the same column twice.")

    # Outcome columns: refused, never dropped.
    t, t_missing, t_bad = parse_numbers(table[tcol])
    if t_bad.any():
        raise InputError(f"column '{tcol}': the follow-up time must be a number; "
                         + _rows_text(rows[t_bad], table[tcol].to_numpy()[t_bad]))
    if t_missing.any():
        raise InputError(f"column '{tcol}': the follow-up time is missing (empty or NaN) in "
                         + _rows_text(rows[t_missing])
                         + " Every row needs a time; remove those rows or fill in the time.")
    nonpos = t <= 0
    if nonpos.any():
        raise InputError(f"column '{tcol}': follow-up times must be positive (days from admission); "
                         + _rows_text(rows[nonpos], t[nonpos]))
    e_raw = table[ecol]
    e, e_missing, e_bad = parse_numbers(e_raw)
    not01 = ~e_missing & ~e_bad & ~np.isin(e, (0.0, 1.0))
    bad = e_bad | not01
    if bad.any():
        raise InputError(f"column '{ecol}': the event must be 0 (censored) or 1 (event); "
                         + _rows_text(rows[bad], e_raw.to_numpy()[bad]))
    if e_missing.any():
        raise InputError(f"column '{ecol}': the event is missing (empty or NaN) in "
                         + _rows_text(rows[e_missing]) + " Every row needs 0 or 1.")

    # Features: non-numeric cells refused, empty cells dropped (counted).
    X = np.empty((n, len(feat_cols)))
    missing = np.zeros((n, len(feat_cols)), dtype=bool)
    for j, c in enumerate(feat_cols):
        v, miss, badj = parse_numbers(table[c])
        if badj.any():
            i = np.flatnonzero(badj)
            cells = table[c].to_numpy()
            first = ", ".join(f"row {rows[k]} has {str(cells[k])!r}" for k in i[:5])
            more = f" and {i.size - 5} more row(s)" if i.size > 5 else ""
            raise InputError(f"column '{c}': feature values must be numbers (code yes/no as 1/0); "
                             f"{first}{more}.")
        known = BY_NAME.get(feature_for_column(c) or "")
        if known is not None:  # a feature Pulmo knows (age, ldh, ...): impossible values are refused
            lo, hi = known.valid
            out = np.flatnonzero(~miss & ~((v >= lo) & (v <= hi)))
            if out.size:
                first = ", ".join(f"row {rows[k]} has {v[k]:g}" for k in out[:5])
                more = f" and {out.size - 5} more row(s)" if out.size > 5 else ""
                raise InputError(f"column '{c}': {known.label.lower()} must lie in {lo:g}-{hi:g} {known.unit}; "
                                 f"{first}{more}.")
        X[:, j] = v
        missing[:, j] = miss
    keep = ~missing.any(axis=1)
    names = list(feat_cols)
    canon = _canonical_map(names)
    if canon is not None:
        order = [names.index(next(c for c in names if canon[c] == f)) for f in FEATURE_NAMES]
        X, missing = X[:, order], missing[:, order]
        columns = {FEATURE_NAMES[k]: names[i] for k, i in enumerate(order)}
        names = list(FEATURE_NAMES)
    else:
        columns = {c: c for c in names}
    if not keep.any():
        raise InputError("every row has at least one empty feature cell, so no complete row is left to "
                         f"train on; choose fewer features in {say['features']}.")
    cohort = Cohort(
        X=X[keep], time=t[keep], event=e[keep], features=[str(x) for x in names], rows=rows[keep],
        columns=columns, source=source, rows_read=n, dropped_missing=int((~keep).sum()),
        missing_by_feature={f: int(missing[:, j].sum()) for j, f in enumerate(names) if missing[:, j].any()},
        dropped_rows=[int(r) for r in rows[~keep][:50]], time_column=tcol, event_column=ecol,
    )
    return cohort.validate(min_events, setting_names)


def load_cohort(path, *, time: str, event: str, features: list[str] | None = None,
                min_events: int = MIN_EVENTS, setting_names: dict[str, str] | None = None) -> Cohort:
    """Read a CSV cohort with :func:`pulmo.io.tables.read_table` and validate it (see
    :func:`cohort_from_table`)."""
    from pulmo.io.tables import read_table

    table, _ = read_table(path)
    cohort = cohort_from_table(table, time=time, event=event, features=features,
                               source=Path(path).name, min_events=min_events, setting_names=setting_names)
    cohort.sha256 = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return cohort
