"""Administration: the audit log API (search, chain verification that catches a changed, removed
or inserted entry), user management (deactivate ends sessions and tokens, roles, passwords,
no self-lockout), the triage model import (refuses what is not a model, keeps the installed one),
the admin and upload pages, and a Chinese translation for every text of every page."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import delete, select, update
from web_kit import PASSWORD, analyse_all, upload

from pulmo.web.db import transaction
from pulmo.web.models import AuditEntry


def test_audit_api_and_chain(platform, demo_zip):
    c, h = platform.client, platform.headers
    r = upload(platform, demo_zip, "rad")
    sid = r.json()["id"]
    assert c.get(f"/api/studies/{sid}", headers=h("rad")).status_code == 200

    for who in (None, "rad", "clin", "rad_b"):
        assert c.get("/api/audit", headers=h(who)).status_code == (401 if who is None else 403)
        assert c.get("/api/audit/verify", headers=h(who)).status_code == (401 if who is None else 403)
    page = c.get("/api/audit", params={"target": str(sid)}, headers=h("admin")).json()
    acts = [e["action"] for e in page["entries"]]
    assert "study.upload" in acts and "study.view" in acts
    assert all(e["target_id"] == str(sid) for e in page["entries"])
    by_rad = c.get("/api/audit", params={"user": "rad", "action": "study.view"}, headers=h("admin")).json()["entries"]
    assert by_rad and all(e["username"] == "rad" and e["action"] == "study.view" for e in by_rad)
    assert c.get("/api/audit", params={"since": "2999-01-01T00:00:00Z"}, headers=h("admin")).json()["entries"] == []
    assert c.get("/api/audit", params={"since": "yesterday"}, headers=h("admin")).status_code == 422
    assert c.get("/api/audit", params={"limit": 0}, headers=h("admin")).status_code == 422
    hostile = c.get("/api/audit", params={"user": "' OR 1=1 --"}, headers=h("admin"))
    assert hostile.status_code == 200 and hostile.json()["entries"] == []
    two = c.get("/api/audit", params={"limit": 2}, headers=h("admin")).json()["entries"]
    assert len(two) == 2 and two[0]["id"] > two[1]["id"]          # newest first

    ok = c.get("/api/audit/verify", headers=h("admin")).json()
    assert ok["ok"] and ok["entries"] > 5 and ok["first_bad_id"] is None
    # tamper: change one entry's content -> named
    with transaction(platform.app.state.sessions) as s:
        victim = s.execute(select(AuditEntry.id).where(AuditEntry.action == "study.upload")).scalars().first()
        s.execute(update(AuditEntry).where(AuditEntry.id == victim).values(username="mallory"))
    bad = c.get("/api/audit/verify", headers=h("admin")).json()
    assert not bad["ok"] and bad["first_bad_id"] == victim and "changed" in bad["reason"]
    with transaction(platform.app.state.sessions) as s:
        s.execute(update(AuditEntry).where(AuditEntry.id == victim).values(username="rad"))
    assert c.get("/api/audit/verify", headers=h("admin")).json()["ok"]
    # remove one entry -> the next one is named
    with transaction(platform.app.state.sessions) as s:
        s.execute(delete(AuditEntry).where(AuditEntry.id == victim))
    bad = c.get("/api/audit/verify", headers=h("admin")).json()
    assert not bad["ok"] and bad["first_bad_id"] > victim and "removed" in bad["reason"]
    # searching and verifying are audited themselves
    acts = [e["action"] for e in c.get("/api/audit", params={"user": "admin"}, headers=h("admin")).json()["entries"]]
    assert "audit.search" in acts and "audit.verify" in acts


def test_user_management(platform):
    c, h = platform.client, platform.headers
    users = {u["username"]: u for u in c.get("/api/users", headers=h("admin")).json()}
    clin = users["clin"]["id"]
    for who in ("rad", "clin"):
        assert c.patch(f"/api/users/{clin}", json={"active": False}, headers=h(who)).status_code == 403
    assert c.patch(f"/api/users/{clin}", json={"active": False}).status_code == 401
    assert c.get("/api/me", headers=h("clin")).status_code == 200

    # deactivating ends the user's tokens at once and refuses new logins
    r = c.patch(f"/api/users/{clin}", json={"active": False}, headers=h("admin"))
    assert r.status_code == 200 and r.json()["active"] is False
    assert c.get("/api/me", headers=h("clin")).status_code == 401
    assert c.post("/api/auth/token", data={"username": "clin", "password": PASSWORD}).status_code in (401, 403)
    assert c.patch(f"/api/users/{clin}", json={"active": True}, headers=h("admin")).json()["active"]
    token = c.post("/api/auth/token", data={"username": "clin", "password": PASSWORD}).json()["access_token"]
    me = {"Authorization": "Bearer " + token}
    assert c.get("/api/me", headers=me).status_code == 200
    # role and password
    assert c.patch(f"/api/users/{clin}", json={"role": "surgeon"}, headers=h("admin")).status_code == 400
    assert c.patch(f"/api/users/{clin}", json={"role": "radiologist"}, headers=h("admin")).json()["role"] == "radiologist"
    assert c.patch(f"/api/users/{clin}", json={"password": "short"}, headers=h("admin")).status_code == 400
    assert c.patch(f"/api/users/{clin}", json={"password": "a new long password"}, headers=h("admin")).status_code == 200
    assert c.get("/api/me", headers=me).status_code == 401       # a new password ends the old tokens
    assert c.post("/api/auth/token", data={"username": "clin", "password": "a new long password"}).status_code == 200
    # no self-lockout; unknown user
    admin_id = users["admin"]["id"]
    assert c.patch(f"/api/users/{admin_id}", json={"active": False}, headers=h("admin")).status_code == 409
    assert c.patch(f"/api/users/{admin_id}", json={"role": "clinician"}, headers=h("admin")).status_code == 409
    assert c.patch("/api/users/999999", json={"active": False}, headers=h("admin")).status_code == 404
    acts = [e["action"] for e in c.get("/api/audit", params={"action": "user.update"}, headers=h("admin")).json()["entries"]]
    assert len(acts) == 4   # deactivate, reactivate, role, password


def test_triage_model_import_refuses_junk(sqlite_platform, tmp_path):
    c, h = sqlite_platform.client, sqlite_platform.headers
    url = "/api/admin/triage-model"
    assert c.post(url, files={"file": ("m.zip", b"x")}, headers=h("rad")).status_code == 403
    assert c.post(url, files={"file": ("m.zip", b"x")}).status_code == 401
    assert c.post(url, files={"file": ("model.exe", b"MZ")}, headers=h("admin")).status_code == 415
    r = c.post(url, files={"file": ("models.zip", b"PK\x03\x04 not really")}, headers=h("admin"))
    assert r.status_code == 422 and "models.zip" in r.json()["detail"] and "/tmp" not in r.json()["detail"]
    r = c.post(url, files={"file": ("x.pulmo-triage", b"{}")}, headers=h("admin"))
    assert r.status_code == 422
    assert c.get("/api/triage/model", headers=h("rad")).json()["installed"] is False
    assert not (sqlite_platform.settings.data_dir / "triage").exists() or not any(
        (sqlite_platform.settings.data_dir / "triage").iterdir())


def test_triage_model_import_of_a_model_file(sqlite_platform, tmp_path):
    """A .pulmo-triage file (here the tests' synthetic model) imports and is used at once."""
    from synthetic_triage import make_synthetic_model

    model_file = tmp_path / "synthetic.pulmo-triage"
    make_synthetic_model().save(model_file)
    c, h = sqlite_platform.client, sqlite_platform.headers
    r = c.post("/api/admin/triage-model", files={"file": (model_file.name, model_file.read_bytes())}, headers=h("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["installed"] is True
    assert c.get("/api/triage/model", headers=h("clin")).json()["installed"] is True
    pred = c.post("/api/triage/predict", json={"age": 70, "xray_abnormality": 1, "dyspnea": 1, "comorbidities": 2,
                                               "malignancy": 0, "copd": 0, "nlr": 8, "ldh": 400,
                                               "direct_bilirubin": 5, "creatine_kinase": 120}, headers=h("clin"))
    assert pred.status_code == 200 and pred.json()["prediction"]["probabilities"]
    # junk afterwards does not remove the installed model
    assert c.post("/api/admin/triage-model", files={"file": ("models.zip", b"junk")}, headers=h("admin")).status_code == 422
    assert c.get("/api/triage/model", headers=h("clin")).json()["installed"] is True


def test_pages_admin_and_upload(sqlite_platform, demo_zip):
    c, h = sqlite_platform.client, sqlite_platform.headers
    page = c.get("/admin", headers=h("admin"))
    assert page.status_code == 200
    for part in ('id="health"', 'id="users"', 'id="model"', 'id="audit"', "cojocchen/covid19_critically_ill",
                 "/static/admin.js"):
        assert part in page.text
    assert c.get("/admin", headers=h("rad")).status_code == 403
    assert c.get("/admin", follow_redirects=False).status_code == 303
    up = c.get("/upload", headers=h("clin"))
    assert up.status_code == 200 and 'id="upload-form"' in up.text and 'name="ldh"' in up.text
    assert 'name="ldh"' not in c.get("/upload", headers=h("admin")).text   # admins enter no clinical data
    assert c.get("/upload", follow_redirects=False).status_code == 303


def test_every_text_of_every_page_has_a_chinese_translation():
    from pulmo.web import i18n, pages_admin, pages_share, pages_study, pages_triage, pages_upload

    zh = i18n.catalogue("zh-CN")
    ids = []
    for t in (Path(pages_study.__file__).parent / "templates").glob("*.html"):
        ids += re.findall(r'_\("((?:[^"\\]|\\.)*)"', t.read_text(encoding="utf-8"))
    for module in (pages_study, pages_admin, pages_upload, pages_triage):
        labels = getattr(module, "LABELS", {})
        ids += [v for v in labels.values() if isinstance(v, str)]
    source = Path(pages_share.__file__).read_text(encoding="utf-8")
    ids += re.findall(r'(?:error=|reason)[^"]*"([A-Z][^"]+\.)"', source)
    assert "Wrong PIN." in ids
    missing = sorted({m for m in ids if m not in zh})
    assert missing == []


def test_error_messages_in_the_users_language(sqlite_platform):
    c, h = sqlite_platform.client, sqlite_platform.headers
    assert c.get("/api/studies/999999", headers=h("rad")).json()["detail"] == "no such study"
    zh = c.get("/api/studies/999999", headers={**h("rad"), "Cookie": "pulmo_lang=zh-CN"}).json()["detail"]
    assert zh == "没有该检查"
    assert c.get("/api/studies/999999", headers={**h("rad"), "Accept-Language": "zh-CN,zh;q=0.9"}).json()["detail"] == zh
    r = c.post("/api/users", json={"username": "rad", "password": "a long password 1", "role": "clinician",
                                   "organisation": "Hospital A"}, headers={**h("admin"), "Cookie": "pulmo_lang=zh-CN"})
    assert r.status_code == 409 and r.json()["detail"] == "用户名 'rad' 已被占用"   # the value is kept
    r = c.post("/api/studies/1/shares", json={"username": "x"}, headers={"Cookie": "pulmo_lang=zh-CN"})
    assert r.status_code == 401 and "请先登录" in r.json()["detail"]


def test_every_error_message_of_the_platform_has_a_chinese_translation():
    """Each message the web layer raises (HTTP errors, account and upload errors) has an entry in
    the catalogues, fields included; DICOMweb's protocol messages (for programs) are exempt."""
    from pulmo.web import i18n

    root = Path(i18n.__file__).parent
    missing = []
    for py in sorted(root.rglob("*.py")):
        if py.name == "dicomweb.py":
            continue
        source = re.sub(r'"\s*\n\s*f?"', "", py.read_text(encoding="utf-8"))    # join implicitly concatenated strings
        for m in re.finditer(r'(?:HTTPException\(\d+, |(?:Account|Ingest|Node|Delivery)Error\()(f?)"([^"]+)"', source):
            text = re.sub(r"\{[^}]*\}", "7", m.group(2)) if m.group(1) else m.group(2)
            if text == "7: 7":          # a library's own message passed on (translated where it is made)
                continue
            if i18n.translate_message("zh-CN", text) == text:
                missing.append(f"{py.name}: {m.group(2)}")
    assert missing == []


def test_audit_chain_holds_under_concurrent_requests(platform):
    """Many requests appending at once (each reads the database first, as a page view does)
    still make one chain: no two entries follow the same one."""
    from concurrent.futures import ThreadPoolExecutor

    from pulmo.web.services import audit

    factory = platform.app.state.sessions

    def one_request(i):
        with transaction(factory) as s:
            s.execute(select(AuditEntry.id).limit(1)).all()      # a read first, as in a request
            audit.record(s, "study.view", None, "study", str(i % 7), "127.0.0.1", {"n": i})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one_request, range(160)))
    with transaction(factory) as s:
        prevs = list(s.execute(select(AuditEntry.prev_hash)).scalars())
        assert len(prevs) == len(set(prevs))                      # a chain, not a tree
        result = audit.verify(s)
    assert result["ok"], result
    assert result["entries"] >= 160
