"""Share links ("cloud film") and remote consultation, through the API and the share page:
who may create and revoke links, PINs and their rate limit, expiry, revocation, what a link
exposes (one study: no other study, no clinical data, the impression only once signed), sharing
with another organisation and the threaded comments, and the audit trail of all of it."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select, update
from web_kit import analysed_study

from pulmo.web.db import transaction
from pulmo.web.models import AuditEntry, ShareLink

CLINICAL = {"age": 71, "xray_abnormality": 1, "dyspnea": 1, "comorbidities": 2, "malignancy": 0, "copd": 1,
            "nlr": 9.1, "ldh": 420, "direct_bilirubin": 6.0, "creatine_kinase": 150}


def actions(platform, sid) -> list[str]:
    with transaction(platform.app.state.sessions) as s:
        return list(s.execute(select(AuditEntry.action).where(AuditEntry.target_id == str(sid))
                              .order_by(AuditEntry.id)).scalars())


def fresh_client(platform):
    """A browser without an account (its own cookies)."""
    from fastapi.testclient import TestClient

    return TestClient(platform.app)


def test_share_links(platform, demo_zip, tmp_path):
    c, h = platform.client, platform.headers
    sid = analysed_study(platform, demo_zip)
    assert c.put(f"/api/studies/{sid}/clinical", json=CLINICAL, headers=h("rad")).status_code == 200
    url = f"/api/studies/{sid}/share-links"

    # who may create one: radiologist or clinician of the owning organisation
    assert c.post(url).status_code == 401
    for outsider in ("rad_b", "clin_b", "admin"):
        assert c.post(url, json={}, headers=h(outsider)).status_code == 404
        assert c.get(url, headers=h(outsider)).status_code == 404
    # bad input: clear 422s, nothing created
    for bad in ({"expires_in_hours": 0}, {"expires_in_hours": 24 * 365}, {"expires_in_hours": "soon"},
                {"pin": "12"}, {"pin": " 1234"}, {"pin": "1" * 30}, {"pin": "12\n34"}):
        r = c.post(url, json=bad, headers=h("rad"))
        assert r.status_code == 422, (bad, r.text)
    assert c.get(url, headers=h("rad")).json() == []

    plain = c.post(url, headers=h("clin"))   # no body: 72 hours, no PIN
    assert plain.status_code == 201, plain.text
    plain = plain.json()
    assert plain["url"].endswith("/s/" + plain["token"]) and not plain["has_pin"]
    assert len(plain["token"]) >= 40
    pinned = c.post(url, json={"expires_in_hours": 24, "pin": "4821"}, headers=h("rad")).json()
    assert pinned["has_pin"]
    with transaction(platform.app.state.sessions) as s:   # only the hash of a token is stored
        stored = [r.token_hash for r in s.execute(select(ShareLink)).scalars()]
    assert plain["token"] not in stored and pinned["token"] not in stored
    listed = c.get(url, headers=h("rad")).json()
    assert [k["state"] for k in listed] == ["active", "active"] and listed[0]["token_hint"] == pinned["token"][:6]

    # the link without a PIN opens for anyone, logged out
    visitor = fresh_client(platform)
    page = visitor.get(f"/s/{plain['token']}")
    assert page.status_code == 200 and "SYNTHETIC" in page.text and "share-banner" in page.text
    assert 'id="triage"' not in page.text and 'id="consultation"' not in page.text
    api = f"/api/share/{plain['token']}"
    summary = visitor.get(api).json()
    assert summary["id"] == sid and summary["status"] == "done" and summary["results"]["quantification"]
    assert summary["clinical"] is None                         # no clinical data through a link
    assert summary["report"]["status"] == "draft" and summary["report"]["impression"] == ""  # not signed: not shown
    assert visitor.get(api + "/report.pdf").status_code == 409
    meta = visitor.get(api + "/viewer")
    assert meta.status_code == 200
    r = visitor.get(api + "/viewer/hu/axial/10")
    assert r.status_code == 200 and int(r.headers["x-rows"]) > 0
    assert visitor.get(api + "/key-image.png").headers["content-type"] == "image/png"
    # nothing else of the record: no other route of the study, no comparison, no clinical data
    assert visitor.get(f"/api/studies/{sid}").status_code == 401
    assert visitor.put(f"/api/studies/{sid}/clinical", json=CLINICAL).status_code == 401
    assert visitor.get(api + "/comparison").status_code in (404, 405)
    assert visitor.get(api + "/clinical").status_code in (404, 405)
    assert visitor.get("/api/studies").status_code == 401

    # the PIN link: the form first; a wrong PIN counts; the right one opens it in this browser only
    pin_api = f"/api/share/{pinned['token']}"
    r = visitor.get(f"/s/{pinned['token']}")
    assert r.status_code == 401 and 'name="pin"' in r.text and "SYNTHETIC" not in r.text
    assert visitor.get(pin_api).status_code == 401
    assert visitor.get(pin_api + "/viewer/hu/axial/10").status_code == 401
    r = visitor.post(f"/s/{pinned['token']}", data={"pin": "0000"})
    assert r.status_code == 401 and "Wrong PIN" in r.text
    r = visitor.post(f"/s/{pinned['token']}", data={"pin": "4821"}, follow_redirects=False)
    assert r.status_code == 303
    assert visitor.get(f"/s/{pinned['token']}").status_code == 200
    assert visitor.get(pin_api).json()["id"] == sid
    other = fresh_client(platform)
    assert other.get(pin_api).status_code == 401
    forged = fresh_client(platform)   # a cookie made up without the database does not open it
    forged.cookies.set(f"pulmo_pin_{pinned['id']}", "0" * 64)
    assert forged.get(pin_api).status_code == 401
    # JSON PIN route; then the rate limit: 5 wrong PINs within 15 minutes close the door, even to the right PIN
    assert other.post(pin_api + "/pin", json={"pin": "1111"}).status_code == 401
    for _ in range(3):
        assert other.post(pin_api + "/pin", json={"pin": "1111"}).status_code == 401
    assert other.post(pin_api + "/pin", json={"pin": "4821"}).status_code == 429
    assert other.post(f"/s/{pinned['token']}", data={"pin": "4821"}).status_code == 429

    # signed report: the impression and the PDF (without the clinical data) are now shared
    assert c.post(f"/api/studies/{sid}/report/sign", headers=h("rad")).status_code == 200
    rep = visitor.get(api + "/report").json()
    assert rep["status"] == "signed" and "Pulmo" in rep["impression"]
    pdf = visitor.get(api + "/report.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    from test_reports import pdf_text, squash

    text = squash(pdf_text(pdf.content, tmp_path))
    assert "Research tool" in text and "CRB-65" not in text and "Triage" not in text
    staff_pdf = squash(pdf_text(c.get(f"/api/studies/{sid}/report.pdf", headers=h("rad")).content, tmp_path))
    assert "CRB-65" in staff_pdf   # the staff's PDF has the triage block the shared one leaves out

    # revoke: by token (rad) or by id (clin); another organisation cannot; then 410 everywhere
    assert c.delete(f"{url}/{plain['token']}", headers=h("rad_b")).status_code == 404
    assert c.delete(f"{url}/{plain['token']}", headers=h("admin")).status_code == 404
    r = c.delete(f"{url}/{plain['token']}", headers=h("rad"))
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert visitor.get(f"/s/{plain['token']}").status_code == 410
    assert visitor.get(api + "/viewer/hu/axial/10").status_code == 410
    assert "revoked" in visitor.get(api).json()["detail"]
    assert c.delete(f"{url}/{pinned['id']}", headers=h("clin")).json()["state"] == "revoked"
    assert visitor.get(pin_api).status_code == 410
    assert c.delete(f"{url}/999999", headers=h("rad")).status_code == 404

    # expiry
    third = c.post(url, json={"expires_in_hours": 1}, headers=h("rad")).json()
    assert visitor.get(f"/api/share/{third['token']}").status_code == 200
    with transaction(platform.app.state.sessions) as s:
        s.execute(update(ShareLink).where(ShareLink.id == third["id"])
                  .values(expires_at=dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=1)))
    r = visitor.get(f"/s/{third['token']}")
    assert r.status_code == 410 and "expired" in r.text
    assert "expired" in visitor.get(f"/api/share/{third['token']}").json()["detail"]
    # unknown and hostile tokens
    for token in ("nope", "A" * 43, "%00", "x" * 300, "' OR 1=1 --"):
        assert visitor.get(f"/api/share/{token}").status_code == 404
    assert visitor.get("/s/" + "A" * 43).status_code == 404

    done = actions(platform, sid)
    for a in ("share_link.create", "share_link.pin_wrong", "share_link.pin", "share_link.revoke", "report.export"):
        assert a in done, a
    with transaction(platform.app.state.sessions) as s:
        views = list(s.execute(select(AuditEntry.detail).where(AuditEntry.action == "study.view",
                                                               AuditEntry.target_id == str(sid))).scalars())
    assert any('"share link"' in v for v in views)


def test_consultation(platform, demo_zip):
    c, h = platform.client, platform.headers
    sid = analysed_study(platform, demo_zip)
    shares, comments = f"/api/studies/{sid}/shares", f"/api/studies/{sid}/comments"
    mine = c.get(f"/api/studies/{sid}", headers=h("rad")).json()

    # before: the other organisation does not see the study at all
    assert c.get(f"/api/studies/{sid}", headers=h("rad_b")).status_code == 404
    assert c.get(comments, headers=h("rad_b")).status_code == 404
    assert sid not in [s["id"] for s in c.get("/api/studies", headers=h("rad_b")).json()["items"]]

    # who may share, with whom
    assert c.post(shares, json={"username": "rad_b"}).status_code == 401
    assert c.post(shares, json={"username": "rad_b"}, headers=h("admin")).status_code == 404
    assert c.post(shares, json={"username": "clin"}, headers=h("rad")).status_code == 409      # same organisation
    assert c.post(shares, json={"username": "admin"}, headers=h("rad")).status_code == 422     # an administrator
    assert c.post(shares, json={"username": "nobody"}, headers=h("rad")).status_code == 404
    assert c.post(shares, json={"username": "x" * 500}, headers=h("rad")).status_code == 422
    r = c.post(shares, json={"username": "rad_b"}, headers=h("rad"))
    assert r.status_code == 201 and [u["username"] for u in r.json()] == ["rad_b"]
    assert r.json()[0]["organisation"] == "Hospital B"
    assert len(c.post(shares, json={"username": "rad_b"}, headers=h("clin")).json()) == 1   # idempotent

    # the consultant sees the same study and results, in their worklist too; their colleague does not
    theirs = c.get(f"/api/studies/{sid}", headers=h("rad_b")).json()
    assert theirs["results"] == mine["results"] and theirs["status"] == "done"
    assert sid in [s["id"] for s in c.get("/api/studies", headers=h("rad_b")).json()["items"]]
    assert c.get(f"/api/studies/{sid}", headers=h("clin_b")).status_code == 404
    assert c.get(f"/api/studies/{sid}/viewer", headers=h("rad_b")).status_code == 200
    assert c.get(f"/api/studies/{sid}/viewer/hu/axial/5", headers=h("rad_b")).status_code == 200
    # ... but may not pass it on, make share links, or sign the owner's report
    assert c.post(shares, json={"username": "clin_b"}, headers=h("rad_b")).status_code == 403
    assert c.post(f"/api/studies/{sid}/share-links", headers=h("rad_b")).status_code == 403
    assert c.post(f"/api/studies/{sid}/report/sign", headers=h("rad_b")).status_code == 403

    # threaded comments, shown to everyone on the study; hostile text is kept as text
    evil = "<img src=x onerror=alert(1)> '; DROP TABLE comments; -- 磨玻璃影"
    first = c.post(comments, json={"body": evil}, headers=h("rad"))
    assert first.status_code == 201, first.text
    first = first.json()
    assert first["body"] == evil and first["author"]["organisation"] == "Hospital A"
    reply = c.post(comments, json={"body": "Agree: typical COVID-19 pattern.", "parent_id": first["id"]},
                   headers=h("rad_b")).json()
    assert reply["parent_id"] == first["id"] and reply["author"]["username"] == "rad_b"
    for user in ("rad", "clin", "rad_b"):
        thread = c.get(comments, headers=h(user)).json()
        assert [(t["id"], t["parent_id"]) for t in thread] == [(first["id"], None), (reply["id"], first["id"])]
    assert c.post(comments, json={"body": "   "}, headers=h("rad")).status_code == 422
    rtl = c.post(comments, json={"body": "agree \u202etxet desrever\u202c ok"}, headers=h("rad")).json()
    assert rtl["body"] == "agree txet desrever ok"          # no bidi overrides that reorder the thread
    assert c.post(comments, json={"body": "x" * 5001}, headers=h("rad")).status_code == 422
    assert c.post(comments, json={"body": "x", "parent_id": 999999}, headers=h("rad")).status_code == 422
    assert c.post(comments, json={"body": "x"}, headers=h("clin_b")).status_code == 404
    assert c.post(comments, json={"nobody": 1}, headers=h("rad")).status_code == 422
    page = c.get(f"/studies/{sid}", headers=h("rad_b"))
    assert page.status_code == 200 and 'id="consultation"' in page.text and "<img src=x" not in page.text

    # ending the consultation: the consultant loses the study again
    rb_id = r.json()[0]["user_id"]
    assert c.delete(f"{shares}/{rb_id}", headers=h("rad_b")).status_code == 403
    assert c.delete(f"{shares}/{rb_id}", headers=h("rad")).json() == []
    assert c.get(f"/api/studies/{sid}", headers=h("rad_b")).status_code == 404
    assert c.get(f"/api/studies/{sid}/viewer/hu/axial/5", headers=h("rad_b")).status_code == 404
    assert c.delete(f"{shares}/{rb_id}", headers=h("rad")).status_code == 404

    done = actions(platform, sid)
    assert done.count("comment.create") == 3 and "study.share" in done and "study.unshare" in done


def test_share_page_escapes_and_404(sqlite_platform, demo_zip):
    c = sqlite_platform.client
    r = c.get("/s/unknown-token")
    assert r.status_code == 404 and "does not exist" in r.text and re.search(r"Research tool", r.text)
    r = c.get("/s/<script>alert(1)<script>")
    assert r.status_code == 404 and "<script>alert(1)" not in r.text
