"""Clinical scores (pulmo.triage.scores): every threshold at and across its cut-off, bands,
mortality look-ups, units, missing values, bad input, the table function and the CLI.

The point tables are those of docs/clinical_scores.md (sources cited there); nothing here
reads ../shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pulmo.errors import InputError
from pulmo.triage.scores import (SCORE_NAMES, SCORES, compute, crb65, curb65, isaric4c, news2, psi, qsofa,
                                 resolve_scores, score_patient, score_table)

REPO = Path(__file__).resolve().parents[2]


def item(result, key):
    return next(i for i in result.items if i.item == key).points


# Complete, normal patients for each score (every item 0 points).
CURB_NORMAL = dict(confusion="no", urea_mmol_l=5, respiratory_rate=16, systolic_bp=120, diastolic_bp=75, age=40)
NEWS_NORMAL = dict(respiratory_rate=16, spo2=97, on_oxygen="no", systolic_bp=120, pulse=70, consciousness="A",
                   temperature_c=37.0)
PSI_NORMAL = dict(age=40, sex="male", nursing_home=0, neoplastic_disease=0, liver_disease=0,
                  congestive_heart_failure=0, cerebrovascular_disease=0, renal_disease=0, altered_mental_status=0,
                  respiratory_rate=16, systolic_bp=120, temperature_c=37, pulse=80, arterial_ph=7.40, bun_mg_dl=15,
                  sodium_mmol_l=140, glucose_mg_dl=100, hematocrit_pct=40, pao2_mmhg=90, spo2=97,
                  pleural_effusion=0)
C4_NORMAL = dict(age=40, sex="female", n_comorbidities=0, respiratory_rate=16, spo2=97, on_oxygen="no", gcs=15,
                 urea_mmol_l=5, crp_mg_l=10)


def patient(base, **changes):
    d = dict(base)
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return d


# ------------------------------------------------------------------------------------------
# CURB-65 / CRB-65


@pytest.mark.parametrize("changes, key, points", [
    (dict(urea_mmol_l=7), "urea", 0),            # > 7, not >=
    (dict(urea_mmol_l=7.01), "urea", 1),
    (dict(urea_mmol_l=None, bun_mg_dl=19.6), "urea", 0),   # 19.6 / 2.8 = 7 exactly
    (dict(urea_mmol_l=None, bun_mg_dl=19.7), "urea", 1),
    (dict(respiratory_rate=29), "respiratory_rate", 0),
    (dict(respiratory_rate=29.9), "respiratory_rate", 0),
    (dict(respiratory_rate=30), "respiratory_rate", 1),
    (dict(systolic_bp=90), "blood_pressure", 0),   # < 90
    (dict(systolic_bp=89.9), "blood_pressure", 1),
    (dict(diastolic_bp=61), "blood_pressure", 0),
    (dict(diastolic_bp=60), "blood_pressure", 1),  # <= 60
    (dict(age=64), "age", 0),
    (dict(age=64.99), "age", 0),                   # completed years
    (dict(age=65), "age", 1),
    (dict(confusion="yes"), "confusion", 1),
    (dict(confusion=None, amt_score=8), "confusion", 1),   # AMT <= 8
    (dict(confusion=None, amt_score=9), "confusion", 0),
    (dict(confusion="no", amt_score=7), "confusion", 1),   # either assessment
])
def test_curb65_thresholds(changes, key, points):
    r = curb65(patient(CURB_NORMAL, **changes))
    assert item(r, key) == points
    assert r.total == points


POSITIVE_CURB = dict(confusion="yes", urea_mmol_l=9, respiratory_rate=31, systolic_bp=85, age=80)


@pytest.mark.parametrize("n, band, mortality", [
    (0, "low", "0.7%"), (1, "low", "3.2%"), (2, "moderate", "13.0%"), (3, "severe", "17.0%"),
    (4, "severe", "41.5%"), (5, "severe", "57.0%"),
])
def test_curb65_bands_and_mortality(n, band, mortality):
    keys = list(POSITIVE_CURB)[:n]
    r = curb65(patient(CURB_NORMAL, **{k: POSITIVE_CURB[k] for k in keys}))
    assert (r.total, r.band, r.mortality) == (n, band, mortality)
    assert "30-day" in r.mortality_source and "[3rd-party" in r.mortality_source
    assert "Thorax 2003;58:377-382" in r.source
    assert r.computable and r.missing == () and r.assumed_normal == ()


@pytest.mark.parametrize("n, band, mortality", [
    (0, "low", "<1%"), (1, "intermediate", "1-10%"), (2, "intermediate", "1-10%"), (3, "high", ">10%"),
    (4, "high", ">10%"),
])
def test_crb65_bands(n, band, mortality):
    pos = dict(confusion="yes", respiratory_rate=30, diastolic_bp=60, age=65)
    keys = list(pos)[:n]
    r = crb65(patient(CURB_NORMAL, urea_mmol_l=None, **{k: pos[k] for k in keys}))
    assert (r.total, r.band, r.mortality) == (n, band, mortality)
    assert "[recalled" in r.mortality_source and "[bands recalled" in r.source
    assert [i.item for i in r.items] == ["confusion", "respiratory_rate", "blood_pressure", "age"]


def test_crb65_ignores_urea():
    assert crb65(patient(CURB_NORMAL, urea_mmol_l=30)).total == 0
    assert crb65(patient(CURB_NORMAL, urea_mmol_l=None)).computable


def test_curb65_worked_example_summary():
    r = curb65(confusion="no", urea_mmol_l=8, respiratory_rate=32, systolic_bp=120, diastolic_bp=70, age=70)
    assert (r.total, r.band, r.mortality) == (3, "severe", "17.0%")
    assert [i.points for i in r.items] == [0, 1, 1, 0, 1]
    text = r.summary()
    assert "CURB-65: 3 points" in text and "urea_mmol_l = 8 mmol/L" in text and "17.0%" in text


def test_blood_pressure_either_criterion_decides():
    # Systolic < 90 decides the item even without the diastolic ...
    r = curb65(patient(CURB_NORMAL, systolic_bp=85, diastolic_bp=None))
    assert item(r, "blood_pressure") == 1 and r.computable
    # ... but a normal systolic does not: the diastolic might be <= 60.
    r = curb65(patient(CURB_NORMAL, diastolic_bp=None))
    assert item(r, "blood_pressure") is None and not r.computable
    assert r.missing == ("diastolic_bp",)


# ------------------------------------------------------------------------------------------
# qSOFA


@pytest.mark.parametrize("changes, key, points", [
    (dict(respiratory_rate=21), "respiratory_rate", 0), (dict(respiratory_rate=21.9), "respiratory_rate", 0),
    (dict(respiratory_rate=22), "respiratory_rate", 1),
    (dict(gcs=15), "altered_mentation", 0), (dict(gcs=14), "altered_mentation", 1),
    (dict(systolic_bp=101), "systolic_bp", 0), (dict(systolic_bp=100.5), "systolic_bp", 0),
    (dict(systolic_bp=100), "systolic_bp", 1),
])
def test_qsofa_thresholds(changes, key, points):
    r = qsofa(patient(dict(respiratory_rate=16, gcs=15, systolic_bp=120), **changes))
    assert item(r, key) == points and r.total == points


@pytest.mark.parametrize("values, total, band, mortality", [
    (dict(respiratory_rate=16, gcs=15, systolic_bp=120), 0, "negative", "0.8%"),
    (dict(respiratory_rate=22, gcs=15, systolic_bp=120), 1, "negative", "0.8%"),
    (dict(respiratory_rate=22, gcs=14, systolic_bp=120), 2, "positive", "6.7%"),
    (dict(respiratory_rate=22, gcs=14, systolic_bp=100), 3, "positive", "6.7%"),
])
def test_qsofa_bands(values, total, band, mortality):
    r = qsofa(values)
    assert (r.total, r.band, r.mortality) == (total, band, mortality)
    assert "PMC6859245" in r.mortality_source


# ------------------------------------------------------------------------------------------
# NEWS2

NEWS_CASES = [
    # respiration rate: <=8 3 | 9-11 1 | 12-20 0 | 21-24 2 | >=25 3
    ("respiratory_rate", "respiration_rate", [(8, 3), (8.5, 3), (9, 1), (11, 1), (11.5, 1), (12, 0), (20, 0),
                                               (20.5, 2), (21, 2), (24, 2), (24.5, 3), (25, 3), (0, 3)]),
    # systolic: <=90 3 | 91-100 2 | 101-110 1 | 111-219 0 | >=220 3
    ("systolic_bp", "systolic_bp", [(90, 3), (90.5, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0),
                                    (219, 0), (219.5, 3), (220, 3)]),
    # pulse: <=40 3 | 41-50 1 | 51-90 0 | 91-110 1 | 111-130 2 | >=131 3
    ("pulse", "pulse", [(40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2), (130, 2),
                        (131, 3)]),
    # temperature: <=35.0 3 | 35.1-36.0 1 | 36.1-38.0 0 | 38.1-39.0 1 | >=39.1 2
    ("temperature_c", "temperature", [(35.0, 3), (35.05, 3), (35.1, 1), (36.0, 1), (36.05, 1), (36.1, 0),
                                      (38.0, 0), (38.05, 1), (38.1, 1), (39.0, 1), (39.1, 2), (41, 2)]),
    # SpO2 scale 1: <=91 3 | 92-93 2 | 94-95 1 | >=96 0
    ("spo2", "spo2", [(91, 3), (91.5, 3), (92, 2), (93, 2), (94, 1), (95, 1), (95.5, 1), (96, 0), (100, 0)]),
]


@pytest.mark.parametrize("field, key, value, points",
                         [(f, k, v, p) for f, k, cases in NEWS_CASES for v, p in cases])
def test_news2_thresholds(field, key, value, points):
    r = news2(patient(NEWS_NORMAL, **{field: value}))
    assert item(r, key) == points and r.total == points


@pytest.mark.parametrize("spo2, on_oxygen, points", [
    (83, "no", 3), (84, "no", 2), (85, "no", 2), (86, "no", 1), (87, "no", 1), (88, "no", 0), (92, "no", 0),
    (93, "no", 0), (97, "no", 0), (100, "no", 0),                       # >= 93 on air: 0
    (88, "yes", 0), (92, "yes", 0), (92.5, "yes", 1), (93, "yes", 1), (94, "yes", 1), (95, "yes", 2),
    (96, "yes", 2), (97, "yes", 3), (100, "yes", 3),
])
def test_news2_spo2_scale2(spo2, on_oxygen, points):
    r = news2(patient(NEWS_NORMAL, spo2=spo2, on_oxygen=on_oxygen, spo2_scale=2))
    assert item(r, "spo2") == points
    assert r.total == points + (2 if on_oxygen == "yes" else 0)
    assert "scale 2" in next(i for i in r.items if i.item == "spo2").criterion


def test_news2_scale_selection():
    # 88% scores 3 on scale 1 but 0 on scale 2.
    assert item(news2(patient(NEWS_NORMAL, spo2=88)), "spo2") == 3
    assert item(news2(patient(NEWS_NORMAL, spo2=88, spo2_scale=1)), "spo2") == 3
    assert item(news2(patient(NEWS_NORMAL, spo2=88, hypercapnic_respiratory_failure="yes")), "spo2") == 0
    assert item(news2(patient(NEWS_NORMAL, spo2=88, hypercapnic_respiratory_failure="no")), "spo2") == 3
    with pytest.raises(InputError, match="disagrees"):
        news2(patient(NEWS_NORMAL, spo2_scale=1, hypercapnic_respiratory_failure="yes"))
    with pytest.raises(InputError, match="spo2_scale"):
        news2(patient(NEWS_NORMAL, spo2_scale=3))


def test_news2_oxygen_needed_only_where_it_matters():
    # Scale 2 at <= 92% is decided without knowing about oxygen; the air/oxygen item still needs it.
    r = news2(patient(NEWS_NORMAL, spo2=90, spo2_scale=2, on_oxygen=None))
    assert item(r, "spo2") == 0 and item(r, "air_or_oxygen") is None
    assert r.missing == ("on_oxygen",)
    r = news2(patient(NEWS_NORMAL, spo2=95, spo2_scale=2, on_oxygen=None))
    assert item(r, "spo2") is None


@pytest.mark.parametrize("level, points", [("A", 0), ("alert", 0), ("C", 3), ("new confusion", 3), ("V", 3),
                                           ("p", 3), ("U", 3), ("unresponsive", 3)])
def test_news2_consciousness(level, points):
    assert item(news2(patient(NEWS_NORMAL, consciousness=level)), "consciousness") == points


def test_news2_oxygen_item():
    assert item(news2(patient(NEWS_NORMAL, on_oxygen="yes")), "air_or_oxygen") == 2
    assert item(news2(patient(NEWS_NORMAL, on_oxygen="no")), "air_or_oxygen") == 0


@pytest.mark.parametrize("changes, total, band", [
    ({}, 0, "low"),
    (dict(respiratory_rate=22, pulse=95, temperature_c=38.5), 4, "low"),                 # 2+1+1
    (dict(consciousness="C"), 3, "low-medium"),                                         # single 3
    (dict(consciousness="C", pulse=95), 4, "low-medium"),
    (dict(consciousness="C", respiratory_rate=22), 5, "medium"),                        # >= 5 wins
    (dict(respiratory_rate=22, on_oxygen="yes", pulse=95), 5, "medium"),
    (dict(respiratory_rate=22, on_oxygen="yes", pulse=115), 6, "medium"),
    (dict(respiratory_rate=22, on_oxygen="yes", pulse=115, temperature_c=38.5), 7, "high"),
    (dict(respiratory_rate=25, spo2=91, on_oxygen="yes", systolic_bp=90, pulse=131, consciousness="U",
          temperature_c=35.0), 20, "high"),
])
def test_news2_bands(changes, total, band):
    r = news2(patient(NEWS_NORMAL, **changes))
    assert (r.total, r.band) == (total, band)
    assert r.band_text == SCORES["news2"].bands[band]
    assert r.mortality is None
    assert "RCP, 2017" in r.source and "[3rd-party" in r.source


def test_news2_fahrenheit():
    assert item(news2(patient(NEWS_NORMAL, temperature_c=None, temperature_f=100.4)), "temperature") == 0  # 38.0
    assert item(news2(patient(NEWS_NORMAL, temperature_c=None, temperature_f=100.5)), "temperature") == 1
    assert item(news2(patient(NEWS_NORMAL, temperature_c=None, temperature_f=95.0)), "temperature") == 3   # 35.0
    assert item(news2(patient(NEWS_NORMAL, temperature_c=None, temperature_f=95.18)), "temperature") == 1  # 35.1


# ------------------------------------------------------------------------------------------
# PSI / PORT


def test_psi_class1_step1():
    r = psi(PSI_NORMAL)
    assert (r.band, r.mortality) == ("I", "0.1%")
    assert r.total == 40
    # Class I needs no laboratory value, no sex and no nursing-home status.
    labs = ("arterial_ph", "bun_mg_dl", "sodium_mmol_l", "glucose_mg_dl", "hematocrit_pct", "pao2_mmhg", "spo2",
            "pleural_effusion", "sex", "nursing_home")
    r = psi(patient(PSI_NORMAL, **{k: None for k in labs}))
    assert r.band == "I" and r.computable and r.total is None and r.missing == ()


@pytest.mark.parametrize("changes, class1", [
    (dict(age=50), True), (dict(age=50.9), True), (dict(age=51), False),
    (dict(pulse=124), True), (dict(pulse=125), False),
    (dict(respiratory_rate=29), True), (dict(respiratory_rate=30), False),
    (dict(systolic_bp=90), True), (dict(systolic_bp=89), False),
    (dict(temperature_c=35.0), True), (dict(temperature_c=34.9), False),
    (dict(temperature_c=39.9), True), (dict(temperature_c=40.0), False),
    (dict(altered_mental_status="yes"), False),
    (dict(neoplastic_disease="yes"), False), (dict(liver_disease="yes"), False),
    (dict(congestive_heart_failure="yes"), False), (dict(cerebrovascular_disease="yes"), False),
    (dict(renal_disease="yes"), False),
    (dict(nursing_home="yes"), True),                # not a step-1 criterion
    (dict(arterial_ph=7.2), True),                   # labs are not either
])
def test_psi_class1_boundaries(changes, class1):
    r = psi(patient(PSI_NORMAL, **changes))
    assert (r.band == "I") is class1
    if not class1:
        assert r.band in ("II", "III", "IV", "V")


@pytest.mark.parametrize("changes, key, points", [
    (dict(nursing_home=1), "nursing_home", 10), (dict(neoplastic_disease=1), "neoplastic_disease", 30),
    (dict(liver_disease=1), "liver_disease", 20), (dict(congestive_heart_failure=1), "congestive_heart_failure", 10),
    (dict(cerebrovascular_disease=1), "cerebrovascular_disease", 10), (dict(renal_disease=1), "renal_disease", 10),
    (dict(altered_mental_status=1), "altered_mental_status", 20),
    (dict(respiratory_rate=29), "respiratory_rate", 0), (dict(respiratory_rate=30), "respiratory_rate", 20),
    (dict(systolic_bp=90), "systolic_bp", 0), (dict(systolic_bp=89.9), "systolic_bp", 20),
    (dict(temperature_c=35.0), "temperature", 0), (dict(temperature_c=34.9), "temperature", 15),
    (dict(temperature_c=39.9), "temperature", 0), (dict(temperature_c=40.0), "temperature", 15),
    (dict(pulse=124), "pulse", 0), (dict(pulse=125), "pulse", 10),
    (dict(arterial_ph=7.35), "arterial_ph", 0), (dict(arterial_ph=7.34), "arterial_ph", 30),
    (dict(bun_mg_dl=29.9), "bun", 0), (dict(bun_mg_dl=30), "bun", 20),
    (dict(bun_mg_dl=None, urea_mmol_l=10.71), "bun", 0),     # 29.988 mg/dL
    (dict(bun_mg_dl=None, urea_mmol_l=10.72), "bun", 20),    # 30.016 mg/dL
    (dict(sodium_mmol_l=130), "sodium", 0), (dict(sodium_mmol_l=129.9), "sodium", 20),
    (dict(glucose_mg_dl=249), "glucose", 0), (dict(glucose_mg_dl=250), "glucose", 10),
    (dict(glucose_mg_dl=None, glucose_mmol_l=13.88), "glucose", 0),    # 249.84 mg/dL
    (dict(glucose_mg_dl=None, glucose_mmol_l=13.9), "glucose", 10),    # 250.2 mg/dL
    (dict(hematocrit_pct=30), "hematocrit", 0), (dict(hematocrit_pct=29.9), "hematocrit", 10),
    (dict(hematocrit_pct=None, hematocrit_fraction=0.29), "hematocrit", 10),
    (dict(pao2_mmhg=60), "oxygenation", 0), (dict(pao2_mmhg=59.9), "oxygenation", 10),
    (dict(spo2=90), "oxygenation", 0), (dict(spo2=89), "oxygenation", 10),
    (dict(pao2_mmhg=None, pao2_kpa=7.9), "oxygenation", 10),           # 59.25 mmHg
    (dict(pao2_mmhg=None, pao2_kpa=8.0), "oxygenation", 0),
    (dict(pao2_mmhg=None, spo2=None, spo2_room_air=88), "oxygenation", 10),
    (dict(pleural_effusion="yes"), "pleural_effusion", 10),
])
def test_psi_points(changes, key, points):
    r = psi(patient(PSI_NORMAL, age=60, **changes))     # age 60: step 2
    assert item(r, key) == points
    assert r.total == 60 + points


def test_psi_oxygenation_alternatives():
    # PaO2 and SpO2 are alternative measurements: one present decides, either abnormal scores.
    assert item(psi(patient(PSI_NORMAL, age=60, pao2_mmhg=None)), "oxygenation") == 0
    assert item(psi(patient(PSI_NORMAL, age=60, pao2_mmhg=70, spo2=88)), "oxygenation") == 10
    r = psi(patient(PSI_NORMAL, age=60, pao2_mmhg=None, spo2=None))
    assert item(r, "oxygenation") is None and r.missing == ("pao2_mmhg or spo2",)


def test_psi_age_points_by_sex():
    assert item(psi(patient(PSI_NORMAL, age=70, sex="male")), "age") == 70
    assert item(psi(patient(PSI_NORMAL, age=70, sex="female")), "age") == 60
    assert item(psi(patient(PSI_NORMAL, age=70.8, sex="F")), "age") == 60


@pytest.mark.parametrize("changes, total, klass, mortality", [
    (dict(age=70), 70, "II", "0.6%"),
    (dict(age=71), 71, "III", "0.9%"),
    (dict(age=90), 90, "III", "0.9%"),
    (dict(age=91), 91, "IV", "9.3%"),
    (dict(age=100, nursing_home=1, congestive_heart_failure=1, renal_disease=1), 130, "IV", "9.3%"),
    (dict(age=101, nursing_home=1, congestive_heart_failure=1, renal_disease=1), 131, "V", "27.0%"),
    (dict(age=60, sex="female"), 50, "II", "0.6%"),
])
def test_psi_classes(changes, total, klass, mortality):
    r = psi(patient(PSI_NORMAL, **changes))
    assert (r.total, r.band, r.mortality) == (total, klass, mortality)
    assert "PORT validation" in r.mortality_source and "[3rd-party" in r.mortality_source


def test_psi_worked_example():
    # 72-year-old man from a nursing home with CHF, RR 32, BUN 35 mg/dL, sodium 128 mmol/L:
    # 72 + 10 + 10 + 20 + 20 + 20 = 152 -> class V.
    r = psi(patient(PSI_NORMAL, age=72, nursing_home="yes", congestive_heart_failure="yes", respiratory_rate=32,
                    bun_mg_dl=35, sodium_mmol_l=128))
    assert (r.total, r.band, r.mortality) == (152, "V", "27.0%")


def test_psi_missing_and_assumed():
    r = psi(patient(PSI_NORMAL, age=60, arterial_ph=None, hematocrit_pct=None))
    assert not r.computable and r.total is None and r.band is None
    assert r.missing == ("arterial_ph", "hematocrit_pct")
    r = psi(patient(PSI_NORMAL, age=60, arterial_ph=None, hematocrit_pct=None), assume_normal_if_missing=True)
    assert (r.total, r.band) == (60, "II") and r.assumed_normal == ("arterial_ph", "hematocrit_pct")
    # Step 1 undecided: a young patient without a pulse is not class I by default ...
    r = psi(patient(PSI_NORMAL, pulse=None))
    assert not r.computable and "pulse" in r.missing
    # ... but age is never assumed.
    r = psi(patient(PSI_NORMAL, age=None), assume_normal_if_missing=True)
    assert not r.computable and r.missing == ("age",)


# ------------------------------------------------------------------------------------------
# ISARIC 4C


@pytest.mark.parametrize("changes, key, points", [
    (dict(age=49), "age", 0), (dict(age=49.9), "age", 0), (dict(age=50), "age", 2), (dict(age=59), "age", 2),
    (dict(age=60), "age", 4), (dict(age=69), "age", 4), (dict(age=70), "age", 6), (dict(age=79), "age", 6),
    (dict(age=80), "age", 7), (dict(age=101), "age", 7),
    (dict(sex="female"), "sex", 0), (dict(sex="male"), "sex", 1), (dict(sex="M"), "sex", 1),
    (dict(n_comorbidities=0), "comorbidities", 0), (dict(n_comorbidities=1), "comorbidities", 1),
    (dict(n_comorbidities=2), "comorbidities", 2), (dict(n_comorbidities=6), "comorbidities", 2),
    (dict(respiratory_rate=19), "respiratory_rate", 0), (dict(respiratory_rate=19.9), "respiratory_rate", 0),
    (dict(respiratory_rate=20), "respiratory_rate", 1), (dict(respiratory_rate=29), "respiratory_rate", 1),
    (dict(respiratory_rate=30), "respiratory_rate", 2),
    (dict(spo2=92), "spo2_room_air", 0), (dict(spo2=91.9), "spo2_room_air", 2),
    (dict(spo2=None, on_oxygen=None, spo2_room_air=91), "spo2_room_air", 2),
    (dict(spo2=98, on_oxygen="yes", spo2_room_air=90), "spo2_room_air", 2),
    (dict(gcs=15), "gcs", 0), (dict(gcs=14), "gcs", 2),
    (dict(urea_mmol_l=6.99), "urea", 0), (dict(urea_mmol_l=7), "urea", 1), (dict(urea_mmol_l=14), "urea", 1),
    (dict(urea_mmol_l=14.01), "urea", 3),
    (dict(urea_mmol_l=None, bun_mg_dl=39.2), "urea", 1), (dict(urea_mmol_l=None, bun_mg_dl=39.3), "urea", 3),
    (dict(crp_mg_l=49.9), "crp", 0), (dict(crp_mg_l=50), "crp", 1), (dict(crp_mg_l=99.9), "crp", 1),
    (dict(crp_mg_l=100), "crp", 2), (dict(crp_mg_l=None, crp_mg_dl=10), "crp", 2),
    (dict(crp_mg_l=None, crp_mg_dl=4.9), "crp", 0),
])
def test_isaric4c_thresholds(changes, key, points):
    r = isaric4c(patient(C4_NORMAL, **changes))
    assert item(r, key) == points and r.total == points


@pytest.mark.parametrize("changes, missing", [
    (dict(on_oxygen="yes"), ("spo2_room_air",)),       # SpO2 on oxygen is not room air
    (dict(on_oxygen=None), ("on_oxygen",)),
    (dict(spo2=None), ("spo2_room_air or spo2",)),
])
def test_isaric4c_needs_room_air_saturation(changes, missing):
    r = isaric4c(patient(C4_NORMAL, **changes))
    assert item(r, "spo2_room_air") is None and not r.computable and r.missing == missing


MAX_4C = dict(age=85, sex="male", n_comorbidities=3, respiratory_rate=35, spo2_room_air=85, gcs=10,
              urea_mmol_l=20, crp_mg_l=200)


@pytest.mark.parametrize("changes, total, band, mortality", [
    ({}, 0, "low", "1.2%"),
    (dict(age=50, sex="male"), 3, "low", "2.3%"),
    (dict(age=50, sex="male", n_comorbidities=1), 4, "intermediate", "4.8%"),
    (dict(age=80, respiratory_rate=20), 8, "intermediate", "14.4%"),
    (dict(age=80, respiratory_rate=30), 9, "high", "19.2%"),
    (dict(age=80, respiratory_rate=30, spo2=90, urea_mmol_l=7, crp_mg_l=50), 13, "high", "40.1%"),
    (dict(age=80, sex="male", respiratory_rate=30, spo2=90, urea_mmol_l=7, crp_mg_l=50), 14, "high", "44.6%"),
    (dict(age=80, sex="male", respiratory_rate=30, spo2=90, urea_mmol_l=7, crp_mg_l=100), 15, "very high",
     "51.6%"),
])
def test_isaric4c_bands_and_mortality(changes, total, band, mortality):
    r = isaric4c(patient(C4_NORMAL, **changes))
    assert (r.total, r.band, r.mortality) == (total, band, mortality)
    if total == 0:   # not in the per-score table: the risk group's figure, marked as recalled
        assert "[recalled" in r.mortality_source
    else:
        assert "Figure 2" in r.mortality_source and "[3rd-party" in r.mortality_source


def test_isaric4c_maximum():
    r = isaric4c(MAX_4C)
    assert (r.total, r.band, r.mortality) == (21, "very high", "87.5%")


# ------------------------------------------------------------------------------------------
# Missing values, units, validation


def test_missing_is_not_normal():
    r = curb65(patient(CURB_NORMAL, urea_mmol_l=None))
    assert not r.computable and r.total is None and r.band is None and r.mortality is None
    assert r.missing == ("urea_mmol_l",)
    assert item(r, "urea") is None and item(r, "age") == 0
    assert "not computable" in r.summary() and "urea_mmol_l (or bun_mg_dl)" in r.summary()


def test_assume_normal_reports_what_was_assumed():
    r = curb65(patient(CURB_NORMAL, urea_mmol_l=None, confusion=None), assume_normal_if_missing=True)
    assert (r.total, r.band) == (0, "low")
    assert r.assumed_normal == ("confusion or amt_score", "urea_mmol_l") and r.missing == ()
    r = curb65(patient(CURB_NORMAL, age=None), assume_normal_if_missing=True)
    assert not r.computable and r.missing == ("age",)


def test_empty_input_lists_everything():
    r = news2({})
    assert not r.computable
    assert set(r.missing) == {"respiratory_rate", "spo2", "on_oxygen", "systolic_bp", "pulse", "consciousness",
                              "temperature_c"}


def test_linked_units_must_agree():
    assert curb65(patient(CURB_NORMAL, urea_mmol_l=8, bun_mg_dl=22.4)).total == 1
    with pytest.raises(InputError, match="disagrees"):
        curb65(patient(CURB_NORMAL, urea_mmol_l=8, bun_mg_dl=40))
    with pytest.raises(InputError, match="disagrees"):
        news2(patient(NEWS_NORMAL, temperature_c=37, temperature_f=101))


def test_unit_conversions_are_exact_at_cut_offs():
    from pulmo.triage.scores_io import parse_record

    v = parse_record(urea_mmol_l=7, glucose_mmol_l=13.9, temperature_f=100.4, hematocrit_fraction=0.57,
                     crp_mg_dl=0.7, pao2_kpa=8).values
    assert v["bun_mg_dl"][0] == 19.6            # 7 x 2.8 is 19.599999999999998 in floating point
    assert v["glucose_mg_dl"][0] == 250.2
    assert v["temperature_c"][0] == 38.0
    assert v["hematocrit_pct"][0] == 57.0
    assert v["crp_mg_l"][0] == 7.0
    assert v["pao2_mmhg"][0] == pytest.approx(60.00496)
    v = parse_record(bun_mg_dl=19.6, temperature_c=37).values
    assert v["urea_mmol_l"][0] == 7.0 and v["temperature_f"][0] == 98.6


@pytest.mark.parametrize("values, field, words", [
    (dict(respiratory_rate=-3), "respiratory_rate", "impossible"),
    (dict(spo2=101), "spo2", "impossible"),
    (dict(spo2=0.95), "spo2", "fraction"),
    (dict(temperature_c=80), "temperature_c", "impossible"),
    (dict(temperature_c=98.6), "temperature_c", "temperature_f"),
    (dict(temperature_f=37), "temperature_f", "temperature_c"),
    (dict(gcs=2), "gcs", "impossible"),
    (dict(gcs=16), "gcs", "impossible"),
    (dict(gcs=14.5), "gcs", "whole number"),
    (dict(systolic_bp="high"), "systolic_bp", "not a number"),
    (dict(age=130), "age", "impossible"),
    (dict(sex="other"), "sex", "male or female"),
    (dict(consciousness="drowsy"), "consciousness", "ACVPU"),
    (dict(on_oxygen="maybe"), "on_oxygen", "yes/no"),
    (dict(on_oxygen=2), "on_oxygen", "yes/no"),
    (dict(hematocrit_pct=0.35), "hematocrit_pct", "hematocrit_fraction"),
    (dict(glucose_mg_dl=6), "glucose_mg_dl", "glucose_mmol_l"),
    (dict(pao2_mmhg=9), "pao2_mmhg", "pao2_kpa"),
    (dict(amt_score=11), "amt_score", "impossible"),
    (dict(systolic_bp=80, diastolic_bp=120), "diastolic_bp", "swapped"),
])
def test_bad_values_name_the_field(values, field, words):
    with pytest.raises(InputError) as exc:
        score_patient(values)
    assert f"'{field}'" in str(exc.value) and words in str(exc.value)


@pytest.mark.parametrize("text, value", [("1", 1), ("0", 0), ("yes", 1), ("No", 0), ("TRUE", 1), ("false", 0),
                                         ("y", 1), ("n", 0), (True, 1), (False, 0), (1, 1), (0.0, 0)])
def test_booleans(text, value):
    assert item(news2(patient(NEWS_NORMAL, on_oxygen=text)), "air_or_oxygen") == 2 * value


@pytest.mark.parametrize("text", ["", "NA", "n/a", None, float("nan")])
def test_missing_tokens(text):
    assert item(curb65(patient(CURB_NORMAL, urea_mmol_l=text)), "urea") is None


def test_aliases_and_unknown_names():
    r = qsofa({"RR": "22", "Resp. rate": None} if False else {"RR": "22", "GCS": 14, "SBP (mmHg)": 120})
    assert r.total == 2
    with pytest.raises(InputError, match="did you mean 'respiratory_rate'"):
        qsofa(respiratory_rat=22)
    assert qsofa({"respiratory_rate": 22, "patient_id": "x"}, ignore_unknown=True).items[0].points == 1
    with pytest.raises(InputError, match="both give respiratory rate"):
        qsofa(rr=22, respiratory_rate=22)
    with pytest.raises(InputError, match="glucose_mg_dl or glucose_mmol_l"):
        psi(glucose=200)
    assert curb65(glucose=200).computable is False     # not a CURB-65 input: not validated


def test_resolve_scores():
    assert resolve_scores(None) == SCORE_NAMES
    assert resolve_scores("CURB-65, news2,4C,port") == ("curb65", "news2", "isaric4c", "psi")
    assert resolve_scores("all") == SCORE_NAMES
    with pytest.raises(InputError, match="unknown score"):
        resolve_scores("apache")
    assert compute("CRB-65", CURB_NORMAL).score == "crb65"


def test_results_are_frozen_and_serialisable():
    r = curb65(CURB_NORMAL)
    with pytest.raises(AttributeError):
        r.total = 5
    d = json.loads(json.dumps(r.to_dict()))
    assert d["total"] == 0 and d["computable"] is True and d["items"][0]["item"] == "confusion"


def test_sources_mark_secondary_figures():
    assert "[3rd-party" in SCORES["curb65"].source
    assert "[bands recalled" in SCORES["crb65"].source
    assert "[3rd-party" in SCORES["psi"].source and "[3rd-party" in SCORES["news2"].source
    assert "BMJ 2020;370:m3339" in SCORES["isaric4c"].source


# ------------------------------------------------------------------------------------------
# score_table


def test_score_table_matches_single_patient():
    rng = np.random.default_rng(7)
    n = 300
    df = pd.DataFrame({
        "age": rng.integers(18, 100, n), "sex": rng.choice(["male", "female"], n),
        "RR": rng.integers(6, 40, n), "SBP": rng.integers(70, 230, n), "DBP": rng.integers(30, 69, n),
        "pulse": rng.integers(35, 150, n), "SpO2": rng.integers(80, 101, n),
        "on_oxygen": rng.choice(["yes", "no", None], n), "hypercapnic": rng.choice(["yes", "no"], n),
        "ACVPU": rng.choice(list("ACVPU"), n), "temperature_c": np.round(rng.uniform(34, 41, n), 1),
        "GCS": rng.integers(10, 16, n), "confusion": rng.choice([0, 1], n),
        "urea_mmol_l": np.round(rng.uniform(2, 20, n), 1), "crp_mg_l": rng.integers(0, 300, n),
        "n_comorbidities": rng.integers(0, 4, n), "sodium_mmol_l": rng.integers(120, 150, n),
        "glucose_mmol_l": np.round(rng.uniform(3, 20, n), 1), "arterial_ph": np.round(rng.uniform(7.2, 7.5, n), 2),
        "hematocrit_pct": rng.integers(20, 50, n), "pao2_mmhg": rng.integers(50, 100, n),
        **{k: rng.choice([0, 1], n, p=[0.8, 0.2]) for k in
           ("nursing_home", "neoplastic_disease", "liver_disease", "congestive_heart_failure",
            "cerebrovascular_disease", "renal_disease", "altered_mental_status", "pleural_effusion")},
    })
    out = score_table(df, items=True)
    assert out["error"].eq("").all()
    assert out["news2_points"].notna().sum() > 0 and out["news2_points"].isna().sum() > 0
    for i in range(0, n, 7):
        row = {k: v for k, v in df.iloc[i].items() if v is not None}
        for key, r in score_patient(row).items():
            got = out.iloc[i]
            assert (None if pd.isna(got[f"{key}_points"]) else int(got[f"{key}_points"])) == r.total
            assert (None if pd.isna(got[f"{key}_band"]) else got[f"{key}_band"]) == r.band
            assert got[f"{key}_missing"] == "; ".join(r.missing)
            for it in r.items:
                cell = got[f"{key}_{it.item}"]
                assert (None if pd.isna(cell) else int(cell)) == it.points


def test_score_table_columns_errors_and_rows():
    df = pd.DataFrame({"id": ["a", "b", "c"], "resp_rate": ["32", "-1", "18"], "sbp": ["85", "120", "abc"],
                       "dbp": ["50", "70", "70"], "Age": ["70", "40", "50"], "confusion": ["no", "no", "yes"],
                       "Urea (mmol/L)": ["8", "5", "5"]}, index=[2, 3, 4])
    out = score_table(df, "curb65,crb65")
    assert list(out.columns[:7]) == list(df.columns)
    assert list(out.columns[7:]) == ["curb65_points", "curb65_band", "curb65_mortality", "curb65_missing",
                                     "crb65_points", "crb65_band", "crb65_mortality", "crb65_missing",
                                     "warnings", "error"]
    assert str(out["curb65_points"].dtype) == "Int64"
    assert out.loc[2, "curb65_points"] == 4 and out.loc[2, "curb65_band"] == "severe"
    assert out.loc[3, "error"].startswith("row 3, column 'resp_rate': respiratory rate -1 /min is impossible")
    assert "row 4, column 'sbp': 'abc' is not a number" in out.loc[4, "error"]
    assert out.loc[[3, 4], "curb65_points"].isna().all() and out.loc[[3, 4], "curb65_band"].isna().all()
    assert out.attrs["unused_columns"] == ["id"] and out.attrs["columns"]["respiratory_rate"] == "resp_rate"


def test_score_table_assume_normal_and_warnings():
    df = pd.DataFrame({"age": [16, 70], "respiratory_rate": [32, 16], "systolic_bp": [120, 120],
                       "diastolic_bp": [70, 70], "confusion": ["no", None]})
    out = score_table(df, "curb65", assume_normal_if_missing=True)
    assert list(out["curb65_points"]) == [1, 1]
    assert list(out["curb65_assumed"]) == ["urea_mmol_l", "confusion or amt_score; urea_mmol_l"]
    assert "developed in adults" in out.loc[0, "warnings"]


def test_score_table_psi_class1_needs_no_labs():
    step1 = {k: PSI_NORMAL[k] for k in ("age", "neoplastic_disease", "liver_disease", "congestive_heart_failure",
                                        "cerebrovascular_disease", "renal_disease", "altered_mental_status",
                                        "respiratory_rate", "systolic_bp", "temperature_c", "pulse")}
    df = pd.DataFrame([step1, dict(step1, age=60)])
    out = score_table(df, "psi")
    assert list(out["psi_band"]) == ["I", None]
    assert out.loc[0, "psi_missing"] == "" and pd.isna(out.loc[0, "psi_points"])
    assert out.loc[1, "psi_missing"].startswith("sex; nursing_home; arterial_ph")


def test_score_table_refuses_unusable_tables():
    with pytest.raises(InputError, match="none of the columns"):
        score_table(pd.DataFrame({"foo": [1], "bar": [2]}), "curb65")
    with pytest.raises(InputError, match="no patient rows"):
        score_table(pd.DataFrame({"respiratory_rate": []}), "curb65")
    with pytest.raises(InputError, match="would overwrite"):
        score_table(pd.DataFrame({"respiratory_rate": [20], "qsofa_points": [1]}), "qsofa")
    with pytest.raises(InputError, match="does not say its unit"):
        score_table(pd.DataFrame({"respiratory_rate": [20], "urea": [7]}), "curb65")


def test_score_table_numeric_and_bool_dtypes():
    df = pd.DataFrame({"respiratory_rate": [22.0, np.nan], "gcs": [14, 15], "systolic_bp": [100, 130],
                       "on_oxygen": [True, False]})
    out = score_table(df, "qsofa")
    assert list(out["qsofa_points"].astype("float").fillna(-1)) == [3, -1]
    assert out.loc[1, "qsofa_missing"] == "respiratory_rate"


# ------------------------------------------------------------------------------------------
# CLI

HEADER = "id,RR,SBP,DBP,age,sex,urea_mmol_l,confusion,spo2,on_oxygen,pulse,acvpu,temperature_c,gcs,crp_mg_l"
GOOD = "p1,32,85,50,70,male,8,no,91,yes,110,A,38.5,15,120"
GOOD2 = "p2,16,125,80,40,female,5,no,97,no,70,A,37,15,10"


def run(*args):
    r = subprocess.run([sys.executable, "-m", "pulmo", "triage", "score", *map(str, args)],
                       capture_output=True, text=True, cwd=REPO)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def write(tmp_path, text, name="in.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_cli_table_exit_0(tmp_path):
    out = tmp_path / "out.csv"
    r = run(write(tmp_path, f"{HEADER}\n{GOOD}\n{GOOD2}\n"), "--scores", "curb65,news2,qsofa", "-o", out)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert list(df.columns[:15]) == HEADER.split(",")
    assert list(df["curb65_points"]) == ["4", "0"] and list(df["curb65_band"]) == ["severe", "low"]
    assert list(df["curb65_mortality"]) == ["41.5%", "0.7%"]
    assert list(df["news2_points"]) == ["13", "0"] and list(df["news2_band"]) == ["high", "low"]
    assert list(df["qsofa_band"]) == ["positive", "negative"]
    assert "news2_mortality" not in df.columns
    assert list(df["error"]) == ["", ""]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["in.csv", "out.csv"]   # no temporary left


def test_cli_partial_failure_exit_1(tmp_path):
    bad = GOOD.replace("p1,32", "p3,-4").replace("38.5", "98.6")
    out = tmp_path / "out.csv"
    r = run(write(tmp_path, f"{HEADER}\n{GOOD}\n{bad}\n{GOOD2}\n"), "--scores", "curb65,news2", "-o", out)
    assert r.returncode == 1
    df = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert list(df["error"] == "") == [True, False, True]
    assert "row 3, column 'RR'" in df.loc[1, "error"] and "temperature_f" in df.loc[1, "error"]
    assert df.loc[1, "curb65_points"] == "" and df.loc[2, "curb65_points"] == "0"
    assert "row 3, column 'RR'" in r.stderr


def test_cli_strict_writes_nothing(tmp_path):
    out = tmp_path / "out.csv"
    r = run(write(tmp_path, f"{HEADER}\n{GOOD}\n{GOOD.replace('32', '-4')}\n"), "-o", out, "--strict")
    assert r.returncode == 1 and not out.exists() and "nothing written" in r.stderr


def test_cli_missing_inputs_are_reported_not_failed(tmp_path):
    out = tmp_path / "out.csv"
    r = run(write(tmp_path, "RR,SBP,DBP,age,confusion\n32,120,70,70,no\n"), "-o", out, "--scores", "curb65,crb65")
    assert r.returncode == 0
    df = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert df.loc[0, "curb65_points"] == "" and df.loc[0, "curb65_missing"] == "urea_mmol_l"
    assert df.loc[0, "crb65_points"] == "2"
    assert "CURB-65 could not be computed for any row; missing: urea_mmol_l" in r.stderr


@pytest.mark.parametrize("content, args, message", [
    (None, [], "file not found"),
    ("", [], "empty"),
    ("foo,bar\n1,2\n", [], "none of the columns"),
    ("RR,SBP\n", [], "no patient rows"),
    ("RR,SBP\n20,120\n", ["--scores", "apache"], "unknown score"),
    ("RR,glucose\n20,120\n", ["--scores", "psi"], "does not say its unit"),
])
def test_cli_unusable_input_exit_2(tmp_path, content, args, message):
    path = tmp_path / "in.csv" if content is None else write(tmp_path, content)
    r = run(path, "-o", tmp_path / "out.csv", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "out.csv").exists()


def test_cli_json_table(tmp_path):
    out = tmp_path / "out.json"
    r = run(write(tmp_path, f"{HEADER}\n{GOOD}\n"), "--scores", "isaric4c", "--json", "-o", out)
    assert r.returncode == 0
    rec = json.loads(out.read_text())[0]
    assert rec["isaric4c_points"] is None and rec["isaric4c_missing"] == "n_comorbidities; spo2_room_air"


def test_cli_single_patient():
    r = run("--set", "respiratory_rate=32", "--set", "urea_mmol_l=8", "--set", "age=70", "--set", "confusion=no",
            "--set", "systolic_bp=120", "--set", "diastolic_bp=70", "--scores", "curb65")
    assert r.returncode == 0, r.stderr
    assert "CURB-65: 3 points" in r.stdout and "severe" in r.stdout and "17.0%" in r.stdout
    lines = {ln.split()[0]: ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("  ") and "  [" in ln}
    assert lines == {"confusion": "0", "urea": "1", "respiratory_rate": "1", "blood_pressure": "0", "age": "1"}


def test_cli_single_patient_json_and_errors(tmp_path):
    r = run("--set", "rr=22", "--set", "gcs=14", "--set", "sbp=100", "--scores", "qsofa", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["qsofa"]["total"] == 3
    r = run("--set", "temperature_c=98.6", "--scores", "news2")
    assert r.returncode == 2 and "temperature_f" in r.stderr
    r = run("--set", "rr32")
    assert r.returncode == 2 and "NAME=VALUE" in r.stderr
    r = run(write(tmp_path, "RR\n20\n"), "--set", "rr=3")
    assert r.returncode == 2 and "not both" in r.stderr
    r = run()
    assert r.returncode == 2 and "--set" in r.stderr


def test_cli_semicolon_decimal_comma_items_and_assume_normal(tmp_path):
    out = tmp_path / "out.csv"
    path = write(tmp_path, "RR;SBP;GCS;temperature_c\n22;100;15;38,5\n12;130;;36,0\n")
    r = run(path, "--scores", "qsofa", "--items", "--assume-normal", "-o", out)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert list(df["qsofa_points"]) == ["2", "0"]
    assert list(df["qsofa_respiratory_rate"]) == ["1", "0"] and list(df["qsofa_systolic_bp"]) == ["1", "0"]
    assert list(df["qsofa_assumed"]) == ["", "gcs"]
