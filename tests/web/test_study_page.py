"""The study page (``/studies/{id}``) and what it reads besides the study: who may open it (own
organisation, a study shared for consultation, another organisation, nobody signed in), the
light status for its live refresh, the key images, and the follow-up comparison with the
patient's earlier study (computed once by the worker, kept in storage, never failing the
analysis). The viewer itself runs in a real browser in ``test_e2e_viewer.py``."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from web_kit import analyse_all, upload

STUDY_VIEW = "study.view"


# ----------------------------------------------------------------------------- helpers
def phantom_zip(folder: Path, date: str, opacities: bool = True, patient_index: int = 0, seed: int = 0) -> bytes:
    """The demo phantom (synthetic) of demo patient ``patient_index`` on ``date``, as a zip. The
    DICOM PatientID decides the patient; each call makes a new StudyInstanceUID."""
    from pulmo.web.demo import PATIENTS, phantom, write_dicom

    ct = write_dicom(phantom(seed, opacities), folder / f"ct-{patient_index}-{date}-{seed}", PATIENTS[patient_index],
                     date)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(ct.iterdir()):
            z.write(f, f"ct/{f.name}")
    return buf.getvalue()


def uploaded(platform, data: bytes, user: str = "rad") -> int:
    r = upload(platform, data, user)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def share(platform, study_id: int, username: str, by: str = "rad") -> None:
    from pulmo.web.db import transaction
    from pulmo.web.models import StudyShare, User

    with transaction(platform.app.state.sessions) as s:
        ids = dict(s.execute(select(User.username, User.id).where(User.username.in_([username, by]))).all())
        s.add(StudyShare(study_id=study_id, user_id=ids[username], shared_by=ids[by]))


def audit_count(platform, action: str, study_id: int) -> int:
    from pulmo.web.db import transaction
    from pulmo.web.models import AuditEntry

    with transaction(platform.app.state.sessions) as s:
        return s.execute(select(func.count(AuditEntry.id)).where(AuditEntry.action == action,
                                                                 AuditEntry.target_id == str(study_id))).scalar()


def change_study(platform, study_id: int, **values) -> None:
    from pulmo.web.db import transaction
    from pulmo.web.models import Study

    with transaction(platform.app.state.sessions) as s:
        study = s.get(Study, study_id)
        for k, v in values.items():
            if k.startswith("patient_"):
                setattr(study.patient, k[len("patient_"):], v)
            else:
                setattr(study, k, v)


def get(platform, path: str, user: str | None = "rad", **kw):
    return platform.client.get(path, headers=platform.headers(user), follow_redirects=False, **kw)


# ----------------------------------------------------------------------------- the page
def test_page_access_by_organisation_share_and_sign_in(platform, demo_zip):
    sid = uploaded(platform, demo_zip)
    r = get(platform, f"/studies/{sid}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "SYNTHETIC^Ava" in page and ">SYNTHETIC<" in page and "DEMO-001" in page and "2026-12-01" in page
    assert 'id="consultation"' in page and 'id="comment-form"' in page     # the consultation panel
    assert '/static/viewer.js' in page and '/static/study.js' in page
    assert "Research tool, not a certified medical device." in page
    assert 'id="clinical-form"' in page                                   # radiologist of the owning organisation
    assert audit_count(platform, STUDY_VIEW, sid) == 1                    # the page view is audited
    assert 'id="clinical-form"' in get(platform, f"/studies/{sid}", "clin").text
    for outsider in ("rad_b", "clin_b", "admin"):                          # another organisation: not found
        r = get(platform, f"/studies/{sid}", outsider)
        assert r.status_code == 404 and "SYNTHETIC^Ava" not in r.text and "Study not found" in r.text
    share(platform, sid, "rad_b")                                         # shared for consultation
    r = get(platform, f"/studies/{sid}", "rad_b")
    assert r.status_code == 200 and "SYNTHETIC^Ava" in r.text
    assert 'id="clinical-form"' not in r.text                             # a consultant does not change the data
    assert get(platform, f"/studies/{sid}", "clin_b").status_code == 404  # shared with one user only
    r = get(platform, f"/studies/{sid}", None)                            # nobody signed in: to the login
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=/studies/{sid}"
    assert get(platform, "/studies/987654").status_code == 404
    assert audit_count(platform, STUDY_VIEW, sid) == 3


def test_page_data_is_escaped_and_a_failure_is_shown(sqlite_platform, demo_zip):
    p = sqlite_platform
    sid = uploaded(p, demo_zip)
    change_study(p, sid, patient_name="<script>alert(1)</script>", description="</template><b>x",
                 status="failed", error="<img src=x onerror=alert(2)>")
    page = get(p, f"/studies/{sid}").text
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "</template><b>" not in page
    data = re.search(r'<template id="study-data">(.*?)</template>', page, re.S).group(1)
    assert "<" not in data and "\\u003cscript\\u003e" in data             # JSON for the script, inert in HTML
    assert 'id="error"' in page and re.search(r'<p id="error"[^>]*\bhidden\b', page) is None


def test_page_in_chinese(sqlite_platform, demo_zip):
    from pulmo.web.db import transaction
    from pulmo.web.models import User
    from pulmo.web.services import accounts

    p = sqlite_platform
    sid = uploaded(p, demo_zip)
    with transaction(p.app.state.sessions) as s:
        accounts.set_language(s, s.execute(select(User).where(User.username == "rad")).scalar(), "zh-CN")
    page = get(p, f"/studies/{sid}").text
    assert '<html lang="zh-CN">' in page
    for text in ("肺窗", "纵隔窗", "关键图像", "与既往检查对比", "临床资料", "乳酸脱氢酶"):
        assert text in page
    labels = re.search(r'<template id="labels">(.*?)</template>', page, re.S).group(1)
    assert "\\u53f3\\u80ba" in labels or "右肺" in labels                # the script's text too ("右肺")


def test_every_string_of_the_page_has_a_chinese_translation():
    from pulmo.web import i18n, pages_study

    template = (Path(pages_study.__file__).parent / "templates" / "study.html").read_text(encoding="utf-8")
    ids = re.findall(r'_\("((?:[^"\\]|\\.)*)"\)', template) + [f[1] for f in pages_study.CLINICAL_FIELDS]
    ids += list(pages_study.LABELS.values()) + list(pages_study.ANALYSIS_TEXTS)
    zh = i18n.catalogue("zh-CN")
    assert [m for m in ids if m not in zh] == []


def test_status_for_the_live_refresh_is_light(sqlite_platform, demo_zip):
    p = sqlite_platform
    sid = uploaded(p, demo_zip)
    get(p, f"/studies/{sid}")
    views = audit_count(p, STUDY_VIEW, sid)
    for _ in range(3):
        r = get(p, f"/api/studies/{sid}/status")
        assert r.status_code == 200 and r.json()["status"] == "queued" and "results" not in r.json()
    assert audit_count(p, STUDY_VIEW, sid) == views                      # polling is not a view
    assert get(p, f"/api/studies/{sid}/status", "rad_b").status_code == 404
    assert get(p, f"/api/studies/{sid}/status", None).status_code == 401


# ----------------------------------------------------------------------------- key images
def test_key_images(sqlite_platform, demo_zip):
    from PIL import Image

    p = sqlite_platform
    sid = uploaded(p, demo_zip)
    assert get(p, f"/api/studies/{sid}/key-image.png").status_code == 404      # not analysed yet
    analyse_all(p)
    meta = get(p, f"/api/studies/{sid}/viewer").json()
    nz, ny, nx = meta["shape"]
    ks = get(p, f"/api/studies/{sid}/key-slices").json()
    assert ks["axial"] == meta["key_slice"] and 0 <= ks["coronal"] < ny
    assert ks["caption"] == "the slice with the most ground glass and consolidation"
    r = get(p, f"/api/studies/{sid}/key-image.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    axial = Image.open(io.BytesIO(r.content)).convert("RGB")
    assert axial.size == (nx, ny)
    rgb = np.asarray(axial).astype(int)
    yellow = int(((rgb[..., 0] > 180) & (rgb[..., 1] > 130) & (rgb[..., 2] < 110)).sum())
    assert yellow > 50                                                    # ground glass overlay drawn
    coronal = Image.open(io.BytesIO(get(p, f"/api/studies/{sid}/key-image.png?view=coronal").content))
    sz, _, sx = meta["spacing_zyx_mm"]
    assert coronal.size == (nx, round(nz * sz / sx))                      # square pixels
    from pulmo.web.models import Study
    from pulmo.web.services.analysis import study_prefix

    with p.app.state.sessions() as s:
        folder = p.app.state.storage.local_path(f"{study_prefix(s.get(Study, sid))}/viewer")
    cached = list(folder.glob("key-axial-*.png"))
    assert len(cached) == 1 and cached[0].read_bytes() == r.content       # rendered once
    assert get(p, f"/api/studies/{sid}/key-image.png").content == r.content
    assert get(p, f"/api/studies/{sid}/key-image.png?view=sagittal").status_code == 422
    assert get(p, f"/api/studies/{sid}/key-image.png", "rad_b").status_code == 404
    assert get(p, f"/api/studies/{sid}/key-slices", "rad_b").status_code == 404
    assert get(p, f"/api/studies/{sid}/key-image.png", None).status_code == 401
    share(p, sid, "rad_b")
    assert get(p, f"/api/studies/{sid}/key-image.png", "rad_b").status_code == 200


# ----------------------------------------------------------------------------- comparison
@pytest.mark.slow
def test_comparison_with_the_earlier_study(sqlite_platform, tmp_path, monkeypatch):
    p = sqlite_platform
    prior = uploaded(p, phantom_zip(tmp_path, "20261120", opacities=False, seed=1))
    analyse_all(p)
    assert get(p, f"/api/studies/{prior}/comparison").json() == {"status": "none", "reason": "no_earlier_study"}
    current = uploaded(p, phantom_zip(tmp_path, "20261201", opacities=True))
    other = uploaded(p, phantom_zip(tmp_path, "20261125", opacities=False, patient_index=1, seed=2))
    assert current != prior
    assert get(p, f"/api/studies/{current}/comparison").json()["status"] == "none"   # not analysed yet
    analyse_all(p)
    c = get(p, f"/api/studies/{current}/comparison").json()
    assert c["status"] == "done", c
    assert c["prior"]["id"] == prior and c["prior"]["openable"] is True and c["current"]["id"] == current
    assert c["verdict"]["overall"] == "progression"                       # the opacities are new
    assert c["change"]["lungs"]["total"]["lesion_ml"] > 5
    assert c["change"]["from_date"] == "2026-11-20" and c["change"]["to_date"] == "2026-12-01"
    assert set(c["change"]["regions"]) == set(c["time_points"][1]["regions"]) and len(c["change"]["regions"]) == 6
    assert c["verdict"]["regions"]["right upper zone"] == "stable"
    assert len(c["time_points"]) == 2 and "results" not in c["time_points"][0]
    assert c["registration"]["lung_dice"] > 0.9
    assert get(p, f"/api/studies/{other}/comparison").json()["status"] == "none"     # another patient
    # kept in storage under the study: asked again, it is not computed again
    from pulmo.web.models import Study
    from pulmo.web.services import comparison

    with p.app.state.sessions() as s:
        key = comparison.cache_key(s.get(Study, current))
    assert p.app.state.storage.exists(key)

    def refuse(*a, **k):
        raise AssertionError("computed again")
    monkeypatch.setattr("pulmo.ct.compare.compare", refuse)
    assert get(p, f"/api/studies/{current}/comparison").json() == c
    # access: another organisation does not see it; a consultant sees it, without a link to the prior
    assert get(p, f"/api/studies/{current}/comparison", "rad_b").status_code == 404
    assert get(p, f"/api/studies/{current}/comparison", None).status_code == 401
    share(p, current, "rad_b")
    shared = get(p, f"/api/studies/{current}/comparison", "rad_b").json()
    assert shared["status"] == "done" and shared["prior"]["openable"] is False


@pytest.mark.slow
def test_comparison_when_the_earlier_study_arrives_later(sqlite_platform, tmp_path):
    p = sqlite_platform
    current = uploaded(p, phantom_zip(tmp_path, "20261201", opacities=True))
    analyse_all(p)
    assert get(p, f"/api/studies/{current}/comparison").json()["status"] == "none"
    prior = uploaded(p, phantom_zip(tmp_path, "20261120", opacities=False, seed=1))
    analyse_all(p)                                   # the later study is compared with the new prior
    c = get(p, f"/api/studies/{current}/comparison").json()
    assert c["status"] == "done" and c["prior"]["id"] == prior and c["verdict"]["overall"] == "progression"
    assert get(p, f"/api/studies/{prior}/comparison").json()["status"] == "none"


@pytest.mark.slow
def test_a_failed_comparison_never_fails_the_analysis(sqlite_platform, tmp_path, monkeypatch):
    from pulmo.errors import InputError

    p = sqlite_platform
    uploaded(p, phantom_zip(tmp_path, "20261120", opacities=False, seed=1))
    analyse_all(p)
    calls = []

    def broken(*a, **k):
        calls.append(1)
        raise RuntimeError("boom")
    monkeypatch.setattr("pulmo.ct.compare.compare", broken)
    current = uploaded(p, phantom_zip(tmp_path, "20261201", opacities=True))
    analyse_all(p)
    s = get(p, f"/api/studies/{current}").json()
    assert s["status"] == "done" and s["flag"] == "positive"             # the analysis stands
    c = get(p, f"/api/studies/{current}/comparison").json()
    assert c["status"] == "failed" and "internal error" in c["error"] and "boom" not in c["error"]
    assert get(p, f"/api/studies/{current}/comparison").json() == c and len(calls) == 1   # tried once

    def refused(*a, **k):
        raise InputError("the registration failed: the lungs do not overlap", code="registration_failed")
    monkeypatch.setattr("pulmo.ct.compare.compare", refused)
    third = uploaded(p, phantom_zip(tmp_path, "20261215", opacities=True, seed=3))
    analyse_all(p)
    c = get(p, f"/api/studies/{third}/comparison").json()
    assert c["status"] == "failed" and "the lungs do not overlap" in c["error"] and c["prior"]["id"] == current
