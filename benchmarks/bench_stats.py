"""Validation-statistics speed benchmark.

    python benchmarks/bench_stats.py [--n 1000000] [--n-lifelines 100000] [--repeat 3] [--no-r]

Measures on this machine, best of ``--repeat`` runs (wall clock and this process's CPU time):

1. DeLong AUC with its 95% CI (``pulmo.stats.delong_auc``) on n cases; target < 1 s for 1,000,000;
2. the paired DeLong test of two scores on n cases;
3. Harrell's C with its standard error (``pulmo.stats.harrell_c``) on n rows; target < 2 s for 1,000,000;
4. Uno's C on n rows;
5. side by side: R's pROC (``roc`` + ``ci.auc(method="delong")``) and survival
   (``concordance(reverse=TRUE)``) on the same n, timed inside R with ``system.time`` (reading the
   CSV is not counted); lifelines' ``concordance_index`` (no standard error) on ``--n-lifelines``
   rows because it is much slower, and Pulmo on that same smaller n for comparison.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pulmo.stats import delong_auc, delong_paired_test, harrell_c, uno_c  # noqa: E402


def best_of(fn, repeat: int) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of that run)."""
    best = (np.inf, np.inf)
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        w, c = time.perf_counter() - w, time.process_time() - c
        if w < best[0]:
            best = (w, c)
    return best


def roc_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, rng.normal(size=n) + y, rng.normal(size=n) + 0.5 * y


def surv_data(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.exponential(np.exp(-0.7 * x)) * 100
    c = rng.exponential(150, n)
    return np.minimum(t, c) + 1e-3, (t <= c).astype(int), x + rng.normal(size=n)


def row(what: str, n: int, wall: float, cpu: float | None, note: str = "") -> None:
    cpu_s = f"{cpu:8.3f}" if cpu is not None else "       -"
    print(f"{what:44s} {n:>10,d} {wall:9.3f} {cpu_s}  {note}")


def run_r(n: int, y, s, t, e, r) -> dict[str, float] | str:
    if shutil.which("Rscript") is None:
        return "Rscript not installed"
    with tempfile.TemporaryDirectory() as d:
        roc_csv, surv_csv = Path(d) / "roc.csv", Path(d) / "surv.csv"
        np.savetxt(roc_csv, np.column_stack([y, s]), delimiter=",", header="y,s", comments="", fmt="%.17g")
        np.savetxt(surv_csv, np.column_stack([t, e, r]), delimiter=",", header="time,event,risk",
                   comments="", fmt="%.17g")
        script = f"""
suppressMessages({{library(pROC); library(survival)}})
d <- read.csv("{roc_csv}"); s <- read.csv("{surv_csv}")
t1 <- system.time({{ r <- roc(d$y, d$s, direction = "<", levels = c(0, 1), quiet = TRUE);
                     ci <- ci.auc(r, method = "delong") }})[["elapsed"]]
t2 <- system.time({{ f <- concordance(Surv(time, event) ~ risk, data = s, reverse = TRUE) }})[["elapsed"]]
cat(sprintf("%.17g", c(t1, t2, as.numeric(auc(r)), f$concordance)), "\\n")
"""
        p = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, timeout=1800)
        if p.returncode != 0:
            return "R failed: " + p.stderr.strip()[-200:]
        a, b, auc_r, c_r = (float(x) for x in p.stdout.split())
        return {"proc": a, "concordance": b, "auc": auc_r, "c": c_r}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--n-lifelines", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-r", action="store_true", help="skip the R comparison")
    args = ap.parse_args()
    n = args.n
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}; load average {os.getloadavg()[0]:.2f} (other processes share the cores)")
    print(f"{'':44s} {'n':>10s} {'wall (s)':>9s} {'cpu (s)':>8s}")
    y, s, s2 = roc_data(n)
    t, e, r = surv_data(n)
    w, c = best_of(lambda: delong_auc(y, s), args.repeat)
    row("pulmo DeLong AUC + 95% CI", n, w, c, "target < 1 s" if n == 1_000_000 else "")
    w, c = best_of(lambda: delong_paired_test(y, s, s2), args.repeat)
    row("pulmo paired DeLong test", n, w, c)
    w, c = best_of(lambda: harrell_c(t, e, r), args.repeat)
    row("pulmo Harrell's C + SE", n, w, c, "target < 2 s" if n == 1_000_000 else "")
    w, c = best_of(lambda: uno_c(t, e, r), max(1, args.repeat - 1))
    row("pulmo Uno's C + SE", n, w, c)
    if not args.no_r:
        res = run_r(n, y, s, t, e, r)
        if isinstance(res, str):
            print(f"R comparison skipped: {res}")
        else:
            row("R pROC roc + ci.auc(delong) (inside R)", n, res["proc"], None,
                f"same AUC: {abs(res['auc'] - delong_auc(y, s).auc) < 1e-9}")
            row("R survival::concordance (inside R)", n, res["concordance"], None,
                f"same C: {abs(res['c'] - harrell_c(t, e, r).c_index) < 1e-9}")
    m = args.n_lifelines
    try:
        from lifelines.utils import concordance_index
    except ImportError:
        print("lifelines not installed: comparison skipped")
    else:
        tl, el, rl = t[:m], e[:m], r[:m]
        w, c = best_of(lambda: concordance_index(tl, -rl, el), 1)
        row("lifelines concordance_index (C only)", m, w, c, "smaller n: it is slow")
        w, c = best_of(lambda: harrell_c(tl, el, rl), args.repeat)
        row("pulmo Harrell's C + SE (same rows)", m, w, c,
            f"same C: {abs(concordance_index(tl, -rl, el) - harrell_c(tl, el, rl).c_index) < 1e-9}")
    try:
        import sksurv  # noqa: F401
    except ImportError:
        print("scikit-survival not installed: not measured (reported: about 15 s for 100,000 rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
