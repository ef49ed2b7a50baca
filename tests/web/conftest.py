"""Fixtures of the web platform tests (the helpers are in ``web_kit.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from web_kit import CHROMIUM, CHROMIUM_ARGS, PG_BIN, PostgresServer, demo_zip_bytes, make_platform, start_server  # noqa: E402


@pytest.fixture(scope="session")
def postgres():
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries not installed (scripts/setup.sh installs Debian's postgresql)")
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """Each store test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def platform(tmp_path, database_url):
    """A fresh platform on SQLite and on PostgreSQL, users of every role in two organisations."""
    p = make_platform(tmp_path / "data", database_url)
    yield p
    p.client.close()
    p.app.state.engine.dispose()


@pytest.fixture
def sqlite_platform(tmp_path):
    p = make_platform(tmp_path / "data")
    yield p
    p.client.close()
    p.app.state.engine.dispose()


@pytest.fixture(scope="session")
def demo_zip(tmp_path_factory) -> bytes:
    """A small synthetic chest CT (the demo phantom with opacities) as a zip of DICOM files."""
    return demo_zip_bytes(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("live") / "data", "--workers", "1")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def desktop(browser):
    ctx = browser.new_context(viewport={"width": 1366, "height": 900})
    yield ctx
    ctx.close()


@pytest.fixture
def phone(browser):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True,
                              device_scale_factor=2)
    yield ctx
    ctx.close()
