"""Pseudo labels for the binary-labelled PNG slices: the true infection mask, split into ground
glass and consolidation by a teacher network.

COVID-19-CT-Seg's masks say where infection is, not which kind; only 40 MedSeg slices say which.
A teacher (an exported ``seg_8bit``-style network) splits each true infection mask by its
test-time-augmented class probabilities (four flips x the model's ``tta_sizes``, as the runtime
does for 2D images): a pixel of the mask is consolidation where p(consolidation) > p(GGO), else
GGO. The extent stays the reference's; only the split is the teacher's. Training with
``png_pseudo`` (``train --png-pseudo``) then gives those slices the 3-class loss (how
``seg-2d-3.4`` and ``seg-2d-3.5`` were trained, docs/models.md).
"""

from __future__ import annotations

import numpy as np

from pulmo.ct.models.runtime import Segmenter


def split_infection(teacher: Segmenter, images: np.ndarray, infection: np.ndarray,
                    batch: int = 8) -> np.ndarray:
    """``images`` ``(n, H, W)`` 8-bit grey levels and ``infection`` ``(n, H, W)`` binary masks
    (pixel grid, any non-zero = infection) -> ``uint8 (n, H, W)``: 0 outside the mask, 1 GGO,
    2 consolidation inside it."""
    images = np.asarray(images)
    infection = np.asarray(infection) > 0
    if images.ndim != 3 or images.shape != infection.shape:
        raise ValueError(f"images {images.shape} and infection masks {infection.shape} must both be (n, H, W)")
    if not teacher.info.tta_sizes:
        raise ValueError(f"{teacher.path.name} has no tta_sizes in its metadata: export the teacher with 'tta_sizes'")
    out = np.zeros(images.shape, np.uint8)
    for s in range(0, len(images), batch):
        lesions = teacher.tta_probability_sums(images[s:s + batch].astype(np.float32), "8bit")[1]
        out[s:s + batch] = np.where(infection[s:s + batch], np.where(lesions[:, 2] > lesions[:, 1], 2, 1), 0)
    return out
