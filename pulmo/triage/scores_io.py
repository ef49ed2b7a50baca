"""Inputs of the clinical scores (:mod:`pulmo.triage.scores`): names, units, ranges, parsing.

Every input has one canonical name and unit (:data:`FIELDS`); column headers and keys are
matched case-insensitively with punctuation ignored ("Resp. rate" == ``resp_rate``), through
the aliases of each field. A quantity given in another unit has its own field and is
converted exactly once (:data:`LINKS`), rounded to 6 decimals so that 19.6 mg/dL BUN is
exactly 7 mmol/L urea::

    urea_mmol_l x 2.8        = bun_mg_dl          glucose_mmol_l x 18 = glucose_mg_dl
    temperature_c x 1.8 + 32 = temperature_f      crp_mg_dl x 10      = crp_mg_l
    pao2_kpa x 7.50062       = pao2_mmhg          hematocrit_fraction x 100 = hematocrit_pct
    hypercapnic_respiratory_failure + 1 = spo2_scale

Names that do not say their unit where units differ between countries (``urea``,
``glucose``, ``crp``, ``pao2``) are refused with a message naming the accepted ones.

Values are returned as float arrays (NaN where missing): booleans as 0/1, ``sex`` as
1 = male / 0 = female, ``consciousness`` as 0..4 for A, C, V, P, U. Impossible values
(outside :attr:`Field.valid`) are errors naming the row, the column and, where a unit
mix-up is likely, the column to use instead. Possible values that are implausible, or much
more typical in another unit (urea_mmol_l = 42: BUN in mg/dL?), are kept as given with a
warning; the conversion factors, plausible ranges and that rule are those of the table shared
with the triage model's reader, :mod:`pulmo.triage.units`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pulmo.errors import InputError
from pulmo.io.cells import cell_text, missing_cells, normalise_header, parse_binary, parse_numbers
from pulmo.triage import units

__all__ = ["Field", "Link", "FIELDS", "BY_NAME", "LINKS", "AMBIGUOUS", "ParsedInputs", "FIELD_ALIASES",
           "resolve_name", "suggest_name", "needed_fields", "parse_table", "parse_record",
           "CONSCIOUSNESS_LEVELS", "CONSCIOUSNESS_CODES"]


@dataclass(frozen=True)
class Field:
    """One score input.

    ``kind`` is ``"number"``, ``"integer"``, ``"bool"``, ``"sex"`` or ``"consciousness"``.
    Values outside ``valid`` (inclusive) are impossible and make the row fail;
    values outside ``plausible`` (the adult range of age) are accepted with a warning, as are
    the unit and plausibility warnings of :mod:`pulmo.triage.units` for measured quantities.
    """

    name: str
    label: str
    unit: str
    kind: str
    valid: tuple[float, float] | None = None
    aliases: tuple[str, ...] = ()
    hint_low: str = ""
    hint_high: str = ""
    plausible: tuple[float, float] | None = None
    hint_implausible: str = ""


@dataclass(frozen=True)
class Link:
    """Fields ``a`` and ``b`` hold one quantity in two units: ``b = a * factor + offset``.

    Where both are given in one row they must agree within ``tol + rel * |b|`` (in ``b``'s unit).
    """

    a: str
    b: str
    factor: float
    offset: float = 0.0
    tol: float = 0.0
    rel: float = 0.0


_BOOL = "bool"
_NUM = "number"
_INT = "integer"

FIELDS: tuple[Field, ...] = (
    Field("age", "age", "years", _NUM, (0, 120), ("age_years", "age_y", "age_yrs"),
          plausible=(18, 120), hint_implausible="the scores were developed in adults"),
    Field("sex", "sex", "", "sex", None, ("gender", "sex_at_birth")),
    Field("respiratory_rate", "respiratory rate", "/min", _NUM, (0, 100),
          ("rr", "resp_rate", "respiration_rate", "respiratory_rate_min", "resp_rate_min", "rr_min",
           "breathing_rate", "resprate", "respiratory_frequency")),
    Field("systolic_bp", "systolic blood pressure", "mmHg", _NUM, (20, 300),
          ("sbp", "systolic", "sys_bp", "systolic_blood_pressure", "systolic_bp_mmhg", "bp_systolic",
           "sbp_mmhg")),
    Field("diastolic_bp", "diastolic blood pressure", "mmHg", _NUM, (5, 250),
          ("dbp", "diastolic", "dia_bp", "diastolic_blood_pressure", "diastolic_bp_mmhg", "bp_diastolic",
           "dbp_mmhg")),
    Field("pulse", "pulse", "/min", _NUM, (10, 300),
          ("heart_rate", "hr", "pulse_rate", "heartrate", "pulse_min", "heart_rate_min", "hr_min")),
    Field("spo2", "SpO2", "%", _NUM, (20, 100),
          ("spo2_pct", "spo2_percent", "oxygen_saturation", "o2_saturation", "o2_sat", "o2sat", "sats",
           "spo2_as_measured"),
          hint_low="was it given as a fraction (0.95)? Give percent (95)"),
    Field("spo2_room_air", "SpO2 on room air", "%", _NUM, (20, 100),
          ("spo2_ra", "spo2_air", "spo2_on_air", "spo2_on_room_air", "room_air_spo2", "spo2_room_air_pct"),
          hint_low="was it given as a fraction (0.95)? Give percent (95)"),
    Field("on_oxygen", "on supplemental oxygen", "", _BOOL, None,
          ("supplemental_oxygen", "oxygen", "o2", "on_o2", "receiving_oxygen", "oxygen_therapy",
           "supplementary_oxygen")),
    Field("spo2_scale", "NEWS2 SpO2 scale", "", _INT, (1, 2), ("news2_spo2_scale", "news2_scale")),
    Field("hypercapnic_respiratory_failure", "hypercapnic respiratory failure (SpO2 target 88-92%)", "",
          _BOOL, None, ("hypercapnic", "hypercapnia", "type_2_respiratory_failure", "t2rf",
                        "hypercapnic_failure")),
    Field("consciousness", "level of consciousness (ACVPU)", "", "consciousness", None,
          ("acvpu", "avpu", "level_of_consciousness", "loc", "consciousness_level")),
    Field("temperature_c", "temperature", "°C", _NUM, (20, 45),
          ("temperature", "temp", "temp_c", "body_temperature", "temperature_celsius", "temp_celsius",
           "temperature_degc"),
          hint_high="it looks like °F (98.6 °F = 37.0 °C); give it as temperature_f"),
    Field("temperature_f", "temperature", "°F", _NUM, (68, 113),
          ("temp_f", "temperature_fahrenheit", "temp_fahrenheit", "temperature_degf"),
          hint_low="it looks like °C; give it as temperature_c"),
    Field("gcs", "Glasgow Coma Scale", "", _INT, (3, 15),
          ("glasgow_coma_scale", "gcs_total", "glasgow", "glasgow_coma_score")),
    Field("confusion", "new confusion (disorientation in person, place or time)", "", _BOOL, None,
          ("new_confusion", "confused", "disorientation", "disoriented")),
    Field("amt_score", "Abbreviated Mental Test score", "", _INT, (0, 10),
          ("amt", "amts", "abbreviated_mental_test", "abbreviated_mental_test_score")),
    Field("urea_mmol_l", "urea", "mmol/L", _NUM, (0.5, 150),
          ("urea_mmol", "serum_urea_mmol_l", "urea_mmol_per_l")),
    Field("bun_mg_dl", "blood urea nitrogen", "mg/dL", _NUM, (1, 420),
          ("bun", "blood_urea_nitrogen", "blood_urea_nitrogen_mg_dl", "bun_mg")),
    Field("crp_mg_l", "C-reactive protein", "mg/L", _NUM, (0, 1000),
          ("c_reactive_protein_mg_l", "crp_mg_per_l")),
    Field("crp_mg_dl", "C-reactive protein", "mg/dL", _NUM, (0, 100), ("c_reactive_protein_mg_dl",)),
    Field("sodium_mmol_l", "sodium", "mmol/L", _NUM, (90, 200),
          ("sodium", "na", "serum_sodium", "sodium_meq_l", "na_mmol_l")),
    Field("glucose_mg_dl", "glucose", "mg/dL", _NUM, (10, 3000),
          ("blood_glucose_mg_dl", "glucose_mg"),
          hint_low="was it given in mmol/L? Give that as glucose_mmol_l"),
    Field("glucose_mmol_l", "glucose", "mmol/L", _NUM, (0.5, 170),
          ("blood_glucose_mmol_l", "glucose_mmol"),
          hint_high="was it given in mg/dL? Give that as glucose_mg_dl"),
    Field("arterial_ph", "arterial pH", "", _NUM, (6.5, 8.0), ("ph", "ph_arterial", "arterial_blood_ph")),
    Field("pao2_mmhg", "PaO2", "mmHg", _NUM, (15, 800), ("pao2_mm_hg",),
          hint_low="was it given in kPa? Give that as pao2_kpa"),
    Field("pao2_kpa", "PaO2", "kPa", _NUM, (2, 107), (),
          hint_high="was it given in mmHg? Give that as pao2_mmhg"),
    Field("hematocrit_pct", "haematocrit", "%", _NUM, (5, 80),
          ("hematocrit", "haematocrit", "hct", "haematocrit_pct", "hct_pct", "hematocrit_percent",
           "haematocrit_percent"),
          hint_low="was it given as a fraction (L/L)? Give that as hematocrit_fraction"),
    Field("hematocrit_fraction", "haematocrit", "L/L", _NUM, (0.05, 0.8),
          ("haematocrit_fraction", "hematocrit_l_l", "haematocrit_l_l", "hct_l_l", "hct_fraction"),
          hint_high="was it given in percent? Give that as hematocrit_pct"),
    Field("n_comorbidities", "number of comorbidities (ISARIC 4C: Charlson comorbidities + obesity)",
          "", _INT, (0, 30), ("comorbidity_count", "comorbidities_4c", "n_comorbidities_4c",
                               "isaric_comorbidities")),
    Field("nursing_home", "nursing-home resident", "", _BOOL, None,
          ("nursing_home_resident", "care_home", "care_home_resident", "nursing_home_residence")),
    Field("neoplastic_disease", "neoplastic disease (active or diagnosed within 1 year)", "", _BOOL, None,
          ("neoplastic", "active_cancer", "active_malignancy")),
    Field("liver_disease", "liver disease", "", _BOOL, None, ("chronic_liver_disease", "hepatic_disease")),
    Field("congestive_heart_failure", "congestive heart failure", "", _BOOL, None,
          ("chf", "heart_failure", "cardiac_failure")),
    Field("cerebrovascular_disease", "cerebrovascular disease", "", _BOOL, None,
          ("cerebrovascular", "stroke", "cvd_history")),
    Field("renal_disease", "renal disease", "", _BOOL, None,
          ("chronic_kidney_disease", "ckd", "kidney_disease", "chronic_renal_disease")),
    Field("altered_mental_status", "altered mental status", "", _BOOL, None,
          ("ams", "altered_mentation", "mental_status_altered")),
    Field("pleural_effusion", "pleural effusion", "", _BOOL, None, ("effusion",)),
)

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}


def _link(a: str, b: str, **tolerance: float) -> Link:
    """A link whose factor and offset come from the shared unit table (:mod:`pulmo.triage.units`)."""
    return Link(a, b, *units.conversion(a, b), **tolerance)


LINKS: tuple[Link, ...] = (
    _link("urea_mmol_l", "bun_mg_dl", tol=1.0, rel=0.03),                # x 2.8
    _link("glucose_mmol_l", "glucose_mg_dl", tol=3.0, rel=0.03),         # x 18
    _link("temperature_c", "temperature_f", tol=0.2),                    # x 1.8 + 32
    _link("crp_mg_dl", "crp_mg_l", tol=1.0, rel=0.03),                   # x 10
    _link("pao2_kpa", "pao2_mmhg", tol=1.0, rel=0.03),                   # x 7.50062
    _link("hematocrit_fraction", "hematocrit_pct", tol=0.5),             # x 100
    Link("hypercapnic_respiratory_failure", "spo2_scale", 1.0, 1.0),
)
_PARTNERS: dict[str, str] = {**{k.a: k.b for k in LINKS}, **{k.b: k.a for k in LINKS}}

#: Names refused because their unit differs between countries, with what to use instead.
AMBIGUOUS: dict[str, tuple[tuple[str, ...], str]] = {
    "urea": (("urea_mmol_l", "bun_mg_dl"), "urea_mmol_l (urea in mmol/L) or bun_mg_dl (blood urea nitrogen, mg/dL)"),
    "serum_urea": (("urea_mmol_l", "bun_mg_dl"), "urea_mmol_l or bun_mg_dl"),
    "urea_mg_dl": (("urea_mmol_l", "bun_mg_dl"),
                   "urea_mmol_l (urea in mg/dL / 6.006) or bun_mg_dl; urea in mg/dL is not BUN"),
    "glucose": (("glucose_mg_dl",), "glucose_mg_dl or glucose_mmol_l"),
    "blood_glucose": (("glucose_mg_dl",), "glucose_mg_dl or glucose_mmol_l"),
    "crp": (("crp_mg_l",), "crp_mg_l or crp_mg_dl"),
    "c_reactive_protein": (("crp_mg_l",), "crp_mg_l or crp_mg_dl"),
    "pao2": (("pao2_mmhg",), "pao2_mmhg or pao2_kpa"),
}

#: Accepted spellings of the ACVPU levels, coded 0..4.
CONSCIOUSNESS_LEVELS: dict[str, int] = {
    "a": 0, "alert": 0,
    "c": 1, "confusion": 1, "confused": 1, "new confusion": 1, "new_confusion": 1,
    "v": 2, "voice": 2, "p": 3, "pain": 3, "u": 4, "unresponsive": 4,
}
CONSCIOUSNESS_CODES = ("A", "C", "V", "P", "U")
_MALE = {"male", "m", "man"}
_FEMALE = {"female", "f", "woman"}
#: Normalised name (:func:`~pulmo.io.cells.normalise_header`) -> field, for every field and alias.
FIELD_ALIASES: dict[str, str] = {normalise_header(a): f.name for f in FIELDS for a in (f.name, *f.aliases)}


def resolve_name(name: object) -> str | None:
    """The canonical field for a column header or key ('Resp. rate' -> 'respiratory_rate'), or None."""
    return FIELD_ALIASES.get(normalise_header(name))


@dataclass
class ParsedInputs:
    """Score inputs validated and converted to canonical units.

    Attributes
    ----------
    values : every field of :data:`FIELDS` as an (n,) float array, NaN where missing.
    errors : one list of messages per row; a row with any error is not scored.
    warnings : one list of messages per row.
    labels : the row labels used in messages (the table's index).
    columns : the input column each field came from.
    unused_columns : input columns no requested score uses.
    """

    values: dict[str, np.ndarray]
    errors: list[list[str]]
    warnings: list[list[str]]
    labels: list
    columns: dict[str, str] = field(default_factory=dict)
    unused_columns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> np.ndarray:
        return np.array([not e for e in self.errors], dtype=bool)


def _parse_column(col: pd.Series, f: Field) -> tuple[np.ndarray, np.ndarray, str]:
    """Cells -> floats. Returns (values with NaN for missing, mask of unreadable cells, what was expected).

    Numbers and yes/no cells are read by :mod:`pulmo.io.cells`; a yes/no cell holding another
    number (2) is returned as that number, for the caller to refuse.
    """
    if pd.api.types.is_bool_dtype(col.dtype) and f.kind != _BOOL:  # True is no number, sex or level
        vals = col.to_numpy(dtype=np.float64, na_value=np.nan)
        return vals, ~np.isnan(vals), _expected(f)
    if f.kind in (_NUM, _INT):
        vals, _, bad = parse_numbers(col)
        return vals, bad, _expected(f)
    if f.kind == _BOOL:
        vals, _, bad = parse_binary(col)
        return vals, bad, _expected(f)
    s = cell_text(col)
    missing = missing_cells(col)
    if f.kind == "sex":
        out = np.where(s.isin(_MALE).to_numpy(dtype=bool), 1.0,
                       np.where(s.isin(_FEMALE).to_numpy(dtype=bool), 0.0, np.nan))
    else:  # consciousness
        out = pd.to_numeric(s.map(CONSCIOUSNESS_LEVELS), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~missing & np.isnan(out)
    return out, bad, _expected(f)


def _expected(f: Field) -> str:
    return {
        _NUM: "a number", _INT: "a whole number",
        _BOOL: "yes/no (accepted: 0/1, yes/no, true/false, y/n)",
        "sex": "male or female", "consciousness": "A, C, V, P or U (ACVPU)",
    }[f.kind]


def _fmt(v: float, unit: str) -> str:
    """38.5 °C, 95%, 7 (no unit)."""
    return f"{v:g}{unit}" if unit in ("", "%") else f"{v:g} {unit}"


def _where_table(label, column: str) -> str:
    return f"row {label}, column '{column}'"


def _where_record(label, column: str) -> str:
    return f"'{column}'"


def suggest_name(name: str) -> str:
    """" (did you mean 'respiratory_rate'?)" for the closest known name or alias, else ""."""
    hit = difflib.get_close_matches(normalise_header(name), list(FIELD_ALIASES), n=1, cutoff=0.6)
    return f" (did you mean '{FIELD_ALIASES[hit[0]]}'?)" if hit else ""


def needed_fields(fields: Iterable[str]) -> set[str]:
    """``fields`` with the other unit of each linked quantity."""
    out = set(fields)
    out |= {_PARTNERS[f] for f in out if f in _PARTNERS}
    unknown = out - set(BY_NAME)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    return out


def parse_table(table: pd.DataFrame, fields: Iterable[str] | None = None, *,
                _where=_where_table) -> ParsedInputs:
    """Validate and convert the score inputs of a table (one row per patient).

    Parameters
    ----------
    table
        Cells may be strings (as :func:`pulmo.io.tables.read_table` returns them), numbers
        or booleans. Row labels in messages are the table's index labels (spreadsheet row
        numbers for ``read_table`` tables).
    fields
        Canonical fields to read (default: all). Other recognised columns are reported
        in ``unused_columns`` and not validated.

    Raises
    ------
    InputError
        Two columns giving the same input, or a needed input under a name without its unit.
    """
    wanted = needed_fields(fields if fields is not None else BY_NAME)
    n = len(table)
    labels = list(table.index)
    values = {f.name: np.full(n, np.nan) for f in FIELDS}
    errors: list[list[str]] = [[] for _ in range(n)]
    warnings: list[list[str]] = [[] for _ in range(n)]
    columns: dict[str, str] = {}
    unused: list[str] = []

    def add(mask: np.ndarray, make, to=errors) -> None:
        for i in np.flatnonzero(mask):
            to[i].append(make(i))

    for col in table.columns:
        key = normalise_header(col)
        name = FIELD_ALIASES.get(key)
        if name is None:
            if key in AMBIGUOUS and set(AMBIGUOUS[key][0]) & wanted:
                raise InputError(f"column '{col}' does not say its unit; rename it {AMBIGUOUS[key][1]}.")
            unused.append(str(col))
            continue
        if name not in wanted:
            unused.append(str(col))
            continue
        if name in columns:
            raise InputError(f"'{columns[name]}' and '{col}' both give {BY_NAME[name].label}"
                             f"{' (' + BY_NAME[name].unit + ')' if BY_NAME[name].unit else ''}; keep one.")
        columns[name] = str(col)
        f = BY_NAME[name]
        series = table[col]
        vals, bad, expected = _parse_column(series, f)
        add(bad, lambda i, c=col, s=series, e=expected: f"{_where(labels[i], c)}: {s.iloc[i]!r} is not {e}")
        if f.kind == _BOOL:
            notbool = np.isfinite(vals) & (vals != 0) & (vals != 1)
            add(notbool, lambda i, c=col, v=vals, e=expected: f"{_where(labels[i], c)}: {v[i]:g} is not {e}")
            vals[notbool] = np.nan
        if f.valid is not None:
            lo, hi = f.valid
            low, high = vals < lo, vals > hi

            def msg(i, c=col, v=vals, f=f, low=low) -> str:
                # the likely unit with its arithmetic (pulmo.triage.units), else the field's own hint
                hint = units.error_hint(f.name, float(v[i])) or (f.hint_low if low[i] else f.hint_high)
                return (f"{_where(labels[i], c)}: {f.label} {_fmt(v[i], f.unit)} is impossible "
                        f"(allowed {f.valid[0]:g} to {_fmt(f.valid[1], f.unit)})" + (f"; {hint}" if hint else ""))

            add(low | high, msg)
            vals[low | high] = np.nan
        if f.kind == _INT:
            frac = np.isfinite(vals) & (vals != np.round(vals))
            add(frac, lambda i, c=col, v=vals, f=f: f"{_where(labels[i], c)}: {f.label} must be a whole number, "
                f"got {v[i]:g}")
            vals[frac] = np.nan
        if f.plausible is not None:
            plo, phi = f.plausible
            odd = (vals < plo) | (vals > phi)
            add(odd, lambda i, v=vals, f=f: f"{f.label} {_fmt(v[i], f.unit)} is unusual: {f.hint_implausible}",
                to=warnings)
        # Values possible but implausible, or much more typical in another unit: a warning, never
        # a conversion (ranges and units: pulmo.triage.units).
        for i, message in units.check(name, vals, col).items():
            warnings[i].append(message)
        values[name] = vals

    # One quantity in two units: fill each from the other; where both are given, they must agree.
    for link in LINKS:
        a, b = values[link.a], values[link.b]
        from_a = np.round(a * link.factor + link.offset, 6)
        from_b = np.round((b - link.offset) / link.factor, 6)
        both = np.isfinite(a) & np.isfinite(b)
        clash = both & (np.abs(from_a - b) > link.tol + link.rel * np.abs(b))
        ca, cb = columns.get(link.a, link.a), columns.get(link.b, link.b)
        add(clash, lambda i, a=a, b=b, ca=ca, cb=cb, fb=from_a: (
            f"{_where(labels[i], ca)}: {a[i]:g} disagrees with column '{cb}' = {b[i]:g} "
            f"({a[i]:g} is {fb[i]:g} there); give one of them"))
        values[link.a] = np.where(np.isnan(a), from_b, a)
        values[link.b] = np.where(np.isnan(b), from_a, b)
        values[link.a][clash] = np.nan
        values[link.b][clash] = np.nan

    # Cross-field checks.
    sbp, dbp = values["systolic_bp"], values["diastolic_bp"]
    swapped = dbp >= sbp
    add(swapped, lambda i: (f"{_where(labels[i], columns.get('diastolic_bp', 'diastolic_bp'))}: diastolic "
                            f"{dbp[i]:g} mmHg is not below systolic {sbp[i]:g} mmHg; are the columns swapped?"))

    return ParsedInputs(values=values, errors=errors, warnings=warnings, labels=labels, columns=columns,
                        unused_columns=unused)


def parse_record(record: Mapping[str, object] | None = None, fields: Iterable[str] | None = None, *,
                 ignore_unknown: bool = False, **values: object) -> ParsedInputs:
    """Validate one patient's values (a mapping and/or keywords) as :func:`parse_table` does.

    Raises
    ------
    InputError
        Any impossible or unreadable value, naming the key; an unknown key (unless
        ``ignore_unknown``), with the closest known name.
    """
    merged: dict[str, object] = {}
    for source in (record or {}, values):
        for k, v in source.items():
            if str(k) in merged:
                raise InputError(f"'{k}' is given twice.")
            merged[str(k)] = v
    if not ignore_unknown:
        unknown = [k for k in merged if resolve_name(k) is None and normalise_header(k) not in AMBIGUOUS]
        if unknown:
            raise InputError("; ".join(f"unknown input '{k}'{suggest_name(k)}" for k in unknown)
                             + ". Known inputs: " + ", ".join(BY_NAME) + ".")
    table = pd.DataFrame({k: pd.Series([v], dtype=object) for k, v in merged.items()}, index=[0])
    parsed = parse_table(table, fields, _where=_where_record)
    if parsed.errors[0]:
        raise InputError("; ".join(parsed.errors[0]) + ".")
    return parsed
