"""The in-memory CT volume and its geometry (see :mod:`pulmo.ct` for conventions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Geometry:
    """An ITK image grid: size/spacing/origin in (x, y, z) ITK order, LPS mm."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = IDENTITY

    @classmethod
    def of(cls, img: sitk.Image) -> Geometry:
        return cls(tuple(img.GetSize()), tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()))

    def reference(self, pixel_type=sitk.sitkUInt8) -> sitk.Image:
        ref = sitk.Image([int(s) for s in self.size], pixel_type)
        self.apply(ref)
        return ref

    def apply(self, img: sitk.Image) -> sitk.Image:
        img.SetSpacing([float(s) for s in self.spacing])
        img.SetOrigin([float(o) for o in self.origin])
        img.SetDirection([float(d) for d in self.direction])
        return img

    @property
    def axis_aligned(self) -> bool:
        d = np.abs(np.asarray(self.direction, float).reshape(3, 3))
        return bool(np.all((d < 1e-4) | (np.abs(d - 1) < 1e-4)))


def warning(code: str, message: str, **extra: Any) -> dict:
    """A warning entry as stored in ``results.json`` (``code`` is stable, ``message`` readable)."""
    return {"code": code, "message": message, **extra}


@dataclass
class CTVolume:
    """A volume in the canonical LPS grid.

    ``array`` is indexed (z, y, x): z inferior->superior, y anterior->posterior,
    x patient right->left (identity direction in ITK terms). For CT it holds
    Hounsfield units (float32, clipped to [-1024, 3071]); for 2D photographs /
    PNG slices (``is_hu`` False) it holds 8-bit grey levels.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]  # (z, y, x) mm
    origin: tuple[float, float, float]  # LPS (x, y, z) of voxel [0, 0, 0]
    is_hu: bool = True
    native: Geometry | None = None  # the grid NIfTI outputs are written on
    native_exact: bool = True  # canonical grid is a pure axis permutation/flip of ``native``
    source: str = ""
    kind: str = ""  # dicom | nifti | nrrd | mha | image
    dicom: Any = None  # pulmo.ct.io.dicom.DicomSeries for DICOM input
    warnings: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def canonical_image(self, arr: np.ndarray | None = None) -> sitk.Image:
        """A SimpleITK image of ``arr`` (default: the volume) on the canonical grid."""
        img = sitk.GetImageFromArray(self.array if arr is None else arr)
        img.SetSpacing([float(s) for s in self.spacing[::-1]])
        img.SetOrigin([float(o) for o in self.origin])
        img.SetDirection(IDENTITY)
        return img

    def to_native(self, labels: np.ndarray) -> sitk.Image:
        """A label map (canonical grid) as an image on the input's grid ``native``."""
        img = self.canonical_image(labels)
        nat = self.native
        if nat is None:
            return img
        if self.native_exact:
            code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(nat.direction)
            out = sitk.DICOMOrient(img, code)
            if tuple(out.GetSize()) == tuple(nat.size):
                return nat.apply(out)  # drop float drift: exactly the input's header
        return sitk.Resample(img, nat.reference(img.GetPixelID()), sitk.Transform(), sitk.sitkNearestNeighbor, 0)

    def from_native(self, img: sitk.Image) -> np.ndarray:
        """A label image on the input's grid (e.g. from an external tool) as an array on the
        canonical grid, (z, y, x) like ``array``: the inverse of :meth:`to_native`."""
        if self.native_exact:
            out = sitk.DICOMOrient(img, "LPS")
            arr = sitk.GetArrayFromImage(out)
            if arr.shape == self.shape:
                return arr
        ref = self.canonical_image(np.zeros(self.shape, np.uint8))
        return sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0))


def canonicalise(img: sitk.Image) -> tuple[sitk.Image, bool]:
    """Return ``img`` on an identity-direction (LPS) grid and whether that was exact.

    Axis-aligned inputs are permuted/flipped (exact, no interpolation). Oblique
    ones are resampled (linear) onto an LPS grid covering the same box.
    """
    geom = Geometry.of(img)
    if geom.axis_aligned:
        out = sitk.DICOMOrient(img, "LPS")
        out.SetDirection(IDENTITY)
        return out, True
    size = np.array(img.GetSize())
    corners = []
    for i in (0, size[0] - 1):
        for j in (0, size[1] - 1):
            for k in (0, size[2] - 1):
                corners.append(img.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k))))
    corners = np.array(corners)
    lo, hi = corners.min(0), corners.max(0)
    sp = np.array(img.GetSpacing())
    # Spacing along each LPS axis: the finest input spacing (keeps resolution).
    new_sp = np.full(3, sp.min())
    new_sp[2] = max(sp[2], sp.min())
    new_size = np.maximum(1, np.round((hi - lo) / new_sp).astype(int) + 1)
    ref = sitk.Image([int(s) for s in new_size], img.GetPixelID())
    ref.SetSpacing(new_sp.tolist())
    ref.SetOrigin(lo.tolist())
    ref.SetDirection(IDENTITY)
    out = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, -1024.0)
    return out, False
