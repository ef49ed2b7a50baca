"""The worklist (``GET /api/studies``, :mod:`pulmo.web.services.worklist`) against a brute-force
reference computed here: every sort order (NULLs last), the status and flag filters, the name
search, paging, and the studies another organisation shared with the user, on SQLite and
PostgreSQL, through both strategies of the query (walking the sort order's index, or sorting a
small filtered set) and both ways of the name search (a few patients by id, many by subquery).
Its speed with 100,000 studies: ``benchmarks/bench_web.py``."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from sqlalchemy import insert, select

from pulmo.web.models import Organisation, Patient, Study, StudyShare, User
from pulmo.web.services import worklist

NAMES = ["Li^Ming", "Liu^Wei", "Ali^Omar", "Wang^Fang", "Smith^Ava", "Lina^Rossi", "Zhang^Li", "Kim^Sam", "Chen^Jia"]
KEYS = {"priority": ("priority", "received_at"), "received": ("received_at",),
        "percent": ("percent_involved", "received_at"), "risk": ("triage_prob30", "received_at")}


def _populate(platform, n: int = 240, seed: int = 3):
    rng = random.Random(seed)
    engine = platform.app.state.engine
    with engine.begin() as c:
        orgs = dict(c.execute(select(Organisation.name, Organisation.id)).all())
        users = dict(c.execute(select(User.username, User.id)).all())
        patients = []
        for k in range(40):
            org = orgs["Hospital A"] if k % 4 else orgs["Hospital B"]
            pid = c.execute(insert(Patient).values(organisation_id=org, patient_key=f"WL-{k:03d}",
                                                   name=NAMES[k % len(NAMES)], birth_date="19600101", sex="F",
                                                   synthetic=False)).inserted_primary_key[0]
            patients.append({"id": pid, "organisation_id": org, "patient_key": f"WL-{k:03d}",
                             "name": NAMES[k % len(NAMES)]})
        t0 = dt.datetime(2026, 1, 1)
        studies = []
        for k in range(n):
            p = rng.choice(patients)
            status = rng.choice(("done", "done", "done", "queued", "running", "failed"))
            flag = rng.choice(("positive", "negative", "indeterminate")) if status == "done" else ""
            risk = rng.choice((None, None, 0.05, 0.2, 0.6)) if rng.random() < 0.6 else None
            if risk is not None:
                risk += rng.random() / 100
            row = {"organisation_id": p["organisation_id"], "patient_id": p["id"], "study_uid": f"1.2.3.{k}",
                   "status": status, "flag": flag, "received_at": t0 + dt.timedelta(minutes=7 * k + rng.randrange(5)),
                   "percent_involved": round(rng.uniform(0, 50), 3) if status == "done" else None,
                   "triage_prob30": risk, "priority": rng.randrange(4), "n_instances": 1}
            row["id"] = c.execute(insert(Study).values(**row)).inserted_primary_key[0]
            studies.append(row)
        shared = {s["id"] for s in studies if s["organisation_id"] == orgs["Hospital B"]}
        shared = set(sorted(shared)[:6])
        for sid in shared:
            c.execute(insert(StudyShare).values(study_id=sid, user_id=users["rad"], shared_by=users["rad_b"]))
    visible = shared | {s["id"] for s in studies if s["organisation_id"] == orgs["Hospital A"]}
    return studies, patients, visible, {s["id"] for s in studies if s["organisation_id"] == orgs["Hospital B"]}


def _reference(studies, patients, visible, params) -> list[int]:
    by_id = {p["id"]: p for p in patients}
    rows = [s for s in studies if s["id"] in visible]
    if params.get("status"):
        rows = [s for s in rows if s["status"] == params["status"]]
    if params.get("flag"):
        rows = [s for s in rows if s["flag"] == ("" if params["flag"] == "none" else params["flag"])]
    if params.get("q"):
        q = params["q"].lower()
        rows = [s for s in rows if q in by_id[s["patient_id"]]["name"].lower()
                or q in by_id[s["patient_id"]]["patient_key"].lower()]
    cols = KEYS[params.get("sort", "priority")]
    rows.sort(key=lambda s: tuple((s[c] is not None, s[c] if s[c] is not None else 0) for c in cols), reverse=True)
    return [s["id"] for s in rows]


FILTERS = [{}, {"status": "done"}, {"status": "queued"}, {"flag": "positive"}, {"flag": "none"},
           {"q": "li"}, {"q": "LI^"}, {"q": "wl-00"}, {"q": "nobody"}, {"q": "%"}, {"q": "_"},
           {"status": "done", "flag": "negative", "q": "a"}]


@pytest.mark.parametrize("strategy", ["index", "small-set"])
def test_worklist_matches_a_brute_force_reference(platform, monkeypatch, strategy):
    studies, patients, visible, of_b = _populate(platform)
    if strategy == "index":   # always walk the sort order's index; the name search by subquery
        monkeypatch.setattr(worklist, "SMALL_SET", -1)
        monkeypatch.setattr(worklist, "FEW_PATIENTS", 0)
    else:                     # always sort the filtered set; the name search by patient ids
        monkeypatch.setattr(worklist, "SMALL_SET", 10**9)
    headers = platform.headers("rad")
    checked = 0
    for sort in KEYS:
        for flt in FILTERS:
            params = {**flt, "sort": sort}
            want = _reference(studies, patients, visible, params)
            for limit, offset in ((500, 0), (7, 0), (7, 14), (10, len(want) - 3), (5, len(want) + 5)):
                r = platform.client.get("/api/studies", params={**params, "limit": limit, "offset": max(offset, 0)},
                                        headers=headers)
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["total"] == len(want), (params, body["total"], len(want))
                got = [s["id"] for s in body["items"]]
                assert got == want[max(offset, 0):max(offset, 0) + limit], (params, limit, offset)
                checked += 1
    assert checked == len(KEYS) * len(FILTERS) * 5
    # the other organisation sees its own studies only (none of A's, and what it shared stays its own)
    for params in ({}, {"sort": "risk", "q": "li"}):
        body = platform.client.get("/api/studies", params={**params, "limit": 500}, headers=platform.headers("rad_b")).json()
        want = _reference(studies, patients, of_b, params)
        assert body["total"] == len(want) and [s["id"] for s in body["items"]] == want
