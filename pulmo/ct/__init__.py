"""Chest-CT analysis: lungs, regions, lesions, quantification, reports.

Conventions (used everywhere in this subpackage)
------------------------------------------------
* Physical coordinates are **LPS** (DICOM / ITK / SimpleITK): +x toward the
  patient's Left, +y toward Posterior, +z toward Superior, in millimetres.
* Internally every volume is held in the **canonical LPS grid**: a numpy array
  indexed ``(z, y, x)`` whose index axes run along +z (inferior -> superior),
  +y (anterior -> posterior) and +x (patient right -> patient left); i.e. the
  ITK direction matrix is the identity. Index ``x == 0`` is the patient's
  right, so ``array[z]`` displayed as an image is the usual radiological view
  (patient right on the viewer's left, anterior up).
* Spacing tuples are ``(z, y, x)`` in mm. Origins are LPS ``(x, y, z)`` of
  voxel ``[0, 0, 0]`` (ITK order) -- the only place an (x, y, z) tuple appears.
* Outputs (NIfTI masks, DICOM SEG) are written back in the *input's* geometry
  (see :meth:`pulmo.ct.volume.CTVolume.to_native`).

The API used by every face of Pulmo (the command line, the web service)::

    from pulmo.ct import AnalysisOptions, analyze, write_outputs
    analysis = analyze("study/")                  # in memory: nothing is written
    analysis.lungs, analysis.lesions, analysis.regions    # uint8 (z, y, x) masks
    analysis.quantification, analysis.warnings, analysis.pneumonia_flag
    analysis.to_dict()                            # exactly results.json
    write_outputs(analysis, "out/")               # NIfTI, report, DICOM SEG/SR/SC, results.json

Layers: :mod:`pulmo.ct.io` (reading), :mod:`pulmo.ct.segment` (numpy in, numpy
out), :mod:`pulmo.ct.quantify`, :mod:`pulmo.ct.analysis` (:func:`analyze`),
:mod:`pulmo.ct.report` and :mod:`pulmo.ct.outputs` (writers), :mod:`pulmo.ct.batch`
(a folder of studies), :mod:`pulmo.ct.evaluate` (masks against ground truth).

Pulmo is a research tool, not a certified medical device.
"""

SCHEMA_VERSION = "1.0.0"

# Label values of the masks (also written into results.json).
LUNG_LABELS = {1: "right lung", 2: "left lung"}
LESION_LABELS = {1: "ground-glass opacity", 2: "consolidation"}
ZONE_LABELS = {
    1: "right upper zone", 2: "right middle zone", 3: "right lower zone",
    4: "left upper zone", 5: "left middle zone", 6: "left lower zone",
}
LOBE_LABELS = {
    1: "right upper lobe", 2: "right middle lobe", 3: "right lower lobe",
    4: "left upper lobe", 5: "left lower lobe",
}


_API = {
    "analyze": "pulmo.ct.analysis", "CTAnalysis": "pulmo.ct.analysis", "ImageFolderAnalysis": "pulmo.ct.analysis",
    "ImageResult": "pulmo.ct.analysis", "AnalysisOptions": "pulmo.ct.options", "LoadOptions": "pulmo.ct.io.options",
    "write_outputs": "pulmo.ct.outputs", "WrittenOutputs": "pulmo.ct.outputs", "analyze_batch": "pulmo.ct.batch",
    "read": "pulmo.ct.io", "CTVolume": "pulmo.ct.volume",
}
__all__ = ["LESION_LABELS", "LOBE_LABELS", "LUNG_LABELS", "SCHEMA_VERSION", "ZONE_LABELS", *_API]


def __getattr__(name: str):
    """The API names, imported on first use (``import pulmo.ct`` stays light)."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'pulmo.ct' has no attribute {name!r}")
