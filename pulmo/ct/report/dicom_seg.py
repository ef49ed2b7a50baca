"""One DICOM SEG instance with every Pulmo label map: lungs, regions (zones or lobes), lesions.

A BINARY Segmentation of a 300-slice CT has about 1,500 frames (one per segment and
slice where the segment is present). highdicom builds each frame's functional groups as
pydicom datasets and pydicom encodes them one element at a time: 8-10 ms per frame, i.e.
10-15 s for a study, more than the whole analysis may take. So the work is split:

* **highdicom** builds and checks the header of the SEG (patient/study/series attributes
  copied from the source, referenced series, segment descriptions with their codes and
  algorithm identification, dimension index, shared functional groups: plane orientation
  and pixel measures) from a *skeleton*: the same sources and segments, one frame each;
* **this module** then writes the repetitive per-frame part itself: the Per-Frame
  Functional Groups (derivation image = the source slice, frame content with the
  dimension index values, plane position, segment identification), encoded directly as
  Explicit VR Little Endian bytes, and the bit-packed pixel data, vectorised with numpy.

The result is a standard multi-segment BINARY SEG (``SegmentsOverlap`` YES: a zone lies
inside its lung, a lesion inside both). Tests read it back with highdicom, compare every
frame with the label maps, compare with a SEG built by highdicom alone, and run
``dciodvfy``.

Frames are ordered by segment number, then by slice position along the slice normal
(the order of the sorted source headers); the dimension index values are (segment
number, position index), the position index counting, from 1, the source planes that
hold at least one frame. Frames lie on the source images' planes (rows x columns of the
source; labels resampled nearest-neighbour when the analysis grid differs, see
:func:`labels_on_source`). Empty frames are omitted.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, SegmentationStorage
from pydicom.valuerep import format_number_as_ds

from pulmo import __version__

MANUFACTURER = "Pulmo (research software)"
PER_FRAME_FG = Tag(0x5200, 0x9230)
PIXEL_DATA = Tag(0x7FE0, 0x0010)


@dataclass
class SegmentSpec:
    """One segment: the label ``value`` in its map and its coded description."""

    value: int
    label: str
    category: hd.sr.CodedConcept
    property_type: hd.sr.CodedConcept
    #: the colour viewers should show it in (sRGB 0-255; written as Recommended Display CIELab Value)
    colour_rgb: tuple[int, int, int] | None = None


@dataclass
class LabelGroup:
    """A label map (canonical grid, as ``vol.array``) and the segments it holds."""

    name: str
    labels: np.ndarray
    segments: list[SegmentSpec]
    method: str


# ----------------------------------------------------------------------------- DICOM byte encoding
# Explicit VR Little Endian; values are padded to even length as the standard requires.

def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _sequence(group: int, elem: int, *items: bytes) -> bytes:
    body = b"".join(struct.pack("<HHI", 0xFFFE, 0xE000, len(it)) + it for it in items)
    return struct.pack("<HH2sHI", group, elem, b"SQ", 0, len(body)) + body


def _code(value: str, scheme: str, meaning: str) -> bytes:
    return (_element(0x0008, 0x0100, b"SH", value.encode()) + _element(0x0008, 0x0102, b"SH", scheme.encode())
            + _element(0x0008, 0x0104, b"LO", meaning.encode()))


_PURPOSE_SOURCE = _sequence(0x0040, 0xA170, _code("121322", "DCM", "Source image for image processing operation"))
_DERIVATION_CODE = _sequence(0x0008, 0x9215, _code("113076", "DCM", "Segmentation"))


def _derivation(sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """Derivation Image Sequence: this frame was derived from that source image."""
    source = (_element(0x0008, 0x1150, b"UI", sop_class_uid.encode())
              + _element(0x0008, 0x1155, b"UI", sop_instance_uid.encode())
              + _element(0x0028, 0x135A, b"CS", b"YES") + _PURPOSE_SOURCE)
    return _sequence(0x0008, 0x9124, _sequence(0x0008, 0x2112, source) + _DERIVATION_CODE)


def _plane_position(ipp) -> bytes:
    text = "\\".join(format_number_as_ds(float(v)) for v in ipp)
    return _sequence(0x0020, 0x9113, _element(0x0020, 0x0032, b"DS", text.encode()))


def _frame_content(segment: int, position: int) -> bytes:
    return _sequence(0x0020, 0x9111, _element(0x0020, 0x9157, b"UL", struct.pack("<II", segment, position)))


def _segment_identification(segment: int) -> bytes:
    return _sequence(0x0062, 0x000A, _element(0x0062, 0x000B, b"US", struct.pack("<H", segment)))


# ----------------------------------------------------------------------------- label maps on the source grid

def labels_on_source(vol, labels: np.ndarray) -> np.ndarray:
    """Label map resampled onto the source slices: (n_images, rows, cols), sorted headers' order."""
    ser = vol.dicom
    n = len(ser.headers)
    rows, cols = int(ser.headers[0].Rows), int(ser.headers[0].Columns)
    if (not vol.meta.get("resampled") and vol.native_exact and labels.shape == (n, rows, cols)
            and np.allclose(ser.row_dir, (1, 0, 0)) and np.allclose(ser.col_dir, (0, 1, 0))
            and np.allclose(ser.normal, (0, 0, 1))):
        return labels
    import SimpleITK as sitk

    img = vol.canonical_image(labels)
    out = np.zeros((n, rows, cols), np.uint8)
    direction = np.column_stack([ser.row_dir, ser.col_dir, ser.normal]).ravel().tolist()
    for i, h in enumerate(ser.headers):
        ref = sitk.Image([cols, rows, 1], sitk.sitkUInt8)
        ref.SetSpacing([ser.pixel_spacing[1], ser.pixel_spacing[0], 1.0])
        ref.SetOrigin([float(v) for v in h.ImagePositionPatient])
        ref.SetDirection(direction)
        out[i] = sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0))[0]
    return out


def _presence(labels: np.ndarray, values: list[int]) -> np.ndarray:
    """(n_planes, len(values)) bool: which label values occur on each plane."""
    out = np.zeros((labels.shape[0], len(values)), bool)
    nz = np.flatnonzero(labels.any(axis=(1, 2)))
    if nz.size == 0:
        return out
    cols = labels[nz[0]:nz[-1] + 1].any(axis=(0, 1))
    rows = labels[nz[0]:nz[-1] + 1].any(axis=(0, 2))
    r0, r1 = np.flatnonzero(rows)[[0, -1]]
    c0, c1 = np.flatnonzero(cols)[[0, -1]]
    idx = np.asarray(values)
    for z in nz:
        counts = np.bincount(labels[z, r0:r1 + 1, c0:c1 + 1].ravel(), minlength=256)
        out[z] = counts[idx] > 0
    return out


# ----------------------------------------------------------------------------- the SEG

def _description(number: int, spec: SegmentSpec, method: str) -> hd.seg.SegmentDescription:
    family = codes.cid7162.ArtificialIntelligence if "model" in method else codes.cid7162.MorphologicalOperations
    algorithm = hd.AlgorithmIdentificationSequence(name=f"Pulmo {method}"[:64], version=__version__, family=family)
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=spec.label[:64], segmented_property_category=spec.category,
        segmented_property_type=spec.property_type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=spec.label[:64],
        display_color=hd.color.CIELabColor.from_rgb(*spec.colour_rgb) if spec.colour_rgb else None)


def _pack_frames(frames) -> bytes:
    """Bit-pack binary frames (little bit order, frames back to back as in the standard:
    a frame may start inside a byte when rows x columns is not a multiple of 8)."""
    parts, rest = [], np.zeros(0, bool)
    for mask in frames:
        bits = mask.ravel()
        if rest.size:
            bits = np.concatenate([rest, bits])
        cut = bits.size - bits.size % 8
        parts.append(np.packbits(bits[:cut], bitorder="little").tobytes())
        rest = bits[cut:]
    if rest.size:
        parts.append(np.packbits(rest, bitorder="little").tobytes())
    data = b"".join(parts)
    return data + b"\0" if len(data) % 2 else data


def write_segmentation(vol, groups: list[LabelGroup], path: Path, series_uid: str | None = None,
                       sop_uid: str | None = None, series_number: int = 9001,
                       series_description: str = "Pulmo segmentation") -> tuple[Dataset, dict] | None:
    """Write one BINARY SEG with the segments of every group present in the data.

    Returns ``(stub, {group name: {segment label: segment number}})`` where ``stub`` holds
    the SEG's identifying UIDs (for the SR), or ``None`` (and no file) when every map is empty.
    """
    headers = vol.dicom.headers
    maps = [labels_on_source(vol, g.labels) for g in groups]
    n, rows, cols = maps[0].shape
    present = []   # (group index, spec, per-plane presence)
    for gi, g in enumerate(groups):
        pres = _presence(maps[gi], [s.value for s in g.segments])
        present += [(gi, s, pres[:, j]) for j, s in enumerate(g.segments) if pres[:, j].any()]
    if not present:
        return None
    descriptions = [_description(i, spec, groups[gi].method) for i, (gi, spec, _) in enumerate(present, start=1)]
    series_uid = series_uid or hd.UID()
    sop_uid = sop_uid or hd.UID()

    # highdicom builds the header from a skeleton: all sources, one frame per segment
    skeleton = np.zeros((n, rows, cols), np.uint8)
    for i, (_, _, pres) in enumerate(present, start=1):
        skeleton[int(np.flatnonzero(pres)[0]), 0, i - 1] = i
    seg = hd.seg.Segmentation(
        source_images=headers, pixel_array=skeleton, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        omit_empty_frames=True, segment_descriptions=descriptions, series_instance_uid=series_uid,
        series_number=series_number, sop_instance_uid=sop_uid, instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name="Pulmo chest CT", software_versions=__version__, device_serial_number="0",
        content_description="Pulmo " + ", ".join(g.name for g in groups), content_label="PULMO",
        series_description=series_description, transfer_syntax_uid=ExplicitVRLittleEndian)
    if seg.SOPClassUID != SegmentationStorage or seg.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian:
        raise RuntimeError("unexpected SEG skeleton from highdicom")  # pragma: no cover

    # the per-frame part, written here
    any_plane = np.zeros(n, bool)
    for _, _, pres in present:
        any_plane |= pres
    position_index = np.cumsum(any_plane)          # 1-based index among planes holding frames
    derivation = {}
    plane_pos = {}
    items, frames = [], []
    for number, (gi, spec, pres) in enumerate(present, start=1):
        seg_id = _segment_identification(number)
        for z in np.flatnonzero(pres):
            if z not in derivation:
                h = headers[z]
                derivation[z] = _derivation(str(h.SOPClassUID), str(h.SOPInstanceUID))
                plane_pos[z] = _plane_position(h.ImagePositionPatient)
            items.append(derivation[z] + _frame_content(number, int(position_index[z])) + plane_pos[z] + seg_id)
            frames.append(maps[gi][z] == spec.value)
    seg.NumberOfFrames = len(items)
    seg.SegmentsOverlap = "YES" if len(groups) > 1 else "NO"
    if "DimensionOrganizationType" in seg:   # a property of the skeleton's frames, not of these
        del seg.DimensionOrganizationType
    for tag in (PER_FRAME_FG, PIXEL_DATA):
        del seg[tag]
    if any(tag > PER_FRAME_FG for tag in seg.keys()):
        raise RuntimeError("unexpected attributes after the per-frame functional groups")  # pragma: no cover
    # pydicom writes the header; the two big trailing elements (tags in ascending order, as
    # the file format requires) are appended as already-encoded bytes
    buf = io.BytesIO()
    seg.save_as(buf, enforce_file_format=True)
    pixels = _pack_frames(frames)
    tmp = Path(path).with_name(Path(path).name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(buf.getvalue())
        fh.write(_sequence(0x5200, 0x9230, *items))
        fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, len(pixels)))
        fh.write(pixels)
    tmp.replace(path)

    stub = Dataset()
    stub.SOPClassUID = SegmentationStorage
    stub.SOPInstanceUID = sop_uid
    stub.StudyInstanceUID = headers[0].StudyInstanceUID
    stub.SeriesInstanceUID = series_uid
    numbers: dict = {g.name: {} for g in groups}
    for number, (gi, spec, _) in enumerate(present, start=1):
        numbers[groups[gi].name][spec.label] = number
    return stub, numbers
