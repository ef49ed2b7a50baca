"""Accuracy of the shipped model on data it never saw (needs ../shared; skipped otherwise).

Thresholds sit a little below the numbers in the model cards (measured on the full
held-out sets) so that a broken model, a wrong window, flipped labels or a bad resize
fail, while the small subsets used here to keep the test fast still pass.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shared_data import shared_path

from pulmo.ct.evaluate import evaluate_dirs
from pulmo.ct.models import DEFAULT_MODEL_8BIT, load_segmenter
from pulmo.train.seg_eval import segment_folder

from pulmo.train.seg_data import PNG_TEST_START, medseg_names  # numpy/Pillow only, no torch

pytestmark = pytest.mark.slow  # minutes of training / accuracy runs: the full suite only


def _link_subset(tmp_path, base, names, layout):
    for n in names:
        for src_sub, dst_sub, ext in layout:
            src = base / src_sub / f"{n}{ext}"
            if src.is_file():
                dst = tmp_path / dst_sub / f"{n}{ext}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(src)


def test_heldout_png_lungs_and_lesions(tmp_path):
    base = shared_path("seg2d", "covid19-ct-seg-png")
    names = [f"{i:04d}" for i in range(PNG_TEST_START, 1614)]  # the whole held-out block (about 60 s)
    _link_subset(tmp_path, base, names, [("ct", "img", ".png"), ("covid", "gt/covid", ".png"),
                                         ("lungs", "gt/lungs", ".png")])
    segment_folder(tmp_path / "img", tmp_path / "pred")
    res = evaluate_dirs(tmp_path / "pred", tmp_path / "gt")
    assert res["n_images"] == len(names)
    # the per-image lung target on the 214 held-out slices: seg-2d-3.5 0.9707, 3.4 0.9706, 3.3/3.2 0.9705 (seg-2d-3.1
    # 0.9696 and seg-2d-3.0 0.9658 fall short)
    assert res["dice"]["lung"]["mean"] >= 0.97
    assert res["dice"]["lesion"]["pooled"] >= 0.6
    assert res["lesion_in_lung_pct"] >= 98.0


def test_heldout_medseg(tmp_path):
    base = shared_path("seg2d", "medseg-train")
    train, names = medseg_names(base.parents[1])
    assert len(names) == 10 and not set(names) & set(train)
    _link_subset(tmp_path, base, names, [("images", "img", ".jpg"), ("labels", "gt/labels", ".png")])
    segment_folder(tmp_path / "img", tmp_path / "pred")
    res = evaluate_dirs(tmp_path / "pred", tmp_path / "gt")
    assert res["dice"]["lesion"]["pooled"] >= 0.6
    assert res["dice"]["ggo"]["pooled"] >= 0.45
    assert res["dice"]["consolidation"]["pooled"] >= 0.3
    # the whole held-out set: the per-image lesion target, met since seg-2d-3.0 (0.772;
    # seg-2d-2.0 had 0.749; seg-2d-3.1 0.778; seg-2d-3.2 0.783; seg-2d-3.4 0.784; seg-2d-3.5 0.783), and the pooled consolidation Dice,
    # >= 0.58 since seg-2d-3.1 (0.614; seg-2d-3.2 0.606; seg-2d-3.3 0.609; seg-2d-3.4 0.607; seg-2d-3.5 0.613; seg-2d-3.0 0.569)
    assert res["dice"]["lesion"]["mean"] >= 0.75
    assert res["dice"]["consolidation"]["pooled"] >= 0.58


def test_left_right_convention_on_real_ct():
    """Label 1 is the lung on the image's left (patient right in the canonical grid)."""
    import pydicom

    files = sorted(shared_path("ct", "lidc-idri-0001").glob("*.dcm"))
    dss = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
    mid = dss[len(dss) * 3 // 4]
    hu = mid.pixel_array.astype(np.float32) * float(mid.RescaleSlope) + float(mid.RescaleIntercept)
    lungs, lesions = load_segmenter().segment_slices(hu, kind="hu")
    cols = np.arange(hu.shape[1])
    c1 = ((lungs == 1).sum(0) * cols).sum() / max((lungs == 1).sum(), 1)
    c2 = ((lungs == 2).sum(0) * cols).sum() / max((lungs == 2).sum(), 1)
    assert (lungs == 1).sum() > 5000 and (lungs == 2).sum() > 5000
    assert c1 < hu.shape[1] / 2 < c2
    # the threshold lung mask of a healthy slice agrees with the model
    ref = (hu < -500)
    from scipy import ndimage as ndi

    lab, n = ndi.label(ref)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    ref = np.isin(lab, border, invert=True) & ref
    ref = ndi.binary_fill_holes(ndi.binary_closing(ref, iterations=3))
    d = 2 * (ref & (lungs > 0)).sum() / (ref.sum() + (lungs > 0).sum())
    assert d > 0.9
    assert (lesions > 0).sum() < 0.02 * (lungs > 0).sum()


def test_covid_slice_shows_lesions():
    files = sorted(shared_path("ct", "covid-ny-sbu").glob("*/axial/*.dcm"))
    assert files
    from pulmo.train.seg_data import read_dicom_hu  # numpy + pydicom only

    seg = load_segmenter()
    inv = []
    for f in files:
        hu, _ = read_dicom_hu(f)
        lungs, lesions = seg.segment_slices(hu, kind="hu")
        inv.append(((lesions > 0) & (lungs > 0)).sum() / max((lungs > 0).sum(), 1))
    assert max(inv) > 0.05  # at least one slice with clearly visible involvement
    assert float(np.median(inv)) > 0.01


def test_no_consolidation_specks_on_slices_without_consolidation(tmp_path):
    """The 11 MedSeg training slices with no consolidation: the network alone leaves consolidation
    specks, each scoring a per-image consolidation Dice of 0 (seg-2d-3.2: 16-1135 px on 6 of them;
    seg-2d-3.5: 51-371 px, 0.1-1.6 % of the lesion, on 13, 29 and 41); the shipped minor-class rule
    (``pulmo.minor_lesion_share`` 0.02) leaves at most one (3.2: slice 41, 4.9 %; 3.5: none)."""
    pytest.importorskip("onnx")  # the copy without the rule is written with onnx (test extra)
    from pulmo.train.seg import set_minor_lesion_share

    base = shared_path("seg2d", "medseg-train")
    train, _ = medseg_names(base.parents[1])
    names = [n for n in train if not (np.asarray(Image.open(base / "labels" / f"{n}.png")) == 2).any()]
    assert len(names) == 11
    _link_subset(tmp_path, base, names, [("images", "img", ".jpg")])
    no_rule = tmp_path / "no_rule.onnx"
    set_minor_lesion_share(DEFAULT_MODEL_8BIT, no_rule, 0.0)
    specks = {}
    for tag, model in (("shipped", DEFAULT_MODEL_8BIT), ("no_rule", no_rule)):
        segment_folder(tmp_path / "img", tmp_path / tag, seg_model=model)
        specks[tag] = [n for n in names if (np.asarray(Image.open(tmp_path / tag / f"{n}_lesions.png")) == 2).any()]
    assert len(specks["no_rule"]) >= 2  # the rule has specks to remove
    assert len(specks["shipped"]) <= 1 and set(specks["shipped"]) < set(specks["no_rule"])


def test_split_limits_on_the_heldout_medseg_slices(tmp_path):
    """``seg_eval --split-limits`` on the shipped network: the lesion outline stays, a perfect split
    of it would meet the issue's per-image GGO / consolidation targets, a per-image density
    threshold would not reach the consolidation one (lesions.md, "Session 11")."""
    from pulmo.train.seg_eval import heldout_dirs
    from pulmo.train.seg_split_limits import split_limits

    root = shared_path("seg2d", "medseg-train").parents[1]
    d = heldout_dirs(root, tmp_path)["medseg"]
    seg = load_segmenter(DEFAULT_MODEL_8BIT)
    segment_folder(d / "images", d / "pred", seg_model=seg.path)
    r = split_limits(tmp_path, min_share=seg.info.minor_lesion_share, keys=("medseg",))["medseg"]
    net, perfect, oracle = (r[v]["dice"] for v in ("network", "perfect_split", "density_oracle"))
    assert net["lesion"] == perfect["lesion"] == oracle["lesion"]          # the outline never changes
    for c in ("ggo", "consolidation"):
        assert perfect[c]["pooled"] >= max(net[c]["pooled"], oracle[c]["pooled"])
    assert perfect["ggo"]["mean"] >= 0.65 and perfect["consolidation"]["mean"] >= 0.58   # 0.763 / 0.646
    assert oracle["consolidation"]["mean"] < 0.58                                          # 0.433
    assert len(r["oracle_threshold"]) == 10
