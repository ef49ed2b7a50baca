"""8-bit grey-level slice images (PNG/JPG...): the one reader of the 2D path.

Used by ``pulmo ct analyze|segment`` on images and image folders and by
:func:`pulmo.ct.models.segment_image_folder`, so both refuse the same inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pulmo.errors import InputError

# Grey-level SD below which an image is refused as blank/uniform.
MIN_STD = 4.0


def read_gray_image(path: str | Path) -> np.ndarray:
    """An 8-bit grey-level slice as ``uint8 (H, W)``; clear :class:`InputError` otherwise.

    Grey images stored as RGB(A) (all channels within 8 levels) are accepted; colour images,
    16-bit/float images, 1-bit images, blank (uniform) images and unreadable files are refused."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
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
