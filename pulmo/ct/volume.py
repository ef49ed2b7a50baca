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


def oblique_reference(size, spacing, origin, direction) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The LPS-aligned grid (size, spacing, origin; ITK (x, y, z) order) that covers an oblique
    grid's box, at its finest in-plane spacing (keeps resolution): what :func:`canonicalise`
    resamples onto, computed from the geometry alone (a reader's header) so that its voxel count
    can be checked before any pixel is read."""
    size = np.asarray(size, float)
    sp = np.asarray(spacing, float)
    d = np.asarray(direction, float).reshape(3, 3)
    idx = np.array([(i, j, k) for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    corners = np.asarray(origin, float) + (idx * sp) @ d.T
    lo, hi = corners.min(0), corners.max(0)
    new_sp = np.full(3, sp.min())
    new_sp[2] = max(sp[2], sp.min())
    new_size = np.maximum(1, np.round((hi - lo) / new_sp).astype(np.int64) + 1)
    return new_size, new_sp, lo


def _axis_map(direction) -> list[tuple[int, int]]:
    """For each LPS axis k: (index axis j that runs along it, sign) of an axis-aligned direction."""
    d = np.asarray(direction, float).reshape(3, 3)
    out = []
    for k in range(3):
        j = int(np.argmax(np.abs(d[k])))
        out.append((j, 1 if d[k, j] > 0 else -1))
    return out


def canonical_array(img: sitk.Image) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float], bool]:
    """``img`` (3D, one component, any pixel type) on the canonical LPS grid as a new float32
    array (z, y, x), with its spacing (z, y, x), origin (LPS x, y, z) and whether that was exact.

    Axis-aligned images are permuted/flipped in numpy straight from the image's own buffer
    (one float32 copy: what :func:`canonicalise` gives, without its intermediate images);
    oblique ones are resampled (linear, outside -1024) onto :func:`oblique_reference`."""
    geom = Geometry.of(img)
    if geom.axis_aligned:
        size, sp = np.array(geom.size), np.array(geom.spacing, float)
        d = np.asarray(geom.direction, float).reshape(3, 3)
        amap = _axis_map(geom.direction)
        view = sitk.GetArrayViewFromImage(img)  # (i2, i1, i0): numpy axis of index axis j is 2 - j
        order = [2 - amap[k][0] for k in (2, 1, 0)]  # output axes z, y, x = LPS axes 2, 1, 0
        src = view.transpose(order)
        flips = tuple(a for a, k in enumerate((2, 1, 0)) if amap[k][1] < 0)
        if flips:
            src = np.flip(src, axis=flips)
        out = np.empty(src.shape, np.float32)
        np.copyto(out, src, casting="unsafe")
        # ``first``: the index (x, y, z of the input grid) of the voxel that becomes [0, 0, 0]
        first = np.zeros(3)
        for j, sign in amap:
            first[j] = 0 if sign > 0 else size[j] - 1
        origin = np.asarray(geom.origin, float) + d @ (first * sp)
        spacing = tuple(float(sp[amap[k][0]]) for k in (2, 1, 0))
        return out, spacing, tuple(float(o) for o in origin), True
    new_size, new_sp, lo = oblique_reference(geom.size, geom.spacing, geom.origin, geom.direction)
    ref = sitk.Image([int(s) for s in new_size], sitk.sitkUInt8)
    ref.SetSpacing(new_sp.tolist())
    ref.SetOrigin(lo.tolist())
    ref.SetDirection(IDENTITY)
    res = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(res)
    return arr, tuple(float(s) for s in new_sp[::-1]), tuple(float(o) for o in lo), False


def canonical_index(geom: Geometry, ijk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where voxels of an axis-aligned grid ``geom`` (index (i, j, k) rows, ITK order) lie in
    its canonical array (:func:`canonical_array`): the (z, y, x) index arrays."""
    amap = _axis_map(geom.direction)
    ijk = np.asarray(ijk, np.int64)
    out = []
    for k in (2, 1, 0):
        j, sign = amap[k]
        out.append(ijk[:, j] if sign > 0 else geom.size[j] - 1 - ijk[:, j])
    return tuple(out)


def canonicalise(img: sitk.Image) -> tuple[sitk.Image, bool]:
    """Return ``img`` on an identity-direction (LPS) grid and whether that was exact.

    Axis-aligned inputs are permuted/flipped (exact, no interpolation). Oblique
    ones are resampled (linear) onto an LPS grid covering the same box
    (:func:`oblique_reference`).
    """
    geom = Geometry.of(img)
    if geom.axis_aligned:
        out = sitk.DICOMOrient(img, "LPS")
        out.SetDirection(IDENTITY)
        return out, True
    new_size, new_sp, lo = oblique_reference(geom.size, geom.spacing, geom.origin, geom.direction)
    ref = sitk.Image([int(s) for s in new_size], img.GetPixelID())
    ref.SetSpacing(new_sp.tolist())
    ref.SetOrigin(lo.tolist())
    ref.SetDirection(IDENTITY)
    out = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, -1024.0)
    return out, False
