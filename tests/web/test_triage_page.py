"""The triage calculator page and its API with a real (synthetic) model: the page for every role
and a redirect for an anonymous visitor, the study link (``?study=ID``), the probabilities with
their interval, the risk group, the survival curve and the contributions, the classic scores, a CSV
batch round trip (formula cells escaped), impossible values refused with the library's message;
and in a real browser (Debian's Chromium through Playwright, a live ``pulmo serve``): fill the
form, see the charts, the messages for bad values, the batch download, saving to a study, and the
page in Chinese. Screenshots go to /tmp/screens/ (outside the repository)."""

from __future__ import annotations

import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from synthetic_triage import make_synthetic_model
from web_kit import PASSWORD, make_platform, sign_in, start_server, upload

from pulmo.triage.schema import FEATURE_NAMES
from pulmo.web.db import transaction
from pulmo.web.models import AuditEntry, ClinicalData, User

SCREENS = Path("/tmp/screens")
PATIENT = {"age": 66, "xray_abnormality": 1, "dyspnea": 1, "comorbidities": 2, "malignancy": 0, "copd": 0,
           "nlr": 7.5, "ldh": 410, "direct_bilirubin": 5.1, "creatine_kinase": 150}
SCORES_IN = {"respiratory_rate": 31, "systolic_bp": 85, "diastolic_bp": 55, "urea_mmol_l": 9, "confusion": 1}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "synthetic.pulmo-triage"
    make_synthetic_model().save(path)
    return path


@pytest.fixture
def model_platform(tmp_path, model_file):
    """A platform on SQLite whose triage model comes from the settings (as PULMO_TRIAGE_MODEL)."""
    p = make_platform(tmp_path / "data", triage_model=model_file)
    yield p
    p.client.close()
    p.app.state.engine.dispose()


def set_language(p, username: str, lang: str) -> None:
    with transaction(p.app.state.sessions) as s:
        s.execute(select(User).where(User.username == username)).scalar_one().language = lang


# ----------------------------------------------------------------------------- the page


def test_page_for_every_role_and_anonymous(sqlite_platform):
    p = sqlite_platform
    for user in p.users:
        r = p.client.get("/triage", headers=p.headers(user))
        assert r.status_code == 200, user
        html = r.text
        assert "Triage calculator" in html and 'id="triage-form"' in html and "/static/triage.js" in html
        for name in FEATURE_NAMES + ("respiratory_rate", "urea_mmol_l", "spo2", "consciousness", "sex"):
            assert f'name="{name}"' in html, name
        assert "U/L" in html and "µmol/L" in html and "mmHg" in html and "years" in html
        assert 'id="no-model"' in html and "https://github.com/cojocchen/covid19_critically_ill" in html
        assert "Research tool, not a certified medical device." in html
        assert ("/admin" in html) == (user == "admin")
    r = p.client.get("/triage?study=5", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/triage%3Fstudy%3D5"
    set_language(p, "clin", "zh-CN")
    html = p.client.get("/triage", headers=p.headers("clin")).text
    for zh in ("分诊计算器", "乳酸脱氢酶", "经典评分", "未安装危重症预测模型", "上传并计算", "呼吸频率"):
        assert zh in html, zh


def test_page_linked_to_a_study(sqlite_platform, demo_zip):
    p = sqlite_platform
    sid = upload(p, demo_zip).json()["id"]
    features = {**PATIENT, "LDH": None, "ldh": None, "ldh_ukat_l": 5, "bun_mg_dl": 30, "patient_id": "A-1",
                "n_comorbidities": None}
    features.pop("LDH")
    r = p.client.put(f"/api/studies/{sid}/clinical", json=features, headers=p.headers("clin"))
    assert r.status_code == 422 and "ldh" in r.json()["detail"]      # two columns give LDH
    features.pop("ldh")
    assert p.client.put(f"/api/studies/{sid}/clinical", json=features, headers=p.headers("clin")).status_code == 200

    def page_data(user, query=f"?study={sid}"):
        r = p.client.get("/triage" + query, headers=p.headers(user))
        start = r.text.index('<template id="triage-data">') + len('<template id="triage-data">')
        return r, json.loads(r.text[start:r.text.index("</template>", start)])

    r, data = page_data("rad")
    assert r.status_code == 200 and f'href="/studies/{sid}"' in r.text and 'id="save-study"' in r.text
    study = data["study"]
    assert study["id"] == sid and study["can_save"] is True and study["synthetic"] is True
    assert study["features"]["ldh"] == pytest.approx(300.0)          # 5 µkat/L, in the model's unit
    assert study["features"]["bun_mg_dl"] == 30 and study["features"]["age"] == 66
    assert study["features"]["comorbidities"] == 2 and study["features"]["n_comorbidities"] is None
    assert study["extra"] == {"patient_id": "A-1"} and study["triage"]["scores"]
    r, data = page_data("clin")
    assert data["study"]["can_save"] is True
    for outsider in ("rad_b", "admin"):
        r, data = page_data(outsider)
        assert r.status_code == 404 and data["study"] == {"missing": True}
        assert "There is no such study" in r.text and "A-1" not in r.text
    r, data = page_data("rad", "?study=abc")
    assert r.status_code == 404 and 'id="triage-form"' in r.text
    with transaction(p.app.state.sessions) as s:
        views = s.execute(select(AuditEntry.detail).where(AuditEntry.action == "study.view",
                                                          AuditEntry.target_id == str(sid))).scalars().all()
    assert any('"triage"' in v for v in views)


# ----------------------------------------------------------------------------- the API with a model


def test_prediction_with_a_real_model(model_platform):
    p = model_platform
    model = make_synthetic_model()
    info = p.client.get("/api/triage/model", headers=p.headers("clin")).json()
    assert info["installed"] is True and info["horizons"] == [5.0, 10.0, 30.0]
    assert info["risk_low_max"] == pytest.approx(model.risk_low_max)

    r = p.client.post("/api/triage/predict", json={**PATIENT, **SCORES_IN}, headers=p.headers("clin"))
    assert r.status_code == 200, r.text
    out = r.json()
    pred = out["prediction"]
    assert pred["error"] is None and pred["imputed"] == [] and pred["n_imputations"] == 0
    probs = pred["probabilities"]
    assert [q["days"] for q in probs] == [5.0, 10.0, 30.0]
    values = [q["value"] for q in probs]
    assert 0 < values[0] <= values[1] <= values[2] < 1
    assert all(q["low"] == pytest.approx(q["value"]) == pytest.approx(q["high"]) for q in probs)   # complete row
    raw = np.array([[PATIENT[f] for f in model.features]], dtype=float)
    _, final = model.linear_predictor(raw)
    final = float(np.ravel(final)[0])
    for q in probs:
        assert q["value"] == pytest.approx(float(model.probability(final, q["days"])), rel=1e-9)
    p30 = values[2]
    assert pred["risk_group"] == ("low" if p30 <= model.risk_low_max else "high" if p30 > model.risk_high_min
                                  else "medium")
    curve = pred["survival_curve"]
    assert [c["day"] for c in curve] == list(range(31))
    assert curve[0]["prob_critical"] == 0.0
    assert all(a["prob_critical"] <= b["prob_critical"] + 1e-12 for a, b in itertools.pairwise(curve))
    for q in probs:
        assert curve[int(q["days"])]["prob_critical"] == pytest.approx(q["value"])
    contrib = pred["contributions"]
    assert set(contrib) == set(FEATURE_NAMES)
    _, ref = model.linear_predictor(model.reference[None, :])
    assert sum(contrib.values()) == pytest.approx(final - float(np.ravel(ref)[0]), abs=1e-6)
    assert out["scores"]["curb65"]["total"] == 5 and out["scores"]["curb65"]["band"] == "severe"
    assert out["scores"]["curb65"]["band_text"] and out["scores"]["curb65"]["mortality"]

    # one value missing: imputed, with an interval; the curve has one too
    r = p.client.post("/api/triage/predict", json={**PATIENT, "ldh": None}, headers=p.headers("rad"))
    pred = r.json()["prediction"]
    assert pred["imputed"] == ["ldh"] and pred["n_imputations"] > 1
    assert any(q["low"] < q["high"] for q in pred["probabilities"])
    assert all(q["low"] <= q["value"] <= q["high"] for q in pred["probabilities"])
    assert any(c["prob_critical_low"] < c["prob_critical_high"] for c in pred["survival_curve"])
    # a feature absent from the JSON counts as missing; too many missing: not scored, the scores still are
    partial = {k: v for k, v in PATIENT.items() if k != "nlr"}
    assert p.client.post("/api/triage/predict", json=partial, headers=p.headers("rad")).json()["prediction"]["imputed"] == ["nlr"]
    r = p.client.post("/api/triage/predict", json={"age": 70, **SCORES_IN}, headers=p.headers("rad"))
    assert r.status_code == 200
    assert "at most 3 can be imputed" in r.json()["prediction"]["error"] and r.json()["scores"]["crb65"]["total"] == 4
    # the model's count of comorbidities and the ISARIC 4C count side by side
    r = p.client.post("/api/triage/predict", json={**PATIENT, "n_comorbidities": 4}, headers=p.headers("rad"))
    assert r.status_code == 200 and r.json()["prediction"]["error"] is None
    assert p.client.post("/api/triage/predict", json=PATIENT).status_code == 401


def test_model_imported_by_an_admin(sqlite_platform, model_file):
    from pulmo.web.services import triage

    p = sqlite_platform
    assert p.client.post("/api/triage/predict", json=PATIENT, headers=p.headers("clin")).json()["prediction"] is None
    with transaction(p.app.state.sessions) as s:
        info = triage.import_model(s, p.settings, model_file, model_file.name)
    assert info["installed"] is True
    pred = p.client.post("/api/triage/predict", json=PATIENT, headers=p.headers("clin")).json()["prediction"]
    assert pred["risk_group"] in ("low", "medium", "high") and pred["survival_curve"]
    html = p.client.get("/triage", headers=p.headers("clin")).text
    assert 'id="no-model"' not in html and 'id="model-info"' in html


@pytest.mark.parametrize("bad, field, words", [
    ({"age": 400}, "age", "impossible"),
    ({"ldh": -5}, "ldh", "impossible"),
    ({"copd": 3}, "copd", "impossible"),
    ({"age": "sixty"}, "age", "not a number"),
    ({"temperature_c": 101}, "temperature_c", "°F"),
    ({"spo2": 0.95}, "spo2", "fraction"),
    ({"respiratory_rate": 500}, "respiratory_rate", "impossible"),
    ({"consciousness": "Q"}, "consciousness", "ACVPU"),
])
def test_impossible_values_are_refused(model_platform, bad, field, words):
    p = model_platform
    r = p.client.post("/api/triage/predict", json={**PATIENT, **bad}, headers=p.headers("clin"))
    assert r.status_code == 422
    body = r.json()
    assert isinstance(body["detail"], str) and words in body["detail"] and field in body["fields"]
    assert words in body["fields"][field]


def test_impossible_values_are_not_stored(model_platform, demo_zip):
    p = model_platform
    sid = upload(p, demo_zip).json()["id"]
    r = p.client.put(f"/api/studies/{sid}/clinical", json={**PATIENT, "age": 400}, headers=p.headers("clin"))
    assert r.status_code == 422 and "age" in r.json()["fields"]
    with transaction(p.app.state.sessions) as s:
        assert s.execute(select(ClinicalData).where(ClinicalData.study_id == sid)).scalar() is None
    assert p.client.post("/api/triage/predict", json=[1, 2], headers=p.headers("clin")).status_code == 422
    r = p.client.post("/api/triage/predict", json={"x" * 100: 1}, headers=p.headers("clin"))
    assert r.status_code == 400 and "feature names" in r.json()["detail"]
    r = p.client.put(f"/api/studies/{sid}/clinical", json=PATIENT, headers=p.headers("clin"))
    assert r.status_code == 200 and r.json()["prediction"]["risk_group"]


def test_batch_csv_round_trip(model_platform):
    p = model_platform
    rows = [
        {"patient_id": '=HYPERLINK("http://evil.example","x")', **PATIENT},
        {"patient_id": "+cmd", **PATIENT, "ldh": ""},
        {"patient_id": "bad", **PATIENT, "age": 400},
    ]
    csv = pd.DataFrame(rows).to_csv(index=False).encode()
    r = p.client.post("/api/triage/batch", files={"file": ("patients.csv", csv, "text/csv")}, headers=p.headers("clin"))
    assert r.status_code == 200, r.text
    assert r.headers["x-pulmo-rows"] == "3" and r.headers["x-pulmo-failed"] == "1"
    assert "attachment" in r.headers["content-disposition"] and r.headers["content-type"].startswith("text/csv")
    assert "'=HYPERLINK" in r.text and "'+cmd" in r.text
    out = pd.read_csv(io.StringIO(r.text), keep_default_na=False)
    assert list(out["patient_id"]) == ["'" + rows[0]["patient_id"], "'+cmd", "bad"]
    one = p.client.post("/api/triage/predict", json=PATIENT, headers=p.headers("clin")).json()["prediction"]
    assert float(out.loc[0, "prob_critical_30d"]) == pytest.approx(one["probabilities"][2]["value"])
    assert out.loc[0, "risk_group"] == one["risk_group"]
    assert out.loc[1, "imputed"] == "ldh" and float(out.loc[1, "prob_critical_30d_low"]) <= float(out.loc[1, "prob_critical_30d"])
    assert "impossible" in out.loc[2, "error"] and out.loc[2, "prob_critical_30d"] == ""

    # a file the calculator cannot read: a clear 4xx
    r = p.client.post("/api/triage/batch", files={"file": ("x.csv", b"age,ldh\n66,410\n", "text/csv")},
                      headers=p.headers("clin"))
    assert r.status_code == 400 and "missing required column" in r.json()["detail"]
    r = p.client.post("/api/triage/batch", files={"file": ("x.csv", b"", "text/csv")}, headers=p.headers("clin"))
    assert r.status_code == 400
    assert p.client.post("/api/triage/batch", files={"file": ("x.csv", csv, "text/csv")}).status_code == 401


def test_batch_without_a_model_gives_the_scores(sqlite_platform):
    p = sqlite_platform
    csv = b"patient_id,age,respiratory_rate,systolic_bp,diastolic_bp,urea_mmol_l,confusion\n@SUM(A1),70,31,85,50,9,yes\n"
    r = p.client.post("/api/triage/batch", files={"file": ("s.csv", csv, "text/csv")}, headers=p.headers("rad"))
    assert r.status_code == 200 and r.headers["x-pulmo-failed"] == "0"
    out = pd.read_csv(io.StringIO(r.text), keep_default_na=False)
    assert out.loc[0, "patient_id"] == "'@SUM(A1)" and int(out.loc[0, "curb65_points"]) == 5


# ----------------------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def triage_site(tmp_path_factory, model_file):
    """A live ``pulmo serve`` with the synthetic model (PULMO_TRIAGE_MODEL), a clinician of the
    admin's organisation, and a study of theirs."""
    httpx = pytest.importorskip("httpx")
    root = tmp_path_factory.mktemp("triage-site")
    server = start_server(root / "data", "--workers", "0", env={"PULMO_TRIAGE_MODEL": str(model_file)})
    try:
        client = httpx.Client(base_url=server.url, timeout=60)
        admin = client.post("/api/auth/token", data={"username": "admin", "password": PASSWORD}).json()["access_token"]
        ah = {"Authorization": f"Bearer {admin}"}
        org = client.get("/api/me", headers=ah).json()["organisation"]
        r = client.post("/api/users", json={"username": "clin", "password": PASSWORD, "role": "clinician",
                                            "organisation": org}, headers=ah)
        assert r.status_code == 201, r.text
        token = client.post("/api/auth/token", data={"username": "clin", "password": PASSWORD}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        from web_kit import demo_zip_bytes

        r = client.post("/api/studies", files={"file": ("ct.zip", demo_zip_bytes(root / "ct"), "application/zip")},
                        headers=headers)
        assert r.status_code == 201, r.text
        yield {"server": server, "client": client, "headers": headers, "study": r.json()["id"], "root": root}
    finally:
        server.stop()


FORM = {"age": "66", "comorbidities": "2", "nlr": "7.5", "ldh": "410", "creatine_kinase": "150",
        "respiratory_rate": "31", "systolic_bp": "85", "diastolic_bp": "55", "urea_mmol_l": "9"}
CHOICES = {"xray_abnormality": "1", "dyspnea": "1", "malignancy": "0", "copd": "0", "confusion": "1"}


def fill(page) -> None:
    for k, v in FORM.items():
        page.fill(f"#f-{k}", v)
    for k, v in CHOICES.items():
        page.select_option(f"#f-{k}", v)


def open_calculator(page, url: str, query: str = "") -> None:
    page.goto(url + "/triage" + query)
    page.wait_for_selector("body[data-ready='1']")


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


@pytest.mark.slow
def test_calculator_in_the_browser(triage_site, desktop, phone):
    url = triage_site["server"].url
    SCREENS.mkdir(parents=True, exist_ok=True)
    page = desktop.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, url, "clin")
    open_calculator(page, url)
    page.screenshot(path=str(SCREENS / "triage-desktop-empty.png"))

    # a value outside the field's range: refused in the browser, next to the field
    fill(page)
    page.fill("#f-age", "400")
    page.click("#calculate")
    page.wait_for_selector("#err-age:not([hidden])")
    assert "0" in page.inner_text("#err-age") and "120" in page.inner_text("#err-age")
    assert page.get_attribute("#f-age", "aria-invalid") == "true"
    # a value only the server can refuse: its message, next to the field
    page.fill("#f-age", "66")
    page.evaluate("document.getElementById('f-temperature_c').removeAttribute('max')")
    page.fill("#f-temperature_c", "101")
    page.click("#calculate")
    page.wait_for_selector("#err-temperature_c:not([hidden])")
    assert "°F" in page.inner_text("#err-temperature_c") and "°F" in page.inner_text("#form-msg")
    page.fill("#f-temperature_c", "")

    # results: probabilities, risk group, survival curve, contributions, scores
    page.click("#calculate")
    page.wait_for_selector("#curve svg path.line")
    body = page.inner_text("#results-body")
    assert "Risk group" in body and "30 days" in body and "CURB-65" in body and "severe" in body
    assert page.locator("#contributions svg rect").count() == 10
    assert page.locator("#curve svg circle.dot").count() == 3
    assert page.locator("#results-body [data-score='curb65'] td.num").first.inner_text() == "5"
    page.screenshot(path=str(SCREENS / "triage-desktop.png"))
    page.locator("#triage-results").screenshot(path=str(SCREENS / "triage-desktop-results.png"))

    # CSV batch: upload, a result to download, a preview
    csv = triage_site["root"] / "patients.csv"
    values = {**PATIENT, "direct_bilirubin": ""}
    csv.write_text("patient_id," + ",".join(FEATURE_NAMES) + "\n=1+1," + ",".join(str(values[f]) for f in FEATURE_NAMES) + "\n")
    page.set_input_files("#batch-file", str(csv))
    page.click("#batch-run")
    page.wait_for_selector("#batch-download:not([hidden])")
    assert "1 rows, 0 not scored" in page.inner_text("#batch-msg")
    with page.expect_download() as dl:
        page.click("#batch-download")
    text = Path(dl.value.path()).read_text()
    assert "prob_critical_30d" in text and "'=1+1" in text
    assert page.locator("#batch-preview tbody tr").count() == 1

    # in Chinese: the labels, and the results
    page.select_option("#language", "zh-CN")
    page.wait_for_selector("html[lang='zh-CN'] body[data-ready='1']")
    assert "分诊计算器" in page.inner_text("h1") and "计算" in page.inner_text("#calculate")
    assert "乳酸脱氢酶" in page.inner_text("#model-fields")
    fill(page)
    page.click("#calculate")
    page.wait_for_selector("#curve svg path.line")
    body = page.inner_text("#results-body")
    assert "风险分组" in body and "经典评分" in body and "30 天内" in body
    page.screenshot(path=str(SCREENS / "triage-desktop-zh.png"))
    page.select_option("#language", "en")
    page.wait_for_selector("html[lang='en'] body[data-ready='1']")
    assert not errors, errors
    page.close()

    # phone (390 px): nothing wider than the screen, the charts drawn
    page = phone.new_page()
    sign_in(page, url, "clin")
    open_calculator(page, url)
    assert no_horizontal_scroll(page)
    page.screenshot(path=str(SCREENS / "triage-phone-empty.png"))
    fill(page)
    page.click("#calculate")
    page.wait_for_selector("#contributions svg rect")
    assert no_horizontal_scroll(page)
    width = page.evaluate("document.querySelector('#curve svg').getBoundingClientRect().width")
    assert 250 < width <= 390
    page.screenshot(path=str(SCREENS / "triage-phone.png"))
    page.locator("#triage-results").screenshot(path=str(SCREENS / "triage-phone-results.png"))
    page.close()


@pytest.mark.slow
def test_calculator_saves_to_the_study(triage_site, desktop):
    url, sid = triage_site["server"].url, triage_site["study"]
    page = desktop.new_page()
    sign_in(page, url, "clin")
    open_calculator(page, url, f"?study={sid}")
    assert page.get_attribute("#back-to-study", "href") == f"/studies/{sid}"
    assert "SYNTHETIC" in page.inner_text("#linked-study")
    fill(page)
    page.select_option('select[data-unit-for="ldh"]', "ldh_ukat_l")
    page.fill("#f-ldh", "6")     # µkat/L: saved as 360 U/L
    page.click("#save-study")
    page.wait_for_selector("#form-msg.ok")
    page.wait_for_selector("#curve svg path.line")
    study = triage_site["client"].get(f"/api/studies/{sid}", headers=triage_site["headers"]).json()
    features = study["clinical"]["features"]
    assert features["ldh"] == pytest.approx(360.0) and features["age"] == 66 and features["confusion"] == 1
    assert study["triage_risk"] in ("low", "medium", "high")
    # reopened: the saved values are in the form
    open_calculator(page, url, f"?study={sid}")
    assert page.input_value("#f-ldh") == "360" and page.input_value("#f-respiratory_rate") == "31"
    assert page.input_value("#f-comorbidities") == "2" and page.input_value("#f-n_comorbidities") == ""
    assert page.input_value("#f-confusion") == "1" and page.input_value('select[data-unit-for="ldh"]') == ""
    assert page.locator("#curve svg path.line").count() == 1
    page.screenshot(path=str(SCREENS / "triage-desktop-study.png"))
    page.close()
    assert math.isfinite(study["triage_prob30"])
