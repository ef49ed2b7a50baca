"""How much better could the ground-glass / consolidation split be, with the lesion outline kept?

A diagnostic for the model cards (``python -m pulmo.train.seg_eval --split-limits``): it takes
the network's predicted lesion extent (label > 0) on 2D slices and relabels, inside it, which
pixels are ground-glass opacity (1) and which consolidation (2) in two ways that use the truth,
so their scores are upper bounds, not methods:

* **perfect split** (:func:`perfect_split`): each predicted lesion pixel takes the true class,
  or, where the truth is background, the class of the nearest true lesion pixel. No split of
  this outline can score higher; the gap to the network is what the split loses, and the gap
  to 1 is what the outline loses.
* **oracle density threshold** (:func:`threshold_split` at :func:`best_threshold`): grey level
  (Gaussian-smoothed, sigma in image pixels) at or above a threshold is consolidation, with the
  threshold chosen *per image* to fit that image's true labels best. It shows how far a
  density rule -- the physical definition of the two patterns -- could go if the threshold were
  known for every image; a network or a rule that must find the threshold itself can be
  expected to stay below it.

Pixels, not millimetres: every size here is in pixels of the image as stored. numpy / scipy.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from pulmo.ct.evaluate import dice, evaluate_dirs
from pulmo.ct.models.runtime import merge_minor_lesion_class
from pulmo.errors import InputError

THRESHOLDS = np.arange(0, 257, 2)  # grey levels tried by best_threshold (256: all ground glass)
VARIANTS = ("network", "perfect_split", "density_oracle")


def _check(*arrays) -> None:
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"expected 2D arrays of one shape, got {[a.shape for a in arrays]}")


def perfect_split(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``pred``'s lesion extent (label > 0), each pixel labelled with the true class (1/2), or the
    class of the nearest true lesion pixel (Euclidean, pixels) where the truth is background;
    ground glass everywhere when the truth has no lesion. uint8, 0 outside the extent."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    _check(pred, truth)
    extent = pred > 0
    if not (truth > 0).any():
        return extent.astype(np.uint8)
    idx = ndi.distance_transform_edt(truth == 0, return_distances=False, return_indices=True)
    nearest = truth[idx[0], idx[1]]
    return np.where(extent, nearest, 0).astype(np.uint8)


def threshold_split(image: np.ndarray, extent: np.ndarray, threshold: float, sigma: float = 1.0,
                    min_share: float = 0.0) -> np.ndarray:
    """Inside ``extent`` (bool, or labels > 0): consolidation (2) where the grey level of ``image``,
    smoothed by a Gaussian of ``sigma`` pixels, is >= ``threshold``, else ground glass (1); then
    :func:`~pulmo.ct.models.runtime.merge_minor_lesion_class` at ``min_share`` (as the runtime does)."""
    image, extent = np.asarray(image, np.float32), np.asarray(extent) > 0
    _check(image, extent)
    g = ndi.gaussian_filter(image, sigma) if sigma > 0 else image
    out = np.where(extent, np.where(g >= threshold, 2, 1), 0).astype(np.uint8)
    return merge_minor_lesion_class(out, min_share) if min_share > 0 else out


def best_threshold(image: np.ndarray, truth: np.ndarray, sigma: float = 1.0, min_share: float = 0.0,
                   thresholds=THRESHOLDS) -> float:
    """The threshold of :func:`threshold_split` that, applied inside the *true* lesion extent,
    maximises the mean of the ground-glass and consolidation Dice against ``truth`` (classes in
    neither are left out of the mean). Uses the answer: an oracle, for upper bounds only. The
    lowest such threshold on ties; NaN when ``truth`` has no lesion."""
    image, truth = np.asarray(image, np.float32), np.asarray(truth)
    _check(image, truth)
    if not (truth > 0).any():
        return math.nan
    best, best_t = -1.0, math.nan
    for t in thresholds:
        s = threshold_split(image, truth > 0, float(t), sigma, min_share)
        score = np.nanmean([dice(s == c, truth == c) for c in (1, 2)])
        if score > best + 1e-12:
            best, best_t = score, float(t)
    return best_t


def write_variants(set_dir: Path, min_share: float = 0.0, sigma: float = 1.0) -> dict:
    """For a folder laid out by :func:`pulmo.train.seg_eval.heldout_dirs` and already segmented
    (``images/``, ``pred/<name>_lesions.png``, ``gt/labels/<name>.png``), write
    ``pred_perfect_split/`` and ``pred_density_oracle/`` (lesions relabelled as above, lungs
    copied) and return the oracle threshold of each image. Images are read as Pulmo reads them.
    Missing images, predictions or labels raise :class:`InputError`."""
    from PIL import Image

    from pulmo.ct.io.grey_image import read_gray_image

    set_dir = Path(set_dir)
    pred_dir, gt_dir = set_dir / "pred", set_dir / "gt" / "labels"
    images = sorted(p for p in (set_dir / "images").iterdir() if p.is_file())
    if not images:
        raise InputError(f"no images in {set_dir / 'images'}")
    outs = {v: set_dir / f"pred_{v}" for v in VARIANTS[1:]}
    for d in outs.values():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    thresholds = {}
    for f in images:
        pred_path, gt_path = pred_dir / f"{f.stem}_lesions.png", gt_dir / f"{f.stem}.png"
        if not pred_path.is_file() or not gt_path.is_file():
            raise InputError(f"{pred_path if not pred_path.is_file() else gt_path} missing "
                             "(run the evaluation into this 'work' folder first)")
        img = read_gray_image(f)
        pred, truth = np.asarray(Image.open(pred_path)), np.asarray(Image.open(gt_path))
        t = best_threshold(img, truth, sigma, min_share)
        thresholds[f.stem] = t
        variants = {"perfect_split": perfect_split(pred, truth),
                    "density_oracle": threshold_split(img, pred > 0, 256.0 if math.isnan(t) else t, sigma, min_share)}
        for v, lab in variants.items():
            Image.fromarray(lab).save(outs[v] / pred_path.name)
            lungs = pred_dir / f"{f.stem}_lungs.png"
            if lungs.is_file():
                shutil.copyfile(lungs, outs[v] / lungs.name)
    return thresholds


def split_limits(work: Path, min_share: float = 0.0, keys=("medseg", "medseg_train")) -> dict:
    """Score the network and both upper bounds on each 3-class set of ``work`` that has been
    segmented (``medseg``; ``medseg_train`` when the training slices were evaluated too): per set
    and variant, the :func:`pulmo.ct.evaluate.evaluate_dirs` means (``dice``) and per-image rows.
    Writes ``<set>_split_limits.json``. A ``work`` folder without ``medseg/pred`` raises
    :class:`InputError`."""
    work = Path(work)
    out = {}
    for key in keys:
        set_dir = work / key
        if not (set_dir / "pred").is_dir():
            if key == "medseg":
                raise InputError(f"{set_dir / 'pred'} missing (run the evaluation first)")
            continue
        thresholds = write_variants(set_dir, min_share)
        res = {v: evaluate_dirs(set_dir / ("pred" if v == "network" else f"pred_{v}"), set_dir / "gt")
               for v in VARIANTS}
        out[key] = {v: {"dice": r["dice"], "per_image": r["per_image"]} for v, r in res.items()}
        out[key]["oracle_threshold"] = thresholds
        (work / f"{key}_split_limits.json").write_text(json.dumps(out[key], indent=1, default=str))
    return out
