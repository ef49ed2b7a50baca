"""Fixtures for the chest-CT tests: synthetic phantoms written as DICOM (built once per session)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ct_synth import phantom, write_series  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def classical_by_default():
    """Most CT tests check the classical (density) method: pin it with ``PULMO_CT_MODELS=none``.
    Tests of the shipped learned model undo this with ``monkeypatch.delenv("PULMO_CT_MODELS")``.
    Session-scoped and autouse, so it is in place before the session fixtures run the CLI."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PULMO_CT_MODELS", "none")
        yield


@pytest.fixture(scope="session")
def phantom_data():
    return phantom()


@pytest.fixture(scope="session")
def phantom_dicom(tmp_path_factory, phantom_data):
    hu, _ = phantom_data
    d = tmp_path_factory.mktemp("phantom") / "study"
    write_series(hu, d)
    return d


@pytest.fixture(scope="session")
def analyzed(tmp_path_factory, phantom_dicom):
    """`pulmo ct analyze` run once on the phantom DICOM series."""
    from pulmo.cli import main

    out = tmp_path_factory.mktemp("analyzed") / "out"
    rc = main(["ct", "analyze", str(phantom_dicom), "-o", str(out), "--no-progress"])
    assert rc == 0
    return out


def dciodvfy(path: Path) -> str | None:
    exe = shutil.which("dciodvfy")
    if exe is None:
        return None
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    return res.stdout + res.stderr
