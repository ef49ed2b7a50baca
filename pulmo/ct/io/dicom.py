"""DICOM series: scan a folder, list and choose series, sort, convert to HU.

Series selection: images are grouped by SeriesInstanceUID (or, when absent, by
study/series number/description/orientation/matrix). Localizers/scouts
(ImageType LOCALIZER/SCOUT), non-image objects and non-axial reformats are not
eligible; among eligible CT series the one with the most slices wins (ties: the
thinnest slices). ``LoadOptions.series_uid`` overrides the choice.

Geometry is checked, not trusted: every image of the chosen series must have a
finite ImagePositionPatient, an ImageOrientationPatient of two perpendicular unit
vectors, a positive PixelSpacing and Rows/Columns, and all must agree on the
orientation, the matrix and the pixel spacing; the images that do not are named
in the message (:data:`SHOWN` of them, "and N more").

Slices are sorted by their position along the slice normal (ImagePositionPatient
projected on the cross product of the ImageOrientationPatient vectors), never by
file name or InstanceNumber. Gaps are never bridged across more than a few
slices: where the missing stretch between two neighbouring slices is longer than
:data:`GAP_MAX_SLICES` slice spacings or :data:`GAP_MAX_MM` mm, the series is split
there and its largest contiguous part is analysed with a ``series_split`` warning
naming what was left out (refused when that part has fewer than
:data:`MIN_PART_SLICES` images). Smaller gaps, uneven spacing and gantry tilt are
resampled onto a uniform orthogonal grid with a warning.

Budgets (``LoadOptions``), checked from the headers before any pixel is decoded:
the number of slices, the physical extent, the voxels (also of any resampled grid)
and the bytes of image data; each slice file may not be larger than its image
(uncompressed) plus :data:`SLICE_OVERHEAD_BYTES`, and a compressed image must
declare the matrix of its header.
"""

from __future__ import annotations

import struct
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial

from pulmo.ct.io.options import LoadOptions, check_size, check_voxels
from pulmo.ct.volume import (
    CTVolume,
    Geometry,
    canonical_array,
    oblique_reference,
    warning,
)
from pulmo.errors import InputError
from pulmo.io.limits import MiB, human_bytes, walk_files

CT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
ENHANCED_CT = {"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
HU_MIN, HU_MAX = -1024.0, 3071.0

#: Gap rule: a missing stretch longer than this many slice spacings, or this many mm, splits the series.
GAP_MAX_SLICES = 3
GAP_MAX_MM = 10.0
#: The part of a split series that is analysed must hold at least this many images.
MIN_PART_SLICES = 10
#: Slices closer than this (mm, median spacing) are not a CT series.
MIN_SLICE_SPACING_MM = 0.1
#: Largest matrix side (Rows, Columns) of a CT image.
MAX_MATRIX = 4096
#: A slice file may hold this much beside its (uncompressed) image: header, overlays, private data.
SLICE_OVERHEAD_BYTES = 16 * MiB
#: Elements larger than this are not read with the header (read only if used).
DEFER_BYTES = 1 * MiB
#: Most elements read from one file (a CT header has a few hundred).
MAX_ELEMENTS = 10_000
#: Images named in a message, before "and N more".
SHOWN = 5


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


def _get(ds, name: str, default=None):
    """A header value, or ``default`` when it is absent or cannot be parsed (malformed values
    are the file's problem, reported where they matter, never a crash)."""
    try:
        v = ds.get(name, default)
    except Exception:  # noqa: BLE001 - pydicom raises on some malformed values when read
        return default
    return default if v is None else v


def _floats(ds, name: str, count: int) -> np.ndarray | None:
    """``count`` finite numbers from a multi-valued header element, or None."""
    v = _get(ds, name)
    try:
        vals = np.array([float(x) for x in (v if not isinstance(v, (str, bytes, int, float)) else [v])], float)
    except (TypeError, ValueError, OverflowError):
        return None
    if vals.shape != (count,) or not np.isfinite(vals).all():
        return None
    return vals


def _int(ds, name: str) -> int | None:
    v = _get(ds, name)
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return None


def _float(ds, name: str) -> float | None:
    v = _get(ds, name)
    if v in (None, ""):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if np.isfinite(f) else None


def _orientation_name(iop) -> tuple[str, np.ndarray | None]:
    try:
        r = np.array([float(v) for v in iop[:3]])
        c = np.array([float(v) for v in iop[3:6]])
    except (TypeError, ValueError, IndexError, OverflowError):
        return "unknown", None
    if r.shape != (3,) or c.shape != (3,):
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


def _read(path: Path, force: bool, pixels: bool):
    """``pydicom.dcmread`` that reads at most :data:`MAX_ELEMENTS` elements, skips values over
    :data:`DEFER_BYTES` (read only if used) and stops before the pixel data (``pixels`` False)
    or right after it: whatever follows the image in the file is never parsed."""
    count = 0

    def stop(tag, vr, length) -> bool:
        nonlocal count
        count += 1
        if count > MAX_ELEMENTS:
            raise InputError(f"{path.name}: a DICOM header of more than {MAX_ELEMENTS} elements, over the limit of "
                             f"{MAX_ELEMENTS} elements; the file is damaged or hostile", code="image_too_large")
        return tag >= 0x7FE00008 if not pixels else tag > 0x7FE00010

    with open(path, "rb") as fp:
        return read_partial(fp, stop, defer_size=DEFER_BYTES, force=force)


def read_header(path: Path, options: LoadOptions):
    """Header of one file, or None when it is not DICOM. Corrupt DICOM raises InputError.
    Special files are refused and large files checked before anything opens them; elements
    over :data:`DEFER_BYTES` are not read, nor more than :data:`MAX_ELEMENTS` elements."""
    check_size(path, options)
    magic = _is_dicom_file(path)
    try:
        ds = _read(path, force=not magic, pixels=False)
    except InvalidDicomError:
        return None
    except InputError:
        if magic:
            raise
        return None
    except Exception as exc:  # noqa: BLE001 - any parser failure is a corrupt file
        if magic:
            raise InputError(f"{path.name}: truncated or corrupt DICOM file ({type(exc).__name__}: {exc})") from exc
        return None
    try:
        if not magic and ("SOPClassUID" not in ds and "Rows" not in ds):
            return None  # some other file that pydicom happened to parse with force=True
    except Exception:  # noqa: BLE001
        return None
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
        uid = str(_get(ds, "SeriesInstanceUID", "") or "")
        orient, _ = _orientation_name(_get(ds, "ImageOrientationPatient"))
        rows, cols = _int(ds, "Rows") or 0, _int(ds, "Columns") or 0
        key = uid or "no-uid:{}/{}/{}/{}/{}x{}".format(
            _get(ds, "StudyInstanceUID", ""), _get(ds, "SeriesNumber", ""), _get(ds, "SeriesDescription", ""),
            orient, rows, cols)
        itype = _get(ds, "ImageType") or []
        itype = "\\".join(str(v) for v in ([itype] if isinstance(itype, str) else itype))
        if itype and any(t in itype.upper() for t in ("LOCALIZER", "SCOUT", "TOPOGRAM")):
            key += "/localizer"
        if key not in groups:
            modality = str(_get(ds, "Modality", "") or "")
            sop = str(_get(ds, "SOPClassUID", "") or "")
            if not modality and sop in CT_SOP_CLASSES:
                modality = "CT"
            groups[key] = SeriesInfo(
                key=key, series_uid=uid or None, modality=modality or "unknown",
                description=str(_get(ds, "SeriesDescription", "") or ""), orientation=orient, rows=rows, cols=cols,
                slice_thickness=_float(ds, "SliceThickness"), image_type=itype)
        info = groups[key]
        info.headers.append(ds)
        info.paths.append(path)
    for info in groups.values():
        first = info.headers[0]
        sop = str(_get(first, "SOPClassUID", "") or "")
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


# ----------------------------------------------------------------------------- geometry

def _slice_name(path: Path, ds) -> str:
    inst = _int(ds, "InstanceNumber")
    return f"{path.name} (instance {inst})" if inst is not None else path.name


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


@dataclass
class _Geometry:
    positions: np.ndarray  # (n, 3)
    iop: np.ndarray  # (6,)
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing)
    rows: int
    cols: int


def check_geometry(headers: list, paths: list[Path], source: str) -> _Geometry:
    """Validate every image's geometry and their agreement; :class:`InputError` (``bad_geometry``)
    naming the images that lack or disagree on ImagePositionPatient, ImageOrientationPatient,
    PixelSpacing, Rows/Columns."""
    n = len(headers)
    names = [_slice_name(p, h) for p, h in zip(paths, headers)]
    problems: dict[str, list[int]] = {}
    pos = np.zeros((n, 3))
    iop = np.zeros((n, 6))
    ps = np.zeros((n, 2))
    rc = np.zeros((n, 2), np.int64)

    def bad(what: str, i: int) -> None:
        problems.setdefault(what, []).append(i)

    for i, h in enumerate(headers):
        v = _floats(h, "ImagePositionPatient", 3)
        if v is None:
            bad("no ImagePositionPatient (3 finite numbers)", i)
        else:
            pos[i] = v
        o = _floats(h, "ImageOrientationPatient", 6)
        if o is None:
            bad("no ImageOrientationPatient (6 finite numbers)", i)
        elif (abs(np.linalg.norm(o[:3]) - 1) > 0.01 or abs(np.linalg.norm(o[3:]) - 1) > 0.01
              or abs(float(o[:3] @ o[3:])) > 0.01):
            bad("an ImageOrientationPatient whose two vectors are not perpendicular unit vectors", i)
        else:
            iop[i] = o
        sp = _floats(h, "PixelSpacing", 2)
        if sp is None:
            bad("no PixelSpacing (2 finite numbers)", i)
        elif (sp <= 0).any():
            bad("a PixelSpacing of zero or below", i)
        else:
            ps[i] = sp
        r, c = _int(h, "Rows"), _int(h, "Columns")
        if r is None or c is None or r <= 0 or c <= 0:
            bad("no Rows/Columns (positive numbers)", i)
        elif max(r, c) > MAX_MATRIX:
            bad(f"a matrix over the limit of {MAX_MATRIX} pixels per side", i)
        else:
            rc[i] = (r, c)
    if problems:
        raise InputError(f"{source}: the images' geometry cannot be trusted: " + "; ".join(
            f"{len(idx)} of {n} image(s) have {what}: {_listed([names[i] for i in idx])}"
            for what, idx in problems.items()), code="bad_geometry")

    def odd_ones(keys: list, describe) -> None:
        common, _ = Counter(keys).most_common(1)[0]
        idx = [i for i, k in enumerate(keys) if k != common]
        if idx:
            problems[describe(common)] = idx

    odd_ones([tuple(np.round(o, 3)) for o in iop],
             lambda c: "an ImageOrientationPatient other than the series' " + "\\".join(f"{v:g}" for v in c))
    odd_ones([tuple(r) for r in rc], lambda c: f"a matrix other than the series' {c[0]}x{c[1]}")
    odd_ones([tuple(np.round(p / max(p.max(), 1e-9), 3)) + (round(float(p[0]), 3),) for p in ps],
             lambda c: f"a PixelSpacing other than the series' {c[-1]:g} mm")
    if problems:
        raise InputError(f"{source}: the images of the series disagree: " + "; ".join(
            f"{len(idx)} of {n} image(s) have {what}: {_listed([names[i] for i in idx])}"
            for what, idx in problems.items()), code="bad_geometry")
    first = Counter(tuple(r) for r in rc).most_common(1)[0][0]
    return _Geometry(pos, iop[0], (float(ps[0, 0]), float(ps[0, 1])), int(first[0]), int(first[1]))


def split_at_gaps(along: np.ndarray) -> tuple[list[tuple[int, int]], float]:
    """Contiguous parts ``[(start, stop), ...]`` of sorted slice positions, split where the
    missing stretch between two neighbours is longer than :data:`GAP_MAX_SLICES` spacings or
    :data:`GAP_MAX_MM` mm, and the median spacing."""
    if len(along) < 2:
        return [(0, len(along))], 0.0
    d = np.diff(along)
    med = float(np.median(d))
    missing = d - med
    cuts = [int(i) + 1 for i in np.nonzero((missing > GAP_MAX_SLICES * med) | (missing > GAP_MAX_MM))[0]]
    bounds = [0, *cuts, len(along)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:])], med


# ----------------------------------------------------------------------------- pixels

def _frame_size(data: bytes) -> tuple[int, int] | None:
    """(columns, rows) a compressed frame declares (JPEG/JPEG-LS SOF, JPEG 2000 SIZ), if found."""
    k = data.find(b"\xff\x4f\xff\x51")  # JPEG 2000: SOC then SIZ (possibly inside a JP2 box)
    if 0 <= k < 4096 and k + 24 <= len(data):
        xs, ys, xo, yo = struct.unpack(">4I", data[k + 8:k + 24])
        return xs - xo, ys - yo
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7):
            if i + 9 > len(data):
                return None
            rows, cols = struct.unpack(">HH", data[i + 5:i + 9])
            return cols, rows
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + length
    return None


def _check_pixel_header(path: Path, ds, geom: _Geometry) -> None:
    """Refuse an image whose pixel data would decode to more than its header's single frame."""
    name = path.name
    frames = _int(ds, "NumberOfFrames") or 1
    if frames > 1:
        raise InputError(f"{name}: a multi-frame image ({frames} frames); a CT series of single-frame images "
                         "is needed", code="bad_geometry")
    spp = _int(ds, "SamplesPerPixel") or 1
    if spp != 1:
        raise InputError(f"{name}: a colour image ({spp} samples per pixel), not a CT image")
    bits = _int(ds, "BitsAllocated") or 16
    if bits not in (1, 8, 16, 32, 64):
        raise InputError(f"{name}: {bits} bits allocated per pixel is not a CT image")
    try:
        compressed = ds.file_meta.TransferSyntaxUID.is_compressed
    except Exception:  # noqa: BLE001 - no or odd file meta: pydicom decides
        compressed = False
    if compressed and "PixelData" in ds:
        try:
            frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        except Exception:  # noqa: BLE001 - the decoder reports it
            return
        size = _frame_size(bytes(frame[:1 << 16]))
        if size is not None and (size[0] > geom.cols or size[1] > geom.rows):
            raise InputError(f"{name}: the compressed image is {size[0]}x{size[1]} pixels, not the "
                             f"{geom.cols}x{geom.rows} of its header; the file is damaged or hostile",
                             code="image_too_large")


def _pixels(path: Path, header, options: LoadOptions, geom: _Geometry, out: np.ndarray) -> list:
    """Decode one slice into ``out`` (float32, rows x cols) as HU; returns [dataset, notes]."""
    size = check_size(path, options)
    bits = max(8, _int(header, "BitsAllocated") or 16)
    limit = geom.rows * geom.cols * bits // 8 + SLICE_OVERHEAD_BYTES
    if size > limit:
        raise InputError(f"{path.name}: the file is {human_bytes(size)} for a {geom.rows}x{geom.cols} image, over "
                         f"the limit of {human_bytes(limit)} (the image and {human_bytes(SLICE_OVERHEAD_BYTES)} of "
                         "header)", code="image_too_large")
    try:
        ds = _read(path, force=not _is_dicom_file(path), pixels=True)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path.name}: cannot read the file ({type(exc).__name__}: {exc}); it may be truncated"
                         ) from exc
    _check_pixel_header(path, ds, geom)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path.name}: cannot decode the pixel data ({type(exc).__name__}: {exc}); "
                         "the file may be truncated or use an unsupported compression") from exc
    if arr.shape != (geom.rows, geom.cols):
        raise InputError(f"{path.name}: expected a single-frame greyscale image of {geom.rows}x{geom.cols}, got pixel "
                         f"array {arr.shape}")
    slope, intercept = _get(ds, "RescaleSlope"), _get(ds, "RescaleIntercept")
    notes = []
    if slope in (None, "") or intercept in (None, ""):
        if options.rescale_slope is not None or options.rescale_intercept is not None:
            slope = options.rescale_slope if options.rescale_slope is not None else 1.0
            intercept = options.rescale_intercept if options.rescale_intercept is not None else 0.0
            notes.append("rescale-given")
        else:
            slope, intercept = 1.0, 0.0
            notes.append("rescale-missing")
    try:
        slope, intercept = float(slope), float(intercept)
    except (TypeError, ValueError, OverflowError):
        slope = intercept = float("nan")
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise InputError(f"{path.name}: RescaleSlope/RescaleIntercept ({_get(ds, 'RescaleSlope')}, "
                         f"{_get(ds, 'RescaleIntercept')}) are not usable numbers (finite, slope not 0)")
    np.multiply(arr, np.float32(slope), out=out, casting="unsafe")
    out += np.float32(intercept)
    if arr.dtype.kind == "f":  # float pixel data: NaN / infinite values are counted and set to air
        bad = ~np.isfinite(out)
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            out[bad] = HU_MIN
            notes.append(("non-finite", n_bad))
    np.clip(out, HU_MIN, HU_MAX, out=out)
    del arr
    try:
        del ds.PixelData
    except Exception:  # noqa: BLE001
        pass
    return [ds, notes]


def _ortho_size(geom: _Geometry, pos: np.ndarray, normal: np.ndarray, n: int, dz: float) -> np.ndarray:
    """Size of the orthogonal grid a tilted stack is resampled onto (as :func:`_orthogonal_reference`)."""
    row_dir, col_dir = geom.iop[:3], geom.iop[3:]
    step = (pos[-1] - pos[0]) / max(n - 1, 1)
    ps = geom.pixel_spacing
    corners = np.array([pos[0] + i * ps[1] * row_dir + j * ps[0] * col_dir + k * step
                        for i in (0, geom.cols - 1) for j in (0, geom.rows - 1) for k in (0, n - 1)])
    direction = np.column_stack([row_dir, col_dir, normal])
    local = corners @ direction
    sp = np.array([ps[1], ps[0], dz])
    return np.round((local.max(0) - local.min(0)) / sp).astype(np.int64) + 1


def load_series(info: SeriesInfo, options: LoadOptions, source: str) -> CTVolume:
    """Read pixel data of the chosen series and build the canonical volume (geometry and
    budgets checked first; see the module docstring)."""
    warnings: list[dict] = []
    headers, paths = list(info.headers), list(info.paths)
    geom = check_geometry(headers, paths, source)
    row_dir, col_dir = geom.iop[:3], geom.iop[3:]
    normal = np.cross(row_dir, col_dir)
    normal = normal / np.linalg.norm(normal)
    ps = geom.pixel_spacing
    pos = geom.positions
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    along, pos = along[order], pos[order]
    paths = [paths[i] for i in order]
    headers = [headers[i] for i in order]
    # Duplicate positions (e.g. two reconstructions in one series): keep the first.
    if len(along) > 1:
        keep = np.concatenate([[True], np.diff(along) > 1e-3])
        if not keep.all():
            n_dup = int((~keep).sum())
            warnings.append(warning("duplicate_slices", f"{n_dup} image(s) repeat a slice position; only the first of each was used"))
            along, pos = along[keep], pos[keep]
            paths = [p for p, k in zip(paths, keep) if k]
            headers = [h for h, k in zip(headers, keep) if k]
    parts, med = split_at_gaps(along)
    if len(along) > 1 and med < MIN_SLICE_SPACING_MM:
        raise InputError(f"{source}: the slices are {med:.3g} mm apart (median), under {MIN_SLICE_SPACING_MM} mm: "
                         "their positions are not those of a CT series", code="bad_geometry")
    if len(parts) > 1:
        a, b = max(parts, key=lambda ab: (ab[1] - ab[0], along[ab[1] - 1] - along[ab[0]]))
        gaps = [float(along[s] - along[s - 1]) for s, _ in parts[1:]]
        n_all = len(along)
        left = [_slice_name(p, h) for i, (p, h) in enumerate(zip(paths, headers)) if not a <= i < b]
        what = (f"{len(gaps)} gap(s) in the slice positions too large to fill (largest {max(gaps):.1f} mm between "
                f"neighbouring slices, median spacing {med:.2f} mm; a gap is filled only up to {GAP_MAX_SLICES} "
                f"missing slices and {GAP_MAX_MM:g} mm)")
        if b - a < MIN_PART_SLICES:
            raise InputError(f"{source}: {what}, and no contiguous part holds {MIN_PART_SLICES} images or more (the "
                             f"largest: {b - a} of {n_all}); this is not a usable CT series", code="series_gaps")
        warnings.append(warning(
            "series_split", f"{what}: only the largest contiguous part was analysed, {b - a} of {n_all} images "
            f"(positions {along[a]:.1f} to {along[b - 1]:.1f} mm along the slice normal); left out: "
            f"{_listed(left)}", n_used=b - a, n_left_out=n_all - (b - a), gaps_mm=[round(g, 2) for g in gaps]))
        along, pos = along[a:b], pos[a:b]
        paths, headers = paths[a:b], headers[a:b]
    n = len(along)
    extent = max(float(along[-1] - along[0]) if n > 1 else 0.0, geom.rows * ps[0], geom.cols * ps[1])
    if extent > options.max_extent_mm:
        raise InputError(f"{source}: the series spans {extent:.0f} mm, over the limit of {options.max_extent_mm:.0f} mm "
                         "of physical extent", code="image_too_large")
    if n > options.max_slices:
        raise InputError(f"{source}: the series has {n} images, over the limit of {options.max_slices} slices",
                         code="image_too_large")
    spacing_z, uniform, n_missing = _z_spacing(along, headers[0])
    bits = max(8, _int(headers[0], "BitsAllocated") or 16)
    check_voxels(source, (geom.cols, geom.rows, n), bits / 8, options, what="the series")
    n_out = n if uniform else int(round((along[-1] - along[0]) / spacing_z)) + 1
    check_voxels(source, (geom.cols, geom.rows, n_out), 4.0, options, what="the series resampled onto a uniform grid")
    step_est = (pos[-1] - pos[0]) / (n - 1) if n > 1 else normal * spacing_z
    tilt_est = float(np.degrees(np.arccos(np.clip(abs(step_est @ normal) / max(np.linalg.norm(step_est), 1e-9), -1, 1))))
    if tilt_est > 0.5:
        check_voxels(source, _ortho_size(geom, pos, normal, n_out, spacing_z), 4.0, options,
                     what="the series resampled onto an orthogonal grid (gantry tilt)")
    stack = np.empty((n, geom.rows, geom.cols), np.float32)
    slots = [(p, h, stack[k]) for k, (p, h) in enumerate(zip(paths, headers))]
    with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        results = list(pool.map(lambda slot: _pixels(slot[0], slot[1], options, geom, slot[2]), slots))
    del slots
    sorted_headers = [r[0] for r in results]
    notes = [note for r in results for note in r[1]]
    del results
    n_bad = sum(x[1] for x in notes if isinstance(x, tuple))
    if n_bad:
        share = n_bad / stack.size
        if share > options.max_non_finite_fraction:
            raise InputError(f"{source}: {100 * share:.1f} % of the voxels ({n_bad} of {stack.size}) are not finite "
                             f"numbers (NaN or infinite), over the limit of {100 * options.max_non_finite_fraction:g} %",
                             code="non_finite_voxels")
        warnings.append(warning("non_finite_voxels", f"{n_bad} voxel(s) were not finite numbers (NaN or infinite) "
                                "and were set to -1024 HU (air)", n_voxels=n_bad))
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
    first = sorted_headers[0]
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
        [_floats(h, "ImagePositionPatient", 3) for h in sorted_headers]),
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
        ref = _orthogonal_reference(img, direction_o, spacing_z)
        img = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, HU_MIN)
        exact = False
    native = Geometry.of(img)
    if not native.axis_aligned:
        new_size, _, _ = oblique_reference(native.size, native.spacing, native.origin, native.direction)
        check_voxels(source, [int(v) for v in new_size], 4.0, options,
                     what="the series resampled onto an LPS-aligned grid")
    arr, spacing, origin, exact2 = canonical_array(img)
    del img
    meta["resampled"] = not (exact and exact2)
    return CTVolume(
        array=arr, spacing=spacing, origin=origin, is_hu=True,
        native=native, native_exact=exact2, source=source, kind="dicom", dicom=series, warnings=warnings, meta=meta)


def _z_spacing(along: np.ndarray, first) -> tuple[float, bool, int]:
    if len(along) < 2:
        th = _float(first, "SpacingBetweenSlices") or _float(first, "SliceThickness") or 1.0
        return abs(float(th)) or 1.0, True, 0
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
    return {
        "modality": str(_get(ds, "Modality", "") or "CT"),
        "manufacturer": str(_get(ds, "Manufacturer", "") or ""),
        "body_part": str(_get(ds, "BodyPartExamined", "") or ""),
        "study_description": str(_get(ds, "StudyDescription", "") or ""),
        "slice_thickness_mm": _float(ds, "SliceThickness") or spacing_z,
        "kvp": _float(ds, "KVP"), "tube_current_ma": _float(ds, "XRayTubeCurrent"),
        "exposure_time_ms": _float(ds, "ExposureTime"), "exposure_mas": _float(ds, "Exposure"),
        "ctdi_vol_mgy": _float(ds, "CTDIvol"), "convolution_kernel": str(_get(ds, "ConvolutionKernel", "") or ""),
    }


def list_files(root: Path, max_files: int | None = None, label: str | None = None) -> list[Path]:
    """The regular files under ``root`` (hidden names and DICOMDIR left out; FIFOs, devices,
    dangling links too), refused (``too_many_files``) past ``max_files`` files and folders."""
    limit = LoadOptions().max_files if max_files is None else max_files
    return walk_files(root, limit, label if label is not None else Path(root).name,
                      skip=lambda n: n.upper() == "DICOMDIR")
