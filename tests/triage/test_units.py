"""Unit plausibility (pulmo.triage.units): every numeric input of the triage model and of the
classic scores has a plausible range and its common other units; a value that fits another unit
much better gets a warning on its row (never a conversion), through the readers, the records API
and the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pulmo.errors import InputError
from pulmo.triage import predict_records, units
from pulmo.triage.schema import BY_NAME as FEATURES
from pulmo.triage.schema import CONVERSIONS, FEATURE_NAMES, parse_patients
from pulmo.triage.scores import curb65, score_patient, score_records
from pulmo.triage.scores_io import BY_NAME as FIELDS
from pulmo.triage.scores_io import LINKS, parse_table
from synthetic_triage import make_synthetic_model

REPO = Path(__file__).resolve().parents[2]

BASE = {"patient_id": "p1", "xray_abnormality": "1", "dyspnea": "0", "comorbidities": "1",
        "malignancy": "0", "copd": "0", "age": "61", "nlr": "4.2", "ldh": "250",
        "direct_bilirubin": "3.4", "creatine_kinase": "90"}


def span(lo, hi, n=60):
    """Values across [lo, hi], ends included (the usual range of a unit)."""
    return [float(x) for x in np.round(np.linspace(lo, hi, n), 6)]


def score_warnings(column, values):
    """Warnings and errors of parse_table for one column of values."""
    p = parse_table(pd.DataFrame({column: values}), [column])
    return p.warnings, p.errors


def triage_warnings(column, values, drop=()):
    rows = []
    for i, v in enumerate(values):
        row = {k: x for k, x in BASE.items() if k not in drop}
        row.update({"patient_id": f"p{i}", column: str(v)})
        rows.append(row)
    p = parse_patients(pd.DataFrame(rows, dtype=object))
    return p.warnings, p.errors


# ------------------------------------------------------------------------------------------
# The table itself


def test_table_ranges_are_nested_and_conversions_are_exact():
    for q in units.QUANTITIES:
        assert q.plausible[0] <= q.usual[0] < q.usual[1] <= q.plausible[1], q.key
        assert q.base.is_base and q.source, q.key
    assert units.conversion("urea_mmol_l", "bun_mg_dl") == (2.8, 0.0)
    assert units.conversion("glucose_mmol_l", "glucose_mg_dl") == (18.0, 0.0)
    assert units.conversion("temperature_c", "temperature_f") == (1.8, 32.0)
    assert units.conversion("crp_mg_dl", "crp_mg_l") == (10.0, 0.0)
    assert units.conversion("pao2_kpa", "pao2_mmhg") == (7.50062, 0.0)
    assert units.conversion("hematocrit_fraction", "hematocrit_pct") == (100.0, 0.0)
    f, o = units.conversion("temperature_f", "temperature_c")
    assert 98.6 * f + o == pytest.approx(37.0)
    assert units.to_base_factor("direct_bilirubin_mg_dl") == 17.104
    assert units.to_base_factor("ldh_ukat_l") == units.to_base_factor("ck_ukat_l") == 60.0


def test_readers_take_their_factors_and_ranges_from_the_table():
    for link in LINKS[:-1]:                     # the last one is the NEWS2 SpO2 scale, not a unit
        assert (link.factor, link.offset) == units.conversion(link.a, link.b)
    for col, (feature, factor) in CONVERSIONS.items():
        assert units.binding(col)[0].key == feature and factor == units.to_base_factor(col)
    for name in ("ldh", "nlr", "creatine_kinase", "direct_bilirubin"):
        assert FEATURES[name].plausible == units.plausible_range(name)


@pytest.mark.parametrize("name", [f.name for f in FIELDS.values() if units.binding(f.name)]
                         + [n for n in FEATURE_NAMES if units.binding(n)] + list(CONVERSIONS))
def test_usual_values_are_never_impossible(name):
    """A value in the usual range of its unit must pass every reader's valid range."""
    q, u = units.binding(name)
    lo, hi = sorted(float(x) for x in u.from_base(np.array(q.usual)))
    if name in FIELDS:
        valid = FIELDS[name].valid
    else:
        feature = CONVERSIONS[name][0] if name in CONVERSIONS else name
        valid = tuple(x / CONVERSIONS[name][1] for x in FEATURES[feature].valid) if name in CONVERSIONS \
            else FEATURES[feature].valid
    assert valid[0] <= lo and hi <= valid[1] + 1e-9, (name, (lo, hi), valid)


def test_every_numeric_input_is_in_the_table():
    numeric = {f.name for f in FIELDS.values() if f.kind == "number"}
    assert numeric <= {n for n in numeric if units.binding(n)}
    continuous = {f.name for f in FEATURES.values() if f.kind == "continuous"}
    assert continuous <= {n for n in continuous if units.binding(n)}


# ------------------------------------------------------------------------------------------
# Each pair of units: silent across the usual range of the right unit, a warning (or, where the
# value is impossible as given, an error with the likely unit) on a typical wrong-unit value.

SCORE_CASES = [
    # column, right-unit values (silent), wrong-unit value, words of the warning
    ("urea_mmol_l", span(2, 35), 42, ("urea_mmol_l = 42: unusually high for mmol/L (BUN in mg/dL? "
                                      "42 mg/dL BUN = 15 mmol/L urea")),
    ("urea_mmol_l", span(2, 35), 0.8, "urea in g/L? 0.8 g/L urea = 13.3 mmol/L urea"),
    ("bun_mg_dl", span(3, 98), 2, "urea in mmol/L? 2 mmol/L urea = 5.6 mg/dL BUN"),
    ("bun_mg_dl", span(3, 98), 160, "urea in mg/dL? 160 mg/dL urea = 74.6 mg/dL BUN"),
    ("glucose_mg_dl", span(40, 600), 25, "mmol/L? 25 mmol/L = 450 mg/dL"),
    ("glucose_mmol_l", span(2.2, 33.3), 90, "mg/dL? 90 mg/dL = 5 mmol/L"),
    ("glucose_mmol_l", span(2.2, 33.3), 0.9, "g/L? 0.9 g/L = 5 mmol/L"),
    ("crp_mg_dl", span(0, 35), 45, "mg/L? 45 mg/L = 4.5 mg/dL"),
    ("pao2_mmhg", span(35, 550), 25, "kPa? 25 kPa = 188 mmHg"),
    ("pao2_kpa", span(4.7, 73), 85, "mmHg? 85 mmHg = 11.3 kPa"),
    ("hematocrit_pct", span(18, 65), 12, "haemoglobin in g/dL? 12 g/dL haemoglobin ≈ 36%"),
    ("systolic_bp", span(60, 250), 25, "kPa? 25 kPa = 188 mmHg"),
    ("diastolic_bp", span(30, 140), 10, "kPa? 10 kPa = 75 mmHg"),
    # no other unit in use: implausible values only
    ("sodium_mmol_l", span(115, 165), 92, "sodium_mmol_l = 92: unusually low for mmol/L (plausible 95 to 190"),
    ("arterial_ph", span(7.0, 7.65), 6.7, "unusually low for pH (plausible pH 6.8 to 7.8); check the value"),
    ("respiratory_rate", span(8, 40), 2, "unusually low for /min"),
    ("pulse", span(40, 180), 280, "unusually high for /min"),
    ("spo2", span(70, 100), 35, "unusually low for %"),
]


@pytest.mark.parametrize("column, silent, wrong, words", SCORE_CASES,
                         ids=[f"{c[0]}={c[2]}" for c in SCORE_CASES])
def test_score_inputs_warn_on_the_wrong_unit_only(column, silent, wrong, words):
    warnings, errors = score_warnings(column, silent + [wrong])
    assert not any(errors)
    assert warnings[:-1] == [[]] * len(silent)
    assert len(warnings[-1]) == 1 and words in warnings[-1][0]
    assert ("check the unit" if "?" in words else "check the value") in warnings[-1][0]


def test_score_values_are_used_as_given():
    p = parse_table(pd.DataFrame({"urea_mmol_l": [42], "glucose_mg_dl": [25]}))
    assert p.values["urea_mmol_l"][0] == 42 and p.values["bun_mg_dl"][0] == 117.6
    assert p.values["glucose_mg_dl"][0] == 25 and len(p.warnings[0]) == 2


def test_pathological_values_of_the_right_unit_stay_silent():
    """Severe but ordinary: the warnings are for the unit, not for being ill. (Glucose below
    2.2 mmol/L does warn: 1.6 is far more often glycaemia in g/L than level-3 hypoglycaemia.)"""
    for column, values in [("urea_mmol_l", [7.1, 14.5, 28, 35]), ("bun_mg_dl", [20, 45, 98]),
                           ("glucose_mmol_l", [2.2, 2.8, 25, 35]), ("glucose_mg_dl", [45, 500, 700]),
                           ("crp_mg_l", [0, 5, 150, 350, 600]), ("sodium_mmol_l", [110, 125, 160, 175]),
                           ("arterial_ph", [6.9, 7.1, 7.6]), ("pao2_mmhg", [38, 55, 600]),
                           ("hematocrit_pct", [18.5, 25, 45, 64]), ("spo2", [60, 75, 88]),
                           ("temperature_c", [25, 34, 41.5]), ("temperature_f", [90, 106])]:
        warnings, errors = score_warnings(column, values)
        assert warnings == [[]] * len(values) and not any(errors), column


@pytest.mark.parametrize("values, column, words", [
    (dict(urea_mmol_l=0.3), "urea_mmol_l", "urea in g/L? 0.3 g/L urea = 5 mmol/L urea"),
    (dict(arterial_ph=40), "arterial_ph", "H+ in nmol/L? 40 nmol/L H+ = pH 7.4"),
    (dict(systolic_bp=16), "systolic_bp", "kPa? 16 kPa = 120 mmHg"),
    (dict(hematocrit_pct=120), "hematocrit_pct", "haemoglobin in g/L? 120 g/L haemoglobin ≈ 36%"),
    (dict(temperature_c=98.6), "temperature_c", "°F? 98.6 °F = 37 °C (°F goes in column temperature_f)"),
    (dict(spo2=0.95), "spo2", "a fraction? 0.95 = 95%"),
    (dict(age=400), "age", "age in months? 400 months = 33.3 years"),
])
def test_impossible_values_stay_errors_with_the_likely_unit(values, column, words):
    with pytest.raises(InputError) as exc:
        score_patient(values)
    assert f"'{column}'" in str(exc.value) and "impossible" in str(exc.value) and words in str(exc.value)


def test_impossible_in_every_unit_keeps_its_plain_error():
    with pytest.raises(InputError) as exc:
        score_patient(urea_mmol_l=-3)
    assert str(exc.value) == "'urea_mmol_l': urea -3 mmol/L is impossible (allowed 0.5 to 150 mmol/L)."


def test_warnings_reach_the_score_records():
    r = curb65(confusion="no", urea_mmol_l=42, respiratory_rate=20, systolic_bp=120, diastolic_bp=70, age=70)
    assert r.computable and r.total == 2                            # 42 is used as given
    assert len(r.warnings) == 1 and "BUN in mg/dL?" in r.warnings[0] and "warning: urea_mmol_l = 42" in r.summary()
    df = pd.DataFrame({"Urea (mmol/L)": ["5", "42"], "age": ["70", "70"]}, index=[2, 3])
    batch = score_records(df, "curb65")
    assert batch[0].warnings == () and batch[1].error is None
    assert batch[1].warnings[0].startswith("Urea (mmol/L) = 42: unusually high for mmol/L (BUN in mg/dL?")
    assert batch.to_frame(df).loc[3, "warnings"] == batch[1].warnings[0]


# ------------------------------------------------------------------------------------------
# The triage model's features


TRIAGE_CASES = [
    ("ldh", span(80, 3000), 4.5, ("ldh = 4.5: unusually low for U/L (ukat/L? 4.5 ukat/L = 270 U/L); "
                                  "check the unit (ukat/L goes in column ldh_ukat_l)"), ("ldh",)),
    ("ldh_ukat_l", span(1.4, 50), 250, "ldh_ukat_l = 250: unusually high for ukat/L (U/L? 250 U/L = 4.17 ukat/L)",
     ("ldh",)),
    ("creatine_kinase", span(10, 5000), 1.5, "ukat/L? 1.5 ukat/L = 90 U/L", ("creatine_kinase",)),
    ("creatine_kinase_ukat_l", span(0.17, 83), 150, "U/L? 150 U/L = 2.5 ukat/L", ("creatine_kinase",)),
    ("direct_bilirubin", span(0.5, 250) + [0.0], 0.2, "mg/dL? 0.2 mg/dL = 3.42 umol/L", ("direct_bilirubin",)),
    ("direct_bilirubin_mg_dl", span(0.03, 14.6), 20, "umol/L? 20 umol/L = 1.17 mg/dL", ("direct_bilirubin",)),
    ("nlr", span(0.3, 60), 200, "nlr = 200: unusually high (plausible 0.1 to 150); check the value", ("nlr",)),
]


@pytest.mark.parametrize("column, silent, wrong, words, drop", TRIAGE_CASES,
                         ids=[f"{c[0]}={c[2]}" for c in TRIAGE_CASES])
def test_triage_features_warn_on_the_wrong_unit_only(column, silent, wrong, words, drop):
    warnings, errors = triage_warnings(column, silent + [wrong], drop)
    assert not any(errors)
    assert warnings[:-1] == [[]] * len(silent)
    assert len(warnings[-1]) == 1 and words in warnings[-1][0]


def test_triage_values_are_used_as_given():
    row = {k: v for k, v in BASE.items() if k != "ldh"}
    p = parse_patients(pd.DataFrame([{**BASE, "ldh": "4.5"}]))
    q = parse_patients(pd.DataFrame([{**row, "ldh_ukat_l": "250"}]))
    assert p.values[0, FEATURE_NAMES.index("ldh")] == 4.5
    assert q.values[0, FEATURE_NAMES.index("ldh")] == 15000.0      # a column named for its unit converts
    assert p.warnings[0] and q.warnings[0] and p.errors == q.errors == [[]]


def test_neutrophils_and_lymphocytes_in_different_units():
    row = {k: v for k, v in BASE.items() if k != "nlr"}
    rows = [{**row, "patient_id": str(i), "neutrophils": n, "lymphocytes": ly}
            for i, (n, ly) in enumerate([("7.4", "0.9"), ("7400", "900"), ("7.4", "900"), ("7400", "0.9")])]
    p = parse_patients(pd.DataFrame(rows))
    assert p.warnings[:2] == [[], []] and p.errors[:3] == [[], [], []]
    assert "neutrophils 7.4 and lymphocytes 900 look like different units" in p.warnings[2][0]
    assert "the ratio would be 8.22" in p.warnings[2][0]
    assert "impossible" in p.errors[3][0] and "neutrophils 7400 and lymphocytes 0.9 look like" in p.errors[3][0]


def test_triage_impossible_values_name_the_likely_unit():
    _, errors = triage_warnings("age", [400, -4])
    assert errors[0][0].endswith("is impossible (allowed 0..120); age in months? 400 months = 33.3 years")
    assert errors[1][0].endswith("is impossible (allowed 0..120)")
    _, errors = triage_warnings("ldh_ukat_l", [400], ("ldh",))
    assert "U/L? 400 U/L = 6.67 ukat/L (U/L goes in column ldh)" in errors[0][0]


def test_adult_age_warning_is_unchanged():
    warnings, errors = triage_warnings("age", [16, 30, 115])
    assert not any(errors) and warnings == [["Age 16 years is unusually low: the model was developed on adults"], [],
                        ["Age 115 years is unusually high"]]


def test_warnings_reach_the_triage_records():
    batch = predict_records(make_synthetic_model(), [{**BASE, "ldh": 4.5}, dict(BASE, patient_id="p2")])
    assert batch[0].error is None and batch[0].risk_group is not None
    assert batch[0].warnings == (("ldh = 4.5: unusually low for U/L (ukat/L? 4.5 ukat/L = 270 U/L); check the unit "
                                  "(ukat/L goes in column ldh_ukat_l)"),)
    assert batch[1].warnings == () and batch[0].to_row()["warnings"] == batch[0].warnings[0]


# ------------------------------------------------------------------------------------------
# The command line


def _cli(*args):
    r = subprocess.run([sys.executable, "-m", "pulmo", "triage", *map(str, args)], capture_output=True, text=True,
                       cwd=REPO, check=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_cli_score_writes_the_warnings(tmp_path):
    f = tmp_path / "in.csv"
    f.write_text("id,age,sex,urea_mmol_l,glucose_mg_dl,crp_mg_dl,respiratory_rate,systolic_bp,diastolic_bp,confusion\n"
                 "ok,70,male,12,140,4,22,120,70,no\n"
                 "bun,70,male,42,140,4,22,120,70,no\n"
                 "mmol,70,male,12,25,4,22,120,70,no\n"
                 "mgl,70,male,12,140,45,22,120,70,no\n")
    out = tmp_path / "out.csv"
    r = _cli("score", f, "--scores", "curb65,psi,isaric4c", "-o", out)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out, keep_default_na=False).set_index("id")
    assert df.loc["ok", "warnings"] == ""
    assert df.loc["bun", "warnings"].startswith("urea_mmol_l = 42: unusually high for mmol/L (BUN in mg/dL? "
                                                "42 mg/dL BUN = 15 mmol/L urea")
    assert "glucose_mg_dl = 25: unusually low for mg/dL (mmol/L? 25 mmol/L = 450 mg/dL" in df.loc["mmol", "warnings"]
    assert "crp_mg_dl = 45: unusually high for mg/dL (mg/L? 45 mg/L = 4.5 mg/dL" in df.loc["mgl", "warnings"]
    assert (df["error"] == "").all() and df.loc["bun", "curb65_points"] == 2      # scored as given
    assert "3 row(s) have values to check" in r.stderr and "urea_mmol_l = 42" in r.stderr


def test_cli_predict_writes_and_reports_the_warnings(tmp_path):
    model = make_synthetic_model().save(tmp_path / "m.pulmo-triage")
    f = tmp_path / "in.csv"
    f.write_text(",".join(BASE) + "\n" + ",".join(BASE.values()) + "\n"
                 + ",".join({**BASE, "patient_id": "p2", "ldh": "4.5", "direct_bilirubin": "0.2"}.values()) + "\n")
    out = tmp_path / "out.csv"
    r = _cli("predict", f, "--model", model, "-o", out)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out, keep_default_na=False)
    assert df.loc[0, "warnings"] == ""
    assert "ldh = 4.5: unusually low for U/L (ukat/L? 4.5 ukat/L = 270 U/L)" in df.loc[1, "warnings"]
    assert "direct_bilirubin = 0.2: unusually low for umol/L (mg/dL? 0.2 mg/dL = 3.42 umol/L)" in df.loc[1, "warnings"]
    assert "1 row(s) have values to check" in r.stderr and "ldh = 4.5" in r.stderr


@pytest.mark.parametrize("name", ["patients.csv", "patients_mixed_units.csv"])
def test_examples_give_no_unit_warnings(tmp_path, name):
    from pulmo.io.tables import read_table

    table, _ = read_table(REPO / "examples" / name)
    p = parse_patients(table)
    assert p.warnings == [[]] * len(table)
    if name == "patients_mixed_units.csv":                 # mix-04: age 400, an error (months?)
        assert [bool(e) for e in p.errors] == [False, False, False, True]
        assert "age in months? 400 months = 33.3 years" in p.errors[3][0]
