"""Key images with overlays (PIL), radiological view (patient right on the viewer's left)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

LUNG_WINDOW = (-1350.0, 150.0)  # level -600, width 1500
COLOURS = {"ggo": (255, 210, 0), "cons": (230, 40, 40), "right": (40, 120, 255), "left": (40, 200, 120)}


def window(arr: np.ndarray, lo_hi=LUNG_WINDOW) -> np.ndarray:
    lo, hi = lo_hi
    return (np.clip((arr - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def overlay(grey: np.ndarray, lungs: np.ndarray, lesions: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8: lung outlines (blue right / green left) and filled lesions (yellow GGO, red consolidation)."""
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for lab, key in ((1, "ggo"), (2, "cons")):
        m = lesions == lab
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array(COLOURS[key], np.float32)
    for lab, key in ((1, "right"), (2, "left")):
        m = lungs == lab
        edge = m.copy()
        edge[1:-1, 1:-1] = m[1:-1, 1:-1] & ~(m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:])
        rgb[edge] = COLOURS[key]
    return rgb.astype(np.uint8)


def key_slices(lungs: np.ndarray, lesions: np.ndarray) -> tuple[int, int]:
    """(axial z, coronal y): the slices with the most lesion, else the most lung."""
    les = lesions > 0
    src = les if les.any() else lungs > 0
    z = int(np.argmax(src.sum(axis=(1, 2))))
    y = int(np.argmax(src.sum(axis=(0, 2))))
    return z, y


def axial_rgb(hu, lungs, lesions, z) -> np.ndarray:
    return overlay(window(hu[z]), lungs[z], lesions[z])


def coronal_rgb(hu, lungs, lesions, y, spacing) -> np.ndarray:
    """Coronal slice, superior at the top, resampled to square pixels."""
    rgb = overlay(window(hu[::-1, y, :]), lungs[::-1, y, :], lesions[::-1, y, :])
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
