"""``pulmo triage predict`` on well-formed and hostile CSV files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from synthetic_triage import make_synthetic_model

REPO = Path(__file__).resolve().parents[2]
HEADER = "patient_id,xray_abnormality,dyspnea,comorbidities,malignancy,copd,age,nlr,ldh,direct_bilirubin,creatine_kinase"
GOOD = "p1,1,0,1,0,0,61,4.2,250,3.4,90"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_synthetic_model().save(tmp_path_factory.mktemp("m") / "syn.pulmo-triage")


def run(*args):
    r = subprocess.run([sys.executable, "-m", "pulmo", "triage", "predict", *map(str, args)],
                       capture_output=True, text=True, cwd=REPO)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def write(tmp_path, text, name="in.csv", encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def test_good_file_exit_0(tmp_path, model):
    out = tmp_path / "out.csv"
    r = run(write(tmp_path, f"{HEADER}\n{GOOD}\n"), "--model", model, "-o", out)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out)
    assert df.loc[0, "risk_group"] in {"low", "medium", "high"}


def test_partial_failure_scores_valid_rows_and_exit_1(tmp_path, model):
    text = "\n".join([HEADER, GOOD, "p2,1,0,1,0,0,400,4.2,250,3.4,90", "p3,1,0,1,0,0,61,abc,250,3.4,90",
                      "p4,1,0,1,0,0,55,4.2,-3,3.4,90", GOOD.replace("p1", "p5")]) + "\n"
    out = tmp_path / "out.csv"
    r = run(write(tmp_path, text), "--model", model, "-o", out)
    assert r.returncode == 1
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df["error"] == "") == [True, False, False, False, True]
    assert "row 3, column 'age'" in df.loc[1, "error"]
    assert "row 4, column 'nlr'" in df.loc[2, "error"]
    assert "row 5, column 'ldh'" in df.loc[3, "error"]
    assert "row 3, column 'age'" in r.stderr


def test_strict_writes_nothing(tmp_path, model):
    out = tmp_path / "out.csv"
    r = run(write(tmp_path, f"{HEADER}\n{GOOD}\np2,1,0,1,0,0,400,4.2,250,3.4,90\n"), "--model", model,
            "-o", out, "--strict")
    assert r.returncode == 1 and not out.exists()
    assert "nothing written" in r.stderr


def test_duplicate_ids(tmp_path, model):
    out = tmp_path / "out.csv"
    r = run(write(tmp_path, f"{HEADER}\n{GOOD}\n{GOOD}\n"), "--model", model, "-o", out)
    assert r.returncode == 1 and "IDs must be unique" in r.stderr


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("   \n\n", "empty"),
    (HEADER + "\n", "no patient rows"),
    (HEADER.replace("dyspnea", "dyspnee") + "\n" + GOOD + "\n", "missing required column"),
    ("\x00\x01\x02binary", "binary"),
])
def test_unusable_files_exit_2(tmp_path, model, content, message):
    r = run(write(tmp_path, content), "--model", model, "-o", tmp_path / "o.csv")
    assert r.returncode == 2 and message in r.stderr
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "cp1252"])
def test_encodings_and_semicolons(tmp_path, model, encoding):
    text = (HEADER + ",comment\n" + GOOD + ",Patient from Zürich\n").replace(",", ";").replace("4.2", "4,2")
    out = tmp_path / "out.csv"
    r = run(write(tmp_path, text, encoding=encoding), "--model", model, "-o", out)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out)
    assert df.loc[0, "comment"] == "Patient from Zürich"
    assert "columns not used by the model (kept in the output): comment" in r.stderr
    assert df.loc[0, "nlr"] == 4.2


def test_missing_model_and_input(tmp_path, model):
    r = run(write(tmp_path, f"{HEADER}\n{GOOD}\n"), "--model", tmp_path / "none.pulmo-triage")
    assert r.returncode == 2 and "model file not found" in r.stderr
    r = run(tmp_path / "nope.csv", "--model", model)
    assert r.returncode == 2 and "file not found" in r.stderr


def test_mixed_units_example(tmp_path, model):
    out = tmp_path / "out.csv"
    r = run(REPO / "examples" / "patients_mixed_units.csv", "--model", model, "-o", out)
    assert r.returncode == 1  # mix-04 has age 400
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df["error"] == "") == [True, True, True, False]
    assert "column 'Age'" in df.loc[3, "error"]


def test_json_output_and_explain(tmp_path, model):
    out = tmp_path / "out.json"
    r = run(write(tmp_path, f"{HEADER}\n{GOOD}\n"), "--model", model, "-o", out, "--json", "--explain")
    assert r.returncode == 0, r.stderr
    df = pd.read_json(out)
    assert "contrib_age" in df.columns
