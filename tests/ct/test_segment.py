"""Segmentation, lesions, regions and quantification on synthetic phantoms."""

from __future__ import annotations

import numpy as np
import pytest
from ct_synth import SPACING, dice, phantom

from pulmo.ct.quantify import ScoreParams, pan_bin, quantify
from pulmo.ct.segment.lesions import LesionParams, segment_lesions
from pulmo.ct.segment.lungs import segment_lungs
from pulmo.ct.segment.regions import zones


@pytest.fixture(scope="module")
def seg(phantom_data):
    hu, truth = phantom_data
    return segment_lungs(hu, SPACING)


def test_lungs_split_right_left(seg, phantom_data):
    _, truth = phantom_data
    # right lung = patient right = low x index in the canonical LPS grid
    assert dice(seg.labels == 1, truth["right"]) > 0.97
    assert dice(seg.labels == 2, truth["left"]) > 0.97


def test_trachea_excluded(seg, phantom_data):
    _, truth = phantom_data
    assert seg.info["trachea"]["carina_found"]
    outside = truth["trachea"] & ~(truth["right"] | truth["left"])  # trachea + main bronchi up to the hilum
    assert outside.sum() > 100
    assert ((seg.labels > 0) & outside).sum() < 0.05 * outside.sum()


def test_consolidation_stays_in_lung(seg, phantom_data):
    _, truth = phantom_data
    assert ((seg.labels == 2) & truth["cons"]).sum() > 0.95 * truth["cons"].sum()


def test_lungs_touching_are_cut():
    hu, truth = phantom(ggo=False, consolidation=False)
    # bridge the lungs with air across the midline (anterior junction)
    z, y, x = np.indices(hu.shape)
    bridge = (np.abs(y - 56) <= 2) & (np.abs(z - 28) <= 6) & (x > 40) & (x < 88)
    hu[bridge] = -850
    res = segment_lungs(hu, SPACING)
    assert res.info["split"] == "midline cut"
    assert dice(res.labels == 1, truth["right"]) > 0.95 and dice(res.labels == 2, truth["left"]) > 0.95


def test_few_slices_slice_by_slice(phantom_data):
    hu, truth = phantom_data
    res = segment_lungs(hu[30:32], SPACING)
    assert res.info["few_slices"]
    assert dice(res.labels == 1, truth["right"][30:32]) > 0.95


def test_lesions_ggo_consolidation_vessels(seg, phantom_data):
    hu, truth = phantom_data
    les = segment_lesions(hu, seg.labels, SPACING)
    assert dice(les == 1, truth["ggo"]) > 0.9
    assert dice(les == 2, truth["cons"]) > 0.9
    other = (les > 0) & ~(truth["ggo"] | truth["cons"])
    assert other.sum() < 0.05 * (les > 0).sum()  # vessels are not lesions


def test_lesion_bands_configurable(seg, phantom_data):
    hu, truth = phantom_data
    les = segment_lesions(hu, seg.labels, SPACING, LesionParams(ggo_hu=(-750, -600)))
    assert (les == 1).sum() < 0.1 * truth["ggo"].sum()  # -550 HU is now outside the GGO band


def test_zones_are_thirds_by_height():
    lungs = np.zeros((30, 4, 4), np.uint8)
    lungs[3:27, :, :2] = 1
    lungs[0:30, :, 2:] = 2
    z = zones(lungs)
    assert set(np.unique(z[27:, :, :2])) == {0}
    assert (z[19:27, 0, 0] == 1).all() and (z[11:19, 0, 0] == 2).all() and (z[3:11, 0, 0] == 3).all()
    assert (z[20:30, 0, 3] == 4).all() and (z[10:20, 0, 3] == 5).all() and (z[0:10, 0, 3] == 6).all()


def test_quantify_volumes_and_score(seg, phantom_data):
    hu, truth = phantom_data
    les = segment_lesions(hu, seg.labels, SPACING)
    q = quantify(hu, seg.labels, les, zones(seg.labels), "zones", SPACING)
    vox_ml = np.prod(SPACING) / 1000
    assert q["lungs"]["right"]["volume_ml"] == pytest.approx((seg.labels == 1).sum() * vox_ml, abs=0.01)
    assert q["lungs"]["right"]["ggo_ml"] == pytest.approx(truth["ggo"].sum() * vox_ml, rel=0.1)
    assert q["lungs"]["left"]["consolidation_ml"] == pytest.approx(truth["cons"].sum() * vox_ml, rel=0.1)
    assert q["lungs"]["left"]["mean_lesion_hu"] == pytest.approx(25, abs=15)
    assert sum(r["volume_ml"] for r in q["regions"]) == pytest.approx(q["lungs"]["total"]["volume_ml"], abs=0.1)
    assert q["severity"]["kind"] == "zone-based" and q["severity"]["max"] == 30
    assert q["severity"]["value"] == sum(r["score"] for r in q["regions"])
    assert sum(q["lungs"]["total"]["hu_histogram"]) == (seg.labels > 0).sum()
    threshold = ScoreParams().pneumonia_threshold_pct
    assert q["pneumonia"]["threshold"] == threshold and q["pneumonia"]["flag"] == (q["pneumonia"]["score"] >= threshold)


@pytest.mark.parametrize("pct,score", [(0, 0), (3, 1), (5, 2), (25, 2), (30, 3), (50, 4), (75, 4), (80, 5)])
def test_pan_bins(pct, score):
    assert pan_bin(pct) == score
