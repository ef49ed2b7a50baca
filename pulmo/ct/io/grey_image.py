"""8-bit grey-level slice images (PNG/JPG...): the one reader of the 2D path.

Used for every 2D image :func:`pulmo.ct.analyze` reads (one image, or a folder of them).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from pulmo.errors import InputError
from pulmo.io.limits import check_regular

# Grey-level SD below which an image is refused as blank/uniform.
MIN_STD = 4.0
# Largest side read (pixels); the same limit as the segmentation runtime's, checked before decoding.
MAX_SIDE = 4096


def open_bounded_image(path: Path, label: str, what: str = "CT slice"):
    """``PIL.Image.open(path)`` (pixels not decoded yet), refused with :class:`InputError` when it is
    over ``MAX_SIDE`` pixels per side (Pillow's decompression-bomb warning silenced, its error
    reworded); ``label`` names the file in messages. What is not a regular file (a FIFO, a device)
    is refused before it is opened. Other read errors propagate (``OSError``, ...)."""
    from PIL import Image

    check_regular(path, label, what="image file")
    try:
        with warnings.catch_warnings():  # DecompressionBombWarning: the size check below says it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:  # so large that Pillow refuses to open it
        raise InputError(f"{label}: far too large for a {what} (at most {MAX_SIDE} pixels per side)") from exc
    w, h = im.size
    if max(w, h) > MAX_SIDE:  # before decoding: a huge image is refused without reading its pixels
        im.close()
        raise InputError(f"{label}: {w}x{h} pixels is too large for a {what} (at most {MAX_SIDE} per side)")
    return im


def read_gray_image(path: str | Path) -> np.ndarray:
    """An 8-bit grey-level slice as ``uint8 (H, W)``; clear :class:`InputError` otherwise.

    An EXIF orientation is applied (the array is the image as viewers show it); images over
    ``MAX_SIDE`` pixels per side are refused before their pixels are decoded.
    Grey images stored as RGB(A) (all channels within 8 levels) are accepted; colour images,
    16-bit/float images, 1-bit images, blank (uniform) images and unreadable files are refused."""
    from PIL import ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with open_bounded_image(path, path.name) as im:
            im.load()
            im = ImageOps.exif_transpose(im)  # as viewers show it (phones and cameras store the rotation)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise InputError(f"{path.name}: {mode} ({'16-bit' if mode.startswith('I') else 'floating-point'}) "
                                 "image; the 2D path takes 8-bit slices (for Hounsfield units give the DICOM "
                                 "or NIfTI volume)")
            if mode == "1":
                raise InputError(f"{path.name}: a 1-bit (black and white) image, not a CT slice")
            if mode in ("L", "LA"):
                arr = np.asarray(im.convert("L"))
            else:
                rgb = np.asarray(im.convert("RGB")).astype(np.int16)
                if np.abs(rgb[..., 0] - rgb[..., 1]).max() > 8 or np.abs(rgb[..., 1] - rgb[..., 2]).max() > 8:
                    raise InputError(f"{path.name}: a colour image; CT slices are grey-level")
                arr = np.asarray(im.convert("L"))
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path.name}: not a readable image ({exc})") from exc
    if arr.size and float(arr.std()) < MIN_STD:
        raise InputError(f"{path.name}: a blank (uniform) image, not a CT slice")
    return arr
