"""A real PACS for the DICOM network tests: Debian's Orthanc (with its DICOMweb plugin), started
on free loopback ports with a configuration in a temporary folder (storage there too), no
authentication and no remote access. Its REST API is what the tests use to upload studies, to
make Orthanc send them (C-STORE) to Pulmo, and to find what Pulmo sent back."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from web_kit import free_port

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def available() -> str:
    """Why Orthanc cannot be used here ("" when it can)."""
    if not Path(ORTHANC).exists():
        return "Debian's orthanc is not installed (scripts/setup.sh installs orthanc and orthanc-dicomweb)"
    return ""


class OrthancServer:
    """One Orthanc on loopback. ``modalities``: ``{name: (ae_title, host, port)}`` it may send to.
    :meth:`stop` and :meth:`start` again keep its ports and its stored studies (a PACS that is
    down for a while)."""

    def __init__(self, modalities: dict | None = None, ae_title: str = "ORTHANC"):
        self.dir = Path(tempfile.mkdtemp(prefix="pulmo-orthanc-"))
        self.http_port, self.dicom_port, self.ae_title = free_port(), free_port(), ae_title
        self.url = f"http://127.0.0.1:{self.http_port}"
        config = {
            "Name": "PulmoTestPACS", "StorageDirectory": str(self.dir / "db"), "IndexDirectory": str(self.dir / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": ae_title,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
            "DicomServerEnabled": True, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True, "OverwriteInstances": True, "StableAge": 2,
            "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": {k: list(v) for k, v in (modalities or {}).items()},
            "DicomScpTimeout": 30, "DicomAssociationCloseDelay": 0,
        }
        self.config = self.dir / "orthanc.json"
        self.config.write_text(json.dumps(config, indent=1))
        self.log = self.dir / "orthanc.log"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self, wait_s: float = 60.0) -> None:
        self.process = subprocess.Popen([ORTHANC, str(self.config)], stdout=open(self.log, "ab"),
                                        stderr=subprocess.STDOUT, cwd=self.dir)
        end = time.time() + wait_s
        while time.time() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {self.log.read_text()[-3000:]}")
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ REST
    def request(self, method: str, path: str, data: bytes | dict | list | None = None, timeout: float = 120.0):
        body = json.dumps(data).encode() if isinstance(data, (dict, list)) else data
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if isinstance(data, (dict, list)):
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw

    def get(self, path: str):
        return self.request("GET", path, timeout=10)

    def upload(self, dicom: bytes) -> dict:
        """Store one DICOM file (``POST /instances``)."""
        return self.request("POST", "/instances", dicom)

    def set_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        self.request("PUT", f"/modalities/{name}", {"AET": ae_title, "Host": host, "Port": port})

    def send(self, modality: str, resources: list[str], timeout: float = 300.0):
        """Make Orthanc C-STORE the resources (Orthanc ids of studies, series or instances) to a modality."""
        return self.request("POST", f"/modalities/{modality}/store",
                            {"Resources": resources, "Synchronous": True}, timeout=timeout)

    def find_study(self, study_uid: str) -> str | None:
        ids = self.request("POST", "/tools/lookup", study_uid.encode())
        return next((i["ID"] for i in ids or [] if i.get("Type") == "Study"), None)

    def series(self, study_uid: str) -> list[dict]:
        """The study's series (``GET /studies/{id}/series``), [] when Orthanc does not have it."""
        oid = self.find_study(study_uid)
        return self.get(f"/studies/{oid}/series") if oid else []

    def instance_file(self, instance_id: str) -> bytes:
        return self.request("GET", f"/instances/{instance_id}/file")


def dciodvfy_errors(path: Path) -> list[str] | None:
    """dciodvfy's error lines for a DICOM file; None when dciodvfy is not installed."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        return None
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]


def wait_for(predicate, timeout_s: float, every_s: float = 0.5, what: str = "condition"):
    """Poll ``predicate()`` until it returns something true; that value, or AssertionError."""
    end = time.time() + timeout_s
    last = None
    while time.time() < end:
        try:
            last = predicate()
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")
