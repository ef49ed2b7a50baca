"""DICOM series: scan a folder, list and choose series, sort, convert to HU.

Series selection: images are grouped by SeriesInstanceUID (or, when absent, by
study/series number/description/orientation/matrix). Localizers/scouts
(ImageType LOCALIZER/SCOUT), non-image objects and non-axial reformats are not
eligible; among eligible CT series the one with the most slices wins (ties: the
thinnest slices). ``LoadOptions.series_uid`` overrides the choice.

Slices are sorted by their position along the slice normal (ImagePositionPatient
projected on the cross product of the ImageOrientationPatient vectors), never by
file name or InstanceNumber. Gaps (missing slices), uneven spacing and gantry
tilt are detected; the volume is then resampled onto a uniform orthogonal grid
and a warning says so.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from pulmo.ct.io.options import LoadOptions, check_size
from pulmo.ct.volume import CTVolume, Geometry, canonicalise, warning
from pulmo.errors import InputError

CT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
ENHANCED_CT = {"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
HU_MIN, HU_MAX = -1024.0, 3071.0


@dataclass
class SeriesInfo:
    """One candidate series (headers only; no pixel data)."""

    key: str
    series_uid: str | None
    modality: str
    description: str
    orientation: str
    rows: int
    cols: int
    slice_thickness: float | None
    image_type: str
    headers: list = field(default_factory=list)
    paths: list = field(default_factory=list)
    reason: str | None = None  # why it is not eligible (None: eligible)

    def summary(self) -> dict:
        return {
            "series_uid": self.series_uid, "modality": self.modality, "description": self.description,
            "images": len(self.paths), "orientation": self.orientation, "matrix": f"{self.rows}x{self.cols}",
            "slice_thickness_mm": self.slice_thickness, "image_type": self.image_type, "eligible": self.reason is None,
            "reason": self.reason,
        }


@dataclass
class DicomSeries:
    """The chosen series as loaded: headers sorted by position (pixel data dropped)."""

    headers: list
    positions: np.ndarray  # (n, 3) LPS ImagePositionPatient, sorted
    row_dir: np.ndarray  # IOP[:3]: direction of increasing column index
    col_dir: np.ndarray  # IOP[3:]: direction of increasing row index
    normal: np.ndarray
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing)

    @property
    def series_uid(self) -> str | None:
        return str(self.headers[0].get("SeriesInstanceUID", "")) or None


def _orientation_name(iop) -> tuple[str, np.ndarray | None]:
    try:
        r = np.array([float(v) for v in iop[:3]])
        c = np.array([float(v) for v in iop[3:6]])
    except (TypeError, ValueError, IndexError):
        return "unknown", None
    n = np.cross(r, c)
    if not np.isfinite(n).all() or np.linalg.norm(n) < 1e-3:
        return "unknown", None
    n = n / np.linalg.norm(n)
    axis = int(np.argmax(np.abs(n)))
    if abs(n[axis]) < 0.8:
        return "oblique", n
    return ("sagittal", "coronal", "axial")[axis], n


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_header(path: Path, options: LoadOptions):
    """Header of one file, or None when it is not DICOM. Corrupt DICOM raises InputError."""
    check_size(path, options)
    magic = _is_dicom_file(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=not magic)
    except InvalidDicomError:
        return None
    except Exception as exc:  # noqa: BLE001 - any parser failure is a corrupt file
        if magic:
            raise InputError(f"{path.name}: truncated or corrupt DICOM file ({type(exc).__name__}: {exc})") from exc
        return None
    if not magic and ("SOPClassUID" not in ds and "Rows" not in ds):
        return None  # some other file that pydicom happened to parse with force=True
    return ds


def scan(paths: list[Path], options: LoadOptions) -> tuple[list[SeriesInfo], int]:
    """Group the DICOM files among ``paths`` into series. Returns (series, n_non_dicom)."""
    groups: dict[str, SeriesInfo] = {}
    skipped = 0
    for path in paths:
        ds = read_header(path, options)
        if ds is None:
            skipped += 1
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        orient, _ = _orientation_name(ds.get("ImageOrientationPatient"))
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        key = uid or "no-uid:{}/{}/{}/{}/{}x{}".format(
            ds.get("StudyInstanceUID", ""), ds.get("SeriesNumber", ""), ds.get("SeriesDescription", ""),
            orient, rows, cols)
        itype = "\\".join(str(v) for v in (ds.get("ImageType") or []))
        if itype and any(t in itype.upper() for t in ("LOCALIZER", "SCOUT", "TOPOGRAM")):
            key += "/localizer"
        if key not in groups:
            modality = str(ds.get("Modality", "") or "")
            sop = str(ds.get("SOPClassUID", "") or "")
            if not modality and sop in CT_SOP_CLASSES:
                modality = "CT"
            th = ds.get("SliceThickness")
            groups[key] = SeriesInfo(
                key=key, series_uid=uid or None, modality=modality or "unknown",
                description=str(ds.get("SeriesDescription", "") or ""), orientation=orient, rows=rows, cols=cols,
                slice_thickness=float(th) if th not in (None, "") else None, image_type=itype)
        info = groups[key]
        info.headers.append(ds)
        info.paths.append(path)
    for info in groups.values():
        first = info.headers[0]
        sop = str(first.get("SOPClassUID", "") or "")
        if info.modality != "CT":
            info.reason = f"modality {info.modality}, not CT"
        elif "/localizer" in info.key:
            info.reason = "localizer/scout image"
        elif sop in ENHANCED_CT:
            info.reason = "enhanced (multi-frame) CT is not supported yet"
        elif "PixelData" not in first and info.rows == 0:
            info.reason = "no image data"
        elif info.orientation != "axial":
            info.reason = f"{info.orientation} images (an axial series is needed)"
    return sorted(groups.values(), key=lambda s: -len(s.paths)), skipped


def choose(series: list[SeriesInfo], options: LoadOptions, n_skipped: int, where: str) -> SeriesInfo:
    if not series:
        raise InputError(
            f"{where}: no DICOM images found ({n_skipped} file(s) checked, none is DICOM)"
            if n_skipped else f"{where}: the folder is empty")
    if options.series_uid:
        for s in series:
            if s.series_uid == options.series_uid:
                if s.reason:
                    raise InputError(f"series {options.series_uid} cannot be analysed: {s.reason}")
                return s
        raise InputError(f"series {options.series_uid} not found; available: "
                         + "; ".join(f"{s.series_uid} ({s.description or 'no description'}, {len(s.paths)} images)"
                                     for s in series))
    eligible = [s for s in series if s.reason is None]
    if not eligible:
        found = "; ".join(f"{s.modality} {s.description or ''} ({len(s.paths)} images): {s.reason}" for s in series)
        raise InputError(f"{where}: no axial CT series to analyse. Found: {found}")
    eligible.sort(key=lambda s: (-len(s.paths), s.slice_thickness or 99.0))
    return eligible[0]


def _pixels(path: Path, options: LoadOptions) -> tuple[np.ndarray, list]:
    try:
        ds = pydicom.dcmread(path, force=not _is_dicom_file(path))
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path.name}: cannot decode the pixel data ({type(exc).__name__}: {exc}); "
                         "the file may be truncated or use an unsupported compression") from exc
    if arr.ndim != 2:
        raise InputError(f"{path.name}: expected a single-frame greyscale image, got pixel array {arr.shape}")
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    notes = []
    if slope is None or intercept is None:
        if options.rescale_slope is not None or options.rescale_intercept is not None:
            slope = options.rescale_slope if options.rescale_slope is not None else 1.0
            intercept = options.rescale_intercept if options.rescale_intercept is not None else 0.0
            notes.append("rescale-given")
        else:
            slope, intercept = 1.0, 0.0
            notes.append("rescale-missing")
    hu = arr.astype(np.float32) * np.float32(float(slope)) + np.float32(float(intercept))
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    del ds.PixelData
    return hu, [ds, notes]


def load_series(info: SeriesInfo, options: LoadOptions, source: str) -> CTVolume:
    """Read pixel data of the chosen series and build the canonical volume."""
    warnings: list[dict] = []
    headers = info.headers
    first = headers[0]
    _, normal = _orientation_name(first.get("ImageOrientationPatient"))
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    row_dir, col_dir = iop[:3], iop[3:]
    try:
        pos = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
        ps = [float(v) for v in first.PixelSpacing]
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError(f"{source}: images lack ImagePositionPatient/PixelSpacing; cannot build a volume") from exc
    for h in headers[1:]:
        other = np.array([float(v) for v in h.ImageOrientationPatient])
        if np.abs(other - iop).max() > 1e-3:
            raise InputError(f"{source}: images of the series have different orientations")
        if (int(h.Rows), int(h.Columns)) != (info.rows, info.cols):
            raise InputError(f"{source}: images of the series have different matrix sizes")
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    along, pos = along[order], pos[order]
    paths = [info.paths[i] for i in order]
    # Duplicate positions (e.g. two reconstructions in one series): keep the first.
    if len(along) > 1:
        keep = np.concatenate([[True], np.diff(along) > 1e-3])
        if not keep.all():
            n_dup = int((~keep).sum())
            warnings.append(warning("duplicate_slices", f"{n_dup} image(s) repeat a slice position; only the first of each was used"))
            along, pos = along[keep], pos[keep]
            paths = [p for p, k in zip(paths, keep) if k]
    with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        results = list(pool.map(lambda p: _pixels(p, options), paths))
    stack = np.stack([r[0] for r in results])
    sorted_headers = [r[1][0] for r in results]
    notes = {note for r in results for note in r[1][1]}
    del results
    if "rescale-missing" in notes:
        if stack.min() > -500:
            raise InputError(
                f"{source}: the images have no RescaleSlope/RescaleIntercept and the stored values "
                f"(minimum {stack.min():.0f}) do not look like Hounsfield units; give the rescale intercept "
                "(often -1024) if you know the scanner's convention", code="rescale_missing")
        warnings.append(warning("rescale_missing", "images have no rescale tags; stored values were taken as "
                                "Hounsfield units (slope 1, intercept 0) because they contain air-like values"))
    if "rescale-given" in notes:
        warnings.append(warning("rescale_assumed", "images have no rescale tags; the slope/intercept given in the "
                                "load options were used"))
    spacing_z, uniform, n_missing = _z_spacing(along, first)
    meta = _meta(first, spacing_z)
    if not uniform:
        if n_missing:
            warnings.append(warning("missing_slices", f"{n_missing} slice(s) missing from the series (gaps "
                                    f"in slice positions); the gap was filled by linear interpolation, so volumes "
                                    "there are estimates", n_missing=n_missing))
        else:
            warnings.append(warning("uneven_spacing", "slice spacing is uneven; the volume was resampled onto a "
                                    f"uniform {spacing_z:.2f} mm grid"))
        stack, along_new = _resample_z(stack, along, spacing_z)
        pos = pos[0] + np.outer(along_new - along[0], normal) + _inplane_drift(pos, along, along_new, normal)
    # Native stack geometry: columns (row_dir, col_dir, slice step).
    step = (pos[-1] - pos[0]) / (len(pos) - 1) if len(pos) > 1 else normal * spacing_z
    tilt_deg = float(np.degrees(np.arccos(np.clip(abs(step @ normal) / max(np.linalg.norm(step), 1e-9), -1, 1))))
    direction = np.column_stack([row_dir, col_dir, step / np.linalg.norm(step)])
    series = DicomSeries(headers=sorted_headers, positions=np.array(
        [[float(v) for v in h.ImagePositionPatient] for h in sorted_headers]),
        row_dir=row_dir, col_dir=col_dir, normal=normal, pixel_spacing=(ps[0], ps[1]))
    meta.update(series_uid=info.series_uid, series_description=info.description, n_images=len(sorted_headers))
    if tilt_deg <= 0.5 and np.abs(direction - np.eye(3)).max() < 1e-4:
        # The common case (HFS/FFS axial): the sorted stack already is the canonical grid; no copy.
        sp = (float(np.linalg.norm(step)), ps[0], ps[1])
        native = Geometry((stack.shape[2], stack.shape[1], stack.shape[0]), sp[::-1], tuple(pos[0]))
        meta["resampled"] = not uniform
        return CTVolume(array=stack, spacing=sp, origin=tuple(float(v) for v in pos[0]), is_hu=True, native=native,
                        native_exact=True, source=source, kind="dicom", dicom=series, warnings=warnings, meta=meta)
    img = sitk.GetImageFromArray(stack)
    del stack
    img.SetSpacing([ps[1], ps[0], float(np.linalg.norm(step))])
    img.SetOrigin(pos[0].tolist())
    img.SetDirection(direction.ravel().tolist())
    exact = uniform
    if tilt_deg > 0.5:
        warnings.append(warning("gantry_tilt", f"gantry tilt of {tilt_deg:.1f} degrees; the volume was resampled "
                                "onto an orthogonal grid", degrees=round(tilt_deg, 2)))
        direction_o = np.column_stack([row_dir, col_dir, normal])
        img.SetDirection(direction.ravel().tolist())
        ref = _orthogonal_reference(img, direction_o, spacing_z)
        img = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, HU_MIN)
        exact = False
    native = Geometry.of(img)
    canon, exact2 = canonicalise(img)
    arr = sitk.GetArrayFromImage(canon)
    meta["resampled"] = not (exact and exact2)
    return CTVolume(
        array=arr, spacing=tuple(canon.GetSpacing()[::-1]), origin=tuple(canon.GetOrigin()), is_hu=True,
        native=native, native_exact=exact2, source=source, kind="dicom", dicom=series, warnings=warnings, meta=meta)


def _z_spacing(along: np.ndarray, first) -> tuple[float, bool, int]:
    if len(along) < 2:
        th = first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0
        return float(th), True, 0
    d = np.diff(along)
    med = float(np.median(d))
    missing = int(np.sum(np.maximum(np.round(d / med) - 1, 0)[d > 1.5 * med]))
    uniform = bool(np.abs(d - med).max() <= 0.05 * med + 0.01)
    return med, uniform, missing


def _resample_z(stack: np.ndarray, along: np.ndarray, dz: float) -> tuple[np.ndarray, np.ndarray]:
    n_new = int(round((along[-1] - along[0]) / dz)) + 1
    target = along[0] + dz * np.arange(n_new)
    idx = np.clip(np.searchsorted(along, target, side="right") - 1, 0, len(along) - 2)
    w = ((target - along[idx]) / (along[idx + 1] - along[idx])).astype(np.float32)
    w = np.clip(w, 0, 1)
    out = np.empty((n_new,) + stack.shape[1:], np.float32)
    for k in range(n_new):
        out[k] = stack[idx[k]] * (1 - w[k]) + stack[idx[k] + 1] * w[k]
    return out, target


def _inplane_drift(pos, along, along_new, normal) -> np.ndarray:
    """In-plane offset of each resampled slice (non-zero only with gantry tilt)."""
    inplane = pos - np.outer(pos @ normal, normal)
    return np.column_stack([np.interp(along_new, along, inplane[:, i]) for i in range(3)]) - inplane[0]


def _orthogonal_reference(img: sitk.Image, direction: np.ndarray, dz: float) -> sitk.Image:
    size = np.array(img.GetSize())
    corners = np.array([img.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))
                        for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    local = corners @ direction  # coordinates along the orthogonal axes
    lo, hi = local.min(0), local.max(0)
    sp = np.array([img.GetSpacing()[0], img.GetSpacing()[1], dz])
    new_size = np.round((hi - lo) / sp).astype(int) + 1
    ref = sitk.Image([int(s) for s in new_size], img.GetPixelID())
    ref.SetSpacing(sp.tolist())
    ref.SetDirection(direction.ravel().tolist())
    ref.SetOrigin((direction @ lo).tolist())
    return ref


def _meta(ds, spacing_z: float) -> dict:
    def num(name):
        v = ds.get(name)
        try:
            return float(v) if v not in (None, "") else None
        except (TypeError, ValueError):
            return None

    return {
        "modality": str(ds.get("Modality", "") or "CT"),
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "body_part": str(ds.get("BodyPartExamined", "") or ""),
        "study_description": str(ds.get("StudyDescription", "") or ""),
        "slice_thickness_mm": num("SliceThickness") or spacing_z,
        "kvp": num("KVP"), "tube_current_ma": num("XRayTubeCurrent"), "exposure_mas": num("Exposure"),
        "ctdi_vol_mgy": num("CTDIvol"), "convolution_kernel": str(ds.get("ConvolutionKernel", "") or ""),
    }


def list_files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") or f.upper() == "DICOMDIR":
                continue
            p = Path(dirpath) / f
            if p.is_file():  # dangling or looping symlinks, sockets, ... are not files to read
                out.append(p)
    return out
