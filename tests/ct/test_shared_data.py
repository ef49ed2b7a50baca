"""Real data in ../shared (skipped with a reason when absent)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
from ct_synth import dice
from shared_data import shared_path

from pulmo.cli import main
from pulmo.ct.io import load
from pulmo.ct.segment.lungs import segment_lungs


def test_dice_vs_cip_whole_lung():
    ct = shared_path("ct", "cip", "ct-64.nrrd")
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_path("ct", "cip", "wholeLung-64.nrrd")))) > 0
    vol = load(ct)
    res = segment_lungs(vol.array, vol.spacing)
    assert dice(res.labels > 0, ref) >= 0.97
    # CIP region codes (low byte of lm-64): 9-11 left thirds, 12-14 right thirds
    lm = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_path("ct", "cip", "lm-64.nrrd")))) & 255
    assert ((res.labels == 1) & np.isin(lm, (12, 13, 14))).sum() > 0.97 * np.isin(lm, (12, 13, 14)).sum()
    assert ((res.labels == 2) & np.isin(lm, (9, 10, 11))).sum() > 0.97 * np.isin(lm, (9, 10, 11)).sum()


def test_cip_dicom_matches_nrrd():
    a = load(shared_path("ct", "cip", "ct-64Dicom"))
    b = load(shared_path("ct", "cip", "ct-64.nrrd"))
    assert a.shape == b.shape and np.abs(a.array - b.array).max() <= 1


def test_lungmask_two_slice_counts():
    folder = shared_path("ct", "lungmask-2slice")
    text = (folder / "EXPECTED.md").read_text()
    m = re.search(r"background (\d+), right lung (\d+), left lung (\d+)", text)
    right_ref, left_ref = int(m.group(2)), int(m.group(3))
    vol = load(folder)
    res = segment_lungs(vol.array, vol.spacing)
    assert abs((res.labels == 1).sum() / right_ref - 1) <= 0.03
    assert abs((res.labels == 2).sum() / left_ref - 1) <= 0.03


def test_abdomen_ct_flagged_not_chest():
    from pulmo.ct import AnalysisOptions, analyze

    src = shared_path("ct", "abdomen-ct-totalsegmentator", "example_ct_dicom")  # JPEG 2000 compressed
    res = analyze(src, AnalysisOptions(shipped_network=False, plugin_models=False)).to_dict()
    assert res["assessable"] is False
    assert any(w["code"] == "partial_coverage" and "not a chest CT" in w["message"] for w in res["warnings"])
    assert res["quantification"]["severity"]["value"] is None and res["quantification"]["pneumonia"]["flag"] is None


def test_abdomen_nifti_flagged(tmp_path):
    src = shared_path("ct", "abdomen-ct-totalsegmentator", "example_ct.nii.gz")
    out = tmp_path / "abdn"
    assert main(["ct", "segment", str(src), "-o", str(out), "--no-progress"]) == 0
    assert main(["ct", "analyze", str(src), "-o", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["assessable"] is False


@pytest.mark.slow
def test_lidc_end_to_end(tmp_path):
    src = shared_path("ct", "lidc-idri-0001")
    out = tmp_path / "lidc"
    assert main(["ct", "analyze", str(src), "-o", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    q = res["quantification"]
    assert res["assessable"] is True
    assert 1500 < q["lungs"]["right"]["volume_ml"] < 3000 and 1300 < q["lungs"]["left"]["volume_ml"] < 3000
    assert q["pneumonia"]["flag"] is False  # a nodule case, not pneumonia
    assert (out / "seg.dcm").exists() and (out / "sr_measurements.dcm").exists()


# ----------------------------------------------------------------------------- default pipeline (shipped network)

def _default_lungs(path, monkeypatch):
    """The lung labels `pulmo ct analyze` produces by default (shipped network, learned lung recovery)."""
    from pulmo.ct import AnalysisOptions, analyze

    analysis = analyze(load(path), AnalysisOptions(segment_only=True))
    if analysis.method["learned_model"] is None:
        pytest.skip("the shipped segmentation model is not installed")
    assert analysis.method["source"]["lungs"] == "classical+learned"
    return analysis.lungs


def test_default_pipeline_lung_targets(monkeypatch):
    """The issue's lung targets hold for the default pipeline, not only for the classical mask."""
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_path("ct", "cip", "wholeLung-64.nrrd")))) > 0
    lungs = _default_lungs(shared_path("ct", "cip", "ct-64.nrrd"), monkeypatch)
    assert dice(lungs > 0, ref) >= 0.97
    folder = shared_path("ct", "lungmask-2slice")
    m = re.search(r"background (\d+), right lung (\d+), left lung (\d+)", (folder / "EXPECTED.md").read_text())
    lungs = _default_lungs(folder, monkeypatch)
    assert abs((lungs == 1).sum() / int(m.group(2)) - 1) <= 0.03
    assert abs((lungs == 2).sum() / int(m.group(3)) - 1) <= 0.03


def test_severe_pneumonia_lung_stays_whole(monkeypatch):
    """A COVID-19 slice with diffuse bilateral opacity (covid-ny-sbu A046441): density thresholds keep
    only the aerated anterior lung; the default pipeline recovers the diseased lung of both sides."""
    src = shared_path("ct", "covid-ny-sbu", "A046441", "axial", "19010101-23.dcm")
    vol = load(src)
    classical = segment_lungs(vol.array, vol.spacing).labels
    lungs = _default_lungs(src, monkeypatch)
    assert (lungs > 0).sum() > 3 * (classical > 0).sum()
    assert (lungs == 1).sum() > 0.2 * (lungs > 0).sum() and (lungs == 2).sum() > 0.2 * (lungs > 0).sum()
    assert not (lungs[classical > 0] == 0).any()  # only additions
