"""Predictor behaviour on a synthetic model (no shared data needed)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from pulmo.errors import InputError, ModelError
from pulmo.triage import TriageModel, TriagePredictor, shapley_values
from pulmo.triage.schema import FEATURE_NAMES

PATIENT = {"patient_id": "a", "xray_abnormality": 1, "dyspnea": 1, "comorbidities": 2, "malignancy": 0,
           "copd": 0, "age": 66, "nlr": 7.5, "ldh": 410, "direct_bilirubin": 5.1, "creatine_kinase": 150}


def test_save_load_round_trip_is_exact(synthetic_model, tmp_path):
    path = synthetic_model.save(tmp_path / "m.pulmo-triage")
    loaded = TriageModel.load(path)
    X = synthetic_model.donors[:50]
    np.testing.assert_array_equal(loaded.linear_predictor(X)[1], synthetic_model.linear_predictor(X)[1])
    assert loaded.provenance == {"name": "synthetic test model"}
    assert not list(tmp_path.glob("*.partial"))


def test_probability_formula_and_risk_groups(synthetic_model):
    m = synthetic_model
    s = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(m.probability(s, 10), 1 - np.exp(-0.04 * np.exp(s)))
    assert m.cumulative_hazard(4.9) == 0 and m.cumulative_hazard(12) == 0.04 and m.cumulative_hazard(300) == 0.05
    groups = m.risk_group(np.array([m.risk_low_max, m.risk_low_max + 1e-9, m.risk_high_min, 0.9]))
    assert list(groups) == ["low", "medium", "medium", "high"]


def test_large_input_blocked_threads_equal_small(synthetic_model):
    rng = np.random.default_rng(1)
    X = synthetic_model.donors[rng.integers(0, 400, 70_000)]
    dl, final = synthetic_model.linear_predictor(X)
    dl2, final2 = synthetic_model.linear_predictor(X[:100])
    np.testing.assert_allclose(final[:100], final2, rtol=0, atol=1e-12)


def test_dict_input_and_explanation_sums(synthetic_model):
    out = TriagePredictor(synthetic_model, explain=True).predict(PATIENT)
    contrib = out[[f"contrib_{f}" for f in FEATURE_NAMES]].to_numpy()[0]
    ref_score = synthetic_model.linear_predictor(synthetic_model.reference[None])[1][0]
    assert contrib.sum() == pytest.approx(out["score_final"][0] - ref_score, abs=1e-9)
    assert out["error"][0] == "" and out["risk_group"][0] in {"low", "medium", "high"}


def test_shapley_exact_for_linear_part(synthetic_model):
    """With score_dl switched off, feature j's Shapley value is coef_j * (z_j - z_ref_j)."""
    m = synthetic_model
    m.cox_coefficient_dl = 0.0
    X = m.donors[:5]
    phi = shapley_values(m, X, m.reference)
    expected = (m.scale(X) - m.scale(m.reference[None])) * m.cox_coefficients
    np.testing.assert_allclose(phi, expected, atol=1e-12)


def test_missing_values_give_interval_and_median(synthetic_model):
    rows = [PATIENT, {**PATIENT, "patient_id": "b", "ldh": None, "nlr": None}]
    out = TriagePredictor(synthetic_model, n_imputations=30).predict(rows)
    assert out.loc[0, "imputed"] == "" and out.loc[0, "n_imputations"] == 0
    assert out.loc[0, "prob_critical_30d_low"] == out.loc[0, "prob_critical_30d"] == out.loc[0, "prob_critical_30d_high"]
    assert out.loc[1, "imputed"] == "ldh;nlr" and out.loc[1, "n_imputations"] == 30
    assert out.loc[1, "prob_critical_30d_low"] <= out.loc[1, "prob_critical_30d"] <= out.loc[1, "prob_critical_30d_high"]
    assert out.loc[1, "prob_critical_30d_low"] < out.loc[1, "prob_critical_30d_high"]


def test_more_than_three_missing_is_refused(synthetic_model):
    row = {**PATIENT, "ldh": None, "nlr": None, "age": None, "copd": None}
    out = TriagePredictor(synthetic_model).predict(row)
    assert "4 of the 10 features are missing" in out.loc[0, "error"]
    assert np.isnan(out.loc[0, "prob_critical_5d"]) and out.loc[0, "risk_group"] == ""


def test_model_without_donors_cannot_impute(tmp_path):
    from synthetic_triage import make_synthetic_model

    m = make_synthetic_model(with_donors=False)
    out = TriagePredictor(m).predict({**PATIENT, "ldh": None})
    assert "no donor table" in out.loc[0, "error"]


def test_survival_curve(synthetic_model):
    curve = TriagePredictor(synthetic_model).survival_curve(PATIENT, times=[1, 5, 7, 10, 30, 60])
    assert list(curve["day"]) == [1, 5, 7, 10, 30, 60]
    p = curve["prob_critical"].to_numpy()
    assert p[0] == 0 and np.all(np.diff(p) >= 0) and p[2] == p[1]


def test_corrupt_and_foreign_model_files(tmp_path, synthetic_model):
    with pytest.raises(ModelError, match="not found"):
        TriageModel.load(tmp_path / "nope.pulmo-triage")
    junk = tmp_path / "junk.pulmo-triage"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match="not a valid"):
        TriageModel.load(junk)
    good = synthetic_model.save(tmp_path / "good.pulmo-triage")
    truncated = tmp_path / "trunc.pulmo-triage"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ModelError):
        TriageModel.load(truncated)
    with zipfile.ZipFile(good) as zf:
        manifest = json.loads(zf.read("model.json"))
        arrays = zf.read("arrays.npz")
    manifest["format_version"] = 99
    future = tmp_path / "future.pulmo-triage"
    with zipfile.ZipFile(future, "w") as zf:
        zf.writestr("model.json", json.dumps(manifest))
        zf.writestr("arrays.npz", arrays)
    with pytest.raises(ModelError, match="version 99"):
        TriageModel.load(future)
    manifest["format_version"] = 1
    manifest["scaling"]["sd"][5] = 0.0
    bad = tmp_path / "bad.pulmo-triage"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("model.json", json.dumps(manifest))
        zf.writestr("arrays.npz", arrays)
    with pytest.raises(ModelError, match="standard deviation"):
        TriageModel.load(bad)


def test_invalid_options(synthetic_model):
    with pytest.raises(InputError):
        TriagePredictor(synthetic_model, n_imputations=0)
    with pytest.raises(InputError):
        TriagePredictor(synthetic_model, interval=1.5)
