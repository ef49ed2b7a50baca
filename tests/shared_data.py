"""Where the ../shared test data lives; tests skip with a reason when it is absent.

Importable from any test as ``from shared_data import shared_path`` (``tests`` is on
pytest's pythonpath).
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data; skips the calling test with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not available: {path} (see ../shared/README.md)")
    return path
