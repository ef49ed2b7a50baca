"""The triage calculator: the critical-illness model (when one is installed) and the classic
scores, for one patient or a CSV of them, through the library's records API.

The published model cannot ship (its authors gave no licence). A model comes from
``Settings.triage_model`` (``PULMO_TRIAGE_MODEL``), or from an admin who imports the authors'
``models.zip`` (:func:`import_model`, kept in the data folder); without one the calculator gives
the classic scores only.
"""

from __future__ import annotations

import io
import math
import re
import shutil
import threading
from pathlib import Path

from sqlalchemy.orm import Session

from pulmo.errors import PulmoError
from pulmo.web.models import Setting

PUBLISHED_REPOSITORY = "https://github.com/cojocchen/covid19_critically_ill"
MODEL_SETTING = "triage_model_file"
MODEL_FILE = "triage/model.pulmo-triage"
CURVE_DAYS = tuple(range(31))

_LOCK = threading.Lock()
_CACHE: dict = {}


def _finite(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def model_path(session: Session, settings) -> Path | None:
    if settings.triage_model:
        return Path(settings.triage_model)
    row = session.get(Setting, MODEL_SETTING)
    if row is not None:
        p = settings.data_dir / row.value
        return p if p.is_file() else None
    return None


def load_model(session: Session, settings):
    """The installed :class:`pulmo.triage.TriageModel`, or None; cached per file and time."""
    from pulmo.triage import TriageModel

    path = model_path(session, settings)
    if path is None:
        return None
    key = (str(path), path.stat().st_mtime_ns)
    with _LOCK:
        if key not in _CACHE:
            _CACHE.clear()
            _CACHE[key] = TriageModel.load(path)
        return _CACHE[key]


def model_info(session: Session, settings) -> dict:
    """Whether a model is installed, where its authors publish the published one, and (when one
    is installed) its file, features, horizons and risk cut-offs (probability at ``risk_horizon``:
    low up to ``risk_low_max``, high above ``risk_high_min``)."""
    model = load_model(session, settings)
    if model is None:
        return {"installed": False, "repository": PUBLISHED_REPOSITORY}
    name = (model.provenance or {}).get("name") if isinstance(model.provenance, dict) else None
    return {"installed": True, "repository": PUBLISHED_REPOSITORY, "source": model_path(session, settings).name,
            "name": str(name) if name else "", "horizons": [float(h) for h in model.horizons],
            "features": list(model.features), "risk_horizon": float(model.risk_horizon),
            "risk_low_max": float(model.risk_low_max), "risk_high_min": float(model.risk_high_min)}


def import_model(session: Session, settings, upload: Path, filename: str) -> dict:
    """Install a model: the authors' ``models.zip`` (converted by the library, no TensorFlow) or
    a ``.pulmo-triage`` file. Raises :class:`PulmoError` with the reason when it is neither."""
    from pulmo.triage import TriageModel
    from pulmo.triage.published import import_published_model

    target = settings.data_dir / MODEL_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name("model.partial.pulmo-triage")
    try:
        if filename.lower().endswith(".zip"):
            import_published_model(upload).save(tmp, force=True)
        else:
            shutil.copyfile(upload, tmp)
        TriageModel.load(tmp)  # refuses anything that is not a model
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    row = session.get(Setting, MODEL_SETTING) or Setting(key=MODEL_SETTING, value="")
    row.value = MODEL_FILE
    session.add(row)
    return model_info(session, settings)


def scores_for(features: dict) -> dict:
    """The classic scores (CURB-65, CRB-65, qSOFA, NEWS2, PSI/PORT, ISARIC 4C) of one patient:
    ``{score: {total, band, mortality, missing}}``, or ``{"error": ...}`` for an impossible value."""
    from pulmo.triage.scores import score_patient

    try:
        res = score_patient(features, ignore_unknown=True)
    except PulmoError as exc:
        return {"error": str(exc)}
    out = {}
    for key, r in res.items():
        d = r.to_dict() if hasattr(r, "to_dict") else dict(vars(r))
        out[key] = {k: _finite(d.get(k)) for k in ("title", "total", "band", "band_text", "mortality", "missing",
                                                     "warnings") if k in d}
    return out


_ROW_PREFIX = re.compile(r"^row \d+, ")
_COLUMN = re.compile(r"column '([^']+)'")
_SCORE_FIELD = re.compile(r"^'([^']+)'")


def check_values(features: dict) -> dict[str, str]:
    """Impossible values of one patient (the model's ten features and the classic scores'
    inputs, with the libraries' own checks and messages): ``{input name: message}``, empty when
    every value given is possible. Missing values are not errors here (the model imputes up to
    three, a score without its inputs is "not computable"); implausible ones only warn."""
    import pandas as pd

    from pulmo.triage.schema import CONVERSIONS, feature_for_column, parse_patients

    bad: dict[str, str] = {}
    model_cols = {k: v for k, v in model_input(features).items()
                  if feature_for_column(k) is not None or k.lower() in CONVERSIONS}
    if model_cols:
        try:
            parsed = parse_patients(pd.DataFrame([model_cols], index=[0], dtype=object), require_all_columns=False)
        except PulmoError as exc:
            bad["_"] = str(exc)
        else:
            for msg in parsed.errors[0]:
                msg = _ROW_PREFIX.sub("", msg)
                m = _COLUMN.search(msg)
                name = m.group(1) if m else "_"
                bad[name] = f"{bad[name]}; {msg}" if name in bad else msg
    scores = scores_for(features)
    if "error" in scores:
        msg = scores["error"]
        m = _SCORE_FIELD.match(msg)
        name = m.group(1) if m else "_"
        if name not in bad:
            bad[name] = msg
    return bad


def model_input(features: dict, model=None) -> dict:
    """The entries of ``features`` the model reads: its features (by name, alias or another unit),
    the counts that give NLR, a comorbidity list, the patient ID. A score input that the model's
    reader would take as an alias of a feature named beside it (``n_comorbidities``, the ISARIC 4C
    count, beside ``comorbidities``, the model's) is left to the scores."""
    from pulmo.io.cells import normalise_header
    from pulmo.triage.schema import (
        COMORBIDITY_LIST_COLUMNS,
        CONVERSIONS,
        ID_COLUMNS,
        LYMPHOCYTE_COLUMNS,
        NEUTROPHIL_COLUMNS,
        feature_for_column,
    )

    names = {normalise_header(k) for k in features}
    own = {normalise_header(f) for f in (model.features if model is not None else ())}
    other = set(CONVERSIONS) | set(NEUTROPHIL_COLUMNS) | set(LYMPHOCYTE_COLUMNS) | set(COMORBIDITY_LIST_COLUMNS) \
        | set(ID_COLUMNS)
    out = {}
    for k, v in features.items():
        norm = normalise_header(k)
        f = feature_for_column(k)
        if f is not None:
            if norm != f and f in names:
                continue
            out[k] = v
        elif norm in other or norm in own:
            out[k] = v
    return out


def _complete(features: dict, model) -> dict:
    """``features`` with the model's features it lacks added as missing (imputed, up to three),
    so that one patient is a row with a reason, never a table without a column."""
    from pulmo.io.cells import normalise_header
    from pulmo.triage.schema import (
        COMORBIDITY_LIST_COLUMNS,
        CONVERSIONS,
        LYMPHOCYTE_COLUMNS,
        NEUTROPHIL_COLUMNS,
        feature_for_column,
    )

    given = set()
    keys = {normalise_header(k) for k in features}
    for k in features:
        f = feature_for_column(k)
        given.add(f if f is not None else normalise_header(k))
    for col, (feature, _) in CONVERSIONS.items():
        if col in keys:
            given.add(feature)
    if keys & set(NEUTROPHIL_COLUMNS) and keys & set(LYMPHOCYTE_COLUMNS):
        given.add("nlr")
    if keys & set(COMORBIDITY_LIST_COLUMNS):
        given.add("comorbidities")
    out = dict(features)
    for f in model.features:
        if f not in given and normalise_header(f) not in given:
            out[f] = None
    return out


def predict(session: Session, settings, features: dict, explain: bool = True) -> dict:
    """Model prediction (probabilities with intervals, risk group, survival curve, contributions,
    warnings, error) when a model is installed, and the classic scores."""
    from pulmo.triage import TriagePredictor

    out = {"model": model_info(session, settings), "scores": scores_for(features), "prediction": None}
    model = load_model(session, settings)
    if model is not None:
        features = _complete(model_input(features, model), model)
        pred = TriagePredictor(model, explain=explain)
        r = pred.predict_records([features])[0]
        d = r.to_dict()
        if r.ok:
            try:
                curve = pred.survival_curve(features, times=list(CURVE_DAYS))
                d["survival_curve"] = [{k: _finite(float(v)) for k, v in row.items()}
                                       for row in curve.to_dict(orient="records")]
            except PulmoError:
                d["survival_curve"] = None
        out["prediction"] = d
    return out


def predict_csv(session: Session, settings, data: bytes) -> tuple[str, int, int]:
    """A CSV of patients -> the CSV of results (as ``pulmo triage predict`` writes it, or the
    classic scores without a model); returns ``(csv text, rows, failed rows)``."""
    from pulmo.io.tables import read_table
    from pulmo.triage import TriagePredictor
    from pulmo.triage.scores import score_records

    table, _ = read_table(io.BytesIO(data), source="upload.csv")
    model = load_model(session, settings)
    if model is not None:
        batch = TriagePredictor(model).predict_records(table)
        frame = batch.to_frame(table)
        failed = batch.n_failed
    else:
        batch = score_records(table)
        frame = batch.to_frame(table)
        failed = sum(1 for r in batch if r.error)
    from pulmo.io.outputs import (
        frame_csv,  # spreadsheet formulas are escaped in every CSV Pulmo writes
    )

    return frame_csv(frame), len(frame), int(failed)
