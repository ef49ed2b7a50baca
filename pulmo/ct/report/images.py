"""Key images with overlays (PIL), radiological view (patient right on the viewer's left)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

LUNG_WINDOW = (-1350.0, 150.0)  # level -600, width 1500
COLOURS = {"ggo": (255, 210, 0), "cons": (230, 40, 40), "right": (40, 120, 255), "left": (40, 200, 120),
           "nodule": (230, 0, 230)}


def window(arr: np.ndarray, lo_hi=LUNG_WINDOW) -> np.ndarray:
    lo, hi = lo_hi
    return (np.clip((arr - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _edge(m: np.ndarray) -> np.ndarray:
    edge = m.copy()
    edge[1:-1, 1:-1] = m[1:-1, 1:-1] & ~(m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:])
    return edge


def overlay(grey: np.ndarray, lungs: np.ndarray, lesions: np.ndarray, alpha: float = 0.45,
            nodules: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8: lung outlines (blue right / green left), filled lesions (yellow GGO, red
    consolidation) and nodule outlines (magenta, two pixels wide)."""
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for lab, key in ((1, "ggo"), (2, "cons")):
        m = lesions == lab
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array(COLOURS[key], np.float32)
    for lab, key in ((1, "right"), (2, "left")):
        rgb[_edge(lungs == lab)] = COLOURS[key]
    if nodules is not None and nodules.any():
        m = nodules > 0
        grown = m.copy()
        grown[1:, :] |= m[:-1, :]
        grown[:-1, :] |= m[1:, :]
        grown[:, 1:] |= m[:, :-1]
        grown[:, :-1] |= m[:, 1:]
        rgb[_edge(grown) | _edge(m)] = COLOURS["nodule"]
    return rgb.astype(np.uint8)


NO_FINDING = "no pneumonia-pattern finding: a representative slice (the largest lung cross-section)"


def key_images(lungs: np.ndarray, lesions: np.ndarray, nodule_mask: np.ndarray | None = None,
               min_lesion_voxels: int = 0) -> tuple[int, int, str]:
    """``(axial z, coronal y, caption)`` of the key images: the slices with the most
    pneumonia-pattern lesion when there is at least ``min_lesion_voxels`` of it; else the
    largest nodule's slices; else the largest lung cross-section, captioned as showing no
    pneumonia-pattern finding."""
    les = lesions > 0
    if les.any() and int(les.sum()) >= max(1, min_lesion_voxels):
        z = int(np.argmax(les.sum(axis=(1, 2))))
        y = int(np.argmax(les.sum(axis=(0, 2))))
        return z, y, "the slice with the most ground glass and consolidation"
    if nodule_mask is not None and (nodule_mask == 1).any():
        z, y, _ = (int(round(v)) for v in np.argwhere(nodule_mask == 1).mean(axis=0))
        return z, y, "no pneumonia-pattern finding; the largest nodule / focal opacity (magenta outline, not " \
                     "counted as pneumonia)"
    lung = lungs > 0
    return int(np.argmax(lung.sum(axis=(1, 2)))), int(np.argmax(lung.sum(axis=(0, 2)))), NO_FINDING


def key_slices(lungs: np.ndarray, lesions: np.ndarray) -> tuple[int, int]:
    """(axial z, coronal y): the slices with the most lesion, else the most lung."""
    z, y, _ = key_images(lungs, lesions)
    return z, y


def axial_rgb(hu, lungs, lesions, z, nodules=None) -> np.ndarray:
    return overlay(window(hu[z]), lungs[z], lesions[z], nodules=None if nodules is None else nodules[z])


def coronal_rgb(hu, lungs, lesions, y, spacing, nodules=None) -> np.ndarray:
    """Coronal slice, superior at the top, resampled to square pixels."""
    rgb = overlay(window(hu[::-1, y, :]), lungs[::-1, y, :], lesions[::-1, y, :],
                  nodules=None if nodules is None else nodules[::-1, y, :])
    h = max(1, int(round(rgb.shape[0] * spacing[0] / spacing[2])))
    return np.asarray(Image.fromarray(rgb).resize((rgb.shape[1], h), Image.NEAREST))


def png_base64(rgb: np.ndarray, max_side: int = 512) -> str:
    im = Image.fromarray(rgb)
    if max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((max(1, int(im.size[0] * s)), max(1, int(im.size[1] * s))), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")
