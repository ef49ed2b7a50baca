"""Pulmo's shipped learned models for chest CT and the small runtime that runs them.

``seg.onnx`` is one network with a shared encoder and two heads (cards:
``lungs.md``, ``lesions.md``): right/left lung and ground-glass / consolidation.
It runs with onnxruntime + numpy only (no PyTorch); it was trained by
``python -m pulmo.train.seg`` (see ``docs/models.md``). The weights are for
non-commercial research use only (training data licences).

API (for the CT pipeline and the CLI)::

    from pulmo.ct.models import load_segmenter, segment_image_folder
    seg = load_segmenter()                     # or load_segmenter("other.onnx"); cached
    lungs, lesions = seg.segment_slices(hu_volume, kind="hu")      # (N, H, W) -> uint8 x2
    lungs, lesions = seg.segment_slices(uint8_slices, kind="8bit")
    seg.metadata    # {"version", "input_size", "hu_window", "lung_classes", "lesion_classes", ...}
    records = segment_image_folder("in/", "out/")   # out/<name>_lungs.png, <name>_lesions.png

* ``lungs``: 0 background, 1 lung on the image's left (patient's right in the
  canonical LPS grid / radiological view), 2 the other lung.
* ``lesions``: 0 background, 1 ground-glass opacity, 2 consolidation (always
  within 2 network pixels of the lung mask).
* Errors: :class:`pulmo.errors.ModelError` when the model file is missing, corrupt or
  not a Pulmo model (callers should fall back to the density method);
  :class:`pulmo.errors.InputError` for bad input (wrong shape, colour, 16-bit,
  values out of range, NaN).
"""

from pulmo.ct.models.images import read_gray_image, segment_image_folder
from pulmo.ct.models.runtime import (
    DEFAULT_MODEL,
    LESION_CLASSES,
    LUNG_CLASSES,
    Segmenter,
    load_segmenter,
)

__all__ = [
    "DEFAULT_MODEL",
    "LESION_CLASSES",
    "LUNG_CLASSES",
    "Segmenter",
    "load_segmenter",
    "read_gray_image",
    "segment_image_folder",
]
