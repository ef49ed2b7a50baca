"""Non-DICOM inputs: NIfTI / NRRD / MHA volumes (SimpleITK), 2D PNG/JPG images, zip archives.

Every volume file is checked before its pixels are decoded (:func:`load_volume_file`): a
regular file within ``max_file_bytes``; a header of bounded size (NIfTI ``vox_offset``, the
text header of NRRD / MetaImage) whose detached data file, if any, is a regular file within
budget; then the header alone is read (``ImageFileReader.ReadImageInformation``) and the
volume refused when its voxel count, its bytes of image data, its spacing, direction or
physical extent are out of bounds; only then is it read.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pulmo.ct.io.grey_image import read_gray_image
from pulmo.ct.io.options import (
    LoadOptions,
    check_size,
    check_voxels,
    replace_non_finite,
)
from pulmo.ct.volume import (
    CTVolume,
    Geometry,
    canonical_array,
    canonical_index,
    oblique_reference,
    warning,
)
from pulmo.errors import InputError
from pulmo.io.archives import extract_zip
from pulmo.io.limits import (
    MiB,
    check_file,
    check_nifti_header,
    human_bytes,
    open_regular,
)

VOLUME_SUFFIXES = {".nii": "nifti", ".nii.gz": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mha"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}

#: Largest header read before the pixel data: NIfTI header with its extensions (``vox_offset``),
#: the text header of NRRD / MetaImage files (real ones are a few KiB).
MAX_HEADER_BYTES = 16 * MiB
_TEXT_HEADER_BYTES = 1 * MiB


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def _detached_data(path: Path, name: str, options: LoadOptions) -> None:
    """NRRD / MetaImage headers may name another file that holds the pixels: it must be a
    regular file (never a FIFO or a device) within budget; lists and patterns are refused."""
    suf = suffix_of(path)
    if suf in (".mha", ".mhd"):
        with open_regular(path, name) as fh:
            raw = fh.read(_TEXT_HEADER_BYTES + 1)
        m = re.search(rb"^\s*ElementDataFile\s*=\s*([^\r\n]*)", raw, re.M)
        if m is None:
            if len(raw) > _TEXT_HEADER_BYTES:
                raise InputError(f"{name}: no ElementDataFile in the first {human_bytes(_TEXT_HEADER_BYTES)}, over "
                                 f"the limit of {human_bytes(_TEXT_HEADER_BYTES)} of header", code="image_too_large")
            return  # the reader reports the malformed header
        value = m.group(1).decode("latin-1").strip()
        if value.upper() == "LOCAL":
            return
        files = [value]
    elif suf in (".nrrd", ".nhdr"):
        with open_regular(path, name) as fh:
            raw = fh.read(_TEXT_HEADER_BYTES + 1)
        cut = min((c for c in (raw.find(b"\n\n"), raw.find(b"\r\n\r\n")) if c >= 0), default=-1)
        if cut < 0:
            if len(raw) > _TEXT_HEADER_BYTES:
                raise InputError(f"{name}: no end of header in the first {human_bytes(_TEXT_HEADER_BYTES)}, over the "
                                 f"limit of {human_bytes(_TEXT_HEADER_BYTES)} of header", code="image_too_large")
            if suf == ".nrrd":
                return
            cut = len(raw)
        m = re.search(rb"^data ?file\s*:\s*([^\r\n]*)", raw[:cut], re.M | re.I)
        if m is None:
            return
        value = m.group(1).decode("latin-1").strip()
        files = [value]
    else:
        return
    if not value or value.upper().startswith("LIST") or "%" in value or len(value.split()) > 1:
        raise InputError(f"{name}: the pixel data is split over several files ('{value}'), which is not supported; "
                         "save the volume as one file (NIfTI, NRRD or MHA)")
    for f in files:
        target = Path(f) if Path(f).is_absolute() else path.parent / f
        check_file(target, options.max_file_bytes, f"{name}: its data file {f}", what="file")


def _nifti_non_finite(path: Path, name: str, options: LoadOptions) -> np.ndarray | None:
    """Index (i, j, k) of every NaN / infinite voxel of a floating-point NIfTI, counted from the
    file itself: ITK's NIfTI reader silently turns them into 0 (water in HU). One streamed pass
    (gzip or not, never the whole volume in memory); refused (``non_finite_voxels``) as soon as
    they are more than ``options.max_non_finite_fraction`` of the voxels. None for integer data."""
    import gzip

    import nibabel as nib

    with open_regular(path, name) as fh:
        stream = gzip.GzipFile(fileobj=fh) if fh.read(2) == b"\x1f\x8b" else fh
        fh.seek(0)
        raw = stream.read(540)
        try:
            size = struct.unpack("<i", raw[:4])[0]
            hdr_class = nib.Nifti2Header if size in (540, 0x1C020000) else nib.Nifti1Header
            hdr = hdr_class(binaryblock=raw[:hdr_class.template_dtype.itemsize])
            dtype = hdr.get_data_dtype()
            shape = tuple(int(d) for d in hdr.get_data_shape())
            offset = int(hdr["vox_offset"])
        except Exception:  # noqa: BLE001 - the reader reports a malformed header
            return None
        if dtype.kind != "f" or not shape:
            return None
        total = int(np.prod(shape))
        limit = options.max_non_finite_fraction * total
        carry = raw[offset:] if offset < len(raw) else b""
        stream.read(max(0, offset - len(raw)))
        chunk = max(1, (4 << 20) // dtype.itemsize)
        found, done = [], 0
        while done < total:
            want = min(chunk, total - done) * dtype.itemsize
            block = carry + stream.read(max(0, want - len(carry)))
            carry = b""
            if len(block) < dtype.itemsize:
                break
            vals = np.frombuffer(block[: len(block) - len(block) % dtype.itemsize], dtype=dtype)
            bad = np.flatnonzero(~np.isfinite(vals))
            if bad.size:
                found.append(bad + done)
                if sum(f.size for f in found) > limit:
                    raise InputError(f"{name}: more than {100 * options.max_non_finite_fraction:g} % of the voxels are "
                                     "not finite numbers (NaN or infinite), over the limit of "
                                     f"{100 * options.max_non_finite_fraction:g} %; the image is damaged or is not a "
                                     "CT in Hounsfield units", code="non_finite_voxels")
            done += vals.size
    if not found:
        return None
    flat = np.concatenate(found)
    return np.stack(np.unravel_index(flat, shape[:3] + (1,) * (3 - len(shape[:3])) if len(shape) < 3 else shape,
                                     order="F")[:3], axis=1)


def _bytes_per_voxel(reader: sitk.ImageFileReader) -> float:
    text = sitk.GetPixelIDValueAsString(reader.GetPixelID()).lower()
    m = re.search(r"(\d+)-bit", text)
    bits = int(m.group(1)) if m else 64
    return bits / 8 * (2 if "complex" in text else 1) * max(1, reader.GetNumberOfComponents())


def check_geometry(name: str, size, spacing, origin, direction, options: LoadOptions,
                   bytes_per_voxel: float = 4.0) -> None:
    """Refuse a grid that cannot be a CT before any pixel is read: a size of 0, spacing that is
    not a positive finite number, a direction that is not orthonormal, an origin that is not
    finite, a physical extent over ``max_extent_mm``; then the voxel and image-data budgets, of
    the grid itself and of the LPS grid an oblique one is resampled onto."""
    size = [int(s) for s in size]
    if any(s <= 0 for s in size):
        raise InputError(f"{name}: an empty image (size {'x'.join(map(str, size))})")
    check_voxels(name, size, bytes_per_voxel, options)
    sp = np.asarray(spacing, float)
    if not (np.isfinite(sp).all() and (sp > 0).all()):
        raise InputError(f"{name}: the voxel spacing {', '.join(f'{v:g}' for v in sp)} is not made of positive "
                         "numbers", code="bad_geometry")
    if not np.isfinite(np.asarray(origin, float)).all():
        raise InputError(f"{name}: the image origin is not a finite position", code="bad_geometry")
    d = np.asarray(direction, float)
    n = len(size)
    if d.size != n * n or not np.isfinite(d).all() or np.abs(d.reshape(n, n).T @ d.reshape(n, n) - np.eye(n)).max() > 1e-3:
        raise InputError(f"{name}: the image orientation (direction cosines) is not a rotation; the header is "
                         "damaged", code="bad_geometry")
    extent = np.asarray(size[:3], float) * sp[:3]
    if extent.max() > options.max_extent_mm:
        raise InputError(f"{name}: the image spans {extent.max():.0f} mm, over the limit of "
                         f"{options.max_extent_mm:.0f} mm of physical extent", code="image_too_large")
    if n == 3 and not Geometry(tuple(size), tuple(sp), tuple(origin), tuple(d)).axis_aligned:
        new_size, _, _ = oblique_reference(size, sp, origin, d)
        check_voxels(name, [int(s) for s in new_size], 4.0, options,
                     what="the volume resampled onto an LPS-aligned grid")


def load_volume_file(path: Path, options: LoadOptions) -> CTVolume:
    """NIfTI/NRRD/MHA through SimpleITK (NIfTI scl_slope/inter are applied by the reader), within
    the budgets of ``options`` checked from the header before the pixels are read."""
    name = path.name
    check_size(path, options)
    if suffix_of(path) in (".nii", ".nii.gz"):
        check_nifti_header(path, MAX_HEADER_BYTES, name)
    if suffix_of(path) == ".nii.gz":  # given a.nii.gz, ITK's NIfTI library reads a.nii (or a.hdr) if it exists
        base = path.name[: -len(".nii.gz")]
        for other in (base + ".nii", base + ".hdr", base + ".NII", base + ".HDR"):
            if (path.parent / other).exists():
                raise InputError(f"{name}: the file {other} lies beside it, and the NIfTI reader would read that one "
                                 "instead; move one of them to another folder", code="ambiguous_input")
    _detached_data(path, name, options)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        if reader.GetNumberOfComponents() != 1:
            raise InputError(f"{name}: a colour/vector image is not a CT volume")
        if reader.GetDimension() > 3 and any(s > 1 for s in reader.GetSize()[3:]):
            raise InputError(f"{name}: a {reader.GetDimension()}D image (size "
                             f"{'x'.join(str(s) for s in reader.GetSize())}); a CT volume has 3 dimensions")
        check_geometry(name, reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(),
                       options, _bytes_per_voxel(reader))
        non_finite = None
        if suffix_of(path) in (".nii", ".nii.gz"):
            non_finite = _nifti_non_finite(path, name, options)
        img = reader.Execute()
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{name}: cannot read the image ({msg}); the file may be truncated or corrupt") from exc
    return volume_from_image(img, source=str(path), kind=VOLUME_SUFFIXES.get(suffix_of(path), "volume"),
                             options=options, non_finite=non_finite)


def volume_from_image(img: sitk.Image, source: str = "image in memory", kind: str = "volume",
                      options: LoadOptions | None = None, non_finite: np.ndarray | None = None) -> CTVolume:
    """A SimpleITK image of a CT in Hounsfield units (any orientation) as a :class:`CTVolume` on
    the canonical LPS grid; the image's own grid is kept as the volume's native grid. Its
    geometry is checked against the budgets of ``options`` (default :class:`LoadOptions`);
    non-finite voxels are set to -1024 HU with a warning, or refused when many."""
    options = options or LoadOptions()
    name = Path(source).name or source
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name}: a colour/vector image is not a CT volume")
    if img.GetDimension() == 2:
        img = sitk.JoinSeries(img)
    if img.GetDimension() != 3:
        raise InputError(f"{name}: expected a 3D volume, got {img.GetDimension()} dimensions")
    check_geometry(name, img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection(), options,
                   float(img.GetSizeOfPixelComponent()))
    native = Geometry.of(img)
    warnings = []
    if non_finite is not None and len(non_finite) and img.GetDimension() == 3 and not native.axis_aligned:
        # oblique: set them to air on the native grid, before it is resampled
        fixed_arr = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
        fixed_arr[non_finite[:, 2], non_finite[:, 1], non_finite[:, 0]] = -1024.0
        fixed_img = sitk.GetImageFromArray(fixed_arr)
        fixed_img.CopyInformation(img)
        img = fixed_img
        del fixed_arr
    arr, spacing, origin, exact = canonical_array(img)
    if non_finite is not None and len(non_finite):
        if exact:  # the reader made them 0 (water): set them to air where they are on the canonical grid
            arr[canonical_index(native, non_finite)] = -1024.0
        warnings.append(warning(
            "non_finite_voxels", f"{len(non_finite)} voxel(s) ({100 * len(non_finite) / arr.size:.2g} % of the "
            "volume) were not finite numbers (NaN or infinite) and were set to -1024 HU (air)",
            n_voxels=int(len(non_finite))))
    del img
    if not exact:
        warnings.append(warning("oblique", "the volume is oblique; it was resampled onto an LPS-aligned grid"))
    fixed = replace_non_finite(arr, name, options)
    if fixed:
        warnings.append(fixed)
    vol = CTVolume(array=arr, spacing=spacing, origin=origin, is_hu=True,
                   native=native, native_exact=exact, source=source, kind=kind, warnings=warnings,
                   meta={"modality": "CT (assumed)", "slice_thickness_mm": float(spacing[0])})
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
    """Extract ``zip_path`` into ``dest`` refusing path traversal, links, encryption, unknown
    compression, too many members, oversized members or totals (bytes actually extracted) and
    zip bombs (:func:`pulmo.io.archives.extract_zip`)."""
    check_size(zip_path, options)
    extract_zip(zip_path, dest, max_member_bytes=options.max_file_bytes, max_total_bytes=options.max_total_bytes,
                max_members=options.max_files, max_ratio=options.max_compression_ratio)
