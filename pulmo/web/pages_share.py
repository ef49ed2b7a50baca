"""The page a share link opens, ``/s/{token}``, without an account: the PIN form when the link
has one, then the study page in read-only form (viewer, findings, key images, the signed
report and its PDF), fed by ``/api/share/{token}/...``. An unknown, expired or revoked link gets
a page that says so (404 / 410)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from pulmo.web.app import Principal, client_address, db, optional_principal
from pulmo.web.models import Study
from pulmo.web.pages import language, render
from pulmo.web.services import audit, share_links

router = APIRouter(include_in_schema=False)


def _gone(request: Request, exc: HTTPException):
    reason = {404: "This link does not exist. Check that it was copied whole.",
              410: "This link has expired or was revoked. Ask the hospital for a new one."}.get(exc.status_code, exc.detail)
    return render(request, "share_closed.html", None, status=exc.status_code, reason=reason, public=True)


@router.get("/s/{token}")
def share_page(token: str, request: Request, session: Session = Depends(db, scope="function"),
               p: Principal | None = Depends(optional_principal)):
    from pulmo.web.api.share_links import shared_summary
    from pulmo.web.pages_study import dicom_date, page_labels

    try:
        link = share_links.resolve(session, token)
    except HTTPException as exc:
        return _gone(request, exc)
    csrf = p.csrf if p is not None else ""   # a signed-in visitor's language switch needs their session's token
    if not share_links.unlocked(link, request.cookies):
        return render(request, "share_pin.html", None, status=401, token=token, error="", public=True, csrf=csrf)
    study = session.get(Study, link.study_id)
    audit.record(session, "study.view", None, "study", study.id, client_address(request),
                 {"page": "share link", "link": link.id}, organisation_id=study.organisation_id)
    lang = language(request, None)
    data = {"study": shared_summary(session, study, lang), "can_clinical": False, "own": False, "role": "",
            "share": True, "api": f"/api/share/{token}", "clinical_fields": []}
    return render(request, "study.html", None, study=study, data=data, share=link, clinical_fields=(),
                  labels=page_labels(lang), dicom_date=dicom_date, public=True, csrf=csrf)


@router.post("/s/{token}")
def share_pin(token: str, request: Request, pin: str = Form("", max_length=100),
              session: Session = Depends(db, scope="function")):
    """The PIN form (works without scripts)."""
    from pulmo.web.api.share_links import set_unlock_cookie

    try:
        link = share_links.resolve(session, token)
        ok = share_links.check_pin(session, link, pin, client_address(request)) if link.pin_hash else True
    except HTTPException as exc:
        if exc.status_code == 429:
            return render(request, "share_pin.html", None, status=429, token=token, public=True,
                          error="Too many wrong PINs for this link. Try again in 15 minutes.")
        return _gone(request, exc)
    if not ok:
        return render(request, "share_pin.html", None, status=401, token=token, error="Wrong PIN.", public=True)
    response = RedirectResponse(f"/s/{token}", status_code=303)
    set_unlock_cookie(request, response, link)
    return response
