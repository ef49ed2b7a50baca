"""Shared fixtures. Helpers for ../shared data live in ``shared_data.py``."""

from __future__ import annotations

import pytest

from shared_data import REPO, SHARED_DATA, shared_path  # noqa: F401  (re-exported)


@pytest.fixture
def shared():
    return shared_path
