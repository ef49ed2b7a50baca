"""Triage speed benchmark.

    python benchmarks/bench_triage.py [--model MODEL_FILE]

Measures, on this machine:
1. scoring complete rows (ensemble + Cox + three horizons + risk group), rows/s on 1,000,000;
2. imputing (M=20) and scoring 10,000 rows each missing one value, through the
   public API (DataFrame in, DataFrame out, validation included) and through the CLI
   (CSV file in and out);
3. the same for 200 rows, the original tool's reference figure (about 24 s to impute
   with R row by row plus 4.5 s to predict, on a 2-core machine; FACTS.md).

Without --model it imports the published model from ../shared when present,
otherwise it builds a random model of the same architecture (10-27-12-1 tanh x 5)
so that the timings are still meaningful.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pulmo.triage import TriageModel, TriagePredictor  # noqa: E402
from pulmo.triage.model import DenseLayer  # noqa: E402
from pulmo.triage.schema import FEATURE_NAMES  # noqa: E402

SHARED_ZIP = REPO.parent / "shared" / "data" / "triage" / "published-2020" / "models.zip"


def get_model(path: str | None) -> tuple[TriageModel, str]:
    if path:
        return TriageModel.load(path), path
    if SHARED_ZIP.exists():
        from pulmo.triage.published import import_published_model

        return import_published_model(SHARED_ZIP), "published model (../shared models.zip)"
    rng = np.random.default_rng(0)
    p = len(FEATURE_NAMES)
    ens = [[DenseLayer(rng.normal(0, .3, (p, 27)), rng.normal(0, .1, 27)),
            DenseLayer(rng.normal(0, .3, (27, 12)), rng.normal(0, .1, 12)),
            DenseLayer(rng.normal(0, .3, (12, 1)), rng.normal(0, .1, 1))] for _ in range(5)]
    n = 1590
    donors = np.column_stack([rng.integers(0, 2, (n, 4)), rng.integers(0, 4, n), rng.normal(260, 78, n).clip(30),
                              rng.normal(49, 13, n).clip(18), rng.gamma(4, 1.3, n), rng.normal(98, 50, n).clip(5),
                              rng.normal(3.8, 1.4, n).clip(0.3)]).astype(float)
    m = TriageModel(list(FEATURE_NAMES), np.r_[np.zeros(4), donors[:, 4:].mean(0)],
                    np.r_[np.ones(4), donors[:, 4:].std(0)], ens, rng.normal(0, .3, p), 1.5,
                    [5, 10, 30], [.035, .042, .048], donors=donors, reference=donors.mean(0))
    return m, "random model with the published architecture"


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def rows_missing_one(model: TriageModel, n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = model.donors[rng.integers(0, len(model.donors), n)].copy()
    X[np.arange(n), rng.integers(0, X.shape[1], n)] = np.nan
    df = pd.DataFrame(X, columns=FEATURE_NAMES)
    df.insert(0, "patient_id", [f"b{i}" for i in range(n)])
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    model, label = get_model(args.model)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    print(f"model: {label}\n")

    rng = np.random.default_rng(1)
    X = model.donors[rng.integers(0, len(model.donors), args.rows)]

    def score():
        _, final = model.linear_predictor(X)
        probs = [model.probability(final, t) for t in model.horizons]
        model.risk_group(probs[-1])

    t = best_of(score)
    print(f"score {args.rows:,} complete rows (numpy core): {t:.3f} s = {args.rows / t:,.0f} rows/s "
          f"(target >= 1,000,000 rows/s)")

    df_c = pd.DataFrame(X[:200_000], columns=FEATURE_NAMES)
    pred = TriagePredictor(model)
    t = best_of(lambda: pred.predict(df_c), repeat=2)
    print(f"predict 200,000 complete rows via the API (validation included): {t:.3f} s = {200_000 / t:,.0f} rows/s")

    for n in (200, 10_000):
        df = rows_missing_one(model, n)
        t = best_of(lambda: TriagePredictor(model, n_imputations=20).predict(df), repeat=2)
        print(f"impute (M=20) + score {n:,} rows missing one value, API: {t:.3f} s "
              f"(target for 10,000: <= 10 s; original tool: ~28.5 s for 200)")

    with tempfile.TemporaryDirectory() as tmp:
        model_path = model.save(Path(tmp) / "m.pulmo-triage")
        csv = Path(tmp) / "in.csv"
        rows_missing_one(model, 10_000).to_csv(csv, index=False)
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pulmo", "triage", "predict", str(csv), "--model",
                            str(model_path), "-o", str(Path(tmp) / "out.csv")], capture_output=True, text=True,
                           cwd=REPO)
        dt = time.perf_counter() - t
        print(f"CLI: 10,000-row CSV, each row missing one value, M=20, file to file (incl. start-up): "
              f"{dt:.2f} s (exit {r.returncode})")


if __name__ == "__main__":
    main()
