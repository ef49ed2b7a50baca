"""The DICOM network (issue 22): nodes, the Storage SCP, results delivered by C-STORE, and a real
PACS (Debian's Orthanc) on both ends of it."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
import urllib.request
import zipfile
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select, update

from orthanc_kit import OrthancServer, available, dciodvfy_errors, wait_for
from web_kit import PASSWORD, analyse_all, free_port, start_server, upload

pynetdicom = pytest.importorskip("pynetdicom")
from pynetdicom import AE, AllStoragePresentationContexts, evt  # noqa: E402
from pynetdicom.sop_class import CTImageStorage, Verification  # noqa: E402

NODE = {"organisation": "Hospital A", "ae_title": "CT_SCANNER", "host": "127.0.0.1", "port": 11112, "role": "source"}


def _files(demo_zip: bytes, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(demo_zip)) as z:
        z.extractall(folder)
    return sorted(folder.rglob("*.dcm"))


def _scu(calling: str, port: int, called: str = "PULMO"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae.associate("127.0.0.1", port, ae_title=called)


def _malformed(folder: Path) -> Path:
    """A file with a valid file meta (CT Image Storage) and a data set that is not DICOM at all."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / "malformed.dcm"
    with open(path, "wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fh, meta)
        for tag, uid in ((b"\x08\x00\x16\x00", str(CTImageStorage)), (b"\x08\x00\x18\x00", str(meta.MediaStorageSOPInstanceUID))):
            value = uid.encode() + (b"\x00" if len(uid) % 2 else b"")
            fh.write(tag + b"UI" + len(value).to_bytes(2, "little") + value)
        fh.write(b"\x10\x00\x10\x00PN\xf0\xff" + b"this is not a data set" * 20)   # a length past the end
    return path


def _no_study_uid(template: Path) -> pydicom.Dataset:
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(template)
    del ds.StudyInstanceUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


# ----------------------------------------------------------------------------- nodes API
def test_dicom_nodes_api(platform):
    c, admin = platform.client, platform.headers("admin")
    r = c.post("/api/dicom-nodes", json=NODE, headers=admin)
    assert r.status_code == 201, r.text
    node = r.json()
    assert node["ae_title"] == "CT_SCANNER" and node["organisation"] == "Hospital A" and node["role"] == "source"
    r = c.post("/api/dicom-nodes", json={**NODE, "ae_title": " PACS ", "host": "pacs.hospital-a.example",
                                         "port": 104, "role": "both"}, headers=admin)
    assert r.status_code == 201 and r.json()["ae_title"] == "PACS" and r.json()["host"] == "pacs.hospital-a.example"

    bad = [({"ae_title": "A" * 17}, "longer than 16"), ({"ae_title": "BAD\\AE"}, "backslash"),
           ({"ae_title": "CT\x01"}, "printable"), ({"ae_title": "   "}, "empty"), ({"ae_title": 5}, "string"),
           ({"ae_title": "ÄRZTE"}, "printable"), ({"port": 0}, "1 to 65535"), ({"port": 65536}, "1 to 65535"),
           ({"port": "104"}, "1 to 65535"), ({"port": True}, "1 to 65535"), ({"role": "sink"}, "role"),
           ({"host": "bad host!"}, "host"), ({"host": ""}, "host")]
    for change, words in bad:
        r = c.post("/api/dicom-nodes", json={**NODE, "ae_title": "OTHER", **change}, headers=admin)
        assert r.status_code == 422, (change, r.text)
        assert words in r.json()["detail"], (change, r.json())
    r = c.post("/api/dicom-nodes", json={**NODE, "organisation": "Nowhere"}, headers=admin)
    assert r.status_code == 404 and "Nowhere" in r.json()["detail"]
    # a calling AE title names one source only (it decides whose the instances are)
    r = c.post("/api/dicom-nodes", json={**NODE, "organisation": "Hospital B", "host": "10.0.0.9"}, headers=admin)
    assert r.status_code == 409 and "unique" in r.json()["detail"]
    r = c.post("/api/dicom-nodes", json=NODE, headers=admin)
    assert r.status_code == 409
    # a destination may share a title with another organisation's source
    r = c.post("/api/dicom-nodes", json={**NODE, "organisation": "Hospital B", "role": "destination",
                                         "host": "10.0.0.9"}, headers=admin)
    assert r.status_code == 201, r.text

    for who in ("rad", "clin", "rad_b", None):
        assert c.post("/api/dicom-nodes", json={**NODE, "ae_title": "X"}, headers=platform.headers(who)).status_code \
            in (401, 403)
        assert c.get("/api/dicom-nodes", headers=platform.headers(who)).status_code in (401, 403)
    listed = c.get("/api/dicom-nodes", headers=admin).json()
    assert [n["ae_title"] for n in listed if n["organisation"] == "Hospital A"] == ["CT_SCANNER", "PACS"]
    assert c.delete(f"/api/dicom-nodes/{node['id']}", headers=platform.headers("rad")).status_code == 403
    assert c.delete(f"/api/dicom-nodes/{node['id']}", headers=admin).status_code == 204
    assert c.delete(f"/api/dicom-nodes/{node['id']}", headers=admin).status_code == 404
    assert len(c.get("/api/dicom-nodes", headers=admin).json()) == 2
    audit = c.get("/api/audit?action=dicom_node.create", headers=admin)
    if audit.status_code == 200:   # the audit API (issue 21) may not be there yet
        assert len(audit.json() if isinstance(audit.json(), list) else audit.json().get("entries", [])) >= 3
    from pulmo.web.models import AuditEntry

    with platform.app.state.sessions() as s:
        actions = [a for a, in s.execute(select(AuditEntry.action))]
    assert actions.count("dicom_node.create") == 3 and actions.count("dicom_node.delete") == 1


# ----------------------------------------------------------------------------- the listener, in process
@pytest.fixture
def listener(sqlite_platform):
    from pulmo.web.dicom_listener import Listener

    p = sqlite_platform
    p.settings.dicom_port, p.settings.dicom_quiet_s = free_port(), 1.0
    r = p.client.post("/api/dicom-nodes", json=NODE, headers=p.headers("admin"))
    assert r.status_code == 201
    lst = Listener(p.settings, p.app.state.sessions, p.app.state.storage)
    lst.start()
    yield p, lst
    lst.stop()


def _studies(p):
    from pulmo.web.models import DicomArrival, Job, Study

    with p.app.state.sessions() as s:
        studies = [(st.id, st.n_instances, st.source, st.organisation_id) for st in s.execute(select(Study)).scalars()]
        jobs = [(j.study_id, j.state) for j in s.execute(select(Job)).scalars()]
        waiting = [a.study_id for a in s.execute(select(DicomArrival)).scalars()]
    return studies, jobs, waiting


def test_listener_echo_store_refuse_dedupe_quiet(listener, demo_zip, tmp_path, caplog):
    p, lst = listener
    port = p.settings.dicom_port
    files = _files(demo_zip, tmp_path / "ct")
    caplog.set_level("INFO", logger="pulmo.dicom")
    assoc = _scu("CT_SCANNER", port)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    for f in files[:-10]:
        assert assoc.send_c_store(f).Status == 0x0000
    # the same instance twice: accepted, stored once
    assert assoc.send_c_store(files[0]).Status == 0x0000
    # malformed, and no Study Instance UID: refused with a failure status, the association goes on
    assert assoc.send_c_store(_malformed(tmp_path)).Status in (0xC000, 0xA900)
    assert assoc.send_c_store(_no_study_uid(files[1])).Status == 0xA900
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    assert lst.stats["refused"] == 2
    assert any("refused" in r.message and "UID" in r.message for r in caplog.records)

    # an unknown calling AE title: the association is rejected, with a log line
    stranger = _scu("STRANGER", port)
    assert not stranger.is_established and stranger.is_rejected
    assert any("unknown calling AE title 'STRANGER'" in r.message for r in caplog.records)
    # a known title from the wrong address is refused too
    with p.app.state.sessions() as s, s.begin():
        from pulmo.web.models import DicomNode

        s.execute(update(DicomNode).values(host="10.9.9.9"))
    assert not _scu("CT_SCANNER", port).is_established
    with p.app.state.sessions() as s, s.begin():
        s.execute(update(DicomNode).values(host="127.0.0.1"))

    # grouped into one study of Hospital A; queued only once quiet for dicom_quiet_s
    studies, jobs, waiting = wait_for(lambda: (lambda r: r if r[0] and r[0][0][1] == len(files) - 10 else None)(
        _studies(p)), 20, 0.1, "the instances in the database")
    assert len(studies) == 1 and studies[0][2] == "dicom"
    from pulmo.web.models import Organisation

    with p.app.state.sessions() as s:
        assert s.get(Organisation, studies[0][3]).name == "Hospital A"
    assert lst.stats["duplicates"] >= 1
    studies, jobs, waiting = wait_for(lambda: (lambda r: r if r[1] else None)(_studies(p)), 20, 0.2, "a queued job")
    assert jobs == [(studies[0][0], "queued")] and waiting == []
    analyse_all(p)
    r = p.client.get(f"/api/studies/{studies[0][0]}", headers=p.headers("rad"))
    assert r.json()["status"] == "done", r.text
    first = r.json()

    # the study grows after its analysis: analysed again, the new result replaces the old one
    assoc = _scu("CT_SCANNER", port)
    for f in files[-10:]:
        assert assoc.send_c_store(f).Status == 0x0000
    assoc.release()
    studies, jobs, waiting = wait_for(lambda: (lambda r: r if len(r[1]) == 2 else None)(_studies(p)), 20, 0.2,
                                      "a second analysis queued")
    assert studies[0][1] == len(files) and sorted(j[1] for j in jobs) == ["done", "queued"]
    analyse_all(p)
    second = p.client.get(f"/api/studies/{studies[0][0]}", headers=p.headers("rad")).json()
    assert second["status"] == "done" and second["n_instances"] == len(files)
    assert second["results"]["created"] != first["results"]["created"]
    assert not any(lst.spool.glob("*/*.dcm"))   # the spool is empty once taken in


def test_listener_keeps_what_it_acknowledged_when_the_database_is_away(listener, demo_zip, tmp_path):
    """Instances acknowledged while the ingest cannot commit stay in the spool and are taken in later."""
    p, lst = listener
    files = _files(demo_zip, tmp_path / "ct")[:12]
    real = lst._ingest
    calls = {"n": 0}

    def failing(*a, **k):
        calls["n"] += 1
        raise RuntimeError("database away")

    lst._ingest = failing
    assoc = _scu("CT_SCANNER", p.settings.dicom_port)
    for f in files:
        assert assoc.send_c_store(f).Status == 0x0000
    assoc.release()
    wait_for(lambda: calls["n"] >= 1, 10, 0.1, "an ingest attempt")
    assert len(list(lst.spool.glob("*/*.dcm"))) == 12 and _studies(p)[0] == []
    lst._ingest = real
    wait_for(lambda: (lambda r: r[0] and r[0][0][1] == 12)(_studies(p)), 30, 0.2, "the spool taken in")


# ----------------------------------------------------------------------------- deliveries, in process
class FakePacs:
    """A C-STORE SCP that keeps what it receives (by SOP Instance UID), started and stopped at will."""

    def __init__(self, ae_title: str = "FAKEPACS"):
        self.port, self.ae_title, self.received, self.server = free_port(), ae_title, {}, None

    def start(self):
        ae = AE(ae_title=self.ae_title)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax)
        ae.add_supported_context(Verification)

        def store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            self.received[str(ds.SOPInstanceUID)] = ds
            return 0x0000

        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def _due_now(p):
    from pulmo.web.models import Delivery

    with p.app.state.sessions() as s, s.begin():
        s.execute(update(Delivery).where(Delivery.status == "pending").values(next_attempt_at=dt.datetime(2000, 1, 1)))


def test_deliveries_retry_backoff_resend_and_replace(sqlite_platform, demo_zip):
    from pulmo.web.models import Delivery
    from pulmo.web.services import deliveries

    p = sqlite_platform
    c, admin = p.client, p.headers("admin")
    pacs = FakePacs()
    r = c.post("/api/dicom-nodes", json={**NODE, "ae_title": pacs.ae_title, "port": pacs.port,
                                         "role": "destination"}, headers=admin)
    assert r.status_code == 201
    c.post("/api/dicom-nodes", json={**NODE, "organisation": "Hospital B", "ae_title": "OTHER_PACS",
                                     "port": 1, "role": "destination"}, headers=admin)
    sid = upload(p, demo_zip).json()["studies"][0]["id"]
    assert c.get(f"/api/studies/{sid}/deliveries", headers=p.headers("rad")).json() == []
    analyse_all(p)
    rows = c.get(f"/api/studies/{sid}/deliveries", headers=p.headers("rad")).json()
    assert len(rows) == 1 and rows[0]["status"] == "pending" and rows[0]["node"].startswith("FAKEPACS@")

    # the destination is down: the failure is kept, retried with a growing wait, nothing lost
    factory, storage, settings = p.app.state.sessions, p.app.state.storage, p.settings
    waits = []
    for attempt in range(1, 4):
        _due_now(p)
        assert deliveries.run_due(factory, storage, settings) == 1
        with factory() as s:
            d = s.execute(select(Delivery)).scalar()
            assert d.status == "pending" and d.attempts == attempt and "did not answer" in d.last_error
            waits.append((d.next_attempt_at - dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)).total_seconds())
    assert 3 < waits[0] < 5.5 and 8 < waits[1] < 10.5 and 18 < waits[2] < 20.5
    assert deliveries.run_due(factory, storage, settings) == 0          # not due yet
    assert [deliveries.backoff_s(n) for n in (1, 2, 3, 7, 8, 50)] == [5, 10, 20, 300, 300, 300]
    # down for more than an hour: still pending (given up only after delivery_give_up_h)
    with factory() as s, s.begin():
        s.execute(update(Delivery).values(first_attempt_at=dt.datetime.now() - dt.timedelta(hours=2)))
    _due_now(p)
    deliveries.run_due(factory, storage, settings)
    with factory() as s:
        assert s.execute(select(Delivery.status)).scalar() == "pending"
    # the administrator's health page says what is wrong
    health = c.get("/api/health", headers=admin).json()
    check = next(x for x in health["checks"] if x["name"] == "DICOM deliveries")
    assert not check["ok"] and "FAKEPACS" in check["detail"] and "did not answer" in check["detail"]

    pacs.start()
    try:
        _due_now(p)
        assert deliveries.run_due(factory, storage, settings) == 1
        rows = c.get(f"/api/studies/{sid}/deliveries", headers=p.headers("clin")).json()
        assert rows[0]["status"] == "sent" and rows[0]["instances"] == 4 and rows[0]["last_error"] == ""
        got = dict(pacs.received)
        modalities = sorted(str(ds.Modality) for ds in got.values())
        assert len(modalities) == 4 and modalities.count("SEG") == 1 and modalities.count("SR") == 1, modalities
        study_uid = c.get(f"/api/studies/{sid}", headers=p.headers("rad")).json()["study_uid"]
        assert all(str(ds.StudyInstanceUID) == study_uid for ds in got.values())
        # the SR's references follow the rewritten UIDs
        sr = next(ds for ds in got.values() if ds.Modality == "SR")
        seg = next(ds for ds in got.values() if ds.Modality == "SEG")
        assert str(seg.SOPInstanceUID) in str(sr)

        # resend: radiologist (or admin) of the owning organisation only
        assert c.post(f"/api/studies/{sid}/deliveries/resend", headers=p.headers("clin")).status_code == 403
        assert c.post(f"/api/studies/{sid}/deliveries/resend", headers=p.headers("rad_b")).status_code == 404
        assert c.get(f"/api/studies/{sid}/deliveries", headers=p.headers("rad_b")).status_code == 404
        r = c.post(f"/api/studies/{sid}/deliveries/resend", headers=p.headers("rad"))
        assert r.status_code == 200 and r.json()[0]["status"] == "pending" and r.json()[0]["attempts"] == 0
        pacs.received.clear()
        assert deliveries.run_due(factory, storage, settings) == 1
        assert set(pacs.received) == set(got)          # the same objects, the same UIDs

        # a new analysis: delivered again under the same UIDs (the PACS replaces the old result)
        from pulmo.web.services import jobs
        from pulmo.web.models import Study

        with factory() as s, s.begin():
            jobs.enqueue(s, s.get(Study, sid))
        analyse_all(p)
        pacs.received.clear()
        assert deliveries.run_due(factory, storage, settings) == 1
        assert set(pacs.received) == set(got)
        with factory() as s:
            d = s.execute(select(Delivery)).scalar()
            study = s.get(Study, sid)
            assert d.sent_version == study.results["created"] and d.status == "sent"
        check = next(x for x in c.get("/api/health", headers=admin).json()["checks"] if x["name"] == "DICOM deliveries")
        assert check["ok"] and "sent 1" in check["detail"]
    finally:
        pacs.stop()
    from pulmo.web.models import AuditEntry

    with factory() as s:
        actions = [a for a, in s.execute(select(AuditEntry.action))]
    assert actions.count("study.delivered") == 3 and actions.count("study.resend") == 1


def test_resend_without_destination_is_a_clear_409(sqlite_platform, demo_zip):
    p = sqlite_platform
    sid = upload(p, demo_zip).json()["studies"][0]["id"]
    r = p.client.post(f"/api/studies/{sid}/deliveries/resend", headers=p.headers("rad"))
    assert r.status_code == 409 and "finished analysis" in r.json()["detail"]
    analyse_all(p)
    r = p.client.post(f"/api/studies/{sid}/deliveries/resend", headers=p.headers("rad"))
    assert r.status_code == 409 and "no DICOM destination" in r.json()["detail"]


# ----------------------------------------------------------------------------- a live `pulmo serve --dicom-port`
def _token(url: str, user: str = "admin") -> str:
    data = f"username={user}&password={PASSWORD.replace(' ', '+')}".encode()
    with urllib.request.urlopen(urllib.request.Request(url + "/api/auth/token", data=data), timeout=10) as r:
        return json.loads(r.read())["access_token"]


def _api(url: str, token: str, method: str, path: str, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def dicom_server(tmp_path_factory):
    """``pulmo serve --workers 1 --dicom-port PORT`` (a study is complete 2 s after its last instance)."""
    port = free_port()
    server = start_server(tmp_path_factory.mktemp("dicomlive") / "data", "--workers", "1", "--dicom-port", str(port),
                          "--dicom-ae-title", "PULMO", env={"PULMO_DICOM_QUIET_S": "2", "PULMO_DELIVERY_RETRY_S": "1"})
    server.dicom_port = port
    server.admin = _token(server.url)
    wait_for(lambda: _scu("NOBODY", port).is_rejected, 60, 0.5, "the DICOM listener")
    yield server
    server.stop()


@pytest.mark.slow
def test_live_storage_scp(dicom_server, demo_zip, tmp_path):
    url, port = dicom_server.url, dicom_server.dicom_port
    _api(url, dicom_server.admin, "POST", "/api/dicom-nodes", {**NODE, "ae_title": "LIVE_CT", "organisation": "Pulmo"})
    files = _files(demo_zip, tmp_path / "ct")
    assoc = _scu("LIVE_CT", port)
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    t0 = time.time()
    for f in files:
        assert assoc.send_c_store(f).Status == 0
    rate = len(files) / (time.time() - t0)
    assert assoc.send_c_store(files[3]).Status == 0                     # a duplicate
    assert assoc.send_c_store(_malformed(tmp_path)).Status in (0xC000, 0xA900)
    assert assoc.send_c_store(_no_study_uid(files[0])).Status == 0xA900
    assoc.release()
    assert _scu("INTRUDER", port).is_rejected
    print(f"\nC-STORE to a live pulmo serve: {rate:.0f} instances/s")

    def done():
        studies = _api(url, dicom_server.admin, "GET", "/api/studies")
        items = studies["items"] if isinstance(studies, dict) else studies
        return [s for s in items if s["status"] == "done"]
    studies = wait_for(done, 120, 1.0, "the study analysed")
    assert len(studies) == 1 and studies[0]["n_instances"] == len(files)
    log = dicom_server.log.read_text()
    assert "unknown calling AE title 'INTRUDER'" in log
    assert "refused: no valid Study, Series or SOP Instance UID" in log
    assert "duplicate instances from LIVE_CT ignored" in log
    assert "complete: 96 instances from LIVE_CT" in log or "complete:" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_orthanc_end_to_end(tmp_path_factory, demo_zip, tmp_path):
    """Orthanc sends a chest CT to Pulmo; Pulmo analyses it and sends SEG, SR and SC back; the
    study grows, is analysed again while Orthanc is down, and the new result replaces the old one
    in Orthanc once it is back."""
    if available():
        pytest.skip(available())
    pulmo_port = free_port()
    orthanc = OrthancServer({"pulmo": ["PULMO", "127.0.0.1", pulmo_port]})
    server = None
    try:
        server = start_server(tmp_path_factory.mktemp("e2e") / "data", "--workers", "1", "--dicom-port",
                              str(pulmo_port), env={"PULMO_DICOM_QUIET_S": "2", "PULMO_DELIVERY_RETRY_S": "1"})
        url, admin = server.url, _token(server.url)
        rad = admin   # the platform's admin: its organisation "Pulmo" owns the study
        _api(url, admin, "POST", "/api/dicom-nodes", {"organisation": "Pulmo", "ae_title": "ORTHANC",
                                                      "host": "127.0.0.1", "port": orthanc.dicom_port, "role": "both"})
        files = _files(demo_zip, tmp_path / "ct")
        study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        first, rest = files[:-12], files[-12:]
        ids = [orthanc.upload(f.read_bytes())["ID"] for f in first]
        wait_for(lambda: _scu("NOBODY", pulmo_port).is_rejected, 60, 0.5, "the DICOM listener")
        t_sent = time.time()
        orthanc.send("pulmo", ids)

        def study():
            items = _api(url, rad, "GET", "/api/studies")
            items = items["items"] if isinstance(items, dict) else items
            return next((s for s in items if s["study_uid"] == study_uid), None)

        def delivered(version=None):
            s = study()
            if not s or s["status"] != "done":
                return None
            rows = _api(url, rad, "GET", f"/api/studies/{s['id']}/deliveries")
            ok = rows and all(r["status"] == "sent" and (version is None or r["sent_version"] != version) for r in rows)
            return (s, rows) if ok else None

        s1, rows = wait_for(delivered, 180, 0.5, "the results delivered")
        took = time.time() - t_sent
        assert s1["n_instances"] == len(first) and rows[0]["instances"] == 4
        series = wait_for(lambda: (lambda ss: ss if len(ss) >= 4 else None)(orthanc.series(study_uid)), 30, 0.5,
                          "the results in Orthanc")
        modalities = sorted(x["MainDicomTags"].get("Modality", "") for x in series)
        assert "SEG" in modalities and "SR" in modalities and "CT" in modalities and len(series) == 4, modalities
        results = {}
        for x in series:
            mod = x["MainDicomTags"].get("Modality", "")
            if mod == "CT":
                continue
            for inst in x["Instances"]:
                path = tmp_path / f"{mod}-{inst}.dcm"
                path.write_bytes(orthanc.instance_file(inst))
                results[inst] = (mod, path.read_bytes())
                errors = dciodvfy_errors(path)
                if errors is not None:
                    assert not errors, f"{mod}: " + "\n".join(errors)
        assert sorted(m for m, _ in results.values()).count("SEG") == 1 and len(results) == 4
        print(f"\nOrthanc -> Pulmo -> Orthanc: {len(first)} instances, results delivered {took:.1f} s after the send")

        # the study grows; Orthanc goes down before the new result is sent; nothing is lost
        more = [orthanc.upload(f.read_bytes())["ID"] for f in rest]
        orthanc.send("pulmo", more)
        orthanc.stop()

        def failing():
            s = study()
            if not s or s["status"] != "done" or s["n_instances"] != len(files):
                return None
            rows = _api(url, rad, "GET", f"/api/studies/{s['id']}/deliveries")
            return rows if rows and rows[0]["status"] == "pending" and rows[0]["attempts"] >= 2 else None

        rows = wait_for(failing, 180, 0.5, "the delivery failing while Orthanc is down")
        assert rows[0]["last_error"] and rows[0]["sent_version"] != rows[0]["result_version"]
        orthanc.start()
        s2, rows = wait_for(lambda: delivered(rows[0]["sent_version"]), 120, 0.5, "the new result delivered")
        series = orthanc.series(study_uid)
        assert len(series) == 4   # replaced, not added
        replaced = 0
        for x in series:
            mod = x["MainDicomTags"].get("Modality", "")
            if mod == "CT":
                assert len(x["Instances"]) == len(files)
                continue
            for inst in x["Instances"]:
                assert inst in results, "a result instance was added instead of replaced"
                replaced += orthanc.instance_file(inst) != results[inst][1]
        assert replaced == 4
    finally:
        if server is not None:
            server.stop()
        orthanc.close()


@pytest.mark.slow
def test_orthanc_prior_fetched_for_comparison(tmp_path_factory, tmp_path):
    """With an earlier CT of the same patient in Orthanc, Pulmo finds it (C-FIND), fetches it
    (C-MOVE), analyses it, and the new study's report carries the follow-up comparison."""
    if available():
        pytest.skip(available())
    from pulmo.web.demo import PATIENTS, phantom, write_dicom

    earlier = sorted(write_dicom(phantom(1, True), tmp_path / "earlier", PATIENTS[0], "20250601").iterdir())
    later = sorted(write_dicom(phantom(0, True), tmp_path / "later", PATIENTS[0], "20261201").iterdir())
    other = sorted(write_dicom(phantom(2, True), tmp_path / "other", PATIENTS[1], "20240101").iterdir())
    uid = {k: str(pydicom.dcmread(v[0], stop_before_pixels=True).StudyInstanceUID)
           for k, v in (("earlier", earlier), ("later", later), ("other", other))}
    pulmo_port = free_port()
    orthanc = OrthancServer({"pulmo": ["PULMO", "127.0.0.1", pulmo_port]})
    server = None
    try:
        for f in earlier + other:
            orthanc.upload(f.read_bytes())
        later_ids = [orthanc.upload(f.read_bytes())["ID"] for f in later]
        server = start_server(tmp_path_factory.mktemp("priors") / "data", "--workers", "1", "--dicom-port",
                              str(pulmo_port), env={"PULMO_DICOM_QUIET_S": "2"})
        url = server.url
        admin = _token(url)
        _api(url, admin, "POST", "/api/dicom-nodes", {"organisation": "Pulmo", "ae_title": "ORTHANC",
                                                      "host": "127.0.0.1", "port": orthanc.dicom_port, "role": "both"})
        wait_for(lambda: _scu("NOBODY", pulmo_port).is_rejected, 60, 0.5, "the DICOM listener")
        orthanc.send("pulmo", later_ids)

        def both_done():
            items = _api(url, admin, "GET", "/api/studies")
            items = items["items"] if isinstance(items, dict) else items
            by = {s["study_uid"]: s for s in items}
            if all(by.get(uid[k], {}).get("status") == "done" for k in ("earlier", "later")):
                return by
            return None

        by = wait_for(both_done, 240, 1.0, "the study and its prior analysed")
        assert uid["other"] not in by                     # another patient's study is not fetched
        assert by[uid["earlier"]]["n_instances"] == len(earlier)
        comp = wait_for(lambda: (lambda c: c if c.get("status") in ("done", "failed") else None)(
            _api(url, admin, "GET", f"/api/studies/{by[uid['later']]['id']}/comparison")), 240, 1.0,
            "the follow-up comparison")
        assert comp["status"] == "done", comp
        assert comp["prior"]["id"] == by[uid["earlier"]]["id"]
        log = server.log.read_text()
        assert "prior" in log and "fetched from ORTHANC" in log
    finally:
        if server is not None:
            server.stop()
        orthanc.close()


def test_stow_rs_destination_with_orthanc(sqlite_platform, demo_zip):
    """A DICOMweb destination: the results go to Orthanc's STOW-RS (its DICOMweb plugin), a down
    service is retried, and bad addresses are refused when the node is registered."""
    from pulmo.web.models import Delivery
    from pulmo.web.services import deliveries

    if available():
        pytest.skip(available())
    p = sqlite_platform
    c, admin = p.client, p.headers("admin")
    for bad in ({"stow_url": "ftp://pacs/dicom-web"}, {"stow_url": "http://user:pw@pacs/dicom-web"},
                {"stow_url": "http://pacs/dicom-web?x=1"}, {"stow_url": "http://pacs:99999/dicom-web"},
                {"stow_url": "http://pacs/dicom-web", "role": "source"}, {"stow_url": 7}):
        body = {"organisation": "Hospital A", "ae_title": "WEBPACS", "role": "destination", **bad}
        assert c.post("/api/dicom-nodes", json=body, headers=admin).status_code == 422, bad
    orthanc = OrthancServer()
    try:
        r = c.post("/api/dicom-nodes", json={"organisation": "Hospital A", "ae_title": "WEBPACS", "role": "destination",
                                             "stow_url": f"{orthanc.url}/dicom-web/"}, headers=admin)
        assert r.status_code == 201, r.text
        assert r.json()["stow_url"] == f"{orthanc.url}/dicom-web" and r.json()["port"] == orthanc.http_port
        sid = upload(p, demo_zip).json()["studies"][0]["id"]
        analyse_all(p)
        study_uid = c.get(f"/api/studies/{sid}", headers=p.headers("rad")).json()["study_uid"]
        factory, storage, settings = p.app.state.sessions, p.app.state.storage, p.settings
        orthanc.stop()                                             # the service is down: kept and retried
        _due_now(p)
        assert deliveries.run_due(factory, storage, settings) == 1
        with factory() as s:
            d = s.execute(select(Delivery)).scalar()
            assert d.status == "pending" and d.attempts == 1 and "did not answer" in d.last_error
        orthanc.start()
        _due_now(p)
        assert deliveries.run_due(factory, storage, settings) == 1
        rows = c.get(f"/api/studies/{sid}/deliveries", headers=p.headers("rad")).json()
        assert rows[0]["status"] == "sent" and rows[0]["instances"] == 4, rows
        series = orthanc.series(study_uid)
        modalities = sorted(s["MainDicomTags"].get("Modality", "") for s in series)
        assert "SEG" in modalities and "SR" in modalities, modalities
    finally:
        orthanc.close()
