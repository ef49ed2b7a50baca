"""Overlap and surface-distance metrics for segmentation masks (2-D or 3-D).

Definitions (``P`` prediction, ``G`` ground truth, both boolean masks of one label)
----------------------------------------------------------------------------------
* **Dice** ``2|P n G| / (|P| + |G|)``; **IoU** (Jaccard) ``|P n G| / |P u G|``.
* **Surface**: the voxels of a mask with at least one of their 2*ndim face neighbours
  outside it (voxels on the image border count as surface). Distances between surface
  voxels are Euclidean in physical units (the voxel ``spacing``, e.g. mm), computed with
  scipy's exact Euclidean distance transform.
* **HD95**: the 95th percentile (linear interpolation) of the pooled distances from each
  surface voxel of P to the surface of G and from each surface voxel of G to the surface
  of P (the definition of ``medpy.metric.hd95``). **Hausdorff**: their maximum.
* **Surface Dice** at tolerance ``tau`` (Nikolov et al. 2021): the fraction of surface
  voxels of both masks that lie within ``tau`` of the other surface,
  ``(#{p: d(p, dG) <= tau} + #{g: d(g, dP) <= tau}) / (|dP| + |dG|)``. Every surface voxel
  counts equally (Nikolov et al. weight by surface-element area; results differ slightly
  on anisotropic grids).

Empty masks
-----------
* Both empty (the structure is absent and none was predicted): Dice = IoU = surface Dice
  = 1 and HD95 = Hausdorff = 0; ``empty = "both"``.
* Exactly one empty: Dice = IoU = surface Dice = 0 and HD95 = Hausdorff = +inf (undefined);
  ``empty = "prediction"`` or ``"reference"``.
* :func:`aggregate` averages every case for Dice, IoU and surface Dice; for HD95 and
  Hausdorff it summarises the finite values and reports ``n_undefined`` separately.

Uncertainty of a mean over cases
--------------------------------
:func:`mean_ci` (and :func:`aggregate`'s ``ci_low`` / ``ci_high``): a percentile bootstrap
over cases (scipy.stats.bootstrap, 4000 resamples, fixed seed, so reports are reproducible).
With 10 held-out slices a mean Dice of 0.59 typically carries a 95 % interval about
+-0.1 wide; say so when comparing models or targets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from pulmo.errors import InputError

__all__ = ["SegmentationMetrics", "segmentation_metrics", "overlap", "dice_from_overlap", "aggregate", "mean_ci",
           "METRICS"]

#: Per-case metric names, in report order.
METRICS = ("dice", "iou", "hd95", "hausdorff", "surface_dice")


@dataclass(frozen=True)
class SegmentationMetrics:
    dice: float
    iou: float
    hd95: float
    hausdorff: float
    surface_dice: float
    tolerance: float
    volume_prediction: float     #: voxel count times voxel volume (physical units)
    volume_reference: float
    empty: str | None            #: None, "both", "prediction" or "reference"

    def as_dict(self) -> dict:
        return asdict(self)


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _check(pred, gt, spacing) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    p = np.asarray(pred)
    g = np.asarray(gt)
    if p.shape != g.shape:
        raise InputError(f"prediction and reference masks differ in shape: {p.shape} vs {g.shape}.")
    if p.ndim not in (2, 3):
        raise InputError(f"masks must be 2-D or 3-D, got {p.ndim} dimensions.")
    sp = (1.0,) * p.ndim if spacing is None else tuple(float(s) for s in spacing)
    if len(sp) != p.ndim or not all(np.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"voxel spacing must be {p.ndim} positive numbers, got {spacing}.")
    return p.astype(bool), g.astype(bool), sp


def overlap(pred, gt) -> tuple[int, int]:
    """``(|P n G|, |P| + |G|)`` of two boolean masks of one shape (any dimension): the counts Dice
    is made of (summed over cases they give the pooled Dice). Cheap: no surface distances."""
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    if p.shape != g.shape:
        raise InputError(f"prediction and ground-truth masks differ in shape: {p.shape} vs {g.shape}")
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p)) + int(np.count_nonzero(g))


def dice_from_overlap(intersection: int, total: int, empty: float = float("nan")) -> float:
    """Dice ``2 |P n G| / (|P| + |G|)`` from the counts of :func:`overlap`; ``empty`` when both
    masks are empty (``total`` 0): NaN by default, 1.0 in :func:`segmentation_metrics`."""
    return empty if total == 0 else 2.0 * intersection / total


def segmentation_metrics(pred, gt, spacing=None, tolerance: float = 1.0) -> SegmentationMetrics:
    """Dice, IoU, HD95, Hausdorff and surface Dice of one binary mask pair.

    ``spacing`` is the voxel size per axis (default 1, i.e. distances in voxels);
    ``tolerance`` is the surface-Dice tolerance in the same units.
    """
    p, g, sp = _check(pred, gt, spacing)
    tol = float(tolerance)
    if not np.isfinite(tol) or tol < 0:
        raise InputError(f"surface-Dice tolerance must be a non-negative number, got {tolerance}.")
    voxel = float(np.prod(sp))
    np_, ng = int(p.sum()), int(g.sum())
    vp, vg = np_ * voxel, ng * voxel
    if np_ == 0 and ng == 0:
        return SegmentationMetrics(1.0, 1.0, 0.0, 0.0, 1.0, tol, vp, vg, "both")
    if np_ == 0 or ng == 0:
        return SegmentationMetrics(0.0, 0.0, np.inf, np.inf, 0.0, tol, vp, vg,
                                   "prediction" if np_ == 0 else "reference")
    inter, total = overlap(p, g)
    dice = dice_from_overlap(inter, total)
    iou = inter / (total - inter)
    # Crop to the bounding box of both masks, one voxel of margin (zeros outside the image).
    idx = np.argwhere(p | g)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    pc = np.pad(p[box], 1)
    gc = np.pad(g[box], 1)
    sp_ = _surface(pc)
    sg_ = _surface(gc)
    d_to_g = ndimage.distance_transform_edt(~sg_, sampling=sp)[sp_]
    d_to_p = ndimage.distance_transform_edt(~sp_, sampling=sp)[sg_]
    pooled = np.concatenate([d_to_g, d_to_p])
    hd95 = float(np.percentile(pooled, 95))
    hd = float(pooled.max())
    sdice = float((np.count_nonzero(d_to_g <= tol) + np.count_nonzero(d_to_p <= tol)) / len(pooled))
    return SegmentationMetrics(float(dice), float(iou), hd95, hd, sdice, tol, vp, vg, None)


def mean_ci(values, conf_level: float = 0.95, n_resamples: int = 4000, seed: int = 2020):
    """Percentile-bootstrap confidence interval ``(low, high)`` of the mean of ``values``
    (resampling cases with replacement; scipy.stats.bootstrap). ``(None, None)`` for fewer
    than two values; ``(m, m)`` when all values are equal. Non-finite values are refused."""
    from scipy import stats

    v = np.asarray(list(values), dtype=float)
    if not 0.0 < conf_level < 1.0:
        raise InputError(f"conf_level must lie strictly between 0 and 1, got {conf_level!r}")
    if not np.isfinite(v).all():
        raise InputError("mean_ci needs finite values (leave undefined cases out first)")
    if len(v) < 2:
        return None, None
    if np.ptp(v) == 0:
        return float(v[0]), float(v[0])
    res = stats.bootstrap((v,), np.mean, confidence_level=conf_level, n_resamples=n_resamples,
                          method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def aggregate(values, conf_level: float = 0.95) -> dict:
    """Summary of one metric over cases: n, mean with its bootstrap confidence interval
    (``ci_low``, ``ci_high``, see :func:`mean_ci`), sd, median, quartiles, min, max.

    Non-finite values (HD95 / Hausdorff of a case with one empty mask) are left out and
    counted in ``n_undefined``.
    """
    v = np.asarray(list(values), dtype=float)
    finite = v[np.isfinite(v)]
    out = {"n": int(len(finite)), "n_undefined": int(len(v) - len(finite))}
    if len(finite) == 0:
        out.update(mean=None, ci_low=None, ci_high=None, sd=None, median=None, q1=None, q3=None,
                   min=None, max=None)
        return out
    q1, med, q3 = np.percentile(finite, [25, 50, 75])
    lo, hi = mean_ci(finite, conf_level)
    out.update(mean=float(finite.mean()), ci_low=lo, ci_high=hi,
               sd=float(finite.std(ddof=1)) if len(finite) > 1 else None,
               median=float(med), q1=float(q1), q3=float(q3),
               min=float(finite.min()), max=float(finite.max()))
    return out
