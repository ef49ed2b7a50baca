"""Lung regions: six zones (thirds by height per lung) or five lobes from a model plug-in.

Zones: for each lung, its superior-inferior extent (z, mm) is cut into three equal
heights: upper, middle, lower third. Labels (regions.nii.gz, ``kind = "zones"``):
1 right upper, 2 right middle, 3 right lower, 4 left upper, 5 left middle, 6 left lower.

Lobes (``kind = "lobes"``, from :class:`pulmo.ct.segment.models.LobeModel`):
1 right upper, 2 right middle, 3 right lower, 4 left upper, 5 left lower lobe.
"""

from __future__ import annotations

import numpy as np


def zones(lungs: np.ndarray) -> np.ndarray:
    """Six zones from a lung label map (1 right, 2 left); z index increases toward superior."""
    out = np.zeros(lungs.shape, np.uint8)
    nz = lungs.shape[0]
    for side, base in ((1, 0), (2, 3)):
        present = np.flatnonzero((lungs == side).any(axis=(1, 2)))
        if present.size == 0:
            continue
        lo, hi = present[0], present[-1] + 1  # slice range [lo, hi)
        height = hi - lo
        # slice k belongs to third t counted from the top (superior = high z)
        k = np.arange(nz)
        t = np.clip(((hi - 1 - k) * 3) // max(height, 1), 0, 2)  # 0 upper, 1 middle, 2 lower
        zlab = (base + 1 + t).astype(np.uint8)
        m = lungs == side
        out[m] = np.broadcast_to(zlab[:, None, None], lungs.shape)[m]
    return out


def restrict_lobes(lobes: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """Keep lobe labels only inside the lung mask and on the matching side
    (right lobes 1-3 in the right lung, left lobes 4-5 in the left lung); lung voxels
    without a consistent lobe get the nearest lobe label of their lung."""
    from scipy import ndimage as ndi

    out = np.where(((lungs == 1) & (lobes >= 1) & (lobes <= 3)) | ((lungs == 2) & (lobes >= 4) & (lobes <= 5)),
                   lobes, 0).astype(np.uint8)
    missing = (lungs > 0) & (out == 0)
    if missing.any() and out.any():
        for side, labs in ((1, (1, 2, 3)), (2, (4, 5))):
            seeds = np.isin(out, labs)
            miss = missing & (lungs == side)
            if not miss.any() or not seeds.any():
                continue
            _, idx = ndi.distance_transform_edt(~seeds, return_indices=True)
            out[miss] = out[tuple(i[miss] for i in idx)]
    return out
