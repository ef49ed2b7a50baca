"""Hostile and careless input against the platform's routes, from the review of the share-link,
consultation, audit and administration features: huge ids, undecodable text, echoed input,
races (PIN guesses, double clicks), Unicode lookalikes, weak passwords, and the limits of an
administrator of one hospital."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from web_kit import PASSWORD, analyse_all, upload

from pulmo.web.db import transaction
from pulmo.web.models import AuditEntry, LoginAttempt, Organisation

BIG = 2**63


def study_of(platform, demo_zip, analyse=False) -> int:
    r = upload(platform, demo_zip, "rad")
    assert r.status_code == 201, r.text
    if analyse:
        analyse_all(platform)
    return r.json()["id"]


def test_huge_ids_and_unicode_digits_are_404_not_500(platform, demo_zip):
    c, h = platform.client, platform.headers
    sid = study_of(platform, demo_zip)
    for path in (f"/api/studies/{BIG}", f"/api/studies/{BIG}/comments", f"/api/studies/{BIG}/share-links",
                 f"/api/studies/{BIG}/report", f"/api/studies/{BIG}/viewer", f"/api/studies/{BIG * 10}/status"):
        assert c.get(path, headers=h("rad")).status_code == 404, path
    assert c.get(f"/studies/{BIG}", headers=h("rad")).status_code == 404
    assert c.patch(f"/api/users/{BIG}", json={"active": False}, headers=h("admin")).status_code == 404
    assert c.delete(f"/api/studies/{sid}/shares/{BIG}", headers=h("rad")).status_code == 404
    assert c.delete(f"/api/dicom-nodes/{BIG}", headers=h("admin")).status_code == 404
    r = c.post(f"/api/studies/{sid}/comments", json={"body": "x", "parent_id": BIG}, headers=h("rad"))
    assert r.status_code == 422
    link = c.post(f"/api/studies/{sid}/share-links", json={}, headers=h("rad")).json()
    for lookalike in ("²", "１", "١"):   # not ASCII digits: not a link's number
        assert c.delete(f"/api/studies/{sid}/share-links/{lookalike}", headers=h("rad")).status_code == 404
    assert c.get(f"/api/studies/{sid}/share-links", headers=h("rad")).json()[0]["state"] == "active"
    assert link["id"]


def test_undecodable_and_huge_text_is_a_short_422(sqlite_platform, demo_zip):
    c, h = sqlite_platform.client, sqlite_platform.headers
    sid = study_of(sqlite_platform, demo_zip)
    raw = '{"body": "\\ud800 lone surrogate"}'
    for url, method in ((f"/api/studies/{sid}/comments", "POST"), (f"/api/studies/{sid}/report", "PUT")):
        body = raw if method == "POST" else raw.replace("body", "impression")
        r = c.request(method, url, content=body, headers={**h("rad"), "Content-Type": "application/json"})
        assert r.status_code == 422, r.text
    r = c.post("/api/users", content='{"username": "u1", "password": "x\\ud800yyyyyyyyyyy", "role": "clinician", '
                                     '"organisation": "Hospital A"}',
               headers={**h("admin"), "Content-Type": "application/json"})
    assert r.status_code == 422
    huge = c.post(f"/api/studies/{sid}/comments", json={"body": "a" * 3_000_000}, headers=h("rad"))
    assert huge.status_code == 422 and len(huge.content) < 2000       # the input is not echoed back
    secret = c.post("/api/users", json={"username": "u2", "password": "p" * 2000, "role": "clinician",
                                        "organisation": "Hospital A"}, headers=h("admin"))
    assert secret.status_code == 422 and "ppppp" not in secret.text


def test_pin_guesses_in_parallel_are_counted(sqlite_platform, demo_zip):
    c, h = sqlite_platform.client, sqlite_platform.headers
    sid = study_of(sqlite_platform, demo_zip)
    link = c.post(f"/api/studies/{sid}/share-links", json={"pin": "4821"}, headers=h("rad")).json()

    def guess(pin):
        with TestClient(sqlite_platform.app) as visitor:
            return visitor.post(f"/api/share/{link['token']}/pin", json={"pin": str(pin)}).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(guess, range(1000, 1024)))
    assert codes.count(401) == 5 and codes.count(429) == 19, codes
    with transaction(sqlite_platform.app.state.sessions) as s:
        checked = s.execute(select(func.count(LoginAttempt.id)).where(
            LoginAttempt.username == f"share-link:{link['id']}")).scalar()
    assert checked == 5


def test_double_click_on_share_makes_one_share(platform, demo_zip):
    c, h = platform.client, platform.headers
    sid = study_of(platform, demo_zip)

    def share(_):
        with TestClient(platform.app) as client:
            return client.post(f"/api/studies/{sid}/shares", json={"username": "RAD_B"}, headers=h("rad")).status_code

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(share, range(4)))
    assert codes == [201] * 4                                  # user names match whatever their case
    assert len(c.get(f"/api/studies/{sid}/shares", headers=h("rad")).json()) == 1


def test_organisation_names_and_passwords(sqlite_platform):
    c, h = sqlite_platform.client, sqlite_platform.headers

    def new_user(name, org, password="a sound password 9"):
        return c.post("/api/users", json={"username": name, "password": password, "role": "clinician",
                                          "organisation": org}, headers=h("admin"))

    assert new_user("lower", "hospital a").json()["organisation"] == "Hospital A"     # letter case aside
    assert new_user("nbsp", "Hospital\u00a0A ").json()["organisation"] == "Hospital A"  # NFKC, spaces
    for bad in ("\u0000", "Evil\u202eA", "Bell\u0007", "   "):
        assert new_user("bad" + str(len(bad)), bad).status_code == 400, repr(bad)
    with transaction(sqlite_platform.app.state.sessions) as s:
        assert s.execute(select(func.count(Organisation.id))).scalar() == 3   # Pulmo, Hospital A, Hospital B
    assert new_user("spaces", "Hospital A", " " * 12).status_code == 400
    assert new_user("nul", "Hospital A", "Password\u0000-long-1").status_code == 400
    assert new_user("same", "Hospital A", "aaaaaaaaaaaa").status_code == 400


def test_an_administrator_of_one_hospital_manages_that_hospital_only(sqlite_platform):
    c, h = sqlite_platform.client, sqlite_platform.headers
    assert c.post("/api/users", json={"username": "adm_b", "password": PASSWORD, "role": "admin",
                                      "organisation": "Hospital B"}, headers=h("admin")).status_code == 201
    tok = c.post("/api/auth/token", data={"username": "adm_b", "password": PASSWORD}).json()["access_token"]
    hb = {"Authorization": "Bearer " + tok}
    users = {u["username"]: u for u in c.get("/api/users", headers=h("admin")).json()}
    listed = {u["username"] for u in c.get("/api/users", headers=hb).json()}
    assert listed == {"adm_b", "rad_b", "clin_b"}
    # another hospital's users and the platform's admin are out of reach
    for name in ("rad", "admin"):
        assert c.patch(f"/api/users/{users[name]['id']}", json={"password": "taken over 12345"},
                       headers=hb).status_code == 404
    assert c.post("/api/auth/token", data={"username": "rad", "password": PASSWORD}).status_code == 200
    r = c.post("/api/users", json={"username": "mole", "password": PASSWORD, "role": "radiologist",
                                   "organisation": "Hospital A"}, headers=hb)
    assert r.status_code == 403
    assert c.post("/api/users", json={"username": "new_b", "password": PASSWORD, "role": "clinician",
                                      "organisation": "hospital b"}, headers=hb).status_code == 201
    assert c.patch(f"/api/users/{users['clin_b']['id']}", json={"active": False}, headers=hb).status_code == 200
    # the audit log: that hospital's entries only; the platform's admin sees all
    mine = c.get("/api/audit", params={"limit": 1000}, headers=hb).json()["entries"]
    with transaction(sqlite_platform.app.state.sessions) as s:
        b = s.execute(select(Organisation.id).where(Organisation.name == "Hospital B")).scalar()
    assert mine and all(e["organisation_id"] == b for e in mine)
    everything = c.get("/api/audit", params={"limit": 1000}, headers=h("admin")).json()["entries"]
    assert len({e["organisation_id"] for e in everything}) > 1
    # DICOM nodes of their own hospital only; the triage model is the platform's
    node = {"organisation": "Hospital A", "ae_title": "CT_A", "host": "127.0.0.1", "port": 104, "role": "source"}
    assert c.post("/api/dicom-nodes", json=node, headers=hb).status_code == 403
    assert c.post("/api/dicom-nodes", json={**node, "organisation": "Hospital B", "ae_title": "CT_B"},
                  headers=hb).status_code == 201
    assert c.post("/api/dicom-nodes", json=node, headers=h("admin")).status_code == 201
    assert [n["ae_title"] for n in c.get("/api/dicom-nodes", headers=hb).json()] == ["CT_B"]
    assert len(c.get("/api/dicom-nodes", headers=h("admin")).json()) == 2
    assert c.post("/api/admin/triage-model", files={"file": ("m.zip", b"x")}, headers=hb).status_code == 403


def test_audit_dates_out_of_range(sqlite_platform):
    c, h = sqlite_platform.client, sqlite_platform.headers
    for since in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        assert c.get("/api/audit", params={"since": since}, headers=h("admin")).status_code == 422


def test_share_link_api_is_audited_and_trimmed(sqlite_platform, demo_zip):
    c, h = sqlite_platform.client, sqlite_platform.headers
    sid = study_of(sqlite_platform, demo_zip, analyse=True)
    c.put(f"/api/studies/{sid}/clinical", json={"age": 80, "dyspnea": 1}, headers=h("rad"))
    link = c.post(f"/api/studies/{sid}/share-links", json={}, headers=h("rad")).json()
    with TestClient(sqlite_platform.app) as visitor:
        summary = visitor.get(f"/api/share/{link['token']}").json()
    for hidden in ("organisation_id", "triage_risk", "triage_prob30", "priority", "received_at"):
        assert hidden not in summary, hidden
    assert "id" not in summary["patient"] and summary["clinical"] is None
    with transaction(sqlite_platform.app.state.sessions) as s:
        details = list(s.execute(select(AuditEntry.detail).where(AuditEntry.action == "study.view",
                                                                 AuditEntry.target_id == str(sid))).scalars())
    assert any(json.loads(d).get("via") == "share link API" for d in details)


def test_signed_in_visitor_of_a_share_link_can_switch_language(sqlite_platform, demo_zip):
    c, h = sqlite_platform.client, sqlite_platform.headers
    sid = study_of(sqlite_platform, demo_zip, analyse=True)
    link = c.post(f"/api/studies/{sid}/share-links", json={}, headers=h("rad")).json()
    with TestClient(sqlite_platform.app) as browser:
        page = browser.get("/login")
        csrf = browser.cookies.get("pulmo_login_csrf")
        browser.post("/login", data={"username": "rad", "password": PASSWORD, "login_csrf": csrf, "next": "/"})
        shared = browser.get(f"/s/{link['token']}").text
        token = shared.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        assert token and page.status_code == 200
        r = browser.post("/language", data={"language": "zh-CN", "next": f"/s/{link['token']}", "csrf": token},
                         follow_redirects=False)
        assert r.status_code == 303
        assert 'lang="zh-CN"' in browser.get(f"/s/{link['token']}").text
