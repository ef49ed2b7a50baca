"""Follow-up comparison: the same patient's chest CTs over time (``pulmo ct compare``).

Each scan is analysed on its own (:func:`pulmo.ct.analyze`); lesion volumes per lung and per
region (zones, or lobes when a lobe tool or model is configured) are compared between
consecutive time points. Regions are anatomical (upper / middle / lower third of each lung, or
lobes), so the figures need no registration. The scans are registered all the same (SimpleITK:
rigid, then affine, on the CT in the lung window, lungs initialised by their centres of mass)
to map voxel by voxel what changed: new lesion, resolved lesion, and ground glass turning into
consolidation and back; the registered lungs must overlap (Dice of the lung masks at least
``CompareOptions.min_lung_dice``, 0.7), else the comparison is refused rather than giving a
confident change figure.

Verdicts (per lung, per region and overall), on the change of lesion volume from the prior to
the current scan: **progression** when it grows by at least ``stable_ml`` mL *and* by at least
``stable_fraction`` of the prior lesion volume, **regression** when it shrinks by as much,
**stable** otherwise. The thresholds (5 mL and 25 %) lie above the test-retest noise measured
on the same scan shifted and rotated (docs/ct.md, "Follow-up comparison").

Coordinates: the change map is on the prior scan's canonical LPS grid (written on its input
grid), voxels of the current scan are brought there by the registration.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pulmo import DISCLAIMER, __version__
from pulmo.ct.analysis import CTAnalysis, ProgressCallback, StageTimer, analyze, json_ready
from pulmo.ct.options import AnalysisOptions
from pulmo.ct.volume import CTVolume, warning
from pulmo.errors import InputError

#: Codes of the change map (uint8), on the prior scan's grid.
CHANGE_LABELS = {
    1: "new lesion (none before)", 2: "resolved (lesion before, none now)",
    3: "ground glass, unchanged", 4: "consolidation, unchanged",
    5: "ground glass turned into consolidation", 6: "consolidation turned into ground glass",
}
QUANTITIES = ("lesion_ml", "percent_involved", "ggo_ml", "consolidation_ml")
YEARS_WARNING = 2.0


@dataclass
class CompareOptions:
    """``analysis``: how each scan is analysed. ``allow_different_patients``: compare scans whose
    PatientID / PatientName differ (said in the output). ``min_lung_dice``: the registration is
    accepted when the registered lung masks overlap at least this much. ``stable_ml`` and
    ``stable_fraction``: the verdict thresholds (see the module docstring)."""

    analysis: AnalysisOptions = field(default_factory=AnalysisOptions)
    allow_different_patients: bool = False
    min_lung_dice: float = 0.7
    stable_ml: float = 5.0
    stable_fraction: float = 0.25


@dataclass
class TimePoint:
    analysis: CTAnalysis
    label: str
    date: str | None            # ISO date of the study (DICOM StudyDate or AcquisitionDate), None when unknown
    patient: dict

    def summary(self) -> dict:
        q = self.analysis.quantification or {}
        regions = {r["name"]: {k: r[k] for k in QUANTITIES} for r in q.get("regions", [])}
        lungs = {side: {k: q["lungs"][side][k] for k in QUANTITIES} for side in ("right", "left", "total")} if q else {}
        return {"label": self.label, "date": self.date, "source": self.analysis.volume.source,
                "lungs": lungs, "regions": regions, "severity": q.get("severity", {}).get("value"),
                "pneumonia_flag": self.analysis.pneumonia_flag, "nodules": len(self.analysis.nodules),
                "results": self.analysis.to_dict(files=False)}


@dataclass
class Comparison:
    """Everything ``comparison.json`` holds, plus the change map (uint8 on the prior's canonical
    grid, :data:`CHANGE_LABELS`) and the registered current scan's masks."""

    time_points: list[TimePoint]
    change: dict
    changes: list[dict]
    verdict: dict
    registration: dict
    warnings: list[dict]
    change_map: np.ndarray
    current_on_prior: dict      # {"hu", "lungs", "lesions"} of the current scan on the prior's grid
    created: str
    timings: dict

    @property
    def prior(self) -> TimePoint:
        return self.time_points[-2]

    @property
    def current(self) -> TimePoint:
        return self.time_points[-1]

    def to_dict(self) -> dict:
        vox = self.prior.analysis.volume.voxel_volume_ml
        counts = np.bincount(self.change_map.ravel(), minlength=7)
        return json_ready({
            "schema_version": "1.0.0", "pulmo_version": __version__, "created": self.created,
            "disclaimer": DISCLAIMER,
            "time_points": [tp.summary() for tp in self.time_points],
            "change": self.change, "changes": self.changes, "verdict": self.verdict,
            "transitions_ml": {CHANGE_LABELS[k]: round(float(counts[k]) * vox, 2) for k in CHANGE_LABELS},
            "registration": self.registration, "warnings": self.warnings,
            "labels": {"change_map": CHANGE_LABELS},
            "thresholds": self.verdict.get("thresholds"), "timings_s": self.timings,
        })


# ----------------------------------------------------------------------------- identity and dates
def _header(vol: CTVolume):
    return vol.dicom.headers[0] if vol.dicom is not None and vol.dicom.headers else None


def _date(vol: CTVolume) -> str | None:
    h = _header(vol)
    if h is None:
        return None
    for key in ("StudyDate", "AcquisitionDate", "SeriesDate"):
        v = str(h.get(key, "") or "").strip()
        try:
            return _dt.datetime.strptime(v[:8], "%Y%m%d").date().isoformat()
        except ValueError:
            continue
    return None


def _patient(vol: CTVolume) -> dict:
    h = _header(vol)
    if h is None:
        return {}
    return {k: str(h.get(k, "") or "").strip() for k in ("PatientID", "PatientName", "PatientBirthDate")}


def _same_patient(a: dict, b: dict) -> bool | None:
    """True / False when the headers tell, None when they do not (NIfTI, anonymised)."""
    pid_a, pid_b = a.get("PatientID"), b.get("PatientID")
    if pid_a and pid_b:
        return pid_a == pid_b
    names = (a.get("PatientName"), b.get("PatientName"))
    return names[0] == names[1] if all(names) else None


# ----------------------------------------------------------------------------- registration
def _lung_image(vol: CTVolume, arr: np.ndarray, spacing_mm: float = 3.0) -> sitk.Image:
    """``arr`` on ``vol``'s canonical grid as an image, shrunk to about ``spacing_mm`` voxels."""
    img = vol.canonical_image(arr)
    factors = [max(1, int(round(spacing_mm / s))) for s in img.GetSpacing()]
    return sitk.BinShrink(img, factors) if any(f > 1 for f in factors) else img


def register(fixed: CTAnalysis, moving: CTAnalysis, spacing_mm: float = 6.0) -> tuple[sitk.Transform, dict]:
    """An affine transform mapping points of ``fixed`` (the prior) to ``moving`` (the current):
    rigid on the CT clipped to the lung window (Mattes mutual information), the two lung masks'
    centres of mass aligned first; then affine on the two lung masks (smoothed, mean squares),
    both at about ``spacing_mm``. Returns ``(transform, info)``."""
    t0 = time.perf_counter()
    window = (-1000.0, 200.0)

    def prep(a: CTAnalysis) -> sitk.Image:
        return _lung_image(a.volume, np.clip(a.volume.array, *window).astype(np.float32), spacing_mm)

    f_lung = _lung_image(fixed.volume, (fixed.lungs > 0).astype(np.float32), spacing_mm)
    m_lung = _lung_image(moving.volume, (moving.lungs > 0).astype(np.float32), spacing_mm)
    rigid = sitk.CenteredTransformInitializer(f_lung, m_lung, sitk.Euler3DTransform(),
                                              sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-3, 60, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(rigid, inPlace=True)
    reg.Execute(prep(fixed), prep(moving))
    metric = reg.GetMetricValue()
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    shape = sitk.ImageRegistrationMethod()
    shape.SetMetricAsMeanSquares()
    shape.SetInterpolator(sitk.sitkLinear)
    shape.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 40, relaxationFactor=0.6)
    shape.SetOptimizerScalesFromPhysicalShift()
    shape.SetInitialTransform(affine, inPlace=True)
    shape.Execute(sitk.SmoothingRecursiveGaussian(f_lung, 4.0), sitk.SmoothingRecursiveGaussian(m_lung, 4.0))
    return affine, {"method": f"rigid (Euler 3D; Mattes mutual information on the CT clipped to {window[0]:.0f}.."
                              f"{window[1]:.0f} HU), then affine (mean squares on the smoothed lung masks), at about "
                              f"{spacing_mm:.0f} mm; lungs' centres of mass aligned first",
                    "metric": round(float(metric), 4), "seconds": round(time.perf_counter() - t0, 2),
                    "translation_mm": [round(float(v), 2) for v in rigid.GetTranslation()],
                    "rotation_deg": [round(math.degrees(v), 2) for v in (rigid.GetAngleX(), rigid.GetAngleY(),
                                                                         rigid.GetAngleZ())]}


def _to_prior(prior: CTAnalysis, current: CTAnalysis, arr: np.ndarray, transform, nearest: bool,
              default: float = 0.0) -> np.ndarray:
    ref = prior.volume.canonical_image(np.zeros(prior.volume.shape, np.uint8))
    img = current.volume.canonical_image(arr)
    out = sitk.Resample(img, ref, transform, sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear, default,
                        img.GetPixelID())
    return sitk.GetArrayFromImage(out)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else float("nan")


# ----------------------------------------------------------------------------- change and verdicts
def _delta(prior: dict, current: dict) -> dict:
    return {k: round(float(current.get(k) or 0.0) - float(prior.get(k) or 0.0), 2) for k in QUANTITIES}


def _verdict(prior_ml: float, delta_ml: float, options: CompareOptions) -> str:
    limit = max(options.stable_ml, options.stable_fraction * max(prior_ml, 0.0))
    if delta_ml >= limit:
        return "progression"
    if delta_ml <= -limit:
        return "regression"
    return "stable"


def _pair_change(prior: TimePoint, current: TimePoint, options: CompareOptions) -> tuple[dict, dict]:
    p, c = prior.summary(), current.summary()
    lungs = {side: _delta(p["lungs"][side], c["lungs"][side]) for side in ("right", "left", "total")}
    regions = {name: _delta(p["regions"][name], c["regions"].get(name, {})) for name in p["regions"]
               if name in c["regions"]}
    verdict = {
        "overall": _verdict(p["lungs"]["total"]["lesion_ml"], lungs["total"]["lesion_ml"], options),
        "lungs": {s: _verdict(p["lungs"][s]["lesion_ml"], lungs[s]["lesion_ml"], options) for s in ("right", "left")},
        "regions": {n: _verdict(p["regions"][n]["lesion_ml"], regions[n]["lesion_ml"], options) for n in regions},
        "thresholds": {"stable_ml": options.stable_ml, "stable_fraction": options.stable_fraction,
                       "rule": "progression when the lesion volume grows by at least max(stable_ml, "
                               "stable_fraction x prior lesion volume); regression when it shrinks by as much"},
    }
    change = {"from": p["label"], "to": c["label"], "from_date": p["date"], "to_date": c["date"],
              "lungs": lungs, "regions": regions}
    return change, verdict


def compare(sources, options: CompareOptions | None = None, progress: ProgressCallback | None = None) -> Comparison:
    """Compare two or more chest CTs of one patient (paths, :class:`CTVolume` or finished
    :class:`CTAnalysis`), oldest first;
    with DICOM dates the scans are put in date order. Raises :class:`InputError` for scans of
    different patients (unless allowed), fewer than two scans, or a registration that fails."""
    options = options or CompareOptions()
    if len(sources) < 2:
        raise InputError("a comparison needs at least two scans: the prior and the current")
    timings: dict = {}
    stage = StageTimer(timings, progress)
    points, warns = [], []
    for i, src in enumerate(sources):
        if isinstance(src, CTAnalysis):  # analysed already
            a = src
        else:
            with stage(f"analyse scan {i + 1}"):
                a = analyze(src, options.analysis)
        if not isinstance(a, CTAnalysis) or a.quantification is None:
            raise InputError(f"{src}: a comparison needs chest CT volumes, not a folder of 2D images")
        label = (Path(str(src)).name if not isinstance(src, (CTVolume, CTAnalysis))
                 else (a.volume.source or f"scan {i + 1}"))
        points.append(TimePoint(a, label, _date(a.volume), _patient(a.volume)))
    if all(tp.date for tp in points):
        order = sorted(range(len(points)), key=lambda k: points[k].date)
        if order != list(range(len(points))):
            warns.append(warning("reordered", "the scans were put in the order of their study dates: "
                                 + ", ".join(f"{points[k].label} ({points[k].date})" for k in order)))
            points = [points[k] for k in order]
    else:
        warns.append(warning("dates_unknown", "the study dates are not known for every scan (not DICOM, or "
                             "anonymised): the scans are taken in the order given, the first as the prior"))
    first = points[0].patient
    for tp in points[1:]:
        same = _same_patient(first, tp.patient)
        if same is False:
            text = (f"{points[0].label} and {tp.label} belong to different patients (PatientID "
                    f"{first.get('PatientID') or '?'} / {tp.patient.get('PatientID') or '?'})")
            if not options.allow_different_patients:
                raise InputError(text + "; a follow-up comparison needs one patient's scans (allow different "
                                 "patients explicitly to compare anyway)", code="different_patients")
            warns.append(warning("different_patients", text + "; compared anyway, as asked"))
        elif same is None:
            warns.append(warning("patient_unchecked", f"the patient of {tp.label} could not be checked against "
                                 f"{points[0].label} (no PatientID or PatientName)"))
    for a, b in zip(points, points[1:]):
        if a.date and b.date:
            years = (_dt.date.fromisoformat(b.date) - _dt.date.fromisoformat(a.date)).days / 365.25
            if years > YEARS_WARNING:
                warns.append(warning("long_interval", f"{years:.1f} years between {a.label} and {b.label}: changes "
                                     "may not belong to one illness"))
    for tp in points:
        cov = (tp.analysis.quantification or {}).get("coverage", {})
        if not cov.get("complete", True):
            warns.append(warning("partial_coverage", f"{tp.label} does not cover both lungs from apex to base: its "
                                 "volumes cover only the part in view, so changes may reflect coverage"))
    prior, current = points[-2], points[-1]
    with stage("register"):
        transform, reg_info = register(prior.analysis, current.analysis)
        cur_lungs = _to_prior(prior.analysis, current.analysis, current.analysis.lungs, transform, True)
        dice = _dice(prior.analysis.lungs > 0, cur_lungs > 0)
        reg_info["lung_dice"] = round(dice, 3)
        reg_info["min_lung_dice"] = options.min_lung_dice
        if not dice >= options.min_lung_dice:
            raise InputError(f"the registration of {current.label} onto {prior.label} failed: the registered lungs "
                             f"overlap with a Dice of {dice:.2f}, under {options.min_lung_dice:.2f}; no change is "
                             "reported (are both chest CTs of this patient, covering the same lungs?)",
                             code="registration_failed")
        covered = prior.analysis.lungs > 0
        overlap = float((covered & (cur_lungs > 0)).sum()) / max(int(covered.sum()), 1)
        if overlap < 0.9:
            warns.append(warning("partial_overlap", f"only {100 * overlap:.0f} % of the prior lungs lie within the "
                                 "current scan after registration: the voxel change map covers the overlap only"))
        cur_les = _to_prior(prior.analysis, current.analysis, current.analysis.lesions, transform, True)
        cur_hu = _to_prior(prior.analysis, current.analysis, current.analysis.volume.array.astype(np.float32),
                           transform, False, -1024.0)
    change_map = _change_map(prior.analysis.lesions, cur_les, covered | (cur_lungs > 0))
    changes, verdicts = [], []
    for a, b in zip(points, points[1:]):
        ch, vd = _pair_change(a, b, options)
        changes.append(ch)
        verdicts.append(vd)
    return Comparison(points, changes[-1], changes, verdicts[-1], reg_info, warns, change_map,
                      {"hu": cur_hu, "lungs": cur_lungs, "lesions": cur_les},
                      _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), timings)


def _change_map(prior_les: np.ndarray, cur_les: np.ndarray, lung: np.ndarray) -> np.ndarray:
    out = np.zeros(prior_les.shape, np.uint8)
    p, c = prior_les, cur_les
    out[(p == 0) & (c > 0)] = 1
    out[(p > 0) & (c == 0)] = 2
    out[(p == 1) & (c == 1)] = 3
    out[(p == 2) & (c == 2)] = 4
    out[(p == 1) & (c == 2)] = 5
    out[(p == 2) & (c == 1)] = 6
    out[~lung] = 0
    return out


def comparison_json(comparison: Comparison) -> str:
    return json.dumps(comparison.to_dict(), indent=2)
