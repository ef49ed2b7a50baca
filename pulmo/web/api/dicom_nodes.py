"""DICOM nodes (admin): ``POST/GET /api/dicom-nodes``, ``DELETE /api/dicom-nodes/{id}``; a study's
deliveries of results: ``GET /api/studies/{id}/deliveries``, ``POST /api/studies/{id}/deliveries/resend``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from pulmo.web.app import Principal, client_address, db, principal, require_roles
from pulmo.web.models import Delivery, DicomNode
from pulmo.web.services import access, deliveries, dicom_nodes

router = APIRouter(prefix="/api", tags=["dicom"])


class NewNode(BaseModel):
    organisation: str = Field(max_length=200, description="the organisation's name")
    ae_title: Any = Field(description="the node's AE title: 1 to 16 printable ASCII characters, no backslash")
    host: Any = Field(None, description="host name or IP address (with stow_url: taken from it when absent)")
    port: Any = Field(None, description="TCP port, 1 to 65535 (with stow_url: taken from it when absent)")
    role: Any = Field(description="source, destination or both")
    stow_url: Any = Field(None, description="a DICOMweb destination's service root (http(s)://host:port/path): "
                                            "results are sent by STOW-RS to {stow_url}/studies instead of C-STORE")


class NodeOut(BaseModel):
    id: int
    organisation: str
    ae_title: str
    host: str
    port: int
    role: str
    stow_url: str | None = None
    created_at: dt.datetime


class DeliveryOut(BaseModel):
    id: int
    node_id: int
    node: str
    status: str
    attempts: int
    result_version: str
    sent_version: str
    next_attempt_at: dt.datetime | None
    last_error: str
    sent_at: dt.datetime | None
    instances: int


def _node(n: DicomNode) -> NodeOut:
    return NodeOut(id=n.id, organisation=n.organisation.name, ae_title=n.ae_title, host=n.host, port=n.port,
                   role=n.role, stow_url=n.stow_url, created_at=n.created_at)


def _delivery(d: Delivery) -> DeliveryOut:
    return DeliveryOut(id=d.id, node_id=d.node_id, node=f"{d.node.ae_title}@{d.node.host}:{d.node.port}",
                       status=d.status, attempts=d.attempts, result_version=d.result_version,
                       sent_version=d.sent_version, next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
                       last_error=d.last_error, sent_at=d.sent_at, instances=d.instances)


@router.post("/dicom-nodes", response_model=NodeOut, status_code=201)
def create_node(body: NewNode, request: Request, p: Principal = Depends(require_roles("admin")),
                session: Session = Depends(db, scope="function")) -> NodeOut:
    try:
        node = dicom_nodes.create(session, body.organisation, body.ae_title, body.host, body.port, body.role,
                                  by=p.user, address=client_address(request), stow_url=body.stow_url)
    except dicom_nodes.NodeError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return _node(node)


@router.get("/dicom-nodes", response_model=list[NodeOut])
def list_nodes(p: Principal = Depends(require_roles("admin")),
               session: Session = Depends(db, scope="function")) -> list[NodeOut]:
    return [_node(n) for n in dicom_nodes.listing(session, p.user)]


@router.delete("/dicom-nodes/{node_id}", status_code=204)
def delete_node(node_id: int, request: Request, p: Principal = Depends(require_roles("admin")),
                session: Session = Depends(db, scope="function")) -> None:
    try:
        dicom_nodes.delete(session, node_id, by=p.user, address=client_address(request))
    except dicom_nodes.NodeError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.get("/studies/{study_id}/deliveries", response_model=list[DeliveryOut])
def study_deliveries(study_id: int, p: Principal = Depends(principal),
                     session: Session = Depends(db, scope="function")) -> list[DeliveryOut]:
    study = access.study_for(session, p.user, study_id, owner=True)
    return [_delivery(d) for d in deliveries.for_study(session, study)]


@router.post("/studies/{study_id}/deliveries/resend", response_model=list[DeliveryOut])
def resend(study_id: int, request: Request, p: Principal = Depends(principal),
           session: Session = Depends(db, scope="function")) -> list[DeliveryOut]:
    study = access.study_for(session, p.user, study_id, owner=True, roles=("radiologist", "admin"))
    try:
        rows = deliveries.resend(session, study, p.user, client_address(request))
    except deliveries.DeliveryError as exc:
        raise HTTPException(409, str(exc)) from None
    return [_delivery(d) for d in rows]
