"""The DICOM Storage SCP (pynetdicom): PACS and modalities send studies to Pulmo.

``pulmo serve --dicom-port PORT [--dicom-ae-title PULMO]`` runs :func:`listener_process` beside
the web server. It answers C-ECHO and C-STORE of every storage SOP class, in any transfer syntax
Pulmo reads.

- **Who may send.** An association is accepted only from the calling AE title of a registered
  ``source`` (or ``both``) node (``POST /api/dicom-nodes``), coming from that node's host; any
  other is rejected ("calling AE title not recognised") with a log line. The instances belong to
  the node's organisation.
- **Nothing acknowledged is lost.** An instance is answered *success* only once it is checked (a
  readable DICOM data set with Study, Series and SOP Instance UIDs; anything else is refused with
  a failure status and a log line, never a crash) and written to the spool folder
  (``DATA_DIR/dicom-spool``). A thread takes the spooled instances in batches into the platform
  through the same ingest service as uploads (stored, deduplicated by SOP Instance UID within the
  organisation, grouped into studies) and removes them from the spool only after that commit;
  a listener that stops meanwhile takes them in at its next start. When the database is away the
  spool keeps filling and is taken in when it is back.
- **When a study is complete.** DICOM has no "end of study" message. A study counts as complete
  once no instance of it has arrived for ``Settings.dicom_quiet_s`` seconds (default 10 s: a
  scanner or PACS sends a series' instances back to back, well under a second apart), and its
  analysis is queued then. Instances that arrive later (a study that grows after it was analysed)
  start the wait again and queue a new analysis, whose result replaces the old one, in the
  destinations too (:mod:`pulmo.web.services.deliveries`). The wait is kept in the database
  (``dicom_arrivals``), so it survives a restart.
- **Priors.** When a study is complete, a thread asks the organisation's PACS (nodes with the
  role ``both``) for the same patient's most recent earlier CT and fetches it by C-MOVE to this
  AE title (:mod:`pulmo.web.services.priors`); it arrives here like any study, marked ``prior``,
  and the follow-up comparison is made once both are analysed.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from pulmo.web.db import transaction
from pulmo.web.models import DicomArrival, DicomNode, Study, utcnow
from pulmo.web.services import dicom_nodes, ingest, jobs
from pulmo.web.settings import Settings

log = logging.getLogger("pulmo.dicom")
#: C-STORE failure statuses (PS3.4 B.2.3).
CANNOT_UNDERSTAND = 0xC000
DOES_NOT_MATCH = 0xA900
OUT_OF_RESOURCES = 0xA700
BATCH = 400                 # instances taken into the database per transaction
OWN_MANUFACTURER = "Pulmo (research software)"


@dataclass(frozen=True)
class Source:
    node_id: int
    organisation_id: int
    ae_title: str


class Listener:
    """The Storage SCP, its spool and the thread that takes the spool into the platform."""

    def __init__(self, settings: Settings, factory, storage, check_address: bool = True):
        self.settings, self.factory, self.storage = settings, factory, storage
        self.check_address = check_address
        self.spool = Path(settings.data_dir) / "dicom-spool"
        self.incoming = self.spool / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self.server = None
        self.thread: threading.Thread | None = None
        self.stats = {"accepted": 0, "refused": 0, "duplicates": 0, "rejected_associations": 0, "ingested": 0}
        self.priors: queue.Queue = queue.Queue()
        self.prior_uids: set[str] = set()      # priors asked for: not looked up for priors themselves
        self.fetch_priors = True

    # ------------------------------------------------------------------ the SCP
    def start(self) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.settings.dicom_ae_title)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 30, 60, 120
        ae.maximum_associations = 16
        ae.maximum_pdu_size = 0   # no limit on what we receive: fewer, larger PDUs
        handlers = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_C_ECHO, lambda event: 0x0000)]
        self._recover_incoming()
        self.server = ae.start_server((self.settings.host, int(self.settings.dicom_port)), block=False,
                                      evt_handlers=handlers)
        self.thread = threading.Thread(target=self._loop, name="pulmo-dicom-ingest", daemon=True)
        self.thread.start()
        threading.Thread(target=self._priors_loop, name="pulmo-dicom-priors", daemon=True).start()
        log.info("DICOM Storage SCP %s listening on %s:%s (a study is complete %.0f s after its last instance)",
                 self.settings.dicom_ae_title, self.settings.host, self.settings.dicom_port,
                 self.settings.dicom_quiet_s)

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
        if self.server is not None:
            self.server.shutdown()
        if self.thread is not None:
            self.thread.join(timeout=30)

    def _source(self, calling_ae: str, address: str) -> Source | None:
        with transaction(self.factory) as s:
            node = dicom_nodes.source_for(s, calling_ae, address, self.check_address)
            return None if node is None else Source(node.id, node.organisation_id, node.ae_title)

    def _on_requested(self, event) -> None:
        assoc = event.assoc
        calling = str(getattr(assoc.requestor.primitive, "calling_ae_title", "") or "").strip()
        address = str(assoc.requestor.address or "")
        try:
            source = self._source(calling, address)
        except Exception:  # noqa: BLE001 - the database away: refuse for now (the peer retries)
            log.warning("association from %r at %s refused: the database cannot be reached", calling, address,
                        exc_info=True)
            self._reject(assoc, 0x02, 0x01, 0x01)   # transient
            return
        if source is None:
            self.stats["rejected_associations"] += 1
            log.warning("association from unknown calling AE title %r at %s rejected (register it as a source: "
                        "POST /api/dicom-nodes)", calling, address)
            self._reject(assoc, 0x01, 0x01, 0x03)   # permanent: calling AE title not recognised
            return
        assoc.pulmo_source = source

    @staticmethod
    def _reject(assoc, result: int, source: int, diagnostic: int) -> None:
        assoc.acse.send_reject(result, source, diagnostic)
        assoc.is_rejected = True
        assoc.kill()

    def _on_store(self, event) -> int:
        source: Source | None = getattr(event.assoc, "pulmo_source", None)
        if source is None:
            return OUT_OF_RESOURCES
        calling = source.ae_title
        tmp = self.incoming / f"{uuid.uuid4().hex}.dcm"
        try:
            self._write(event, tmp)
        except Exception as exc:  # noqa: BLE001 - disk full, an undecodable request
            tmp.unlink(missing_ok=True)
            self.stats["refused"] += 1
            log.error("instance from %s not stored: %s: %s", calling, type(exc).__name__, exc)
            return OUT_OF_RESOURCES if isinstance(exc, OSError) else CANNOT_UNDERSTAND
        parsed = ingest.parse(tmp)
        if isinstance(parsed, str):
            tmp.unlink(missing_ok=True)
            self.stats["refused"] += 1
            sop = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "?")
            log.warning("instance %s from %s refused: %s", sop, calling, parsed)
            return CANNOT_UNDERSTAND if "UID" not in parsed else DOES_NOT_MATCH
        folder = self.spool / f"{source.organisation_id}-{source.node_id}"
        folder.mkdir(exist_ok=True)
        os.replace(tmp, folder / f"{parsed.sop_uid}.dcm")
        self.stats["accepted"] += 1
        self.wake.set()
        return 0x0000

    @staticmethod
    def _write(event, path: Path) -> None:
        """The received data set as a DICOM file, bytes as sent (not decoded and encoded again)."""
        from pydicom.filewriter import write_file_meta_info

        with open(path, "wb") as fh:
            fh.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(fh, event.file_meta, enforce_standard=True)
            fh.write(event.request.DataSet.getvalue())

    def _recover_incoming(self) -> None:
        for p in self.incoming.glob("*.dcm"):   # half-received when the listener stopped: never acknowledged
            p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ spool -> platform
    def _loop(self) -> None:
        while not self.stop_event.is_set():
            self.wake.wait(0.5)
            self.wake.clear()
            try:
                while self.drain():
                    pass
                self.settle()
            except Exception:  # noqa: BLE001 - e.g. the database away: the spool waits, retried
                log.warning("DICOM ingest: will retry", exc_info=True)
                self.stop_event.wait(2.0)
        try:
            self.drain()
        except Exception:  # noqa: BLE001
            pass

    def drain(self) -> int:
        """Take one batch of spooled instances into the platform; how many files it took."""
        taken = 0
        for folder in sorted(p for p in self.spool.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(folder.glob("*.dcm"))[:BATCH]
            if not files:
                continue
            org_id, node_id = (int(x) for x in folder.name.split("-", 1))
            taken += len(files)
            self._ingest(org_id, node_id, files)
        return taken

    def _ingest(self, org_id: int, node_id: int, files: list[Path]) -> None:
        now = utcnow()
        with transaction(self.factory) as s:
            node = s.get(DicomNode, node_id)
            ae = node.ae_title if node is not None else f"node {node_id}"
            own = [f for f in files if self._is_own_result(f)]
            todo = [f for f in files if f not in own]
            if own:
                log.info("%d instances from %s are Pulmo's own results: not taken in again", len(own), ae)
            if todo:
                try:
                    result = ingest.ingest(s, self.storage, org_id, [(f.name, f) for f in todo], None,
                                           address=f"dicom:{ae}", source="dicom", queue=False)
                except ingest.IngestError as exc:
                    log.warning("instances from %s not taken: %s", ae, exc)
                    result = None
                if result is not None:
                    for reason in result.ignored:
                        log.warning("instance from %s ignored: %s", ae, reason)
                    if result.duplicates:
                        self.stats["duplicates"] += result.duplicates
                        log.info("%d duplicate instances from %s ignored (SOP Instance UID already stored)",
                                 result.duplicates, ae)
                    self.stats["ingested"] += result.stored
                    for st in result.studies:
                        if st["new_instances"]:
                            self._arrived(s, st["id"], ae, st["new_instances"], now)
                        if st["study_uid"] in self.prior_uids:
                            study = s.get(Study, st["id"])
                            if study is not None:
                                study.source = "prior"
        for f in files:   # only after the commit
            f.unlink(missing_ok=True)

    def _priors_loop(self) -> None:
        from pulmo.web.services import priors

        while not self.stop_event.is_set():
            try:
                study_id = self.priors.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                priors.fetch_prior(self.factory, self.settings, study_id, self.prior_uids)
            except Exception:  # noqa: BLE001 - a prior is a help, never a failure of the study
                log.warning("prior lookup for study %s failed", study_id, exc_info=True)

    @staticmethod
    def _is_own_result(path: Path) -> bool:
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Manufacturer", "Modality"])
        except Exception:  # noqa: BLE001 - ingest says why
            return False
        return str(ds.get("Manufacturer", "")) == OWN_MANUFACTURER and str(ds.get("Modality", "")) in ("SEG", "SR",
                                                                                                     "OT")

    @staticmethod
    def _arrived(s, study_id: int, ae: str, n: int, now) -> None:
        row = s.get(DicomArrival, study_id)
        if row is None:
            s.add(DicomArrival(study_id=study_id, first_at=now, last_at=now, calling_ae=ae[:16], instances=n))
        else:
            row.last_at, row.instances = now, row.instances + n

    def settle(self) -> int:
        """Queue the analysis of every study quiet for ``dicom_quiet_s``; how many."""
        import datetime as dt

        limit = utcnow() - dt.timedelta(seconds=self.settings.dicom_quiet_s)
        n = 0
        with transaction(self.factory) as s:
            rows = s.execute(select(DicomArrival).where(DicomArrival.last_at <= limit)).scalars().all()
            for row in rows:
                study = s.get(Study, row.study_id)
                if study is not None:
                    jobs.enqueue(s, study)
                    if self.fetch_priors and study.study_uid not in self.prior_uids and study.source != "prior":
                        self.priors.put(study.id)
                    log.info("study %s (%s) complete: %d instances from %s, quiet for %.0f s; analysis queued",
                             study.id, study.study_uid, row.instances, row.calling_ae, self.settings.dicom_quiet_s)
                    n += 1
                s.delete(row)
        return n


def listener_process(settings: Settings) -> None:
    """Entry point of the listener process started by ``pulmo serve --dicom-port`` (stops on SIGTERM)."""
    import signal

    from pulmo.web.db import make_engine, session_factory
    from pulmo.web.storage import make_storage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("pynetdicom", "pydicom", "highdicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    dispatcher = None
    if settings.task_queue == "procrastinate":
        from pulmo.web import task_queue

        dispatcher = task_queue.Dispatcher(settings)
    factory = session_factory(make_engine(settings.url), on_new_jobs=dispatcher)
    listener = Listener(settings, factory, make_storage(settings))
    listener.start()
    parent = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != parent:   # the serving process is gone: stop (the spool keeps what was acknowledged)
            break
    listener.stop()
    if dispatcher is not None:
        dispatcher.close()
