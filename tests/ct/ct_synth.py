"""Synthetic chest phantoms and DICOM writers for the CT tests (no shared data needed).

Canonical LPS arrays (z, y, x): z inferior->superior, y anterior->posterior,
x patient right->left. The right lung is at low x.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

SPACING = (2.5, 3.0, 3.0)  # z, y, x mm
SHAPE = (72, 112, 128)  # the lungs end above the lowest slice: the bases are in view


def phantom(seed: int = 0, consolidation: bool = True, ggo: bool = True, shape=SHAPE, spacing=SPACING):
    """Returns (hu float32, truth dict of boolean masks: right, left, ggo, cons, trachea)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij")
    cz, cy, cx = (shape[0] - 1) * spacing[0] / 2, (ny - 1) * spacing[1] / 2, (nx - 1) * spacing[2] / 2
    hu = np.full(shape, -1000.0, np.float32)
    body = ((x - cx) / 170) ** 2 + ((y - cy) / 120) ** 2 <= 1
    hu[body] = 40.0
    lungs = {}
    for name, dx in (("right", -75.0), ("left", 75.0)):
        m = ((x - cx - dx) / 55) ** 2 + ((y - cy) / 80) ** 2 + ((z - cz + 10) / 75) ** 2 <= 1
        lungs[name] = m
        hu[m] = -850.0
    # vessels: thin tubes along z (radius ~3 mm)
    for dx, dy in ((-70, -20), (-85, 30), (70, 20), (85, -30)):
        v = ((x - cx - dx) ** 2 + (y - cy - dy) ** 2 <= 3.0 ** 2) & (lungs["right"] | lungs["left"])
        hu[v] = 30.0
    # trachea from the top down to the carina, then two bronchi into the lungs
    tr = ((x - cx) ** 2 + (y - cy + 30) ** 2 <= 9.0 ** 2) & (z >= cz + 35)
    carina_z = cz + 35
    for dx in (-1, 1):
        t = np.clip((carina_z - z) / 40.0, 0, 1)
        bx = cx + dx * 55 * t
        br = ((x - bx) ** 2 + (y - cy + 30 - 10 * t) ** 2 <= 6.0 ** 2) & (z <= carina_z) & (z >= carina_z - 40)
        tr |= br
    hu[tr & body] = -1000.0
    truth = {"right": lungs["right"], "left": lungs["left"], "trachea": tr & body}
    if ggo:
        g = ((x - cx + 75) ** 2 + (y - cy - 20) ** 2 + (z - cz + 20) ** 2) <= 16.0 ** 2
        g &= lungs["right"]
        hu[g] = -550.0
        truth["ggo"] = g
    if consolidation:
        # a dense patch near the lateral border of the left lung (aerated lung on both sides), longer
        # than wide as consolidation is (a round solid ball would be a nodule, pulmo.ct.segment.nodules)
        c = ((x - cx - 105) / 12.0) ** 2 + ((y - cy) / 34.0) ** 2 + ((z - cz + 10) / 26.0) ** 2 <= 1
        c &= lungs["left"]
        hu[c] = 25.0
        truth["cons"] = c
    hu += rng.normal(0, 15, shape).astype(np.float32)
    return hu, truth


def write_series(hu: np.ndarray, folder: Path, spacing=SPACING, *, modality="CT", slope=1.0, intercept=-1024.0,
                 rescale_tags=True, drop=(), tilt_mm_per_slice=0.0, series_uid=None, shuffle=True,
                 image_type=("ORIGINAL", "PRIMARY", "AXIAL"), iop=(1, 0, 0, 0, 1, 0), compress=None,
                 study_uid=None, frame_uid=None, prefix="img") -> list[Path]:
    """Write a canonical (z, y, x) HU array as single-frame DICOM files (random file names)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    names = list(range(hu.shape[0]))
    if shuffle:
        random.Random(1).shuffle(names)
    paths = []
    for k in range(hu.shape[0]):
        if k in drop:
            continue
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality = modality
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", "PH001", "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "20240101", "120000", "A1", ""
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 3, names[k] + 1
        ds.Manufacturer = "Synthetic"
        ds.ImageType = list(image_type)
        ds.PatientPosition = "HFS"
        ds.ImageOrientationPatient = list(iop)
        ds.ImagePositionPatient = [-190.0, -170.0 + k * tilt_mm_per_slice, -80.0 + k * spacing[0]]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.KVP, ds.Exposure = 120, 100
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        if rescale_tags:
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
        stored = np.clip(np.round((hu[k] - intercept) / slope), 0, 65535).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        if compress:
            ds.compress(compress, stored)
        path = folder / f"{prefix}{names[k]:04d}_{random.Random(k).randint(0, 99999)}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)
