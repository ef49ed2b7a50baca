"""Triage prediction for many patients at once: validation, imputation, scoring, explanation.

The service layer between file/HTTP edges and the numpy model. Everything is
vectorised over the input: parsing, imputation (M completed copies of the
incomplete rows), the ensemble, the Cox model and the explanation.

Two views of one computation:

* :meth:`TriagePredictor.predict` returns a DataFrame (the input columns plus the result
  columns; fast for large tables);
* :meth:`TriagePredictor.predict_records` (or :func:`predict_records`) returns a
  :class:`TriageBatch` of typed :class:`TriageResult` records, one per patient, whose
  :meth:`TriageResult.to_row` gives the same result columns and
  :meth:`TriageBatch.to_frame` the same table.

A :class:`TriagePredictor` may be shared by threads (a web service's request handlers):
it holds no per-call state, and its lazily fitted imputer is created under a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from math import factorial

import numpy as np
import pandas as pd

from pulmo.errors import InputError
from pulmo.io.cells import normalise_header, parse_numbers
from pulmo.triage.imputation import PMMImputer
from pulmo.triage.model import TriageModel
from pulmo.triage.schema import (BY_NAME, FEATURE_NAMES, MAX_MISSING, ParsedPatients, feature_for_column,
                                 parse_patients, patients_from_records)

__all__ = ["Probability", "TriageResult", "TriageBatch", "TriageArrays", "TriagePredictor", "predict",
           "predict_records", "shapley_values", "horizon_column", "TEXT_COLUMNS"]

#: Result columns holding text ("" where empty); ``n_imputations`` is a whole number, the others are floats.
TEXT_COLUMNS = ("risk_group", "imputed", "warnings", "error")


def horizon_column(t: float) -> str:
    """The column of P(critical illness by day ``t``): 5 -> ``prob_critical_5d``."""
    return f"prob_critical_{t:g}d"


def _floats(values: np.ndarray) -> list[float | None]:
    """Array -> list of Python floats, None where NaN."""
    return [None if v != v else v for v in np.asarray(values, dtype=np.float64).tolist()]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Probability:
    """P(critical illness by day ``days``) for one patient, a fraction between 0 and 1.

    ``value`` is the median over the M imputations (the single value for a complete row);
    ``low`` and ``high`` bound the predictor's central ``interval`` of those M values (both
    equal ``value`` for a complete row). All three are None for a row that was not scored.
    """

    days: float
    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class TriageResult:
    """The triage prediction for one patient.

    Attributes
    ----------
    row : the row number used in messages: the file line for a table read by
        :func:`pulmo.io.tables.read_table`, else the table's integer index.
    patient_id : from the ID column (patient_id, id, mrn, ...), else the row number as text.
    probabilities : one :class:`Probability` per horizon of the model (days, increasing as
        the model lists them; 5, 10 and 30 for the published model).
    risk_group : "low", "medium" or "high" from P at the model's risk horizon (30 days for
        the published model); None when not scored.
    score_dl : the ensemble's score (dimensionless), median over imputations; None when not scored.
    score_final : the Cox linear predictor, ``log`` of the hazard ratio to the baseline
        (dimensionless), median over imputations; None when not scored.
    imputed : the features that were missing and imputed (empty for a complete row).
    n_imputations : M, the completed copies behind the median and interval (0 for a
        complete row or one that was not scored).
    warnings : readable notes on values to check (implausible values, unit guesses).
    error : None, or why the row was not scored (a readable message naming the row and column).
    contributions : with ``explain``, each feature's exact Shapley contribution to
        ``score_final`` (same scale; they sum to ``score_final`` minus the reference
        patient's), averaged over the imputations; values are None when not scored. None
        without ``explain``.
    """

    row: int
    patient_id: str
    probabilities: tuple[Probability, ...]
    risk_group: str | None
    score_dl: float | None
    score_final: float | None
    imputed: tuple[str, ...] = ()
    n_imputations: int = 0
    warnings: tuple[str, ...] = ()
    error: str | None = None
    contributions: dict[str, float | None] | None = None

    @property
    def ok(self) -> bool:
        """True when the row was scored."""
        return self.error is None

    def probability(self, days: float) -> Probability:
        """The :class:`Probability` at ``days`` (one of the model's horizons)."""
        for p in self.probabilities:
            if p.days == float(days):
                return p
        raise KeyError(f"no prediction at {days:g} days; the model predicts at "
                       f"{', '.join(f'{p.days:g}' for p in self.probabilities)} days")

    def to_row(self) -> dict[str, object]:
        """The result columns the CSV output holds, in its order: ``score_dl``, ``score_final``,
        ``prob_critical_<t>d`` with ``_low`` / ``_high`` per horizon, ``risk_group``, ``imputed``
        (";"-separated), ``n_imputations``, ``contrib_<feature>`` (with ``explain``),
        ``warnings`` and ``error`` ("; "-separated, "" when none). Missing numbers are None."""
        row: dict[str, object] = {"score_dl": self.score_dl, "score_final": self.score_final}
        for p in self.probabilities:
            c = horizon_column(p.days)
            row[c], row[c + "_low"], row[c + "_high"] = p.value, p.low, p.high
        row["risk_group"] = self.risk_group or ""
        row["imputed"] = ";".join(self.imputed)
        row["n_imputations"] = self.n_imputations
        if self.contributions is not None:
            row.update({f"contrib_{f}": v for f, v in self.contributions.items()})
        row["warnings"] = "; ".join(self.warnings)
        row["error"] = self.error or ""
        return row

    def to_dict(self) -> dict:
        """Every field as JSON-ready Python values (lists and dicts; None for missing numbers)."""
        return asdict(self)


@dataclass(frozen=True)
class TriageBatch(Sequence):
    """The results of one call on a table: a sequence of :class:`TriageResult`, in input order.

    ``unused_columns``: input columns the model does not use (kept in :meth:`to_frame`);
    ``feature_columns``: the input column(s) each feature came from; ``features``: the model's.
    """

    results: tuple[TriageResult, ...]
    unused_columns: tuple[str, ...] = ()
    feature_columns: dict[str, str] = field(default_factory=dict)
    features: tuple[str, ...] = FEATURE_NAMES

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i):
        return self.results[i]

    def __iter__(self) -> Iterator[TriageResult]:
        return iter(self.results)

    @property
    def n_failed(self) -> int:
        """Rows that were not scored."""
        return sum(r.error is not None for r in self.results)

    def to_frame(self, inputs: pd.DataFrame | None = None) -> pd.DataFrame:
        """The results as a table: ``inputs``' columns (one renamed ``input_<name>`` where it
        would clash with a result column), then the columns of :meth:`TriageResult.to_row`;
        the index is ``inputs``' (default: the rows). This is what the command line writes."""
        rows = [r.to_row() for r in self.results]
        names = list(rows[0]) if rows else []
        columns = {}
        for c in names:
            cells = [row[c] for row in rows]
            columns[c] = (np.array(cells, dtype=object) if c in TEXT_COLUMNS
                          else np.array(cells, dtype=np.int64) if c == "n_imputations"
                          else np.array(cells, dtype=np.float64))
        if inputs is None:
            inputs = pd.DataFrame(index=pd.Index([r.row for r in self.results], name="row"))
        elif len(inputs) != len(rows):
            raise ValueError(f"the inputs have {len(inputs)} rows, the results {len(rows)}")
        return _join(inputs, columns, self.features)


def _join(inputs: pd.DataFrame, columns: dict[str, np.ndarray], features) -> pd.DataFrame:
    """``inputs`` then the result ``columns``; an input column that shares the name of a result
    (e.g. a file scored before) is kept, renamed ``input_<name>``, rather than replaced."""
    reserved = set(columns) | {f"contrib_{f}" for f in features}
    out = inputs.rename(columns={c: f"input_{c}" for c in inputs.columns if c in reserved})
    for c, values in columns.items():
        out[c] = values
    return out


@dataclass(frozen=True)
class TriageArrays:
    """Vectorised results of :meth:`TriagePredictor.predict_values` for n rows of raw values.

    ``score_dl``, ``score_final`` and ``risk_probability`` (P at the model's risk horizon) are
    (n,); ``probability``, ``low`` and ``high`` are (n, len(model.horizons)), fractions 0..1.
    For incomplete rows (indices ``incomplete``) they are the median and the interval bounds
    over the M completed copies ``completed`` (M, len(incomplete), p); ``completed`` is None when
    every row is complete.
    """

    score_dl: np.ndarray
    score_final: np.ndarray
    probability: np.ndarray
    low: np.ndarray
    high: np.ndarray
    risk_probability: np.ndarray
    incomplete: np.ndarray
    completed: np.ndarray | None = None


# --------------------------------------------------------------------------- predictor


@dataclass
class TriagePredictor:
    """Predict critical illness for admission data.

    Parameters
    ----------
    model : TriageModel
        From :meth:`TriageModel.load`, :func:`pulmo.triage.published.import_published_model`
        or training.
    n_imputations : int
        M completed data sets for rows with missing values (default 20). The
        reported value is the median over M and ``*_low`` / ``*_high`` bound the
        central ``interval`` (default 90%) of the M values.
    n_iterations : int
        Chained-equation sweeps for rows missing several values.
    seed : int
        Imputation seed; results are deterministic per (seed, patient values).
    explain : bool
        Add ``contrib_<feature>``: exact Shapley values of ``score_final`` against the
        model's reference patient (the development cohort's mean); they sum to
        ``score_final - reference_score``. For imputed rows they are averaged over
        the M imputations.
    max_missing : int
        Rows missing more of the ten features are refused (the paper excluded them).
    """

    model: TriageModel
    n_imputations: int = 20
    n_iterations: int = 20
    seed: int = 2020
    interval: float = 0.90
    explain: bool = False
    max_missing: int = MAX_MISSING

    def __post_init__(self) -> None:
        if self.n_imputations < 1:
            raise InputError("the number of imputations must be at least 1.")
        if not 0 < self.interval < 1:
            raise InputError("the interval must be between 0 and 1 (e.g. 0.9).")
        # Trained models may use other features; they are read by name with the
        # model's own checks (see _parse_generic).
        self._generic = list(self.model.features) != list(FEATURE_NAMES)
        self._imputer = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # picklable (a lock is not)
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- public API ---------------------------------------------------------------

    def predict(self, data) -> pd.DataFrame:
        """Predict for a DataFrame, a dict (one patient) or a list of dicts.

        Returns the input columns followed by ``score_dl``, ``score_final``, one
        ``prob_critical_<t>d`` per horizon (with ``_low`` / ``_high`` interval
        bounds), ``risk_group``, ``imputed`` (semicolon-separated feature names),
        ``n_imputations``, ``warnings`` and ``error``; plus ``contrib_<feature>``
        when ``explain`` (see :meth:`TriageResult.to_row`). Rows with an error have
        empty results. ``attrs`` holds ``unknown_columns`` and ``feature_columns``.
        """
        table, parsed, res = self._run(data)
        out = _join(table, res.columns(), self.model.features)
        out.attrs["unknown_columns"] = list(parsed.unknown_columns)
        out.attrs["feature_columns"] = dict(parsed.columns)
        return out

    def predict_records(self, data) -> TriageBatch:
        """Predict for a DataFrame, a dict (one patient) or a list of dicts: one
        :class:`TriageResult` per patient, in input order, with the same numbers as
        :meth:`predict`. Invalid rows get an ``error``, not an exception; table-level
        problems (no rows, a required column missing) raise :class:`InputError`."""
        _, parsed, res = self._run(data)
        return TriageBatch(res.records(), tuple(map(str, parsed.unknown_columns)), dict(parsed.columns),
                           tuple(self.model.features))

    def predict_values(self, values: np.ndarray) -> TriageArrays:
        """Numpy core: raw values (n, p) in model units, NaN = missing -> :class:`TriageArrays`."""
        X = np.asarray(values, dtype=np.float64)
        n, p = X.shape
        m = self.model
        H = len(m.horizons)
        miss = np.isnan(X)
        incomplete = np.flatnonzero(miss.any(axis=1))
        complete = np.flatnonzero(~miss.any(axis=1))
        score_dl, score_final, risk = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        prob, low, high = np.full((n, H), np.nan), np.full((n, H), np.nan), np.full((n, H), np.nan)
        completed = None
        if complete.size:
            dl, final = m.linear_predictor(X[complete])
            score_dl[complete], score_final[complete] = dl, final
            for k, t in enumerate(m.horizons):
                prob[complete, k] = low[complete, k] = high[complete, k] = m.probability(final, t)
            risk[complete] = m.probability(final, m.risk_horizon)
        if incomplete.size:
            completed = self.imputer().transform(X[incomplete])  # (M, r, p)
            dl, final = m.linear_predictor(completed)  # (M, r)
            lo_q, hi_q = (1 - self.interval) / 2, 1 - (1 - self.interval) / 2
            score_dl[incomplete] = np.median(dl, axis=0)
            score_final[incomplete] = np.median(final, axis=0)
            for k, t in enumerate(m.horizons):
                pr = m.probability(final, t)
                prob[incomplete, k] = np.median(pr, axis=0)
                low[incomplete, k] = np.quantile(pr, lo_q, axis=0)
                high[incomplete, k] = np.quantile(pr, hi_q, axis=0)
            risk[incomplete] = np.median(m.probability(final, m.risk_horizon), axis=0)
        return TriageArrays(score_dl, score_final, prob, low, high, risk, incomplete, completed)

    def survival_curve(self, patient, times=None) -> pd.DataFrame:
        """P(critical illness by day t) for one patient at the model's baseline time points
        (or ``times``, days), with the imputation interval when values are missing."""
        table = patient if isinstance(patient, pd.DataFrame) else patients_from_records(patient)
        if len(table) != 1:
            raise InputError("survival_curve takes exactly one patient.")
        parsed = self._parse(table)
        if parsed.errors[0]:
            raise InputError("; ".join(parsed.errors[0]))
        self._check_missing(parsed)
        if parsed.errors[0]:
            raise InputError("; ".join(parsed.errors[0]))
        times = np.asarray(self.model.baseline_times if times is None else times, dtype=np.float64)
        X = parsed.values
        if np.isnan(X).any():
            final = self.model.linear_predictor(self.imputer().transform(X))[1][:, 0]
        else:
            final = self.model.linear_predictor(X)[1]
        pr = self.model.probability(final[:, None], times[None, :])
        lo_q, hi_q = (1 - self.interval) / 2, 1 - (1 - self.interval) / 2
        return pd.DataFrame({
            "day": times,
            "prob_critical": np.median(pr, axis=0),
            "prob_critical_low": np.quantile(pr, lo_q, axis=0),
            "prob_critical_high": np.quantile(pr, hi_q, axis=0),
        })

    def imputer(self) -> PMMImputer:
        """The imputer fitted on the model's donor table (fitted once, on first use; thread-safe)."""
        with self._lock:
            if self._imputer is None:
                if self.model.donors is None:
                    raise InputError("this model has no donor table, so it cannot impute missing values.")
                self._imputer = PMMImputer(self.n_imputations, self.n_iterations, seed=self.seed).fit(
                    self.model.donors)
            return self._imputer

    # -- internals ----------------------------------------------------------------

    def _parse(self, table: pd.DataFrame) -> ParsedPatients:
        return self._parse_generic(table) if self._generic else parse_patients(table)

    def _run(self, data) -> tuple[pd.DataFrame, ParsedPatients, _Results]:
        table = data if isinstance(data, pd.DataFrame) else patients_from_records(data)
        parsed = self._parse(table)
        miss = self._check_missing(parsed)
        ok = parsed.ok
        idx = np.flatnonzero(ok)
        arrays = self.predict_values(parsed.values[idx])
        contrib = None
        if self.explain:
            contrib = np.full((len(table), len(self.model.features)), np.nan)
            if idx.size:
                contrib[idx] = self._contributions(parsed.values[idx], arrays)
        return table, parsed, _Results(self, parsed, miss, idx, arrays, contrib)

    def _parse_generic(self, table: pd.DataFrame) -> ParsedPatients:
        """Read a trained model's features by column name, with the checks of a known feature
        (age, ldh, ...) where a column names one, and the training cohort's range otherwise."""
        norm = {normalise_header(c): c for c in table.columns}
        feats = list(self.model.features)
        missing = [f for f in feats if normalise_header(f) not in norm]
        if missing:
            raise InputError("missing required column(s) for this model: " + ", ".join(missing))
        n = len(table)
        rows = table.index.to_numpy() if pd.api.types.is_integer_dtype(table.index.dtype) else np.arange(2, n + 2)
        values = np.full((n, len(feats)), np.nan)
        errors: list[list[str]] = [[] for _ in range(n)]
        warnings: list[list[str]] = [[] for _ in range(n)]
        m = self.model
        for j, f in enumerate(feats):
            col = norm[normalise_header(f)]
            v, _, bad = parse_numbers(table[col])
            values[:, j] = v
            for i in np.flatnonzero(bad):
                errors[i].append(f"row {rows[i]}, column '{col}': {table[col].iloc[i]!r} is not a number")
            known = BY_NAME.get(feature_for_column(f) or "")
            seen = m.donors[:, j] if m.donors is not None and len(m.donors) else None
            binary = m.mean[j] == 0 and m.sd[j] == 1 and (seen is None or set(np.unique(seen)) <= {0.0, 1.0})
            for i in np.flatnonzero(np.isfinite(v)):
                x = v[i]
                if (known is not None and known.kind == "binary" or binary) and x not in (0.0, 1.0):
                    errors[i].append(f"row {rows[i]}, column '{col}': {x:g}; {f} is 0 (no) or 1 (yes)")
                elif known is not None and not known.valid[0] <= x <= known.valid[1]:
                    errors[i].append(f"row {rows[i]}, column '{col}': {x:g} is impossible for {known.label.lower()} "
                                     f"({known.valid[0]:g}-{known.valid[1]:g} {known.unit})")
                elif known is not None and not known.plausible[0] <= x <= known.plausible[1]:
                    warnings[i].append(f"{col} {x:g} is unusual ({known.plausible[0]:g}-{known.plausible[1]:g} "
                                       f"{known.unit}); check the value and its unit")
                elif seen is not None and not binary and not seen.min() <= x <= seen.max():
                    warnings[i].append(f"{col} {x:g} lies outside the training cohort's range "
                                       f"({seen.min():g}-{seen.max():g}); check the value and its unit")
        return ParsedPatients(ids=rows.astype(str).astype(object), values=values, errors=errors,
                              warnings=warnings, rows=rows,
                              columns={f: norm[normalise_header(f)] for f in feats}, unknown_columns=[])

    def _check_missing(self, parsed) -> np.ndarray:
        miss = np.isnan(parsed.values)
        n_miss = miss.sum(axis=1)
        feats = list(self.model.features)
        for i in np.flatnonzero(n_miss > self.max_missing):
            names = ", ".join(f for f, mm in zip(feats, miss[i]) if mm)
            parsed.errors[i].append(
                f"row {parsed.rows[i]}: {n_miss[i]} of the {len(feats)} features are missing ({names}); "
                f"at most {self.max_missing} can be imputed (the published model excluded such patients)"
            )
        if self.model.donors is None:
            for i in np.flatnonzero((n_miss > 0) & (n_miss <= self.max_missing)):
                parsed.errors[i].append(f"row {parsed.rows[i]}: missing values and this model has no donor table")
        return miss

    def _contributions(self, X: np.ndarray, res: TriageArrays) -> np.ndarray:
        m = self.model
        ref = m.reference if m.reference is not None else m.mean
        contrib = shapley_values(m, np.where(np.isnan(X), 0.0, X), ref)
        if res.completed is not None:
            M, r, p = res.completed.shape
            phi = shapley_values(m, res.completed.reshape(M * r, p), ref).reshape(M, r, p)
            contrib[res.incomplete] = phi.mean(axis=0)
        return contrib


@dataclass
class _Results:
    """Every row's results, vectorised (the scored rows ``idx`` from ``arrays``); the two views
    of :class:`TriagePredictor`: result columns (:meth:`columns`) and records (:meth:`records`)."""

    predictor: TriagePredictor
    parsed: ParsedPatients
    miss: np.ndarray
    idx: np.ndarray
    arrays: TriageArrays
    contrib: np.ndarray | None

    def _full(self, values: np.ndarray) -> np.ndarray:
        """Scored rows' values -> all rows (NaN where not scored)."""
        out = np.full((len(self.miss),) + values.shape[1:], np.nan)
        out[self.idx] = values
        return out

    def _risk_groups(self) -> np.ndarray:
        out = np.full(len(self.miss), "", dtype=object)
        out[self.idx] = self.predictor.model.risk_group(self.arrays.risk_probability)
        return out

    def _n_imputations(self) -> np.ndarray:
        out = np.zeros(len(self.miss), dtype=np.int64)
        out[self.idx] = np.where(self.miss[self.idx].any(axis=1), self.predictor.n_imputations, 0)
        return out

    def _imputed(self) -> list[tuple[str, ...]]:
        """Per row, the features imputed (none for a complete or an invalid row)."""
        feats = list(self.predictor.model.features)
        out: list[tuple[str, ...]] = [()] * len(self.miss)
        for i in self.idx[self.miss[self.idx].any(axis=1)].tolist():
            out[i] = tuple(f for f, mm in zip(feats, self.miss[i].tolist()) if mm)
        return out

    def columns(self) -> dict[str, np.ndarray]:
        """The result columns of :meth:`TriageResult.to_row`, for all rows at once."""
        a, model = self.arrays, self.predictor.model
        cols: dict[str, object] = {"score_dl": self._full(a.score_dl), "score_final": self._full(a.score_final)}
        prob, low, high = self._full(a.probability), self._full(a.low), self._full(a.high)
        for k, t in enumerate(model.horizons):
            c = horizon_column(t)
            cols[c], cols[c + "_low"], cols[c + "_high"] = prob[:, k], low[:, k], high[:, k]
        cols["risk_group"] = self._risk_groups()
        cols["imputed"] = np.array([";".join(t) for t in self._imputed()], dtype=object)
        cols["n_imputations"] = self._n_imputations()
        if self.contrib is not None:
            for j, f in enumerate(model.features):
                cols[f"contrib_{f}"] = self.contrib[:, j]
        cols["warnings"] = ["; ".join(w) for w in self.parsed.warnings]
        cols["error"] = ["; ".join(e) for e in self.parsed.errors]
        return cols

    def records(self) -> tuple[TriageResult, ...]:
        a, model, parsed = self.arrays, self.predictor.model, self.parsed
        days = [float(t) for t in model.horizons]
        prob, low, high = (self._full(x).tolist() for x in (a.probability, a.low, a.high))
        score_dl, score_final = _floats(self._full(a.score_dl)), _floats(self._full(a.score_final))
        groups = self._risk_groups().tolist()
        n_imp = self._n_imputations().tolist()
        contrib = None if self.contrib is None else self.contrib.tolist()
        feats = list(model.features)
        out = []
        for i, imputed in enumerate(self._imputed()):
            scored = score_final[i] is not None
            probs = tuple(Probability(d, *((v if scored else None) for v in (prob[i][k], low[i][k], high[i][k])))
                          for k, d in enumerate(days))
            out.append(TriageResult(
                row=int(parsed.rows[i]), patient_id=str(parsed.ids[i]), probabilities=probs,
                risk_group=str(groups[i]) or None, score_dl=score_dl[i], score_final=score_final[i],
                imputed=imputed, n_imputations=int(n_imp[i]), warnings=tuple(parsed.warnings[i]),
                error="; ".join(parsed.errors[i]) or None,
                contributions=None if contrib is None else
                dict(zip(feats, (c if scored else None for c in contrib[i]))),
            ))
        return tuple(out)


# --------------------------------------------------------------------------- explanation


@lru_cache(maxsize=None)
def _shapley_design(p: int) -> tuple[np.ndarray, np.ndarray]:
    """All 2^p coalitions (rows, bool) and the (2^p, p) weight matrix W with phi = f(S) @ W.

    Cached per p (thread-safe); the arrays are read-only because they are shared."""
    masks = ((np.arange(2 ** p)[:, None] >> np.arange(p)) & 1).astype(bool)
    size = masks.sum(axis=1)
    w_in = np.array([factorial(s - 1) * factorial(p - s) / factorial(p) if s > 0 else 0.0 for s in size])
    w_out = np.array([factorial(s) * factorial(p - s - 1) / factorial(p) if s < p else 0.0 for s in size])
    W = np.where(masks, w_in[:, None], -w_out[:, None])
    masks.flags.writeable = False
    W.flags.writeable = False
    return masks, W


def shapley_values(model: TriageModel, X: np.ndarray, reference: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Exact (interventional) Shapley values of ``score_final`` for rows of raw values X.

    Feature j's value is the average change in ``score_final`` when j switches from
    the reference value to the patient's, over all orders of the other features.
    The values sum to ``score_final(x) - score_final(reference)``. Cost: 2^p model
    evaluations per row (p = 10 -> 1024).
    """
    X = np.asarray(X, dtype=np.float64)
    n, p = X.shape
    if p > 14:
        raise InputError("exact Shapley values are limited to 14 features.")
    masks, W = _shapley_design(p)
    out = np.empty((n, p))
    for s in range(0, n, chunk):
        xb = X[s : s + chunk]
        hybrid = np.where(masks[None, :, :], xb[:, None, :], reference[None, None, :])
        f = model.linear_predictor(hybrid)[1]  # (b, 2^p)
        out[s : s + chunk] = f @ W
    return out


# --------------------------------------------------------------------------- functions


def predict(data, model: TriageModel, **kwargs) -> pd.DataFrame:
    """Convenience wrapper: ``TriagePredictor(model, **kwargs).predict(data)``."""
    return TriagePredictor(model, **kwargs).predict(data)


def predict_records(model_or_predictor: TriageModel | TriagePredictor, patients, **kwargs) -> TriageBatch:
    """Triage results as typed records: :meth:`TriagePredictor.predict_records`.

    ``patients``: a dict (one patient), a list of dicts or a DataFrame, values in the units
    of :mod:`pulmo.triage.schema` (or another unit it converts). ``kwargs`` are the
    :class:`TriagePredictor` options (``n_imputations``, ``seed``, ``interval``, ``explain``, ...),
    given with a model only. Safe to call from several threads at once.
    """
    if isinstance(model_or_predictor, TriagePredictor):
        if kwargs:
            raise TypeError("give the options to the TriagePredictor, not with it: "
                            + ", ".join(sorted(kwargs)))
        return model_or_predictor.predict_records(patients)
    return TriagePredictor(model_or_predictor, **kwargs).predict_records(patients)
