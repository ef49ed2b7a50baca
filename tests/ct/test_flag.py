"""Pneumonia flag on dense (expiratory / diffusely dense) lungs: indeterminate, never positive from density alone."""

from __future__ import annotations

import json

import numpy as np
from ct_synth import SPACING, phantom, write_series

from pulmo.cli import main
from pulmo.ct import AnalysisOptions, analyze
from pulmo.ct.quantify import qualify_flag


def _dense_phantom():
    hu, truth = phantom(seed=3, consolidation=False, ggo=False)
    lung = truth["right"] | truth["left"]
    # expiratory scan: the whole lung reads about -620 HU (inside the ground-glass band)
    hu[lung] += 230.0
    return hu


def test_dense_lungs_flag_indeterminate(tmp_path, capsys):
    src = tmp_path / "dense"
    write_series(_dense_phantom(), src, SPACING)
    out = tmp_path / "out"
    assert main(["ct", "analyze", str(src), "-o", str(out), "--no-dicom", "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    codes = [w["code"] for w in res["warnings"]]
    pn = res["quantification"]["pneumonia"]
    assert "dense_lungs" in codes
    assert pn["score"] >= pn["threshold"]  # density alone would have flagged it
    assert pn["flag"] == "indeterminate" and "dense_lungs" in pn["reason"]
    assert "INDETERMINATE" in (out / "report.html").read_text()
    assert "INDETERMINATE" in capsys.readouterr().out


def test_normal_phantom_flag_still_boolean(phantom_dicom):
    res = analyze(phantom_dicom, AnalysisOptions(shipped_network=False, plugin_models=False)).to_dict()
    assert "dense_lungs" not in [w["code"] for w in res["warnings"]]
    assert res["quantification"]["pneumonia"]["flag"] in (True, False)


def test_qualify_flag_rules():
    dense = [{"code": "dense_lungs", "message": "median lung density -620 HU"}]

    def q(flag):
        return {"pneumonia": {"flag": flag, "score": 40.0, "threshold": 10.0}}

    assert qualify_flag(q(True), dense, density_based=True)["pneumonia"]["flag"] == "indeterminate"
    assert qualify_flag(q(False), dense, density_based=True)["pneumonia"]["flag"] is False  # negative stays
    assert qualify_flag(q(True), dense, density_based=False)["pneumonia"]["flag"] is True  # lesion model
    assert qualify_flag(q(True), [], density_based=True)["pneumonia"]["flag"] is True
    assert qualify_flag(q(None), dense, density_based=True)["pneumonia"]["flag"] is None  # not assessable
    assert np.isclose(q(True)["pneumonia"]["score"], 40.0)
