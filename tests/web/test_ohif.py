"""A standard DICOMweb viewer opens Pulmo's studies with their SEG overlays: the OHIF viewer (v3,
npm package ``@ohif/app``, installed by ``scripts/build_ohif.sh``) served by ``pulmo serve`` at
``/ohif/`` on the same origin, reading ``/dicomweb`` with the browser's session cookie.

A live server analyses the demo phantom; in Debian's Chromium the signed-in user opens
``/ohif/viewer?StudyInstanceUIDs=<uid>``: the CT is drawn, the study browser lists the SEG, SR and
Secondary Capture series, and loading the SEG fetches its instance from /dicomweb and draws the
segments in colour over the CT, with the segment labels of the SEG in the panel. No request
leaves the origin. Without a session the viewer gets 401 from /dicomweb and shows nothing.
Screenshots at 1366x900 and 390x844 go to /tmp/shots/ohif/. Skipped when the viewer is not
installed (an optional step: it is about 50 MB and needs npm)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from web_kit import PASSWORD, REPO, demo_zip_bytes, sign_in, start_server

OHIF_DIR = Path(os.environ.get("PULMO_OHIF_DIR") or REPO / "pulmo" / "web" / "ohif")
SHOTS = Path("/tmp/shots/ohif")
needs_ohif = pytest.mark.skipif(not (OHIF_DIR / "index.html").is_file(),
                                reason=f"the OHIF viewer is not installed in {OHIF_DIR} (run scripts/build_ohif.sh: "
                                       "an optional step that needs npm)")

# colourful pixels of the viewport canvases (the CT is grey: a segment overlay is what has colour)
# and whether the canvas shows an image at all (grey levels vary)
CANVAS_STATS = """() => {
  let coloured = 0, grey = new Set(), drawn = 0;
  for (const c of document.querySelectorAll('.cornerstone-viewport-element canvas, [data-viewport-uid] canvas')) {
    if (!c.width || !c.height) continue;
    let d;
    try { d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; } catch (e) { continue; }
    drawn += 1;
    for (let i = 0; i < d.length; i += 4) {
      const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
      if (hi - lo > 60) coloured += 1; else grey.add(hi >> 2);
    }
  }
  return {coloured, greyLevels: grey.size, canvases: drawn};
}"""


def wait_for(what: str, check, timeout: float, every: float = 0.5, page=None):
    """``check()``'s answer once it is true (with a page: its events are handled while waiting)."""
    end = time.time() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.time() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        if page is not None:
            page.wait_for_timeout(every * 1000)
        else:
            time.sleep(every)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A live server with the demo phantom analysed: its study UID, the SEG's series and
    instance UIDs and segment labels."""
    httpx = pytest.importorskip("httpx")
    root = tmp_path_factory.mktemp("ohif")
    server = start_server(root / "data", "--workers", "1")
    try:
        client = httpx.Client(base_url=server.url, timeout=60)
        token = client.post("/api/auth/token", data={"username": "admin", "password": PASSWORD}).json()
        headers = {"Authorization": "Bearer " + token["access_token"]}
        r = client.post("/api/studies", files={"file": ("demo.zip", demo_zip_bytes(root), "application/zip")},
                        headers=headers)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]

        def done():
            s = client.get(f"/api/studies/{sid}", headers=headers)
            if s.status_code == 200 and s.json()["status"] in ("done", "failed"):
                assert s.json()["status"] == "done", s.json().get("error")
                return s.json()
        study = wait_for("the analysis", done, 300)
        uid = study["study_uid"]
        series = client.get(f"/dicomweb/studies/{uid}/series", headers=headers).json()
        seg = next(s["0020000E"]["Value"][0] for s in series if s.get("00080060", {}).get("Value") == ["SEG"])
        ct = next(s["0020000E"]["Value"][0] for s in series if s.get("00080060", {}).get("Value") == ["CT"])
        meta = client.get(f"/dicomweb/studies/{uid}/series/{seg}/metadata", headers=headers).json()[0]
        labels = [item["00620005"]["Value"][0] for item in meta["00620002"]["Value"]]
        yield {"url": server.url, "uid": uid, "seg_series": seg, "seg_sop": meta["00080018"]["Value"][0],
               "ct_series": ct,
               "labels": labels, "client": client, "modalities": {s["00080060"]["Value"][0] for s in series}}
    finally:
        server.stop()


def watch(page) -> dict:
    """Every request of the page, and the answers of /dicomweb (url -> status)."""
    seen = {"requests": [], "dicomweb": {}}
    page.on("request", lambda q: seen["requests"].append(q.url))
    page.on("response", lambda r: "/dicomweb/" in r.url and seen["dicomweb"].__setitem__(r.url, r.status))
    return seen


def skip_tour(page) -> None:
    """OHIF's first-visit guided tour covers the viewport: skip it when it shows."""
    skip = page.get_by_text("Skip all")
    if skip.count():
        skip.first.click()


def test_the_viewer_folder_is_mounted_only_when_installed(tmp_path, monkeypatch):
    """Without the build, /ohif is an ordinary 404; with a folder, its files are served with the
    viewer's CSP and the app's routes answer index.html (no npm needed: a stand-in folder)."""
    from fastapi.testclient import TestClient

    from pulmo.web.app import create_app
    from pulmo.web.settings import Settings

    monkeypatch.setenv("PULMO_OHIF_DIR", str(tmp_path / "absent"))
    with TestClient(create_app(Settings(data_dir=tmp_path / "d1", workers=0))) as c:
        assert c.get("/ohif/").status_code == 404
    viewer = tmp_path / "viewer"
    viewer.mkdir()
    (viewer / "index.html").write_text('<div id="root"></div>')
    (viewer / "app.js").write_text("1")
    monkeypatch.setenv("PULMO_OHIF_DIR", str(viewer))
    with TestClient(create_app(Settings(data_dir=tmp_path / "d2", workers=0))) as c:
        for path in ("/ohif", "/ohif/", "/ohif/viewer", "/ohif/segmentation/x"):
            r = c.get(path)
            assert r.status_code == 200 and r.text == '<div id="root"></div>', path
            assert "'unsafe-eval'" in r.headers["content-security-policy"], path
        assert c.get("/ohif/app.js").text == "1"
        assert c.get("/ohif/missing.js").status_code == 404
        assert "unsafe-eval" not in c.get("/login").headers["content-security-policy"]


@pytest.mark.slow
@needs_ohif
def test_the_viewer_is_served_on_the_same_origin_with_its_own_csp(site):
    c = site["client"]
    index = c.get("/ohif/")
    assert index.status_code == 200 and '<div id="root">' in index.text
    assert "<script>" not in index.text and 'src="/ohif/app.bundle.' in index.text
    csp = index.headers["content-security-policy"]
    assert "'unsafe-eval'" in csp and "'wasm-unsafe-eval'" in csp and "frame-ancestors 'none'" in csp
    # the single-page app's routes answer its index; a missing file is a plain 404
    route = c.get(f"/ohif/viewer?StudyInstanceUIDs={site['uid']}")
    assert route.status_code == 200 and route.text == index.text
    assert c.get("/ohif/no-such-chunk.js").status_code == 404
    config = c.get("/ohif/app-config.js").text
    assert "qidoRoot: window.location.origin + '/dicomweb'" in config and "https://" not in config
    # the rest of the site keeps its strict policy
    for path in ("/login", "/static/common.js"):
        strict = c.get(path).headers["content-security-policy"]
        assert "unsafe-eval" not in strict and "script-src 'self';" in strict


@pytest.mark.slow
@needs_ohif
def test_ohif_shows_the_ct_and_loads_the_seg_overlay(site, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    url, uid = site["url"], site["uid"]
    assert {"CT", "SEG", "SR"} <= site["modalities"]
    ctx = browser.new_context(viewport={"width": 1366, "height": 900})
    try:
        page = ctx.new_page()
        seen = watch(page)
        sign_in(page, url, "admin")
        page.goto(f"{url}/ohif/viewer?StudyInstanceUIDs={uid}")
        # the study browser lists the CT and Pulmo's result series
        page.get_by_text("Pulmo segmentation").wait_for(timeout=90_000)
        page.get_by_text("Pulmo measurements").wait_for(timeout=10_000)
        # the CT is drawn: frames of its instances fetched, a grey image with many levels on the canvas
        wait_for("the CT drawn in the viewport", lambda: page.evaluate(CANVAS_STATS)["greyLevels"] > 20, 90)
        assert any(f"/series/{site['ct_series']}/instances/" in u and "/frames/" in u and s == 200
                   for u, s in seen["dicomweb"].items()), seen["dicomweb"]
        skip_tour(page)
        assert page.evaluate(CANVAS_STATS)["coloured"] < 50         # grey: no overlay yet
        page.screenshot(path=str(SHOTS / "ohif-desktop-ct.png"))

        # load the SEG: its instance comes from /dicomweb, its segments are drawn in colour
        page.get_by_text("Pulmo segmentation").dblclick()
        yes = page.get_by_role("button", name="Yes")
        try:
            yes.wait_for(timeout=20_000)
            yes.click()
        except Exception:  # noqa: BLE001 - some OHIF versions load it without asking
            pass
        wait_for("the SEG instance fetched", lambda: any(
            site["seg_sop"] in u and s == 200 for u, s in seen["dicomweb"].items()), 60, page=page)
        page.locator("[data-cy=panelSegmentation-btn]").click()      # the segmentation panel
        for label in site["labels"][:3]:
            page.get_by_text(label, exact=True).first.wait_for(timeout=60_000)
        stats = wait_for("the segments drawn over the CT", lambda: (lambda s: s if s["coloured"] > 200 else None)(
            page.evaluate(CANVAS_STATS)), 60)
        assert stats["greyLevels"] > 20, stats
        skip_tour(page)
        # scroll up to the middle of the lungs (the wheel steps one slice) for the picture
        page.mouse.move(680, 450)
        for _ in range(35):
            page.mouse.wheel(0, 100)
            page.wait_for_timeout(30)
        wait_for("the segments drawn at mid-chest", lambda: page.evaluate(CANVAS_STATS)["coloured"] > stats["coloured"],
                 20, page=page)
        page.screenshot(path=str(SHOTS / "ohif-desktop-seg.png"))
        failed = {u: s for u, s in seen["dicomweb"].items() if s >= 400}
        assert not failed, failed
        outside = [u for u in seen["requests"] if not u.startswith((url + "/", "data:", "blob:"))]
        assert not outside, outside
    finally:
        ctx.close()


@pytest.mark.slow
@needs_ohif
def test_ohif_on_a_phone(site, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    url, uid = site["url"], site["uid"]
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True,
                              device_scale_factor=2)
    try:
        page = ctx.new_page()
        sign_in(page, url, "admin")
        page.goto(f"{url}/ohif/viewer?StudyInstanceUIDs={uid}")
        wait_for("the CT drawn in the viewport", lambda: page.evaluate(CANVAS_STATS)["greyLevels"] > 20, 90)
        skip_tour(page)
        assert page.get_by_text("Pulmo segmentation").count() == 1
        page.screenshot(path=str(SHOTS / "ohif-phone-studies.png"))
        # OHIF is laid out for desktops: on a phone, fold the study browser to give the image the width
        page.locator("[data-cy=side-panel-header-left]").first.tap()
        page.mouse.move(195, 420)
        for _ in range(48):                                            # to the middle of the lungs
            page.mouse.wheel(0, 100)
            page.wait_for_timeout(30)
        page.wait_for_timeout(1500)
        assert page.evaluate(CANVAS_STATS)["greyLevels"] > 20
        page.screenshot(path=str(SHOTS / "ohif-phone.png"))
    finally:
        ctx.close()


@pytest.mark.slow
@needs_ohif
def test_without_a_session_the_viewer_gets_nothing(site, browser):
    ctx = browser.new_context(viewport={"width": 1366, "height": 900})
    try:
        page = ctx.new_page()
        seen = watch(page)
        page.goto(f"{site['url']}/ohif/viewer?StudyInstanceUIDs={site['uid']}")
        wait_for("a refused /dicomweb request", lambda: seen["dicomweb"], 60, page=page)
        page.wait_for_timeout(3000)
        assert seen["dicomweb"] and set(seen["dicomweb"].values()) == {401}, seen["dicomweb"]
        assert page.get_by_text("Pulmo segmentation").count() == 0
        assert page.evaluate(CANVAS_STATS)["greyLevels"] <= 20
    finally:
        ctx.close()
