"""DICOMweb views of the platform's studies (QIDO-RS attributes, WADO-RS parts, STOW-RS answers).

A study's instances are the DICOM files it was sent (the ``instances`` table) and, once it is
analysed, Pulmo's results for it: the Segmentation (lungs, regions, lesions, nodules), the
measurement SR and the Secondary Captures, each in its own series of the same study, so that a
DICOMweb viewer shows the overlays beside the CT. Attributes are read from the stored files'
headers (cached by file and modification time). JSON is the DICOM JSON model (PS3.18 F.2).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo.web.models import Instance, Study
from pulmo.web.services.analysis import study_prefix

#: Result files offered as instances of the study, once it is analysed.
RESULT_FILES = ("seg.dcm", "sr_measurements.dcm", "sc_axial.dcm", "sc_coronal.dcm")
_HEADERS: OrderedDict = OrderedDict()
_LOCK = threading.Lock()
_KEEP = 4096


@dataclass
class Item:
    """One instance of a study: its storage key and its header (no pixel data)."""

    key: str
    header: pydicom.Dataset

    @property
    def series_uid(self) -> str:
        return str(self.header.get("SeriesInstanceUID", ""))

    @property
    def sop_uid(self) -> str:
        return str(self.header.get("SOPInstanceUID", ""))


def header(storage, key: str) -> pydicom.Dataset | None:
    """The file's header (no pixel data), or None when it is missing or unreadable."""
    path = storage.local_path(key)
    try:
        stamp = (str(path), path.stat().st_mtime_ns)
    except OSError:
        return None
    with _LOCK:
        ds = _HEADERS.get(stamp)
        if ds is not None:
            _HEADERS.move_to_end(stamp)
            return ds
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - a damaged file is left out, not a failed request
        return None
    with _LOCK:
        _HEADERS[stamp] = ds
        while len(_HEADERS) > _KEEP:
            _HEADERS.popitem(last=False)
    return ds


def items(session: Session, storage, study: Study) -> list[Item]:
    """The study's instances: the received ones, then the analysis results (when done)."""
    keys = list(session.execute(select(Instance.key).where(Instance.study_id == study.id)
                                .order_by(Instance.id)).scalars())
    if study.status == "done":
        keys += [f"{study_prefix(study)}/results/{name}" for name in RESULT_FILES
                 if storage.exists(f"{study_prefix(study)}/results/{name}")]
    out = []
    for key in keys:
        ds = header(storage, key)
        if ds is not None and str(ds.get("StudyInstanceUID", "")) == study.study_uid:
            out.append(Item(key, ds))
    return out


def element_json(ds: pydicom.Dataset, keywords: tuple[str, ...]) -> dict:
    """The named attributes of ``ds`` in the DICOM JSON model (absent ones left out)."""
    sub = pydicom.Dataset()
    for kw in keywords:
        if kw in ds:
            sub[kw] = ds[kw]
    return sub.to_json_dict(bulk_data_threshold=1 << 20, bulk_data_element_handler=lambda _e: "")


def value(vr: str, *values) -> dict:
    return {"vr": vr, "Value": list(values)} if values and values[0] not in (None, "") else {"vr": vr}


STUDY_KEYWORDS = ("StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "PatientName", "PatientID",
                  "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "StudyDescription")
SERIES_KEYWORDS = ("Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber")
INSTANCE_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
                     "BitsAllocated")


def study_json(study: Study, its: list[Item], base: str) -> dict:
    out = element_json(its[0].header, STUDY_KEYWORDS) if its else {}
    out["0020000D"] = value("UI", study.study_uid)
    series = {i.series_uid for i in its}
    out["00080061"] = value("CS", *sorted({str(i.header.get("Modality", "")) for i in its} - {""}))
    out["00201206"] = value("IS", len(series))
    out["00201208"] = value("IS", len(its))
    out["00081190"] = value("UR", f"{base}/studies/{study.study_uid}")
    return out


def series_json(study: Study, its: list[Item], base: str) -> list[dict]:
    by: dict[str, list[Item]] = {}
    for i in its:
        by.setdefault(i.series_uid, []).append(i)
    out = []
    for uid, group in by.items():
        d = element_json(group[0].header, SERIES_KEYWORDS)
        d["00201209"] = value("IS", len(group))
        d["00081190"] = value("UR", f"{base}/studies/{study.study_uid}/series/{uid}")
        out.append(d)
    return out


def instance_json(study: Study, its: list[Item], base: str) -> list[dict]:
    out = []
    for i in its:
        d = element_json(i.header, INSTANCE_KEYWORDS + ("SeriesInstanceUID", "StudyInstanceUID"))
        d["00081190"] = value("UR", f"{base}/studies/{study.study_uid}/series/{i.series_uid}/instances/{i.sop_uid}")
        out.append(d)
    return out


def metadata_json(it: Item, base: str, study_uid: str) -> dict:
    """All of an instance's attributes but its pixel data, whose BulkDataURI points at its frames."""
    d = it.header.to_json_dict(bulk_data_threshold=1 << 16, bulk_data_element_handler=lambda _e: "")
    d = {k: v for k, v in d.items() if not (isinstance(v, dict) and v.get("BulkDataURI") == "")}
    d["7FE00010"] = {"vr": "OB", "BulkDataURI": f"{base}/studies/{study_uid}/series/{it.series_uid}/instances/"
                                                f"{it.sop_uid}/frames/1"}
    return d


def frames(path: Path, numbers: list[int]) -> list[bytes]:
    """The pixel data of the given frames (1-based) of an uncompressed instance, each as raw bytes
    (1-bit frames unpacked to one bit per pixel, packed again per frame). ValueError when the
    instance is compressed or a frame number is out of range."""
    import numpy as np

    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise ValueError("this instance has no pixel data")
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        raise ValueError(f"frames of compressed instances ({ds.file_meta.TransferSyntaxUID.name}) are not offered; "
                         "retrieve the whole instance")
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if any(not 1 <= k <= n for k in numbers):
        raise ValueError(f"frame numbers must lie in 1..{n}")
    rows, cols, spp = int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1))
    bits = int(ds.BitsAllocated)
    raw = ds.PixelData
    if bits == 1:
        allbits = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
        per = rows * cols * spp
        return [np.packbits(allbits[(k - 1) * per:k * per], bitorder="little").tobytes() for k in numbers]
    per = rows * cols * spp * bits // 8
    return [bytes(raw[(k - 1) * per:k * per]) for k in numbers]
