"""DICOMweb under ``/dicomweb`` (PS3.18): QIDO-RS search, WADO-RS retrieve (instances, metadata,
frames) and STOW-RS store, behind the platform's authorisation: a bearer token (or the web
session), and an organisation sees only its own studies and those shared with it. A study's
analysis results (SEG, SR, Secondary Captures) are instances of the study, so a DICOMweb viewer
shows the overlays.
"""

from __future__ import annotations

import re
import secrets
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo.web.app import Principal, client_address, db, principal
from pulmo.web.models import Patient, Study
from pulmo.web.services import audit, dicomweb, ingest
from pulmo.web.services.access import visible_condition

router = APIRouter(prefix="/dicomweb", tags=["DICOMweb"])
DICOM_JSON = "application/dicom+json"
UID = r"^[0-9]+(\.[0-9]+)*$"
MAX_RESULTS = 1000


def _json(data, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, media_type=DICOM_JSON)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/dicomweb"


def _check_uid(uid: str) -> str:
    if len(uid) > 64 or not re.match(UID, uid):
        raise HTTPException(400, f"not a DICOM UID: {uid[:70]!r}")
    return uid


def _study(session: Session, p: Principal, uid: str) -> Study:
    _check_uid(uid)
    rows = session.execute(select(Study).where(Study.study_uid == uid, visible_condition(p.user))).scalars().all()
    if not rows:
        raise HTTPException(404, "no such study")
    rows.sort(key=lambda s: s.organisation_id != p.user.organisation_id)   # the user's own copy first
    return rows[0]


def _items(session, request, study, series: str | None = None, sop: str | None = None):
    its = dicomweb.items(session, request.app.state.storage, study)
    if series is not None:
        _check_uid(series)
        its = [i for i in its if i.series_uid == series]
    if sop is not None:
        _check_uid(sop)
        its = [i for i in its if i.sop_uid == sop]
    if not its:
        raise HTTPException(404, "no such series or instance")
    return its


def _multipart(storage, its) -> StreamingResponse:
    boundary = secrets.token_hex(16)

    def parts():
        for it in its:
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            with open(storage.local_path(it.key), "rb") as fh:
                while chunk := fh.read(1 << 20):
                    yield chunk
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return StreamingResponse(parts(), media_type=f'multipart/related; type="application/dicom"; boundary={boundary}')


# ----------------------------------------------------------------------------- QIDO-RS
@router.get("/studies", summary="QIDO-RS: search for studies")
def search_studies(request: Request, PatientID: str = Query("", max_length=64),  # noqa: N803 - DICOM keywords
                   StudyInstanceUID: str = Query("", max_length=64),  # noqa: N803
                   StudyDate: str = Query("", max_length=17), PatientName: str = Query("", max_length=64),  # noqa: N803
                   limit: int = Query(100, ge=1, le=MAX_RESULTS), offset: int = Query(0, ge=0),
                   p: Principal = Depends(principal), session: Session = Depends(db, scope="function")):
    q = select(Study).join(Patient, Patient.id == Study.patient_id).where(visible_condition(p.user))
    if StudyInstanceUID:
        q = q.where(Study.study_uid == _check_uid(StudyInstanceUID))
    if PatientID:
        q = q.where(Patient.patient_key == PatientID)
    if PatientName:
        q = q.where(Patient.name.like(PatientName.replace("\\", "").replace("%", r"\%").replace("_", r"\_")
                                      .replace("*", "%").replace("?", "_"), escape="\\"))
    if StudyDate:
        m = re.fullmatch(r"(\d{8})?(-)?(\d{8})?", StudyDate)
        if not m or not (m.group(1) or m.group(3)):
            raise HTTPException(400, "StudyDate: YYYYMMDD, or a range YYYYMMDD-YYYYMMDD")
        lo, dash, hi = m.groups()
        if not dash:
            q = q.where(Study.study_date == lo)
        else:
            if lo:
                q = q.where(Study.study_date >= lo)
            if hi:
                q = q.where(Study.study_date <= hi)
    rows = session.execute(q.order_by(Study.received_at.desc(), Study.id.desc()).limit(limit).offset(offset)).scalars()
    storage, base = request.app.state.storage, _base(request)
    return _json([dicomweb.study_json(s, dicomweb.items(session, storage, s), base) for s in rows])


@router.get("/studies/{study_uid}/series", summary="QIDO-RS: the series of a study")
def search_series(study_uid: str, request: Request, p: Principal = Depends(principal),
                  session: Session = Depends(db, scope="function")):
    study = _study(session, p, study_uid)
    return _json(dicomweb.series_json(study, _items(session, request, study), _base(request)))


@router.get("/studies/{study_uid}/series/{series_uid}/instances", summary="QIDO-RS: the instances of a series")
def search_instances(study_uid: str, series_uid: str, request: Request, p: Principal = Depends(principal),
                     session: Session = Depends(db, scope="function")):
    study = _study(session, p, study_uid)
    return _json(dicomweb.instance_json(study, _items(session, request, study, series_uid), _base(request)))


@router.get("/studies/{study_uid}/instances", summary="QIDO-RS: the instances of a study")
def search_study_instances(study_uid: str, request: Request, p: Principal = Depends(principal),
                           session: Session = Depends(db, scope="function")):
    study = _study(session, p, study_uid)
    return _json(dicomweb.instance_json(study, _items(session, request, study), _base(request)))


# ----------------------------------------------------------------------------- WADO-RS
def _retrieve(request, session, p, study_uid, series_uid=None, sop_uid=None):
    study = _study(session, p, study_uid)
    its = _items(session, request, study, series_uid, sop_uid)
    audit.record(session, "study.dicomweb_retrieve", p.user, "study", study.id, client_address(request),
                 {"series": series_uid or "", "instance": sop_uid or "", "instances": len(its)})
    return _multipart(request.app.state.storage, its)


@router.get("/studies/{study_uid}", summary="WADO-RS: a whole study", response_class=StreamingResponse)
def retrieve_study(study_uid: str, request: Request, p: Principal = Depends(principal),
                   session: Session = Depends(db, scope="function")):
    return _retrieve(request, session, p, study_uid)


@router.get("/studies/{study_uid}/series/{series_uid}", summary="WADO-RS: a series", response_class=StreamingResponse)
def retrieve_series(study_uid: str, series_uid: str, request: Request, p: Principal = Depends(principal),
                    session: Session = Depends(db, scope="function")):
    return _retrieve(request, session, p, study_uid, series_uid)


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}", summary="WADO-RS: an instance",
            response_class=StreamingResponse)
def retrieve_instance(study_uid: str, series_uid: str, sop_uid: str, request: Request,
                      p: Principal = Depends(principal), session: Session = Depends(db, scope="function")):
    return _retrieve(request, session, p, study_uid, series_uid, sop_uid)


def _metadata(request, session, p, study_uid, series_uid=None, sop_uid=None):
    study = _study(session, p, study_uid)
    base = _base(request)
    its = _items(session, request, study, series_uid, sop_uid)
    # a viewer reads a study through its metadata (then frames, not audited one by one): a view
    audit.record(session, "study.dicomweb_metadata", p.user, "study", study.id, client_address(request),
                 {"series": series_uid or "", "instance": sop_uid or "", "instances": len(its)})
    return _json([dicomweb.metadata_json(i, base, study.study_uid) for i in its])


@router.get("/studies/{study_uid}/metadata", summary="WADO-RS: metadata of a study")
def study_metadata(study_uid: str, request: Request, p: Principal = Depends(principal),
                   session: Session = Depends(db, scope="function")):
    return _metadata(request, session, p, study_uid)


@router.get("/studies/{study_uid}/series/{series_uid}/metadata", summary="WADO-RS: metadata of a series")
def series_metadata(study_uid: str, series_uid: str, request: Request, p: Principal = Depends(principal),
                    session: Session = Depends(db, scope="function")):
    return _metadata(request, session, p, study_uid, series_uid)


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata",
            summary="WADO-RS: metadata of an instance")
def instance_metadata(study_uid: str, series_uid: str, sop_uid: str, request: Request,
                      p: Principal = Depends(principal), session: Session = Depends(db, scope="function")):
    return _metadata(request, session, p, study_uid, series_uid, sop_uid)


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame_list}",
            summary="WADO-RS: frames of an instance (uncompressed pixel data)", response_class=Response)
def retrieve_frames(study_uid: str, series_uid: str, sop_uid: str, frame_list: str, request: Request,
                    p: Principal = Depends(principal), session: Session = Depends(db, scope="function")):
    if not re.fullmatch(r"\d{1,6}(,\d{1,6}){0,999}", frame_list):
        raise HTTPException(400, "frames: a comma-separated list of frame numbers, e.g. 1,2,3")
    study = _study(session, p, study_uid)
    it = _items(session, request, study, series_uid, sop_uid)[0]
    try:
        data = dicomweb.frames(request.app.state.storage.local_path(it.key), [int(v) for v in frame_list.split(",")])
    except ValueError as exc:
        raise HTTPException(406 if "compressed" in str(exc) else 400, str(exc)) from None
    boundary = secrets.token_hex(16)
    body = b"".join(f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode() + d + b"\r\n"
                    for d in data) + f"--{boundary}--\r\n".encode()
    return Response(body, media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}')


# ----------------------------------------------------------------------------- STOW-RS
def _parts(body: bytes, content_type: str) -> list[bytes]:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/related") or not m:
        raise HTTPException(415, 'STOW-RS takes multipart/related; type="application/dicom" with a boundary')
    delim = b"--" + m.group(1).encode("latin-1")
    out = []
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise HTTPException(400, "a part of the multipart body has no header end")
        if b"application/dicom" not in head.lower() and head.strip():
            raise HTTPException(415, "STOW-RS parts must be application/dicom")
        out.append(data[:-2] if data.endswith(b"\r\n") else data)
    if not out:
        raise HTTPException(400, "the multipart body holds no part")
    return out


@router.post("/studies", summary="STOW-RS: store instances")
@router.post("/studies/{study_uid}", summary="STOW-RS: store instances of one study")
async def store(request: Request, study_uid: str | None = None, p: Principal = Depends(principal)):
    from starlette.concurrency import run_in_threadpool

    parts = _parts(await request.body(), request.headers.get("content-type", ""))
    if study_uid is not None:
        _check_uid(study_uid)
    return await run_in_threadpool(_store, request, p, parts, study_uid)


def _store(request: Request, p: Principal, parts: list[bytes], study_uid: str | None):
    import pydicom

    from pulmo.web.db import transaction

    with tempfile.TemporaryDirectory(prefix="pulmo-stow-") as tmp:
        files, failed = [], []
        for k, data in enumerate(parts):
            path = Path(tmp) / f"part{k:05d}.dcm"
            path.write_bytes(data)
            if study_uid is not None:
                try:
                    uid = str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
                              .get("StudyInstanceUID", ""))
                except Exception:  # noqa: BLE001 - left to the ingest's own message
                    uid = study_uid
                if uid != study_uid:
                    failed.append({"00081150": {"vr": "UI"}, "00081155": {"vr": "UI"},
                                   "00081197": {"vr": "US", "Value": [0xA900]}})  # does not match the study
                    continue
            files.append((f"part{k}", path))
        stored_uids: list[str] = []
        if files:
            try:
                with transaction(request.app.state.sessions) as s:
                    user = s.merge(p.user)
                    result = ingest.ingest(s, request.app.state.storage, user.organisation_id, files, user,
                                           client_address(request), source="stow")
                stored_uids = [st["study_uid"] for st in result.studies]
                n_failed = len(result.ignored)
                failed += [{"00081197": {"vr": "US", "Value": [0xC000]}} for _ in range(n_failed)]
            except ingest.IngestError as exc:
                return _json({"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [0xC000]}}
                                                                  for _ in files] + failed}}, 409)
        if not stored_uids:
            return _json({"00081198": {"vr": "SQ", "Value": failed}}, 409)
        answer = {"00081190": dicomweb.value("UR", *[f"{_base(request)}/studies/{u}" for u in stored_uids])}
        if failed:
            answer["00081198"] = {"vr": "SQ", "Value": failed}
        return _json(answer, 202 if failed else 200)
