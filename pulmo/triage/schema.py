"""The ten admission features of the triage model: names, units, ranges, conversions.

Canonical names (and the authors' original CSV column names) in the network's input
order::

    malignancy        Malignancy               0/1   history of cancer
    xray_abnormality  X.ray.abnormality        0/1   abnormal chest imaging
    copd              COPD                     0/1   chronic obstructive pulmonary disease
    dyspnea           Dyspnea                  0/1   dyspnoea at admission
    comorbidities     Number.of.comorbidities  count 0..9 (see COMORBIDITIES)
    ldh               Lactate.dehydrogenase    U/L
    age               Age                      years
    nlr               NLR                      neutrophil count / lymphocyte count
    creatine_kinase   Creatine.kinase          U/L
    direct_bilirubin  Direct.bilirubin         umol/L

Other accepted inputs, converted on reading: ``direct_bilirubin_mg_dl`` (x 17.104),
``ldh_ukat_l`` and ``creatine_kinase_ukat_l`` (x 60, 1 ukat/L = 60 U/L),
``neutrophils`` + ``lymphocytes`` (any one unit for both; NLR = their ratio), and
``comorbidity_list`` (names such as "diabetes; hypertension", counted, and giving
``copd`` / ``malignancy`` when those columns are absent). Column headers are matched
case-insensitively with punctuation ignored, so "Direct bilirubin (mg/dL)" works.

A value that is possible but implausible, or much more typical in another unit (ldh = 4.5:
ukat/L?), is used as given, with a warning naming the column, the value and the likely unit;
the ranges and conversion factors are the table shared with the clinical scores,
:mod:`pulmo.triage.units`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pulmo.errors import InputError
from pulmo.io.cells import missing_cells, normalise_header, parse_binary, parse_numbers
from pulmo.triage import units


@dataclass(frozen=True)
class Feature:
    """One model input: canonical name, the authors' column name, unit and ranges.

    Values outside ``valid`` (inclusive) are impossible and make the row fail;
    values outside ``plausible`` are accepted with a warning. For a laboratory value
    ``plausible`` is the survivable range of :mod:`pulmo.triage.units`, which also decides
    the unit warnings (a value much more typical in another unit); for age it is the adult
    range the model was developed on.
    """

    name: str
    original: str
    label: str
    unit: str
    kind: str  # "binary" | "count" | "continuous"
    valid: tuple[float, float]
    plausible: tuple[float, float]
    aliases: tuple[str, ...] = ()
    hint_low: str = ""
    hint_high: str = ""


FEATURES: tuple[Feature, ...] = (
    Feature("malignancy", "Malignancy", "History of cancer", "0/1", "binary", (0, 1), (0, 1),
            ("cancer", "cancer_history", "history_of_cancer")),
    Feature("xray_abnormality", "X.ray.abnormality", "Chest imaging abnormality", "0/1", "binary",
            (0, 1), (0, 1),
            ("x_ray_abnormality", "xray", "chest_xray_abnormality", "imaging_abnormality",
             "chest_imaging_abnormality")),
    Feature("copd", "COPD", "COPD", "0/1", "binary", (0, 1), (0, 1),
            ("chronic_obstructive_pulmonary_disease",)),
    Feature("dyspnea", "Dyspnea", "Dyspnoea", "0/1", "binary", (0, 1), (0, 1),
            ("dyspnoea", "shortness_of_breath")),
    Feature("comorbidities", "Number.of.comorbidities", "Number of comorbidities", "count",
            "count", (0, 9), (0, 9),
            ("number_of_comorbidities", "n_comorbidities", "num_comorbidities", "comorbidity_count")),
    Feature("ldh", "Lactate.dehydrogenase", "Lactate dehydrogenase", "U/L", "continuous",
            (0, 20000), units.plausible_range("ldh"),
            ("lactate_dehydrogenase", "ldh_u_l", "lactate_dehydrogenase_u_l")),
    Feature("age", "Age", "Age", "years", "continuous", (0, 120), (18, 110),
            ("age_years",), hint_low="the model was developed on adults"),
    Feature("nlr", "NLR", "Neutrophil-to-lymphocyte ratio", "ratio", "continuous",
            (0, 1000), units.plausible_range("nlr"),
            ("neutrophil_lymphocyte_ratio", "neutrophil_to_lymphocyte_ratio")),
    Feature("creatine_kinase", "Creatine.kinase", "Creatine kinase", "U/L", "continuous",
            (0, 500000), units.plausible_range("creatine_kinase"), ("ck", "creatine_kinase_u_l", "ck_u_l", "cpk")),
    Feature("direct_bilirubin", "Direct.bilirubin", "Direct bilirubin", "umol/L", "continuous",
            (0, 1000), units.plausible_range("direct_bilirubin"),
            ("dbil", "direct_bilirubin_umol_l", "conjugated_bilirubin", "dbil_umol_l")),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
ORIGINAL_NAMES: dict[str, str] = {f.name: f.original for f in FEATURES}
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}

#: Maximum number of the ten features a row may miss (the paper excluded the rest).
MAX_MISSING = 3

#: Unit conversions: alternative column -> (feature, factor to the model's unit); the factors
#: are those of the shared unit table (:mod:`pulmo.triage.units`).
CONVERSIONS: dict[str, tuple[str, float]] = {
    col: (feature, units.to_base_factor(col))
    for col, feature in (("direct_bilirubin_mg_dl", "direct_bilirubin"), ("dbil_mg_dl", "direct_bilirubin"),
                         ("ldh_ukat_l", "ldh"), ("lactate_dehydrogenase_ukat_l", "ldh"),
                         ("creatine_kinase_ukat_l", "creatine_kinase"), ("ck_ukat_l", "creatine_kinase"))
}
NEUTROPHIL_COLUMNS = ("neutrophils", "neutrophil_count", "anc", "absolute_neutrophil_count")
LYMPHOCYTE_COLUMNS = ("lymphocytes", "lymphocyte_count", "alc", "absolute_lymphocyte_count")
COMORBIDITY_LIST_COLUMNS = ("comorbidity_list", "comorbidities_list", "comorbidity_names")
ID_COLUMNS = ("patient_id", "id", "patientid", "subject_id", "study_id", "case_id", "mrn")

#: The nine comorbidities counted by the original calculator, with accepted synonyms.
COMORBIDITIES: dict[str, tuple[str, ...]] = {
    "diabetes": ("diabetes", "diabetes mellitus", "dm", "t2dm", "type 2 diabetes", "type 1 diabetes"),
    "hypertension": ("hypertension", "htn", "high blood pressure"),
    "coronary heart disease": ("coronary heart disease", "chd", "cad", "coronary artery disease",
                               "ischemic heart disease", "ischaemic heart disease", "ihd"),
    "cerebrovascular disease": ("cerebrovascular disease", "stroke", "cvd", "cerebrovascular"),
    "hepatitis b": ("hepatitis b", "hbv", "hepatitis b infection", "chronic hepatitis b"),
    "chronic kidney disease": ("chronic kidney disease", "ckd", "renal disease", "chronic renal disease"),
    "immunodeficiency": ("immunodeficiency", "immunosuppression", "immunocompromised", "hiv"),
    "copd": ("copd", "chronic obstructive pulmonary disease"),
    "cancer": ("cancer", "malignancy", "tumour", "tumor", "neoplasm"),
}
_COMORBIDITY_LOOKUP = {syn: canon for canon, syns in COMORBIDITIES.items() for syn in syns}
_NONE_WORDS = {"none", "no", "nil", "0", "-"}

#: Normalised column name (:func:`~pulmo.io.cells.normalise_header`) -> feature, for the
#: canonical, original and alias names of every feature.
FEATURE_ALIASES: dict[str, str] = {
    normalise_header(alias): f.name for f in FEATURES for alias in (f.name, f.original, *f.aliases)
}


def feature_for_column(name: object) -> str | None:
    """The feature a column header names ('Direct bilirubin' -> 'direct_bilirubin'), or None."""
    return FEATURE_ALIASES.get(normalise_header(name))


@dataclass
class ParsedPatients:
    """Admission data validated and converted to the model's units.

    Attributes
    ----------
    ids : (n,) object array of patient identifiers (the row number when no ID column).
    values : (n, 10) float64, raw values in model units and :data:`FEATURE_NAMES`
        order, NaN where missing.
    errors : list of n lists of messages; a row with any error is not scored.
    warnings : list of n lists of messages (implausible values, conversions).
    rows : (n,) int, the spreadsheet row number of each record (header = row 1).
    columns : mapping of each feature to the input column(s) it came from.
    unknown_columns : input columns Pulmo does not use (kept in the output).
    """

    ids: np.ndarray
    values: np.ndarray
    errors: list[list[str]]
    warnings: list[list[str]]
    rows: np.ndarray
    columns: dict[str, str]
    unknown_columns: list[str]

    @property
    def ok(self) -> np.ndarray:
        return np.array([not e for e in self.errors], dtype=bool)


def parse_comorbidity_list(cell: str) -> set[str]:
    """'Diabetes; HTN, COPD' -> {'diabetes', 'hypertension', 'copd'}; raises ValueError on unknown names."""
    parts = [p.strip().lower() for p in re.split(r"[;,|/+]", str(cell)) if p.strip()]
    found, unknown = set(), []
    for p in parts:
        if p in _NONE_WORDS:
            continue
        canon = _COMORBIDITY_LOOKUP.get(re.sub(r"\s+", " ", p))
        if canon is None:
            unknown.append(p)
        else:
            found.add(canon)
    if unknown:
        raise ValueError(
            f"unknown comorbidity name(s) {', '.join(repr(u) for u in unknown)}; "
            f"expected any of: {', '.join(COMORBIDITIES)}"
        )
    return found


def _suggest(name: str, candidates: list[str]) -> str:
    hit = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean column '{hit[0]}'?)" if hit else ""


def parse_patients(table: pd.DataFrame, *, require_all_columns: bool = True) -> ParsedPatients:
    """Validate admission data and convert it to model units.

    Parameters
    ----------
    table
        One row per patient. Cells may be strings (as read by
        :func:`pulmo.io.tables.read_table`) or numbers. Its index is taken as the
        spreadsheet row number for messages when it is integer, else 1-based.
    require_all_columns
        If True (default), a feature with no column at all is an error for the
        whole table (a misspelt header must not silently become "impute for
        everyone"); add the column with empty cells to request imputation.

    Raises
    ------
    InputError
        For table-level problems (no rows, missing or conflicting columns).
    """
    if len(table) == 0:
        raise InputError("the table has a header but no patient rows.")
    n = len(table)
    if pd.api.types.is_integer_dtype(table.index.dtype):
        rows = table.index.to_numpy(dtype=np.int64)
    else:
        rows = np.arange(2, n + 2)
    norm = {}
    for col in table.columns:
        key = normalise_header(col)
        if key in norm:
            raise InputError(f"columns '{norm[key]}' and '{col}' mean the same thing; keep one.")
        norm[key] = col

    values = np.full((n, len(FEATURES)), np.nan)
    errors: list[list[str]] = [[] for _ in range(n)]
    warnings: list[list[str]] = [[] for _ in range(n)]
    used: set[str] = set()
    sources: dict[str, str] = {}
    # Per feature, the values as given and in which unit, for the unit checks:
    # (canonical name of the column's unit in pulmo.triage.units, column header, values as given).
    given: dict[str, list[tuple[str, str, np.ndarray]]] = {}

    def claim(feature: str, col: str) -> None:
        if feature in sources:
            raise InputError(
                f"both column '{sources[feature]}' and column '{col}' give {BY_NAME[feature].label}; keep one."
            )
        sources[feature] = col
        used.add(col)

    def add_error(mask: np.ndarray, message) -> None:
        for i in np.flatnonzero(mask):
            errors[i].append(message(i) if callable(message) else message)

    # Direct columns (canonical, original or alias names).
    for key, col in norm.items():
        feature = FEATURE_ALIASES.get(key)
        if feature is None:
            continue
        f = BY_NAME[feature]
        series = table[col]
        if f.kind == "count" and not pd.api.types.is_numeric_dtype(series.dtype):
            # A comorbidity column may hold names instead of a count.
            num, _, bad = parse_numbers(series)
            if bad.any():
                claim(feature, col)
                _fill_from_comorbidity_list(series, bad, num, errors, rows, col, values, norm, sources)
                values[:, FEATURE_NAMES.index(feature)] = num
                continue
        claim(feature, col)
        vals, _, bad = (parse_binary if f.kind == "binary" else parse_numbers)(series)
        add_error(bad, lambda i, c=col, s=series: f"row {rows[i]}, column '{c}': "
                  f"{str(s.iloc[i])!r} is not {'0/1 or yes/no' if f.kind == 'binary' else 'a number'}")
        values[:, FEATURE_NAMES.index(feature)] = vals
        given[feature] = [(feature, str(col), vals)]

    # Converted units.
    for key, (feature, factor) in CONVERSIONS.items():
        if key in norm:
            col = norm[key]
            claim(feature, col)
            vals, _, bad = parse_numbers(table[col])
            add_error(bad, lambda i, c=col: f"row {rows[i]}, column '{c}': "
                      f"{str(table[c].iloc[i])!r} is not a number")
            values[:, FEATURE_NAMES.index(feature)] = vals * factor
            given[feature] = [(key, str(col), vals)]

    # NLR from neutrophil and lymphocyte counts.
    neu = next((norm[k] for k in NEUTROPHIL_COLUMNS if k in norm), None)
    lym = next((norm[k] for k in LYMPHOCYTE_COLUMNS if k in norm), None)
    if (neu is None) != (lym is None):
        raise InputError(
            f"column '{neu or lym}' needs its partner ({'lymphocytes' if neu else 'neutrophils'}) "
            "to compute NLR = neutrophils / lymphocytes."
        )
    if neu is not None:
        j = FEATURE_NAMES.index("nlr")
        if "nlr" in sources:
            # Both given: use NLR where present, the counts elsewhere.
            used.update((neu, lym))
        else:
            claim("nlr", neu)
            used.add(lym)
            sources["nlr"] = f"{neu}/{lym}"
        nv, _, nbad = parse_numbers(table[neu])
        lv, _, lbad = parse_numbers(table[lym])
        for c, bad in ((neu, nbad), (lym, lbad)):
            add_error(bad, lambda i, c=c: f"row {rows[i]}, column '{c}': {str(table[c].iloc[i])!r} is not a number")
        zero = lv == 0
        add_error(zero, lambda i: f"row {rows[i]}, column '{lym}': a lymphocyte count of 0 gives no NLR")
        for c, v in ((neu, nv), (lym, lv)):
            add_error(v < 0, lambda i, c=c: f"row {rows[i]}, column '{c}': a cell count cannot be negative")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where((lv > 0) & (nv >= 0), nv / lv, np.nan)
        fill = np.isnan(values[:, j])
        values[fill, j] = ratio[fill]
        pair_label = f"{neu}/{lym}"
        pair_hint = {i: units.count_pair_hint(float(nv[i]), float(lv[i])) for i in np.flatnonzero(fill)}
        given.setdefault("nlr", []).append(("nlr", pair_label, np.where(fill, ratio, np.nan)))
    else:
        pair_label, pair_hint = "", {}

    # Comorbidity names.
    lst = next((norm[k] for k in COMORBIDITY_LIST_COLUMNS if k in norm), None)
    if lst is not None:
        claim("comorbidities", lst)
        num = np.full(n, np.nan)
        _fill_from_comorbidity_list(table[lst], np.ones(n, bool), num, errors, rows, lst, values, norm, sources)
        values[:, FEATURE_NAMES.index("comorbidities")] = num

    # Table-level: every feature must have a column.
    missing_cols = [f for f in FEATURE_NAMES if f not in sources]
    unknown = [c for c in table.columns if c not in used and normalise_header(c) not in ID_COLUMNS]
    if missing_cols and require_all_columns:
        parts = []
        for f in missing_cols:
            ft = BY_NAME[f]
            parts.append(f"'{f}' ({ft.label}, {ft.unit}; the original tool's name is '{ft.original}')"
                         + _suggest(f, [normalise_header(u) for u in unknown]))
        raise InputError(
            "missing required column(s): " + "; ".join(parts) + ". To let Pulmo impute a value for "
            "every row, add the column with empty cells."
        )

    # Ranges. Impossible values are errors (with the likely unit, where one makes the value
    # usual); possible values that are implausible, or much more typical in another unit, are
    # warnings naming the column as given (pulmo.triage.units); nothing is converted here.
    for j, f in enumerate(FEATURES):
        col = sources.get(f.name, f.name)
        v = values[:, j]
        lo, hi = f.valid
        bad = (v < lo) | (v > hi)

        def impossible(i, v=v, f=f, col=col) -> str:
            hint = pair_hint.get(i, "") if f.name == "nlr" else ""
            for key, _, raw in given.get(f.name, []):
                hint = hint or (units.error_hint(key, float(raw[i])) if np.isfinite(raw[i]) else "")
            return (f"row {rows[i]}, column '{col}': {f.label} {v[i]:g} {f.unit} is impossible "
                    f"(allowed {f.valid[0]:g}..{f.valid[1]:g})" + (f"; {hint}" if hint else ""))

        add_error(bad, impossible)
        if f.kind in ("binary", "count"):
            frac = np.isfinite(v) & ~bad & (v != np.round(v))
            add_error(frac, lambda i, v=v, f=f, col=col: f"row {rows[i]}, column '{col}': "
                      f"{f.label} must be a whole number, got {v[i]:g}")
        if units.binding(f.name) is not None and f.name != "age":
            for key, label, raw in given.get(f.name, []):
                for i, message in units.check(key, np.where(bad, np.nan, raw), label).items():
                    if pair_hint.get(i) and label == pair_label:
                        message = (f"{label} = {raw[i]:g}: unusually {'low' if raw[i] < 1 else 'high'} for an NLR; "
                                   f"{pair_hint[i]}")
                    warnings[i].append(message)
            continue
        plo, phi = f.plausible  # the adult range of age; binary and count features: their valid range
        low = np.isfinite(v) & ~bad & (v < plo)
        high = np.isfinite(v) & ~bad & (v > phi)
        for i in np.flatnonzero(low):
            warnings[i].append(f"{f.label} {v[i]:g} {f.unit} is unusually low" + (f": {f.hint_low}" if f.hint_low else ""))
        for i in np.flatnonzero(high):
            warnings[i].append(f"{f.label} {v[i]:g} {f.unit} is unusually high" + (f": {f.hint_high}" if f.hint_high else ""))

    # IDs.
    id_col = next((norm[k] for k in ID_COLUMNS if k in norm), None)
    if id_col is not None:
        ids = table[id_col].astype("string").fillna("").str.strip().to_numpy(dtype=object)
        blank = ids == ""
        add_error(blank, lambda i: f"row {rows[i]}, column '{id_col}': the patient ID is empty")
        dup = pd.Series(ids).duplicated(keep=False).to_numpy() & ~blank
        if dup.any():
            first = {}
            for i in np.flatnonzero(dup):
                first.setdefault(ids[i], []).append(int(rows[i]))
            add_error(dup, lambda i: f"row {rows[i]}, column '{id_col}': patient ID {ids[i]!r} is used in rows "
                      + ", ".join(map(str, first[ids[i]])) + "; IDs must be unique")
    else:
        ids = rows.astype(str).astype(object)

    return ParsedPatients(
        ids=ids, values=values, errors=errors, warnings=warnings, rows=rows,
        columns=sources, unknown_columns=unknown,
    )


def _fill_from_comorbidity_list(series, which, num, errors, rows, col, values, norm, sources) -> None:
    """Count named comorbidities in ``series`` rows ``which``; derive copd/malignancy if absent."""
    derive_copd = not any(FEATURE_ALIASES.get(k) == "copd" for k in norm)
    derive_mal = not any(FEATURE_ALIASES.get(k) == "malignancy" for k in norm)
    empty = missing_cells(series, none_is_missing=False)  # "none" is a list: no comorbidity
    jc, jm = FEATURE_NAMES.index("copd"), FEATURE_NAMES.index("malignancy")
    for i in np.flatnonzero(which):
        cell = series.iloc[i]
        if empty[i]:
            continue
        try:
            names = parse_comorbidity_list(cell)
        except ValueError as exc:
            errors[i].append(f"row {rows[i]}, column '{col}': {exc}")
            continue
        num[i] = len(names)
        if derive_copd:
            values[i, jc] = float("copd" in names)
        if derive_mal:
            values[i, jm] = float("cancer" in names)
    if derive_copd:
        sources.setdefault("copd", col)
    if derive_mal:
        sources.setdefault("malignancy", col)


def patients_from_records(records) -> pd.DataFrame:
    """A dict (one patient) or a list of dicts -> a DataFrame for :func:`parse_patients`."""
    if isinstance(records, dict):
        records = [records]
    return pd.DataFrame(list(records))
