"""Administration: ``POST /api/admin/triage-model`` (admin) installs the critical-illness model,
either the authors' ``models.zip`` (converted without TensorFlow) or a ``.pulmo-triage`` file."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, File, HTTPException, Request, UploadFile
from sqlalchemy.orm import Session

from pulmo.errors import PulmoError
from pulmo.web.app import Principal, client_address, db, require_roles
from pulmo.web.services import accounts, audit, triage

router = APIRouter(prefix="/api", tags=["administration"])
MAX_MODEL = 512 << 20


@router.post("/admin/triage-model")
def import_triage_model(request: Request, file: UploadFile = File(..., description="models.zip or a .pulmo-triage file"),
                        p: Principal = Depends(require_roles("admin")), session: Session = Depends(db, scope="function")):
    """Install the triage model for the calculator and the study pages (replaces the one installed;
    the platform's administrators only: it serves every organisation)."""
    if not accounts.is_platform_admin(p.user):
        raise HTTPException(403, "the triage model serves every organisation: the platform's administrators install it")
    name = Path(file.filename or "model").name[:200]
    if not name.lower().endswith((".zip", ".pulmo-triage")):
        raise HTTPException(415, "give the authors' models.zip or a .pulmo-triage file")
    with tempfile.TemporaryDirectory(prefix="pulmo-model-") as tmp:
        dest = Path(tmp) / ("upload.zip" if name.lower().endswith(".zip") else "upload.pulmo-triage")
        size = 0
        with open(dest, "wb") as out:
            while chunk := file.file.read(1 << 20):
                size += len(chunk)
                if size > MAX_MODEL:
                    raise HTTPException(413, f"a model file is at most {MAX_MODEL >> 20} MiB")
                out.write(chunk)
        try:
            info = triage.import_model(session, request.app.state.settings, dest, name)
        except (PulmoError, ValueError, OSError, KeyError) as exc:
            said = str(exc).replace(str(dest), name).replace(tmp + "/", "").replace(tmp, "")[:300]
            raise HTTPException(422, f"{name} is not a triage model: {said}") from None
    audit.record(session, "triage_model.import", p.user, "setting", "triage_model", client_address(request),
                 {"file": name, "name": info.get("name", "")})
    return info
