"""Priors for comparison: when a study arrives over the network, ask the organisation's PACS for
the same patient's earlier chest CTs and fetch the most recent one, so that the report shows the
follow-up comparison (:mod:`pulmo.web.services.comparison`) by itself.

The PACS asked are the organisation's nodes with the role ``both`` (they send to Pulmo and take
its results: a PACS, which also answers queries). The query is a Study Root C-FIND at STUDY level
on the PatientID; a study qualifies when it is not already in Pulmo, is dated before the new
study (DICOM StudyDate), and lists CT among its modalities (or lists none). The most recent one
is fetched by C-MOVE to Pulmo's own AE title: the PACS must know that AE title as a destination
(its address and ``--dicom-port``), and the instances then come in through the Storage SCP like
any others, are analysed, and the comparison is made once both studies are analysed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo.web.models import DicomNode, Study
from pulmo.web.services import audit

log = logging.getLogger("pulmo.priors")
QUERYABLE = ("both",)


@dataclass
class Candidate:
    study_uid: str
    study_date: str
    modalities: tuple[str, ...]
    description: str


def queryable_nodes(session: Session, organisation_id: int) -> list[DicomNode]:
    return list(session.execute(select(DicomNode).where(DicomNode.organisation_id == organisation_id,
                                                        DicomNode.role.in_(QUERYABLE))
                                .order_by(DicomNode.id)).scalars())


def _ae(calling: str, timeout_s: float):
    from pynetdicom import AE
    from pynetdicom.sop_class import (StudyRootQueryRetrieveInformationModelFind,
                                      StudyRootQueryRetrieveInformationModelMove)

    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = 10
    return ae


def find_studies(node: DicomNode, calling: str, patient_id: str, timeout_s: float = 60.0) -> list[Candidate]:
    """The patient's studies in the node (C-FIND, Study Root, STUDY level)."""
    from pydicom import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientID = patient_id
    q.StudyInstanceUID = q.StudyDate = q.ModalitiesInStudy = q.StudyDescription = ""
    assoc = _ae(calling, timeout_s).associate(node.host, node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        raise ConnectionError(f"{node.ae_title} at {node.host}:{node.port} refused the query association")
    out = []
    try:
        for status, ident in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind):
            if status and status.Status in (0xFF00, 0xFF01) and ident is not None:
                mods = ident.get("ModalitiesInStudy", "") or ()
                mods = (mods,) if isinstance(mods, str) else tuple(str(m) for m in mods)
                out.append(Candidate(str(ident.get("StudyInstanceUID", "")), str(ident.get("StudyDate", "") or ""),
                                     tuple(m for m in mods if m), str(ident.get("StudyDescription", "") or "")))
    finally:
        assoc.release()
    return out


def choose(candidates: list[Candidate], current_uid: str, current_date: str, known: set[str]) -> Candidate | None:
    """The most recent earlier CT study not yet in Pulmo, else None."""
    def dated(d: str) -> bool:
        return len(d) == 8 and d.isdigit()

    ok = [c for c in candidates if c.study_uid and c.study_uid != current_uid and c.study_uid not in known
          and (not c.modalities or "CT" in c.modalities) and dated(c.study_date)
          and (not dated(current_date) or c.study_date < current_date)]
    return max(ok, key=lambda c: c.study_date) if ok else None


def move_study(node: DicomNode, calling: str, destination: str, study_uid: str, timeout_s: float = 600.0) -> int:
    """C-MOVE the study from the node to ``destination`` (an AE title it knows); how many instances
    it reports moved. ConnectionError when it cannot or will not."""
    from pydicom import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = study_uid
    assoc = _ae(calling, timeout_s).associate(node.host, node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        raise ConnectionError(f"{node.ae_title} at {node.host}:{node.port} refused the retrieve association")
    moved, final = 0, None
    try:
        for status, _ident in assoc.send_c_move(q, destination, StudyRootQueryRetrieveInformationModelMove):
            if status is None:
                raise ConnectionError(f"{node.ae_title}: no answer to the C-MOVE")
            final = int(status.Status)
            moved = int(status.get("NumberOfCompletedSuboperations", moved) or moved)
    finally:
        if assoc.is_established:
            assoc.release()
    if final not in (0x0000, 0xB000):
        raise ConnectionError(f"{node.ae_title}: C-MOVE of {study_uid} ended with status 0x{(final or 0):04X}")
    return moved


def fetch_prior(factory, settings, study_id: int, requested: set[str]) -> str | None:
    """Look for and fetch the prior of ``study_id``; the Study Instance UID fetched, or None.
    ``requested``: UIDs asked for already (they are not asked for again, and are not looked up
    for priors themselves)."""
    from pulmo.web.db import transaction

    with transaction(factory) as s:
        study = s.get(Study, study_id)
        if study is None:
            return None
        patient_id, uid, date, org = study.patient.patient_key, study.study_uid, study.study_date, study.organisation_id
        nodes = queryable_nodes(s, org)
        for n in nodes:
            s.expunge(n)
        known = set(s.execute(select(Study.study_uid).where(Study.organisation_id == org)).scalars()) | requested
    if not nodes or not patient_id or patient_id.startswith("anon-"):
        return None
    for node in nodes:
        try:
            found = find_studies(node, settings.dicom_ae_title, patient_id)
        except Exception as exc:  # noqa: BLE001 - the PACS away: no prior this time, said in the log
            log.warning("prior search for study %s on %s@%s:%s failed: %s", study_id, node.ae_title, node.host,
                        node.port, exc)
            continue
        best = choose(found, uid, date, known)
        if best is None:
            log.info("study %s: no earlier CT of patient %s on %s", study_id, patient_id, node.ae_title)
            continue
        requested.add(best.study_uid)
        try:
            n = move_study(node, settings.dicom_ae_title, settings.dicom_ae_title, best.study_uid)
        except Exception as exc:  # noqa: BLE001
            log.warning("study %s: fetching the prior %s from %s failed: %s", study_id, best.study_uid,
                        node.ae_title, exc)
            requested.discard(best.study_uid)
            continue
        log.info("study %s: prior %s (%s) fetched from %s: %d instances", study_id, best.study_uid, best.study_date,
                 node.ae_title, n)
        with transaction(factory) as s:
            audit.record(s, "study.prior_fetched", None, "study", study_id, f"dicom:{node.ae_title}",
                         {"prior_study_uid": best.study_uid, "prior_date": best.study_date, "instances": n},
                         organisation_id=org)
        return best.study_uid
    return None
