"""Benchmark of the distributed task queue (procrastinate on PostgreSQL), issue 22:

* **queue overhead per job**: a study is uploaded to an idle worker, one at a time; the overhead
  is the time from the commit that queued the job to the worker claiming it (``jobs.created_at``
  -> ``jobs.started_at``), plus the time from the saved result to the job row's end, which the
  worker records as ``finished_at`` (reported: dispatch latency; the bookkeeping after the
  analysis is part of ``run_job`` and included in the throughput figures);
* **throughput with 1, 2 and 3 workers**: N synthetic studies (the demo phantom, distinct UIDs)
  queued at once, studies per minute until all are done.

    python benchmarks/bench_queue.py [--studies 12] [--overhead-jobs 10]

Starts its own PostgreSQL server on loopback (Debian's binaries, as the tests do); the API runs
in this process (FastAPI's test client), the workers are ``pulmo worker`` processes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "web"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=12)
    ap.add_argument("--overhead-jobs", type=int, default=10)
    args = ap.parse_args()
    from sqlalchemy import text
    from test_scale_out import _variants
    from web_kit import PostgresServer, demo_zip_bytes, make_platform, upload

    tmp = Path(tempfile.mkdtemp(prefix="pulmo-bench-queue-"))
    pg = PostgresServer()
    base = demo_zip_bytes(tmp / "demo")
    studies = _variants(base, args.studies + args.overhead_jobs)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; PostgreSQL on loopback; "
          f"demo phantom studies ({len(studies[0]) // 1024} KiB zip each)")
    try:
        def run(n_workers: int, batch: list[bytes], one_at_a_time: bool):
            url = pg.new_database()
            p = make_platform(tmp / f"d{time.time_ns()}", url, task_queue="procrastinate")
            env = {**os.environ, "PYTHONPATH": str(REPO), "PULMO_DATABASE_URL": url, "PULMO_TASK_QUEUE": "procrastinate",
                   "PULMO_DATA_DIR": str(p.settings.data_dir)}
            workers = [subprocess.Popen([sys.executable, "-m", "pulmo", "worker"], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL) for _ in range(n_workers)]
            engine = p.app.state.engine
            try:
                time.sleep(4.0)   # workers up and listening
                t0 = time.perf_counter()
                for z in batch:
                    r = upload(p, z)
                    assert r.status_code == 201, r.text
                    if one_at_a_time:
                        sid = r.json()["id"]
                        while p.client.get(f"/api/studies/{sid}", headers=p.headers("rad")).json()["status"] != "done":
                            time.sleep(0.05)
                while True:
                    with engine.connect() as c:
                        left = c.execute(text("SELECT count(*) FROM studies WHERE status NOT IN ('done','failed')")).scalar()
                    if not left:
                        break
                    time.sleep(0.2)
                wall = time.perf_counter() - t0
                with engine.connect() as c:
                    rows = c.execute(text("SELECT extract(epoch FROM started_at - created_at), "
                                          "extract(epoch FROM finished_at - started_at) FROM jobs WHERE state='done'")).all()
                    failed = c.execute(text("SELECT count(*) FROM studies WHERE status='failed'")).scalar()
                return wall, [float(a) for a, _ in rows], [float(b) for _, b in rows], failed
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(30)
                p.client.close()
                engine.dispose()

        _, dispatch, run_s, failed = run(1, studies[:args.overhead_jobs], one_at_a_time=True)
        d = sorted(dispatch)
        print(f"\nqueue overhead (commit -> claimed by an idle worker), {len(d)} jobs: median {1000 * statistics.median(d):.0f} ms, "
              f"max {1000 * d[-1]:.0f} ms (analysis itself: median {statistics.median(run_s):.1f} s); failed: {failed}")
        print("\nthroughput, studies queued at once:")
        print("| workers | studies | wall s | studies/min | median analysis s |")
        print("|---|---|---|---|---|")
        for n in (1, 2, 3):
            wall, _, run_s, failed = run(n, studies[args.overhead_jobs:], one_at_a_time=False)
            print(f"| {n} | {args.studies} | {wall:.1f} | {60 * args.studies / wall:.1f} | {statistics.median(run_s):.1f} |"
                  + (f" ({failed} failed)" if failed else ""), flush=True)
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
