"""Fixtures for the pulmo.stats tests: running R reference code on data the tests generate.

Plain helpers live in ``statshelp.py`` (this folder is put on sys.path for them).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@functools.lru_cache(maxsize=None)
def _r_missing(packages: tuple[str, ...]) -> str | None:
    """Why R cannot run the reference code (None when it can)."""
    if shutil.which("Rscript") is None:
        return "Rscript is not installed (install r-base-core; see scripts/setup.sh)"
    code = "; ".join(f"suppressMessages(library({p}))" for p in packages)
    try:
        r = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Rscript does not run: {exc}"
    if r.returncode != 0:
        return f"R package(s) {', '.join(packages)} not installed: {r.stderr.strip()[-300:]}"
    return None


@pytest.fixture
def run_r(tmp_path):
    """``run_r(script, packages)``: run an R script in tmp_path; skip when R or a package is missing."""

    def run(script: str, packages=("pROC", "survival")) -> None:
        why = _r_missing(tuple(packages))
        if why:
            pytest.skip(why)
        path = tmp_path / "reference.R"
        path.write_text(script)
        r = subprocess.run(["Rscript", str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert r.returncode == 0, f"R failed:\n{r.stderr[-3000:]}"

    return run


