"""A study's report: ``GET /api/studies/{id}/report`` (every user who may see the study),
``PUT /api/studies/{id}/report`` (the impression), ``POST .../report/sign`` and
``POST .../report/amend`` (a radiologist of the organisation that owns the study), and
``GET /api/studies/{id}/report.pdf``. Every view, change, signature and export is audited."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from pulmo.web import i18n
from pulmo.web.app import Principal, client_address, db, principal
from pulmo.web.services import access, audit, reports

router = APIRouter(prefix="/api", tags=["reports"])


class ReportOut(BaseModel):
    impression: str
    status: str = Field(description="draft or signed")
    signed_by: str | None = Field(None, description="user name of the radiologist who signed it")
    signed_at: str | None = Field(None, description="when it was signed (ISO 8601, UTC)")
    can_edit: bool = Field(description="this user may change the impression now")
    can_sign: bool = Field(description="this user may sign it now (a draft of a finished analysis)")
    can_amend: bool = Field(False, description="this user may turn the signed report into a draft again")


class ImpressionIn(BaseModel):
    impression: str = Field(max_length=reports.MAX_IMPRESSION)


def _lang(p: Principal, requested: str | None = None) -> str:
    return requested if requested in i18n.LANGUAGES else p.user.language


@router.get("/studies/{study_id}/report", response_model=ReportOut)
def get_report(study_id: int, request: Request, p: Principal = Depends(principal),
               session: Session = Depends(db, scope="function")) -> ReportOut:
    """The report: the impression (a draft written from the AI results when none was saved yet),
    its status and signature, and what this user may do with it."""
    study = access.study_for(session, p.user, study_id)
    out = reports.state(session, study, p.user, _lang(p))
    audit.record(session, "report.view", p.user, "study", study.id, client_address(request))
    return ReportOut(**out)


@router.put("/studies/{study_id}/report", response_model=ReportOut,
            responses={409: {"description": "the report is signed"}})
def put_report(study_id: int, body: ImpressionIn, request: Request, p: Principal = Depends(principal),
               session: Session = Depends(db, scope="function")) -> ReportOut:
    """Save the impression of the draft (a radiologist of the owning organisation)."""
    study = access.study_for(session, p.user, study_id, owner=True, roles=access.EDIT_REPORT)
    reports.save(session, study, p.user, body.impression, client_address(request))
    return ReportOut(**reports.state(session, study, p.user, _lang(p)))


@router.post("/studies/{study_id}/report/sign", response_model=ReportOut,
             responses={409: {"description": "already signed, or the analysis is not done"}})
def sign_report(study_id: int, request: Request, p: Principal = Depends(principal),
                session: Session = Depends(db, scope="function")) -> ReportOut:
    """Sign the report: the radiologist and the time are recorded."""
    study = access.study_for(session, p.user, study_id, owner=True, roles=access.EDIT_REPORT)
    reports.sign(session, study, p.user, client_address(request), _lang(p))
    return ReportOut(**reports.state(session, study, p.user, _lang(p)))


@router.post("/studies/{study_id}/report/amend", response_model=ReportOut,
             responses={409: {"description": "the report is not signed"}})
def amend_report(study_id: int, request: Request, p: Principal = Depends(principal),
                 session: Session = Depends(db, scope="function")) -> ReportOut:
    """Turn a signed report into a draft again, to change it (the signature stays in the audit log)."""
    study = access.study_for(session, p.user, study_id, owner=True, roles=access.EDIT_REPORT)
    reports.amend(session, study, p.user, client_address(request))
    return ReportOut(**reports.state(session, study, p.user, _lang(p)))


@router.get("/studies/{study_id}/report.pdf", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}}})
def report_pdf(study_id: int, request: Request,
               lang: str | None = Query(None, pattern="^(en|zh-CN)$", description="default: the user's language"),
               p: Principal = Depends(principal), session: Session = Depends(db, scope="function")) -> Response:
    """The report as PDF, in the user's language (English or Chinese)."""
    study = access.study_for(session, p.user, study_id)
    language = _lang(p, lang)
    data = reports.pdf(session, request.app.state.storage, study, p.user, language)
    audit.record(session, "report.export", p.user, "study", study.id, client_address(request),
                 {"format": "pdf", "language": language})
    return Response(data, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="pulmo-report-study-{study.id}.pdf"',
        "Cache-Control": "no-store"})
