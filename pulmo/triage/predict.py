"""Triage prediction for many patients at once: validation, imputation, scoring, explanation.

The service layer between file/HTTP edges and the numpy model. Everything is
vectorised over the input: parsing, imputation (M completed copies of the
incomplete rows), the ensemble, the Cox model and the explanation.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import factorial

import numpy as np
import pandas as pd

from pulmo.errors import InputError
from pulmo.triage.imputation import PMMImputer
from pulmo.triage.model import TriageModel
from pulmo.triage.schema import BY_NAME, FEATURE_NAMES, MAX_MISSING, parse_patients, patients_from_records


def horizon_column(t: float) -> str:
    return f"prob_critical_{t:g}d"


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
        if list(self.model.features) != list(FEATURE_NAMES):
            # Trained models may use other features; this predictor handles the ten
            # published ones (see pulmo.triage.training for cohort-specific models).
            self._generic = True
        else:
            self._generic = False
        self._imputer = None

    # -- public API ---------------------------------------------------------------

    def predict(self, data) -> pd.DataFrame:
        """Predict for a DataFrame, a dict (one patient) or a list of dicts.

        Returns the input columns followed by ``score_dl``, ``score_final``, one
        ``prob_critical_<t>d`` per horizon (with ``_low`` / ``_high`` interval
        bounds), ``risk_group``, ``imputed`` (semicolon-separated feature names),
        ``n_imputations``, ``warnings`` and ``error``; plus ``contrib_<feature>``
        when ``explain``. Rows with an error have empty results.
        """
        table = data if isinstance(data, pd.DataFrame) else patients_from_records(data)
        parsed = parse_patients(table) if not self._generic else self._parse_generic(table)
        return self._predict_parsed(table, parsed)

    def predict_values(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Numpy core: raw values (n, p) in model units, NaN = missing -> arrays of results."""
        X = np.asarray(values, dtype=np.float64)
        n, p = X.shape
        m = self.model
        miss = np.isnan(X)
        incomplete = np.flatnonzero(miss.any(axis=1))
        complete = np.flatnonzero(~miss.any(axis=1))
        res = {"score_dl": np.full(n, np.nan), "score_final": np.full(n, np.nan)}
        for t in m.horizons:
            for suffix in ("", "_low", "_high"):
                res[horizon_column(t) + suffix] = np.full(n, np.nan)
        res["risk_probability"] = np.full(n, np.nan)
        if complete.size:
            dl, final = m.linear_predictor(X[complete])
            res["score_dl"][complete], res["score_final"][complete] = dl, final
            for t in m.horizons:
                pr = m.probability(final, t)
                for suffix in ("", "_low", "_high"):
                    res[horizon_column(t) + suffix][complete] = pr
            res["risk_probability"][complete] = m.probability(final, m.risk_horizon)
        if incomplete.size:
            completed = self.imputer().transform(X[incomplete])  # (M, r, p)
            dl, final = m.linear_predictor(completed)  # (M, r)
            lo_q, hi_q = (1 - self.interval) / 2, 1 - (1 - self.interval) / 2
            res["score_dl"][incomplete] = np.median(dl, axis=0)
            res["score_final"][incomplete] = np.median(final, axis=0)
            for t in m.horizons:
                pr = m.probability(final, t)
                c = horizon_column(t)
                res[c][incomplete] = np.median(pr, axis=0)
                res[c + "_low"][incomplete] = np.quantile(pr, lo_q, axis=0)
                res[c + "_high"][incomplete] = np.quantile(pr, hi_q, axis=0)
            res["risk_probability"][incomplete] = np.median(m.probability(final, m.risk_horizon), axis=0)
            res["_completed"] = completed
            res["_incomplete"] = incomplete
        return res

    def survival_curve(self, patient, times=None) -> pd.DataFrame:
        """P(critical illness by day t) for one patient at the model's baseline time points
        (or ``times``), with the imputation interval when values are missing."""
        table = patient if isinstance(patient, pd.DataFrame) else patients_from_records(patient)
        if len(table) != 1:
            raise InputError("survival_curve takes exactly one patient.")
        parsed = parse_patients(table) if not self._generic else self._parse_generic(table)
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
        if self._imputer is None:
            if self.model.donors is None:
                raise InputError("this model has no donor table, so it cannot impute missing values.")
            self._imputer = PMMImputer(self.n_imputations, self.n_iterations, seed=self.seed).fit(
                self.model.donors)
        return self._imputer

    # -- internals ----------------------------------------------------------------

    def _parse_generic(self, table: pd.DataFrame):
        from pulmo.triage.schema import _ALIASES, ParsedPatients, _numeric, normalise_header

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
            v, bad = _numeric(table[col])
            values[:, j] = v
            for i in np.flatnonzero(bad):
                errors[i].append(f"row {rows[i]}, column '{col}': {table[col].iloc[i]!r} is not a number")
            known = BY_NAME.get(_ALIASES.get(normalise_header(f), ""))
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

    def _predict_parsed(self, table: pd.DataFrame, parsed) -> pd.DataFrame:
        miss = self._check_missing(parsed)
        ok = parsed.ok
        idx = np.flatnonzero(ok)
        res = self.predict_values(parsed.values[idx])
        n = len(table)
        out = table.copy()
        feats = list(self.model.features)
        produced = set(res) | {"risk_group", "imputed", "n_imputations", "warnings", "error"}
        produced |= {f"contrib_{f}" for f in feats}
        # Input columns that share a name with a result (e.g. a file scored before)
        # are kept, renamed, rather than silently replaced.
        out = out.rename(columns={c: f"input_{c}" for c in out.columns if c in produced})
        for key, arr in res.items():
            if key.startswith("_") or key == "risk_probability":
                continue
            col = np.full(n, np.nan)
            col[idx] = arr
            out[key] = col
        risk = np.full(n, "", dtype=object)
        risk[idx] = self.model.risk_group(res["risk_probability"])
        out["risk_group"] = risk
        imputed = np.array([";".join(f for f, mm in zip(feats, row) if mm) for row in miss], dtype=object)
        imputed[~ok] = ""
        out["imputed"] = imputed
        n_imp = np.zeros(n, dtype=np.int64)
        n_imp[idx] = np.where(miss[idx].any(axis=1), self.n_imputations, 0)
        out["n_imputations"] = n_imp
        if self.explain:
            contrib = np.full((n, len(feats)), np.nan)
            if idx.size:
                contrib[idx] = self._contributions(parsed.values[idx], res)
            for j, f in enumerate(feats):
                out[f"contrib_{f}"] = contrib[:, j]
        out["warnings"] = ["; ".join(w) for w in parsed.warnings]
        out["error"] = ["; ".join(e) for e in parsed.errors]
        out.attrs["unknown_columns"] = list(parsed.unknown_columns)
        out.attrs["feature_columns"] = dict(parsed.columns)
        return out

    def _contributions(self, X: np.ndarray, res: dict) -> np.ndarray:
        m = self.model
        ref = m.reference if m.reference is not None else m.mean
        contrib = shapley_values(m, np.where(np.isnan(X), 0.0, X), ref)
        if "_incomplete" in res:
            inc = res["_incomplete"]
            completed = res["_completed"]  # (M, r, p)
            M, r, p = completed.shape
            phi = shapley_values(m, completed.reshape(M * r, p), ref).reshape(M, r, p)
            contrib[inc] = phi.mean(axis=0)
        return contrib


_SHAPLEY_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _shapley_design(p: int) -> tuple[np.ndarray, np.ndarray]:
    """All 2^p coalitions (rows, bool) and the (2^p, p) weight matrix W with phi = f(S) @ W."""
    if p not in _SHAPLEY_CACHE:
        masks = ((np.arange(2 ** p)[:, None] >> np.arange(p)) & 1).astype(bool)
        size = masks.sum(axis=1)
        w_in = np.array([factorial(s - 1) * factorial(p - s) / factorial(p) if s > 0 else 0.0 for s in size])
        w_out = np.array([factorial(s) * factorial(p - s - 1) / factorial(p) if s < p else 0.0 for s in size])
        W = np.where(masks, w_in[:, None], -w_out[:, None])
        _SHAPLEY_CACHE[p] = (masks, W)
    return _SHAPLEY_CACHE[p]


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


def predict(data, model: TriageModel, **kwargs) -> pd.DataFrame:
    """Convenience wrapper: ``TriagePredictor(model, **kwargs).predict(data)``."""
    return TriagePredictor(model, **kwargs).predict(data)
