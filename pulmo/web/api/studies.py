"""Studies: upload (``POST /api/studies``), the worklist (``GET /api/studies``), one study
(``GET /api/studies/{id}``), its output files, and the patient's clinical data."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo.web.app import Principal, client_address, db, principal
from pulmo.web.models import ClinicalData, Study
from pulmo.web.services import access, audit, ingest
from pulmo.web.services import worklist as worklist_service
from pulmo.web.services.analysis import study_prefix

router = APIRouter(prefix="/api", tags=["studies"])

#: The files of a study's results that may be downloaded, and their media types.
DOWNLOADS = {"results.json": "application/json", "report.html": "text/html", "seg.dcm": "application/dicom",
             "sr_measurements.dcm": "application/dicom", "sc_axial.dcm": "application/dicom",
             "sc_coronal.dcm": "application/dicom", "lungs.nii.gz": "application/gzip",
             "lesions.nii.gz": "application/gzip", "regions.nii.gz": "application/gzip",
             "nodules.nii.gz": "application/gzip"}


class Uploaded(BaseModel):
    id: int | None
    studies: list[dict]
    ignored: list[str]
    duplicates: int
    stored: int


class StudyOut(BaseModel):
    id: int
    status: str
    error: str = ""
    study_uid: str
    description: str
    study_date: str
    received_at: str
    patient: dict
    synthetic: bool
    organisation_id: int
    n_instances: int
    flag: str
    percent_involved: float | None
    severity: int | None
    severity_max: int | None
    nodules: int
    triage_risk: str
    triage_prob30: float | None
    priority: int
    results: dict | None = None
    clinical: dict | None = None


def study_out(study: Study, full: bool = False, clinical: ClinicalData | None = None) -> StudyOut:
    p = study.patient
    return StudyOut(
        id=study.id, status=study.status, error=study.error or "", study_uid=study.study_uid,
        description=study.description, study_date=study.study_date, received_at=study.received_at.isoformat() + "Z",
        patient={"id": p.id, "key": p.patient_key, "name": p.name, "birth_date": p.birth_date, "sex": p.sex},
        synthetic=study.synthetic, organisation_id=study.organisation_id, n_instances=study.n_instances,
        flag=study.flag, percent_involved=study.percent_involved, severity=study.severity,
        severity_max=study.severity_max, nodules=study.nodules, triage_risk=study.triage_risk,
        triage_prob30=study.triage_prob30, priority=study.priority,
        results=study.results if full and study.status == "done" else None,
        clinical=({"features": clinical.features, "triage": clinical.triage} if full and clinical else None))


@router.post("/studies", response_model=Uploaded, status_code=201)
def upload(request: Request, file: list[UploadFile] = File(..., description="DICOM files or a zip of them"),
           clinical: str | None = Form(None, max_length=20000,
                                       description="the patient's triage features as JSON (optional)"),
           p: Principal = Depends(principal), session: Session = Depends(db, scope="function")) -> Uploaded:
    """Multipart upload (field ``file``, one or more): DICOM instances or zips. Instances already
    stored (same SOP Instance UID) are skipped. Each study is queued for analysis; the answer's
    ``id`` is the first study's."""
    features = None
    if clinical:
        try:
            features = json.loads(clinical)
        except ValueError:
            raise HTTPException(400, "clinical: not valid JSON") from None
        if not isinstance(features, dict):
            raise HTTPException(400, "clinical: give an object of feature: value")
    storage = request.app.state.storage
    with tempfile.TemporaryDirectory(prefix="pulmo-upload-") as tmp:
        files = []
        for i, f in enumerate(file):
            dest = Path(tmp) / f"u{i}"
            with open(dest, "wb") as out:
                shutil.copyfileobj(f.file, out, 1 << 20)
            name = Path(f.filename or f"file{i}").name[:200]
            files.append((name, dest))
        result = ingest.ingest(session, storage, p.user.organisation_id, files, p.user, client_address(request))
    if features is not None and result.studies:
        from pulmo.web.services.clinical import set_clinical

        for s in result.studies:
            set_clinical(session, request.app, session.get(Study, s["id"]), features, p.user)
    first = result.studies[0]["id"] if result.studies else None
    return Uploaded(id=first, **result.to_dict())


@router.get("/studies")
def worklist(status: str | None = Query(None, pattern="^(queued|running|done|failed)$"),
             flag: str | None = Query(None, pattern="^(positive|negative|indeterminate|none)$"),
             q: str | None = Query(None, max_length=100, description="patient name or ID contains"),
             sort: str = Query("priority", pattern="^(priority|received|percent|risk)$"),
             limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=10_000_000),
             p: Principal = Depends(principal), session: Session = Depends(db, scope="function")) -> dict:
    """The studies this user may see, suspected pneumonia and high triage risk first
    (``priority``), filtered and paged; ``total`` counts every match."""
    total, rows = worklist_service.page(session, p.user, status=status, flag=flag, q=q, sort=sort, limit=limit,
                                        offset=offset)
    return {"total": total, "items": [study_out(s).model_dump() for s in rows]}


@router.get("/studies/{study_id}", response_model=StudyOut)
def get_study(study_id: int, request: Request, p: Principal = Depends(principal),
              session: Session = Depends(db, scope="function")) -> StudyOut:
    study = access.study_for(session, p.user, study_id)
    audit.record(session, "study.view", p.user, "study", study.id, client_address(request))
    clinical = session.execute(select(ClinicalData).where(ClinicalData.study_id == study.id)).scalar()
    return study_out(study, full=True, clinical=clinical)


@router.get("/studies/{study_id}/files/{name}")
def download(study_id: int, name: str, request: Request, p: Principal = Depends(principal),
             session: Session = Depends(db, scope="function")):
    """One output file of a finished analysis (``results.json``, ``report.html``, ``seg.dcm``, ...)."""
    study = access.study_for(session, p.user, study_id)
    if name not in DOWNLOADS:
        raise HTTPException(404, "no such file")
    path = request.app.state.storage.local_path(f"{study_prefix(study)}/results/{name}")
    if study.status != "done" or not path.is_file():
        raise HTTPException(404, "no such file (is the analysis finished?)")
    audit.record(session, "study.export", p.user, "study", study.id, client_address(request), {"file": name})
    return FileResponse(path, media_type=DOWNLOADS[name], filename=f"study-{study.id}-{name}")
