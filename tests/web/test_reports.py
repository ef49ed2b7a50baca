"""Reports: who may read, edit, sign and amend (radiologists of the owning organisation; a
clinician 403; another organisation 404; anonymous 401; a consultant of a shared study reads but
does not sign), the signing flow and its 409s, the AI draft of the impression, the audit trail,
and the PDF in English and Chinese (text checked with pdftotext, pages rendered with pdftoppm to
/tmp/screens/ to be looked at)."""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import select
from web_kit import analyse_all, analysed_study, upload

from pulmo.web.db import transaction
from pulmo.web.models import AuditEntry, Organisation, Patient, Study, StudyShare, User
from pulmo.web.services import reports

SCREENS = Path("/tmp/screens")
DISCLAIMER_TEXT = "Research tool, not a certified medical device"


def pdf_text(data: bytes, tmp_path: Path) -> str:
    """The text of a PDF: pdftotext (poppler) when installed, else pypdf, else the
    decompressed content streams (Latin text only)."""
    path = tmp_path / "doc.pdf"
    path.write_bytes(data)
    if shutil.which("pdftotext"):
        return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True,
                              timeout=60).stdout.decode("utf-8")
    try:
        from pypdf import PdfReader
    except ImportError:
        out = []
        for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.DOTALL):
            try:
                out.append(zlib.decompress(m.group(1)).decode("latin-1"))
            except zlib.error:
                continue
        return " ".join("".join(re.findall(r"\((.*?)(?<!\\)\)", s)) for s in out)
    return "\n".join(page.extract_text() or "" for page in PdfReader(str(path)).pages)


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def render_pages(data: bytes, name: str) -> list[Path]:
    """The PDF's pages as PNG under /tmp/screens/ (pdftoppm), to be looked at."""
    if not shutil.which("pdftoppm"):
        return []
    SCREENS.mkdir(parents=True, exist_ok=True)
    pdf = SCREENS / f"{name}.pdf"
    pdf.write_bytes(data)
    for old in SCREENS.glob(f"{name}-*.png"):
        old.unlink()
    subprocess.run(["pdftoppm", "-r", "80", "-png", str(pdf), str(SCREENS / name)], check=True, timeout=120)
    return sorted(SCREENS.glob(f"{name}-*.png"))


def share(platform, sid: int, username: str) -> None:
    with transaction(platform.app.state.sessions) as s:
        user = s.execute(select(User).where(User.username == username)).scalar_one()
        owner = s.execute(select(User).where(User.username == "rad")).scalar_one()
        s.add(StudyShare(study_id=sid, user_id=user.id, shared_by=owner.id))


def audit_actions(platform, sid: int) -> list[str]:
    with transaction(platform.app.state.sessions) as s:
        return list(s.execute(select(AuditEntry.action).where(AuditEntry.target_id == str(sid))
                              .order_by(AuditEntry.id)).scalars())


def test_report_roles_and_signing(platform, demo_zip):
    sid = analysed_study(platform, demo_zip)
    c, h = platform.client, platform.headers
    url = f"/api/studies/{sid}/report"

    # anonymous: 401 everywhere
    assert c.get(url).status_code == 401
    assert c.put(url, json={"impression": "x"}).status_code == 401
    assert c.post(url + "/sign").status_code == 401
    assert c.post(url + "/amend").status_code == 401
    assert c.get(f"/api/studies/{sid}/report.pdf").status_code == 401

    # another organisation (and the admin, of the organisation "Pulmo"): the study does not exist
    for outsider in ("rad_b", "clin_b", "admin"):
        assert c.get(url, headers=h(outsider)).status_code == 404
        assert c.put(url, json={"impression": "x"}, headers=h(outsider)).status_code == 404
        assert c.post(url + "/sign", headers=h(outsider)).status_code == 404
        assert c.get(f"/api/studies/{sid}/report.pdf", headers=h(outsider)).status_code == 404
    assert c.get("/api/studies/999999/report", headers=h("rad")).status_code == 404

    # the radiologist of the owning organisation gets the AI draft
    r = c.get(url, headers=h("rad"))
    assert r.status_code == 200
    rep = r.json()
    assert set(rep) >= {"impression", "status", "signed_by", "signed_at", "can_edit", "can_sign"}
    assert rep["status"] == "draft" and rep["signed_by"] is None and rep["signed_at"] is None
    assert rep["can_edit"] is True and rep["can_sign"] is True
    text = rep["impression"]
    assert "Pulmo" in text and "check" in text and "before signing" in text
    assert "% of the lung volume" in text and "zone-based CT severity score" in text
    assert "Pneumonia screening flag: positive" in text and "No nodules" in text

    # a clinician of the same organisation reads, may not edit or sign
    r = c.get(url, headers=h("clin"))
    assert r.status_code == 200 and r.json()["can_edit"] is False and r.json()["can_sign"] is False
    assert c.put(url, json={"impression": "mine"}, headers=h("clin")).status_code == 403
    assert c.post(url + "/sign", headers=h("clin")).status_code == 403
    assert c.post(url + "/amend", headers=h("clin")).status_code == 403

    # edit: stored as given (script text is data, never markup); too long is refused
    evil = "Ground glass <script>alert(1)</script> '; DROP TABLE reports; --\nline two 磨玻璃影"
    r = c.put(url, json={"impression": evil}, headers=h("rad"))
    assert r.status_code == 200 and r.json()["impression"] == evil
    assert c.get(url, headers=h("clin")).json()["impression"] == evil
    assert c.put(url, json={"impression": "x" * 20001}, headers=h("rad")).status_code == 422
    assert c.put(url, json={}, headers=h("rad")).status_code == 422
    assert c.post(url + "/amend", headers=h("rad")).status_code == 409   # not signed yet

    # sign: who and when; then 409 for signing again and for editing
    r = c.post(url + "/sign", headers=h("rad"))
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["status"] == "signed" and rep["signed_by"] == "rad" and rep["signed_at"].endswith("Z")
    assert rep["can_edit"] is False and rep["can_sign"] is False and rep["impression"] == evil
    assert c.post(url + "/sign", headers=h("rad")).status_code == 409
    assert c.put(url, json={"impression": "changed"}, headers=h("rad")).status_code == 409
    assert c.get(url, headers=h("clin")).json()["signed_by"] == "rad"

    # amend: a draft again, editable, signed again
    r = c.post(url + "/amend", headers=h("rad"))
    assert r.status_code == 200 and r.json()["status"] == "draft" and r.json()["signed_by"] is None
    assert c.post(url + "/amend", headers=h("rad")).status_code == 409
    assert c.put(url, json={"impression": "Amended impression."}, headers=h("rad")).status_code == 200
    assert c.post(url + "/sign", headers=h("rad")).json()["impression"] == "Amended impression."

    # a consultant of another organisation, once the study is shared: reads and downloads, never signs
    share(platform, sid, "rad_b")
    r = c.get(url, headers=h("rad_b"))
    assert r.status_code == 200 and r.json()["status"] == "signed"
    assert r.json()["can_edit"] is False and r.json()["can_sign"] is False
    assert c.post(url + "/amend", headers=h("rad_b")).status_code == 403
    assert c.post(url + "/sign", headers=h("rad_b")).status_code == 403
    assert c.put(url, json={"impression": "x"}, headers=h("rad_b")).status_code == 403
    r = c.get(f"/api/studies/{sid}/report.pdf", headers=h("rad_b"))
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    assert c.get(url, headers=h("clin_b")).status_code == 404   # shared with rad_b only

    # every view, change, signature, amendment and export is in the audit log
    actions = audit_actions(platform, sid)
    for action in ("report.view", "report.update", "report.sign", "report.amend", "report.export"):
        assert action in actions, action
    assert actions.count("report.sign") == 2 and actions.count("report.amend") == 1


def test_sign_needs_a_finished_analysis(sqlite_platform, demo_zip):
    p = sqlite_platform
    r = upload(p, demo_zip)
    sid = r.json()["id"]
    rep = p.client.get(f"/api/studies/{sid}/report", headers=p.headers("rad")).json()
    assert rep["status"] == "draft" and rep["can_edit"] is True and rep["can_sign"] is False
    assert "No AI results yet" in rep["impression"]
    r = p.client.post(f"/api/studies/{sid}/report/sign", headers=p.headers("rad"))
    assert r.status_code == 409 and "not done" in r.json()["detail"]
    r = p.client.get(f"/api/studies/{sid}/report.pdf", headers=p.headers("clin"))
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    # an empty impression is not signed
    analyse_all(p)
    assert p.client.put(f"/api/studies/{sid}/report", json={"impression": "  \n "}, headers=p.headers("rad")).status_code == 200
    assert p.client.post(f"/api/studies/{sid}/report/sign", headers=p.headers("rad")).status_code == 422


def test_pdf_english_and_chinese(sqlite_platform, demo_zip, tmp_path):
    p = sqlite_platform
    sid = analysed_study(p, demo_zip)
    r = p.client.put(f"/api/studies/{sid}/clinical", json={"age": 70, "respiratory_rate": 31, "urea_mmol_l": 9,
                                                           "systolic_bp": 85, "confusion": 1},
                     headers=p.headers("clin"))
    assert r.status_code == 200, r.text

    r = p.client.get(f"/api/studies/{sid}/report.pdf", headers=p.headers("clin"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF") and "attachment" in r.headers["content-disposition"]
    en = squash(pdf_text(r.content, tmp_path))
    assert DISCLAIMER_TEXT in en
    if shutil.which("pdftotext"):
        for phrase in ("Pulmo chest-CT report", "SYNTHETIC", "DRAFT - not signed", "Per lung and region",
                       "Right middle zone", "Pneumonia screening flag: positive", "Key axial image", "CURB-65",
                       "No triage model is installed", "Pulmo 0.", "Method"):
            assert phrase in en, phrase
    pages_en = render_pages(r.content, "report-en")

    p.client.post(f"/api/studies/{sid}/report/sign", headers=p.headers("rad"))
    r = p.client.get(f"/api/studies/{sid}/report.pdf?lang=zh-CN", headers=p.headers("rad"))
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    assert b"STSong-Light" in r.content   # reportlab's built-in CID font, nothing downloaded
    pages_zh = render_pages(r.content, "report-zh")
    if shutil.which("pdftotext"):
        zh = squash(pdf_text(r.content, tmp_path))
        for phrase in ("科研工具，非经认证的医疗器械", "Pulmo 胸部 CT 报告", "由 rad 于", "签署", "各肺及各区域",
                       "右中肺区", "经典评分"):
            assert phrase in zh, phrase
        assert "DRAFT - not signed" not in zh
    if shutil.which("pdftoppm"):
        assert pages_en and pages_zh and all(png.stat().st_size > 10_000 for png in pages_en + pages_zh)
    # the user's own language is the default
    with transaction(p.app.state.sessions) as s:
        s.execute(select(User).where(User.username == "clin")).scalar_one().language = "zh-CN"
    r = p.client.get(f"/api/studies/{sid}/report.pdf", headers=p.headers("clin"))
    assert b"STSong-Light" in r.content
    if shutil.which("pdftotext"):
        assert "科研工具" in pdf_text(r.content, tmp_path)
    assert p.client.get(f"/api/studies/{sid}/report.pdf?lang=fr", headers=p.headers("clin")).status_code == 422


def crafted_study(p, results: dict, name: str = "张伟 <b>Test</b>", synthetic: bool = False) -> int:
    """A finished study whose results are given (no images), for what the demo phantom lacks."""
    with transaction(p.app.state.sessions) as s:
        org = s.execute(select(Organisation).where(Organisation.name == "Hospital A")).scalar_one()
        patient = Patient(organisation_id=org.id, patient_key="P-9", name=name, sex="M", birth_date="19500101",
                          synthetic=synthetic)
        s.add(patient)
        s.flush()
        study = Study(organisation_id=org.id, patient_id=patient.id, study_uid="1.2.3.9", description="CT chest",
                      study_date="20260101", status="done", results=results, synthetic=synthetic)
        s.add(study)
        s.flush()
        return study.id


def lobar_results(flag=True, nodules=2, complete=False) -> dict:
    region = lambda label, name, pct: {"label": label, "name": name, "volume_ml": 800.0, "lesion_ml": 8 * pct,
                                       "ggo_ml": 2 * pct, "consolidation_ml": 6 * pct, "percent_involved": pct,
                                       "score": None if not complete else 2}
    lung = {"volume_ml": 2000.0, "lesion_ml": 120.0, "ggo_ml": 30.0, "consolidation_ml": 90.0,
            "percent_involved": 6.0, "ggo_share_of_lesion_pct": 15.0}
    return {
        "schema_version": "1.0.0", "created": "2026-01-01T00:00:00+00:00", "assessable": True,
        "regions": {"kind": "lobes"}, "method": {"summary": "test method", "learned_model": {"file": "seg.onnx",
                                                                                               "version": "x"}},
        "warnings": [{"code": "partial_coverage", "message": "the lungs are only partly in view"},
                     {"code": "thick_slices", "message": "slices thicker than 5 mm"}],
        "quantification": {
            "lungs": {"right": dict(lung), "left": dict(lung, lesion_ml=0.0, percent_involved=0.0),
                      "total": dict(lung, percent_involved=3.0)},
            "regions": [region(1, "right upper lobe", 12.0), region(4, "right lower lobe", 4.0),
                        region(5, "left upper lobe", 0.0)],
            "severity": {"kind": "lobar", "name": "CT severity score, lobar (Pan et al. 2020)",
                         "value": 7 if complete else None, "max": 25, "region_min_ml": 2.0, "region_min_pct": 0.1},
            "pneumonia": {"flag": flag, "score": 3.0, "threshold": 0.5, "note": "screening flag on the plug-in lesion "
                          "model's output; not a diagnosis", "reason": "dense_lungs: the lungs read dense"
                          if flag == "indeterminate" else None},
            "coverage": {"complete": complete, "missing": [] if complete else ["lung bases"]},
            "nodules": [{"number": i + 1, "kind": "mass" if i else "nodule", "diameter_mm": 8.5 + 30 * i,
                         "long_axis_mm": 10.0, "volume_ml": 0.3, "mean_hu": 20.0, "lung": "right",
                         "region": "right upper lobe"} for i in range(nodules)],
        },
    }


def test_ai_draft_wording():
    done = lambda results: SimpleNamespace(status="done", results=results)
    text = reports.draft_impression(None, done(lobar_results()), "en")
    assert "predominantly consolidation in the right lung" in text
    assert "Severity: not scored" in text and "Coverage:" in text and "slices thicker than 5 mm" in text
    assert "No. 1: nodule, 8.5 mm, right upper lobe" in text and "No. 2: mass, 38.5 mm" in text
    assert "Fleischner" in text and "2 nodule(s) or mass(es)" in text
    assert "Most involved: right upper lobe 12.0 %, right lower lobe 4.0 %." in text
    text = reports.draft_impression(None, done(lobar_results("indeterminate", 0, True)), "en")
    assert "CT severity score, lobar (Pan et al. 2020): 7/25" in text and "indeterminate" in text
    assert "No nodules or masses found." in text and "Coverage:" not in text
    text = reports.draft_impression(None, done(lobar_results(False, 0, True)), "en")
    assert "Pneumonia screening flag: negative" in text and "no pneumonia pattern" in text
    text = reports.draft_impression(None, done({"assessable": False, "warnings": [{"code": "no_lungs",
                                                                                  "message": "no lungs"}]}), "en")
    assert "not assessable" in text and "no lungs" in text
    zh = reports.draft_impression(None, done(lobar_results()), "zh-CN")
    assert "Pulmo" in zh and "AI 草稿" in zh and "以实变为主" in zh and "右肺上叶" in zh and "结节" in zh
    assert not re.search(r"\b(Findings|Severity|Impression|Nodules)\b", zh)


def test_pdf_of_crafted_results(sqlite_platform, tmp_path):
    """Nodules, warnings, partial coverage, lobes, a Chinese patient name with markup in it and an
    impression of script text: all rendered as text, in both languages."""
    p = sqlite_platform
    sid = crafted_study(p, lobar_results())
    impression = "<b>not bold</b> & <script>x</script>\n" + "verylongword" * 30
    assert p.client.put(f"/api/studies/{sid}/report", json={"impression": impression},
                        headers=p.headers("rad")).status_code == 200
    for lang in ("en", "zh-CN"):
        r = p.client.get(f"/api/studies/{sid}/report.pdf?lang={lang}", headers=p.headers("rad"))
        assert r.status_code == 200 and r.content.startswith(b"%PDF"), r.text[:300]
        if shutil.which("pdftotext"):
            text = squash(pdf_text(r.content, tmp_path))
            assert "张伟 <b>Test</b>" in text and "<script>x</script>" in text
            if lang == "en":
                assert "Nodules / focal opacities" in text and "38.5" in text and "thick_slices" not in text
                assert "slices thicker than 5 mm" in text and "Per lung and region (lobes)" in text
                assert "No key image" in text
        render_pages(r.content, f"report-crafted-{lang}")
    # for a share link's visitor (no user): nothing to do with the report, the PDF all the same
    with transaction(p.app.state.sessions) as s:
        study = s.get(Study, sid)
        assert reports.state(s, study, None, "en")["can_edit"] is False
        data = reports.pdf(s, p.app.state.storage, study, None, "zh-CN")
    assert data.startswith(b"%PDF")
    if shutil.which("pdftotext"):
        assert "报告生成于" in pdf_text(data, tmp_path)
