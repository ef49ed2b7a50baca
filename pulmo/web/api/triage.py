"""The triage calculator: ``POST /api/triage/predict`` (one patient), ``POST /api/triage/batch``
(a CSV), ``GET /api/triage/model``, and ``PUT /api/studies/{id}/clinical``.

An impossible value (age 400, a negative LDH, a temperature in °F in the °C field) is refused
with 422: ``{"detail": "<the messages>", "fields": {input name: message}}``, the messages of the
library's own checks. Missing values are not errors (the model imputes up to three, a score
without its inputs says what it misses); implausible values are used with a warning."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from pulmo.web.app import Principal, client_address, db, principal
from pulmo.web.services import access, audit, triage
from pulmo.web.services.clinical import clean_features, set_clinical

router = APIRouter(prefix="/api", tags=["triage"])
MAX_CSV = 20 << 20
INVALID = {422: {"description": "an impossible value: `detail` (text) and `fields` (input name: message)"}}


def refused(features: dict) -> JSONResponse | None:
    """The 422 answer for impossible values, or None when every value given is possible."""
    bad = triage.check_values(features)
    if not bad:
        return None
    return JSONResponse({"detail": "; ".join(bad.values()), "fields": bad}, status_code=422)


@router.get("/triage/model")
def model(request: Request, p: Principal = Depends(principal), session: Session = Depends(db, scope="function")) -> dict:
    """Whether a critical-illness model is installed (and which), and where its authors publish it."""
    return triage.model_info(session, request.app.state.settings)


@router.post("/triage/predict", responses=INVALID)
def predict(request: Request, patient: dict = Body(..., examples=[{
        "age": 66, "xray_abnormality": 1, "dyspnea": 1, "comorbidities": 2, "malignancy": 0, "copd": 0,
        "nlr": 7.5, "ldh": 410, "direct_bilirubin": None, "creatine_kinase": 150}]),
            p: Principal = Depends(principal), session: Session = Depends(db, scope="function")):
    """One patient (JSON ``{feature: value}``, units as in docs/triage.md and
    docs/clinical_scores.md): the probabilities of critical illness with their intervals, the
    risk group, the survival curve (``survival_curve``: day, prob_critical and its interval, days
    0 to 30) and the feature contributions (when a model is installed), and the classic scores.
    A feature of the model that is absent counts as missing."""
    features = clean_features(patient)
    bad = refused(features)
    if bad is not None:
        return bad
    out = triage.predict(session, request.app.state.settings, features)
    audit.record(session, "triage.predict", p.user, "triage", "", client_address(request))
    return out


@router.post("/triage/batch")
def batch(request: Request, file: UploadFile = File(...), p: Principal = Depends(principal),
          session: Session = Depends(db, scope="function")) -> Response:
    """A CSV of patients -> the CSV of results (``X-Pulmo-Rows`` / ``X-Pulmo-Failed`` headers).
    Rows with impossible values fail with their reason in the ``error`` column; text cells that a
    spreadsheet would run as a formula are escaped."""
    data = file.file.read(MAX_CSV + 1)
    if len(data) > MAX_CSV:
        raise HTTPException(413, f"the CSV is larger than {MAX_CSV >> 20} MiB")
    if not data.strip():
        raise HTTPException(400, "the CSV file is empty")
    text, rows, failed = triage.predict_csv(session, request.app.state.settings, data)
    audit.record(session, "triage.batch", p.user, "triage", "", client_address(request),
                 {"rows": rows, "failed": failed})
    return Response(text, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="triage-results.csv"', "X-Pulmo-Rows": str(rows),
        "X-Pulmo-Failed": str(failed), "Cache-Control": "no-store"})


@router.put("/studies/{study_id}/clinical", responses=INVALID)
def put_clinical(study_id: int, request: Request, features: dict = Body(...), p: Principal = Depends(principal),
                 session: Session = Depends(db, scope="function")):
    """Store the patient's clinical data on the study (its organisation's radiologists and
    clinicians) and compute the triage result; answers as ``POST /api/triage/predict``."""
    study = access.study_for(session, p.user, study_id, owner=True, roles=access.CLINICAL)
    features = clean_features(features)
    bad = refused(features)
    if bad is not None:
        return bad
    return set_clinical(session, request.app, study, features, p.user, client_address(request))
