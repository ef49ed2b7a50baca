"""Helpers shared by the pulmo.stats tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]


def write_csv(path: Path, **columns) -> Path:
    """Write columns with full float precision (R reads them back exactly)."""
    pd.DataFrame(columns).to_csv(path, index=False, float_format="%.17g", na_rep="NA")
    return path


def read_r(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


def assert_close(mine, ref, tol=1e-6, what=""):
    """Equal to ``tol`` (absolute or relative); NaN only matches NaN, inf only the same inf."""
    mine = np.asarray(mine, dtype=float)
    ref = np.asarray(ref, dtype=float)
    assert mine.shape == ref.shape, what
    both_nan = np.isnan(mine) & np.isnan(ref)
    same_inf = np.isinf(mine) & np.isinf(ref) & (np.sign(mine) == np.sign(ref))
    with np.errstate(invalid="ignore"):
        ok = both_nan | same_inf | (np.abs(mine - ref) <= tol * np.maximum(1.0, np.abs(ref)))
    assert ok.all(), f"{what}: mine {mine[~ok]} vs R {ref[~ok]}"


def run_cli(*args, cwd=None):
    r = subprocess.run([sys.executable, "-m", "pulmo", "validate", *map(str, args)],
                       capture_output=True, text=True, cwd=cwd or REPO)
    assert "Traceback" not in r.stderr, r.stderr
    return r
