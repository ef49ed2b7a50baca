"""The published model, imported without TensorFlow, reproduces the authors' outputs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest

from shared_data import shared_path
from pulmo.errors import ModelError
from pulmo.io.tf_checkpoint import Checkpoint, crc32c
from pulmo.triage import TriagePredictor
from pulmo.triage.published import import_published_model

OUTPUTS = ["score_dl", "score_final", "prob_critical_5d", "prob_critical_10d", "prob_critical_30d"]


def reference():
    return pd.read_csv(shared_path("triage", "published-2020", "reference_20.csv"))


def test_crc32c_known_answer():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


def test_reference_20_matches_to_1e6(published_model):
    ref = reference()
    out = TriagePredictor(published_model).predict(ref.iloc[:, :11])
    for col in OUTPUTS:
        np.testing.assert_allclose(out[col].to_numpy(), ref[col].to_numpy(), atol=1e-6, rtol=0)
    assert (out["risk_group"] == ref["risk_group"]).all()
    assert (out["error"] == "").all()
    assert (out["imputed"] == "").all()


def test_readable_column_names_give_same_result(published_model):
    ref = reference()
    renamed = ref.iloc[:, :11].rename(columns={
        "patient_ID": "patient_id", "X.ray.abnormality": "xray_abnormality", "Dyspnea": "dyspnea",
        "Number.of.comorbidities": "comorbidities", "Malignancy": "malignancy", "COPD": "copd",
        "Age": "age", "NLR": "nlr", "Lactate.dehydrogenase": "ldh",
        "Direct.bilirubin": "direct_bilirubin", "Creatine.kinase": "creatine_kinase"})
    out = TriagePredictor(published_model).predict(renamed)
    np.testing.assert_allclose(out["prob_critical_30d"], ref["prob_critical_30d"], atol=1e-6, rtol=0)


def test_checkpoint_reader_shapes_and_training_state(tmp_path):
    with zipfile.ZipFile(shared_path("triage", "published-2020", "models.zip")) as zf:
        zf.extractall(tmp_path)
    ckpt = Checkpoint(tmp_path / "models" / "fold_0" / "model")
    names = ckpt.names()
    assert {"layer1/weights", "layer3/biases", "global_step", "layer1/weights/Adam"} <= set(names)
    assert ckpt.tensor("layer1/weights").shape == (10, 27)
    assert ckpt.tensor("layer2/weights").shape == (27, 12)
    assert ckpt.tensor("layer3/biases").shape == (1,)
    assert ckpt.tensor("layer1/weights").dtype == np.float32


def test_corrupt_data_file_is_detected(tmp_path):
    with zipfile.ZipFile(shared_path("triage", "published-2020", "models.zip")) as zf:
        zf.extractall(tmp_path)
    data = tmp_path / "models" / "fold_2" / "model.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="checksum"):
        import_published_model(tmp_path / "models")


def test_corrupt_index_is_detected(tmp_path):
    with zipfile.ZipFile(shared_path("triage", "published-2020", "models.zip")) as zf:
        zf.extractall(tmp_path)
    index = tmp_path / "models" / "fold_1" / "model.index"
    raw = bytearray(index.read_bytes())
    raw[40] ^= 0x01
    index.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="corrupt|checksum"):
        import_published_model(tmp_path / "models")


def test_truncated_index_and_missing_shard(tmp_path):
    with zipfile.ZipFile(shared_path("triage", "published-2020", "models.zip")) as zf:
        zf.extractall(tmp_path)
    (tmp_path / "models" / "fold_3" / "model.data-00000-of-00001").unlink()
    with pytest.raises(ModelError, match="shard"):
        import_published_model(tmp_path / "models")
    idx = tmp_path / "models" / "fold_0" / "model.index"
    idx.write_bytes(idx.read_bytes()[:30])
    with pytest.raises(ModelError):
        import_published_model(tmp_path / "models")


def test_zip_with_path_traversal_is_refused(tmp_path):
    bad = tmp_path / "evil.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../../outside/model.index", b"x")
    with pytest.raises(ModelError, match="unsafe path"):
        import_published_model(bad)
    assert not (tmp_path.parent / "outside").exists()


def test_not_a_model_archive(tmp_path):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ModelError, match="fold_0"):
        import_published_model(other)
    text = tmp_path / "notzip.zip"
    text.write_text("not a zip")
    with pytest.raises(ModelError, match="models.zip"):
        import_published_model(text)


def test_readme_examples_imputation_matches_r_distribution(published_model):
    """R mice (one draw per seed) gives patient 6 a 5-day probability of 1.5%-6.8%,
    median 1.7% across seeds; our M-imputation median and 90% interval agree."""
    ex = pd.read_csv(shared_path("triage", "published-2020", "readme_examples_r_mice.csv"))
    cols = ["patient_ID", "X.ray.abnormality", "Dyspnea", "Number.of.comorbidities", "Malignancy",
            "COPD", "Age", "NLR", "Lactate.dehydrogenase", "Direct.bilirubin", "Creatine.kinase"]
    inp = ex[cols].copy().astype(object)
    for i, cells in enumerate(ex["imputed_cells"]):
        if cells != "none":
            for c in cells.split(";"):
                inp.loc[i, c] = None
    out = TriagePredictor(published_model, n_imputations=200).predict(inp)
    # Row 1 is complete: identical to R.
    assert out.loc[0, "prob_critical_5d"] == pytest.approx(ex.loc[0, "prob_critical_5d"], abs=1e-6)
    assert out.loc[0, "imputed"] == ""
    p6 = out.loc[1]
    assert p6["imputed"] == "xray_abnormality;creatine_kinase"
    assert 0.015 <= p6["prob_critical_5d"] <= 0.02  # median ~1.7%
    assert p6["prob_critical_5d_low"] >= 0.014 and p6["prob_critical_5d_high"] <= 0.07
    assert p6["prob_critical_5d_high"] > 0.05  # the upper mode R also reaches (6.6%)
    # R's own single draw lies inside our 90% interval.
    for i in range(3):
        assert out.loc[i, "prob_critical_5d_low"] - 1e-9 <= ex.loc[i, "prob_critical_5d"] \
            <= out.loc[i, "prob_critical_5d_high"] + 1e-9


def test_cli_import_and_predict(tmp_path):
    zip_path = shared_path("triage", "published-2020", "models.zip")
    model = tmp_path / "pub.pulmo-triage"
    r = subprocess.run([sys.executable, "-m", "pulmo", "triage", "import-model", str(zip_path), "-o", str(model)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ref_csv = shared_path("triage", "published-2020", "reference_20.csv")
    out = tmp_path / "out.csv"
    r = subprocess.run([sys.executable, "-m", "pulmo", "triage", "predict", str(ref_csv), "--model", str(model),
                        "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = pd.read_csv(out)
    ref = reference()
    np.testing.assert_allclose(got["prob_critical_5d"], ref["prob_critical_5d"], atol=1e-6, rtol=0)
    # The reference file already has result columns: they are kept, renamed.
    assert "input_risk_group" in got.columns
    assert (got["risk_group"] == ref["risk_group"]).all()
    info = subprocess.run([sys.executable, "-m", "pulmo", "triage", "model-info", str(model)],
                          capture_output=True, text=True)
    assert info.returncode == 0 and '"donors": 1590' in info.stdout
