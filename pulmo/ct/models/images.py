"""Checks on the masks of a 2D slice image (8-bit PNG/JPG): is it a chest-CT slice at all?

Folders of such images are analysed by :func:`pulmo.ct.analyze` (one path for every input),
which records :func:`image_warning` per image.
"""

from __future__ import annotations

import numpy as np

# Below this fraction of the image labelled lung, the image is flagged: probably not a chest CT slice.
MIN_LUNG_FRACTION = 0.005
# In a CT slice the lungs (air) are darker than the rest of the image: the median grey level
# outside the predicted lung must exceed the median inside it by at least this much, else flagged
# (held-out CT slices: 7 or more; blank, striped and gradient images: 1 or less).
MIN_LUNG_CONTRAST = 4.0


def lung_contrast(img: np.ndarray, lungs: np.ndarray) -> float:
    """Median grey level outside the lung (excluding the darkest 'air' quarter) minus inside."""
    inside = img[lungs > 0]
    outside = img[lungs == 0]
    if inside.size == 0 or outside.size == 0:
        return 0.0
    outside = outside[outside > np.percentile(outside, 25)] if outside.size > 4 else outside
    return float(np.median(outside) - np.median(inside)) if outside.size else 0.0


def image_warning(img: np.ndarray, lungs: np.ndarray) -> str | None:
    """Why the masks of a 2D slice should not be trusted (no lung, or a 'lung' that is not
    darker than the rest of the image: probably not a chest-CT slice), or None."""
    if int((lungs > 0).sum()) < MIN_LUNG_FRACTION * lungs.size:
        return "no lung found: is this an axial chest-CT slice?"
    if lung_contrast(img, lungs) < MIN_LUNG_CONTRAST:
        return ("the segmented 'lung' is not darker than the rest of the image: "
                "is this an axial chest-CT slice? (masks written, do not trust them)")
    return None
