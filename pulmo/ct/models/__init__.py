"""Pulmo's shipped learned models for chest CT and the small runtime that runs them.

Two networks, each one graph with a shared encoder and two heads (cards:
``lungs.md``, ``lesions.md``): right/left lung and ground-glass / consolidation.
``seg.onnx`` (``seg-2d-1``) segments HU volumes; ``seg_8bit.onnx`` (``seg-2d-3``,
larger, more accurate on 8-bit slices) segments 8-bit PNG/JPG slices. They run with
onnxruntime + numpy only (no PyTorch); they were trained by
``python -m pulmo.train.seg`` (see ``docs/models.md``). The weights are for
non-commercial research use only (training data licences).

API (for the CT pipeline and the CLI)::

    from pulmo.ct.models import load_segmenter
    seg = load_segmenter()                     # HU model; load_segmenter("other.onnx"); cached
    lungs, lesions = seg.segment_slices(hu_volume, kind="hu")      # (N, H, W) -> uint8 x2
    seg8 = load_segmenter(kind="8bit")         # the 8-bit model
    lungs, lesions = seg8.segment_slices(uint8_slices, kind="8bit")
    seg.metadata    # {"version", "input_size", "hu_window", "lung_classes", "lesion_classes", ...}

Folders of 2D images are segmented through :func:`pulmo.ct.analyze` (``pulmo ct segment DIR``).

* ``lungs``: 0 background, 1 lung on the image's left (patient's right in the
  canonical LPS grid / radiological view), 2 the other lung.
* ``lesions``: 0 background, 1 ground-glass opacity, 2 consolidation (always
  within 2 network pixels of the lung mask).
* Errors: :class:`pulmo.errors.ModelError` when the model file is missing, corrupt or
  not a Pulmo model (callers should fall back to the density method);
  :class:`pulmo.errors.InputError` for bad input (wrong shape, colour, 16-bit,
  values out of range, NaN).
"""

from pulmo.ct.io.grey_image import read_gray_image
from pulmo.ct.models.runtime import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_8BIT,
    LESION_CLASSES,
    LUNG_CLASSES,
    Segmenter,
    default_model,
    load_segmenter,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_8BIT",
    "LESION_CLASSES",
    "LUNG_CLASSES",
    "Segmenter",
    "default_model",
    "load_segmenter",
    "read_gray_image",
]
