"""Classic clinical severity scores: CURB-65, CRB-65, qSOFA, NEWS2, PSI/PORT and ISARIC 4C.

>>> from pulmo.triage.scores import curb65
>>> r = curb65(confusion="no", urea_mmol_l=8, respiratory_rate=32, systolic_bp=120,
...            diastolic_bp=70, age=70)
>>> r.total, r.band, r.mortality
(3, 'severe', '17.0%')
>>> print(r.summary())                                              # doctest: +SKIP

One patient: :func:`curb65`, :func:`crb65`, :func:`qsofa`, :func:`news2`, :func:`psi`,
:func:`isaric4c` (or :func:`compute` / :func:`score_patient`), each returning a frozen
:class:`ScoreResult` with the points of every item. Many patients: :func:`score_table`.
Inputs, units and accepted column names: :mod:`pulmo.triage.scores_io`.

Each score is written once, as a vectorised function of input arrays; the single-patient
functions run it on a one-row table. The point tables are those of the published sources
(see ``docs/clinical_scores.md``), with these conventions:

* **Missing values.** An item whose inputs are missing is *undetermined*, and a score with an
  undetermined item is not computable (``total`` and ``band`` are None; ``missing`` names the
  inputs). An item is still determined when the present inputs decide it (CURB-65 systolic
  85 mmHg scores 1 whatever the diastolic). ``assume_normal_if_missing=True`` scores
  undetermined items 0 and lists their inputs in ``assumed_normal``; age and sex are never
  assumed. PSI class I (step 1) needs no laboratory value.
* **Units.** Each score compares in its source's unit: urea in mmol/L for CURB-65 and 4C,
  BUN and glucose in mg/dL for PSI (a value in the other unit is converted first:
  BUN = urea x 2.8, mg/dL glucose = mmol/L x 18), temperature in °C.
* **Age** counts completed years (64.9 -> 64).
* **NEWS2 ranges.** The chart's ranges are contiguous at its resolution (whole numbers;
  0.1 °C); a value between two printed ranges (e.g. 38.05 °C) is placed in the range farther
  from normal.

Pulmo is a research tool, not a certified medical device.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from pulmo.errors import InputError
from pulmo.triage.scores_io import (BY_NAME, CONSCIOUSNESS_CODES, LINKS, ParsedInputs, parse_record,
                                    parse_table)

__all__ = ["ItemPoints", "ScoreResult", "ScoreInfo", "ScoreSummary", "PatientScores", "ScoreBatch", "SCORES",
           "SCORE_NAMES", "curb65", "crb65", "qsofa", "news2", "psi", "isaric4c", "compute", "score_patient",
           "score_table", "score_records", "resolve_scores"]


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class ItemPoints:
    """Points of one item of a score for one patient.

    ``points`` is None when the item is undetermined (``missing`` names the inputs);
    ``inputs`` are the (name, value) pairs it was decided on, values as text with units.
    """

    item: str
    criterion: str
    points: int | None
    inputs: tuple[tuple[str, str], ...] = ()
    missing: tuple[str, ...] = ()
    assumed_normal: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScoreResult:
    """One score for one patient.

    Attributes
    ----------
    score, title : key (``"curb65"``) and display name (``"CURB-65"``).
    total : total points, None when not computable (and for PSI class I without the
        step-2 inputs, where the class needs no points).
    band : short band / class / risk group (``"severe"``, ``"III"``, ``"very high"``), None when
        not computable; ``band_text`` is its published wording.
    mortality, mortality_source : the published mortality at this score or band (text, e.g.
        ``"17.0%"``, ``"1-10%"``) and what it is (outcome, cohort, citation); None where the
        source gives none.
    items : the points of each item.
    missing, assumed_normal : inputs that were missing / assumed normal.
    source : the citation of the score's definition; ``[3rd-party]`` / ``[recalled]`` mark
        figures taken from a secondary source.
    warnings : notes on unusual values.
    """

    score: str
    title: str
    total: int | None
    band: str | None
    band_text: str | None
    mortality: str | None
    mortality_source: str | None
    items: tuple[ItemPoints, ...]
    missing: tuple[str, ...]
    assumed_normal: tuple[str, ...]
    source: str
    warnings: tuple[str, ...] = ()

    @property
    def computable(self) -> bool:
        return self.band is not None

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        d = asdict(self)
        d["computable"] = self.computable
        return d

    def summary(self) -> str:
        """A readable multi-line account: total, band, mortality, then each item's points."""
        info = SCORES[self.score]
        if self.computable:
            rng = "" if info.max_points is None else f" (range 0-{info.max_points})"
            pts = "" if self.total is None else f"{self.total} points{rng} -> "
            head = f"{self.title}: {pts}{self.band}: {self.band_text}"
        else:
            head = f"{self.title}: not computable; missing: {', '.join(_with_partners(self.missing))}"
        lines = [head]
        if self.computable and self.mortality:
            lines.append(f"  mortality: {self.mortality} ({self.mortality_source})")
        if self.assumed_normal:
            lines.append(f"  assumed normal (missing): {', '.join(self.assumed_normal)}")
        if self.score == "psi" and self.band == "I" and any(it.points is None for it in self.items):
            lines.append("  step 1 assigns class I; the step-2 items below are not needed")
        width = max(len(it.item) for it in self.items)
        for it in self.items:
            p = "?" if it.points is None else str(it.points)
            given = ", ".join(f"{k} = {v}" for k, v in it.inputs)
            note = (f"missing {', '.join(it.missing)}" if it.missing else
                    f"assumed normal ({', '.join(it.assumed_normal)} missing)" if it.assumed_normal else given)
            lines.append(f"  {it.item:<{width}}  {p:>3}  [{it.criterion}]  {note}")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        lines.append(f"  source: {self.source}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ScoreInfo:
    """What a score reads and reports.

    ``inputs`` are canonical input names (:data:`pulmo.triage.scores_io.FIELDS`); ``bands``
    maps each band to its published wording; ``max_points`` is the highest total (None for
    PSI, whose age points are unbounded); ``mortality`` says whether a published mortality is
    reported.
    """

    key: str
    title: str
    source: str
    inputs: tuple[str, ...]
    bands: Mapping[str, str]
    max_points: int | None
    mortality: bool


# --------------------------------------------------------------------------------------------
# Vectorised building blocks (float arrays; NaN = missing / undetermined)


def _flag(cond: np.ndarray, *inputs: np.ndarray) -> np.ndarray:
    """``cond`` as 1.0/0.0, NaN where any of ``inputs`` is NaN."""
    out = np.asarray(cond, dtype=np.float64).copy()
    for x in inputs:
        out[np.isnan(x)] = np.nan
    return out


def _or(*flags: np.ndarray) -> np.ndarray:
    """Either criterion (Kleene): 1 if any is 1, 0 if all are 0, else undetermined."""
    s = np.vstack(flags)
    return np.where((s == 1).any(0), 1.0, np.where((s == 0).all(0), 0.0, np.nan))


def _alternatives(*flags: np.ndarray) -> np.ndarray:
    """Alternative measurements of one thing: decided by whichever is present."""
    s = np.vstack(flags)
    return np.where((s == 1).any(0), 1.0, np.where((s == 0).any(0), 0.0, np.nan))


def _steps(x: np.ndarray, rules: list[tuple[np.ndarray, float]], default: float) -> np.ndarray:
    """First matching rule's points (``default`` if none), NaN where ``x`` is NaN."""
    out = np.select([c for c, _ in rules], [float(p) for _, p in rules], default=float(default))
    out[np.isnan(x)] = np.nan
    return out


def _age(v: Mapping[str, np.ndarray]) -> np.ndarray:
    """Age in completed years."""
    return np.floor(v["age"])


#: (input name(s), rows where it is missing) pairs, in order of first appearance.
_Labels = list[tuple[str, np.ndarray]]


@dataclass
class _Item:
    key: str
    criterion: str | np.ndarray
    points: np.ndarray
    inputs: tuple[str, ...]
    missing: _Labels
    assumable: bool = True
    assumed: _Labels = field(default_factory=list)


def _item(v, key: str, criterion, points: np.ndarray, requires: tuple[tuple[str, ...], ...],
          *, inputs: tuple[str, ...] | None = None, assumable: bool = True,
          missing: _Labels | None = None) -> _Item:
    """An item. Where it is undetermined, ``missing`` defaults to those ``requires`` groups
    (alternatives within a group) of which no input is present."""
    undetermined = np.isnan(points)
    if missing is None:
        missing = []
        for group in requires:
            mask = undetermined & np.logical_and.reduce([np.isnan(v[f]) for f in group])
            missing.append((" or ".join(group), mask))
    missing = [(label, mask) for label, mask in missing if mask.any()]
    inputs = inputs or tuple(f for g in requires for f in g)
    unexplained = undetermined & ~np.logical_or.reduce([m for _, m in missing] or [np.zeros_like(undetermined)])
    if unexplained.any():  # never silently undetermined: name every input of the item
        missing.append((" or ".join(inputs), unexplained))
    return _Item(key, criterion, points, inputs, missing, assumable)


def _bool_item(v, name: str, points: int) -> _Item:
    x = v[name]
    return _item(v, name, f"{BY_NAME[name].label}: +{points}", _flag(x == 1, x) * points, ((name,),))


def _merge(lists: Iterable[_Labels]) -> _Labels:
    merged: dict[str, np.ndarray] = {}
    for labels in lists:
        for label, mask in labels:
            merged[label] = merged[label] | mask if label in merged else mask
    return list(merged.items())


def _per_row(labels: _Labels, n: int) -> list[tuple[str, ...]]:
    """Per-row tuples of the labels whose mask is set (vectorised over distinct patterns)."""
    if not labels:
        return [()] * n
    names = [label for label, _ in labels]
    bits = np.vstack([m for _, m in labels]).T
    if len(names) < 63:  # one integer code per pattern: a 1-D unique is much faster
        codes, inverse = np.unique(bits.astype(np.int64) @ (np.int64(1) << np.arange(len(names), dtype=np.int64)),
                                   return_inverse=True)
        patterns = ((codes[:, None] >> np.arange(len(names))) & 1).astype(bool)
    else:  # pragma: no cover - no score has that many inputs
        patterns, inverse = np.unique(bits, axis=0, return_inverse=True)
    joined = [tuple(nm for nm, on in zip(names, p) if on) for p in patterns]
    return [joined[j] for j in inverse.ravel()]


def _at(labels: _Labels, i: int) -> tuple[str, ...]:
    return tuple(label for label, mask in labels if mask[i])


@dataclass
class _Scored:
    """A score over n rows: totals (NaN = not computable), bands and mortality (object, None)."""

    items: list[_Item]
    total: np.ndarray
    band: np.ndarray
    mortality: np.ndarray
    mortality_source: np.ndarray
    missing: _Labels
    assumed: _Labels


def _resolve(items: list[_Item], assume: bool) -> tuple[_Labels, _Labels]:
    """Apply ``assume_normal_if_missing``; the score's missing and assumed inputs."""
    for it in items:
        if assume and it.assumable and it.missing:
            it.points = np.where(np.isnan(it.points), 0.0, it.points)
            it.assumed, it.missing = it.missing, []
    return _merge(it.missing for it in items), _merge(it.assumed for it in items)


def _total(items: list[_Item]) -> np.ndarray:
    return np.sum(np.vstack([it.points for it in items]), axis=0)


def _band_by_total(total: np.ndarray, cuts: list[tuple[float, str]]) -> np.ndarray:
    """``cuts``: (inclusive upper bound, band) in increasing order, the last bound inf; None where NaN."""
    idx = np.searchsorted(np.array([hi for hi, _ in cuts], dtype=float), total, side="left")
    idx[np.isnan(total)] = len(cuts)
    return np.array([b for _, b in cuts] + [None], dtype=object)[idx]


def _lookup(keys: np.ndarray, table: Mapping, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Mortality text per row from ``table`` (keyed by band or integer total), and its source."""
    mort = np.array([None if k is None or k != k else table.get(k) for k in keys.tolist()], dtype=object)
    return mort, np.where(mort == None, None, source).astype(object)  # noqa: E711


def _finish(items: list[_Item], assume: bool, cuts: list[tuple[float, str]], by: str,
            table: Mapping, source: str) -> _Scored:
    """Common tail: totals, bands by total, mortality by ``"total"`` or ``"band"``."""
    missing, assumed = _resolve(items, assume)
    total = _total(items)
    band = _band_by_total(total, cuts)
    mort, src = _lookup(total if by == "total" else band, table, source)
    return _Scored(items, total, band, mort, src, missing, assumed)


# --------------------------------------------------------------------------------------------
# CURB-65 and CRB-65 (Lim 2003; BTS 2009)

_CURB65_SOURCE = ("Lim WS, van der Eerden MM, Laing R, et al. Thorax 2003;58:377-382 [3rd-party: criteria "
                  "and management groups as reproduced by the uiowa family-medicine page, icuroom-pearls, "
                  "bugsanddrugs]")
_CURB65_MORTALITY = {0: "0.7%", 1: "3.2%", 2: "13.0%", 3: "17.0%", 4: "41.5%", 5: "57.0%"}
_CURB65_MORTALITY_SOURCE = ("30-day mortality at this score, Lim WS et al. Thorax 2003;58:377-382 "
                            "[3rd-party: as reproduced by icuroom-pearls / caddy.health]")
_CURB65_BANDS = {
    "low": "0-1: low severity; consider home treatment",
    "moderate": "2: consider hospital-supervised treatment",
    "severe": ">=3: severe pneumonia; consider ICU (especially 4-5)",
}
_CRB65_SOURCE = ("Lim WS et al. Thorax 2003;58:377-382; British Thoracic Society CAP guideline 2009 (Lim WS "
                 "et al. Thorax 2009;64 Suppl 3:iii1-55) [bands recalled; verify wording in BTS 2009]")
_CRB65_BANDS = {
    "low": "0: low risk (<1% mortality); likely suitable for home treatment",
    "intermediate": "1-2: intermediate risk (1-10% mortality); consider hospital referral",
    "high": "3-4: high risk (>10% mortality); urgent hospital admission",
}
_CRB65_MORTALITY = {"low": "<1%", "intermediate": "1-10%", "high": ">10%"}
_CRB65_MORTALITY_SOURCE = ("mortality of the BTS risk group, BTS CAP guideline 2009 (Lim WS et al. Thorax "
                           "2009;64 Suppl 3:iii1-55) [recalled; verify in BTS 2009]")


def _curb_items(v, *, urea: bool) -> list[_Item]:
    c, amt = v["confusion"], v["amt_score"]
    items = [_item(v, "confusion", "new confusion (disorientation in person, place or time) or AMT <= 8",
                   _alternatives(_flag(c == 1, c), _flag(amt <= 8, amt)), (("confusion", "amt_score"),))]
    if urea:
        u = v["urea_mmol_l"]
        items.append(_item(v, "urea", "urea > 7 mmol/L (BUN > 19.6 mg/dL)", _flag(u > 7, u), (("urea_mmol_l",),)))
    rr = v["respiratory_rate"]
    items.append(_item(v, "respiratory_rate", "respiratory rate >= 30 /min", _flag(rr >= 30, rr),
                       (("respiratory_rate",),)))
    sbp, dbp = v["systolic_bp"], v["diastolic_bp"]
    items.append(_item(v, "blood_pressure", "systolic < 90 mmHg or diastolic <= 60 mmHg",
                       _or(_flag(sbp < 90, sbp), _flag(dbp <= 60, dbp)), (("systolic_bp",), ("diastolic_bp",))))
    age = _age(v)
    items.append(_item(v, "age", "age >= 65 years", _flag(age >= 65, age), (("age",),), assumable=False))
    return items


def _curb65(v, assume) -> _Scored:
    return _finish(_curb_items(v, urea=True), assume, [(1, "low"), (2, "moderate"), (np.inf, "severe")],
                   "total", _CURB65_MORTALITY, _CURB65_MORTALITY_SOURCE)


def _crb65(v, assume) -> _Scored:
    return _finish(_curb_items(v, urea=False), assume, [(0, "low"), (2, "intermediate"), (np.inf, "high")],
                   "band", _CRB65_MORTALITY, _CRB65_MORTALITY_SOURCE)


# --------------------------------------------------------------------------------------------
# qSOFA (Seymour 2016; Singer 2016)

_QSOFA_SOURCE = ("Seymour CW et al. JAMA 2016;315(8):762-774 (PMC5433435); Singer M et al. JAMA "
                 "2016;315(8):801-810")
_QSOFA_BANDS = {"negative": "0-1: qSOFA negative", "positive": ">=2: qSOFA positive"}
_QSOFA_MORTALITY = {"positive": "6.7%", "negative": "0.8%"}
_QSOFA_MORTALITY_SOURCE = "in-hospital mortality of qSOFA-positive / -negative undifferentiated admissions (PMC6859245)"


def _qsofa(v, assume) -> _Scored:
    rr, gcs, sbp = v["respiratory_rate"], v["gcs"], v["systolic_bp"]
    items = [
        _item(v, "respiratory_rate", "respiratory rate >= 22 /min", _flag(rr >= 22, rr), (("respiratory_rate",),)),
        _item(v, "altered_mentation", "altered mentation (GCS < 15)", _flag(gcs < 15, gcs), (("gcs",),)),
        _item(v, "systolic_bp", "systolic blood pressure <= 100 mmHg", _flag(sbp <= 100, sbp), (("systolic_bp",),)),
    ]
    return _finish(items, assume, [(1, "negative"), (np.inf, "positive")], "band", _QSOFA_MORTALITY,
                   _QSOFA_MORTALITY_SOURCE)


# --------------------------------------------------------------------------------------------
# NEWS2 (Royal College of Physicians 2017)

_NEWS2_SOURCE = ("Royal College of Physicians. National Early Warning Score (NEWS) 2: Standardising the "
                 "assessment of acute-illness severity in the NHS. London: RCP, 2017 [3rd-party: chart from a "
                 "Scribd copy of 'NEWS2 Chart 1' (c) RCP 2017; thresholds via the rcpjournals Table 1 summary]")
_NEWS2_BANDS = {
    "low": "0-4: low",
    "low-medium": "a single parameter scoring 3 (total < 5): low-medium; urgent ward review",
    "medium": "5-6: medium; urgent assessment within 1 h",
    "high": ">=7: high; emergency assessment within 30 min by a critical-care-competent team",
}
_SPO2_SCALE1 = "SpO2 scale 1: <=91: 3, 92-93: 2, 94-95: 1, >=96: 0"
_SPO2_SCALE2 = ("SpO2 scale 2 (hypercapnic respiratory failure): <=83: 3, 84-85: 2, 86-87: 1, 88-92 or >=93 "
                "on air: 0, 93-94 on O2: 1, 95-96 on O2: 2, >=97 on O2: 3")


def _news2(v, assume) -> _Scored:
    rr, s, o = v["respiratory_rate"], v["spo2"], v["on_oxygen"]
    sbp, hr, cns, t = v["systolic_bp"], v["pulse"], v["consciousness"], v["temperature_c"]
    # Scale 2 only where a clinician chose it (RCP: scale 1 unless prescribed a target of 88-92%).
    scale2 = v["spo2_scale"] == 2
    s1 = _steps(s, [(s < 92, 3), (s < 94, 2), (s < 96, 1)], 0)
    s2_low = np.select([s < 84, s < 86, s < 88], [3.0, 2.0, 1.0], default=0.0)
    s2_o2 = np.select([s <= 94, s <= 96], [1.0, 2.0], default=3.0)
    s2 = np.where(s <= 92, s2_low, np.where(o == 1, s2_o2, np.where(o == 0, 0.0, np.nan)))
    s2[np.isnan(s)] = np.nan
    items = [
        _item(v, "respiration_rate", "respiration rate: <=8: 3, 9-11: 1, 12-20: 0, 21-24: 2, >=25: 3",
              _steps(rr, [(rr < 9, 3), (rr < 12, 1), (rr <= 20, 0), (rr <= 24, 2)], 3), (("respiratory_rate",),)),
        _item(v, "spo2", np.where(scale2, _SPO2_SCALE2, _SPO2_SCALE1), np.where(scale2, s2, s1),
              (("spo2",), ("on_oxygen",)), inputs=("spo2", "spo2_scale", "on_oxygen")),
        _item(v, "air_or_oxygen", "on oxygen: 2, air: 0", _flag(o == 1, o) * 2, (("on_oxygen",),)),
        _item(v, "systolic_bp", "systolic BP: <=90: 3, 91-100: 2, 101-110: 1, 111-219: 0, >=220: 3",
              _steps(sbp, [(sbp < 91, 3), (sbp < 101, 2), (sbp < 111, 1), (sbp <= 219, 0)], 3), (("systolic_bp",),)),
        _item(v, "pulse", "pulse: <=40: 3, 41-50: 1, 51-90: 0, 91-110: 1, 111-130: 2, >=131: 3",
              _steps(hr, [(hr < 41, 3), (hr < 51, 1), (hr <= 90, 0), (hr <= 110, 1), (hr <= 130, 2)], 3),
              (("pulse",),)),
        _item(v, "consciousness", "alert: 0, new confusion / voice / pain / unresponsive (CVPU): 3",
              _flag(cns >= 1, cns) * 3, (("consciousness",),)),
        _item(v, "temperature", "temperature: <=35.0: 3, 35.1-36.0: 1, 36.1-38.0: 0, 38.1-39.0: 1, >=39.1: 2 (°C)",
              _steps(t, [(t < 35.1, 3), (t < 36.1, 1), (t <= 38.0, 0), (t <= 39.0, 1)], 2), (("temperature_c",),)),
    ]
    missing, assumed = _resolve(items, assume)
    total = _total(items)
    any3 = (np.vstack([it.points for it in items]) == 3).any(0)
    band = np.select([np.isnan(total), total >= 7, total >= 5, any3], [None, "high", "medium", "low-medium"],
                     default="low").astype(object)
    none = np.full(len(total), None, dtype=object)
    return _Scored(items, total, band, none, none.copy(), missing, assumed)


# --------------------------------------------------------------------------------------------
# PSI / PORT (Fine 1997)

_PSI_SOURCE = ("Fine MJ, Auble TE, Yealy DM, et al. N Engl J Med 1997;336:243-250 [3rd-party: AHRQ archived "
               "page (pneusctb.htm), Merck Manual table, wikem]")
_PSI_BANDS = {
    "I": "class I (step 1: age <= 50, none of the five comorbidities, normal vital signs and mental status): "
         "outpatient",
    "II": "class II (<= 70 points): outpatient",
    "III": "class III (71-90 points): brief inpatient stay or observation",
    "IV": "class IV (91-130 points): admit",
    "V": "class V (> 130 points): admit",
}
_PSI_MORTALITY = {"I": "0.1%", "II": "0.6%", "III": "0.9%", "IV": "9.3%", "V": "27.0%"}
_PSI_MORTALITY_SOURCE = ("30-day mortality of the class, PORT validation cohort (Fine MJ et al. N Engl J Med "
                         "1997;336:243-250) [3rd-party: AHRQ archived page, Merck Manual, wikem]")
#: Items whose abnormality excludes class I (besides age > 50).
_PSI_STEP1 = ("neoplastic_disease", "liver_disease", "congestive_heart_failure", "cerebrovascular_disease",
              "renal_disease", "altered_mental_status", "respiratory_rate", "systolic_bp", "temperature", "pulse")


def _psi(v, assume) -> _Scored:
    age, sex = _age(v), v["sex"]
    rr, sbp, t, hr = v["respiratory_rate"], v["systolic_bp"], v["temperature_c"], v["pulse"]
    ph, bun, na, glu, hct = (v["arterial_ph"], v["bun_mg_dl"], v["sodium_mmol_l"], v["glucose_mg_dl"],
                             v["hematocrit_pct"])
    pao2 = v["pao2_mmhg"]
    spo2 = np.where(np.isnan(v["spo2"]), v["spo2_room_air"], v["spo2"])
    age_pts = np.where(sex == 1, age, np.where(sex == 0, age - 10, np.nan))
    age_pts[np.isnan(age)] = np.nan
    items = [
        _item(v, "age", "age in years (men) or age - 10 (women)", age_pts, (("age",), ("sex",)), assumable=False),
        _bool_item(v, "nursing_home", 10),
        _bool_item(v, "neoplastic_disease", 30),
        _bool_item(v, "liver_disease", 20),
        _bool_item(v, "congestive_heart_failure", 10),
        _bool_item(v, "cerebrovascular_disease", 10),
        _bool_item(v, "renal_disease", 10),
        _bool_item(v, "altered_mental_status", 20),
        _item(v, "respiratory_rate", "respiratory rate >= 30 /min: +20", _flag(rr >= 30, rr) * 20,
              (("respiratory_rate",),)),
        _item(v, "systolic_bp", "systolic BP < 90 mmHg: +20", _flag(sbp < 90, sbp) * 20, (("systolic_bp",),)),
        _item(v, "temperature", "temperature < 35 °C or >= 40 °C: +15", _flag((t < 35) | (t >= 40), t) * 15,
              (("temperature_c",),)),
        _item(v, "pulse", "pulse >= 125 /min: +10", _flag(hr >= 125, hr) * 10, (("pulse",),)),
        _item(v, "arterial_ph", "arterial pH < 7.35: +30", _flag(ph < 7.35, ph) * 30, (("arterial_ph",),)),
        _item(v, "bun", "BUN >= 30 mg/dL (urea >= 10.71 mmol/L): +20", _flag(bun >= 30, bun) * 20, (("bun_mg_dl",),)),
        _item(v, "sodium", "sodium < 130 mmol/L: +20", _flag(na < 130, na) * 20, (("sodium_mmol_l",),)),
        _item(v, "glucose", "glucose >= 250 mg/dL (>= 13.89 mmol/L): +10", _flag(glu >= 250, glu) * 10,
              (("glucose_mg_dl",),)),
        _item(v, "hematocrit", "haematocrit < 30%: +10", _flag(hct < 30, hct) * 10, (("hematocrit_pct",),)),
        _item(v, "oxygenation", "PaO2 < 60 mmHg or SpO2 < 90%: +10",
              _alternatives(_flag(pao2 < 60, pao2), _flag(spo2 < 90, spo2)) * 10, (("pao2_mmhg", "spo2"),),
              inputs=("pao2_mmhg", "spo2", "spo2_room_air")),
        _bool_item(v, "pleural_effusion", 10),
    ]
    missing, assumed = _resolve(items, assume)
    total = _total(items)
    by_key = {it.key: it.points for it in items}
    # Step 1 (Kleene AND): class I iff age <= 50 and no step-1 item scores.
    conds = np.vstack([_flag(age <= 50, age)] + [_flag(by_key[k] == 0, by_key[k]) for k in _PSI_STEP1])
    class1 = np.where((conds == 0).any(0), 0.0, np.where((conds == 1).all(0), 1.0, np.nan))
    step2 = _band_by_total(total, [(70, "II"), (90, "III"), (130, "IV"), (np.inf, "V")])
    band = np.where(class1 == 1, "I", np.where(class1 == 0, step2, None)).astype(object)
    # Class I is decided by step 1: nothing else is needed.
    missing = [(label, mask & (class1 != 1)) for label, mask in missing if (mask & (class1 != 1)).any()]
    mort, src = _lookup(band, _PSI_MORTALITY, _PSI_MORTALITY_SOURCE)
    return _Scored(items, total, band, mort, src, missing, assumed)


# --------------------------------------------------------------------------------------------
# ISARIC 4C Mortality Score (Knight 2020)

_4C_SOURCE = "Knight SR, Ho A, Pius R, et al. BMJ 2020;370:m3339 (PMC7116472, Table 2)"
_4C_BANDS = {
    "low": "low risk (0-3 points): in-hospital mortality ~1.2%",
    "intermediate": "intermediate risk (4-8 points): in-hospital mortality ~9.9%",
    "high": "high risk (9-14 points): in-hospital mortality ~31.4%",
    "very high": "very high risk (>=15 points): in-hospital mortality ~61.5%",
}
_4C_GROUP_MORTALITY = {"low": "1.2%", "intermediate": "9.9%", "high": "31.4%", "very high": "61.5%"}
_4C_GROUP_SOURCE = ("in-hospital mortality of the risk group, Knight SR et al. BMJ 2020;370:m3339 [recalled: "
                    "exact decimals; ISARIC summary 1% / 10% / 31% / 62%]")
_4C_SCORE_MORTALITY = dict(zip(range(1, 22), (
    "0.3%", "0.8%", "2.3%", "4.8%", "7.5%", "7.8%", "11.7%", "14.4%", "19.2%", "22.9%", "26.9%",
    "32.9%", "40.1%", "44.6%", "51.6%", "59.1%", "66.1%", "75.8%", "77.4%", "82.9%", "87.5%")))
_4C_SCORE_SOURCE = ("observed in-hospital mortality at this score, validation cohort (Knight SR et al. BMJ "
                    "2020;370:m3339, Figure 2) [3rd-party: isaric4c.net/risk/4c]")


def _isaric4c(v, assume) -> _Scored:
    age, sex, com, rr = _age(v), v["sex"], v["n_comorbidities"], v["respiratory_rate"]
    gcs, urea, crp = v["gcs"], v["urea_mmol_l"], v["crp_mg_l"]
    spo2, ra, o = v["spo2"], v["spo2_room_air"], v["on_oxygen"]
    room_air = np.where(np.isfinite(ra), ra, np.where(o == 0, spo2, np.nan))
    sat_pts = _flag(room_air < 92, room_air) * 2
    undetermined = np.isnan(sat_pts)
    sat_missing = [("spo2_room_air or spo2", undetermined & np.isnan(spo2)),
                   ("on_oxygen", undetermined & np.isnan(o)),
                   ("spo2_room_air", undetermined & (o == 1))]   # SpO2 measured on oxygen
    items = [
        _item(v, "age", "age <50: 0, 50-59: 2, 60-69: 4, 70-79: 6, >=80: 7",
              _steps(age, [(age < 50, 0), (age < 60, 2), (age < 70, 4), (age < 80, 6)], 7), (("age",),),
              assumable=False),
        _item(v, "sex", "sex at birth female: 0, male: 1", _flag(sex == 1, sex), (("sex",),), assumable=False),
        _item(v, "comorbidities", "comorbidities 0: 0, 1: 1, >=2: 2",
              _steps(com, [(com == 0, 0), (com == 1, 1)], 2), (("n_comorbidities",),)),
        _item(v, "respiratory_rate", "respiratory rate <20: 0, 20-29: 1, >=30: 2 (/min)",
              _steps(rr, [(rr < 20, 0), (rr < 30, 1)], 2), (("respiratory_rate",),)),
        _item(v, "spo2_room_air", "SpO2 on room air >=92%: 0, <92%: 2", sat_pts, (),
              inputs=("spo2_room_air", "spo2", "on_oxygen"), missing=sat_missing),
        _item(v, "gcs", "GCS 15: 0, <15: 2", _flag(gcs < 15, gcs) * 2, (("gcs",),)),
        _item(v, "urea", "urea <7: 0, 7-14: 1, >14: 3 (mmol/L)", _steps(urea, [(urea < 7, 0), (urea <= 14, 1)], 3),
              (("urea_mmol_l",),)),
        _item(v, "crp", "CRP <50: 0, 50-99: 1, >=100: 2 (mg/L)", _steps(crp, [(crp < 50, 0), (crp < 100, 1)], 2),
              (("crp_mg_l",),)),
    ]
    s = _finish(items, assume, [(3, "low"), (8, "intermediate"), (14, "high"), (np.inf, "very high")],
                "total", _4C_SCORE_MORTALITY, _4C_SCORE_SOURCE)
    # Score 0 is not in the per-score table: give the risk group's figure.
    group, group_src = _lookup(s.band, _4C_GROUP_MORTALITY, _4C_GROUP_SOURCE)
    fill = (s.mortality == None) & (s.band != None)  # noqa: E711
    s.mortality[fill], s.mortality_source[fill] = group[fill], group_src[fill]
    return s


# --------------------------------------------------------------------------------------------
# Registry

_CONFUSION = ("confusion", "amt_score")
SCORES: dict[str, ScoreInfo] = {
    "curb65": ScoreInfo("curb65", "CURB-65", _CURB65_SOURCE,
                        _CONFUSION + ("urea_mmol_l", "respiratory_rate", "systolic_bp", "diastolic_bp", "age"),
                        _CURB65_BANDS, 5, True),
    "crb65": ScoreInfo("crb65", "CRB-65", _CRB65_SOURCE,
                       _CONFUSION + ("respiratory_rate", "systolic_bp", "diastolic_bp", "age"), _CRB65_BANDS, 4, True),
    "qsofa": ScoreInfo("qsofa", "qSOFA", _QSOFA_SOURCE, ("respiratory_rate", "gcs", "systolic_bp"),
                       _QSOFA_BANDS, 3, True),
    "news2": ScoreInfo("news2", "NEWS2", _NEWS2_SOURCE,
                       ("respiratory_rate", "spo2", "spo2_scale", "on_oxygen", "systolic_bp", "pulse",
                        "consciousness", "temperature_c"), _NEWS2_BANDS, 20, False),
    "psi": ScoreInfo("psi", "PSI/PORT", _PSI_SOURCE,
                     ("age", "sex", "nursing_home", "neoplastic_disease", "liver_disease", "congestive_heart_failure",
                      "cerebrovascular_disease", "renal_disease", "altered_mental_status", "respiratory_rate",
                      "systolic_bp", "temperature_c", "pulse", "arterial_ph", "bun_mg_dl", "sodium_mmol_l",
                      "glucose_mg_dl", "hematocrit_pct", "pao2_mmhg", "spo2", "spo2_room_air", "pleural_effusion"),
                     _PSI_BANDS, None, True),
    "isaric4c": ScoreInfo("isaric4c", "ISARIC 4C", _4C_SOURCE,
                          ("age", "sex", "n_comorbidities", "respiratory_rate", "spo2_room_air", "spo2", "on_oxygen",
                           "gcs", "urea_mmol_l", "crp_mg_l"), _4C_BANDS, 21, True),
}
SCORE_NAMES: tuple[str, ...] = tuple(SCORES)
_COMPUTE: dict[str, Callable[[dict, bool], _Scored]] = {
    "curb65": _curb65, "crb65": _crb65, "qsofa": _qsofa, "news2": _news2, "psi": _psi, "isaric4c": _isaric4c,
}
_SCORE_ALIASES = {"curb65": "curb65", "crb65": "crb65", "qsofa": "qsofa", "news2": "news2", "news": "news2",
                  "psi": "psi", "port": "psi", "psiport": "psi", "isaric4c": "isaric4c", "4c": "isaric4c",
                  "isaric": "isaric4c", "4cmortality": "isaric4c"}


def resolve_scores(scores: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"curb65, NEWS2"`` / ``["CURB-65", "4C"]`` / None or ``"all"`` -> canonical keys, in order given."""
    if scores is None:
        return SCORE_NAMES
    names = scores.split(",") if isinstance(scores, str) else list(scores)
    out: list[str] = []
    for name in names:
        key = re.sub(r"[^0-9a-z]", "", str(name).lower())
        if not key:
            continue
        if key == "all":
            out.extend(s for s in SCORE_NAMES if s not in out)
            continue
        if key not in _SCORE_ALIASES:
            raise InputError(f"unknown score '{str(name).strip()}'; choose from {', '.join(SCORE_NAMES)} (or all).")
        if _SCORE_ALIASES[key] not in out:
            out.append(_SCORE_ALIASES[key])
    if not out:
        raise InputError(f"no score chosen; choose from {', '.join(SCORE_NAMES)} (or all).")
    return tuple(out)


def _fields(keys: Iterable[str]) -> list[str]:
    return sorted({f for k in keys for f in SCORES[k].inputs})


# --------------------------------------------------------------------------------------------
# One patient


def _display(name: str, x: float, parsed: ParsedInputs) -> str:
    f = BY_NAME[name]
    if f.kind == "bool":
        text = "yes" if x == 1 else "no"
    elif f.kind == "sex":
        text = "male" if x == 1 else "female"
    elif f.kind == "consciousness":
        text = CONSCIOUSNESS_CODES[int(x)]
    else:
        text = f"{x:g}{f.unit}" if f.unit in ("", "%") else f"{x:g} {f.unit}"
    if name not in parsed.columns:
        given = [c for c in parsed.columns if c != name and _linked(c, name)]
        if given:
            text += f" (from {given[0]})"
    return text


def _linked(a: str, b: str) -> bool:
    return any({a, b} == {k.a, k.b} for k in LINKS)


def _with_partners(names: Iterable[str]) -> list[str]:
    out = []
    for name in names:
        other = [k.b if k.a == name else k.a for k in LINKS if name in (k.a, k.b)]
        out.append(f"{name} (or {other[0]})" if other else name)
    return out


def _result(key: str, s: _Scored, i: int, parsed: ParsedInputs) -> ScoreResult:
    info = SCORES[key]
    items = []
    for it in s.items:
        p = it.points[i]
        crit = it.criterion if isinstance(it.criterion, str) else str(it.criterion[i])
        shown = tuple((f, _display(f, parsed.values[f][i], parsed)) for f in it.inputs
                      if not np.isnan(parsed.values[f][i]))
        items.append(ItemPoints(it.key, crit, None if np.isnan(p) else int(p), shown,
                                _at(it.missing, i), _at(it.assumed, i)))
    band = s.band[i]
    total = s.total[i]
    return ScoreResult(
        score=key, title=info.title, total=None if np.isnan(total) else int(total), band=band,
        band_text=None if band is None else info.bands[band], mortality=s.mortality[i],
        mortality_source=s.mortality_source[i], items=tuple(items), missing=_at(s.missing, i),
        assumed_normal=_at(s.assumed, i), source=info.source, warnings=tuple(parsed.warnings[i]),
    )


def score_patient(values: Mapping[str, object] | None = None, /, scores: str | Iterable[str] | None = None, *,
                  assume_normal_if_missing: bool = False, ignore_unknown: bool = False,
                  **kwargs: object) -> dict[str, ScoreResult]:
    """Several scores for one patient: ``{key: ScoreResult}`` in the order of ``scores`` (default all).

    ``values`` and ``kwargs`` hold the inputs under canonical names or aliases
    (:mod:`pulmo.triage.scores_io`); only the inputs of the chosen scores are validated.

    Raises
    ------
    InputError
        An impossible or unreadable value, or an unknown name (unless ``ignore_unknown``).
    """
    keys = resolve_scores(scores)
    parsed = parse_record(values, _fields(keys), ignore_unknown=ignore_unknown, **kwargs)
    return {k: _result(k, _COMPUTE[k](parsed.values, assume_normal_if_missing), 0, parsed) for k in keys}


def compute(score: str, values: Mapping[str, object] | None = None, /, *, assume_normal_if_missing: bool = False,
            ignore_unknown: bool = False, **kwargs: object) -> ScoreResult:
    """One score (by name, e.g. ``"curb65"``, ``"CURB-65"``, ``"4C"``) for one patient."""
    (key,) = resolve_scores([score])
    return score_patient(values, [key], assume_normal_if_missing=assume_normal_if_missing,
                         ignore_unknown=ignore_unknown, **kwargs)[key]


def curb65(values: Mapping[str, object] | None = None, /, *, assume_normal_if_missing: bool = False,
           ignore_unknown: bool = False, **kwargs: object) -> ScoreResult:
    """CURB-65, 0-5 (Lim 2003): one point each.

    Inputs: ``confusion`` (yes/no; or ``amt_score`` 0-10, confusion if <= 8), ``urea_mmol_l``
    (> 7 mmol/L; or ``bun_mg_dl``, converted / 2.8), ``respiratory_rate`` (>= 30 /min),
    ``systolic_bp`` (< 90 mmHg) or ``diastolic_bp`` (<= 60 mmHg), ``age`` (>= 65 years).
    Bands: 0-1 low, 2 moderate, 3-5 severe; 30-day mortality by score.
    """
    return compute("curb65", values, assume_normal_if_missing=assume_normal_if_missing,
                   ignore_unknown=ignore_unknown, **kwargs)


def crb65(values: Mapping[str, object] | None = None, /, *, assume_normal_if_missing: bool = False,
          ignore_unknown: bool = False, **kwargs: object) -> ScoreResult:
    """CRB-65, 0-4: CURB-65 without urea. BTS bands: 0 low, 1-2 intermediate, 3-4 high [recalled]."""
    return compute("crb65", values, assume_normal_if_missing=assume_normal_if_missing,
                   ignore_unknown=ignore_unknown, **kwargs)


def qsofa(values: Mapping[str, object] | None = None, /, *, assume_normal_if_missing: bool = False,
          ignore_unknown: bool = False, **kwargs: object) -> ScoreResult:
    """qSOFA, 0-3 (Sepsis-3): ``respiratory_rate`` >= 22 /min, ``gcs`` < 15, ``systolic_bp`` <= 100 mmHg.

    Positive if >= 2.
    """
    return compute("qsofa", values, assume_normal_if_missing=assume_normal_if_missing,
                   ignore_unknown=ignore_unknown, **kwargs)


def news2(values: Mapping[str, object] | None = None, /, *, assume_normal_if_missing: bool = False,
          ignore_unknown: bool = False, **kwargs: object) -> ScoreResult:
    """NEWS2, 0-20 (RCP 2017).

    Inputs: ``respiratory_rate`` /min, ``spo2`` %, ``on_oxygen`` (yes/no), ``systolic_bp`` mmHg,
    ``pulse`` /min, ``consciousness`` (A, C, V, P or U), ``temperature_c`` °C (or
    ``temperature_f``). SpO2 scale 2 applies when ``spo2_scale`` = 2 or
    ``hypercapnic_respiratory_failure`` = yes (scale 1 otherwise, the RCP default); on scale 2,
    SpO2 >= 93% scores 0 on air and 1-3 on oxygen. Bands: low 0-4, low-medium (a single
    parameter scoring 3), medium 5-6, high >= 7.
    """
    return compute("news2", values, assume_normal_if_missing=assume_normal_if_missing,
                   ignore_unknown=ignore_unknown, **kwargs)


def psi(values: Mapping[str, object] | None = None, /, *, assume_normal_if_missing: bool = False,
        ignore_unknown: bool = False, **kwargs: object) -> ScoreResult:
    """Pneumonia Severity Index (PSI/PORT, Fine 1997): classes I-V.

    Class I (step 1): age <= 50, none of ``neoplastic_disease``, ``liver_disease``,
    ``congestive_heart_failure``, ``cerebrovascular_disease``, ``renal_disease``, no
    ``altered_mental_status``, pulse < 125 /min, respiratory rate < 30 /min, systolic BP >= 90 mmHg,
    temperature 35 to < 40 °C; no laboratory value is needed. Otherwise the points (age, or
    age - 10 for women, plus ``nursing_home``, ``arterial_ph``, ``bun_mg_dl``, ``sodium_mmol_l``,
    ``glucose_mg_dl``, ``hematocrit_pct``, ``pao2_mmhg`` or ``spo2``, ``pleural_effusion``, ...) give
    class II (<= 70), III (71-90), IV (91-130) or V (> 130). The derivation study counted missing
    values as normal; ``assume_normal_if_missing=True`` does the same, and says which.
    """
    return compute("psi", values, assume_normal_if_missing=assume_normal_if_missing,
                   ignore_unknown=ignore_unknown, **kwargs)


def isaric4c(values: Mapping[str, object] | None = None, /, *, assume_normal_if_missing: bool = False,
             ignore_unknown: bool = False, **kwargs: object) -> ScoreResult:
    """ISARIC 4C Mortality Score, 0-21 (Knight 2020).

    Inputs: ``age`` years, ``sex`` (male/female), ``n_comorbidities`` (Charlson comorbidities +
    clinician-defined obesity), ``respiratory_rate`` /min, SpO2 on room air (``spo2_room_air``, or
    ``spo2`` with ``on_oxygen`` = no), ``gcs``, ``urea_mmol_l`` (or ``bun_mg_dl``), ``crp_mg_l`` (or
    ``crp_mg_dl``). Risk groups: low 0-3, intermediate 4-8, high 9-14, very high >= 15.
    """
    return compute("isaric4c", values, assume_normal_if_missing=assume_normal_if_missing,
                   ignore_unknown=ignore_unknown, **kwargs)


# --------------------------------------------------------------------------------------------
# Many patients


@dataclass(frozen=True)
class ScoreSummary:
    """One score for one patient of a table: the cells of ``score_table`` / ``pulmo triage score``.

    ``total``: points (None when not computable, for PSI class I without the step-2 inputs, or
    when the row is invalid); ``band`` and ``mortality`` (the published mortality as text, for
    scores that publish one) are None likewise; ``missing``: the inputs that kept it from being
    computed; ``assumed_normal``: the inputs scored as normal (None unless
    ``assume_normal_if_missing``); ``items``: each item's points (None unless asked for).
    """

    total: int | None
    band: str | None
    mortality: str | None
    missing: tuple[str, ...] = ()
    assumed_normal: tuple[str, ...] | None = None
    items: dict[str, int | None] | None = None


@dataclass(frozen=True)
class PatientScores:
    """The chosen scores for one patient (a row of a table).

    ``row``: the row label used in messages (the file line for a table read by
    :func:`pulmo.io.tables.read_table`); ``scores``: score key -> :class:`ScoreSummary`, in the
    order chosen; ``warnings``: notes on unusual values; ``error``: None, or why the row was not
    scored (its summaries are then empty).
    """

    row: object
    scores: dict[str, ScoreSummary]
    warnings: tuple[str, ...] = ()
    error: str | None = None

    def to_row(self) -> dict[str, object]:
        """The result columns of the table output, in order: per score ``<score>_points``,
        ``<score>_band``, ``<score>_mortality`` (scores that publish one), ``<score>_missing``
        ("; "-separated), ``<score>_assumed`` and ``<score>_<item>`` (when asked for); then
        ``warnings`` and ``error`` ("" when none). Missing values are None."""
        row: dict[str, object] = {}
        for k, s in self.scores.items():
            row[f"{k}_points"], row[f"{k}_band"] = s.total, s.band
            if SCORES[k].mortality:
                row[f"{k}_mortality"] = s.mortality
            row[f"{k}_missing"] = "; ".join(s.missing)
            if s.assumed_normal is not None:
                row[f"{k}_assumed"] = "; ".join(s.assumed_normal)
            if s.items is not None:
                row.update({f"{k}_{item}": p for item, p in s.items.items()})
        row["warnings"] = "; ".join(self.warnings)
        row["error"] = self.error or ""
        return row

    def to_dict(self) -> dict:
        """Every field as JSON-ready Python values."""
        return asdict(self)


@dataclass(frozen=True)
class ScoreBatch(Sequence):
    """Classic scores for every row of a table: a sequence of :class:`PatientScores` in input order.

    ``scores``: the score keys computed; ``columns``: input -> the column it was read from;
    ``unused_columns``: columns no chosen score uses (kept by :meth:`to_frame`); ``sources``:
    score -> citation.
    """

    patients: tuple[PatientScores, ...]
    scores: tuple[str, ...]
    columns: dict[str, str] = field(default_factory=dict)
    unused_columns: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.patients)

    def __getitem__(self, i):
        return self.patients[i]

    def __iter__(self):
        return iter(self.patients)

    def to_frame(self, inputs: pd.DataFrame | None = None) -> pd.DataFrame:
        """``inputs``' columns then the columns of :meth:`PatientScores.to_row` (points and item
        points as nullable integers, Int64); the index is ``inputs``' (default: the rows).

        Raises :class:`InputError` when ``inputs`` already has one of the result columns.
        """
        rows = [p.to_row() for p in self.patients]
        if inputs is None:
            inputs = pd.DataFrame(index=pd.Index([p.row for p in self.patients], name="row"))
        elif len(inputs) != len(rows):
            raise ValueError(f"the inputs have {len(inputs)} rows, the results {len(rows)}")
        names = list(rows[0]) if rows else []
        clash = [c for c in names if c in inputs.columns]
        if clash:
            raise InputError(f"the input already has column(s) {', '.join(clash)}, which scoring would "
                             "overwrite; remove or rename them.")
        whole = {f"{k}_{c}" for p in self.patients[:1] for k, s in p.scores.items()
                 for c in ("points", *(s.items or {}))}  # nullable integers
        out = {}
        for c in names:
            cells = [row[c] for row in rows]
            out[c] = pd.array(cells, dtype="Int64") if c in whole else np.array(cells, dtype=object)
        return pd.concat([inputs, pd.DataFrame(out, index=inputs.index)], axis=1)


def score_records(df: pd.DataFrame, scores: str | Iterable[str] | None = None, *,
                  assume_normal_if_missing: bool = False, items: bool = False) -> ScoreBatch:
    """Compute the chosen scores (default all) for every row of ``df``: a :class:`ScoreBatch`
    of typed :class:`PatientScores`, one per row, in order.

    Parameters and errors as :func:`score_table` (whose table is ``score_records(...).to_frame(df)``).
    Invalid rows get an ``error`` and empty summaries, not an exception. Safe to call from
    several threads at once.
    """
    keys = resolve_scores(scores)
    if len(df) == 0:
        raise InputError("the table has a header but no patient rows.")
    parsed = parse_table(df, _fields(keys))
    if not parsed.columns:
        raise InputError(
            f"none of the columns is an input of {', '.join(SCORES[k].title for k in keys)}; expected names such "
            f"as {', '.join(_fields(keys)[:8])} (see docs/clinical_scores.md). Columns found: "
            f"{', '.join(map(str, df.columns))}.")
    n = len(df)
    ok = parsed.ok.tolist()
    per_score = {}
    for k in keys:
        s = _COMPUTE[k](parsed.values, assume_normal_if_missing)
        per_score[k] = (
            [None if t != t else int(t) for t in s.total.tolist()], s.band.tolist(), s.mortality.tolist(),
            _per_row(s.missing, n), _per_row(s.assumed, n) if assume_normal_if_missing else None,
            {it.key: [None if p != p else int(p) for p in it.points.tolist()] for it in s.items} if items else None,
        )
    empty = {k: ScoreSummary(None, None, None, (), () if assume_normal_if_missing else None,
                             dict.fromkeys(v[5], None) if items else None) for k, v in per_score.items()}
    patients = []
    for i, label in enumerate(parsed.labels):
        summaries = {k: ScoreSummary(total[i], band[i], mort[i] if SCORES[k].mortality else None, missing[i],
                                     None if assumed is None else assumed[i],
                                     None if points is None else {it: p[i] for it, p in points.items()})
                     for k, (total, band, mort, missing, assumed, points) in per_score.items()} if ok[i] else empty
        patients.append(PatientScores(label, summaries, tuple(parsed.warnings[i]),
                                      "; ".join(parsed.errors[i]) or None))
    return ScoreBatch(tuple(patients), keys, dict(parsed.columns), tuple(parsed.unused_columns),
                      {k: SCORES[k].source for k in keys})


def score_table(df: pd.DataFrame, scores: str | Iterable[str] | None = None, *,
                assume_normal_if_missing: bool = False, items: bool = False) -> pd.DataFrame:
    """Compute the chosen scores (default all) for every row of ``df``.

    Parameters
    ----------
    df
        One row per patient, inputs under canonical names or aliases (see
        :mod:`pulmo.triage.scores_io`); cells may be text (as from
        :func:`pulmo.io.tables.read_table`), numbers or booleans. Row labels in messages
        are the index labels.
    scores
        Score names (``"curb65,news2"`` or a list); None or ``"all"`` for all six.
    assume_normal_if_missing
        Score undetermined items 0 and list their inputs in ``<score>_assumed``.
    items
        Add the points of each item as ``<score>_<item>``.

    Returns
    -------
    DataFrame
        The input columns, then per score ``<score>_points`` (Int64), ``<score>_band``,
        ``<score>_mortality`` (where published), ``<score>_missing`` ("; "-separated input
        names), then ``warnings`` and ``error`` ("" for valid rows). Invalid rows are not
        scored. ``attrs`` holds ``columns`` (input -> column used), ``unused_columns`` and
        ``sources`` (score -> citation). The same as ``score_records(...).to_frame(df)``.

    Raises
    ------
    InputError
        No rows; no column is an input of the chosen scores; two columns give one input; an
        input column without its unit; an output column already in ``df``.
    """
    batch = score_records(df, scores, assume_normal_if_missing=assume_normal_if_missing, items=items)
    result = batch.to_frame(df)
    result.attrs = {"columns": dict(batch.columns), "unused_columns": list(batch.unused_columns),
                    "sources": dict(batch.sources)}
    return result
