"""Follow-up comparison (issue 20): pairs built from the real CT lidc-idri-0001 -- the same scan
moved reads stable, inserted opacities of known volume are found in their region within 15 %,
scans of different patients are refused, a failed registration gives no change figure."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from pulmo.ct import analyze
from pulmo.ct.compare import CompareOptions, compare
from pulmo.ct.io.files import volume_from_image
from pulmo.ct.report.compare_out import write_comparison
from pulmo.errors import InputError
from shared_data import shared_path

pytestmark = pytest.mark.slow  # three analyses and registrations of a 133-slice CT


@pytest.fixture(scope="module")
def prior():
    return analyze(shared_path("ct", "lidc-idri-0001"))


def moved(vol, angles_rad, shift_mm):
    """The same CT rotated about its centre and shifted, resampled on its own grid (linear)."""
    img = vol.canonical_image()
    t = sitk.Euler3DTransform()
    t.SetCenter(img.TransformContinuousIndexToPhysicalPoint([s / 2 for s in img.GetSize()]))
    t.SetRotation(*angles_rad)
    t.SetTranslation(shift_mm)
    return volume_from_image(sitk.Resample(img, img, t, sitk.sitkLinear, -1024.0), source="moved")


def insert(hu, lung, centre, radii_mm, target_hu, spacing, rng, edge_mm=2.0):
    """An opacity: an ellipsoid at ``target_hu`` with a blurred edge (logistic, ``edge_mm``) and a
    texture (smoothed noise, SD 40 HU), inside ``lung`` only. Returns its volume in mL (where it
    takes more than half of its contrast)."""
    sp = np.asarray(spacing, float)
    radii = np.asarray(radii_mm, float)
    reach = radii.max() + 4 * edge_mm
    lo = np.maximum(((np.asarray(centre) * sp - reach) / sp).astype(int), 0)
    hi = np.minimum(((np.asarray(centre) * sp + reach) / sp).astype(int) + 1, hu.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    grid = np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, sp)], indexing="ij")
    d = np.sqrt(sum((g / r) ** 2 for g, r in zip(grid, radii))) * radii.mean()
    w = 1.0 / (1.0 + np.exp((d - radii.mean()) / (edge_mm / 2.5))) * lung[box]
    texture = ndi.gaussian_filter(rng.normal(0.0, 1.0, w.shape), (0.5, 1.5, 1.5))
    texture /= texture.std() + 1e-9
    sub = hu[box]
    hu[box] = np.where(w > 0.02, np.maximum(sub, sub + w * (target_hu + 40 * texture - sub)), sub)
    return float((w > 0.5).sum() * sp.prod() / 1000)


def test_same_scan_moved_reads_stable(prior, tmp_path):
    current = moved(prior.volume, (0.03, 0.0, np.radians(4.0)), (7.0, -5.0, 3.0))
    c = compare([prior, current])
    assert c.registration["lung_dice"] > 0.95
    assert c.verdict["overall"] == "stable"
    assert set(c.verdict["regions"].values()) == {"stable"}
    assert abs(c.change["lungs"]["total"]["lesion_ml"]) < c.verdict["thresholds"]["stable_ml"]
    r = c.registration
    assert abs(abs(r["rotation_deg"][2]) - 4.0) < 1.0  # the registration found the rotation


def test_inserted_opacities_are_measured_in_their_regions(prior, tmp_path):
    vol = prior.volume
    rng = np.random.default_rng(0)
    hu = vol.array.copy()
    sp = vol.spacing
    names = {r["label"]: r["name"] for r in prior.quantification["regions"]}
    inserted = {}
    # right lung, lower fifth: a round patch of ground glass; left lung, 60th percentile of its height:
    # consolidation (-50 HU) inside a halo of ground glass, as pneumonia shows it
    for side, z_pct, layers in ((1, 20, [((14.0, 14.0, 14.0), -600.0)]),
                                (2, 60, [((14.0, 13.0, 30.0), -600.0), ((9.0, 8.0, 24.0), -50.0)])):
        lung = prior.lungs == side
        pts = np.argwhere(lung)
        zc = np.percentile(pts[:, 0], z_pct)
        cand = pts[np.abs(pts[:, 0] - zc) < 2]
        depth = ndi.distance_transform_edt(lung, sampling=sp)
        centre = cand[np.argmax(depth[tuple(cand.T)])]
        region = names[int(prior.regions[tuple(centre)])]
        volumes = [insert(hu, lung, centre, radii, target, sp, rng, edge_mm=3.0) for radii, target in layers]
        inserted[region] = volumes[0]          # the outer layer's volume: the whole opacity
    current = copy.copy(vol)
    current.array, current.warnings, current.source = hu, [], "inserted"
    c = compare([prior, current])
    assert c.verdict["overall"] == "progression"
    for region, ml in inserted.items():
        got = c.change["regions"][region]["lesion_ml"]
        assert abs(got - ml) <= 0.15 * ml, (region, got, ml)
        assert c.verdict["regions"][region] == "progression"
    consolidated = [r for r in inserted if r.startswith("left")][0]
    assert c.change["regions"][consolidated]["consolidation_ml"] > 1.0
    others = [r for r in c.change["regions"] if r not in inserted]
    assert all(abs(c.change["regions"][r]["lesion_ml"]) < 2.0 for r in others)
    new = c.to_dict()["transitions_ml"]["new lesion (none before)"]
    assert new >= 0.8 * sum(inserted.values())
    files = write_comparison(c, tmp_path / "cmp")
    assert {"comparison.json", "change_map.nii.gz", "compare.html", "sr_change.dcm"} <= set(files)
    d = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert len(d["time_points"]) == 2 and set(d["change"]["lungs"]) == {"right", "left", "total"}
    for part in ("lesion_ml", "percent_involved", "ggo_ml", "consolidation_ml"):
        assert part in d["change"]["lungs"]["total"]
    cm = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "cmp" / "change_map.nii.gz")))
    assert cm.shape == prior.volume.shape and (cm == 1).sum() > 0
    html = (tmp_path / "cmp" / "compare.html").read_text()
    assert "<svg" in html and "progression" in html and "research tool" in html.lower()


def _series(folder, patient_id, date, src):
    folder.mkdir()
    for f in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.PatientID, ds.StudyDate = patient_id, date
        ds.save_as(folder / f.name)
    return folder


def test_different_patients_refused_unless_allowed(prior, tmp_path):
    src = shared_path("ct", "lidc-idri-0001")
    a = _series(tmp_path / "a", "P-1", "20200101", src)
    b = _series(tmp_path / "b", "P-2", "20200301", src)
    with pytest.raises(InputError, match="different patients") as err:
        compare([a, b])
    assert err.value.code == "different_patients"
    c = compare([b, a], CompareOptions(allow_different_patients=True))
    codes = [w["code"] for w in c.warnings]
    assert "different_patients" in codes and "reordered" in codes   # put in date order, said so
    assert c.prior.date == "2020-01-01" and c.current.date == "2020-03-01"


def test_failed_registration_gives_no_change(prior):
    """The current 'scan' is the prior turned upside down: the lungs cannot be overlaid."""
    flipped = copy.copy(prior.volume)
    flipped.array = np.ascontiguousarray(prior.volume.array[::-1, ::-1])
    flipped.warnings, flipped.source = [], "flipped"
    with pytest.raises(InputError, match="registration .* failed") as err:
        compare([prior, flipped], CompareOptions(min_lung_dice=0.97))
    assert err.value.code == "registration_failed"


def test_needs_two_scans(prior):
    with pytest.raises(InputError, match="at least two"):
        compare([prior])
