"""Density-based lesion mask inside the lungs: 1 ground-glass opacity, 2 consolidation.

Bands (configurable, :class:`LesionParams`): ground glass ``-750 <= HU < -300``,
consolidation ``-300 <= HU <= +100``. The -300 HU boundary between ground glass
and consolidation is the one that separated COVID-19 from other patients best
among the eight thresholds compared by Zhang et al., "Quantitative CT for
detecting COVID-19 pneumonia in suspected cases", BMC Infect Dis 2021;21:836
(doi:10.1186/s12879-021-06556-z). -750 HU as the lower GGO limit and +100 HU as
the upper consolidation limit are common conventions of density-mask
quantification (normally aerated lung is about -950..-750 HU), not validated
here; change them with ``--ggo-hu`` / ``--consolidation-hu``.

Vessel suppression: vessels are dense but thin. Dense voxels (>= -300 HU) are
opened with a ball of ``vessel_radius_mm``; what the opening removes is vessel
(and bronchial wall), and it is excluded together with a one-voxel rim of
partial volume around it (which otherwise reads as ground glass). Consolidation
is the opened dense tissue; ground glass is the band left after removing vessels
and their rim, opened in-plane by one voxel (noise), and lesion parts smaller than
``min_lesion_mm3`` are dropped. A one-voxel rim inside the pleura is not counted
as ground glass (partial volume with the chest wall).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from pulmo.ct.segment._morph import SLICE_2D, crop_box, ellipsoid, disk


@dataclass
class LesionParams:
    ggo_hu: tuple[float, float] = (-750.0, -300.0)
    consolidation_hu: tuple[float, float] = (-300.0, 100.0)
    vessel_radius_mm: float = 2.5
    min_lesion_mm3: float = 50.0
    max_work_voxels: int = 12_000_000  # larger lung boxes are analysed at half in-plane resolution


def segment_lesions(hu: np.ndarray, lungs: np.ndarray, spacing, params: LesionParams | None = None) -> np.ndarray:
    """Lesion labels (uint8: 1 GGO, 2 consolidation) inside ``lungs > 0``."""
    p = params or LesionParams()
    out = np.zeros(hu.shape, np.uint8)
    lung_all = lungs > 0
    box = crop_box(lung_all, (1, 1, 1))
    if box is None:
        return out
    h = hu[box]
    lung = lung_all[box]
    if h.size > p.max_work_voxels and spacing[1] < 1.2:
        # half in-plane resolution (block mean of HU, majority of the mask), then back by repetition
        from pulmo.ct.segment._morph import block_reduce_mean, upsample_labels

        f = (1, 2, 2)
        hw = block_reduce_mean(h, f)
        lw = block_reduce_mean(lung.astype(np.float32), f) > 0.5
        small = segment_lesions(hw, lw.astype(np.uint8), (spacing[0], spacing[1] * 2, spacing[2] * 2),
                                LesionParams(p.ggo_hu, p.consolidation_hu, p.vessel_radius_mm, p.min_lesion_mm3,
                                             max_work_voxels=1 << 62))
        res = upsample_labels(small, f, h.shape)
        res[~lung] = 0
        out[box] = res
        return out
    planar = h.shape[0] < 8
    dense = lung & (h >= p.consolidation_hu[0])
    ball = disk(p.vessel_radius_mm, spacing, 1) if planar else ellipsoid(p.vessel_radius_mm, spacing, 1)
    blobs = ndi.binary_opening(dense, structure=ball)
    vessels = dense & ~blobs
    cons = blobs & (h <= p.consolidation_hu[1])
    rim = ndi.binary_dilation(vessels, structure=SLICE_2D) | (lung & ~ndi.binary_erosion(lung, structure=SLICE_2D))
    ggo = lung & (h >= p.ggo_hu[0]) & (h < p.ggo_hu[1]) & ~rim
    ggo = ndi.binary_opening(ggo, structure=SLICE_2D)
    # a ground-glass rim around consolidation belongs to the lesion
    ggo |= lung & (h >= p.ggo_hu[0]) & (h < p.ggo_hu[1]) & ndi.binary_dilation(cons, structure=SLICE_2D) & ~vessels
    lesion = ggo | cons
    lab, n = ndi.label(lesion)
    if n:
        vox_mm3 = float(np.prod(spacing))
        sizes = np.bincount(lab.ravel(), minlength=n + 1) * vox_mm3
        small = sizes < p.min_lesion_mm3
        small[0] = False
        lesion &= ~small[lab]
    res = np.zeros(h.shape, np.uint8)
    res[lesion & ggo] = 1
    res[lesion & cons] = 2
    out[box] = res
    return out
