"""The triage calculator page ``/triage`` (``templates/triage.html``, ``static/triage.js``): the
ten admission features of the critical-illness model (Liang et al., Nat Commun 2020) with their
units, and the inputs of the classic scores (CURB-65, CRB-65, qSOFA, NEWS2, PSI/PORT, ISARIC 4C);
the results (probabilities with their interval, risk group, survival curve, feature
contributions, scores), a CSV batch upload, and ``?study=ID`` to read and save a study's
clinical data (``PUT /api/studies/{id}/clinical``).

Field ranges come from the libraries' own tables (:mod:`pulmo.triage.schema`,
:mod:`pulmo.triage.scores_io`), so the page refuses what the API would refuse; the API's message
is shown when it refuses anyway."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo.web import i18n
from pulmo.web.app import Principal, client_address, db, optional_principal
from pulmo.web.models import ClinicalData
from pulmo.web.pages import language, render
from pulmo.web.services import access, audit, triage

router = APIRouter(include_in_schema=False)

#: The model's ten features as the form asks for them: (name, label, unit, kind, step, other units,
#: hint). Other units: (key, unit, factor to the model's unit), converted in the browser, so that the
#: study keeps the model's own units. Ranges: :data:`pulmo.triage.schema.BY_NAME`.
MODEL_FIELDS = (
    ("age", "Age", "years", "number", "1", (), ""),
    ("xray_abnormality", "Chest X-ray abnormality", "", "yes/no", "", (), "Abnormal chest imaging at admission."),
    ("dyspnea", "Dyspnea", "", "yes/no", "", (), ""),
    ("comorbidities", "Number of comorbidities", "", "number", "1", (),
     "Count of: diabetes, hypertension, coronary heart disease, cerebrovascular disease, hepatitis B, chronic "
     "kidney disease, immunodeficiency, COPD, cancer (0 to 9)."),
    ("malignancy", "Cancer history", "", "yes/no", "", (), ""),
    ("copd", "COPD", "", "yes/no", "", (), ""),
    ("nlr", "Neutrophil-to-lymphocyte ratio", "ratio", "number", "any", (), ""),
    ("ldh", "Lactate dehydrogenase", "U/L", "number", "any", (("ldh_ukat_l", "µkat/L"),), ""),
    ("direct_bilirubin", "Direct bilirubin", "µmol/L", "number", "any", (("direct_bilirubin_mg_dl", "mg/dL"),), ""),
    ("creatine_kinase", "Creatine kinase", "U/L", "number", "any", (("creatine_kinase_ukat_l", "µkat/L"),), ""),
)

#: The classic scores' inputs, by group: (name, label, unit, kind, step, other units, hint). Other
#: units: (field, unit): sent under that field's own name (the scores convert it).
SCORE_GROUPS = (
    ("Vital signs", (
        ("respiratory_rate", "Respiratory rate", "/min", "number", "1", (), ""),
        ("systolic_bp", "Systolic blood pressure", "mmHg", "number", "1", (), ""),
        ("diastolic_bp", "Diastolic blood pressure", "mmHg", "number", "1", (), ""),
        ("pulse", "Pulse", "/min", "number", "1", (), ""),
        ("temperature_c", "Temperature", "°C", "number", "0.1", (("temperature_f", "°F"),), ""),
        ("spo2", "SpO2", "%", "number", "1", (), "As measured (on air or on oxygen)."),
        ("on_oxygen", "On supplemental oxygen", "", "yes/no", "", (), ""),
        ("hypercapnic_respiratory_failure", "Hypercapnic respiratory failure (NEWS2 SpO2 scale 2)", "", "yes/no",
         "", (), "Target SpO2 88-92 %."),
    )),
    ("Mental status", (
        ("confusion", "New confusion", "", "yes/no", "", (), "New disorientation in person, place or time."),
        ("consciousness", "Level of consciousness (ACVPU)", "", "acvpu", "", (), ""),
        ("gcs", "Glasgow Coma Scale", "", "number", "1", (), "3 to 15."),
    )),
    ("Laboratory", (
        ("urea_mmol_l", "Urea", "mmol/L", "number", "any", (("bun_mg_dl", "mg/dL BUN"),), ""),
        ("crp_mg_l", "C-reactive protein", "mg/L", "number", "any", (("crp_mg_dl", "mg/dL"),), ""),
        ("sodium_mmol_l", "Sodium", "mmol/L", "number", "any", (), ""),
        ("glucose_mg_dl", "Glucose", "mg/dL", "number", "any", (("glucose_mmol_l", "mmol/L"),), ""),
        ("arterial_ph", "Arterial pH", "", "number", "0.01", (), ""),
        ("pao2_mmhg", "PaO2", "mmHg", "number", "any", (("pao2_kpa", "kPa"),), ""),
        ("hematocrit_pct", "Haematocrit", "%", "number", "any", (), ""),
    )),
    ("History and examination", (
        ("sex", "Sex", "", "sex", "", (), ""),
        ("n_comorbidities", "Comorbidities (ISARIC 4C count)", "", "number", "1", (),
         "Charlson comorbidities and obesity; not the model's count above."),
        ("nursing_home", "Nursing-home resident", "", "yes/no", "", (), ""),
        ("neoplastic_disease", "Neoplastic disease (active or within 1 year)", "", "yes/no", "", (), ""),
        ("liver_disease", "Liver disease", "", "yes/no", "", (), ""),
        ("congestive_heart_failure", "Congestive heart failure", "", "yes/no", "", (), ""),
        ("cerebrovascular_disease", "Cerebrovascular disease", "", "yes/no", "", (), ""),
        ("renal_disease", "Renal disease", "", "yes/no", "", (), ""),
        ("altered_mental_status", "Altered mental status", "", "yes/no", "", (), ""),
        ("pleural_effusion", "Pleural effusion", "", "yes/no", "", (), "On the chest imaging."),
    )),
)

#: Short names of the model's features for the contributions chart.
SHORT = {"age": "Age", "xray_abnormality": "X-ray abnormality", "dyspnea": "Dyspnea",
         "comorbidities": "Comorbidities", "malignancy": "Cancer history", "copd": "COPD", "nlr": "NLR",
         "ldh": "LDH", "direct_bilirubin": "Direct bilirubin", "creatine_kinase": "CK"}

#: Inputs the scores name in what they miss that the form asks for otherwise.
OTHER_INPUTS = {"spo2_room_air": "SpO2 on room air", "amt_score": "Abbreviated Mental Test score",
                "bun_mg_dl": "Blood urea nitrogen", "temperature_f": "Temperature", "glucose_mmol_l": "Glucose",
                "pao2_kpa": "PaO2", "crp_mg_dl": "C-reactive protein", "spo2_scale": "NEWS2 SpO2 scale"}

#: Text shown by triage.js: key -> English message (translated for the page).
LABELS = {
    "calculating": "Calculating…", "saved": "Saved to the study.",
    "check_values": "Check the values marked.", "out_of_range": "Enter a number from {min} to {max}.",
    "not_number": "Enter a number.", "risk_group": "Risk group", "low": "low", "medium": "medium", "high": "high",
    "horizon": "Critical illness within", "probability": "Probability", "interval": "90 % interval",
    "days": "{n} days", "day": "day", "imputed": "Imputed (estimated from the other values)",
    "not_scored": "The model could not score this patient:",
    "no_model_result": "The critical-illness model is not installed: the classic scores only.",
    "curve_title": "Probability of critical illness by day",
    "curve_note": "1 − the survival curve of the model; the shaded band is the interval over the imputations of "
                  "missing values.",
    "curve_label": "Probability of critical illness from day 0 to day {n}",
    "cutoff_high": "high-risk cut-off", "cutoff_low": "low-risk cut-off",
    "contrib_title": "Feature contributions",
    "contrib_note": "Shapley contributions to the risk score (log hazard ratio) against the average patient of the "
                    "development cohort: red raises the risk, green lowers it.",
    "contrib_label": "Contribution of each feature to the risk score",
    "score_final": "Risk score (log hazard ratio)",
    "scores_title": "Classic scores", "score": "Score", "points": "Points", "band": "Band",
    "mortality": "Mortality", "not_computable": "not computable: missing",
    "missing_n": "not computable: {n} inputs missing", "list_sep": ", ",
    "score_error": "The scores could not be computed:",
    "rows_done": "{rows} rows, {failed} not scored.",
    "uploading": "Calculating the file…", "choose_file": "Choose a CSV file first.",
    "preview": "First rows of the result", "row": "Row", "error": "Error",
    "enter_values": "Enter the values and press Calculate.", "copy_of": "results",
    "moderate": "moderate", "severe": "severe", "intermediate": "intermediate", "positive": "positive",
    "negative": "negative", "low-medium": "low-medium", "very high": "very high",
}

#: Band texts of the scores (the library's wording), shown translated.
BAND_TEXTS = (
    "0-1: low severity; consider home treatment", "2: consider hospital-supervised treatment",
    ">=3: severe pneumonia; consider ICU (especially 4-5)",
    "0: low risk (<1% mortality); likely suitable for home treatment",
    "1-2: intermediate risk (1-10% mortality); consider hospital referral",
    "3-4: high risk (>10% mortality); urgent hospital admission",
    "0-1: qSOFA negative", ">=2: qSOFA positive", "0-4: low",
    "a single parameter scoring 3 (total < 5): low-medium; urgent ward review",
    "5-6: medium; urgent assessment within 1 h",
    ">=7: high; emergency assessment within 30 min by a critical-care-competent team",
    "class I (step 1: age <= 50, none of the five comorbidities, normal vital signs and mental status): outpatient",
    "class II (<= 70 points): outpatient", "class III (71-90 points): brief inpatient stay or observation",
    "class IV (91-130 points): admit", "class V (> 130 points): admit",
    "low risk (0-3 points): in-hospital mortality ~1.2%", "intermediate risk (4-8 points): in-hospital mortality ~9.9%",
    "high risk (9-14 points): in-hospital mortality ~31.4%", "very high risk (>=15 points): in-hospital mortality ~61.5%",
)


def _range(valid) -> tuple[float | None, float | None]:
    return (None, None) if valid is None else (float(valid[0]), float(valid[1]))


def field_specs(lang: str) -> dict:
    """The form's fields with their ranges (the libraries' valid ranges) and other units, for the
    template and the script."""
    from pulmo.triage import scores_io
    from pulmo.triage.schema import BY_NAME, CONVERSIONS

    def t(m: str) -> str:
        return i18n.translate(lang, m) if m else ""

    model = []
    for name, label, unit, kind, step, others, hint in MODEL_FIELDS:
        lo, hi = _range(BY_NAME[name].valid)
        model.append({"name": name, "label": t(label), "unit": t(unit), "kind": kind, "step": step, "min": lo,
                      "max": hi, "hint": t(hint), "short": t(SHORT[name]),
                      "units": [{"key": key, "unit": u, "factor": CONVERSIONS[key][1]} for key, u in others]})
    groups = []
    for title, fields in SCORE_GROUPS:
        out = []
        for name, label, unit, kind, step, others, hint in fields:
            lo, hi = _range(scores_io.BY_NAME[name].valid)
            alts = []
            for key, u in others:
                alo, ahi = _range(scores_io.BY_NAME[key].valid)
                alts.append({"key": key, "unit": t(u), "min": alo, "max": ahi})
            out.append({"name": name, "label": t(label), "unit": t(unit), "kind": kind, "step": step, "min": lo,
                        "max": hi, "hint": t(hint), "units": alts})
        groups.append({"title": t(title), "fields": out})
    return {"model": model, "scores": groups}


def canonical(features: dict) -> tuple[dict, dict]:
    """A study's stored features as the form's fields (aliases resolved, the model's other units
    converted), and the entries the form does not show (kept when saving)."""
    from pulmo.io.cells import normalise_header
    from pulmo.triage import scores_io
    from pulmo.triage.schema import CONVERSIONS, feature_for_column

    form, extra = {}, {}
    shown = {f[0] for f in MODEL_FIELDS} | {f[0] for _, group in SCORE_GROUPS for f in group} \
        | {u[0] for _, group in SCORE_GROUPS for f in group for u in f[5]}
    items = sorted((features or {}).items(), key=lambda kv: kv[0] not in shown)   # exact names first
    for key, value in items:
        norm = normalise_header(key)
        name = key if key in shown else (feature_for_column(key) or scores_io.resolve_name(key))
        if norm in CONVERSIONS:
            base, factor = CONVERSIONS[norm]
            try:
                value, name = (None if value in (None, "") else round(float(value) * factor, 6)), base
            except (TypeError, ValueError):
                name = None
        if name in shown:
            if form.get(name) is None:
                form[name] = value
        else:
            extra[key] = value
    return form, extra


def _date(value: str | None) -> str:
    v = (value or "").strip()
    return f"{v[:4]}-{v[4:6]}-{v[6:]}" if len(v) == 8 and v.isdigit() else v


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


@router.get("/triage")
def triage_page(request: Request, study: str | None = None, p: Principal | None = Depends(optional_principal),
                session: Session = Depends(db, scope="function")):
    if p is None:
        return _login_redirect(request)
    lang = language(request, p)
    settings = request.app.state.settings
    linked, status = None, 200
    if study not in (None, ""):
        try:
            sid = int(study)
            if not 0 < sid < 2**31:
                raise ValueError
            s = access.study_for(session, p.user, sid)
        except (ValueError, HTTPException):
            linked, status = {"missing": True}, 404
        else:
            row = session.execute(select(ClinicalData).where(ClinicalData.study_id == s.id)).scalar()
            form, extra = canonical(row.features if row else {})
            patient = s.patient
            linked = {"id": s.id, "patient": patient.name or patient.patient_key, "patient_id": patient.patient_key,
                      "date": _date(s.study_date), "synthetic": bool(s.synthetic or patient.synthetic),
                      "can_save": s.organisation_id == p.user.organisation_id and p.user.role in access.CLINICAL,
                      "features": form, "extra": extra, "triage": row.triage if row else None}
            audit.record(session, "study.view", p.user, "study", s.id, client_address(request), {"page": "triage"})
    labels = {k: i18n.translate(lang, v) for k, v in LABELS.items()}
    labels["band_texts"] = {b: i18n.translate(lang, b) for b in BAND_TEXTS}
    specs = field_specs(lang)
    labels["fields"] = {f["name"]: f.get("short") or f["label"] for f in specs["model"]}
    labels["fields"].update({f["name"]: f["label"] for g in specs["scores"] for f in g["fields"]})
    labels["fields"].update({k: i18n.translate(lang, v) for k, v in OTHER_INPUTS.items()})
    data = {"model": triage.model_info(session, settings), "study": linked, "fields": specs,
            "is_admin": p.user.role == "admin"}
    return render(request, "triage.html", p, status=status, data=data, labels=labels, specs=specs, linked=linked,
                  repository=triage.PUBLISHED_REPOSITORY)
