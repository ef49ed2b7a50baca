"""A study patient's clinical data (the triage features) and the triage result that goes with it."""

from __future__ import annotations

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo.web.models import ClinicalData, Study, User
from pulmo.web.services import audit, triage
from pulmo.web.services.analysis import priority

MAX_FEATURES = 80


def clean_features(features: dict) -> dict:
    """Plain ``{name: number | text | None}``: names are short text, values scalars."""
    if not isinstance(features, dict) or len(features) > MAX_FEATURES:
        raise HTTPException(400, f"clinical data: an object of at most {MAX_FEATURES} feature: value pairs")
    out = {}
    for k, v in features.items():
        if not isinstance(k, str) or not 0 < len(k) <= 64:
            raise HTTPException(400, "clinical data: feature names are text of 1 to 64 characters")
        if v is not None and not isinstance(v, (int, float, str, bool)):
            raise HTTPException(400, f"clinical data: {k!r} must be a number, yes/no or text")
        if isinstance(v, str) and len(v) > 200:
            raise HTTPException(400, f"clinical data: {k!r} is too long")
        out[k] = v
    return out


def set_clinical(session: Session, app, study: Study, features: dict, user: User | None, address: str = "") -> dict:
    """Store the features, run the calculator, put the risk group on the study (worklist order)."""
    features = clean_features(features)
    result = triage.predict(session, app.state.settings, features)
    row = session.execute(select(ClinicalData).where(ClinicalData.study_id == study.id)).scalar()
    if row is None:
        row = ClinicalData(study_id=study.id, features=features)
        session.add(row)
    row.features, row.triage, row.updated_by = features, result, user.id if user else None
    pred = result.get("prediction") or {}
    risk = pred.get("risk_group") or ""
    prob30 = None
    for p in pred.get("probabilities") or []:
        if float(p.get("days", 0)) == 30.0:
            prob30 = p.get("value")
    study.triage_risk, study.triage_prob30 = risk, prob30
    study.priority = priority({"positive": True}.get(study.flag, study.flag), risk)
    audit.record(session, "clinical.update", user, "study", study.id, address, {"features": sorted(features)})
    return result
