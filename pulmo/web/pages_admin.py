"""The administration page ``/admin`` (admins only; ``templates/admin.html``, ``static/admin.js``):
the platform's health, users (create, deactivate, role, new password), the triage model (import
the published one: where its authors publish it and what it adds), and the audit log (search,
verify the hash chain). Everything goes through the JSON API."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from pulmo.web.app import Principal, optional_principal
from pulmo.web.models import ROLES
from pulmo.web.pages import language, render, sign_in_first
from pulmo.web import i18n
from pulmo.web.services.triage import PUBLISHED_REPOSITORY

router = APIRouter(include_in_schema=False)

LABELS = {
    "ok": "ok", "problem": "problem", "active": "active", "inactive": "inactive", "deactivate": "deactivate",
    "activate": "activate", "new_password": "new password", "password_prompt": "New password for {user} (at least 10 characters):",
    "saved": "Saved.", "created": "Created.", "none": "Nothing found.", "installed": "Installed:",
    "not_installed": "No model is installed: the calculator and the study pages give the classic scores only.",
    "features": "Features", "horizons": "Horizons (days)", "chain_ok": "The chain is intact: {n} entries checked.",
    "chain_bad": "The chain is broken at entry {id}: {reason}", "radiologist": "radiologist", "clinician": "clinician",
    "admin": "admin", "importing": "Importing…", "uploading": "Uploading…", "days": "days",
    "confirm_deactivate": "Deactivate {user}? Their sessions end at once.",
    "confirm_role": "Give {user} the role {role}?", "confirm_node": "Remove the DICOM node {node}?",
    "remove": "remove", "source": "source", "destination": "destination", "both": "both",
    "role_prompt": "New role for {user} (admin, radiologist or clinician):", "change_role": "role",
}


@router.get("/admin")
def admin_page(request: Request, p: Principal | None = Depends(optional_principal)):
    if p is None:
        return sign_in_first(request)
    if p.user.role != "admin":
        return render(request, "admin.html", p, status=403, forbidden=True)
    lang = language(request, p)
    labels = {k: i18n.translate(lang, v) for k, v in LABELS.items()}
    return render(request, "admin.html", p, forbidden=False, roles=ROLES, repository=PUBLISHED_REPOSITORY,
                  labels=labels)
