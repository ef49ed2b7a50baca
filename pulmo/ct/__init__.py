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

Layers: :mod:`pulmo.ct.io` (loading), :mod:`pulmo.ct.segment` (numpy in,
numpy out), :mod:`pulmo.ct.quantify`, :mod:`pulmo.ct.report` (writers),
:mod:`pulmo.ct.pipeline` (service layer used by ``pulmo ct``).

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
