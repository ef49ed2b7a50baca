"""Demo content for a new platform: a synthetic chest CT that Pulmo makes itself (a phantom with
inserted opacities, labelled SYNTHETIC in its DICOM headers and wherever the platform shows it)
and a few made-up patients with clinical data. Nothing here comes from a real person.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

SHAPE = (96, 320, 320)            # z, y, x
SPACING = (2.5, 1.1, 1.1)         # mm
PATIENTS = (
    # name, id, sex, birth date, opacities?, clinical features
    ("SYNTHETIC^Ava", "DEMO-001", "F", "19580312", True,
     {"age": 66, "xray_abnormality": 1, "dyspnea": 1, "comorbidities": 2, "malignancy": 0, "copd": 0, "nlr": 9.1,
      "ldh": 420, "direct_bilirubin": 6.2, "creatine_kinase": 180, "respiratory_rate": 26, "systolic_bp": 104,
      "spo2": 91, "temperature": 38.6, "urea_mmol_l": 8.4, "confusion": 0, "pulse": 108}),
    ("SYNTHETIC^Ben", "DEMO-002", "M", "19811107", False,
     {"age": 43, "xray_abnormality": 0, "dyspnea": 0, "comorbidities": 0, "malignancy": 0, "copd": 0, "nlr": 2.1,
      "ldh": 190, "direct_bilirubin": 3.1, "creatine_kinase": 95, "respiratory_rate": 16, "systolic_bp": 128,
      "spo2": 98, "temperature": 37.1, "urea_mmol_l": 4.9, "confusion": 0, "pulse": 76}),
    ("SYNTHETIC^Chen", "DEMO-003", "M", "19490620", True,
     {"age": 75, "xray_abnormality": 1, "dyspnea": 1, "comorbidities": 3, "malignancy": 1, "copd": 1, "nlr": 14.0,
      "ldh": 610, "direct_bilirubin": None, "creatine_kinase": 260, "respiratory_rate": 31, "systolic_bp": 88,
      "spo2": 86, "temperature": 38.9, "urea_mmol_l": 11.2, "confusion": 1, "pulse": 121}),
)


def phantom(seed: int = 0, opacities: bool = True) -> np.ndarray:
    """A synthetic chest CT in Hounsfield units, (z, y, x) canonical LPS, ``SPACING`` mm: body with
    fat and muscle, ribs and spine, mediastinum, two lungs with a branching vessel texture, the
    trachea, and (``opacities``) patches of ground glass and a subpleural consolidation."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = SHAPE
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(SHAPE, SPACING)), indexing="ij")
    cz, cy, cx = (nz - 1) * SPACING[0] / 2, (ny - 1) * SPACING[1] / 2, (nx - 1) * SPACING[2] / 2
    hu = np.full(SHAPE, -1000.0, np.float32)
    body = ((x - cx) / 165) ** 2 + ((y - cy) / 115) ** 2 <= 1
    hu[body] = -90.0                                                       # subcutaneous fat
    hu[((x - cx) / 155) ** 2 + ((y - cy) / 105) ** 2 <= 1] = 45.0          # muscle
    ring = (((x - cx) / 140) ** 2 + ((y - cy) / 93) ** 2 <= 1) & (((x - cx) / 133) ** 2 + ((y - cy) / 87) ** 2 > 1)
    ribs = ring & (np.sin((z / 18.0) * np.pi) > 0.55)
    hu[ribs] = 650.0
    hu[((x - cx) ** 2 + (y - cy - 62) ** 2 <= 16 ** 2)] = 700.0            # vertebral body
    lungs = np.zeros(SHAPE, bool)
    for dx in (-68.0, 68.0):
        m = ((x - cx - dx) / 52) ** 2 + ((y - cy + 2) / 72) ** 2 + ((z - cz + 8) / 100) ** 2 <= 1
        lungs |= m
    heart = ((x - cx + 8) / 45) ** 2 + ((y - cy + 25) / 38) ** 2 + ((z - cz + 50) / 45) ** 2 <= 1
    lungs &= ~heart
    texture = ndi.gaussian_filter(rng.normal(0, 1, SHAPE).astype(np.float32), (1.5, 3.0, 3.0))
    texture /= texture.std()
    coarse = ndi.gaussian_filter(rng.normal(0, 1, SHAPE).astype(np.float32), (3.0, 6.0, 6.0))
    coarse /= coarse.std()
    vessels = (np.abs(coarse) < 0.03) & lungs                              # thin branching sheets and tubes
    hu[lungs] = -865.0 + 15.0 * texture[lungs]
    hu[vessels] = 30.0
    hu[heart] = 40.0
    hu[((x - cx - 12) ** 2 + (y - cy + 40) ** 2 <= 13 ** 2) & (z > cz - 30)] = 45.0   # aorta
    trachea = ((x - cx) ** 2 + (y - cy + 45) ** 2 <= 8 ** 2) & (z > cz + 40)
    hu[trachea & body] = -1000.0
    if opacities:
        for (oz, oy, ox, r, level) in ((cz - 40, cy + 35, cx - 85, 18.0, -580.0), (cz + 10, cy - 10, cx + 90, 14.0, -620.0),
                                       (cz - 25, cy + 20, cx + 70, 12.0, -560.0)):
            d = np.sqrt((x - ox) ** 2 + (y - oy) ** 2 + ((z - oz) * 1.2) ** 2)
            w = 1 / (1 + np.exp((d - r) / 2.0)) * lungs
            hu += w * (level + 40 * texture - hu)
        d = np.sqrt(((x - cx + 100) / 14) ** 2 + ((y - cy - 45) / 20) ** 2 + ((z - cz + 45) / 30) ** 2)
        w = 1 / (1 + np.exp((d - 1) / 0.12)) * lungs                      # dependent consolidation, right base
        hu += w * (-40 + 30 * texture - hu)
    hu += rng.normal(0, 12, SHAPE).astype(np.float32)
    return np.clip(hu, -1024, 3071)


def write_dicom(hu: np.ndarray, folder: Path, patient: tuple, study_date: str, study_uid: str | None = None) -> Path:
    """The phantom as a DICOM CT series (int16, rescale -1024), marked SYNTHETIC in the patient's
    name, the study description and the series description."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    name, pid, sex, birth = patient[:4]
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    nz, ny, nx = hu.shape
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = name, pid, sex, birth
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = study_date
        ds.StudyTime = "090000"
        ds.Modality, ds.Manufacturer = "CT", "Pulmo (synthetic phantom)"
        ds.StudyDescription = "SYNTHETIC chest CT (Pulmo demo phantom)"
        ds.SeriesDescription = "SYNTHETIC phantom, not a patient"
        ds.BodyPartExamined = "CHEST"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.ImagePositionPatient = [-(nx - 1) * SPACING[2] / 2, -(ny - 1) * SPACING[1] / 2, k * SPACING[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [SPACING[1], SPACING[2]]
        ds.SliceThickness = SPACING[0]
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.KVP, ds.CTDIvol = 120, 8.0
        ds.PixelData = np.round(hu[k] + 1024).astype(np.int16).tobytes()
        ds.save_as(folder / f"{k:04d}.dcm", enforce_file_format=True)
    return folder


def load_demo(session, storage, org_id: int) -> list[int]:
    """Put the demo patients into organisation ``org_id`` (once): their synthetic CTs (queued for
    analysis) and clinical data. Returns the study ids."""
    from sqlalchemy import select

    from pulmo.web.models import Patient
    from pulmo.web.services.ingest import ingest

    done = session.execute(select(Patient.id).where(Patient.organisation_id == org_id,
                                                    Patient.patient_key.like("DEMO-%"))).first()
    if done is not None:
        return []
    ids = []
    today = dt.date.today()
    with tempfile.TemporaryDirectory(prefix="pulmo-demo-") as tmp:
        for i, patient in enumerate(PATIENTS):
            folder = write_dicom(phantom(seed=i, opacities=patient[4]), Path(tmp) / patient[1], patient,
                                 (today - dt.timedelta(days=i)).strftime("%Y%m%d"))
            files = [(f.name, f) for f in sorted(folder.iterdir())]
            result = ingest(session, storage, org_id, files, source="demo", synthetic=True)
            ids += [s["id"] for s in result.studies]
    return ids


def demo_clinical(session, app, study_ids: list[int]) -> None:
    """Enter each demo patient's clinical data (runs the calculator on them)."""
    from pulmo.web.models import Study
    from pulmo.web.services.clinical import set_clinical

    by_key = {p[1]: p[5] for p in PATIENTS}
    for sid in study_ids:
        study = session.get(Study, sid)
        features = by_key.get(study.patient.patient_key)
        if features:
            set_clinical(session, app, study, features, None)
