"""A study's analysis, run by a worker: the stored instances through :func:`pulmo.ct.analyze`
and :func:`pulmo.ct.write_outputs`, the files into storage, the headline figures into the study.

Besides the outputs of ``pulmo ct analyze`` (``results/``), the viewer gets its volume
(``viewer/hu.npy``: int16 Hounsfield units, canonical (z, y, x)), its overlays
(``viewer/labels.npy``: uint8 packed per voxel, :data:`LABEL_BITS`) and ``viewer/meta.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo.web.models import Instance, Study, utcnow

#: How the viewer's uint8 label volume packs the masks: value = lungs | lesions << 2 | regions << 4 | nodule << 7.
LABEL_BITS = {"lungs": (0, 3), "lesions": (2, 3), "regions": (4, 7), "nodules": (7, 1)}


def study_prefix(study: Study) -> str:
    return f"orgs/{study.organisation_id}/studies/{study.id}"


def pack_labels(analysis) -> np.ndarray:
    lab = analysis.lungs.astype(np.uint8) & 3
    lab |= (analysis.lesions.astype(np.uint8) & 3) << 2
    lab |= (analysis.regions.astype(np.uint8) & 7) << 4
    if analysis.nodule_mask is not None:
        lab |= (analysis.nodule_mask > 0).astype(np.uint8) << 7
    return lab


def priority(flag, risk: str) -> int:
    """Read these first: 3 suspected pneumonia and high triage risk, 2 suspected pneumonia,
    1 high triage risk or an indeterminate flag, 0 the rest."""
    suspected = flag in (True, "positive")
    high = risk == "high"
    if suspected and high:
        return 3
    if suspected:
        return 2
    if high or flag in ("indeterminate",):
        return 1
    return 0


def flag_text(flag) -> str:
    return {True: "positive", False: "negative", "indeterminate": "indeterminate"}.get(flag, "")


def compute(storage, prefix: str, keys: list[str], options=None):
    """Analyse the stored instances ``keys``; store the outputs and viewer files under
    ``prefix``; return the :class:`pulmo.ct.CTAnalysis`. No database access: minutes of work
    never hold a transaction open. Raises :class:`pulmo.errors.PulmoError` for a study that
    cannot be analysed (its message is shown on the study)."""
    from pulmo.ct import AnalysisOptions, analyze, write_outputs

    with tempfile.TemporaryDirectory(prefix="pulmo-study-") as tmp:
        src = Path(tmp) / "dicom"
        src.mkdir()
        for i, key in enumerate(keys):
            os.symlink(storage.local_path(key), src / f"{i:06d}.dcm")
        analysis = analyze(src, options or AnalysisOptions())
        out = Path(tmp) / "results"
        write_outputs(analysis, out)
        storage.delete_prefix(f"{prefix}/results")
        storage.put_tree(f"{prefix}/results", out)
        viewer = Path(tmp) / "viewer"
        viewer.mkdir()
        np.save(viewer / "hu.npy", np.clip(analysis.volume.array, -1024, 3071).astype(np.int16))
        np.save(viewer / "labels.npy", pack_labels(analysis))
        q = analysis.quantification or {}
        meta = {"shape": list(analysis.volume.shape), "spacing_zyx_mm": [float(s) for s in analysis.volume.spacing],
                "origin_lps_mm": [float(o) for o in analysis.volume.origin], "label_bits": LABEL_BITS,
                "regions": {str(k): v for k, v in analysis.labels["regions"].items()},
                "region_kind": analysis.region_kind, "nodules": analysis.nodules,
                "key_slice": _key_slice(analysis), "coverage": q.get("coverage", {})}
        (viewer / "meta.json").write_text(json.dumps(meta))
        storage.delete_prefix(f"{prefix}/viewer")
        storage.put_tree(f"{prefix}/viewer", viewer)
    return analysis


def save(study: Study, analysis, pending: bool = False) -> None:
    """Put the analysis's results and headline figures on ``study`` (in the caller's transaction).
    ``pending``: more instances arrived meanwhile and another analysis is queued."""
    study.results = analysis.to_dict()
    study.flag = flag_text(analysis.pneumonia_flag)
    study.percent_involved = analysis.percent_involved
    sev = analysis.severity or {}
    study.severity, study.severity_max = sev.get("value"), sev.get("max")
    study.nodules = len(analysis.nodules)
    study.priority = priority(analysis.pneumonia_flag, study.triage_risk)
    study.status, study.error, study.updated_at = "queued" if pending else "done", "", utcnow()


def instance_keys(session: Session, study: Study) -> list[str]:
    return list(session.execute(select(Instance.key).where(Instance.study_id == study.id)
                                .order_by(Instance.id)).scalars())


def _key_slice(analysis) -> int:
    from pulmo.ct.report.images import key_images

    min_ml = ((analysis.quantification or {}).get("pneumonia") or {}).get("min_lesion_ml", 0.0)
    z, _, _ = key_images(analysis.lungs, analysis.lesions, analysis.nodule_mask,
                         int(min_ml / analysis.volume.voxel_volume_ml))
    return int(z)
