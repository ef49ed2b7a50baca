"""pulmo.stats.segmentation against brute-force definitions, and the empty-mask conventions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from pulmo.errors import InputError
from pulmo.stats.segmentation import aggregate, mean_ci, segmentation_metrics


def brute_surface(mask):
    """Voxels with a face neighbour outside the mask (outside the image counts as outside)."""
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask, dtype=bool)
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            sl = [slice(1, -1)] * mask.ndim
            sl[axis] = slice(1 + shift, padded.shape[axis] - 1 + shift)
            inner &= padded[tuple(sl)]
    return mask & ~inner


def brute_distances(p, g, spacing):
    sp_, sg_ = brute_surface(p), brute_surface(g)
    a = np.argwhere(sp_) * spacing
    b = np.argwhere(sg_) * spacing
    d = cdist(a, b)
    return d.min(axis=1), d.min(axis=0)


def blob(shape, center, radii):
    grid = np.indices(shape)
    return sum(((grid[i] - center[i]) / radii[i]) ** 2 for i in range(len(shape))) <= 1


def test_dice_and_iou_of_overlapping_squares():
    p = np.zeros((20, 20), bool)
    g = np.zeros((20, 20), bool)
    p[2:12, 2:12] = True
    g[4:14, 2:12] = True          # 8 x 10 overlap
    m = segmentation_metrics(p, g)
    assert m.dice == pytest.approx(2 * 80 / 200) and m.iou == pytest.approx(80 / 120)
    assert m.hausdorff == pytest.approx(2.0) and m.volume_prediction == 100


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.7, 2.5)])
def test_hd95_hausdorff_and_surface_dice_equal_brute_force(spacing):
    shape = (24, 30, 18)
    p = blob(shape, (11, 14, 8), (7, 9, 5))
    g = blob(shape, (13, 15, 9), (6, 10, 6)) | blob(shape, (3, 25, 15), (2, 2, 2))   # a stray island
    g[:, :, 17] |= blob(shape[:2], (20, 5), (3, 3))                                   # touches the border
    tol = 1.5
    m = segmentation_metrics(p, g, spacing, tolerance=tol)
    d_pg, d_gp = brute_distances(p, g, np.array(spacing))
    pooled = np.concatenate([d_pg, d_gp])
    assert m.hd95 == pytest.approx(np.percentile(pooled, 95), rel=1e-12)
    assert m.hausdorff == pytest.approx(pooled.max(), rel=1e-12)
    assert m.surface_dice == pytest.approx(np.mean(pooled <= tol), rel=1e-12)
    assert m.volume_reference == pytest.approx(g.sum() * np.prod(spacing))


def test_identical_masks_are_perfect():
    g = blob((20, 20), (10, 10), (5, 7))
    m = segmentation_metrics(g, g.copy(), (0.5, 0.5))
    assert (m.dice, m.iou, m.hd95, m.hausdorff, m.surface_dice) == (1.0, 1.0, 0.0, 0.0, 1.0)


def test_empty_mask_conventions():
    empty = np.zeros((8, 8), bool)
    full = np.zeros((8, 8), bool)
    full[2:5, 2:5] = True
    both = segmentation_metrics(empty, empty)
    assert (both.dice, both.iou, both.hd95, both.surface_dice, both.empty) == (1.0, 1.0, 0.0, 1.0, "both")
    missed = segmentation_metrics(empty, full)
    assert (missed.dice, missed.iou, missed.surface_dice, missed.empty) == (0.0, 0.0, 0.0, "prediction")
    assert missed.hd95 == np.inf
    assert segmentation_metrics(full, empty).empty == "reference"


def test_aggregate_leaves_undefined_distances_out_and_counts_them():
    a = aggregate([1.0, 3.0, np.inf, 2.0])
    assert a["n"] == 3 and a["n_undefined"] == 1 and a["mean"] == 2.0 and a["median"] == 2.0
    assert aggregate([np.inf])["mean"] is None
    assert a["ci_low"] < 2.0 < a["ci_high"]


def test_mean_ci_matches_the_normal_approximation_on_a_large_sample():
    v = np.tile([0.0, 1.0], 200)                     # mean 0.5, standard error 0.025
    lo, hi = mean_ci(v)
    assert lo == pytest.approx(0.5 - 1.96 * 0.025, abs=0.01) and hi == pytest.approx(0.5 + 1.96 * 0.025, abs=0.01)
    lo10, hi10 = mean_ci(v[:10])                      # fewer cases: a wider interval
    assert hi10 - lo10 > 2 * (hi - lo)
    assert mean_ci(v) == (lo, hi)                     # seeded: reproducible
    assert mean_ci([0.7]) == (None, None) and mean_ci([0.7, 0.7]) == (0.7, 0.7)
    with pytest.raises(InputError, match="finite"):
        mean_ci([0.5, np.nan])
    with pytest.raises(InputError, match="conf_level"):
        mean_ci([0.5, 0.6], conf_level=95)


def test_mismatched_shapes_and_bad_spacing_are_refused():
    with pytest.raises(InputError, match="differ in shape"):
        segmentation_metrics(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(InputError, match="spacing"):
        segmentation_metrics(np.zeros((4, 4)), np.zeros((4, 4)), spacing=(1.0, 0.0))
    with pytest.raises(InputError, match="spacing"):
        segmentation_metrics(np.zeros((4, 4)), np.zeros((4, 4)), spacing=(1.0, 1.0, 1.0))
