"""Findings a radiologist would sign (issue 20): a normal scan reads normal, nodules are their own
finding, regions need a minimum of lesion to score, partial input is said to be partial."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from ct_synth import SPACING, phantom

from pulmo.ct import AnalysisOptions, analyze, write_outputs
from pulmo.ct.quantify import ScoreParams, quantify
from pulmo.ct.segment.nodules import find_nodules
from pulmo.ct.segment.regions import zones
from shared_data import shared_path

CLASSICAL = AnalysisOptions(shipped_network=False, plugin_models=False)


def _image(hu, spacing=SPACING):
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing([float(s) for s in spacing[::-1]])
    return img


@pytest.fixture(scope="module")
def lidc():
    return analyze(shared_path("ct", "lidc-idri-0001"))


def test_normal_scan_reads_normal(lidc, tmp_path):
    """lidc-idri-0001 has no pneumonia: under 0.2 % involvement, severity 0, flag negative; its
    spiculated left-lower-lobe nodule (LIDC XML: z -125 .. -107.5 mm, columns 297-337, rows
    340-389) is reported as a nodule, not as ground glass or consolidation."""
    q = lidc.quantification
    assert lidc.percent_involved < 0.2 and q["severity"]["value"] == 0 and lidc.pneumonia_flag is False
    assert all(r["score"] == 0 for r in q["regions"])
    assert len(lidc.nodules) == 1
    n = lidc.nodules[0]
    assert n["lung"] == "left" and 15 <= n["diameter_mm"] <= 35 and n["kind"] == "nodule"
    assert -126 <= n["centre_lps_mm"][2] <= -106
    z, y, x = n["centre_index_zyx"]
    assert 297 <= x <= 337 and 340 <= y <= 389
    assert lidc.nodule_mask[z, y, x] == 1 and lidc.lesions[lidc.nodule_mask > 0].max() == 0
    # no bone in the lung mask (vessels with contrast reach 480 HU; cortical bone is denser), and at
    # the apices (the top 20 mm), where the network mistakes chest wall for diseased lung, hardly
    # any soft tissue (it was 2527 voxels, 3 mL, at one slice before the contact rule)
    hu = lidc.volume.array
    assert (hu[lidc.lungs > 0] > 600).sum() <= 5
    top = np.flatnonzero(lidc.lungs.any(axis=(1, 2)))[-8:]
    assert ((hu[top] > -200) & (lidc.lungs[top] > 0)).sum() < 0.05 * (lidc.lungs[top] > 0).sum()
    assert lidc.method["details"]["partial_volume_removed_ml"]["lesion"] > 3   # the domes' blur is gone


def test_normal_scan_key_image_says_so(lidc, tmp_path):
    written = write_outputs(lidc, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "no pneumonia-pattern finding" in html and "Nodules / focal opacities" in html
    assert "nodules.nii.gz" in written.files and "learned model" in lidc.method["lesions"]
    assert "density-based" not in html  # the method that produced the lesions is named


def test_nodule_detector_on_a_phantom():
    """A round solid ball in the lung is a nodule; a flat patch of consolidation is not."""
    hu, truth = phantom(consolidation=False, ggo=False)
    lungs = (truth["right"] * 1 + truth["left"] * 2).astype(np.uint8)
    lesions = np.zeros(hu.shape, np.uint8)
    z, y, x = np.ogrid[:hu.shape[0], :hu.shape[1], :hu.shape[2]]
    sz, sy, sx = SPACING
    cz, cy = 36, 56
    ball = ((z - cz) * sz) ** 2 + ((y - cy) * sy) ** 2 + ((x - 30) * sx) ** 2 <= 12.0 ** 2
    patch = (((z - cz) * sz / 10) ** 2 + ((y - cy) * sy / 35) ** 2 + ((x - 96) * sx / 9) ** 2 <= 1)
    for m in (ball, patch):
        m &= lungs > 0
        hu[m], lesions[m] = 20.0, 2
    nodules, mask = find_nodules(lungs, lesions, hu, SPACING, (0.0, 0.0, 0.0))
    assert len(nodules) == 1 and nodules[0].lung == "right"
    assert abs(nodules[0].diameter_mm - 24.0) < 3.0
    assert mask[ball].all() and not mask[patch].any()


def test_region_scores_need_a_minimum_of_lesion():
    hu, truth = phantom(consolidation=False, ggo=False)
    lungs = (truth["right"] * 1 + truth["left"] * 2).astype(np.uint8)
    regions = zones(lungs)
    vox_ml = float(np.prod(SPACING)) / 1000
    lesions = np.zeros(hu.shape, np.uint8)
    idx = np.argwhere(regions == 2)
    params = ScoreParams()
    small = idx[: int(0.75 * params.region_min_ml / vox_ml)]       # 1.5 mL: under the minimum
    lesions[tuple(small.T)] = 1
    q = quantify(hu, lungs, lesions, regions, "zones", SPACING, params)
    assert q["regions"][1]["lesion_ml"] > 0 and q["regions"][1]["score"] == 0 and q["severity"]["value"] == 0
    big = idx[: int(2.0 * params.region_min_ml / vox_ml)]          # 4 mL
    lesions[tuple(big.T)] = 1
    q = quantify(hu, lungs, lesions, regions, "zones", SPACING, params)
    assert q["regions"][1]["score"] == 1 and q["severity"]["value"] == 1


def test_single_slice_is_partial(tmp_path):
    """One slice: no zone scores, no severity, no coronal image; the slice's percentage is kept."""
    hu, _ = phantom()
    a = analyze(_image(hu[36:37]), CLASSICAL)
    q = a.quantification
    assert q["coverage"]["complete"] is False and q["severity"]["value"] is None
    assert all(r["score"] is None for r in q["regions"])
    assert q["lungs"]["total"]["percent_involved"] > 0 and q["pneumonia"]["basis"] == "slices"
    codes = [w["code"] for w in a.warnings]
    assert "partial_coverage" in codes and "few_slices" in codes
    write_outputs(a, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "No coronal image" in html


def test_cut_scan_is_partial():
    """A slab through mid-lung (apices and bases cut) gets volumes but no region scores."""
    hu, _ = phantom()
    a = analyze(_image(hu[16:56]), CLASSICAL)
    cov = a.quantification["coverage"]
    assert not cov["complete"] and any("apices" in m for m in cov["missing"]) and any("bases" in m for m in cov["missing"])
    assert a.severity["value"] is None and a.pneumonia_flag is not None
    assert "sc_coronal.dcm" not in a.outputs


@pytest.mark.parametrize("tags,low,basis", [
    ({"CTDIvol": 2.0}, True, "CTDIvol"),
    ({"CTDIvol": 8.0, "Exposure": 5}, False, None),                        # CTDIvol wins over Exposure
    ({"XRayTubeCurrent": 502, "ExposureTime": 500, "Exposure": 5}, False, None),  # lidc-idri-0001's tags
    ({"XRayTubeCurrent": 40, "ExposureTime": 500}, True, "tube current x exposure time"),
    ({"Exposure": 5}, False, None),                                         # the Exposure tag alone: not used
])
def test_dose_warning_from_ctdivol_or_current_times_time(tmp_path, phantom_data, tags, low, basis):
    import pydicom
    from ct_synth import write_series

    hu, _ = phantom_data
    write_series(hu, tmp_path / "s")
    for f in (tmp_path / "s").iterdir():
        ds = pydicom.dcmread(f)
        for k in ("CTDIvol", "XRayTubeCurrent", "ExposureTime", "Exposure"):
            if k in ds:
                delattr(ds, k)
        for k, v in tags.items():
            setattr(ds, k, v)
        ds.save_as(f)
    a = analyze(tmp_path / "s", CLASSICAL)
    found = [w for w in a.warnings if w["code"] == "low_dose"]
    assert bool(found) is low
    if low:
        assert found[0]["basis"] == basis and basis.split()[0] in found[0]["message"]
