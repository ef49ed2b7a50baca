"""The study page and its viewer in a real browser (Debian's Chromium through Playwright) against a
live ``pulmo serve``: a study uploaded through the API with a bearer token, the page refreshing by
itself until the analysis is done, then on a desktop and on a phone (390 px, touch): scrolling the
slices (wheel, keys, slider; a swipe on the phone), window presets, dragging window and level,
overlays (the canvas pixels change), the coronal view, a nodule's "go to slice", the report
panel. Screenshots go to /tmp/screens/ (outside the repository)."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from web_kit import PASSWORD, sign_in, start_server

pytestmark = pytest.mark.slow
SCREENS = Path("/tmp/screens")

CANVAS_HASH = """(axis) => {
  const c = document.querySelector(`.pane[data-axis=${axis}] canvas`);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let h = 2166136261;
  for (let i = 0; i < d.length; i += 4) { h = Math.imul(h ^ (d[i] + 3 * d[i + 1] + 7 * d[i + 2]), 16777619) >>> 0; }
  return h + ":" + c.width + "x" + c.height + ":" + c.dataset.drawn;
}"""


def phantom_zip(folder: Path, date: str, opacities: bool = True, nodule: bool = False, seed: int = 0) -> bytes:
    """The demo phantom (synthetic; patient DEMO-001) as a zip, optionally with a solid nodule in
    the right upper lung."""
    from pulmo.web.demo import PATIENTS, SHAPE, SPACING, phantom, write_dicom

    hu = phantom(seed, opacities)
    if nodule:
        z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(SHAPE, SPACING)), indexing="ij")
        cz, cy, cx = ((n - 1) * s / 2 for n, s in zip(SHAPE, SPACING))
        d = np.sqrt((z - (cz + 30)) ** 2 + (y - (cy - 25)) ** 2 + (x - (cx - 60)) ** 2)
        hu += 1 / (1 + np.exp(d - 8.0)) * (20.0 - hu)
    ct = write_dicom(hu, folder / f"ct-{date}-{seed}", PATIENTS[0], date)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(ct.iterdir()):
            z.write(f, f"ct/{f.name}")
    return buf.getvalue()


@pytest.fixture(scope="module")
def viewer_site(tmp_path_factory):
    """A live server, a radiologist of the admin's organisation, an earlier study of the patient
    (analysed), and the zip of the current one (uploaded by the test, to watch it finish)."""
    httpx = pytest.importorskip("httpx")
    root = tmp_path_factory.mktemp("viewer")
    server = start_server(root / "data", "--workers", "1")
    try:
        client = httpx.Client(base_url=server.url, timeout=60)
        admin = {"Authorization": f"Bearer {token_for(client, 'admin')}"}
        org = settled(lambda: client.get("/api/me", headers=admin))["organisation"]
        r = client.post("/api/users", json={"username": "rad", "password": PASSWORD, "role": "radiologist",
                                            "organisation": org}, headers=admin)
        assert r.status_code == 201, r.text
        headers = {"Authorization": f"Bearer {token_for(client, 'rad')}"}
        prior = client.post("/api/studies", files={"file": ("prior.zip", phantom_zip(root, "20261110", False, seed=1),
                                                            "application/zip")}, headers=headers)
        assert prior.status_code == 201, prior.text
        wait_done(client, headers, prior.json()["id"])
        yield {"server": server, "client": client, "headers": headers, "root": root, "prior": prior.json()["id"],
               "current": phantom_zip(root, "20261201", True, nodule=True)}
    finally:
        server.stop()


def settled(call, timeout: float = 10.0, pause: float = 0.2) -> dict:
    """The JSON of ``call()`` once it succeeds. The platform answers a write before its
    transaction commits (FastAPI runs the ``db`` dependency's commit after the response), so
    a read right after a write may not see it yet for a moment."""
    end = time.time() + timeout
    while True:
        r = call()
        if r.status_code < 400 or time.time() > end:
            assert r.status_code < 400, r.text
            return r.json()
        time.sleep(pause)


def token_for(client, username: str) -> str:
    # a few tries only: failed logins count towards the login limit
    return settled(lambda: client.post("/api/auth/token", data={"username": username, "password": PASSWORD}),
                   timeout=1.5, pause=0.5)["access_token"]


def wait_done(client, headers, study_id: int, timeout: float = 240.0) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        s = settled(lambda: client.get(f"/api/studies/{study_id}", headers=headers))
        if s["status"] in ("done", "failed"):
            assert s["status"] == "done", s["error"]
            return s
        time.sleep(0.5)
    raise AssertionError(f"study {study_id} was not analysed in {timeout:.0f} s")


@pytest.fixture(scope="module")
def current_study(viewer_site):
    """Uploaded once for the module (the first test watches it finish in the browser)."""
    site = viewer_site
    r = site["client"].post("/api/studies", files={"file": ("current.zip", site["current"], "application/zip")},
                            headers=site["headers"])
    assert r.status_code == 201, r.text
    settled(lambda: site["client"].get(f"/api/studies/{r.json()['id']}", headers=site["headers"]))
    return r.json()["id"]


def open_study(page, url: str, study_id: int) -> None:
    sign_in(page, url, "rad")
    page.goto(f"{url}/studies/{study_id}")


def wait_drawn(page, axis: str, index: int | None = None, timeout: float = 20_000) -> None:
    sel = f'.pane[data-axis="{axis}"] canvas[data-drawn^="{index}:"]' if index is not None else \
        f'.pane[data-axis="{axis}"] canvas[data-drawn]'
    page.wait_for_selector(sel, state="attached", timeout=timeout)


def index_of(page, axis: str) -> int:
    return int(page.get_attribute(f'.pane[data-axis="{axis}"]', "data-index"))


def drawn_state(page, axis: str) -> str:
    return page.get_attribute(f'.pane[data-axis="{axis}"] canvas', "data-drawn")


def wait_state(page, axis: str, predicate, timeout: float = 10.0) -> str:
    end = time.time() + timeout
    while time.time() < end:
        state = drawn_state(page, axis)
        if state and predicate(state):
            return state
        time.sleep(0.05)
    raise AssertionError(f"{axis} canvas state stayed {drawn_state(page, axis)!r}")


def test_desktop_viewer(viewer_site, current_study, desktop):
    site, page = viewer_site, desktop.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    open_study(page, site["server"].url, current_study)
    # the page refreshes by itself: queued/running -> done, then the viewer and the report appear
    page.wait_for_selector('#viewer[data-ready="1"]', state="attached", timeout=240_000)
    assert page.text_content("#status").strip() == "done"
    meta = site["client"].get(f"/api/studies/{current_study}/viewer", headers=site["headers"]).json()
    nz, ny, nx = meta["shape"]
    wait_drawn(page, "axial", meta["key_slice"])        # starts at the key slice
    wait_drawn(page, "coronal")
    assert page.get_attribute("#viewer", "data-layout") == "both"   # side by side on a desktop
    box = page.locator('.pane[data-axis="axial"] canvas').bounding_box()
    assert abs(box["width"] / box["height"] - 1.0) < 0.02            # 320 x 1.1 mm by 320 x 1.1 mm
    cbox = page.locator('.pane[data-axis="coronal"] canvas').bounding_box()
    assert abs(cbox["height"] / cbox["width"] - (nz * 2.5) / (nx * 1.1)) < 0.02   # coronal: z spacing

    # scroll: the mouse wheel (one slice a notch, down = towards the feet), the keys, the slider
    z0 = index_of(page, "axial")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(3):
        page.mouse.wheel(0, 100)
    page.wait_for_selector(f'.pane[data-axis="axial"][data-index="{z0 - 3}"]', state="attached", timeout=5000)
    wait_drawn(page, "axial", z0 - 3)
    page.mouse.wheel(0, -100)
    wait_drawn(page, "axial", z0 - 2)
    page.locator('.pane[data-axis="axial"] canvas').focus()
    page.keyboard.press("ArrowUp")
    wait_drawn(page, "axial", z0 - 1)
    page.keyboard.press("PageDown")
    wait_drawn(page, "axial", z0 - 11)
    page.evaluate("""() => { const s = document.querySelector('.pane[data-axis="axial"] .slice-slider');
                             s.value = String(s.max); s.dispatchEvent(new Event('input')); }""")
    wait_drawn(page, "axial", 0)
    assert page.text_content('.pane[data-axis="axial"] .slice-no').strip() == f"{nz} / {nz}"
    # fast scrolling: every slice of a run of 20 is drawn from the cache or the prefetch quickly
    page.locator('.pane[data-axis="axial"] canvas').focus()
    page.keyboard.press("Home")                    # the top of the stack: the most superior slice
    wait_drawn(page, "axial", nz - 1)
    t0 = time.perf_counter()
    for k in range(1, 21):
        page.keyboard.press("ArrowDown")
        wait_drawn(page, "axial", nz - 1 - k, timeout=5000)
    per_slice = (time.perf_counter() - t0) / 20
    assert per_slice < 0.5, per_slice

    # back to the key slice; overlays change the pixels
    page.evaluate(f"() => window.pulmoViewer.goTo({meta['key_slice']})")
    wait_drawn(page, "axial", meta["key_slice"])
    before = page.evaluate(CANVAS_HASH, "axial")
    page.uncheck('input[data-overlay="lesions"]')
    wait_state(page, "axial", lambda s: "lesions" not in s)
    without = page.evaluate(CANVAS_HASH, "axial")
    assert without != before
    page.check('input[data-overlay="regions"]')
    wait_state(page, "axial", lambda s: "regions" in s)
    assert page.evaluate(CANVAS_HASH, "axial") not in (before, without)
    page.uncheck('input[data-overlay="regions"]')
    page.check('input[data-overlay="lesions"]')
    wait_state(page, "axial", lambda s: s.endswith(":lungs+lesions+nodules"))
    assert page.evaluate(CANVAS_HASH, "axial") == before

    # window presets and dragging window / level on the real HU values
    assert page.get_attribute("#viewer", "data-window") == "-600/1500"
    page.click('button[data-preset="mediastinum"]')
    wait_state(page, "axial", lambda s: ":40:400:" in s)
    assert page.get_attribute('button[data-preset="mediastinum"]', "aria-pressed") == "true"
    assert page.evaluate(CANVAS_HASH, "axial") != before
    z_before = index_of(page, "axial")
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.keyboard.down("Shift")                    # scroll mode: a drag with Shift is window / level
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 80, cy + 40, steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    level, width = (int(v) for v in page.get_attribute("#viewer", "data-window").split("/"))
    assert width > 400 and level > 40 and index_of(page, "axial") == z_before
    page.click('button[data-mode="wl"]')           # W/L mode: a plain drag
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx - 60, cy - 60, steps=5)
    page.mouse.up()
    level2, width2 = (int(v) for v in page.get_attribute("#viewer", "data-window").split("/"))
    assert width2 < width and level2 < level
    page.click('button[data-mode="scroll"]')
    page.mouse.move(cx, cy)                        # scroll mode: a plain drag scrolls
    page.mouse.down()
    page.mouse.move(cx, cy - 60, steps=6)
    page.mouse.up()
    assert index_of(page, "axial") < z_before
    page.click('button[data-preset="lung"]')

    # the nodule list: "go to slice" moves both views to it
    nodule = meta["nodules"][0]
    page.click("#viewer-nodules button")
    wait_drawn(page, "axial", nodule["centre_index_zyx"][0])
    wait_drawn(page, "coronal", nodule["centre_index_zyx"][1])
    # the HU under the mouse
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 5)
    assert "HU" in page.text_content('.pane[data-axis="axial"] .probe')

    # the report panel: findings, key images, the comparison with the earlier study, the statement
    page.wait_for_selector("table.findings-table", timeout=10_000)
    assert page.locator("table.findings-table tbody tr").count() >= 9
    page.wait_for_selector('#comparison[data-status="done"] table.comparison-table', timeout=60_000)
    assert "progression" in page.text_content("#comparison")
    assert page.locator("#key-body img").count() == 2
    end = time.time() + 15
    while not page.evaluate("() => [...document.querySelectorAll('#key-body img')].every(i => i.complete && i.naturalWidth > 0)"):
        assert time.time() < end, "the key images did not load"
        time.sleep(0.1)
    assert "Research tool, not a certified medical device" in page.text_content("#findings")
    assert page.locator("section#consultation").count() == 1
    page.evaluate(f"() => window.pulmoViewer.goTo({meta['key_slice']})")
    wait_drawn(page, "axial", meta["key_slice"])
    SCREENS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENS / "study-desktop.png"))
    page.screenshot(path=str(SCREENS / "study-desktop-full.png"), full_page=True)
    assert errors == []


def touch(cdp, kind: str, points) -> None:
    cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
        {"x": x, "y": y, "id": i, "radiusX": 2, "radiusY": 2, "force": 1} for i, (x, y) in enumerate(points)]})


def test_phone_viewer(viewer_site, current_study, phone):
    site, page = viewer_site, phone.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    wait_done(site["client"], site["headers"], current_study)
    open_study(page, site["server"].url, current_study)
    page.wait_for_selector('#viewer[data-ready="1"]', state="attached", timeout=30_000)
    meta = site["client"].get(f"/api/studies/{current_study}/viewer", headers=site["headers"]).json()
    wait_drawn(page, "axial", meta["key_slice"])
    assert page.get_attribute("#viewer", "data-layout") == "axial"     # one view at a time on a phone
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390   # nothing wider than the screen
    canvas = page.locator('.pane[data-axis="axial"] canvas')
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box["width"] >= 340 and box["x"] >= 0 and box["x"] + box["width"] <= 390
    cdp = page.context.new_cdp_session(page)
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.7
    z0 = index_of(page, "axial")

    # a swipe up scrolls down the stack (towards the feet), a swipe down back up; the page stays put
    scroll_y = page.evaluate("() => window.scrollY")
    touch(cdp, "touchStart", [(x, y)])
    for k in range(1, 9):
        touch(cdp, "touchMove", [(x, y - 10 * k)])
    touch(cdp, "touchEnd", [])
    z1 = index_of(page, "axial")
    assert z1 < z0
    wait_drawn(page, "axial", z1)
    assert page.evaluate("() => window.scrollY") == scroll_y
    touch(cdp, "touchStart", [(x, y - 80)])
    for k in range(1, 5):
        touch(cdp, "touchMove", [(x, y - 80 + 10 * k)])
    touch(cdp, "touchEnd", [])
    assert z1 < index_of(page, "axial") <= z0

    # two fingers change window and level
    window0 = page.get_attribute("#viewer", "data-window")
    a, b = (x - 60, y - 40), (x + 60, y - 40)
    touch(cdp, "touchStart", [a, b])
    for k in range(1, 7):
        touch(cdp, "touchMove", [(a[0] + 10 * k, a[1] + 5 * k), (b[0] + 10 * k, b[1] + 5 * k)])
    touch(cdp, "touchEnd", [])
    level, width = (int(v) for v in page.get_attribute("#viewer", "data-window").split("/"))
    assert page.get_attribute("#viewer", "data-window") != window0 and width > 1500 and level > -600
    time.sleep(0.6)   # Chromium takes a tap right after a two-finger gesture as part of it; a person pauses

    # tap a preset, toggle an overlay: the canvas changes
    page.tap('button[data-preset="lung"]')
    wait_state(page, "axial", lambda s: ":-600:1500:" in s)
    page.evaluate(f"() => window.pulmoViewer.goTo({meta['key_slice']})")
    wait_drawn(page, "axial", meta["key_slice"])
    before = page.evaluate(CANVAS_HASH, "axial")
    page.tap('input[data-overlay="lesions"]')
    wait_state(page, "axial", lambda s: "lesions" not in s)
    assert page.evaluate(CANVAS_HASH, "axial") != before
    page.tap('input[data-overlay="lesions"]')
    wait_state(page, "axial", lambda s: "lesions" in s)

    # the coronal view instead of the axial one
    page.tap('button[data-layout="coronal"]')
    wait_drawn(page, "coronal")
    assert page.locator('.pane[data-axis="axial"]').is_hidden()
    cbox = page.locator('.pane[data-axis="coronal"] canvas').bounding_box()
    assert cbox["width"] <= 390 and abs(cbox["height"] / cbox["width"] - (96 * 2.5) / (320 * 1.1)) < 0.03
    page.tap('button[data-layout="axial"]')
    wait_drawn(page, "axial")
    page.locator("#viewer-card").scroll_into_view_if_needed()
    SCREENS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENS / "study-phone.png"))
    page.screenshot(path=str(SCREENS / "study-phone-full.png"), full_page=True)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    assert errors == []


def test_page_in_chinese(viewer_site, current_study, desktop):
    """The page and the script's text in Simplified Chinese when the user chose it."""
    site, page = viewer_site, desktop.new_page()
    wait_done(site["client"], site["headers"], current_study)
    open_study(page, site["server"].url, current_study)
    page.wait_for_selector('#viewer[data-ready="1"]', state="attached", timeout=30_000)
    page.select_option("#language", "zh-CN")     # the page is loaded again in Chinese
    page.wait_for_selector('html[lang="zh-CN"] #viewer[data-ready="1"]', state="attached", timeout=30_000)
    page.wait_for_selector("table.findings-table")
    assert "肺窗" in page.text_content('button[data-preset="lung"]')
    text = page.text_content("#findings")
    assert "右肺" in text and "严重程度" in text and "科研工具" in text
    SCREENS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENS / "study-desktop-zh.png"))
    page.select_option("#language", "en")          # remembered on the user: back to English for the others
    page.wait_for_selector('html[lang="en"] #viewer[data-ready="1"]', state="attached", timeout=30_000)


def test_clinical_form_and_report_panel(viewer_site, current_study, desktop):
    """The clinical data form calls the triage API and shows the result; the report panel works
    against the report API's contract (served here by the browser's request routing, so that
    the panel is checked whether or not the report module is installed) and says that Pulmo is a
    research tool."""
    site, page = viewer_site, desktop.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    wait_done(site["client"], site["headers"], current_study)
    report = {"impression": "", "status": "draft", "signed_by": None, "signed_at": None, "can_edit": True,
              "can_sign": True}
    calls = []

    def fake_report(route, request):
        path = request.url.split("/report", 1)[1]
        calls.append((request.method, path, request.headers.get("x-csrf-token", "")))
        if request.method == "PUT" and path == "":
            if report["status"] == "signed":
                return route.fulfill(status=409, json={"detail": "the report is signed; amend it first"})
            report["impression"] = json.loads(request.post_data)["impression"]
        elif path == "/sign":
            report.update(status="signed", signed_by="rad", signed_at="2026-12-02T10:00:00Z", can_edit=False)
        elif path == "/amend":
            report.update(status="draft", signed_by=None, signed_at=None, can_edit=True)
        route.fulfill(json=report)
    page.route(re.compile(rf".*/api/studies/{current_study}/report(/sign|/amend)?$"), fake_report)
    open_study(page, site["server"].url, current_study)
    page.wait_for_selector('#report-body[data-state="draft"] textarea#impression', timeout=30_000)
    assert page.get_attribute("#report-pdf", "href") == f"/api/studies/{current_study}/report.pdf"
    assert "Research tool, not a certified medical device" in page.text_content("#report")
    page.fill("#impression", "Bilateral ground-glass opacities <b>not bold</b>.")
    page.click("#report-save")
    page.wait_for_selector("#report-msg.ok")
    assert report["impression"] == "Bilateral ground-glass opacities <b>not bold</b>."
    page.click("#report-sign")
    page.wait_for_selector('#report-body[data-state="signed"]')
    assert page.get_attribute("#impression", "readonly") is not None
    assert page.locator("#report-save").count() == 0 and "rad" in page.text_content("#report-body")
    page.click("#report-amend")
    page.wait_for_selector('#report-body[data-state="draft"]')
    assert [c[:2] for c in calls if c[0] != "GET"] == [("PUT", ""), ("POST", "/sign"), ("POST", "/amend")]
    assert all(c[2] for c in calls if c[0] != "GET")                     # the session's CSRF token is sent

    # clinical data: the form saves through PUT /api/studies/{id}/clinical and shows the result
    if not page.locator("#clinical-form").is_visible():
        page.click("#clinical summary")
    page.fill('#clinical-form input[name="age"]', "300")
    page.click("#clinical-form button[type=submit]")
    page.wait_for_selector("#clinical-msg.error")
    assert page.get_attribute('#clinical-form input[name="age"]', "aria-invalid") == "true"
    values = {"age": "71", "comorbidities": "2", "nlr": "8.5", "ldh": "420", "direct_bilirubin": "6",
              "creatine_kinase": "150"}
    for name, value in values.items():
        page.fill(f'#clinical-form input[name="{name}"]', value)
    for name in ("xray_abnormality", "dyspnea"):
        page.select_option(f'#clinical-form select[name="{name}"]', "1")
    for name in ("malignancy", "copd"):
        page.select_option(f'#clinical-form select[name="{name}"]', "0")
    page.click("#clinical-form button[type=submit]")
    page.wait_for_selector("#clinical-msg.ok")
    assert "Classic scores" in page.text_content("#triage-body")
    end = time.time() + 10
    while True:
        stored = site["client"].get(f"/api/studies/{current_study}", headers=site["headers"]).json()["clinical"]
        if (stored and stored["features"].get("age") == 71) or time.time() > end:
            break
        time.sleep(0.2)
    assert stored["features"]["age"] == 71 and stored["features"]["dyspnea"] == 1
    assert errors == []
