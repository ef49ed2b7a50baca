"""Typed records (predict_records, score_records): the same numbers as the DataFrame path,
JSON-ready, and safe to compute from several threads at once."""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from pulmo.errors import InputError
from pulmo.io.tables import read_table
from pulmo.triage import (Probability, TriageBatch, TriagePredictor, TriageResult, predict_records)
from pulmo.triage.predict import TEXT_COLUMNS
from pulmo.triage.scores import PatientScores, ScoreBatch, score_records, score_table

HEADER = ("patient_id,xray_abnormality,dyspnea,comorbidities,malignancy,copd,age,nlr,ldh,direct_bilirubin,"
          "creatine_kinase")
ROWS = [
    "p1,1,0,1,0,0,61,4.2,250,3.4,90",
    "p2,1,0,1,0,0,70,7.5,,3.4,",          # two values missing: imputed
    "p3,1,0,1,0,0,400,4.2,250,3.4,90",     # age 400: invalid
    "p4,0,1,0,0,1,45,2.1,3,3.4,90",        # LDH 3 U/L: a warning
    "p5,NA,,2,1,0,80,12,600,9,400",        # two missing (NA and empty)
]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "in.csv"
    path.write_text("\n".join([HEADER, *ROWS]) + "\n")
    return read_table(path)[0]


def _rows_equal(frame: pd.DataFrame, results) -> None:
    for i, r in enumerate(results):
        for c, v in r.to_row().items():
            cell = frame[c].iloc[i]
            if c in TEXT_COLUMNS:
                assert cell == v, (i, c)
            elif v is None:
                assert np.isnan(cell), (i, c)
            else:
                assert cell == v, (i, c)


@pytest.mark.parametrize("explain", [False, True])
def test_records_equal_the_dataframe_path(synthetic_model, table, explain):
    predictor = TriagePredictor(synthetic_model, n_imputations=25, explain=explain)
    frame = predictor.predict(table)
    batch = predictor.predict_records(table)
    assert isinstance(batch, TriageBatch) and len(batch) == len(table) and batch.n_failed == 1
    pd.testing.assert_frame_equal(batch.to_frame(table), frame, check_exact=True)
    _rows_equal(frame, batch)

    ok, imputed, invalid, warned = batch[0], batch[1], batch[2], batch[3]
    assert all(isinstance(r, TriageResult) for r in batch)
    assert (ok.row, ok.patient_id, ok.error, ok.imputed, ok.n_imputations) == (2, "p1", None, (), 0)
    assert [p.days for p in ok.probabilities] == [5.0, 10.0, 30.0]
    p30 = ok.probability(30)
    assert isinstance(p30, Probability) and p30.value == p30.low == p30.high == frame.loc[2, "prob_critical_30d"]
    assert ok.risk_group == frame.loc[2, "risk_group"] and ok.score_final == frame.loc[2, "score_final"]
    assert imputed.imputed == ("ldh", "creatine_kinase") and imputed.n_imputations == 25
    assert imputed.probability(5).low <= imputed.probability(5).value <= imputed.probability(5).high
    assert invalid.error.startswith("row 4, column 'age'") and invalid.risk_group is None
    assert invalid.score_dl is None and invalid.probability(10) == Probability(10.0, None, None, None)
    assert invalid.n_imputations == 0 and invalid.imputed == ()
    assert warned.error is None and "unusually low" in warned.warnings[0]
    assert batch[4].imputed == ("xray_abnormality", "dyspnea")
    if explain:
        assert list(ok.contributions) == list(synthetic_model.features)
        assert set(invalid.contributions.values()) == {None}
        ref = synthetic_model.linear_predictor(synthetic_model.reference[None])[1][0]
        assert sum(ok.contributions.values()) == pytest.approx(ok.score_final - ref, abs=1e-9)
    else:
        assert ok.contributions is None and "contrib_age" not in ok.to_row()
    with pytest.raises(KeyError, match="5, 10, 30 days"):
        ok.probability(7)


def test_records_from_dicts_and_json(synthetic_model, table):
    records = [dict(zip(HEADER.split(","), (None if v == "" else v for v in row.split(",")))) for row in ROWS]
    from_dicts = predict_records(synthetic_model, records, n_imputations=25)
    from_table = predict_records(TriagePredictor(synthetic_model, n_imputations=25), table)
    for a, b in zip(from_dicts, from_table):
        assert a.probabilities == b.probabilities and (a.error is None) == (b.error is None)
        assert (a.patient_id, a.score_final, a.imputed, a.warnings) == (b.patient_id, b.score_final, b.imputed,
                                                                        b.warnings)
    one = predict_records(synthetic_model, records[0])  # one row: BLAS may round the last bit differently
    got, want = one[0].to_row(), from_table[0].to_row()
    assert len(one) == 1 and got.keys() == want.keys()
    assert all(got[c] == want[c] if isinstance(want[c], str) else got[c] == pytest.approx(want[c], rel=1e-12)
               for c in want)
    text = json.dumps([r.to_dict() for r in from_table], allow_nan=False)  # no NaN: None for missing
    back = json.loads(text)
    assert back[1]["probabilities"][0]["days"] == 5.0 and back[2]["error"].startswith("row 4")
    assert json.dumps([r.to_row() for r in from_table], allow_nan=False)
    with pytest.raises(TypeError, match="seed"):
        predict_records(TriagePredictor(synthetic_model), records, seed=3)


def test_records_report_table_level_facts(synthetic_model):
    batch = predict_records(synthetic_model, [{"patient_id": "a", "xray_abnormality": 1, "dyspnea": 0,
                                               "comorbidities": 0, "malignancy": 0, "copd": 0, "age": 50,
                                               "nlr": 3, "Lactate dehydrogenase": 200, "direct_bilirubin": 3,
                                               "creatine_kinase": 80, "ward": "B"}])
    assert batch.unused_columns == ("ward",) and batch.feature_columns["ldh"] == "Lactate dehydrogenase"
    frame = batch.to_frame()
    assert list(frame.index) == [batch[0].row] and "ward" not in frame.columns
    with pytest.raises(InputError, match="missing required column"):
        predict_records(synthetic_model, [{"age": 50}])


def test_predictor_pickles(synthetic_model):
    predictor = TriagePredictor(synthetic_model, n_imputations=5)
    predictor.imputer()
    copy = pickle.loads(pickle.dumps(predictor))
    row = {**dict(zip(HEADER.split(","), ROWS[1].split(","))), "ldh": None, "creatine_kinase": None}
    assert copy.predict_records(row)[0] == predictor.predict_records(row)[0]


def _many_patients(model, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = model.donors[rng.integers(0, len(model.donors), n)].astype(object)
    gaps = rng.random(X.shape) < 0.1
    X[gaps] = None
    X[rng.integers(0, n, 3), 6] = 400.0                       # a few impossible ages
    df = pd.DataFrame(X, columns=model.features)
    df.insert(0, "patient_id", [f"p{i}" for i in range(n)])
    return df


def _thread_check(model, chunks) -> None:
    predictor = TriagePredictor(model, n_imputations=10, explain=True)  # imputer fitted lazily, under the lock
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(predictor.predict_records, chunks * 2))
    serial = [TriagePredictor(model, n_imputations=10, explain=True).predict_records(c) for c in chunks * 2]
    assert [b.results for b in parallel] == [b.results for b in serial]


@pytest.mark.slow
def test_four_threads_equal_serial_synthetic(synthetic_model):
    df = _many_patients(synthetic_model, 120, 3)
    _thread_check(synthetic_model, [df.iloc[k::4] for k in range(4)])


@pytest.mark.slow
def test_four_threads_equal_serial_published(published_model):
    df = _many_patients(published_model, 80, 4)
    _thread_check(published_model, [df.iloc[k::4] for k in range(4)])


# --- classic scores ------------------------------------------------------------------------

SCORE_TABLE = pd.DataFrame({
    "id": ["a", "b", "c", "d"], "resp_rate": ["32", "-1", "18", "22"], "sbp": ["85", "120", "abc", "100"],
    "dbp": ["50", "70", "70", "60"], "Age": ["70", "40", "50", "30"], "confusion": ["no", "no", "yes", ""],
    "Urea (mmol/L)": ["8", "5", "5", "#N/A"], "gcs": ["15", "15", "15", "14"]}, index=[2, 3, 4, 5])


@pytest.mark.parametrize("options", [{}, {"assume_normal_if_missing": True, "items": True}])
def test_score_records_equal_score_table(options):
    batch = score_records(SCORE_TABLE, "curb65,qsofa", **options)
    frame = score_table(SCORE_TABLE, "curb65,qsofa", **options)
    assert isinstance(batch, ScoreBatch) and all(isinstance(p, PatientScores) for p in batch)
    pd.testing.assert_frame_equal(batch.to_frame(SCORE_TABLE), frame, check_exact=True)
    for i, p in enumerate(batch):
        for c, v in p.to_row().items():
            cell = frame[c].iloc[i]
            assert (cell is pd.NA or cell is None) if v is None else cell == v, (i, c)
    a, b, c, d = batch
    assert a.row == 2 and a.scores["curb65"].total == 4 and a.scores["curb65"].band == "severe"
    assert a.scores["curb65"].mortality == "41.5%" and a.scores["qsofa"].mortality is not None
    assert b.error.startswith("row 3, column 'resp_rate'") and b.scores["curb65"].total is None
    assert "'abc' is not a number" in c.error
    assert d.error is None and d.scores["qsofa"].total == 3
    if options:
        assert d.scores["curb65"].assumed_normal == ("confusion or amt_score", "urea_mmol_l")
        assert d.scores["curb65"].items["age"] == 0 and b.scores["curb65"].items["age"] is None
    else:
        assert d.scores["curb65"].total is None and d.scores["curb65"].missing == ("confusion or amt_score",
                                                                                   "urea_mmol_l")
        assert d.scores["curb65"].assumed_normal is None and d.scores["curb65"].items is None
    assert batch.unused_columns == ("id",) and batch.columns["respiratory_rate"] == "resp_rate"
    assert json.dumps([p.to_dict() for p in batch], allow_nan=False)


def test_score_records_from_threads():
    tables = [SCORE_TABLE.sample(frac=1, random_state=k) for k in range(8)]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda t: score_records(t, items=True), tables))
    assert [b.patients for b in parallel] == [score_records(t, items=True).patients for t in tables]
