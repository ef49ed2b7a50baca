"""Triage and validation commands facing hostile input: outputs that would overwrite inputs,
damaged model files, absurd options, malformed CSV rows, impossible values for trained models."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from pulmo.cli import main
from pulmo.errors import InputError, ModelError
from pulmo.io.tables import read_table
from pulmo.triage.model import DenseLayer, TriageModel
from pulmo.triage.predict import TriagePredictor


def test_train_refuses_a_report_that_would_overwrite_the_model(tmp_path, capsys):
    cohort = tmp_path / "c.csv"
    cohort.write_text("age,time,event\n50,3,1\n60,4,0\n")
    model = tmp_path / "r.json"
    assert main(["triage", "train", str(cohort), "--time", "time", "--event", "event", "-o", str(model),
                 "--report", str(tmp_path / "r")]) == 2
    assert "would overwrite the model file" in capsys.readouterr().err and not model.exists()
    cohort_as_report = tmp_path / "c2.json"
    cohort_as_report.write_text("age,time,event\n50,3,1\n60,4,0\n")
    assert main(["triage", "train", str(cohort_as_report), "--time", "time", "--event", "event",
                 "-o", str(tmp_path / "m"), "--report", str(tmp_path / "c2")]) == 2
    assert "would overwrite the cohort file" in capsys.readouterr().err
    assert cohort_as_report.read_text().startswith("age,time")
    (tmp_path / "d.json").mkdir()
    assert main(["triage", "train", str(cohort), "--time", "time", "--event", "event", "-o", str(tmp_path / "m"),
                 "--report", str(tmp_path / "d")]) == 2
    assert "d.json: is a folder" in capsys.readouterr().err


def test_import_model_never_overwrites_its_source(tmp_path, capsys):
    src = tmp_path / "models.zip"
    src.write_bytes(b"PK\x05\x06" + b"\0" * 18)      # an empty zip: the check comes before it is read
    before = src.read_bytes()
    assert main(["triage", "import-model", str(src), "-o", str(src)]) == 2
    assert "would overwrite" in capsys.readouterr().err and src.read_bytes() == before
    assert main(["triage", "import-model", str(src), "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_damaged_model_file_is_a_clear_error(tmp_path):
    path = tmp_path / "m.pulmo-triage"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.json", "{}")
        zf.writestr("arrays.npz", np.random.default_rng(0).integers(0, 4, 200_000, dtype=np.uint8).tobytes())
    raw = bytearray(path.read_bytes())
    for k in range(3000, 3100):
        raw[k] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="not a valid Pulmo triage model file"):
        TriageModel.load(path)


@pytest.mark.parametrize("opt, msg", [
    (["--imputations", "0"], "argument --imputations: expected a whole number from 1 to 1000, got '0'"),
    (["--imputations", "2000000"], "argument --imputations: expected a whole number from 1 to 1000"),
    (["--imputations", "nan"], "argument --imputations: expected a whole number from 1 to 1000, got 'nan'"),
    (["--seed", "-1"], "argument --seed: expected a whole number from 0 to 4294967295, got '-1'"),
    (["--interval", "inf"], "argument --interval: expected a number greater than 0 and less than 1")])
def test_predict_refuses_absurd_options_before_anything_else(tmp_path, capsys, opt, msg):
    # the options are checked by argparse (pulmo.cli.types.number): exit status 2, the flag and its range named
    with pytest.raises(SystemExit) as exc:
        main(["triage", "predict", str(tmp_path / "none.csv"), "--model", str(tmp_path / "none"), *opt])
    assert exc.value.code == 2 and msg in capsys.readouterr().err


def test_csv_rows_keep_their_file_line_and_malformed_rows_are_refused(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("id,age,nlr\n\n\np1,50,2\np2,60,3\n")
    table, _ = read_table(f)
    assert list(table.index) == [4, 5]                # the lines a user sees in an editor
    for text, msg in (("id,age,nlr\np1,50\n", "line 2 has 2 cells but the header has 3 columns"),
                      ('id,age,nlr\np1,50,2\np2,"60,3\np3,70,4\n', "line 3: a cell runs over several lines"),
                      (",,\n,,\n", "only separators")):
        f.write_text(text)
        with pytest.raises(InputError, match=msg):
            read_table(f)


def _generic_model(rng):
    """A small model over age (a feature Pulmo knows), copd (binary) and crp (unknown to Pulmo)."""
    n = 100
    donors = np.column_stack([rng.uniform(20, 90, n), rng.integers(0, 2, n), rng.uniform(1, 200, n)])
    mean, sd = np.array([donors[:, 0].mean(), 0.0, donors[:, 2].mean()]), np.array([donors[:, 0].std(), 1.0,
                                                                                      donors[:, 2].std()])
    ens = [[DenseLayer(rng.normal(0, 0.3, (3, 4)), np.zeros(4), "tanh"),
            DenseLayer(rng.normal(0, 0.3, (4, 1)), np.zeros(1), "tanh")]]
    return TriageModel(features=["age", "copd", "crp"], mean=mean, sd=sd, ensemble=ens,
                       cox_coefficients=np.array([0.03, 0.5, 0.01]), cox_coefficient_dl=1.0,
                       baseline_times=[5, 10, 30], baseline_cumhaz=[0.03, 0.04, 0.05], donors=donors)


def test_trained_models_check_values_too():
    model = _generic_model(np.random.default_rng(0))
    table = pd.DataFrame({"age": ["-40", "9999", "50", "50", "60"], "copd": ["0", "1", "7", "0", "1"],
                          "crp": ["10", "10", "10", "5000", "20"]}, index=pd.Index([2, 3, 4, 5, 6], name="row"))
    res = TriagePredictor(model).predict(table)
    err, warn = list(res["error"]), list(res["warnings"])
    assert "-40 is impossible for age" in err[0] and "9999 is impossible for age" in err[1]
    assert "copd is 0 (no) or 1 (yes)" in err[2]
    assert err[3] == "" and "outside the training cohort's range" in warn[3]
    assert err[4] == "" and warn[4] == "" and np.isfinite(res["score_final"].iloc[4])


def test_training_refuses_impossible_values_of_known_features():
    from pulmo.triage.training.cohort import cohort_from_table

    table = pd.DataFrame({"age": ["50", "-40", "60"], "t": ["3", "4", "5"], "e": ["1", "0", "1"]},
                         index=pd.Index([2, 3, 4], name="row"))
    with pytest.raises(InputError, match="age must lie in 0-120 years; row 3 has -40"):
        cohort_from_table(table, time="t", event="e", min_events=1)


def test_validate_survival_refuses_horizons_beyond_follow_up(tmp_path, capsys):
    f = tmp_path / "s.csv"
    f.write_text("time,event,risk\n" + "".join(f"{t},{t % 2},{t / 10}\n" for t in range(1, 11)))
    assert main(["validate", "survival", str(f), "--time", "time", "--event", "event", "--risk", "risk",
                 "--horizon", "100"]) == 2
    assert "beyond the longest follow-up" in capsys.readouterr().err


def test_predict_and_score_outputs_never_cost_a_user_s_file(tmp_path, capsys, synthetic_model):
    """Issue 19: -o replaces only Pulmo's own unchanged output (rerun without --force), a file of
    the user's needs --force, the model and the input never; formula-like cells are escaped."""
    model = synthetic_model.save(tmp_path / "m.pulmo-triage")
    data = tmp_path / "in.csv"
    data.write_text("id,xray_abnormality,dyspnea,comorbidities,malignancy,copd,age,nlr,ldh,direct_bilirubin,"
                    "creatine_kinase,note\np1,1,0,1,0,0,60,3.5,250,4,100,=1+1\np2,0,1,0,0,1,70,2.5,300,5,120,-3.5\n")
    out = tmp_path / "out.csv"
    args = ["triage", "predict", str(data), "--model", str(model), "-o", str(out)]
    assert main(args) == 0 and main(args) == 0                        # a rerun needs no --force
    assert [line.split(",")[11] for line in out.read_text().splitlines()[1:]] == ["'=1+1", "-3.5"]
    out.write_text("my annotations\n")
    capsys.readouterr()
    assert main(args) == 2
    assert "was changed since Pulmo wrote it" in capsys.readouterr().err and out.read_text() == "my annotations\n"
    assert main(args + ["--force"]) == 0 and out.read_text().startswith("id,")
    for target in (model, data):
        assert main(args[:-1] + [str(target), "--force"]) == 2
        assert "is an input of this command" in capsys.readouterr().err
    mine = tmp_path / "mine.txt"
    mine.write_text("mine")
    assert main(["triage", "score", "--set", "respiratory_rate=32", "-o", str(mine)]) == 2
    assert "(or pass --force to replace it)" in capsys.readouterr().err and mine.read_text() == "mine"


def test_train_and_import_check_their_outputs_before_any_work(tmp_path, capsys):
    cohort = tmp_path / "c.csv"
    cohort.write_text("age,time,event\n50,3,1\n60,4,0\n")
    afile = tmp_path / "afile"
    afile.write_text("x")
    train = ["triage", "train", str(cohort), "--time", "time", "--event", "event"]
    for extra, msg in ((["-o", str(afile / "m")], "afile is a file, not a folder"),
                       (["-o", str(tmp_path / "m"), "--report", str(afile / "r")], "afile is a file, not a folder"),
                       (["-o", str(afile)], "was not written by Pulmo")):
        assert main(train + extra) == 2
        assert msg in capsys.readouterr().err
    (tmp_path / "link").symlink_to(afile)
    assert main(["triage", "import-model", str(tmp_path / "models.zip"), "-o", str(tmp_path / "link"), "--force"]) == 2
    assert "is a symbolic link" in capsys.readouterr().err and afile.read_text() == "x"
