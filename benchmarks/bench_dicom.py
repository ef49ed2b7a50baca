"""Benchmark of the DICOM network (issue 22), against a live ``pulmo serve --dicom-port`` and a
real PACS (Debian's Orthanc) on loopback:

* **instances accepted per second while analyses run**: a pynetdicom SCU in this process sends
  the slices of a 300-slice synthetic CT (one association, C-STORE one by one, each answered only
  once spooled) while the platform's worker analyses uploaded studies;
* **Orthanc -> Pulmo**: the same kind of study sent by Orthanc (``POST /modalities/pulmo/store``);
* **from the last instance to the results in Orthanc**: the time from the end of Orthanc's send
  to the SEG, the SR and the two Secondary Captures stored in Orthanc, for a 300-slice study;
  it includes the quiet period after which a study counts as complete (``--quiet``, 10 s by
  default in Pulmo).

    python benchmarks/bench_dicom.py [--slices 300] [--quiet 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "web"))


def study(folder: Path, slices: int, seed: int, patient: int = 0) -> list[Path]:
    """A synthetic chest CT of ``slices`` slices (the demo phantom resampled along z, thinner slices)."""
    import numpy as np
    from scipy.ndimage import zoom

    import pulmo.web.demo as demo

    hu = demo.phantom(seed, True)
    factor = slices / hu.shape[0]
    thin = zoom(hu, (factor, 1, 1), order=1)[:slices]
    saved = demo.SPACING
    demo.SPACING = (saved[0] / factor, saved[1], saved[2])
    try:
        return sorted(demo.write_dicom(thin.astype(np.float32), folder, demo.PATIENTS[patient], "20261201").iterdir())
    finally:
        demo.SPACING = saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--quiet", type=float, default=10.0, help="Pulmo's quiet period (s)")
    args = ap.parse_args()
    import json
    import urllib.request

    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    from orthanc_kit import OrthancServer, available
    from web_kit import PASSWORD, demo_zip_bytes, free_port, start_server

    if available():
        print(available())
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="pulmo-bench-dicom-"))
    a = study(tmp / "a", args.slices, 3)
    b = study(tmp / "b", args.slices, 4, patient=1)
    c = study(tmp / "c", args.slices, 7, patient=2)
    size_mb = sum(f.stat().st_size for f in a) / 2**20
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; SQLite, 1 worker; "
          f"study of {len(a)} slices ({size_mb:.0f} MiB); quiet period {args.quiet:g} s")
    port = free_port()
    orthanc = OrthancServer({"pulmo": ["PULMO", "127.0.0.1", port]})
    server = start_server(tmp / "data", "--workers", "1", "--dicom-port", str(port),
                          env={"PULMO_DICOM_QUIET_S": str(args.quiet)})
    try:
        def api(method, path, body=None, form=None, token=None):
            data = json.dumps(body).encode() if body is not None else form
            req = urllib.request.Request(server.url + path, data=data, method=method)
            if body is not None:
                req.add_header("Content-Type", "application/json")
            if token:
                req.add_header("Authorization", f"Bearer {token}")
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read() or b"null")

        token = api("POST", "/api/auth/token", form=f"username=admin&password={PASSWORD.replace(' ', '+')}".encode())[
            "access_token"]
        for title, role in (("BENCH_SCU", "source"), ("ORTHANC", "both")):
            api("POST", "/api/dicom-nodes", {"organisation": "Pulmo", "ae_title": title, "host": "127.0.0.1",
                                             "port": orthanc.dicom_port, "role": role}, token=token)

        # 1. C-STORE while analyses run: keep the worker busy with uploaded studies first
        import uuid

        boundary = uuid.uuid4().hex
        for seed in (5, 6, 8, 9, 10, 11):
            z = demo_zip_bytes(tmp / f"up{seed}", seed=seed)
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.zip\"\r\n"
                    f"Content-Type: application/zip\r\n\r\n").encode() + z + f"\r\n--{boundary}--\r\n".encode()
            req = urllib.request.Request(server.url + "/api/studies", data=body, method="POST")
            req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
            req.add_header("Authorization", f"Bearer {token}")
            urllib.request.urlopen(req, timeout=120).read()
        t_wait = time.time()
        while time.time() - t_wait < 30:
            items = api("GET", "/api/studies", token=token)
            items = items["items"] if isinstance(items, dict) else items
            if any(s["status"] == "running" for s in items):
                break
            time.sleep(0.1)
        ae = AE(ae_title="BENCH_SCU")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", port, ae_title="PULMO")
        assert assoc.is_established
        t0 = time.perf_counter()
        for f in b:
            assert assoc.send_c_store(f).Status == 0
        rate = len(b) / (time.perf_counter() - t0)
        assoc.release()
        def states():
            items = api("GET", "/api/studies", token=token)
            items = items["items"] if isinstance(items, dict) else items
            return sum(s["status"] == "running" for s in items), sum(s["status"] == "queued" for s in items)

        print(f"pynetdicom SCU -> Pulmo while analyses run (at the end: running {states()[0]}, queued "
              f"{states()[1]}): {rate:.0f} instances/s")

        # 2. Orthanc sends a study while analyses run
        ids_a = [orthanc.upload(f.read_bytes())["ID"] for f in a]
        ids = [orthanc.upload(f.read_bytes())["ID"] for f in c]
        t0 = time.perf_counter()
        orthanc.send("pulmo", ids_a, timeout=600)
        dt_a = time.perf_counter() - t0
        print(f"Orthanc -> Pulmo while analyses run (at the end: running {states()[0]}, queued {states()[1]}): "
              f"{len(a)} instances in {dt_a:.1f} s ({len(a) / dt_a:.0f} instances/s)")

        # 3. time from the end of Orthanc's send to the results in Orthanc, for a study alone
        uid = str(__import__("pydicom").dcmread(c[0], stop_before_pixels=True).StudyInstanceUID)
        deadline = time.time() + 600
        while time.time() < deadline:
            items = api("GET", "/api/studies", token=token)
            items = items["items"] if isinstance(items, dict) else items
            if items and all(s["status"] in ("done", "failed") for s in items) and len(items) >= 8:
                break
            time.sleep(0.5)
        t0 = time.perf_counter()
        orthanc.send("pulmo", ids, timeout=600)
        t_last = time.perf_counter()
        print(f"Orthanc -> Pulmo, idle platform: {len(c)} instances in {t_last - t0:.1f} s "
              f"({len(c) / (t_last - t0):.0f} instances/s)")
        deadline = time.time() + 600
        while time.time() < deadline:
            series = orthanc.series(uid)
            if len(series) >= 4 and sum(len(s["Instances"]) for s in series if
                                        s["MainDicomTags"].get("Modality") != "CT") >= 4:
                break
            time.sleep(0.2)
        t_done = time.perf_counter()
        items = api("GET", "/api/studies", token=token)
        items = items["items"] if isinstance(items, dict) else items
        st = next(s for s in items if s["study_uid"] == uid)
        print(f"last instance -> SEG, SR and SC stored in Orthanc: {t_done - t_last:.1f} s "
              f"(quiet period {args.quiet:g} s, so {t_done - t_last - args.quiet:.1f} s of analysis and delivery; "
              f"study {st['status']}, {st['n_instances']} instances)")
    finally:
        server.stop()
        orthanc.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
