"""Loading options, and the budgets every CT reader keeps (see docs/ct.md, "Limits")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pulmo.errors import InputError
from pulmo.io.limits import GiB, check_file, human_bytes


@dataclass
class LoadOptions:
    """How inputs are read, and what they may cost (each limit is checked before decoding).

    max_file_bytes: any single file (or zip member, as extracted) larger than this is refused.
    max_total_bytes: a zip whose members unpack to more than this in all (bytes actually
        extracted, not the sizes its directory declares) is refused.
    max_compression_ratio: a zip member (or archive) that unpacks to more than this many bytes
        per byte stored is a zip bomb, not data (real DICOM deflates 2-5:1).
    max_files: files and folders in a DICOM folder or a folder of images, members in a zip.
    max_voxels: voxels of a volume, as stored and after any resampling (gap filling, gantry
        tilt, oblique grid).
    max_image_bytes: bytes of a volume's pixel data as stored (voxels x bytes per voxel, after
        decompression).
    max_slices: images in the chosen DICOM series.
    max_extent_mm: physical extent of a DICOM series along any axis.
    max_non_finite_fraction: NaN/infinite voxels up to this share are set to -1024 HU with a
        warning; more are refused.
    series_uid: choose this SeriesInstanceUID when a folder holds several series.
    rescale_slope / rescale_intercept: used only when a DICOM image lacks the
        rescale tags; without them such images are refused unless their stored
        values already look like Hounsfield units.
    no_hu: treat the input as 8-bit images (PNG/JPG path), not Hounsfield units.
    """

    max_file_bytes: int = 1 * GiB
    max_total_bytes: int = 2 * GiB
    max_compression_ratio: float = 200.0
    max_files: int = 5_000
    max_voxels: int = 200_000_000
    max_image_bytes: int = 1 * GiB
    max_slices: int = 2_000
    max_extent_mm: float = 2_000.0
    max_non_finite_fraction: float = 0.01
    series_uid: str | None = None
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    no_hu: bool = False
    workers: int = 2


def check_size(path: Path, options: LoadOptions, label: str | None = None) -> int:
    """Refuse what is not a regular file (FIFO, device, socket) or is larger than
    ``options.max_file_bytes``, before opening it; returns the size."""
    return check_file(path, options.max_file_bytes, label if label is not None else Path(path).name)


def check_voxels(name: str, shape, bytes_per_voxel: float, options: LoadOptions, what: str = "the volume") -> None:
    """Refuse a volume of ``shape`` over the voxel or image-data budget (before decoding it)."""
    n = 1
    for s in shape:
        n *= max(int(s), 0)
    dims = "x".join(str(int(s)) for s in shape)
    if n > options.max_voxels:
        raise InputError(f"{name}: {what} has {dims} = {n / 1e6:.0f} million voxels, over the limit of "
                         f"{options.max_voxels / 1e6:.0f} million voxels", code="image_too_large")
    nbytes = n * bytes_per_voxel
    if nbytes > options.max_image_bytes:
        raise InputError(f"{name}: {what} holds {human_bytes(nbytes)} of image data ({dims} voxels), over the limit "
                         f"of {human_bytes(options.max_image_bytes)} of image data", code="image_too_large")


def replace_non_finite(arr, name: str, options: LoadOptions) -> dict | None:
    """Set NaN / infinite voxels of a float array to -1024 HU (air), in place, and return the
    ``non_finite_voxels`` warning saying how many; refuse (``non_finite_voxels``) when they are
    more than ``options.max_non_finite_fraction`` of the volume. Scanned slab by slab (no
    whole-volume temporary); integer arrays cannot hold them."""
    import numpy as np

    from pulmo.ct.volume import warning

    if not np.issubdtype(arr.dtype, np.floating) or arr.size == 0:
        return None
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(1, -1)
    step = max(1, (1 << 22) // max(1, flat.shape[1]))
    n = 0
    for k in range(0, flat.shape[0], step):
        part = flat[k:k + step]
        bad = ~np.isfinite(part)
        c = int(np.count_nonzero(bad))
        if c:
            part[bad] = -1024.0
            n += c
    if not n:
        return None
    share = n / arr.size
    if share > options.max_non_finite_fraction:
        raise InputError(f"{name}: {100 * share:.1f} % of the voxels ({n} of {arr.size}) are not finite numbers "
                         f"(NaN or infinite), over the limit of {100 * options.max_non_finite_fraction:g} %; the "
                         "image is damaged or is not a CT in Hounsfield units", code="non_finite_voxels")
    return warning("non_finite_voxels", f"{n} voxel(s) ({100 * share:.2g} % of the volume) were not finite numbers "
                   "(NaN or infinite) and were set to -1024 HU (air)", n_voxels=n)
