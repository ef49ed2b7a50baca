"""What clinicians, patients and administrators do, in a real browser (Debian's Chromium through
Playwright) against a live ``pulmo serve``: sign in; upload a study on the upload page and watch
the worklist update by itself when the analysis finishes; read, edit and sign the report; share
the study with a colleague of another hospital who answers in the comment thread; make a share
link with a PIN and open it logged out on a phone (wrong PIN, right PIN, viewer, signed report),
then after it was revoked and after it expired; switch the language (remembered); verify the
audit chain and create a user on the admin page. Screenshots go to /tmp/screens/."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from web_kit import PASSWORD, demo_zip_bytes, sign_in, start_server

pytestmark = pytest.mark.slow
SCREENS = Path("/tmp/screens")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    httpx = pytest.importorskip("httpx")
    root = tmp_path_factory.mktemp("flows")
    server = start_server(root / "data", "--workers", "1")
    try:
        client = httpx.Client(base_url=server.url, timeout=60)
        admin = {"Authorization": "Bearer " + client.post("/api/auth/token", data={
            "username": "admin", "password": PASSWORD}).json()["access_token"]}
        org = client.get("/api/me", headers=admin).json()["organisation"]
        for name, role, organisation in (("rad", "radiologist", org), ("rad_b", "radiologist", "Hospital B")):
            r = client.post("/api/users", json={"username": name, "password": PASSWORD, "role": role,
                                                "organisation": organisation}, headers=admin)
            assert r.status_code == 201, r.text
        zip_path = root / "chest-ct.zip"
        zip_path.write_bytes(demo_zip_bytes(root, seed=3))
        yield {"server": server, "url": server.url, "client": client, "root": root, "zip": zip_path}
    finally:
        server.stop()


def shot(page, name: str) -> None:
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)


def until(condition, timeout: float = 15.0) -> None:
    """Poll the page from here (the pages' CSP forbids evaluated strings)."""
    end = time.time() + timeout
    while not condition():
        if time.time() > end:
            raise AssertionError("the page did not get there in time")
        time.sleep(0.1)


def expire_link(data_dir: Path, link_id: int) -> None:
    """Move a link's expiry into the past, in the live server's database."""
    from sqlalchemy import create_engine, update

    from pulmo.web.models import ShareLink

    engine = create_engine(f"sqlite:///{data_dir / 'pulmo.db'}")
    with engine.begin() as conn:
        conn.execute(update(ShareLink).where(ShareLink.id == link_id).values(
            expires_at=dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=5)))
    engine.dispose()


def test_clinician_flows(site, browser):
    url = site["url"]
    ctx = browser.new_context(viewport={"width": 1366, "height": 900})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: d.accept())   # "Revoke this link?" and the like: yes

    # sign in, upload on the upload page
    sign_in(page, url, "rad")
    page.click("nav.menu a[href='/upload']")
    page.set_input_files("#files", str(site["zip"]))
    assert "1 files" in page.text_content("#chosen")
    page.click("#upload-button")
    page.wait_for_selector("#upload-studies a", timeout=60_000)
    assert "96 images stored" in page.text_content("#upload-result")
    study_href = page.get_attribute("#upload-studies a", "href")
    sid = int(study_href.rsplit("/", 1)[1])

    # the worklist updates by itself when the analysis finishes
    page.click("nav.menu a[href='/']")
    row = page.locator(f"#worklist a[href='/studies/{sid}']")
    row.wait_for(timeout=20_000)
    page.wait_for_selector("#worklist .tag.status-done", timeout=240_000)
    assert page.locator("#worklist .tag.flag-positive").count() == 1
    shot(page, "flow-worklist-done")

    # the report: edit, sign
    page.click(f"#worklist a[href='/studies/{sid}']")
    page.wait_for_selector("#viewer[data-ready='1']", timeout=60_000)
    page.wait_for_selector('#report-body[data-state="draft"] textarea#impression', timeout=30_000)
    page.fill("#impression", "Bilateral peripheral ground-glass opacities, COVID-19 pattern likely.")
    page.click("#report-sign")
    page.wait_for_selector('#report-body[data-state="signed"]', timeout=30_000)
    assert "rad" in page.text_content("#report-body")

    # consultation: share with a radiologist of another hospital
    page.fill("#share-user", "rad_b")
    page.click("#share-form button[type=submit]")
    page.wait_for_selector("#participants li", timeout=15_000)
    assert "Hospital B" in page.text_content("#participants")
    page.fill("#comment-body", "Second opinion please: <b>COVID-19</b> or organising pneumonia?")
    page.click("#comment-form button[type=submit]")
    page.wait_for_selector("#comments li.comment", timeout=15_000)

    # a share link with a PIN
    page.select_option("#link-hours", "24")
    page.fill("#link-pin", "4821")
    page.click("#link-form button[type=submit]")
    page.wait_for_selector("#link-url", timeout=15_000)
    share_url = page.input_value("#link-url")
    assert "/s/" in share_url
    shot(page, "flow-study-shared")

    # the colleague of the other hospital finds it in their worklist and answers
    other = browser.new_context(viewport={"width": 1366, "height": 900})
    op = other.new_page()
    sign_in(op, url, "rad_b")
    op.wait_for_selector(f"#worklist a[href='/studies/{sid}']", timeout=20_000)
    op.click(f"#worklist a[href='/studies/{sid}']")
    op.wait_for_selector("#comments li.comment", timeout=20_000)
    assert op.locator("#comments b").count() == 0            # the comment is text, not markup
    assert "<b>COVID-19</b>" in op.text_content("#comments")
    op.click("#comments li.comment button.link")              # reply
    op.fill("#comment-body", "Typical COVID-19 pattern; follow-up CT in 7-10 days.")
    op.click("#comment-form button[type=submit]")
    op.wait_for_selector("#comments li.comment ul.thread li.comment", timeout=15_000)
    assert op.locator("#share-form").count() == 0             # a consultant does not pass the study on
    other.close()
    page.reload()
    page.wait_for_selector("#comments li.comment ul.thread li.comment", timeout=15_000)
    assert "follow-up CT" in page.text_content("#comments")

    # the patient opens the link logged out, on a phone
    patient = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pp = patient.new_page()
    pp.on("pageerror", lambda e: errors.append(str(e)))
    pp.goto(share_url)
    pp.fill("input[name=pin]", "0000")
    pp.click("#share-pin button[type=submit]")
    pp.wait_for_selector("#share-pin .error")
    assert "Wrong PIN" in pp.text_content("#share-pin")
    pp.fill("input[name=pin]", "4821")
    pp.click("#share-pin button[type=submit]")
    pp.wait_for_selector("#viewer[data-ready='1']", timeout=60_000)
    assert "COVID-19 pattern likely" in pp.text_content("#report-body")
    assert pp.locator("#report-pdf").count() == 1
    assert pp.locator("#triage").count() == 0 and pp.locator("#consultation").count() == 0
    assert pp.locator("nav.menu").count() == 0
    before = pp.get_attribute('.pane[data-axis="axial"]', "data-index")
    pp.focus('.pane[data-axis="axial"] canvas')
    pp.keyboard.press("ArrowUp")
    until(lambda: pp.get_attribute('.pane[data-axis="axial"]', "data-index") != before)
    shot(pp, "flow-share-phone")

    # revoke it on the study page: the patient's next visit is refused
    page.wait_for_selector("#links-table button.link")
    page.click("#links-table button.link")
    page.wait_for_selector("#links-table .tag.link-revoked", timeout=15_000)
    pp.reload()
    assert "expired or was revoked" in pp.text_content("main")
    patient.close()

    # an expired link
    r = site["client"].post(f"/api/studies/{sid}/share-links", json={"expires_in_hours": 1}, headers={
        "Authorization": "Bearer " + site["client"].post("/api/auth/token", data={
            "username": "rad", "password": PASSWORD}).json()["access_token"]})
    assert r.status_code == 201, r.text
    expire_link(site["server"].data_dir, r.json()["id"])
    visitor = browser.new_context(viewport={"width": 390, "height": 844})
    vp = visitor.new_page()
    resp = vp.goto(r.json()["url"])
    assert resp.status == 410 and "expired or was revoked" in vp.text_content("main")
    visitor.close()

    # language: switch to Chinese, remembered on the next page and after signing in again
    page.select_option("#language", "zh-CN")
    page.wait_for_selector("html[lang='zh-CN']")
    assert "远程会诊" in page.text_content("#consultation")
    page.goto(url + "/")
    assert "工作列表" in page.text_content("header")
    page.click("header form[action='/logout'] button")
    sign_in(page, url, "rad")
    assert page.get_attribute("html", "lang") == "zh-CN"
    page.select_option("#language", "en")
    page.wait_for_selector("html[lang='en']")
    assert errors == []
    ctx.close()


def test_admin_page(site, browser):
    ctx = browser.new_context(viewport={"width": 1366, "height": 900})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: d.accept())
    sign_in(page, site["url"], "admin")
    page.click("nav.menu a[href='/admin']")
    page.wait_for_selector("#health[data-ok]", timeout=20_000)
    assert page.locator("#health-list li.check").count() >= 3
    page.wait_for_selector("#users-table tr[data-user='rad']")
    page.click("#audit-verify")
    page.wait_for_selector("#verify-msg.ok", timeout=20_000)
    assert "intact" in page.text_content("#verify-msg")
    page.fill("#user-form input[name=username]", "new.doctor")
    page.fill("#user-form input[name=password]", "new.doctor")   # long enough for the form, refused by the server
    page.fill("#user-form input[name=organisation]", "Hospital C")
    page.click("#user-form button[type=submit]")
    page.wait_for_selector("#user-msg.error")
    assert "user name" in page.text_content("#user-msg")
    page.fill("#user-form input[name=password]", "a long enough password")
    page.click("#user-form button[type=submit]")
    page.wait_for_selector("#users-table tr[data-user='new.doctor']", timeout=15_000)
    page.fill("#audit-form input[name=action]", "user.create")
    page.click("#audit-form button[type=submit]")
    until(lambda: "new.doctor" in page.text_content("#audit-table tbody"))
    # a PACS as a DICOM node of the hospital: a bad AE title is refused with a message, a good one listed
    page.fill("#node-form input[name=organisation]", "Hospital B")
    page.fill("#node-form input[name=ae_title]", "BAD\\TITLE")
    page.fill("#node-form input[name=host]", "127.0.0.1")
    page.fill("#node-form input[name=port]", "4242")
    page.click("#node-form button[type=submit]")
    page.wait_for_selector("#node-msg.error")
    page.fill("#node-form input[name=ae_title]", "ORTHANC")
    page.click("#node-form button[type=submit]")
    page.wait_for_selector("#nodes-table tr[data-node='ORTHANC']", timeout=15_000)
    assert "127.0.0.1:4242" in page.text_content("#nodes-table")
    assert page.locator("#model-info[data-installed='false']").count() == 1
    assert "cojocchen/covid19_critically_ill" in page.text_content("#model")
    shot(page, "flow-admin")
    assert errors == []
    ctx.close()
