"""Studies in: DICOM files or zips (uploaded, or from a DICOM node), checked, deduplicated by SOP
Instance UID within the organisation, stored, grouped into studies, and queued for analysis.

Nothing is half stored: every file is checked before any is kept, files are written under keys
named by their SOP Instance UID (writing one twice is harmless), and the database rows of an
upload (patients, studies, instances, jobs) are committed in one transaction."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo.io.archives import extract_zip
from pulmo.web.models import Instance, Patient, Study, User, utcnow
from pulmo.web.services import audit, jobs

UID_OK = set("0123456789.")
MAX_MEMBER = 1 << 30
MAX_ZIP_TOTAL = 4 << 30


class IngestError(ValueError):
    """The upload cannot be taken; nothing was stored. ``status``: the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Parsed:
    path: Path
    study_uid: str
    series_uid: str
    sop_uid: str
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    study_date: str
    description: str
    modality: str
    synthetic: bool = False    # made by Pulmo's phantom (or marked SYNTHETIC): shown as such


@dataclass
class IngestResult:
    studies: list[dict] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    duplicates: int = 0
    stored: int = 0

    def to_dict(self) -> dict:
        return {"studies": self.studies, "ignored": self.ignored, "duplicates": self.duplicates, "stored": self.stored}


def _uid(ds, name: str) -> str:
    v = str(ds.get(name, "") or "").strip()
    return v if v and len(v) <= 64 and set(v) <= UID_OK else ""


def _text(ds, name: str, limit: int = 200) -> str:
    v = ds.get(name, "")
    return ("" if v is None else str(v)).replace("\x00", "").strip()[:limit]


def parse(path: Path) -> Parsed | str:
    """The identifying header of one DICOM file, or why it is not taken (a string)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=False)
    except InvalidDicomError:
        return "not a DICOM file"
    except Exception as exc:  # noqa: BLE001 - any parser failure: a corrupt or truncated file
        return f"unreadable DICOM ({type(exc).__name__})"
    study, series, sop = _uid(ds, "StudyInstanceUID"), _uid(ds, "SeriesInstanceUID"), _uid(ds, "SOPInstanceUID")
    if not (study and series and sop):
        return "no valid Study, Series or SOP Instance UID"
    name = _text(ds, "PatientName")
    synthetic = name.upper().startswith("SYNTHETIC") or "synthetic" in _text(ds, "Manufacturer").lower()
    return Parsed(path, study, series, sop, _text(ds, "PatientID", 64), name,
                  _text(ds, "PatientBirthDate", 8), _text(ds, "PatientSex", 10), _text(ds, "StudyDate", 8),
                  _text(ds, "StudyDescription"), _text(ds, "Modality", 16), synthetic)


def collect(files: list[tuple[str, Path]], workdir: Path) -> tuple[list[Parsed], list[str]]:
    """Every DICOM instance in the uploaded ``(name, path)`` files (zips are extracted into
    ``workdir`` with the archive checks: traversal, links, sizes); the names of what was not taken."""
    parsed, ignored = [], []
    for i, (name, path) in enumerate(files):
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head[:2] == b"PK":
            dest = workdir / f"zip{i}"
            dest.mkdir()
            try:
                extract_zip(path, dest, max_member_bytes=MAX_MEMBER, max_total_bytes=MAX_ZIP_TOTAL)
            except Exception as exc:  # noqa: BLE001 - InputError from the archive checks, or zipfile's own
                raise IngestError(f"{name}: {exc}") from None
            for p in sorted(q for q in dest.rglob("*") if q.is_file()):
                r = parse(p)
                if isinstance(r, str):
                    ignored.append(f"{name}/{p.relative_to(dest).as_posix()}: {r}")
                else:
                    parsed.append(r)
        else:
            r = parse(path)
            if isinstance(r, str):
                ignored.append(f"{name}: {r}")
            else:
                parsed.append(r)
    return parsed, ignored


def _patient(session: Session, org_id: int, p: Parsed, synthetic: bool) -> Patient:
    key = p.patient_id or "anon-" + hashlib.sha256((p.patient_name + p.birth_date + p.study_uid).encode()).hexdigest()[:12]
    row = session.execute(select(Patient).where(Patient.organisation_id == org_id,
                                                Patient.patient_key == key)).scalar()
    if row is None:
        row = Patient(organisation_id=org_id, patient_key=key, name=p.patient_name, birth_date=p.birth_date,
                      sex=p.sex, synthetic=synthetic)
        session.add(row)
        session.flush()
    return row


def ingest(session: Session, storage, org_id: int, files: list[tuple[str, Path]], user: User | None = None,
           address: str = "", source: str = "upload", synthetic: bool = False, queue: bool = True) -> IngestResult:
    """Take the uploaded files into organisation ``org_id`` (see the module docstring). Raises
    :class:`IngestError` when nothing in them is a usable DICOM instance. ``queue=False``: no
    analysis is queued (the DICOM listener queues it once the study has been quiet a while)."""
    result = IngestResult()
    with tempfile.TemporaryDirectory(prefix="pulmo-ingest-") as tmp:
        parsed, result.ignored = collect(files, Path(tmp))
        if not parsed:
            reasons = "; ".join(result.ignored[:3]) + ("; ..." if len(result.ignored) > 3 else "")
            raise IngestError(f"no DICOM instance in the upload ({reasons or 'no files'})", 415)
        seen = {r[0] for r in session.execute(select(Instance.sop_uid).where(
            Instance.organisation_id == org_id, Instance.sop_uid.in_([p.sop_uid for p in parsed]))).all()}
        by_study: dict[str, list[Parsed]] = {}
        for p in parsed:
            if p.sop_uid in seen:
                result.duplicates += 1
                continue
            seen.add(p.sop_uid)
            by_study.setdefault(p.study_uid, []).append(p)
        for study_uid, items in by_study.items():
            first = items[0]
            study = session.execute(select(Study).where(Study.organisation_id == org_id,
                                                        Study.study_uid == study_uid)).scalar()
            if study is None:
                patient = _patient(session, org_id, first, synthetic or first.synthetic)
                study = Study(organisation_id=org_id, patient_id=patient.id, study_uid=study_uid,
                              description=first.description, study_date=first.study_date, source=source,
                              synthetic=synthetic or first.synthetic, status="queued")
                session.add(study)
                session.flush()
            for p in items:
                key = f"orgs/{org_id}/studies/{study.id}/dicom/{p.sop_uid}.dcm"
                storage.put_file(key, p.path)
                session.add(Instance(organisation_id=org_id, study_id=study.id, sop_uid=p.sop_uid,
                                     series_uid=p.series_uid, key=key, size=p.path.stat().st_size))
                result.stored += 1
            study.n_instances = (study.n_instances or 0) + len(items)
            study.updated_at = utcnow()
            if queue:
                jobs.enqueue(session, study)
            audit.record(session, "study.upload", user, "study", study.id, address,
                         {"instances": len(items), "source": source}, organisation_id=org_id)
            result.studies.append({"id": study.id, "study_uid": study_uid, "new_instances": len(items)})
        if not result.studies:  # everything was already there
            existing = session.execute(select(Study.id, Study.study_uid).join(Instance, Instance.study_id == Study.id)
                                       .where(Instance.organisation_id == org_id,
                                              Instance.sop_uid.in_([p.sop_uid for p in parsed])).distinct()).all()
            result.studies = [{"id": sid, "study_uid": uid, "new_instances": 0} for sid, uid in existing]
    return result


#: Temporary folders of the platform's requests and jobs (``tempfile`` names them prefix + random).
TEMP_PREFIXES = ("pulmo-upload-", "pulmo-ingest-", "pulmo-study-", "pulmo-compare-", "pulmo-stow-", "pulmo-model-",
                 "pulmo-demo-")


def remove_stale_temp(older_than_h: float = 24.0, folder: Path | None = None) -> int:
    """Delete the platform's temporary folders untouched for ``older_than_h`` hours: what a
    process killed in the middle of an upload or an analysis left behind (a live request's folder
    is younger). Returns how many were removed; one that cannot be removed is left."""
    import shutil
    import tempfile
    import time

    root = Path(folder or tempfile.gettempdir())
    limit = time.time() - older_than_h * 3600
    removed = 0
    try:
        entries = list(root.iterdir())
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.name.startswith(TEMP_PREFIXES) and entry.is_dir() and not entry.is_symlink() \
                    and entry.stat().st_mtime < limit:
                shutil.rmtree(entry)
                removed += 1
        except OSError:
            continue
    return removed
