"""The upload page ``/upload`` (``templates/upload.html``, ``static/upload.js``): DICOM files or
zips, chosen or dropped, sent to ``POST /api/studies`` with a progress bar, optionally with the
patient's clinical data (the triage features); then the studies it made, with links."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from pulmo.web import i18n
from pulmo.web.app import Principal, optional_principal
from pulmo.web.pages import language, render, sign_in_first
from pulmo.web.pages_study import CLINICAL_FIELDS

router = APIRouter(include_in_schema=False)

LABELS = {
    "uploading": "Uploading…", "storing": "Stored; reading the images…", "done": "Done.",
    "choose": "Choose DICOM files or a zip first.", "study": "Study", "open": "open",
    "stored": "{n} images stored", "duplicates": "{n} already stored (skipped)", "ignored": "{n} files ignored (not DICOM)",
    "too_big": "The upload is larger than this installation accepts ({mb} MiB).", "failed": "The upload failed:",
    "check_values": "Check the values marked: they are outside the plausible range.", "files": "{n} files, {mb} MiB",
}


@router.get("/upload")
def upload_page(request: Request, p: Principal | None = Depends(optional_principal)):
    if p is None:
        return sign_in_first(request)
    lang = language(request, p)
    labels = {k: i18n.translate(lang, v) for k, v in LABELS.items()}
    labels["max_mb"] = request.app.state.settings.max_upload_mb
    return render(request, "upload.html", p, labels=labels, clinical_fields=CLINICAL_FIELDS,
                  can_clinical=p.user.role in ("radiologist", "clinician"))
