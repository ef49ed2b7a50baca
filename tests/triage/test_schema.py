"""Patient schema: column names, unit conversions, validation messages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pulmo.errors import InputError
from pulmo.triage.schema import FEATURE_NAMES, normalise_header, parse_comorbidity_list, parse_patients

BASE = {"patient_id": "p1", "xray_abnormality": "1", "dyspnea": "0", "comorbidities": "1",
        "malignancy": "0", "copd": "0", "age": "61", "nlr": "4.2", "ldh": "250",
        "direct_bilirubin": "3.4", "creatine_kinase": "90"}


def table(*rows):
    return pd.DataFrame(list(rows), dtype=object)


def col(parsed, name):
    return parsed.values[:, FEATURE_NAMES.index(name)]


def test_normalise_header():
    assert normalise_header("Direct bilirubin (µmol/L)") == "direct_bilirubin_umol_l"
    assert normalise_header("X.ray.abnormality") == "x_ray_abnormality"


def test_valid_row_parses_to_model_units():
    p = parse_patients(table(BASE))
    assert p.errors == [[]]
    assert col(p, "age")[0] == 61 and col(p, "xray_abnormality")[0] == 1
    assert p.ids[0] == "p1"


def test_original_and_yes_no_values():
    row = {"X.ray.abnormality": "yes", "Dyspnea": "No", "Number.of.comorbidities": "2", "Malignancy": "false",
           "COPD": "TRUE", "Age": "70", "NLR": "3", "Lactate.dehydrogenase": "300", "Direct.bilirubin": "2",
           "Creatine.kinase": "80"}
    p = parse_patients(table(row))
    assert p.errors == [[]]
    assert col(p, "xray_abnormality")[0] == 1 and col(p, "dyspnea")[0] == 0 and col(p, "copd")[0] == 1


def test_unit_conversions():
    row = dict(BASE)
    for k in ("direct_bilirubin", "ldh", "creatine_kinase", "nlr"):
        row.pop(k)
    row.update({"Direct bilirubin (mg/dL)": "0.2", "LDH (ukat/L)": "5", "creatine_kinase_ukat_l": "2",
                "neutrophils": "6.3", "lymphocytes": "0.9"})
    p = parse_patients(table(row))
    assert p.errors == [[]]
    assert col(p, "direct_bilirubin")[0] == pytest.approx(0.2 * 17.104)
    assert col(p, "ldh")[0] == pytest.approx(300)
    assert col(p, "creatine_kinase")[0] == pytest.approx(120)
    assert col(p, "nlr")[0] == pytest.approx(7.0)


def test_comorbidity_list_counts_and_derives_flags():
    row = dict(BASE)
    for k in ("comorbidities", "copd", "malignancy"):
        row.pop(k)
    row["comorbidity_list"] = "Diabetes; HTN, COPD"
    p = parse_patients(table(row, {**row, "patient_id": "p2", "comorbidity_list": "none"}))
    assert p.errors == [[], []]
    assert list(col(p, "comorbidities")) == [3, 0]
    assert list(col(p, "copd")) == [1, 0]
    assert list(col(p, "malignancy")) == [0, 0]
    with pytest.raises(ValueError, match="unknown comorbidity"):
        parse_comorbidity_list("diabetes; gout")


def test_comorbidities_column_may_hold_names():
    row = {**BASE, "comorbidities": "cancer; stroke"}
    p = parse_patients(table(row))
    assert p.errors == [[]]
    assert col(p, "comorbidities")[0] == 2


def test_missing_column_is_a_table_error_with_suggestion():
    row = dict(BASE)
    row.pop("dyspnea")
    row["dyspnoae"] = "0"
    with pytest.raises(InputError, match=r"missing required column.*'dyspnea'.*did you mean column 'dyspnoae'"):
        parse_patients(table(row))


def test_bad_cells_name_row_and_column():
    rows = [BASE, {**BASE, "patient_id": "p2", "age": "400"}, {**BASE, "patient_id": "p3", "ldh": "-5"},
            {**BASE, "patient_id": "p4", "nlr": "high"}, {**BASE, "patient_id": "p5", "dyspnea": "2"},
            {**BASE, "patient_id": "p6", "comorbidities": "1.5"}]
    t = table(*rows)
    t.index = pd.RangeIndex(2, 2 + len(t))
    p = parse_patients(t)
    assert p.errors[0] == []
    assert "row 3, column 'age'" in p.errors[1][0] and "impossible" in p.errors[1][0]
    assert "row 4, column 'ldh'" in p.errors[2][0]
    assert "row 5, column 'nlr'" in p.errors[3][0] and "'high' is not a number" in p.errors[3][0]
    assert "row 6, column 'dyspnea'" in p.errors[4][0]
    assert "whole number" in p.errors[5][0]
    assert list(p.ok) == [True, False, False, False, False, False]


def test_duplicated_ids_fail_all_occurrences():
    p = parse_patients(table(BASE, {**BASE}, {**BASE, "patient_id": "p9"}))
    assert "used in rows 0, 1" in p.errors[0][0]  # DataFrame index labels
    assert p.errors[1] and not p.errors[2]


def test_implausible_value_is_a_warning_not_an_error():
    p = parse_patients(table({**BASE, "ldh": "4.5"}))
    assert p.errors == [[]]
    assert "ukat/L" in p.warnings[0][0]


def test_missing_cells_are_nan():
    p = parse_patients(table({**BASE, "ldh": "", "nlr": "NA", "copd": None}))
    assert p.errors == [[]]
    assert np.isnan(col(p, "ldh")[0]) and np.isnan(col(p, "nlr")[0]) and np.isnan(col(p, "copd")[0])


def test_conflicting_columns_refused():
    with pytest.raises(InputError, match="keep one"):
        parse_patients(table({**BASE, "ldh_ukat_l": "4"}))


def test_empty_table_refused():
    with pytest.raises(InputError, match="no patient rows"):
        parse_patients(pd.DataFrame(columns=list(BASE)))
