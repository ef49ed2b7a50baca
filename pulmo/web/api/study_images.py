"""What the study page needs besides the study itself: its key images as PNG
(``GET /api/studies/{id}/key-image.png``), the key slices (``GET /api/studies/{id}/key-slices``),
the follow-up comparison with the patient's earlier study (``GET /api/studies/{id}/comparison``)
and a light status for the page's live refresh (``GET /api/studies/{id}/status``, not audited:
it is polled while an analysis runs)."""

from __future__ import annotations

import io
import json

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from pulmo.web.app import Principal, db, principal
from pulmo.web.models import Study
from pulmo.web.services import access, comparison, viewer
from pulmo.web.services.analysis import study_prefix

router = APIRouter(prefix="/api", tags=["study page"])
VIEWS = ("axial", "coronal")


def _viewer_files(storage, study: Study):
    if study.status != "done":
        raise HTTPException(404, "no key images yet (is the analysis finished?)")
    folder = viewer.files(storage, study)
    return folder, (folder / "meta.json").stat().st_mtime_ns


def key_slices(storage, study: Study) -> dict:
    """``{"axial": z, "coronal": y, "caption": ...}``: the slices with the most ground glass and
    consolidation (else the largest nodule, else the largest lung section), as the report's key
    images; computed once per analysis (kept beside the viewer files)."""
    from pulmo.ct.report.images import NO_FINDING

    folder, stamp = _viewer_files(storage, study)
    cached = folder / f"key-{stamp}.json"
    if cached.is_file():
        try:
            return json.loads(cached.read_text())
        except ValueError:
            pass
    meta = json.loads((folder / "meta.json").read_text())
    labels = np.load(folder / "labels.npy", mmap_mode="r")
    nz, ny, _ = labels.shape
    les_z, les_y = np.zeros(nz, np.int64), np.zeros(ny, np.int64)
    lung_z, lung_y = np.zeros(nz, np.int64), np.zeros(ny, np.int64)
    for z0 in range(0, nz, 16):  # a few slices at a time: a large study's labels are not unpacked at once
        lab = np.asarray(labels[z0:z0 + 16])
        les, lung = (lab & 12) > 0, (lab & 3) > 0
        les_z[z0:z0 + 16] = les.sum(axis=(1, 2))
        les_y += les.sum(axis=(0, 2))
        lung_z[z0:z0 + 16] = lung.sum(axis=(1, 2))
        lung_y += lung.sum(axis=(0, 2))
    vox_ml = float(np.prod(meta["spacing_zyx_mm"])) / 1000.0
    min_ml = (((study.results or {}).get("quantification") or {}).get("pneumonia") or {}).get("min_lesion_ml", 0.0)
    nodules = meta.get("nodules") or []
    if les_z.sum() > 0 and les_z.sum() >= max(1, int(min_ml / vox_ml)):
        z, y, caption = int(np.argmax(les_z)), int(np.argmax(les_y)), \
            "the slice with the most ground glass and consolidation"
    elif nodules and nodules[0].get("centre_index_zyx"):
        z, y = (int(v) for v in nodules[0]["centre_index_zyx"][:2])
        caption = "no pneumonia-pattern finding; the largest nodule / focal opacity (magenta outline, not " \
                  "counted as pneumonia)"
    else:
        z, y, caption = int(np.argmax(lung_z)), int(np.argmax(lung_y)), NO_FINDING
    out = {"axial": int(z), "coronal": int(y), "caption": caption}
    study_key = f"{study_prefix(study)}/viewer/key-{stamp}.json"
    storage.put_bytes(study_key, json.dumps(out).encode("utf-8"))
    return out


def key_png(storage, study: Study, view: str) -> bytes:
    """The key image of ``view`` in the lung window with the overlays of the report (lung
    outlines, ground glass yellow, consolidation red, nodules magenta), radiological view;
    coronal resampled to square pixels. Rendered once per analysis."""
    from PIL import Image

    from pulmo.ct.report.images import coronal_rgb, overlay, window

    folder, stamp = _viewer_files(storage, study)
    cached = folder / f"key-{view}-{stamp}.png"
    if cached.is_file():
        return cached.read_bytes()
    ks = key_slices(storage, study)
    meta = json.loads((folder / "meta.json").read_text())
    hu = np.load(folder / "hu.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy", mmap_mode="r")
    if view == "axial":
        lab = np.asarray(labels[ks["axial"]])
        rgb = overlay(window(np.asarray(hu[ks["axial"]], np.float32)), lab & 3, (lab >> 2) & 3, nodules=lab >> 7)
        sy, sx = meta["spacing_zyx_mm"][1:]
        if abs(sy - sx) > 1e-3 * sx:
            h = max(1, int(round(rgb.shape[0] * sy / sx)))
            rgb = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1], h), Image.NEAREST))
    else:
        y = ks["coronal"]
        lab = np.asarray(labels[:, y:y + 1, :])
        rgb = coronal_rgb(np.asarray(hu[:, y:y + 1, :], np.float32), lab & 3, (lab >> 2) & 3, 0,
                          meta["spacing_zyx_mm"], nodules=lab >> 7)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=3)
    data = buf.getvalue()
    storage.put_bytes(f"{study_prefix(study)}/viewer/key-{view}-{stamp}.png", data)
    return data


@router.get("/studies/{study_id}/key-image.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def key_image(study_id: int, request: Request, view: str = Query("axial", pattern="^(axial|coronal)$"),
              p: Principal = Depends(principal), session: Session = Depends(db, scope="function")) -> Response:
    """The report's key image (``view`` axial or coronal) as PNG, with the overlays."""
    study = access.study_for(session, p.user, study_id)
    data = key_png(request.app.state.storage, study, view)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})


@router.get("/studies/{study_id}/key-slices")
def get_key_slices(study_id: int, request: Request, p: Principal = Depends(principal),
                   session: Session = Depends(db, scope="function")) -> dict:
    """The key images' slice numbers: ``axial`` (z) and ``coronal`` (y), and their caption."""
    study = access.study_for(session, p.user, study_id)
    return key_slices(request.app.state.storage, study)


@router.get("/studies/{study_id}/comparison")
def get_comparison(study_id: int, request: Request, p: Principal = Depends(principal),
                   session: Session = Depends(db, scope="function")) -> dict:
    """The change since the patient's latest earlier study: ``status`` ``none`` (no earlier
    finished study), ``pending`` (computed by a worker after the analysis), ``done`` (per lung and
    region: ``change``, ``verdict``, ``time_points``, ``registration``, ``warnings``) or
    ``failed`` (``error``). ``prior.openable``: whether this user may open the earlier study."""
    study = access.study_for(session, p.user, study_id)
    out = comparison.state(session, request.app.state.storage, study)
    if out.get("prior"):
        out = {**out, "prior": {**out["prior"], "openable": study.organisation_id == p.user.organisation_id}}
    return out


@router.get("/studies/{study_id}/status")
def status(study_id: int, p: Principal = Depends(principal), session: Session = Depends(db, scope="function")) -> dict:
    """The analysis state only (``status``, ``error``), for pages that wait for it."""
    study = access.study_for(session, p.user, study_id)
    return {"id": study.id, "status": study.status, "error": study.error or "",
            "updated_at": study.updated_at.isoformat() + "Z" if study.updated_at else None}
