"""Training a triage model on a cohort: numpy Cox, metrics, the DeepSurv ensemble, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pulmo.errors import InputError, PulmoError
from pulmo.triage.model import TriageModel
from pulmo.triage.training import (
    Cohort,
    TrainingConfig,
    breslow_cumulative_hazard,
    cohort_from_table,
    concordance_index,
    fit_cox,
    make_folds,
    partial_loglik,
    train_triage_model,
)
from pulmo.stats.survival import kaplan_meier
from pulmo.triage.training.deepsurv import TORCH_MISSING, member_output

REPO = Path(__file__).resolve().parents[2]

try:
    import torch

    torch.set_num_threads(1)
    HAS_TORCH = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_TORCH = False
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (pip install 'pulmo[train]')")

TRUE_BETA = {"age": 0.04, "ldh": 0.006, "dyspnea": 0.8, "copd": 0.6}


def simulate(n: int, seed: int, nonlinear: float = 0.5) -> pd.DataFrame:
    """A cohort with a known Cox structure (plus an optional non-linear age term)."""
    rng = np.random.default_rng(seed)
    age = rng.normal(55, 12, n)
    ldh = np.maximum(rng.normal(260, 70, n), 40.0)   # U/L: never below 0 (the cohort reader refuses that)
    dys = rng.integers(0, 2, n)
    copd = (rng.random(n) < 0.2).astype(int)
    lp = (TRUE_BETA["age"] * (age - 55) + TRUE_BETA["ldh"] * (ldh - 260) + TRUE_BETA["dyspnea"] * dys
          + TRUE_BETA["copd"] * copd + nonlinear * ((age - 55) / 12) ** 2)
    T = rng.exponential(80 / np.exp(lp))
    C = rng.uniform(30, 45, n)
    return pd.DataFrame({
        "patient_id": [f"p{i}" for i in range(n)], "age": age.round(2), "ldh": ldh.round(1),
        "dyspnea": dys, "copd": copd, "days": np.round(np.minimum(T, C), 3).clip(0.01),
        "critical": (T <= C).astype(int),
    })


SMALL = dict(folds=3, hidden=(16, 16), max_epochs=60, patience=15, learning_rate=1e-2, horizons=(5, 10, 30))


# --- Cox ---------------------------------------------------------------------------------

def _tied_data(n=300, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    X[:, 2] = rng.integers(0, 2, n)
    T = rng.exponential(1 / np.exp(X @ [0.5, -0.3, 0.7]))
    C = rng.exponential(1.5, n)
    t = np.round(np.minimum(T, C), 1) + 0.1  # many ties
    return X, t, (T <= C).astype(float)


def test_cox_efron_matches_lifelines():
    lifelines = pytest.importorskip("lifelines")
    X, t, e = _tied_data()
    df = pd.DataFrame(X, columns=["a", "b", "c"]).assign(t=t, e=e)
    ref = lifelines.CoxPHFitter().fit(df, "t", "e", fit_options={"precision": 1e-12})
    fit = fit_cox(X, t, e, ties="efron")
    assert fit.converged
    np.testing.assert_allclose(fit.coef, ref.params_.to_numpy(), atol=1e-5)
    np.testing.assert_allclose(fit.se, ref.standard_errors_.to_numpy(), rtol=1e-5)
    assert fit.loglik == pytest.approx(ref.log_likelihood_, abs=1e-6)
    # Ridge: lifelines penalises its own standardised covariates (ddof 1), n * pen / 2 * ||b||^2.
    Xs = (X - X.mean(0)) / X.std(0, ddof=1)
    dfs = pd.DataFrame(Xs, columns=["a", "b", "c"]).assign(t=t, e=e)
    ref = lifelines.CoxPHFitter(penalizer=0.1).fit(dfs, "t", "e", fit_options={"precision": 1e-12})
    np.testing.assert_allclose(fit_cox(Xs, t, e, ridge=0.1).coef, ref.params_.to_numpy(), atol=1e-5)


def _naive_loglik(X, t, e, beta, ties):
    lp = X @ beta
    ll = 0.0
    for s in np.unique(t[e == 1]):
        D = (t == s) & (e == 1)
        R = t >= s
        d = D.sum()
        ll += lp[D].sum()
        for k in range(d):
            frac = k / d if ties == "efron" else 0.0
            ll -= np.log(np.exp(lp[R]).sum() - frac * np.exp(lp[D]).sum())
    return ll


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_cox_loglik_and_optimum(ties):
    X, t, e = _tied_data(120, seed=3)
    beta = np.array([0.3, -0.2, 0.4])
    assert partial_loglik(X, t, e, beta, ties) == pytest.approx(_naive_loglik(X, t, e, beta, ties), rel=1e-12)
    fit = fit_cox(X, t, e, ties=ties)
    grad = [(partial_loglik(X, t, e, fit.coef + h, ties) - partial_loglik(X, t, e, fit.coef - h, ties)) / 2e-6
            for h in np.eye(3) * 1e-6]
    np.testing.assert_allclose(grad, 0, atol=1e-4)
    # Without ties Breslow and Efron coincide.
    u = np.arange(1, 121) + np.random.default_rng(0).random(120) * 0.5
    np.testing.assert_allclose(fit_cox(X, u, e, ties="breslow").coef, fit_cox(X, u, e, ties="efron").coef,
                               atol=1e-10)


def test_cox_recovers_known_coefficients():
    rng = np.random.default_rng(7)
    n, beta = 3000, np.array([0.7, -0.5, 0.25, 1.0])
    X = np.column_stack([rng.normal(size=(n, 3)), rng.integers(0, 2, n)])
    T = rng.exponential(10 / np.exp(X @ beta))
    C = rng.uniform(2, 20, n)
    fit = fit_cox(X, np.minimum(T, C), (T <= C).astype(float))
    assert np.all(np.abs(fit.coef - beta) < 4 * fit.se)
    np.testing.assert_allclose(fit.coef, beta, atol=0.1)


def test_breslow_baseline_matches_lifelines():
    lifelines = pytest.importorskip("lifelines")
    X, t, e = _tied_data()
    df = pd.DataFrame(X, columns=["a", "b", "c"]).assign(t=t, e=e)
    ref = lifelines.CoxPHFitter().fit(df, "t", "e", fit_options={"precision": 1e-12})
    times, H = breslow_cumulative_hazard(t, e, X @ ref.params_.to_numpy())
    assert np.all(np.diff(times) > 0) and np.all(np.diff(H) >= 0)
    # lifelines' baseline is at the mean covariates.
    lb = ref.baseline_cumulative_hazard_
    idx = np.searchsorted(times, lb.index.to_numpy(), side="right") - 1
    mine = np.where(idx >= 0, H[np.clip(idx, 0, None)], 0) * np.exp(X.mean(0) @ ref.params_.to_numpy())
    np.testing.assert_allclose(mine, lb.to_numpy()[:, 0], rtol=1e-8)


def test_cox_separation_is_a_clear_error():
    t = np.arange(1, 41, dtype=float)
    e = np.r_[np.ones(20), np.zeros(20)]
    x = np.r_[np.ones(20), np.zeros(20)]  # x = 1 exactly for the early events
    with pytest.raises(InputError, match="ridge"):
        fit_cox(x[:, None], t, e)
    assert np.isfinite(fit_cox(x[:, None], t, e, ridge=0.01).coef).all()


# --- metrics -----------------------------------------------------------------------------

def test_concordance_matches_lifelines_and_naive():
    from lifelines.utils import concordance_index as lci

    rng = np.random.default_rng(5)
    n = 400
    t = rng.integers(1, 40, n).astype(float)  # tied times
    e = rng.integers(0, 2, n)
    risk = np.round(rng.normal(size=n) - 0.03 * t, 1)  # tied risks
    assert concordance_index(t, e, risk) == pytest.approx(lci(t, -risk, e), abs=1e-12)
    # Naive O(n^2) Harrell's C on a small subset.
    t, e, risk = t[:60], e[:60], risk[:60]
    num = den = 0.0
    for i in range(60):
        for j in range(60):
            if e[i] and (t[i] < t[j] or (t[i] == t[j] and not e[j])):
                den += 1
                num += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    assert concordance_index(t, e, risk) == pytest.approx(num / den, abs=1e-12)
    assert np.isnan(concordance_index([1, 2], [0, 0], [0.1, 0.2]))


def test_kaplan_meier_matches_lifelines():
    lifelines = pytest.importorskip("lifelines")
    rng = np.random.default_rng(2)
    t = rng.integers(1, 30, 200).astype(float)
    e = rng.integers(0, 2, 200)
    km = kaplan_meier(t, e)  # pulmo.stats.survival: every distinct time, as R's survfit
    times, s = km.time, km.surv
    ref = lifelines.KaplanMeierFitter().fit(t, e).survival_function_at_times(times).to_numpy()
    np.testing.assert_allclose(s, ref, atol=1e-12)


def test_folds_are_stratified_and_seeded():
    e = np.r_[np.ones(37), np.zeros(163)]
    f = make_folds(e, 5, 1)
    assert np.array_equal(f, make_folds(e, 5, 1)) and not np.array_equal(f, make_folds(e, 5, 2))
    counts = [int(e[f == k].sum()) for k in range(5)]
    assert max(counts) - min(counts) <= 1
    assert max(np.bincount(f)) - min(np.bincount(f)) <= 1


# --- cohort parsing ----------------------------------------------------------------------

def _as_read(df: pd.DataFrame) -> pd.DataFrame:
    """As read_table returns it: string cells, NaN for empty, index = spreadsheet row."""
    out = df.astype(str).mask(df.isna())
    out.index = pd.RangeIndex(2, 2 + len(df))
    return out


def test_cohort_drops_incomplete_rows_and_counts_them():
    df = simulate(200, 0)
    df.loc[[3, 10], "ldh"] = np.nan
    df.loc[10, "age"] = np.nan
    c = cohort_from_table(_as_read(df), time="days", event="critical")
    assert c.features == ["age", "ldh", "dyspnea", "copd"]  # patient_id left out
    assert c.n == 198 and c.dropped_missing == 2 and c.dropped_rows == [5, 12]
    assert c.missing_by_feature == {"age": 1, "ldh": 2}
    assert list(c.binary) == [False, False, True, True]


def test_cohort_with_published_features_uses_canonical_names():
    rng = np.random.default_rng(0)
    n = 60
    cols = {"Age": rng.normal(50, 10, n), "NLR": rng.gamma(3, 1.5, n), "Lactate.dehydrogenase": rng.normal(260, 70, n),
            "Direct.bilirubin": rng.normal(4, 1, n), "Creatine.kinase": rng.normal(100, 40, n),
            "Number.of.comorbidities": rng.integers(0, 3, n), "Malignancy": rng.integers(0, 2, n),
            "X.ray.abnormality": rng.integers(0, 2, n), "COPD": rng.integers(0, 2, n), "Dyspnea": rng.integers(0, 2, n)}
    df = pd.DataFrame(cols).assign(t=rng.uniform(1, 30, n), e=np.r_[np.ones(20), np.zeros(40)].astype(int))
    c = cohort_from_table(_as_read(df), time="t", event="e")
    from pulmo.triage.schema import FEATURE_NAMES

    assert c.features == list(FEATURE_NAMES)
    assert c.columns["ldh"] == "Lactate.dehydrogenase"
    np.testing.assert_allclose(c.X[:, FEATURE_NAMES.index("age")], df["Age"].astype(str).astype(float))


# --- training (PyTorch) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained():
    if not HAS_TORCH:
        pytest.skip("PyTorch is not installed (pip install 'pulmo[train]')")
    df = simulate(360, 11)
    cohort = cohort_from_table(_as_read(df), time="days", event="critical")
    return cohort, train_triage_model(cohort, TrainingConfig(seed=3, **SMALL))


@needs_torch
def test_trained_model_discriminates(trained):
    cohort, res = trained
    m = res.report["metrics"]["c_index_cv"]
    assert m["ensemble"] > 0.7 and m["final"] > 0.7 and m["linear_cox"] > 0.6
    # On new patients: near the true model (C = 0.727 on this sample), clearly above
    # linear Cox (0.679), which misses the quadratic age effect.
    test = simulate(2000, 99)
    X = test[["age", "ldh", "dyspnea", "copd"]].to_numpy(float)
    dl, final = res.model.linear_predictor(X)
    linear = X @ fit_cox(cohort.X, cohort.time, cohort.event).coef
    c_linear = concordance_index(test["days"], test["critical"], linear)
    assert concordance_index(test["days"], test["critical"], final) > max(0.7, c_linear + 0.02)
    assert concordance_index(test["days"], test["critical"], dl) > max(0.7, c_linear + 0.02)


@needs_torch
def test_model_contents_follow_the_design(trained):
    cohort, res = trained
    model = res.model
    assert model.features == ["age", "ldh", "dyspnea", "copd"]
    np.testing.assert_allclose(model.mean, [cohort.X[:, 0].mean(), cohort.X[:, 1].mean(), 0, 0])
    np.testing.assert_allclose(model.sd, [cohort.X[:, 0].std(ddof=1), cohort.X[:, 1].std(ddof=1), 1, 1])
    assert np.array_equal(model.donors, cohort.X)
    np.testing.assert_allclose(model.reference, cohort.X.mean(0))
    assert len(model.ensemble) == 3
    assert all(layer.activation in ("tanh", "relu", "selu", "linear") for mem in model.ensemble for layer in mem)
    # Baseline hazard: the full Breslow step function at the distinct event times.
    assert np.array_equal(model.baseline_times, np.unique(cohort.time[cohort.event == 1]))
    assert model.horizons == (5.0, 10.0, 30.0) and model.risk_horizon == 30.0
    # Tertiles of the training rows' predicted 30-day risk.
    Z = model.scale(cohort.X)
    lp = np.column_stack([Z, res.oof["score_dl"]]) @ np.r_[model.cox_coefficients, model.cox_coefficient_dl]
    share = pd.Series(model.risk_group(model.probability(lp, 30))).value_counts(normalize=True)
    np.testing.assert_allclose(share[["low", "medium", "high"]], 1 / 3, atol=0.01)
    assert model.metrics["c_index_cv_final"] == res.report["metrics"]["c_index_cv"]["final"]
    assert model.metrics["n"] == cohort.n and model.metrics["events"] == cohort.n_events
    assert model.provenance["data"]["rows_used"] == cohort.n
    assert model.provenance["hyperparameters"]["folds"] == 3
    json.dumps(res.report, allow_nan=False)


@needs_torch
def test_cox_on_top_uses_out_of_fold_scores(trained):
    cohort, res = trained
    model, oof = res.model, res.oof
    Z = model.scale(cohort.X)
    for k, member in enumerate(model.ensemble):
        held = oof["fold"] == k
        np.testing.assert_array_equal(oof["score_dl"][held], member_output(member, Z[held]))
    cfg = TrainingConfig(seed=3, **SMALL)
    refit = fit_cox(np.column_stack([Z, oof["score_dl"]]), cohort.time, cohort.event,
                    ties=cfg.cox_ties, ridge=cfg.cox_ridge)
    np.testing.assert_allclose(np.r_[model.cox_coefficients, model.cox_coefficient_dl], refit.coef, atol=1e-12)
    # The in-sample (averaged) score would give the ensemble a different, larger weight.
    in_sample = fit_cox(np.column_stack([Z, model.score_dl(Z)]), cohort.time, cohort.event,
                        ties=cfg.cox_ties, ridge=cfg.cox_ridge)
    assert in_sample.coef[-1] > refit.coef[-1]
    # Members are centred over the cohort.
    for member in model.ensemble:
        assert abs(member_output(member, Z).mean()) < 1e-9


@needs_torch
def test_saved_model_predicts_like_the_trained_one(trained, tmp_path):
    _, res = trained
    path = res.model.save(tmp_path / "m.pulmo-triage")
    loaded = TriageModel.load(path)
    X = simulate(50, 5)[["age", "ldh", "dyspnea", "copd"]].to_numpy(float)
    for a, b in zip(res.model.linear_predictor(X), loaded.linear_predictor(X)):
        np.testing.assert_array_equal(a, b)
    _, f = loaded.linear_predictor(X)
    for h in loaded.horizons:
        np.testing.assert_array_equal(res.model.probability(f, h), loaded.probability(f, h))
    np.testing.assert_array_equal(res.model.risk_group(res.model.probability(f, 30)),
                                  loaded.risk_group(loaded.probability(f, 30)))
    assert loaded.metrics == json.loads(json.dumps(res.model.metrics))
    assert np.array_equal(loaded.donors, res.model.donors)
    # The generic predictor serves it, imputing from the donors.
    from pulmo.triage.predict import TriagePredictor

    df = simulate(5, 6)[["age", "ldh", "dyspnea", "copd"]].astype(object)
    df.loc[0, "ldh"] = np.nan
    out = TriagePredictor(loaded, n_imputations=5).predict(df)
    assert (out["error"] == "").all() and out["prob_critical_30d"].between(0, 1).all()


@needs_torch
def test_training_is_deterministic(trained):
    cohort, res = trained
    again = train_triage_model(cohort, TrainingConfig(seed=3, **SMALL))
    for m1, m2 in zip(res.model.ensemble, again.model.ensemble):
        for l1, l2 in zip(m1, m2):
            np.testing.assert_array_equal(l1.weight, l2.weight)
            np.testing.assert_array_equal(l1.bias, l2.bias)
    np.testing.assert_array_equal(res.model.cox_coefficients, again.model.cox_coefficients)
    np.testing.assert_array_equal(res.model.baseline_cumhaz, again.model.baseline_cumhaz)
    other = train_triage_model(cohort, TrainingConfig(seed=4, **{**SMALL, "max_epochs": 5}))
    assert not np.array_equal(other.model.ensemble[0][0].weight, res.model.ensemble[0][0].weight)


def test_missing_torch_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes "import torch" fail
    df = simulate(200, 1)
    cohort = cohort_from_table(_as_read(df), time="days", event="critical")
    with pytest.raises(PulmoError, match=r"pip install 'pulmo\[train\]'") as exc:
        train_triage_model(cohort, TrainingConfig(**SMALL))
    assert str(exc.value) == TORCH_MISSING


def test_horizon_beyond_follow_up_is_refused():
    df = simulate(200, 1)
    cohort = cohort_from_table(_as_read(df), time="days", event="critical")
    with pytest.raises(InputError, match="beyond the longest follow-up"):
        train_triage_model(cohort, TrainingConfig(**{**SMALL, "horizons": (5, 60)}))


# --- CLI ---------------------------------------------------------------------------------

def cli(*args):
    r = subprocess.run([sys.executable, "-m", "pulmo", "triage", "train", *map(str, args)],
                       capture_output=True, text=True, cwd=REPO)
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.fixture
def csv(tmp_path):
    def write(df: pd.DataFrame | str, name="cohort.csv"):
        p = tmp_path / name
        if isinstance(df, str):
            p.write_text(df, encoding="utf-8")
        else:
            df.to_csv(p, index=False)
        return p
    return write


@pytest.mark.slow
@needs_torch
def test_cli_trains_and_writes_model_and_report(csv, tmp_path):
    path = csv(simulate(240, 2))
    out = tmp_path / "out" / "mine.pulmo-triage"
    r = cli(path, "--time", "days", "--event", "critical", "--features", "age,ldh", "dyspnea", "-o", out,
            "--folds", "3", "--hidden", "8,8", "--epochs", "30", "--patience", "10", "--horizons", "7,14",
            "--risk-cutoffs", "0.1,0.4", "--seed", "5", "--members-per-fold", "2", "--no-donors")
    assert r.returncode == 0, r.stderr
    model = TriageModel.load(out)
    assert model.features == ["age", "ldh", "dyspnea"] and model.horizons == (7.0, 14.0)
    assert (model.risk_low_max, model.risk_high_min, model.risk_horizon) == (0.1, 0.4, 14.0)
    assert len(model.ensemble) == 6 and model.donors is None
    report = json.loads((tmp_path / "out" / "mine.report.json").read_text())
    assert report["data"]["rows_used"] == 240 and report["hyperparameters"]["seed"] == 5
    md = (tmp_path / "out" / "mine.report.md").read_text()
    assert "## Discrimination (Harrell's C-index)" in md and "## Calibration at 14 days" in md
    assert "Cross-validated C-index" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == ["mine.pulmo-triage", "mine.report.json",
                                                                    "mine.report.md"]


def _bad(df, row, col, value):
    df = df.copy()
    df[col] = df[col].astype(object)
    df.loc[row, col] = value
    return df


@pytest.mark.parametrize("make, args, message", [
    (lambda d: d, ["--time", "follow_up"], "the time column 'follow_up' is not in the table"),
    (lambda d: d, ["--event", "died"], "the event column 'died' is not in the table"),
    (lambda d: _bad(d, 4, "critical", 2), [], "column 'critical': the event must be 0 (censored) or 1 (event); "
                                                    "row 6 has '2'"),
    (lambda d: _bad(d, 4, "critical", "yes"), [], "row 6 has 'yes'"),
    (lambda d: _bad(d, 7, "days", -3), [], "column 'days': follow-up times must be positive"),
    (lambda d: _bad(d, 7, "days", 0), [], "row 9 has 0"),
    (lambda d: _bad(d, 7, "days", "NaN"), [], "column 'days': the follow-up time is missing (empty or NaN) "
                                                   "in row 9"),
    (lambda d: _bad(d, 7, "days", "soon"), [], "column 'days': the follow-up time must be a number; row 9 has 'soon'"),
    (lambda d: d.assign(critical=np.r_[np.ones(6), np.zeros(len(d) - 6)].astype(int)), [],
     "only 6 event(s)"),
    (lambda d: _bad(d, 12, "ldh", "high"), [], "column 'ldh': feature values must be numbers (code yes/no as "
                                                    "1/0); row 14 has 'high'"),
    (lambda d: d.assign(copd=1), [], "feature 'copd' has the same value (1)"),
    (lambda d: d, ["--features", "age", "lhd"], "unknown feature(s) in --features: 'lhd' (did you mean 'ldh'?)"),
    (lambda d: d, ["--features", "age,days"], "'days' is the time column"),
    (lambda d: d, ["--horizons", "5,ten"], "--horizons: expected comma-separated numbers"),
    (lambda d: d, ["--risk-quantiles", "0.8,0.2"], "--risk-quantiles must be two numbers"),
])
@pytest.mark.slow
def test_cli_bad_input(csv, tmp_path, make, args, message):
    df = make(simulate(120, 4))
    path = csv(df)
    out = tmp_path / "model.pulmo-triage"
    base = ["--time", "days", "--event", "critical"]
    for flag in ("--time", "--event"):
        if flag in args:
            i = base.index(flag)
            del base[i:i + 2]
    r = cli(path, *base, *args, "-o", out)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("pulmo: error: ")
    assert message in r.stderr, r.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort.csv"]


def test_cli_usage_errors(csv, tmp_path):
    path = csv(simulate(60, 4))
    r = cli(path, "--time", "days", "-o", tmp_path / "m.pulmo-triage")  # --event missing
    assert r.returncode == 2 and "--event" in r.stderr
    r = cli(tmp_path / "nope.csv", "--time", "days", "--event", "critical", "-o", tmp_path / "m.pulmo-triage")
    assert r.returncode == 2 and "file not found" in r.stderr
    r = cli(path, "--time", "days", "--event", "critical", "-o", path)
    assert r.returncode == 2 and "overwrite the cohort file" in r.stderr


def test_cli_without_torch_says_how_to_install(csv, tmp_path):
    path = csv(simulate(120, 4))
    code = ("import sys; sys.modules['torch'] = None; from pulmo.cli import main; "
            f"sys.exit(main(['triage', 'train', {str(path)!r}, '--time', 'days', '--event', 'critical', "
            f"'-o', {str(tmp_path / 'm.pulmo-triage')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "PyTorch is not installed: pip install 'pulmo[train]'" in r.stderr
    assert not (tmp_path / "m.pulmo-triage").exists()


# --- shared data -------------------------------------------------------------------------

@needs_torch
def test_deepsurv_gbsg_split_beats_chance(shared):
    h5py = pytest.importorskip("h5py")
    path = shared("survival", "deepsurv-splits", "gbsg_cancer_train_test.h5")
    with h5py.File(path, "r") as h:
        tr = [h["train"][k][:].astype(float) for k in ("x", "t", "e")]
        te = [h["test"][k][:].astype(float) for k in ("x", "t", "e")]
    cohort = Cohort(tr[0], tr[1], tr[2], [f"x{j}" for j in range(tr[0].shape[1])])
    res = train_triage_model(cohort, TrainingConfig(folds=3, hidden=(16, 16), max_epochs=40, patience=10,
                                                    horizons=(24.0,)))
    _, final = res.model.linear_predictor(te[0])
    assert concordance_index(te[1], te[2], final) > 0.64  # paper's linear Cox 0.656, DeepSurv 0.668
