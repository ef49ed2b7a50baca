"""Non-DICOM inputs: NIfTI / NRRD / MHA volumes (SimpleITK), 2D PNG/JPG images, zip archives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pulmo.ct.io.grey_image import read_gray_image
from pulmo.ct.io.options import LoadOptions, check_size
from pulmo.ct.volume import CTVolume, Geometry, canonicalise, warning
from pulmo.errors import InputError
from pulmo.io.archives import extract_zip

VOLUME_SUFFIXES = {".nii": "nifti", ".nii.gz": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mha"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def load_volume_file(path: Path, options: LoadOptions) -> CTVolume:
    """NIfTI/NRRD/MHA through SimpleITK (NIfTI scl_slope/inter are applied by the reader)."""
    check_size(path, options)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path.name}: cannot read the image ({msg}); the file may be truncated or corrupt") from exc
    return volume_from_image(img, source=str(path), kind=VOLUME_SUFFIXES.get(suffix_of(path), "volume"))


def volume_from_image(img: sitk.Image, source: str = "image in memory", kind: str = "volume") -> CTVolume:
    """A SimpleITK image of a CT in Hounsfield units (any orientation) as a :class:`CTVolume` on
    the canonical LPS grid; the image's own grid is kept as the volume's native grid."""
    name = Path(source).name or source
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name}: a colour/vector image is not a CT volume")
    if img.GetDimension() == 2:
        img = sitk.JoinSeries(img)
    if img.GetDimension() != 3:
        raise InputError(f"{name}: expected a 3D volume, got {img.GetDimension()} dimensions")
    img = sitk.Cast(img, sitk.sitkFloat32)
    native = Geometry.of(img)
    canon, exact = canonicalise(img)
    arr = sitk.GetArrayFromImage(canon)
    warnings = []
    if not exact:
        warnings.append(warning("oblique", "the volume is oblique; it was resampled onto an LPS-aligned grid"))
    vol = CTVolume(array=arr, spacing=tuple(canon.GetSpacing()[::-1]), origin=tuple(canon.GetOrigin()), is_hu=True,
                   native=native, native_exact=exact, source=source, kind=kind, warnings=warnings,
                   meta={"modality": "CT (assumed)", "slice_thickness_mm": float(canon.GetSpacing()[2])})
    check_hu(vol, name)
    np.clip(vol.array, -1024, 3071, out=vol.array)
    return vol


def check_hu(vol: CTVolume, name: str) -> None:
    """Refuse volumes whose values cannot be Hounsfield units (MR, normalised exports)."""
    a = vol.array
    sample = a[:: max(1, a.shape[0] // 16), ::4, ::4]
    lo, hi = float(sample.min()), float(np.percentile(sample, 99.5))
    if lo > -500:
        raise InputError(
            f"{name}: the values (minimum {lo:.0f}) are not Hounsfield units of a CT with air in view; "
            "this looks like an MR, a normalised export or a crop without air. Pulmo's CT analysis needs HU")
    if hi > 10000:
        raise InputError(f"{name}: values up to {hi:.0f} are not Hounsfield units")


def load_image(path: Path, options: LoadOptions) -> CTVolume:
    """A 2D 8-bit image (PNG/JPG) as a one-slice volume of grey levels (not HU); colour, 16-bit,
    blank and unreadable images are refused (:func:`pulmo.ct.io.grey_image.read_gray_image`)."""
    check_size(path, options)
    grey = read_gray_image(path)
    return CTVolume(array=grey[None].copy(), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), is_hu=False,
                    native=None, source=str(path), kind="image",
                    meta={"modality": "image (8-bit, not HU)", "size": [int(grey.shape[1]), int(grey.shape[0])]})


def safe_extract(zip_path: Path, dest: Path, options: LoadOptions) -> None:
    """Extract ``zip_path`` into ``dest`` refusing path traversal, links and oversized members."""
    check_size(zip_path, options)
    extract_zip(zip_path, dest, max_member_bytes=options.max_file_bytes, max_total_bytes=options.max_total_bytes)
