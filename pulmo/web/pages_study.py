"""The study page ``/studies/{id}``: the header (patient, study, status with live refresh), the
viewer (``static/viewer.js``: axial and coronal slices, window and level on the real HU values,
overlays, nodules) and the report panel (``static/study.js``: table per lung and region,
severity, pneumonia flag, key images, comparison with earlier studies, triage, impression)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo.triage.schema import FEATURE_NAMES
from pulmo.web.app import Principal, client_address, db, optional_principal
from pulmo.web.models import ClinicalData
from pulmo.web import i18n
from pulmo.web.pages import language, render, sign_in_first
from pulmo.web.services import access, audit

router = APIRouter(include_in_schema=False)

#: The ten features of the triage model (docs/triage.md), as the study page's form asks for them:
#: (name, label, unit, kind, min, max, step); kind "yes/no" or "number".
CLINICAL_FIELDS = (
    ("age", "Age", "years", "number", 0, 120, 1),
    ("xray_abnormality", "Chest X-ray abnormality", "", "yes/no", 0, 1, 1),
    ("dyspnea", "Dyspnea", "", "yes/no", 0, 1, 1),
    ("comorbidities", "Number of comorbidities", "", "number", 0, 20, 1),
    ("malignancy", "Cancer history", "", "yes/no", 0, 1, 1),
    ("copd", "COPD", "", "yes/no", 0, 1, 1),
    ("nlr", "Neutrophil-to-lymphocyte ratio", "", "number", 0.1, 150, "any"),
    ("ldh", "Lactate dehydrogenase", "U/L", "number", 40, 10000, "any"),
    ("direct_bilirubin", "Direct bilirubin", "µmol/L", "number", 0, 500, "any"),
    ("creatine_kinase", "Creatine kinase", "U/L", "number", 5, 100000, "any"),
)
assert {f[0] for f in CLINICAL_FIELDS} == set(FEATURE_NAMES)

#: Text shown by the page's scripts: key -> English message (translated for the page).
LABELS = {
    "queued": "queued", "running": "running", "done": "done", "failed": "failed",
    "waiting": "Waiting for a worker to analyse the study; this page updates by itself.",
    "analysing": "Analysing; this page updates by itself.",
    "failed_text": "The analysis failed:", "no_results": "No results: the analysis failed.",
    "results_later": "The results appear here when the analysis is finished.",
    "pneumonia_flag": "Pneumonia flag", "positive": "positive", "negative": "negative",
    "indeterminate": "indeterminate", "threshold": "threshold", "severity": "Severity",
    "percent_involved": "Lung involved", "right_lung": "Right lung", "left_lung": "Left lung",
    "both_lungs": "Both lungs", "region": "Region", "volume_ml": "Volume (mL)", "lesion_ml": "Lesion (mL)",
    "percent_short": "% involved", "ggo_ml": "GGO (mL)", "consolidation_ml": "Consolidation (mL)", "score": "Score",
    "partial_coverage": "The scan does not cover both lungs from apex to base: the figures cover the part in view.",
    "nodules": "Nodules", "nodule": "Nodule", "mass": "mass", "number": "No.", "kind": "Kind",
    "diameter_mm": "Diameter (mm)", "mean_hu": "Mean HU", "location": "Location", "none_found": "None found.",
    "warnings": "Warnings", "go_to_slice": "Go to slice", "axial": "Axial", "coronal": "Coronal",
    "ggo": "ground glass", "consolidation": "consolidation", "lobes": "Lobes", "zones": "Zones",
    "no_images": "The images cannot be shown:",
    "study_of": "the study of", "comparison_pending": "The comparison is being computed; it appears here by itself. Earlier study:",
    "compared_with": "Compared with", "comparison_failed": "No comparison:", "progression": "progression",
    "stable": "stable", "regression": "regression", "overall": "Overall", "before_ml": "Before (mL)",
    "now_ml": "Now (mL)", "lesion_volume": "Lesion volume, before and now", "change_ml": "Change (mL)", "change_pct": "Change (% points)", "verdict": "Verdict",
    "verdict_rule": "Progression or regression: the lesion volume changes by at least {ml} mL and by at least {pct} % "
                    "of the earlier volume; otherwise stable.",
    "report_unavailable": "Report editing is not available on this installation yet.",
    "report_error": "The report could not be loaded:", "research_tool": "Research tool, not a certified medical device.",
    "impression": "Impression", "save": "Save", "saved": "Saved.", "sign": "Sign", "signed_msg": "Signed.",
    "amend": "Amend", "amended": "The report is a draft again.", "pdf": "PDF", "draft": "draft", "signed": "signed",
    "signed_by": "signed by", "no_clinical": "No clinical data for this study.",
    "no_clinical_enter": "No clinical data yet: enter them below to compute the triage risk.",
    "risk_group": "Risk group", "low": "low", "medium": "medium", "high": "high", "horizon": "Critical illness within",
    "probability": "Probability", "interval": "Interval", "days": "{n} days", "imputed": "Imputed",
    "not_scored": "Not scored:", "no_model": "No triage model is installed: the classic scores only.",
    "classic_scores": "Classic scores", "score_name": "Score", "total": "Total", "band": "Band",
    "mortality": "Mortality", "missing": "missing values", "open_calculator": "Open in the triage calculator",
    "check_values": "Check the values marked: they are outside the plausible range.",
    "not_signed_yet": "not signed yet",
    "radiologist": "radiologist", "clinician": "clinician", "admin": "admin", "yes": "yes", "no": "no",
    "consulted": "Colleagues of other organisations consulted", "not_shared": "Not shared with other organisations.",
    "share_with": "Share with (user name)", "invite": "Share", "shared": "Shared.", "remove": "remove",
    "share_links": "Share links for the patient", "links_explained": "A read-only link to this study's images and "
    "signed report, for the patient or a doctor without an account. Nothing else of the patient's record is reachable "
    "through it.", "valid_for": "Valid for", "one_day": "1 day", "three_days": "3 days", "one_week": "1 week",
    "thirty_days": "30 days", "pin": "PIN", "optional": "optional", "create_link": "Create link", "copy": "Copy",
    "link_once": "The link is shown only now: copy it and give it to the patient, with the PIN if you set one.",
    "link": "Link", "expires": "Expires", "state": "State", "active": "active", "expired": "expired",
    "revoked": "revoked", "revoke": "revoke", "no_links": "No share links yet.",
    "reply": "reply", "reply_to": "Answering", "no_comments": "No comments yet.",
    "pending": "waiting to send", "sent": "sent", "resent": "The results will be sent again.",
    "next_try": "next try", "confirm_revoke": "Revoke this link? Whoever holds it can no longer open the study.",
    "confirm_unshare": "End the consultation with {user}? They no longer see the study.", "consultation": "consultation",
    "report_not_signed": "The radiologist has not signed the report yet. Open this link again later.",
}
#: Texts of the analysis (English in results.json) that the page shows translated.
ANALYSIS_TEXTS = (
    "right upper zone", "right middle zone", "right lower zone", "left upper zone", "left middle zone",
    "left lower zone", "right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe",
    "left lower lobe", "CT severity score, lobar (Pan et al. 2020)",
    "zone-based CT severity score (6 zones x 0-5; adapted from Pan et al. 2020 lobar score, NOT the validated "
    "lobar score)",
    "screening flag on the learned lesion model's ground glass and consolidation, at an operating point chosen for "
    "sensitivity to mild disease (docs/ct.md); not a diagnosis",
    "screening flag on the plug-in lesion model's output; not a diagnosis",
    "heuristic screening flag of the density method (HU bands), which overestimates ground glass in dense lungs; "
    "not a diagnosis",
    "the slice with the most ground glass and consolidation",
    "no pneumonia-pattern finding; the largest nodule / focal opacity (magenta outline, not counted as pneumonia)",
    "no pneumonia-pattern finding: a representative slice (the largest lung cross-section)",
    "new lesion (none before)", "resolved (lesion before, none now)", "ground glass, unchanged",
    "consolidation, unchanged", "ground glass turned into consolidation", "consolidation turned into ground glass",
)


def dicom_date(value: str | None) -> str:
    """A DICOM date (YYYYMMDD) as YYYY-MM-DD; anything else as it is, or a dash."""
    v = (value or "").strip()
    return f"{v[:4]}-{v[4:6]}-{v[6:]}" if len(v) == 8 and v.isdigit() else (v or "–")


def page_labels(lang: str) -> dict:
    out = {k: i18n.translate(lang, v) for k, v in LABELS.items()}
    out["names"] = {t: i18n.translate(lang, t) for t in ANALYSIS_TEXTS}
    return out


@router.get("/studies/{study_id}")
def study_page(study_id: int, request: Request, p: Principal | None = Depends(optional_principal),
               session: Session = Depends(db, scope="function")):
    if p is None:
        return sign_in_first(request)
    try:
        study = access.study_for(session, p.user, study_id)
    except HTTPException as exc:
        return render(request, "study.html", p, status=exc.status_code, study=None, data=None)
    from pulmo.web.api.studies import study_out

    clinical = session.execute(select(ClinicalData).where(ClinicalData.study_id == study.id)).scalar()
    audit.record(session, "study.view", p.user, "study", study.id, client_address(request), {"page": "study"})
    own = study.organisation_id == p.user.organisation_id
    data = {"study": study_out(study, full=True, clinical=clinical).model_dump(),
            "can_clinical": own and p.user.role in access.CLINICAL, "own": own, "role": p.user.role,
            "clinical_fields": [{"name": f[0], "kind": f[3], "min": f[4], "max": f[5], "step": f[6]}
                                for f in CLINICAL_FIELDS]}
    return render(request, "study.html", p, study=study, data=data, clinical_fields=CLINICAL_FIELDS,
                  labels=page_labels(language(request, p)), dicom_date=dicom_date)
