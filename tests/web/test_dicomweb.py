"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS) through a standard client, dicomweb-client, against a real
`pulmo serve`: a study stored by STOW-RS is analysed, and its SEG, SR and Secondary Captures come
back as series of the same study; another organisation sees nothing; no token, no answer."""

from __future__ import annotations

import io
import time
import zipfile

import pydicom
import pytest

from web_kit import PASSWORD

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dw(live_server, demo_zip):
    httpx = pytest.importorskip("httpx")
    client_mod = pytest.importorskip("dicomweb_client.api")
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        admin = http.post("/api/auth/token", data={"username": "admin", "password": PASSWORD}).json()["access_token"]
        for name, org in (("dw_rad", "DW Hospital"), ("dw_out", "Elsewhere")):
            r = http.post("/api/users", headers={"Authorization": "Bearer " + admin},
                          json={"username": name, "password": PASSWORD, "role": "radiologist", "organisation": org})
            assert r.status_code in (201, 409), r.text
        tok = {n: http.post("/api/auth/token", data={"username": n, "password": PASSWORD}).json()["access_token"]
               for n in ("dw_rad", "dw_out")}

    def client(user):
        return client_mod.DICOMwebClient(url=live_server.url + "/dicomweb",
                                         headers={"Authorization": "Bearer " + tok[user]})

    with zipfile.ZipFile(io.BytesIO(demo_zip)) as z:
        datasets = [pydicom.dcmread(io.BytesIO(z.read(n))) for n in z.namelist()]
    return {"client": client, "datasets": datasets, "url": live_server.url, "tokens": tok}


def test_stow_then_qido_and_wado_with_the_analysis_results(dw):
    c = dw["client"]("dw_rad")
    ds = dw["datasets"]
    study_uid = ds[0].StudyInstanceUID
    answer = c.store_instances(ds)
    assert "00081190" in answer
    assert c.store_instances(ds[:3])                        # the same instances again: deduplicated, not refused
    end = time.time() + 300
    series = []
    while time.time() < end:
        series = c.search_for_series(study_uid)
        modalities = {s["00080060"]["Value"][0] for s in series}
        if {"SEG", "SR"} <= modalities:
            break
        time.sleep(2)
    assert {"CT", "SEG", "SR", "OT"} <= modalities or {"CT", "SEG", "SR"} <= modalities, modalities
    found = c.search_for_studies(search_filters={"PatientID": ds[0].PatientID})
    assert [s["0020000D"]["Value"][0] for s in found] == [study_uid]
    assert found[0]["00201208"]["Value"][0] >= len(ds) + 2
    seg_series = next(s["0020000E"]["Value"][0] for s in series if s["00080060"]["Value"][0] == "SEG")
    seg_inst = c.search_for_instances(study_uid, seg_series)[0]["00080018"]["Value"][0]
    seg = c.retrieve_instance(study_uid, seg_series, seg_inst)
    assert seg.Modality == "SEG" and len(seg.SegmentSequence) >= 3
    labels = [s.SegmentLabel.lower() for s in seg.SegmentSequence]
    assert any("lung" in x for x in labels), labels
    # the SEG refers to the CT instances the viewer retrieves from the same server
    ct = ds[len(ds) // 2]
    got = c.retrieve_instance(study_uid, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert got.SOPInstanceUID == ct.SOPInstanceUID and got.pixel_array.shape == ct.pixel_array.shape
    frame = c.retrieve_instance_frames(study_uid, ct.SeriesInstanceUID, ct.SOPInstanceUID, [1])[0]
    assert frame == ct.PixelData
    meta = c.retrieve_instance_metadata(study_uid, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert meta["00280010"]["Value"][0] == ct.Rows and "BulkDataURI" in meta["7FE00010"]
    seg_frames = c.retrieve_instance_frames(study_uid, seg_series, seg_inst, [1, 2])
    assert len(seg_frames) == 2


def test_another_organisation_and_anonymous_see_nothing(dw):
    import httpx

    study_uid = dw["datasets"][0].StudyInstanceUID
    out = dw["client"]("dw_out")
    assert out.search_for_studies() == []
    with pytest.raises(Exception) as err:
        out.search_for_series(study_uid)
    assert "404" in str(err.value)
    with httpx.Client(base_url=dw["url"], timeout=30) as http:
        assert http.get("/dicomweb/studies").status_code == 401
        assert http.get(f"/dicomweb/studies/{study_uid}/series",
                        headers={"Authorization": "Bearer forged"}).status_code == 401
        h = {"Authorization": "Bearer " + dw["tokens"]["dw_rad"]}
        assert http.get("/dicomweb/studies/1.2.3'%20OR%201=1/series", headers=h).status_code == 400
        assert http.get("/dicomweb/studies", params={"StudyDate": "yesterday"}, headers=h).status_code == 400
        r = http.post("/dicomweb/studies", headers={**h, "Content-Type": "application/json"}, content=b"{}")
        assert r.status_code == 415
        boundary = "b0undary"
        body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\nnot dicom at all\r\n--{boundary}--\r\n"
        r = http.post("/dicomweb/studies", headers={**h, "Content-Type":
                                                   f'multipart/related; type="application/dicom"; boundary={boundary}'},
                      content=body.encode())
        assert r.status_code == 409 and "00081198" in r.json()


def test_a_chunked_body_past_the_limit_is_refused(tmp_path):
    from web_kit import make_platform

    p = make_platform(tmp_path / "data", max_upload_mb=1)
    try:
        def chunks():
            for _ in range(40):
                yield b"\0" * 65536

        r = p.client.post("/dicomweb/studies", headers={**p.headers("rad"), "Content-Type":
                                                       'multipart/related; type="application/dicom"; boundary=x'},
                          content=chunks())
        assert r.status_code == 413 and "upload limit" in r.json()["detail"], r.text
        r = p.client.post("/api/studies", headers={**p.headers("rad"),
                                                   "Content-Type": "multipart/form-data; boundary=x"}, content=chunks())
        assert r.status_code == 413
    finally:
        p.client.close()
        p.app.state.engine.dispose()
