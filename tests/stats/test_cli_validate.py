"""``python -m pulmo validate ...`` end to end: outputs, exit codes and messages for bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pulmo.stats import roc, survival
from statshelp import run_cli


@pytest.fixture(scope="module")
def roc_csv(tmp_path_factory):
    rng = np.random.default_rng(3)
    n = 300
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "truth": y,
                       "model_a": np.round(rng.normal(size=n) + 1.2 * y, 3),
                       "model_b": np.round(rng.normal(size=n) + 0.5 * y, 2),
                       "sex": rng.choice(["F", "M"], n), "age": rng.integers(18, 95, n),
                       "vendor": rng.choice(["GE", "Siemens", "Philips"], n)})
    path = tmp_path_factory.mktemp("roc") / "study.csv"
    df.to_csv(path, index=False)
    return path, df


def test_roc_writes_json_html_and_csv_matching_the_api(roc_csv, tmp_path):
    path, df = roc_csv
    out_json, out_html, out_csv = tmp_path / "r.json", tmp_path / "r.html", tmp_path / "r.csv"
    r = run_cli("roc", path, "--truth", "truth", "--score", "model_a", "--score", "model_b",
                "--by", "sex", "--by", "age:40,65", "--by", "vendor", "--threshold", "0.5",
                "--json", out_json, "--report", out_html, "--csv", out_csv)
    assert r.returncode == 0, r.stderr
    res = json.loads(out_json.read_text())
    y = df["truth"].to_numpy()
    for name in ("model_a", "model_b"):
        s, a, yd = res["scores"][name], roc.delong_auc(y, df[name]), roc.youden_threshold(y, df[name])
        assert (s["auc"], s["auc_se"], s["auc_ci"]) == (a.auc, a.se, list(a.ci))
        for k in ("threshold", "sensitivity", "specificity", "ppv", "npv"):
            assert s["youden"][k] == getattr(yd, k)
        assert s["youden"]["sensitivity_ci"] == list(yd.sensitivity_ci)
        assert s["youden"]["specificity_ci"] == list(yd.specificity_ci)
        assert s["at_threshold"][0]["threshold"] == 0.5
    (c,) = res["comparisons"]
    t = roc.delong_paired_test(y, df["model_a"], df["model_b"])
    assert (c["a"], c["b"], c["method"], c["z"], c["p_value"]) == ("model_a", "model_b", "delong-paired",
                                                                    t.statistic, t.p_value)
    assert set(res["subgroups"]) == {"sex", "age:40,65", "vendor"}
    ages = res["subgroups"]["age:40,65"]["model_a"]
    assert [lv["level"] for lv in ages["levels"]] == ["<40", "40-<65", ">=65"]
    assert len(res["subgroups"]["vendor"]["model_b"]["comparisons"]) == 3
    html = out_html.read_text()
    assert html.count("data:image/png;base64,") >= 4 and "ROC curves" in html
    table = pd.read_csv(out_csv)
    assert set(table["kind"]) == {"auc", "comparison", "subgroup_auc", "subgroup_comparison"}
    assert table.loc[table["kind"] == "auc", "auc"].tolist() == pytest.approx(
        [res["scores"]["model_a"]["auc"], res["scores"]["model_b"]["auc"]])
    assert "model_a: AUC" in r.stderr


def test_roc_json_to_stdout_and_semicolon_decimal_comma_csv(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text("truth;score\n0;0,1\n0;0,35\n1;0,3\n1;0,8\n0;0,2\n1;0,9\n", encoding="cp1252")
    r = run_cli("roc", path, "--truth", "truth", "--score", "score")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["scores"]["score"]["auc"] == pytest.approx(8 / 9)


def test_help_states_the_direction():
    r = run_cli("roc", "--help")
    assert r.returncode == 0 and "HIGHER SCORES MEAN POSITIVE" in r.stdout
    r = run_cli("survival", "--help")
    assert "HIGHER RISK MEANS AN EARLIER EVENT" in r.stdout


BAD_ROC = [
    ("truth,score\n0,0.1\n1,0.4\n2,0.5\n", [], "column 'truth' must be binary", "row 4"),
    ("truth,score\n1,0.1\n1,0.4\n1,0.5\n", [], "is 1 in all 3 rows", "no row has 0"),
    ("truth,score\n0,0.1\n1,NaN\n0,0.5\n", [], "row 3, column 'score'", "not a finite number"),
    ("truth,score\n0,0.1\n1,\n0,0.5\n", [], "row 3, column 'score' is empty", ""),
    ("truth,score\n0,0.1\n1,0.2\n0,abc\n", [], "row 4, column 'score': 'abc' is not a number", ""),
    ("truth,prob\n0,0.1\n1,0.2\n", [], "no column 'score'", "'truth', 'prob'"),
    ("", [], "the file is empty", ""),
    ("truth,score\n", [], "no data rows", ""),
    ("truth,score,sex\n0,0.1,F\n1,0.2,F\n0,0.3,F\n", ["--by", "sex"], "'sex' has a single value ('F')", ""),
]


@pytest.mark.parametrize("text,extra,msg1,msg2", BAD_ROC)
def test_roc_bad_input_exit_2_clear_message_nothing_written(tmp_path, text, extra, msg1, msg2):
    path = tmp_path / "in.csv"
    path.write_text(text)
    out = tmp_path / "out.json"
    r = run_cli("roc", path, "--truth", "truth", "--score", "score", *extra, "--json", out,
                "--report", tmp_path / "out.html")
    assert r.returncode == 2
    assert msg1 in r.stderr and msg2 in r.stderr
    assert not out.exists() and not (tmp_path / "out.html").exists()
    assert list(tmp_path.iterdir()) == [path]          # no temporary files left behind


def test_output_may_not_overwrite_the_input(roc_csv):
    path, _ = roc_csv
    r = run_cli("roc", path, "--truth", "truth", "--score", "model_a", "--csv", path)
    assert r.returncode == 2 and "overwrite" in r.stderr


@pytest.fixture(scope="module")
def surv_csv(tmp_path_factory):
    rng = np.random.default_rng(8)
    n = 400
    x = rng.normal(size=n)
    t = np.round(rng.exponential(20 * np.exp(-0.8 * x)), 1) + 0.5
    e = (rng.random(n) < 0.7).astype(int)
    p10 = 1 - np.exp(-10 / 20 * np.exp(0.8 * x))
    p30 = 1 - np.exp(-30 / 20 * np.exp(0.8 * x))
    df = pd.DataFrame({"days": t, "died": e, "risk": x, "prob_10d": p10, "prob_30d": p30})
    path = tmp_path_factory.mktemp("surv") / "cohort.csv"
    df.to_csv(path, index=False)
    return path, df


def test_survival_end_to_end(surv_csv, tmp_path):
    path, df = surv_csv
    out_json, out_html, out_csv = tmp_path / "s.json", tmp_path / "s.html", tmp_path / "s.csv"
    r = run_cli("survival", path, "--time", "days", "--event", "died", "--risk", "risk",
                "--horizon", "10", "30", "--prob", "10=prob_10d", "--prob", "30=prob_30d",
                "--json", out_json, "--report", out_html, "--csv", out_csv)
    assert r.returncode == 0, r.stderr
    res = json.loads(out_json.read_text())
    h = survival.harrell_c(df["days"], df["died"], df["risk"])
    got = res["risks"]["risk"]
    assert (got["harrell"]["c_index"], got["harrell"]["se"]) == (h.c_index, h.se)
    assert got["uno"]["tau"] == 30.0
    assert [a["horizon"] for a in got["time_dependent_auc"]] == [10.0, 30.0]
    lr = got["risk_groups"]["logrank"]
    assert [g["group"] for g in got["risk_groups"]["groups"]] == ["low", "medium", "high"] and lr["p_value"] < 0.01
    assert len(res["predictions"]) == 2 and res["integrated_brier"]["ibs"] > 0
    assert res["predictions"][1]["calibration"]["slope"] == pytest.approx(1, abs=0.35)
    assert out_html.read_text().count("data:image/png;base64,") >= 3
    assert "harrell_c" in set(pd.read_csv(out_csv)["measure"])


BAD_SURV = [
    ("days,died,risk\n5,1,0.1\n0,0,0.3\n7,1,0.2\n", [], "row 3, column 'days'", "positive"),
    ("days,died,risk\n5,1,0.1\nnan,0,0.3\n7,1,0.2\n", [], "row 3, column 'days'", "not a finite number"),
    ("days,died,risk\n5,1,0.1\n6,2,0.3\n7,1,0.2\n", [], "column 'died' must be binary", "row 3"),
    ("days,died,risk\n5,0,0.1\n6,0,0.3\n7,0,0.2\n", [], "has no events", ""),
    ("days,died,risk\n5,1,0.1\n6,0,0.3\n7,1,0.2\n", ["--prob", "thirty=risk"], "--prob 'thirty=risk'", "HORIZON=COLUMN"),
    ("days,died,risk\n5,1,0.1\n6,0,1.3\n7,1,0.2\n", ["--prob", "30=risk"], "row 3, column 'risk'", "not a probability"),
]


@pytest.mark.parametrize("text,extra,msg1,msg2", BAD_SURV)
def test_survival_bad_input(tmp_path, text, extra, msg1, msg2):
    path = tmp_path / "in.csv"
    path.write_text(text)
    r = run_cli("survival", path, "--time", "days", "--event", "died", "--risk", "risk", *extra,
                "--json", tmp_path / "o.json")
    assert r.returncode == 2
    assert msg1 in r.stderr and msg2 in r.stderr
    assert not (tmp_path / "o.json").exists()


def _nifti(path, data, spacing):
    nib = pytest.importorskip("nibabel")
    img = nib.Nifti1Image(data.astype(np.uint8), np.diag([*spacing, 1.0]))
    nib.save(img, str(path))


def _png(path, data):
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(data.astype(np.uint8)).save(path)


@pytest.fixture
def mask_dirs(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    g = np.zeros((20, 24, 10), np.uint8)
    g[4:14, 5:17, 2:8] = 1
    g[15:18, 18:22, 3:6] = 2
    p = g.copy()
    p[4:6] = 0
    _nifti(gt / "case01.nii.gz", g, (0.8, 0.8, 2.0))
    _nifti(pred / "case01.nii.gz", p, (0.8, 0.8, 2.0))
    _nifti(gt / "case02.nii.gz", np.zeros_like(g), (0.8, 0.8, 2.0))      # no lesion, none predicted
    _nifti(pred / "case02.nii.gz", np.zeros_like(g), (0.8, 0.8, 2.0))
    _nifti(pred / "extra.nii.gz", p, (0.8, 0.8, 2.0))                   # prediction without reference
    return pred, gt, p, g


def test_segmentation_nifti_end_to_end(mask_dirs, tmp_path):
    from pulmo.stats.segmentation import segmentation_metrics

    pred, gt, p, g = mask_dirs
    out = tmp_path / "seg.json"
    r = run_cli("segmentation", pred, gt, "--labels", "1", "2", "--tolerance", "2", "--json", out,
                "--report", tmp_path / "seg.html", "--csv", tmp_path / "seg.csv")
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["n_cases"] == 2 and res["unmatched_predictions"] == ["extra"]
    spacing = np.float32([0.8, 0.8, 2.0]).astype(float)        # NIfTI stores float32 voxel sizes
    ref = segmentation_metrics(p == 1, g == 1, spacing, 2.0)
    row = next(x for x in res["cases"] if x["case"] == "case01" and x["label"] == 1)
    assert (row["dice"], row["hd95"], row["surface_dice"]) == (ref.dice, ref.hd95, ref.surface_dice)
    empty = next(x for x in res["cases"] if x["case"] == "case02" and x["label"] == 2)
    assert empty["empty"] == "both" and empty["dice"] == 1.0
    assert res["summary"]["1"]["n_both_empty"] == 1
    d = res["summary"]["1"]["dice"]                       # two cases: resampled means span both
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((min(ref.dice, 1.0), max(ref.dice, 1.0)))
    assert "95% CI of mean (bootstrap)" in (tmp_path / "seg.html").read_text()
    assert len(pd.read_csv(tmp_path / "seg.csv")) == 4
    assert "1 prediction(s) without a reference" in r.stderr


def test_segmentation_png(tmp_path):
    pred, gt = tmp_path / "p", tmp_path / "g"
    pred.mkdir()
    gt.mkdir()
    g = np.zeros((30, 30))
    g[5:20, 5:20] = 255
    p = np.zeros((30, 30))
    _png(gt / "slice_001.png", g)
    _png(pred / "slice_001.png", p)                                      # lesion missed entirely
    r = run_cli("segmentation", pred, gt)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    case = res["cases"][0]
    assert case["dice"] == 0.0 and case["hd95"] == "Infinity" and case["empty"] == "prediction"
    assert res["summary"]["foreground"]["hd95"]["n_undefined"] == 1


def test_segmentation_mismatches_are_refused(mask_dirs, tmp_path):
    pred, gt, p, g = mask_dirs
    _nifti(pred / "case01.nii.gz", p[:, :20], (0.8, 0.8, 2.0))
    _nifti(pred / "case02.nii.gz", np.zeros_like(g), (1.0, 1.0, 2.0))
    out = tmp_path / "o.json"
    r = run_cli("segmentation", pred, gt, "--json", out)
    assert r.returncode == 2 and not out.exists()
    assert "case 'case01': prediction shape (20, 20, 10) differs from reference shape (20, 24, 10)" in r.stderr
    assert "case 'case02': prediction voxel spacing 1x1x2 differs from reference spacing 0.8x0.8x2" in r.stderr
    (pred / "case02.nii.gz").unlink()
    r = run_cli("segmentation", pred, gt)
    assert r.returncode == 2 and "no prediction for 1 reference case(s): case02" in r.stderr
    r = run_cli("segmentation", tmp_path / "nowhere", gt)
    assert r.returncode == 2 and "folder not found" in r.stderr


def test_probability_map_is_refused(tmp_path):
    nib = pytest.importorskip("nibabel")
    pred, gt = tmp_path / "p", tmp_path / "g"
    pred.mkdir()
    gt.mkdir()
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 0.7, np.float32), np.eye(4)), str(pred / "a.nii"))
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), str(gt / "a.nii"))
    r = run_cli("segmentation", pred, gt)
    assert r.returncode == 2 and "non-integer values" in r.stderr
