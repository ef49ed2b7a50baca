"""The authorisation matrix: every route of the API (read from the app's OpenAPI document, so a
new route without an entry here fails the test) called by every role of the organisation that
owns the study, by users of another organisation, anonymously, with a forged, an expired and a
revoked bearer token, from a browser session without its CSRF token, and (for share-link routes)
with a valid, revoked, expired and forged link.

Expected: anonymous and bad tokens 401; another organisation 404 "no such study" (its existence
is not revealed); a role that may see but not do 403; share-link routes 404 / 410 for bad links;
an unsafe request of a browser session without the CSRF token 403. "Allowed" means anything but
those refusals and never a server error (an empty body may still be a 422)."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from sqlalchemy import select, update
from web_kit import PASSWORD, analyse_all, upload

from pulmo.web.db import transaction
from pulmo.web.models import ApiToken, ShareLink, Study, User
from pulmo.web.services.security import token_hash

PUBLIC, USER, VIEW, OWNER, SHARE, EDIT, CLINICAL, RESEND, ADMIN, LINK = (
    "public", "user", "view", "owner", "share", "edit", "clinical", "resend", "admin", "link")
#: who may do what (see pulmo.web.services.access): the roles of the owning organisation allowed
ALLOWED_ROLES = {USER: {"rad", "clin", "admin", "rad_b", "clin_b"}, VIEW: {"rad", "clin"}, OWNER: {"rad", "clin"},
                 SHARE: {"rad", "clin"}, EDIT: {"rad"}, CLINICAL: {"rad", "clin"}, RESEND: {"rad"},
                 ADMIN: {"admin"}}

#: (method, path) -> (who, JSON body or None, multipart files or None)
MATRIX = {
    ("POST", "/api/auth/token"): (PUBLIC, None, None),
    ("GET", "/api/me"): (USER, None, None),
    ("GET", "/api/users"): (ADMIN, None, None),
    ("POST", "/api/users"): (ADMIN, {"username": "x", "password": "y", "role": "z", "organisation": "o"}, None),
    ("PATCH", "/api/users/{user_id}"): (ADMIN, {}, None),
    ("GET", "/api/studies"): (USER, None, None),
    ("POST", "/api/studies"): (USER, None, {"file": ("x.txt", b"not dicom", "text/plain")}),
    ("GET", "/api/studies/{study_id}"): (VIEW, None, None),
    ("GET", "/api/studies/{study_id}/files/{name}"): (VIEW, None, None),
    ("GET", "/api/studies/{study_id}/viewer"): (VIEW, None, None),
    ("GET", "/api/studies/{study_id}/viewer/{kind}/{axis}/{index}"): (VIEW, None, None),
    ("GET", "/api/triage/model"): (USER, None, None),
    ("POST", "/api/triage/predict"): (USER, {"age": 60}, None),
    ("POST", "/api/triage/batch"): (USER, None, {"file": ("p.csv", b"age\n60\n", "text/csv")}),
    ("PUT", "/api/studies/{study_id}/clinical"): (CLINICAL, {"age": 60}, None),
    ("GET", "/api/studies/{study_id}/report"): (VIEW, None, None),
    ("PUT", "/api/studies/{study_id}/report"): (EDIT, {"impression": "x"}, None),
    ("POST", "/api/studies/{study_id}/report/sign"): (EDIT, None, None),
    ("POST", "/api/studies/{study_id}/report/amend"): (EDIT, None, None),
    ("GET", "/api/studies/{study_id}/report.pdf"): (VIEW, None, None),
    ("GET", "/api/studies/{study_id}/shares"): (VIEW, None, None),
    ("POST", "/api/studies/{study_id}/shares"): (SHARE, {"username": "nobody"}, None),
    ("DELETE", "/api/studies/{study_id}/shares/{user_id}"): (SHARE, None, None),
    ("GET", "/api/studies/{study_id}/comments"): (VIEW, None, None),
    ("POST", "/api/studies/{study_id}/comments"): (VIEW, {"body": "a comment"}, None),
    ("GET", "/api/studies/{study_id}/share-links"): (SHARE, None, None),
    ("POST", "/api/studies/{study_id}/share-links"): (SHARE, {"expires_in_hours": 1}, None),
    ("DELETE", "/api/studies/{study_id}/share-links/{token}"): (SHARE, None, None),
    ("POST", "/api/share/{token}/pin"): (LINK, {"pin": "1234"}, None),
    ("GET", "/api/share/{token}"): (LINK, None, None),
    ("GET", "/api/share/{token}/status"): (LINK, None, None),
    ("GET", "/api/share/{token}/report"): (LINK, None, None),
    ("GET", "/api/share/{token}/viewer"): (LINK, None, None),
    ("GET", "/api/share/{token}/viewer/{kind}/{axis}/{index}"): (LINK, None, None),
    ("GET", "/api/share/{token}/key-slices"): (LINK, None, None),
    ("GET", "/api/share/{token}/key-image.png"): (LINK, None, None),
    ("GET", "/api/share/{token}/report.pdf"): (LINK, None, None),
    ("GET", "/api/audit"): (ADMIN, None, None),
    ("GET", "/api/audit/verify"): (ADMIN, None, None),
    ("POST", "/api/admin/triage-model"): (ADMIN, None, {"file": ("m.zip", b"junk", "application/zip")}),
    ("GET", "/api/studies/{study_id}/key-image.png"): (VIEW, None, None),
    ("GET", "/api/studies/{study_id}/key-slices"): (VIEW, None, None),
    ("GET", "/api/studies/{study_id}/comparison"): (VIEW, None, None),
    ("GET", "/api/studies/{study_id}/status"): (VIEW, None, None),
    ("GET", "/api/health"): (ADMIN, None, None),
    ("GET", "/api/dicom-nodes"): (ADMIN, None, None),
    ("POST", "/api/dicom-nodes"): (ADMIN, {"organisation": "Hospital A", "ae_title": "CT1", "host": "127.0.0.1",
                                           "port": 11112, "role": "source"}, None),
    ("DELETE", "/api/dicom-nodes/{node_id}"): (ADMIN, None, None),
    ("GET", "/api/studies/{study_id}/deliveries"): (OWNER, None, None),
    ("POST", "/api/studies/{study_id}/deliveries/resend"): (RESEND, None, None),
    ("GET", "/dicomweb/studies"): (USER, None, None),
    ("POST", "/dicomweb/studies"): (USER, None, None),
    ("GET", "/dicomweb/studies/{study_uid}"): (VIEW, None, None),
    ("POST", "/dicomweb/studies/{study_uid}"): (USER, None, None),   # stored into the caller's organisation
    ("GET", "/dicomweb/studies/{study_uid}/series"): (VIEW, None, None),
    ("GET", "/dicomweb/studies/{study_uid}/instances"): (VIEW, None, None),
    ("GET", "/dicomweb/studies/{study_uid}/metadata"): (VIEW, None, None),
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}"): (VIEW, None, None),
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances"): (VIEW, None, None),
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/metadata"): (VIEW, None, None),
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"): (VIEW, None, None),
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata"): (VIEW, None, None),
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame_list}"): (VIEW, None, None),
}
REFUSALS = (401, 403, 404, 405, 410)


def api_routes(app) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops
            if m in ("get", "post", "put", "patch", "delete")}


@pytest.fixture(scope="module")
def world(tmp_path_factory, request):
    """One platform (SQLite) with an analysed study of Hospital A, and share links of each kind."""
    from web_kit import demo_zip_bytes, make_platform

    root = tmp_path_factory.mktemp("authz")
    p = make_platform(root / "data")
    sid = upload(p, demo_zip_bytes(root), "rad").json()["id"]
    analyse_all(p)
    c, h = p.client, p.headers
    assert c.get(f"/api/studies/{sid}", headers=h("rad")).json()["status"] == "done"
    links = {k: c.post(f"/api/studies/{sid}/share-links", json={}, headers=h("rad")).json()["token"]
             for k in ("valid", "revoked", "expired")}
    assert c.delete(f"/api/studies/{sid}/share-links/{links['revoked']}", headers=h("rad")).status_code == 200
    with transaction(p.app.state.sessions) as s:
        s.execute(update(ShareLink).where(ShareLink.token_hash == token_hash(links["expired"]))
                  .values(expires_at=dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=1)))
        study = s.get(Study, sid)
        uid = study.study_uid
        rad_b = s.execute(select(User.id).where(User.username == "rad_b")).scalar()
        clin = s.execute(select(User.id).where(User.username == "clin")).scalar()
    meta = c.get(f"/dicomweb/studies/{uid}/metadata", headers=h("rad")).json()
    series = meta[0]["0020000E"]["Value"][0]
    sop = meta[0]["00080018"]["Value"][0]
    params = {"study_id": sid, "user_id": rad_b, "name": "results.json", "kind": "hu", "axis": "axial", "index": 0,
              "token": "999999", "node_id": 999999, "study_uid": uid, "series_uid": series, "sop_uid": sop,
              "frame_list": "1"}
    yield {"p": p, "sid": sid, "links": links, "params": params, "clin_id": clin}


def call(p, method, path, params, headers, body, files, **kw):
    url = path.format(**params)
    if files:
        files = {k: (n, io.BytesIO(d), t) for k, (n, d, t) in files.items()}
    return p.client.request(method, url, headers=headers, json=body, files=files, **kw)


def test_every_route_is_in_the_matrix(world):
    routes = api_routes(world["p"].app)
    assert routes - set(MATRIX) == set(), "routes without an authorisation entry"
    assert set(MATRIX) - routes == set(), "entries for routes that no longer exist"


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_route(world, route):
    p, params = world["p"], dict(world["params"])
    method, path = route
    who, body, files = MATRIX[route]
    if who == PUBLIC:
        r = call(p, method, path, params, {}, None, None, data={"username": "rad", "password": "wrong password"})
        assert r.status_code == 401
        return
    if who == LINK:
        for kind, status in (("valid", None), ("revoked", 410), ("expired", 410), ("forged", 404)):
            params["token"] = world["links"].get(kind, "F" * 43)
            r = call(p, method, path, params, {}, body, files)
            if status is None:
                assert r.status_code not in REFUSALS and r.status_code < 500, (kind, r.status_code, r.text[:200])
            else:
                assert r.status_code == status, (kind, r.status_code, r.text[:200])
        return

    # no credentials, or bad ones: 401
    expired = p.client.post("/api/auth/token", data={"username": "rad", "password": PASSWORD}).json()["access_token"]
    with transaction(p.app.state.sessions) as s:
        s.execute(update(ApiToken).where(ApiToken.id == token_hash(expired))
                  .values(expires_at=dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=1)))
    revoked = p.client.post("/api/auth/token", data={"username": "clin", "password": PASSWORD}).json()["access_token"]
    with transaction(p.app.state.sessions) as s:
        s.execute(update(ApiToken).where(ApiToken.id == token_hash(revoked)).values(revoked=True))
    for headers in ({}, {"Authorization": "Bearer " + "A" * 43}, {"Authorization": "Bearer " + expired},
                    {"Authorization": "Bearer " + revoked}, {"Authorization": "Basic cmFkOnJhZA=="}):
        r = call(p, method, path, params, headers, body, files)
        assert r.status_code == 401, (headers, r.status_code, r.text[:200])

    allowed = ALLOWED_ROLES[who]
    for user in ("rad", "clin", "admin", "rad_b", "clin_b"):
        r = call(p, method, path, params, p.headers(user), body, files)
        detail = r.json().get("detail") if r.headers.get("content-type", "").startswith("application/json") \
            and isinstance(r.json(), dict) else None
        if user in allowed:
            assert r.status_code < 500 and r.status_code not in (401, 403, 405, 410), (user, r.status_code, r.text[:300])
            assert not (r.status_code == 404 and detail == "no such study"), (user, r.text[:200])
        elif who in (USER, ADMIN) or user in ("rad", "clin"):
            assert r.status_code == 403, (user, r.status_code, r.text[:200])     # may see, may not do
        else:
            assert r.status_code == 404 and detail == "no such study", (user, r.status_code, r.text[:200])

    # a browser session without its CSRF token may not change anything
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        browser = p.client.__class__(p.app)
        page = browser.get("/login")
        csrf = page.cookies.get("pulmo_login_csrf") or browser.cookies.get("pulmo_login_csrf")
        user = "admin" if who == ADMIN else "rad"
        assert browser.post("/login", data={"username": user, "password": PASSWORD, "login_csrf": csrf, "next": "/"},
                            follow_redirects=False).status_code == 303
        r = call(type("P", (), {"client": browser})(), method, path, params, {}, body, files)
        assert r.status_code == 403 and "CSRF" in r.text, (r.status_code, r.text[:200])
