"""Folders of 2D slice images (8-bit PNG/JPG...) -> ``<name>_lungs.png`` / ``<name>_lesions.png``.

This is the fast path of ``pulmo ct segment DIR -o OUT`` for 2D images: every image is
segmented on its own (any size; the masks have the image's size) and two label PNGs
are written, with values 0/1/2 (see :mod:`pulmo.ct.models.runtime`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pulmo.ct.io.grey_image import read_gray_image
from pulmo.errors import InputError, ModelError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
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


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def segment_image_folder(folder: str | Path, out_dir: str | Path, segmenter=None,
                         on_error: str = "record", tta: bool = True) -> list[dict]:
    """Segment every image of ``folder``; write ``out_dir/<name>_lungs.png`` and ``_lesions.png``
    (``<name>``: the file's stem, made unique by :func:`pulmo.ct.io.output_names`).

    Returns one record per image: ``{"name", "status": "ok"|"error", "warning"?, "error"?,
    "lung_pixels", "ggo_pixels", "consolidation_pixels", "lesion_pct_of_lung"}``.
    ``on_error="record"`` keeps going after a bad image (its record says why);
    ``"raise"`` raises the :class:`InputError`. A model problem always raises
    :class:`ModelError`. ``tta`` (default on: a 2D image is cheap) averages the network's
    class probabilities over flipped copies at three input sizes (see
    :meth:`Segmenter.segment_slices`; about 0.25 s per 256x256 image on 2 cores), which raised
    held-out Dice over a single pass (``lesions.md``, ``lungs.md``).
    """
    from PIL import Image

    from pulmo.ct.io import output_names  # (pydicom and friends: imported when needed)
    from pulmo.ct.models.runtime import load_segmenter

    if on_error not in ("record", "raise"):
        raise ValueError("on_error must be 'record' or 'raise'")
    files = list_images(folder)
    seg = segmenter if segmenter is not None else load_segmenter(kind="8bit")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for f, name in zip(files, output_names(files)):
        rec = {"name": name}
        try:
            img = read_gray_image(f)
            lungs, lesions = seg.segment_slices(img, kind="8bit", tta=tta)
        except InputError as exc:
            if on_error == "raise":
                raise
            rec.update(status="error", error=str(exc))
            records.append(rec)
            continue
        except ModelError:
            raise
        Image.fromarray(lungs).save(out_dir / f"{name}_lungs.png")
        Image.fromarray(lesions).save(out_dir / f"{name}_lesions.png")
        n_lung = int((lungs > 0).sum())
        n_ggo, n_con = int((lesions == 1).sum()), int((lesions == 2).sum())
        rec.update(status="ok", lung_pixels=n_lung, ggo_pixels=n_ggo, consolidation_pixels=n_con,
                   lesion_pct_of_lung=round(100.0 * ((lesions > 0) & (lungs > 0)).sum() / n_lung, 2) if n_lung else 0.0)
        if n_lung:
            rec["lung_contrast"] = round(lung_contrast(img, lungs), 1)
        why = image_warning(img, lungs)
        if why:
            rec["warning"] = why
        records.append(rec)
    return records
