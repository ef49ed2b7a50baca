"""The JSON API under ``/api`` (OpenAPI at ``/api/docs``): thin routes over
:mod:`pulmo.web.services`, pydantic models as the contract."""

from __future__ import annotations

import importlib

from fastapi import FastAPI

ROUTERS = ("auth", "users", "studies", "viewer", "triage", "reports", "consultation", "share_links", "audit",
           "admin", "study_images", "dicomweb", "health", "dicom_nodes")


def register(app: FastAPI) -> None:
    for name in ROUTERS:
        try:
            module = importlib.import_module(f"pulmo.web.api.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pulmo.web.api.{name}":
                raise
            continue
        app.include_router(module.router)
