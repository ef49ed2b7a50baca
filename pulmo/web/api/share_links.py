"""Share links ("cloud film", :mod:`pulmo.web.services.share_links`).

Managed by a radiologist or clinician of the organisation that owns the study:
``POST /api/studies/{id}/share-links`` (JSON ``expires_in_hours``, ``pin``, both optional),
``GET /api/studies/{id}/share-links`` and ``DELETE /api/studies/{id}/share-links/{token}``
(the token, or the link's ``id`` from the list).

Used by anyone holding the link, without an account: ``/api/share/{token}/...`` gives that one
study (summary, findings, viewer slices, key images, the signed report and its PDF) and nothing
else. A link with a PIN answers 401 until ``POST /api/share/{token}/pin`` was given the PIN.
"""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from pulmo.web.app import Principal, client_address, db, localised, principal
from pulmo.web.models import ShareLink, Study, utcnow
from pulmo.web.pages import language
from pulmo.web.services import access, audit, reports, share_links, viewer

router = APIRouter(prefix="/api", tags=["share links"])


class ShareLinkIn(BaseModel):
    expires_in_hours: float | None = Field(None, description=f"lifetime in hours, {share_links.MIN_HOURS:g} to "
                                                             f"{share_links.MAX_HOURS:g} (default "
                                                             f"{share_links.DEFAULT_HOURS:g})")
    pin: str | None = Field(None, max_length=100, description=f"optional PIN the visitor must give "
                                                              f"({share_links.PIN_MIN}-{share_links.PIN_MAX} characters)")


class ShareLinkCreated(BaseModel):
    url: str = Field(description="the address to give the patient or colleague")
    token: str = Field(description="the link's secret token (shown once; only its hash is stored)")
    id: int
    expires_at: str
    has_pin: bool


class ShareLinkOut(BaseModel):
    id: int
    token_hint: str = Field(description="the first characters of the token")
    created_at: str
    expires_at: str
    created_by: int
    revoked_at: str | None
    has_pin: bool
    state: str = Field(description="active, expired or revoked")


class PinIn(BaseModel):
    pin: str = Field(max_length=100)


def share_url(request: Request, token: str) -> str:
    return str(request.base_url).rstrip("/") + f"/s/{token}"


@router.post("/studies/{study_id}/share-links", response_model=ShareLinkCreated, status_code=201)
def create_link(study_id: int, request: Request, body: ShareLinkIn | None = Body(None),
                p: Principal = Depends(principal), session: Session = Depends(db, scope="function")):
    """A read-only link to this study's viewer and report (radiologist or clinician of the owning
    organisation)."""
    study = access.study_for(session, p.user, study_id, owner=True, roles=access.SHARE)
    body = body or ShareLinkIn()
    token, link = share_links.create(session, study, p.user, body.expires_in_hours, body.pin,
                                     client_address(request))
    return ShareLinkCreated(url=share_url(request, token), token=token, id=link.id,
                            expires_at=link.expires_at.isoformat() + "Z", has_pin=bool(link.pin_hash))


@router.get("/studies/{study_id}/share-links", response_model=list[ShareLinkOut])
def list_links(study_id: int, p: Principal = Depends(principal), session: Session = Depends(db, scope="function")):
    study = access.study_for(session, p.user, study_id, owner=True, roles=access.SHARE)
    return [ShareLinkOut(**share_links.link_out(link)) for link in share_links.links_of(session, study)]


@router.delete("/studies/{study_id}/share-links/{token}", response_model=ShareLinkOut)
def revoke_link(study_id: int, token: str, request: Request, p: Principal = Depends(principal),
                session: Session = Depends(db, scope="function")):
    """Revoke a link at once (by its token or its id)."""
    study = access.study_for(session, p.user, study_id, owner=True, roles=access.SHARE)
    link = share_links.revoke(session, study, p.user, token, client_address(request))
    return ShareLinkOut(**share_links.link_out(link))


# ------------------------------------------------------------------ what a link's holder sees
def shared_study(token: str, request: Request, session: Session = Depends(db, scope="function")) -> Study:
    """The study behind an active link whose PIN (if any) was given: else 404, 410 or 401."""
    link = share_links.resolve(session, token)
    if not share_links.unlocked(link, request.cookies):
        raise HTTPException(401, "this link needs its PIN")
    request.state.share_link = link
    return session.get(Study, link.study_id)


@router.post("/share/{token}/pin")
def give_pin(token: str, request: Request, body: PinIn, session: Session = Depends(db, scope="function")):
    """Give the link's PIN: sets the cookie that opens the link in this browser."""
    link = share_links.resolve(session, token)
    if not link.pin_hash:
        return {"ok": True}
    if not share_links.check_pin(session, link, body.pin, client_address(request)):
        return JSONResponse({"detail": localised(request, "wrong PIN")}, status_code=401)  # returned, not raised: the failure counts
    response = JSONResponse({"ok": True})
    set_unlock_cookie(request, response, link)
    return response


def set_unlock_cookie(request: Request, response: Response, link: ShareLink) -> None:
    left = max(60, int((link.expires_at - utcnow()).total_seconds()))   # no longer than the link lives
    response.set_cookie(share_links.cookie_name(link), share_links.unlock_value(link), httponly=True, samesite="lax",
                        secure=request.app.state.settings.secure_cookies, max_age=left)


def shared_summary(session: Session, study: Study, lang: str) -> dict:
    """The study as a link's holder sees it: no clinical data, the impression only once signed."""
    from pulmo.web.api.studies import study_out

    full = study_out(study, full=True).model_dump()
    # an allow-list: what the page shows, nothing of the rest of the record (no triage, no internal ids)
    out = {k: full[k] for k in ("id", "status", "error", "study_uid", "description", "study_date", "synthetic",
                                "n_instances", "flag", "percent_involved", "severity", "severity_max", "nodules",
                                "results")}
    out["patient"] = {k: full["patient"][k] for k in ("key", "name", "birth_date", "sex")}
    out["clinical"] = None
    rep = reports.state(session, study, None, lang)
    signed = rep["status"] == "signed"
    out["report"] = {"status": rep["status"], "impression": rep["impression"] if signed else "",
                     "signed_by": rep["signed_by"], "signed_at": rep["signed_at"],
                     "can_edit": False, "can_sign": False, "can_amend": False}
    return out


@router.get("/share/{token}")
def share_summary(request: Request, study: Study = Depends(shared_study),
                  session: Session = Depends(db, scope="function")) -> dict:
    """The shared study: header, results, and the report (its impression once signed)."""
    audit.record(session, "study.view", None, "study", study.id, client_address(request),
                 {"link": request.state.share_link.id, "via": "share link API"}, organisation_id=study.organisation_id)
    return shared_summary(session, study, language(request, None))


@router.get("/share/{token}/status")
def share_status(study: Study = Depends(shared_study)) -> dict:
    return {"id": study.id, "status": study.status, "error": study.error or ""}


@router.get("/share/{token}/report")
def share_report(request: Request, study: Study = Depends(shared_study),
                 session: Session = Depends(db, scope="function")) -> dict:
    return shared_summary(session, study, language(request, None))["report"]


@router.get("/share/{token}/viewer")
def share_viewer_meta(request: Request, study: Study = Depends(shared_study)) -> dict:
    return viewer.meta(request.app.state.storage, study)


@router.get("/share/{token}/viewer/{kind}/{axis}/{index}")
def share_viewer_slice(kind: str, axis: str, index: int, request: Request,
                       study: Study = Depends(shared_study)) -> Response:
    from pulmo.web.api.viewer import slice_response

    return slice_response(request, study, kind, axis, index)


@router.get("/share/{token}/key-slices")
def share_key_slices(request: Request, study: Study = Depends(shared_study)) -> dict:
    from pulmo.web.api.study_images import key_slices

    return key_slices(request.app.state.storage, study)


@router.get("/share/{token}/key-image.png", response_class=Response)
def share_key_image(request: Request, view: str = Query("axial", pattern="^(axial|coronal)$"),
                    study: Study = Depends(shared_study)) -> Response:
    from pulmo.web.api.study_images import key_png

    return Response(key_png(request.app.state.storage, study, view), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=600"})


@router.get("/share/{token}/report.pdf", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}}, 409: {"description": "not signed yet"}})
def share_report_pdf(request: Request, lang: str | None = Query(None, pattern="^(en|zh-CN)$"),
                     study: Study = Depends(shared_study), session: Session = Depends(db, scope="function")):
    """The signed report as PDF (no clinical data)."""
    report = reports.find(session, study)
    if report is None or report.status != "signed":
        raise HTTPException(409, "the report is not signed yet")
    language_ = lang or language(request, None)
    data = reports.pdf(session, request.app.state.storage, study, None, language_)
    audit.record(session, "report.export", None, "study", study.id, client_address(request),
                 {"format": "pdf", "language": language_, "share_link": request.state.share_link.id},
                 organisation_id=study.organisation_id)
    return Response(data, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="pulmo-report-study-{study.id}.pdf"', "Cache-Control": "no-store"})
