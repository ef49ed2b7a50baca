"""Results out: the SEG, the SR and the Secondary Captures of every finished analysis, sent by
DICOM C-STORE (or STOW-RS, for a node with a DICOMweb ``stow_url``) to each destination node of
the study's organisation.

One ``deliveries`` row per study and destination. When an analysis finishes
(:func:`after_analysis`) or someone asks for a resend (:func:`resend`), the row goes (back) to
``pending`` for the current result. Senders (:class:`Sender`: a thread of ``pulmo serve`` and of
``pulmo worker``; any number of them) claim due rows with a conditional update (one winner; a
claim is a lease of ``LEASE_S``, so a sender killed mid-send is replaced) and send. A failure
waits ``delivery_retry_s`` seconds, doubled at each further failure up to
``delivery_retry_cap_s`` (5 minutes by default), and is retried until it has failed for
``delivery_give_up_h`` hours (24 by default): a destination down for an hour loses nothing.

**Replacing a result in the PACS.** The objects are sent with UIDs that depend only on the study
(its Study Instance UID and the kind of object), not on the analysis: when a study that grew is
analysed again, the new SEG, SR and SC carry the same Series and SOP Instance UIDs as the ones
sent before, so a PACS that accepts a changed instance under a known UID (Orthanc with
``OverwriteInstances``, dcm4chee's overwrite policy) replaces the old result instead of keeping
two. References between the objects (the SR's evidence, the SEG's) are rewritten consistently.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pulmo.web.models import Delivery, DicomNode, Study, User, utcnow
from pulmo.web.services import audit, dicom_nodes
from pulmo.web.services.analysis import study_prefix

log = logging.getLogger("pulmo.deliveries")
#: The result files sent, in this order (the SEG before the SR that refers to it).
SENT_FILES = ("seg.dcm", "sc_axial.dcm", "sc_coronal.dcm", "sr_measurements.dcm")
#: Seconds a sender holds a claimed delivery before another may take it.
LEASE_S = 300.0
OK_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}   # success, and the C-STORE warnings (coercion etc.)


class DeliveryError(Exception):
    pass


def backoff_s(attempts: int, first_s: float = 5.0, cap_s: float = 300.0) -> float:
    """The wait after the ``attempts``-th failure in a row: first_s, 2*first_s, 4*first_s ... up to cap_s."""
    return min(cap_s, first_s * 2 ** max(0, min(attempts - 1, 30)))


def _version(study: Study) -> str:
    return str((study.results or {}).get("created") or "")[:40]


def after_analysis(session: Session, study: Study) -> int:
    """Make the study's deliveries pending for its current result (one per destination of its
    organisation); returns how many. Nothing when the study is not ``done``."""
    if study.status != "done" or not study.results:
        return 0
    version, now, n = _version(study), utcnow(), 0
    for node in dicom_nodes.destinations(session, study.organisation_id):
        row = session.execute(select(Delivery).where(Delivery.study_id == study.id,
                                                     Delivery.node_id == node.id)).scalar()
        if row is None:
            row = Delivery(study_id=study.id, node_id=node.id)
            session.add(row)
        elif row.status == "sent" and row.sent_version == version:
            continue
        _reset(row, version, now)
        n += 1
    session.flush()
    return n


def _reset(row: Delivery, version: str, now: dt.datetime) -> None:
    row.status, row.result_version, row.attempts = "pending", version, 0
    row.first_attempt_at, row.next_attempt_at, row.last_error = None, now, ""


def resend(session: Session, study: Study, user: User | None = None, address: str = "") -> list[Delivery]:
    """Send the study's current result again to every destination of its organisation."""
    if study.status != "done" or not study.results:
        raise DeliveryError("the study has no finished analysis to send")
    nodes = dicom_nodes.destinations(session, study.organisation_id)
    if not nodes:
        raise DeliveryError("the organisation has no DICOM destination (an administrator registers one)")
    now, version = utcnow(), _version(study)
    for node in nodes:
        row = session.execute(select(Delivery).where(Delivery.study_id == study.id,
                                                     Delivery.node_id == node.id)).scalar()
        if row is None:
            row = Delivery(study_id=study.id, node_id=node.id)
            session.add(row)
        _reset(row, version, now)
    session.flush()
    audit.record(session, "study.resend", user, "study", study.id, address,
                 {"destinations": [f"{n.ae_title}@{n.host}:{n.port}" for n in nodes]},
                 organisation_id=study.organisation_id)
    return for_study(session, study)


def for_study(session: Session, study: Study) -> list[Delivery]:
    return list(session.execute(select(Delivery).where(Delivery.study_id == study.id)
                                .order_by(Delivery.node_id)).scalars())


def claim_due(session: Session, limit: int = 5) -> list[int]:
    """Claim up to ``limit`` due pending deliveries (each for ``LEASE_S`` seconds); their ids."""
    now = utcnow()
    due = session.execute(select(Delivery.id, Delivery.next_attempt_at).where(
        Delivery.status == "pending", Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at, Delivery.id).limit(limit)).all()
    won = []
    for did, at in due:
        n = session.execute(update(Delivery).where(Delivery.id == did, Delivery.status == "pending",
                                                   Delivery.next_attempt_at == at)
                            .values(next_attempt_at=now + dt.timedelta(seconds=LEASE_S))
                            .execution_options(synchronize_session=False)).rowcount
        if n:
            won.append(did)
    return won


# ----------------------------------------------------------------------------- the objects sent
def _stable_uid(study_uid: str, slot: str) -> str:
    return generate_uid(entropy_srcs=["pulmo-result", study_uid, slot])


def outgoing(storage, study: Study) -> list[pydicom.Dataset]:
    """The result objects of the study as sent: stable UIDs (see the module docstring)."""
    prefix = f"{study_prefix(study)}/results"
    datasets = []
    for name in SENT_FILES:
        key = f"{prefix}/{name}"
        if storage.exists(key):
            datasets.append((name, pydicom.dcmread(storage.local_path(key))))
    if not datasets:
        raise DeliveryError("the study's result files are missing")
    mapping: dict[str, str] = {}
    for name, ds in datasets:
        kind = name.split("_")[0].split(".")[0]          # seg, sc, sr
        series = str(ds.SeriesInstanceUID)
        mapping.setdefault(series, _stable_uid(study.study_uid, f"{kind}:series"))
        mapping.setdefault(str(ds.SOPInstanceUID), _stable_uid(study.study_uid, f"{name}:sop"))
    out = []
    for _name, ds in datasets:
        _rewrite(ds, mapping)
        if getattr(ds, "file_meta", None) is not None:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def _rewrite(ds: pydicom.Dataset, mapping: dict[str, str]) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _rewrite(item, mapping)
        elif elem.VR == "UI" and elem.value is not None:
            if isinstance(elem.value, str) and elem.value in mapping:
                elem.value = mapping[elem.value]
            elif isinstance(elem.value, (list, pydicom.multival.MultiValue)):
                elem.value = [mapping.get(str(v), v) for v in elem.value]


def send(datasets: list[pydicom.Dataset], node: DicomNode, calling_ae: str, timeout_s: float = 60.0) -> int:
    """C-STORE ``datasets`` to ``node`` in one association; how many were stored. DeliveryError
    with a sentence when the node cannot be reached or refuses one."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = 10
    seen = set()
    for ds in datasets:
        ts = str(ds.file_meta.TransferSyntaxUID)
        key = (str(ds.SOPClassUID), ts)
        if key not in seen:
            seen.add(key)
            syntaxes = [ts] + [t for t in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if t != ts]
            ae.add_requested_context(ds.SOPClassUID, syntaxes)
    import socket

    try:   # a clear sentence for the commonest fault: nothing listening there
        socket.create_connection((node.host, node.port), timeout=10).close()
    except OSError as exc:
        raise DeliveryError(f"{node.ae_title} at {node.host}:{node.port} did not answer "
                            f"({exc.strerror or type(exc).__name__})") from None
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        where = f"{node.ae_title} at {node.host}:{node.port}"
        if assoc.is_rejected:
            raise DeliveryError(f"{where} rejected the association")
        if assoc.is_aborted:
            raise DeliveryError(f"{where} aborted the association")
        raise DeliveryError(f"{where} did not answer the association request")
    stored = 0
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code not in OK_STATUSES:
                what = "no answer" if code == -1 else f"status 0x{code:04X}"
                raise DeliveryError(f"{node.ae_title} refused {ds.SOPClassUID.name} ({what})")
            stored += 1
    finally:
        if assoc.is_established:
            assoc.release()
    return stored


def stow(datasets: list[pydicom.Dataset], node: DicomNode, timeout_s: float = 60.0) -> int:
    """STOW-RS ``datasets`` to ``{node.stow_url}/studies`` in one request (PS3.18 10.5); how many
    were stored. DeliveryError with a sentence when the service cannot be reached, answers an
    HTTP error, or lists instances as failed."""
    import io
    import json
    import secrets
    import urllib.error
    import urllib.request

    boundary = "pulmo-" + secrets.token_hex(12)
    body = io.BytesIO()
    for ds in datasets:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        body.write(buf.getvalue())
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    where = f"{node.ae_title} at {node.stow_url}"
    request = urllib.request.Request(node.stow_url + "/studies", data=body.getvalue(), method="POST", headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as r:
            answer = r.read()
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"{where} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{where} did not answer ({getattr(reason, 'strerror', None) or reason})") from None
    try:
        result = json.loads(answer or b"{}")
    except ValueError:
        result = {}
    failed = (result.get("00081198") or {}).get("Value") or [] if isinstance(result, dict) else []
    if failed:
        raise DeliveryError(f"{where} refused {len(failed)} of {len(datasets)} objects")
    return len(datasets)


def deliver_one(factory, storage, settings, delivery_id: int) -> bool:
    """Send one claimed delivery and record the outcome; True when it was sent."""
    from pulmo.web.db import transaction

    with transaction(factory) as s:
        row = s.get(Delivery, delivery_id)
        if row is None or row.status != "pending":
            return False
        study, node = s.get(Study, row.study_id), row.node
        version = _version(study)
        try:
            datasets = outgoing(storage, study) if study.status == "done" else None
        except Exception as exc:  # noqa: BLE001 - a missing or damaged result file: said on the row
            datasets, prep_error = None, f"cannot read the results: {exc}"
        else:
            prep_error = "" if datasets is not None else "the study is being analysed again"
        s.expunge(node)
    error, n = prep_error, 0
    if datasets is not None:
        try:
            n = stow(datasets, node) if node.stow_url else send(datasets, node, settings.dicom_ae_title)
        except DeliveryError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a network fault of any kind: retried
            error = f"{type(exc).__name__}: {exc}"
    now = utcnow()
    with transaction(factory) as s:
        row = s.get(Delivery, delivery_id)
        if row is None:
            return False
        study = s.get(Study, row.study_id)
        if row.result_version != version:   # a newer result arrived meanwhile: it is sent next
            row.next_attempt_at = now
            return False
        if not error:
            row.status, row.sent_at, row.sent_version, row.instances = "sent", now, version, n
            row.last_error, row.attempts = "", row.attempts + 1
            audit.record(s, "study.delivered", None, "study", study.id, "",
                         {"node": f"{node.ae_title}@{node.host}:{node.port}", "instances": n, "version": version},
                         organisation_id=study.organisation_id)
            log.info("study %s: %d result objects sent to %s@%s:%s", study.id, n, node.ae_title, node.host, node.port)
            return True
        row.attempts += 1
        row.first_attempt_at = row.first_attempt_at or now
        row.last_error = error[:2000]
        if prep_error == "the study is being analysed again":
            row.next_attempt_at = now + dt.timedelta(seconds=settings.delivery_retry_cap_s)
        elif now - row.first_attempt_at > dt.timedelta(hours=settings.delivery_give_up_h):
            row.status = "failed"
            audit.record(s, "study.delivery_failed", None, "study", study.id, "",
                         {"node": f"{node.ae_title}@{node.host}:{node.port}", "error": error[:500]},
                         organisation_id=study.organisation_id)
        else:
            row.next_attempt_at = now + dt.timedelta(seconds=backoff_s(row.attempts, settings.delivery_retry_s,
                                                                       settings.delivery_retry_cap_s))
        log.warning("study %s: delivery to %s@%s:%s failed (attempt %d): %s", study.id, node.ae_title, node.host,
                    node.port, row.attempts, error)
        return False


def run_due(factory, storage, settings, limit: int = 5) -> int:
    """Claim and send the due deliveries; how many were handled."""
    from pulmo.web.db import transaction

    with transaction(factory) as s:
        ids = claim_due(s, limit)
    for did in ids:
        try:
            deliver_one(factory, storage, settings, did)
        except Exception:  # noqa: BLE001 - the lease runs out and the delivery is tried again
            log.warning("delivery %s: unexpected error", did, exc_info=True)
    return len(ids)


class Sender(threading.Thread):
    """Sends due deliveries every ``every_s`` seconds until ``stop`` is set."""

    def __init__(self, settings, factory=None, storage=None, stop: threading.Event | None = None,
                 every_s: float = 1.0):
        super().__init__(name="pulmo-delivery-sender", daemon=True)
        self.settings, self.factory, self.storage = settings, factory, storage
        self.stop_event = stop or threading.Event()
        self.every_s = every_s

    def run(self) -> None:
        from pulmo.web.db import make_engine, session_factory
        from pulmo.web.storage import make_storage

        if self.factory is None:
            self.factory = session_factory(make_engine(self.settings.url))
        if self.storage is None:
            self.storage = make_storage(self.settings)
        while not self.stop_event.is_set():
            try:
                busy = run_due(self.factory, self.storage, self.settings)
            except Exception:  # noqa: BLE001 - e.g. the database away for a moment
                log.warning("delivery sender: could not look for due deliveries", exc_info=True)
                busy = 0
            if not busy:
                self.stop_event.wait(self.every_s)


def health(session: Session) -> tuple[bool, str]:
    """For the administrator's health page: destinations that are failing, in words."""
    from sqlalchemy import func

    rows = session.execute(select(DicomNode.ae_title, DicomNode.host, DicomNode.port, func.count(Delivery.id),
                                  func.min(Delivery.first_attempt_at), func.max(Delivery.last_error))
                           .join(Delivery, Delivery.node_id == DicomNode.id)
                           .where(Delivery.status == "pending", Delivery.attempts > 0)
                           .group_by(DicomNode.ae_title, DicomNode.host, DicomNode.port)).all()
    failed = session.execute(select(func.count(Delivery.id)).where(Delivery.status == "failed")).scalar() or 0
    counts = dict(session.execute(select(Delivery.status, func.count(Delivery.id)).group_by(Delivery.status)).all())
    problems = []
    now = utcnow()
    for ae, host, port, n, since, error in rows:
        mins = (now - since).total_seconds() / 60 if since else 0
        problems.append(f"{n} result deliveries to {ae} at {host}:{port} failing for {mins:.0f} min, retried "
                        f"(last error: {error[:200]})")
    if failed:
        problems.append(f"{failed} deliveries gave up after failing for a day: send them again from the study "
                        "page once the destination works")
    summary = (f"deliveries pending {counts.get('pending', 0)}, sent {counts.get('sent', 0)}, "
               f"failed {counts.get('failed', 0)}")
    return not problems, "; ".join(problems + [summary])
