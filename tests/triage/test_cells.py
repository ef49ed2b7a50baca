"""pulmo.io.cells: one reading of cells and headers, shared by every table reader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pulmo.errors import InputError
from pulmo.io.cells import (AMBIGUOUS_BINARY_TOKENS, FALSE_TOKENS, MISSING_TOKENS, TRUE_TOKENS, missing_cells,
                            normalise_header, parse_binary, parse_numbers)
from pulmo.stats.io import binary_column, numeric_column
from pulmo.triage.schema import FEATURE_NAMES, parse_patients
from pulmo.triage.scores_io import parse_table
from pulmo.triage.training.cohort import cohort_from_table


def variants(tokens):
    """Each token as written, upper-case and padded with spaces."""
    return sorted({v for t in tokens for v in (t, t.upper(), f"  {t.title()} ")})


def text(cells):
    return pd.Series(cells, dtype=object)


def test_token_sets_do_not_overlap():
    assert not TRUE_TOKENS & FALSE_TOKENS and not (TRUE_TOKENS | FALSE_TOKENS) & MISSING_TOKENS
    assert AMBIGUOUS_BINARY_TOKENS <= MISSING_TOKENS
    assert {"", "na", "n/a", "#n/a", "nan", "null", "none", "-", "unknown", "not known"} <= MISSING_TOKENS
    assert {"yes", "y", "true", "t", "1", "positive", "pos"} <= TRUE_TOKENS
    assert {"no", "n", "false", "f", "0", "negative", "neg"} <= FALSE_TOKENS


def test_missing_tokens_in_number_columns():
    cells = text(variants(MISSING_TOKENS) + [None, np.nan])
    values, missing, unreadable = parse_numbers(cells)
    assert missing.all() and not unreadable.any() and np.isnan(values).all()
    assert missing_cells(cells).all()
    assert list(missing_cells(text(["none", "None ", "NA", "x"]), none_is_missing=False)) == [False, False, True,
                                                                                              False]


def test_numbers_and_unreadable_cells():
    values, missing, unreadable = parse_numbers(text(["3.5", " -2 ", "1e3", "0", "abc", "inf", "-Infinity", "3,5",
                                                      "yes"]))
    np.testing.assert_array_equal(values[:4], [3.5, -2.0, 1000.0, 0.0])
    assert not missing.any() and list(unreadable) == [False] * 4 + [True] * 5 and np.isnan(values[4:]).all()
    # A numeric column is taken as it is (infinities are the caller's to refuse); booleans are no numbers.
    values, missing, unreadable = parse_numbers(pd.Series([1.5, np.nan, np.inf]))
    assert list(missing) == [False, True, False] and not unreadable.any() and values[2] == np.inf
    assert parse_numbers(pd.Series([True, False]))[2].all()


def test_binary_tokens():
    for tokens, expected in ((TRUE_TOKENS, 1.0), (FALSE_TOKENS, 0.0)):
        values, missing, unreadable = parse_binary(text(variants(tokens)))
        assert (values == expected).all() and not missing.any() and not unreadable.any()
    values, missing, unreadable = parse_binary(text(variants(MISSING_TOKENS - AMBIGUOUS_BINARY_TOKENS)))
    assert missing.all() and np.isnan(values).all()
    # "none" could be "no" or "not recorded": unreadable; other numbers are returned for the caller to refuse.
    values, missing, unreadable = parse_binary(text(["none", "None", "2", "1.00", "-1", "maybe", "inf"]))
    assert list(unreadable) == [True, True, False, False, False, True, True] and not missing.any()
    assert list(values[2:5]) == [2.0, 1.0, -1.0]
    values, missing, _ = parse_binary(pd.Series([True, False]))
    assert list(values) == [1.0, 0.0]
    values, missing, _ = parse_binary(pd.Series([1.0, np.nan, 0.0]))
    assert list(missing) == [False, True, False] and values[0] == 1.0


def test_header_normaliser():
    assert normalise_header("Direct bilirubin (µmol/L)") == "direct_bilirubin_umol_l"
    assert normalise_header(" Resp. rate (/min) ") == "resp_rate_min"
    assert normalise_header("SpO₂ %") == "spo2"
    assert normalise_header("X.ray.abnormality") == "x_ray_abnormality"
    assert normalise_header(42) == "42"


ROW = {"patient_id": "p1", "xray_abnormality": "1", "dyspnea": "0", "comorbidities": "1", "malignancy": "0",
       "copd": "0", "age": "61", "nlr": "4.2", "ldh": "250", "direct_bilirubin": "3.4", "creatine_kinase": "90"}


@pytest.mark.parametrize("token", ["#N/A", "not known", "-", "NA", ""])
def test_every_reader_reads_a_missing_token_as_missing(token):
    # Triage input: missing, hence imputed.
    parsed = parse_patients(pd.DataFrame([{**ROW, "ldh": token}], dtype=object))
    assert parsed.errors == [[]] and np.isnan(parsed.values[0, FEATURE_NAMES.index("ldh")])
    # Score inputs: missing (a yes/no input as well).
    parsed = parse_table(pd.DataFrame({"respiratory_rate": [token], "confusion": [token]}, dtype=object))
    assert parsed.errors == [[]] and np.isnan(parsed.values["respiratory_rate"][0])
    assert np.isnan(parsed.values["confusion"][0])
    # Training cohort: the row is dropped and counted.
    rows = [{"age": str(50 + i), "t": str(i + 1), "e": str(i % 2)} for i in range(4)]
    rows[1]["age"] = token
    cohort = cohort_from_table(pd.DataFrame(rows, dtype=object, index=range(2, 6)), time="t", event="e",
                               min_events=1)
    assert cohort.dropped_missing == 1 and cohort.missing_by_feature == {"age": 1}
    # Validation data: every value is needed; an empty cell and a missing token are refused, naming the row.
    table = pd.DataFrame({"score": ["0.1", token or np.nan], "truth": ["1", token or np.nan]}, index=[2, 3])
    with pytest.raises(InputError, match="row 3, column 'score'"):
        numeric_column(table, "score", "f.csv")
    with pytest.raises(InputError, match="row 3"):
        binary_column(table, "truth", "f.csv", require_both=False)


def test_every_binary_reader_reads_the_same_tokens():
    for token, expected in (("Pos", 1.0), ("neg", 0.0), ("TRUE", 1.0), ("n", 0.0)):
        parsed = parse_patients(pd.DataFrame([{**ROW, "copd": token}], dtype=object))
        assert parsed.values[0, FEATURE_NAMES.index("copd")] == expected
        assert parse_table(pd.DataFrame({"confusion": [token]}, dtype=object)).values["confusion"][0] == expected
        table = pd.DataFrame({"truth": [token, "1" if expected == 0 else "0"]}, index=[2, 3])
        assert binary_column(table, "truth", "f.csv")[0] == bool(expected)
    for reader_error in (parse_patients(pd.DataFrame([{**ROW, "copd": "none"}], dtype=object)).errors[0],
                         parse_table(pd.DataFrame({"confusion": ["none"]}, dtype=object)).errors[0]):
        assert len(reader_error) == 1 and "'none' is not" in reader_error[0]
