"""Benchmark of the web platform's speed targets (issue 21, item 14), measured against a live
``pulmo serve`` process over HTTP (httpx), on SQLite and on PostgreSQL:

* **worklist**: ``GET /api/studies`` (the default "read these first" order, the other sorts,
  filters, a name search, a deep page) and the worklist page ``GET /`` with ``--studies``
  (100,000) studies in the database; target: median under 200 ms;
* **upload**: a ``--slices`` (300) slice chest CT, 512 x 512, as a deflated zip of DICOM files
  (the synthetic demo phantom resampled, a new study each time), ``POST /api/studies`` until the
  answer (stored and queued); target: under 5 s;
* **slices**: ``--users`` (20) users at once, each with their own token, scrolling through the
  axial slices of a finished study (its Hounsfield-unit slice and its overlay slice per step, as
  the viewer asks for them); target: median under 50 ms per slice (p95 reported too).

The rows of the 100,000 studies are bulk-inserted with SQLAlchemy core straight into the
server's database (patients, studies with a realistic mix of statuses, flags, involvement,
severity and triage risk, the results JSON of a real analysis on every finished study, and their
job rows); the analysed studies of the upload test are real. PostgreSQL is a throw-away cluster
on loopback (Debian's server binaries, as the tests start it); it gets ``VACUUM ANALYZE`` after the
bulk insert, as its autovacuum would; SQLite gets nothing (the platform never runs ``ANALYZE``).

    python benchmarks/bench_web.py [--studies 100000] [--backends sqlite,postgresql] [--users 20]
                                   [--slices 300] [--uploads 3] [--json out.json] [--explain]

``--explain`` prints the query plans of the worklist's SQL (captured from the app in this process).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "web"))

WORKLIST_QUERIES = [  # (label, path): what the worklist page asks for
    ("read these first (default)", "/api/studies?limit=50"),
    ("newest first", "/api/studies?sort=received&limit=50"),
    ("by triage risk", "/api/studies?sort=risk&limit=50"),
    ("by percent involved", "/api/studies?sort=percent&limit=50"),
    ("status = queued", "/api/studies?status=queued&limit=50"),
    ("flag = positive", "/api/studies?flag=positive&limit=50"),
    ("name search 'smi'", "/api/studies?q=smi&limit=50"),
    ("page 101 (offset 5000)", "/api/studies?offset=5000&limit=50"),
    ("worklist page (HTML)", "/"),
]
SURNAMES = ["Smith", "Wang", "Li", "Zhang", "Garcia", "Muller", "Rossi", "Chen", "Liu", "Kim", "Nguyen", "Silva",
            "Johnson", "Brown", "Kowalski", "Novak", "Yamamoto", "Singh", "Ali", "Hansen", "Dubois", "Cohen"]
GIVEN = ["Ava", "Ben", "Chen", "Dana", "Eli", "Fang", "Gus", "Hui", "Ivan", "Jia", "Kai", "Lena", "Ming", "Nora",
         "Omar", "Pia", "Qiang", "Rosa", "Sam", "Tao", "Uma", "Vera", "Wei", "Xin", "Yara", "Zoe"]


# ----------------------------------------------------------------------------- helpers
def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values_s: list[float]) -> dict:
    ms = [1000 * v for v in values_s]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 1), "p95_ms": round(pct(ms, 0.95), 1),
            "max_ms": round(max(ms), 1), "mean_ms": round(statistics.fmean(ms), 1)}


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {"cpu": model or platform.processor() or platform.machine(), "cpus": os.cpu_count(), "memory": mem,
            "python": platform.python_version(), "load_before": [round(x, 2) for x in os.getloadavg()]}


def ct_volume(slices: int, size: int):
    """The demo phantom (96 x 320 x 320 at 2.5 x 1.1 x 1.1 mm) resampled to ``slices`` x ``size``
    x ``size`` over the same field of view; returns (volume, spacing)."""
    import numpy as np
    from scipy import ndimage as ndi

    from pulmo.web import demo

    base = demo.phantom(0, True)
    zoom = (slices / base.shape[0], size / base.shape[1], size / base.shape[2])
    vol = ndi.zoom(base, zoom, order=1).astype(np.float32)
    spacing = tuple(s * n / m for s, n, m in zip(demo.SPACING, base.shape, vol.shape))
    return vol, spacing


def ct_zip(vol, spacing, folder: Path, k: int) -> bytes:
    """The volume as a new study (fresh UIDs) of DICOM files in a deflated zip."""
    from pulmo.web import demo

    saved = demo.SPACING
    demo.SPACING = spacing  # write_dicom reads the module's spacing
    try:
        ct = demo.write_dicom(vol, folder / f"ct{k}", (f"SYNTHETIC^Bench{k:02d}", f"BENCH-{k:03d}", "F", "19600101"),
                              "20261201")
    finally:
        demo.SPACING = saved
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(ct.iterdir()):
            z.write(f, f"ct/{f.name}")
    for f in ct.iterdir():
        f.unlink()
    ct.rmdir()
    return buf.getvalue()


class Api:
    """An httpx client on the live server, signed in as ``username``."""

    def __init__(self, url: str, username: str, password: str):
        import httpx

        self.http = httpx.Client(base_url=url, timeout=300)
        r = self.http.post("/api/auth/token", data={"username": username, "password": password})
        r.raise_for_status()
        self.http.headers["Authorization"] = "Bearer " + r.json()["access_token"]

    def close(self):
        self.http.close()


# ----------------------------------------------------------------------------- bulk rows
def bulk_insert(url: str, n: int, results_template: dict, seed: int = 21) -> dict:
    """``n`` studies (and ~0.7 n patients, and the job rows of the finished and failed ones) in
    the two organisations "Hospital A" (90 %) and "Hospital B"; a few of B's shared with ``rad``."""
    from sqlalchemy import func, insert, select, text

    from pulmo.web.db import make_engine
    from pulmo.web.models import Job, Organisation, Patient, Study, StudyShare, User
    from pulmo.web.services.analysis import priority

    rng = random.Random(seed)
    engine = make_engine(url)
    t0 = time.perf_counter()
    with engine.begin() as c:
        orgs = dict(c.execute(select(Organisation.name, Organisation.id)).all())
        org_a, org_b = orgs["Hospital A"], orgs["Hospital B"]
        pid0 = c.execute(select(func.coalesce(func.max(Patient.id), 0))).scalar()
        sid0 = c.execute(select(func.coalesce(func.max(Study.id), 0))).scalar()
        jid0 = c.execute(select(func.coalesce(func.max(Job.id), 0))).scalar()
        rad = c.execute(select(User.id).where(User.username == "rad")).scalar()
        rad_b = c.execute(select(User.id).where(User.username == "rad_b")).scalar()
    n_pat = max(1, int(n * 0.7))
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    patients = []
    for k in range(n_pat):
        patients.append({"id": pid0 + 1 + k, "organisation_id": org_a if rng.random() < 0.9 else org_b,
                         "patient_key": f"BP{k:07d}", "name": f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN)}",
                         "birth_date": f"{rng.randint(1930, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                         "sex": rng.choice("MF"), "synthetic": False, "created_at": now})
    studies, job_rows = [], []
    statuses = (("done", 0.94), ("failed", 0.01), ("queued", 0.03), ("running", 0.02))
    for k in range(n):
        pat = patients[rng.randrange(n_pat)]
        received = now - dt.timedelta(seconds=rng.uniform(0, 3 * 365 * 86400))
        r, status = rng.random(), "done"
        for s, w in statuses:
            if r < w:
                status = s
                break
            r -= w
        row = {"id": sid0 + 1 + k, "organisation_id": pat["organisation_id"], "patient_id": pat["id"],
               "study_uid": f"1.2.826.0.1.3680043.10.21.{k}", "description": "CT CHEST WITHOUT CONTRAST",
               "study_date": received.strftime("%Y%m%d"), "source": rng.choice(("upload", "upload", "dicom")),
               "synthetic": False, "received_at": received, "updated_at": received, "status": status,
               "error": "", "n_instances": rng.randint(120, 600), "flag": "", "percent_involved": None,
               "severity": None, "severity_max": None, "nodules": 0, "triage_risk": "", "triage_prob30": None,
               "priority": 0, "results": None}
        if rng.random() < 0.3:  # clinical data entered: a triage risk
            p30 = rng.betavariate(1.2, 6)
            row["triage_prob30"] = p30
            row["triage_risk"] = "high" if p30 > 0.3 else "medium" if p30 > 0.1 else "low"
        if status == "done":
            f = rng.random()
            flag = True if f < 0.3 else "indeterminate" if f < 0.42 else False
            row["flag"] = {True: "positive", False: "negative", "indeterminate": "indeterminate"}[flag]
            row["percent_involved"] = round(rng.uniform(1, 60) if flag is True else rng.uniform(0, 2), 2)
            row["severity"], row["severity_max"] = (rng.randint(1, 20) if flag is True else rng.randint(0, 2)), 30
            row["nodules"] = rng.choice((0, 0, 0, 1, 2))
            row["priority"] = priority(flag, row["triage_risk"])
            row["results"] = results_template
        elif status == "failed":
            row["error"] = "no axial CT series of the chest in the study"
            row["priority"] = priority(None, row["triage_risk"])
        else:
            row["priority"] = priority(None, row["triage_risk"])
        studies.append(row)
        if status in ("done", "failed"):
            job_rows.append({"id": jid0 + 1 + len(job_rows), "study_id": row["id"], "kind": "analyze", "state": status,
                             "attempts": 1, "created_at": received, "started_at": received,
                             "heartbeat_at": received, "finished_at": received + dt.timedelta(seconds=40),
                             "worker": "bench:1", "error": row["error"]})
    shares = [{"study_id": s["id"], "user_id": rad, "shared_by": rad_b, "created_at": now}
              for s in studies if s["organisation_id"] == org_b][:25]
    batch = 2000
    with engine.begin() as c:
        for table, rows in ((Patient.__table__, patients), (Study.__table__, studies), (Job.__table__, job_rows),
                            (StudyShare.__table__, shares)):
            for i in range(0, len(rows), batch):
                c.execute(insert(table), rows[i:i + batch])
        if engine.dialect.name == "postgresql":
            for table in ("patients", "studies", "jobs", "study_shares"):
                c.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                               f"(SELECT max(id) FROM {table}))"))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE"))
    took = time.perf_counter() - t0
    engine.dispose()
    return {"studies": n, "patients": n_pat, "jobs": len(job_rows), "shares": len(shares), "insert_s": round(took, 1),
            "visible_to_rad": sum(1 for s in studies if s["organisation_id"] == org_a) + len(shares)}


# ----------------------------------------------------------------------------- the three measurements
def bench_worklist(api: Api, repeat: int) -> dict:
    out = {}
    for label, path in WORKLIST_QUERIES:
        times = []
        for i in range(repeat + 2):
            t0 = time.perf_counter()
            r = api.http.get(path)
            took = time.perf_counter() - t0
            r.raise_for_status()
            if i >= 2:   # two warm-up requests
                times.append(took)
        s = summary(times)
        if path.startswith("/api/"):
            s["total"] = r.json()["total"]
        out[label] = s
    return out


def bench_upload(api: Api, zips: list[bytes], slices: int) -> dict:
    times, ids = [], []
    for k, data in enumerate(zips):
        t0 = time.perf_counter()
        r = api.http.post("/api/studies", files={"file": (f"ct{k}.zip", data, "application/zip")})
        took = time.perf_counter() - t0
        if r.status_code != 201:
            raise RuntimeError(f"upload {k}: {r.status_code} {r.text[:300]}")
        body = r.json()
        if body["stored"] != slices:
            raise RuntimeError(f"upload {k}: stored {body['stored']} of {slices}")
        state = api.http.get(f"/api/studies/{body['id']}").json()["status"]
        if state != "queued":
            raise RuntimeError(f"upload {k}: status {state}, expected queued")
        times.append(took)
        ids.append(body["id"])
    s = summary(times)
    s["zip_mib"] = round(statistics.fmean(len(z) for z in zips) / 2**20, 1)
    s["each_s"] = [round(t, 2) for t in times]
    return {"summary": s, "ids": ids}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def bench_slices(url: str, users: list[tuple[str, str]], study_id: int, steps: int, think_ms: float,
                 seed: int = 7, encoding: str = "gzip", server_pid: int | None = None) -> dict:
    """Every user scrolls ``steps`` axial slices from a random start (both the HU slice and the
    overlay slice at each step, one after the other), pausing ``think_ms`` between steps.
    ``encoding``: the Accept-Encoding sent (browsers send gzip; "identity": uncompressed)."""
    import httpx

    apis = [Api(url, u, pw) for u, pw in users]
    for a in apis:
        a.http.headers["Accept-Encoding"] = encoding
    meta = apis[0].http.get(f"/api/studies/{study_id}/viewer").json()
    nz = meta["shape"][0]
    per_kind: dict[str, list[float]] = {"hu": [], "labels": []}
    per_step: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(apis))

    def user(i: int):
        rng = random.Random(seed + i)
        start = rng.randrange(nz)
        direction = rng.choice((1, -1))
        mine_kind: dict[str, list[float]] = {"hu": [], "labels": []}
        mine_step = []
        http: httpx.Client = apis[i].http
        barrier.wait()
        for s in range(steps):
            idx = (start + direction * s) % nz
            t_step = time.perf_counter()
            for kind in ("hu", "labels"):
                t0 = time.perf_counter()
                r = http.get(f"/api/studies/{study_id}/viewer/{kind}/axial/{idx}")
                took = time.perf_counter() - t0
                if r.status_code != 200 or not r.content:
                    with lock:
                        errors.append(f"{kind} {idx}: {r.status_code}")
                mine_kind[kind].append(took)
            mine_step.append(time.perf_counter() - t_step)
            if think_ms:
                time.sleep(think_ms / 1000)
        with lock:
            for k in per_kind:
                per_kind[k] += mine_kind[k]
            per_step.extend(mine_step)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(apis))]
    cpu0 = cpu_s(server_pid) if server_pid else float("nan")
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    server_cpu = (cpu_s(server_pid) - cpu0) if server_pid else float("nan")
    for a in apis:
        a.close()
    if errors:
        raise RuntimeError(f"slice errors: {errors[:5]}")
    every = per_kind["hu"] + per_kind["labels"]
    return {"users": len(users), "steps_per_user": steps, "think_ms": think_ms, "encoding": encoding,
            "slice_shape": meta["shape"][1:], "per_request": summary(every), "hu": summary(per_kind["hu"]),
            "labels": summary(per_kind["labels"]), "per_step_hu_and_labels": summary(per_step),
            "requests_per_s": round(len(every) / wall, 1),
            "server_cpu_ms_per_request": round(1000 * server_cpu / len(every), 2)}


def explain(data_dir: Path, database_url: str | None) -> None:
    """Capture the SQL of the worklist requests from the app in this process, print their plans."""
    from fastapi.testclient import TestClient
    from sqlalchemy import event, text

    from pulmo.web.app import create_app
    from pulmo.web.settings import Settings
    from web_kit import PASSWORD

    app = create_app(Settings(data_dir=data_dir, database_url=database_url, workers=0))
    engine = app.state.engine
    seen: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if "FROM studies" in statement:
            seen.append((statement, parameters))

    with TestClient(app) as client:
        tok = client.post("/api/auth/token", data={"username": "rad", "password": PASSWORD}).json()["access_token"]
        for label, path in WORKLIST_QUERIES:
            if not path.startswith("/api/"):
                continue
            seen.clear()
            event.listen(engine, "before_cursor_execute", grab)
            client.get(path, headers={"Authorization": "Bearer " + tok})
            event.remove(engine, "before_cursor_execute", grab)
            print(f"\n--- {label}: {path}")
            for sql, params in seen:
                pg = engine.dialect.name == "postgresql"
                with engine.connect() as c:
                    raw = c.connection.dbapi_connection.cursor()
                    raw.execute(("EXPLAIN (ANALYZE, BUFFERS) " if pg else "EXPLAIN QUERY PLAN ") + sql, params)
                    rows = raw.fetchall()
                print("  " + " ".join(sql.split())[:400])
                for row in rows:
                    print("    " + (row[0] if pg else f"{row[1]:>3} {row[3]}"))
    engine.dispose()


# ----------------------------------------------------------------------------- one backend
def run_backend(name: str, args, tmp: Path, zips: list[bytes], pg) -> dict:
    from web_kit import PASSWORD, start_server

    url = pg.new_database() if name == "postgresql" else None
    data_dir = tmp / name / "data"
    env = {"PULMO_DATABASE_URL": url} if url else {}
    server = start_server(data_dir, "--workers", "0", env=env)
    out: dict = {"backend": name}
    try:
        admin = Api(server.url, "admin", PASSWORD)
        users = [("rad", "radiologist", "Hospital A"), ("rad_b", "radiologist", "Hospital B")] + \
                [(f"reader{i:02d}", ("radiologist", "clinician")[i % 2], "Hospital A") for i in range(args.users)]
        for u, role, org in users:
            r = admin.http.post("/api/users", json={"username": u, "password": PASSWORD, "role": role,
                                                     "organisation": org})
            r.raise_for_status()
        admin.close()
        rad = Api(server.url, "rad", PASSWORD)

        # (b) uploads, on the empty platform
        print(f"[{name}] uploading {len(zips)} studies of {args.slices} slices ...", flush=True)
        up = bench_upload(rad, zips, args.slices)
        out["upload"] = up["summary"]
        print(f"[{name}] upload: median {up['summary']['median_ms'] / 1000:.2f} s "
              f"({up['summary']['each_s']})", flush=True)

        # the uploaded studies analysed by a worker (for the viewer test and the results template)
        cmd = [sys.executable, "-m", "pulmo", "worker", "--once", "--data-dir", str(data_dir)]
        t0 = time.perf_counter()
        subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(REPO), **env}, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
        out["analysis_s_per_study"] = round((time.perf_counter() - t0) / len(zips), 1)
        study = rad.http.get(f"/api/studies/{up['ids'][0]}").json()
        if study["status"] != "done":
            raise RuntimeError(f"the uploaded study was not analysed: {study['status']} {study.get('error')}")
        print(f"[{name}] analysed: {out['analysis_s_per_study']} s per study", flush=True)

        # (a) worklist with N studies
        print(f"[{name}] inserting {args.studies} studies ...", flush=True)
        out["database"] = bulk_insert(url or f"sqlite:///{(data_dir / 'pulmo.db').resolve()}", args.studies,
                                      study["results"])
        print(f"[{name}] inserted in {out['database']['insert_s']} s; measuring the worklist ...", flush=True)
        out["worklist"] = bench_worklist(rad, args.repeat)
        if args.explain:
            explain(data_dir, url)

        # (c) concurrent slice browsing, with the full database
        print(f"[{name}] {args.users} users browsing slices ...", flush=True)
        readers = [(f"reader{i:02d}", PASSWORD) for i in range(args.users)]
        pid, sid = server.process.pid, up["ids"][0]
        out["slices_one_user"] = bench_slices(server.url, readers[:1], sid, args.steps, 0.0, server_pid=pid)
        out["slices"] = bench_slices(server.url, readers, sid, args.steps, 0.0, server_pid=pid)
        if args.think_ms:
            out["slices_paced"] = bench_slices(server.url, readers, sid, args.steps, args.think_ms, server_pid=pid)
        out["slices_identity"] = bench_slices(server.url, readers, sid, args.steps, 0.0, encoding="identity",
                                              server_pid=pid)
        rad.close()
    finally:
        server.stop()
    return out


def report(results: list[dict], info: dict) -> None:
    print(f"\nmachine: {info['cpu']}, {info['cpus']} CPUs, {info['memory']}; load average before: "
          f"{info['load_before']}; client and server on the same machine")
    for res in results:
        report_backend(res)


def report_backend(res: dict) -> None:
    db = res["database"]
    print(f"\n## {res['backend']}: {db['studies']:,} studies ({db['visible_to_rad']:,} visible to the user), "
          f"{db['patients']:,} patients, {db['jobs']:,} job rows")
    print("\n| worklist request | total | median ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")
    for label, s in res["worklist"].items():
        print(f"| {label} | {s.get('total', '')} | {s['median_ms']} | {s['p95_ms']} | {s['max_ms']} |")
    u = res["upload"]
    print(f"\nupload of a {u['zip_mib']} MiB zip: stored and queued in median {u['median_ms'] / 1000:.2f} s, "
          f"max {u['max_ms'] / 1000:.2f} s ({u['each_s']} s); analysis after: {res['analysis_s_per_study']} s per study")
    for key in ("slices_one_user", "slices", "slices_paced", "slices_identity"):
        if key not in res:
            continue
        s = res[key]
        paced = f", {s['think_ms']:.0f} ms pause per step" if s["think_ms"] else ", no pause"
        print(f"\n{s['users']} user(s) x {s['steps_per_user']} steps{paced}, Accept-Encoding {s['encoding']} "
              f"({s['slice_shape'][0]}x{s['slice_shape'][1]} slices; {s['requests_per_s']} requests/s; server CPU "
              f"{s['server_cpu_ms_per_request']} ms per request):")
        print("| slice request | n | median ms | p95 ms | max ms |")
        print("|---|---|---|---|---|")
        for label in ("per_request", "hu", "labels", "per_step_hu_and_labels"):
            v = s[label]
            print(f"| {label.replace('_', ' ')} | {v['n']} | {v['median_ms']} | {v['p95_ms']} | {v['max_ms']} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=100_000, help="studies in the database for the worklist")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--slices", type=int, default=300, help="slices of the uploaded CT")
    ap.add_argument("--size", type=int, default=512, help="rows and columns of the uploaded CT")
    ap.add_argument("--uploads", type=int, default=3, help="uploads timed per backend")
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--steps", type=int, default=60, help="slices each user scrolls through")
    ap.add_argument("--think-ms", type=float, default=50.0,
                    help="also run the viewer test with this pause between steps (0: only without)")
    ap.add_argument("--repeat", type=int, default=20, help="timed requests per worklist query")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--explain", action="store_true", help="print the worklist's query plans")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data folders")
    args = ap.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    info = machine()
    tmp = Path(tempfile.mkdtemp(prefix="pulmo-bench-web-"))
    pg = None
    results = []
    try:
        print(f"making {args.uploads} synthetic CTs of {args.slices} x {args.size} x {args.size} ...", flush=True)
        vol, spacing = ct_volume(args.slices, args.size)
        zips = [ct_zip(vol, spacing, tmp, k) for k in range(args.uploads * len(backends))]
        del vol
        if "postgresql" in backends:
            from web_kit import PostgresServer

            pg = PostgresServer()
        for i, name in enumerate(backends):
            results.append(run_backend(name, args, tmp, zips[i * args.uploads:(i + 1) * args.uploads], pg))
            report_backend(results[-1])
    finally:
        if pg is not None:
            pg.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"data kept in {tmp}")
    print("\n# all backends")
    report(results, info)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2))
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
