"""Follow-up comparison of a study with the same patient's earlier one (:func:`pulmo.ct.compare.compare`).

For a finished study, the *prior* is the latest earlier finished study of the same patient in the
same organisation (same ``patient_id``: one row per organisation and DICOM PatientID); "earlier"
by study date (DICOM StudyDate, else the day it was received), then by time received. The change
between the prior and this study (per lung and region, with verdicts progression / stable /
regression) is computed once, by the worker right after the analysis (:func:`after_analysis`),
and kept as JSON under the study's storage prefix (:func:`cache_key`). The cache names the two
analyses it was made from (their ``results.created``): when either study is analysed again, or an
earlier study arrives later, the comparison is made again.

States answered by :func:`state`: ``none`` (no earlier study, or this one not finished),
``pending`` (a prior exists, the comparison is not made yet), ``done`` and ``failed`` (with the
reason, e.g. the registration refused the pair). A failure is kept like a result: the same pair
is not tried again until one of the analyses changes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo.web.models import Study
from pulmo.web.services.analysis import instance_keys, study_prefix

log = logging.getLogger("pulmo.web.comparison")
CACHE_NAME = "comparison/comparison.json"


def cache_key(study: Study) -> str:
    return f"{study_prefix(study)}/{CACHE_NAME}"


def _created(study: Study) -> str:
    return str((study.results or {}).get("created") or "")


def order_key(study: Study) -> tuple:
    """Oldest first: the study date when it is a valid DICOM date, else the day received; then
    the time received; then the id."""
    d = (study.study_date or "").strip()
    if not (len(d) == 8 and d.isdigit()):
        d = study.received_at.strftime("%Y%m%d") if study.received_at else ""
    return d, study.received_at, study.id


def same_patient_done(session: Session, study: Study) -> list[Study]:
    """The other finished studies of ``study``'s patient in its organisation, oldest first."""
    rows = session.execute(select(Study).where(Study.organisation_id == study.organisation_id,
                                               Study.patient_id == study.patient_id, Study.id != study.id,
                                               Study.status == "done")).scalars().all()
    return sorted(rows, key=order_key)


def prior_for(session: Session, study: Study) -> Study | None:
    """The latest earlier finished study of the same patient, or None."""
    mine = order_key(study)
    earlier = [s for s in same_patient_done(session, study) if order_key(s) < mine]
    return earlier[-1] if earlier else None


def _study_ref(s: Study) -> dict:
    return {"id": s.id, "study_date": s.study_date, "description": s.description, "created": _created(s)}


def read_cache(storage, study: Study) -> dict | None:
    key = cache_key(study)
    if not storage.exists(key):
        return None
    try:
        data = json.loads(storage.read_bytes(key))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _valid(cached: dict | None, study: Study, prior: Study) -> bool:
    return (cached is not None and cached.get("prior", {}).get("id") == prior.id
            and cached.get("prior", {}).get("created") == _created(prior)
            and cached.get("current", {}).get("created") == _created(study))


def state(session: Session, storage, study: Study) -> dict:
    """What ``GET /api/studies/{id}/comparison`` answers (see the module docstring)."""
    if study.status != "done":
        return {"status": "none", "reason": "not_analysed"}
    prior = prior_for(session, study)
    if prior is None:
        return {"status": "none", "reason": "no_earlier_study"}
    cached = read_cache(storage, study)
    if _valid(cached, study, prior):
        return cached
    return {"status": "pending", "prior": _study_ref(prior), "current": _study_ref(study)}


# ----------------------------------------------------------------------------- computing (in a worker)
@dataclass
class _Side:
    id: int
    prefix: str
    keys: list[str]
    ref: dict
    label: str


def _side(session: Session, s: Study) -> _Side:
    date = s.study_date if len(s.study_date or "") == 8 else ""
    label = f"study {s.id}" + (f" ({date[:4]}-{date[4:6]}-{date[6:]})" if date else "")
    return _Side(s.id, study_prefix(s), instance_keys(session, s), _study_ref(s), label)


def _analyse_stored(storage, keys: list[str]):
    """Analyse a study's stored DICOM instances again (a folder of links, as the worker does)."""
    from pulmo.ct import AnalysisOptions, analyze

    with tempfile.TemporaryDirectory(prefix="pulmo-compare-") as tmp:
        src = Path(tmp) / "dicom"
        src.mkdir()
        for i, key in enumerate(keys):
            os.symlink(storage.local_path(key), src / f"{i:06d}.dcm")
        return analyze(src, AnalysisOptions())


def _slim(result: dict) -> dict:
    """The comparison without each time point's full results (the studies have their own)."""
    for tp in result.get("time_points", []):
        tp.pop("results", None)
        tp.pop("source", None)
    return result


def compute_pair(storage, current: _Side, prior: _Side, current_analysis=None) -> dict:
    """Compare ``prior`` -> ``current`` and store the result (or the failure) in the current
    study's cache; returns what was stored."""
    from pulmo.ct.compare import compare
    from pulmo.errors import PulmoError

    base = {"prior": prior.ref, "current": current.ref}
    try:
        cur = current_analysis if current_analysis is not None else _analyse_stored(storage, current.keys)
        pri = _analyse_stored(storage, prior.keys)
        cur.volume.source, pri.volume.source = current.label, prior.label
        result = {"status": "done", **base, **_slim(compare([pri, cur]).to_dict())}
    except PulmoError as exc:
        result = {"status": "failed", **base, "error": str(exc), "code": getattr(exc, "code", None)}
    except Exception as exc:  # noqa: BLE001 - kept as the pair's answer; details in the log
        log.error("comparison of study %s with study %s failed", current.id, prior.id, exc_info=True)
        result = {"status": "failed", **base,
                  "error": f"internal error while comparing ({type(exc).__name__}); the administrator's log has details"}
    storage.put_bytes(f"{current.prefix}/{CACHE_NAME}", json.dumps(result).encode("utf-8"))
    return result


def after_analysis(factory, storage, study_id: int, analysis=None) -> list[int]:
    """Called by the worker once ``study_id``'s analysis is saved: compare it with its prior
    (``analysis``: its :class:`pulmo.ct.CTAnalysis`, to avoid analysing it again), and compare
    the next later study of the patient with it when it became that study's prior. Returns the
    ids of the studies whose comparison was made."""
    from pulmo.web.db import transaction

    pairs = []
    with transaction(factory) as s:
        study = s.get(Study, study_id)
        if study is None or study.status != "done":
            return []
        prior = prior_for(s, study)
        if prior is not None and not _valid(read_cache(storage, study), study, prior):
            pairs.append((_side(s, study), _side(s, prior), analysis))
        mine = order_key(study)
        later = [o for o in same_patient_done(s, study) if order_key(o) > mine]
        if later:
            nxt = later[0]
            if not _valid(read_cache(storage, nxt), nxt, study):
                pairs.append((_side(s, nxt), _side(s, study), None))
    for current, prior, a in pairs:
        compute_pair(storage, current, prior, a)
    return [c.id for c, _, _ in pairs]
