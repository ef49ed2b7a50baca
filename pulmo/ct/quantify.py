"""Quantification per lung and per region, severity score, pneumonia flag, quality warnings.

Volumes in mL (voxel count x voxel volume). ``percent_involved`` = lesion / lung
volume x 100; lesion is ground glass + consolidation (pneumonia pattern: nodules and
masses are reported apart, :mod:`pulmo.ct.segment.nodules`). The severity score bins each
region's percent involved as Pan et al. (Radiology 2020;295:715-721): 0 none, 1 <5 %,
2 5-25 %, 3 26-49 %, 4 50-75 %, 5 >75 %. With lobes it is the lobar score (0-25). With
zones it is a **zone-based score (6 zones x 0-5 = 0-30), an adaptation that is not the
validated lobar score** and is labelled so.

A region scores 0 unless its lesion reaches ``ScoreParams.region_min_ml`` (2 mL) and
``region_min_pct`` (0.1 % of the region). 2 mL is a sphere of 1.6 cm, the smallest opacity
that spans several 2.5 mm slices; on the normal reference scan lidc-idri-0001 the lesion left
in any one zone after the partial-volume and nodule rules is at most 1.3 mL (docs/ct.md).

Regions are scored only when the scan covers both lungs from apex to base
(:func:`quality_warnings`, ``coverage``): a single slice, a slab or a cut scan gets volumes
and percentages of what is in view, no region scores and no severity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pulmo.ct import LOBE_LABELS, ZONE_LABELS
from pulmo.ct.volume import warning

HIST_EDGES = list(range(-1050, 151, 50))  # HU, 24 bins from -1050 to +150


@dataclass
class ScoreParams:
    """The operating points of the pneumonia flag (docs/ct.md, "Pneumonia flag"): a volume is
    flagged when its pneumonia-pattern lesion reaches ``pneumonia_threshold_pct`` of the lung in
    view and ``pneumonia_min_ml``; a single slice or a few slices (a 2D image, fewer than 8
    slices) when it reaches ``pneumonia_slice_threshold_pct`` of the lung on them.
    Lesions from the density bands (no learned model) overestimate ground glass on every lung, so
    they keep the heuristic ``pneumonia_density_threshold_pct`` (10 %) whatever the input.
    ``region_min_ml`` / ``region_min_pct``: a region with less lesion scores 0;
    ``none_below_pct``: below this percent a region is "none" in :func:`pan_bin`."""

    pneumonia_threshold_pct: float = 0.5
    pneumonia_min_ml: float = 3.0
    pneumonia_slice_threshold_pct: float = 1.0
    pneumonia_density_threshold_pct: float = 10.0
    region_min_ml: float = 2.0
    region_min_pct: float = 0.1
    none_below_pct: float = 0.1


def pan_bin(pct: float, none_below: float = 0.1) -> int:
    if pct < none_below:
        return 0
    if pct < 5:
        return 1
    if pct <= 25:
        return 2
    if pct < 50:
        return 3
    if pct <= 75:
        return 4
    return 5


def _group_stats(mask_idx, les, h, vox_ml) -> dict:
    n = int(mask_idx.sum())
    l = les[mask_idx]
    hv = h[mask_idx]
    n_ggo, n_cons = int((l == 1).sum()), int((l == 2).sum())
    n_les = n_ggo + n_cons
    hist, _ = np.histogram(np.clip(hv, HIST_EDGES[0], HIST_EDGES[-1] - 1e-3), bins=HIST_EDGES)
    return {
        "volume_ml": round(n * vox_ml, 2),
        "lesion_ml": round(n_les * vox_ml, 2),
        "ggo_ml": round(n_ggo * vox_ml, 2),
        "consolidation_ml": round(n_cons * vox_ml, 2),
        "percent_involved": round(100.0 * n_les / n, 2) if n else None,
        "percent_ggo": round(100.0 * n_ggo / n, 2) if n else None,
        "percent_consolidation": round(100.0 * n_cons / n, 2) if n else None,
        "ggo_share_of_lesion_pct": round(100.0 * n_ggo / n_les, 1) if n_les else None,
        "mean_lesion_hu": round(float(hv[l > 0].mean()), 1) if n_les else None,
        "mean_lung_hu": round(float(hv.mean()), 1) if n else None,
        "hu_histogram": hist.astype(int).tolist(),
    }


def quantify(hu, lungs, lesions, regions, region_kind: str, spacing, params: ScoreParams | None = None,
             coverage_complete: bool = True, lesion_source: str = "learned", slices_only: bool = False) -> dict:
    """Volumes, percentages and HU histograms per lung and region, the severity score (None
    unless ``coverage_complete``) and the pneumonia flag (the slice operating point when
    ``slices_only``: a 2D image or a few slices). ``lesion_source`` ("learned", "plug-in
    model", "density") names the method in the flag's note."""
    p = params or ScoreParams()
    vox_ml = float(np.prod(spacing)) / 1000.0
    idx = np.flatnonzero(lungs)
    side = lungs.ravel()[idx]
    les = lesions.ravel()[idx]
    reg = regions.ravel()[idx]
    h = hu.ravel()[idx].astype(np.float32)
    names = LOBE_LABELS if region_kind == "lobes" else ZONE_LABELS
    out = {
        "lungs": {
            "right": _group_stats(side == 1, les, h, vox_ml),
            "left": _group_stats(side == 2, les, h, vox_ml),
            "total": _group_stats(np.ones(side.shape, bool), les, h, vox_ml),
        },
        "regions": [],
        "hu_histogram_edges": HIST_EDGES,
    }
    score = 0
    for label, name in names.items():
        st = _group_stats(reg == label, les, h, vox_ml)
        counted = (st["volume_ml"] and st["lesion_ml"] >= p.region_min_ml
                   and (st["percent_involved"] or 0.0) >= p.region_min_pct)
        st["score"] = (pan_bin(st["percent_involved"] or 0.0, p.none_below_pct) if counted else 0) \
            if coverage_complete else None
        score += st["score"] or 0
        out["regions"].append({"label": label, "name": name, **st})
    minimum = {"region_min_ml": p.region_min_ml, "region_min_pct": p.region_min_pct}
    if region_kind == "lobes":
        out["severity"] = {"kind": "lobar", "name": "CT severity score, lobar (Pan et al. 2020)",
                           "value": score, "max": 25, **minimum}
    else:
        out["severity"] = {"kind": "zone-based",
                           "name": "zone-based CT severity score (6 zones x 0-5; adapted from Pan et al. 2020 "
                                   "lobar score, NOT the validated lobar score)", "value": score, "max": 30, **minimum}
    if not coverage_complete:
        out["severity"].update(value=None, reason="the scan does not cover both lungs from apex to base "
                               "(partial_coverage): no region scores")
    total = out["lungs"]["total"]
    pct = total["percent_involved"] or 0.0
    if lesion_source == "density":
        threshold, min_ml = p.pneumonia_density_threshold_pct, 0.0
    else:
        threshold = p.pneumonia_slice_threshold_pct if slices_only else p.pneumonia_threshold_pct
        min_ml = 0.0 if slices_only else p.pneumonia_min_ml
    out["pneumonia"] = {
        "flag": bool(pct >= threshold and total["lesion_ml"] >= min_ml),
        "score": pct, "score_name": "percent of the lung in view involved by ground glass and consolidation "
                                   "(nodules and masses excluded)",
        "threshold": threshold, "min_lesion_ml": min_ml, "basis": "slices" if slices_only else "volume",
        "note": FLAG_NOTES.get(lesion_source, FLAG_NOTES["learned"]),
    }
    return out


FLAG_NOTES = {
    "learned": "screening flag on the learned lesion model's ground glass and consolidation, at an operating point "
               "chosen for sensitivity to mild disease (docs/ct.md); not a diagnosis",
    "plug-in model": "screening flag on the plug-in lesion model's output; not a diagnosis",
    "density": "heuristic screening flag of the density method (HU bands), which overestimates ground glass in "
               "dense lungs; not a diagnosis",
}


def qualify_flag(q: dict, warnings: list[dict], density_based: bool) -> dict:
    """Downgrade a positive pneumonia flag to ``"indeterminate"`` when it rests on density alone
    in lungs that read dense overall (``dense_lungs`` warning: expiration, diffuse disease or a
    calibration offset raise the whole lung into the ground-glass band, so the percent involved
    is not evidence of pneumonia). A negative flag stays negative (the overestimate only inflates
    the score). ``q["pneumonia"]["reason"]`` says why. Returns ``q``."""
    pn = q.get("pneumonia")
    if not pn or pn.get("flag") is not True or not density_based:
        return q
    dense = next((w for w in warnings if w.get("code") == "dense_lungs"), None)
    if dense is not None:
        pn["flag"] = "indeterminate"
        pn["reason"] = ("dense_lungs: " + dense["message"] + "; the score exceeds the threshold, but a density-based "
                        "score cannot tell this from pneumonia (repeat at full inspiration, or use a lesion model)")
    return q


def quality_warnings(vol, lungs, few_slices: bool, lesion_source: str = "learned") -> tuple[list[dict], bool, dict]:
    """Warnings about coverage and acquisition; returns ``(warnings, assessable, coverage)``.

    ``coverage``: ``{"complete": bool, "missing": [...]}``; complete means both lungs from apex
    to base (region scores need it). ``assessable`` False: not a chest CT or hardly any lung in
    view (no severity and no pneumonia flag)."""
    warns = []
    assessable = True
    missing: list[str] = []
    sp = vol.spacing
    area = (lungs > 0).sum(axis=(1, 2))
    total_ml = float(area.sum()) * float(np.prod(sp)) / 1000.0
    present = np.flatnonzero(area)
    if present.size == 0:
        return [warning("no_lungs", "no lungs were found in this image")], False, {"complete": False,
                                                                                  "missing": ["both lungs"]}
    if few_slices:
        warns.append(warning("few_slices", f"only {lungs.shape[0]} slice(s): segmented slice by slice; volumes "
                             "and percentages refer to the slices given, not the whole lungs"))
        missing.append(f"all but {lungs.shape[0]} slice(s) of the lungs")
    else:
        extent_mm = (present[-1] - present[0] + 1) * sp[0]
        top_cut = area[-1] > 0.1 * area.max()
        bottom_cut = area[0] > 0.1 * area.max()
        if total_ml < 1000.0 or extent_mm < 100.0:
            assessable = False
            missing.append("most of the lungs")
            warns.append(warning(
                "partial_coverage", f"not a chest CT, or the lungs are only partly in view: {total_ml:.0f} mL of "
                f"lung over {extent_mm:.0f} mm height (a whole adult lung pair is typically 3000-7000 mL over "
                "200-300 mm). No severity score or pneumonia flag is given", lung_ml=round(total_ml, 1),
                missing=missing))
        elif top_cut or bottom_cut:
            missing += [w for w, c in (("the apices (top)", top_cut), ("the bases (bottom)", bottom_cut)) if c]
    if assessable and not few_slices:
        right, left = int((lungs == 1).sum()), int((lungs == 2).sum())
        if min(right, left) < 0.15 * max(right, left):
            missing.append(f"most of the {'right' if right < left else 'left'} lung")
        box = lungs > 0
        if box[:, :, 0].any() or box[:, :, -1].any() or box[:, 0, :].any() or box[:, -1, :].any():
            missing.append("the part of the lungs outside the field of view (the lungs touch the image edge)")
    if missing and assessable:
        warns.append(warning(
            "partial_coverage", "the scan does not cover both lungs from apex to base: " + "; ".join(missing)
            + " not in view. Volumes and percentages cover only the part in view; no zone or lobe scores, "
            "no severity score and no coronal image", missing=missing))
    th = vol.meta.get("slice_thickness_mm") or sp[0]
    if th and th > 3.0:
        warns.append(warning("thick_slices", f"slice thickness {th:.1f} mm (> 3 mm): partial-volume effects blur "
                             "ground glass; thin-slice reconstructions are preferred"))
    dose = _dose(vol.meta)
    if dose is not None and dose[0]:
        warns.append(warning("low_dose", f"low-dose acquisition ({dose[1]}): noise can inflate ground-glass volume",
                             basis=dose[2]))
    lung_vals = vol.array[lungs > 0]
    med = float(np.median(lung_vals[:: max(1, lung_vals.size // 200000)])) if lung_vals.size else 0.0
    if med > -700:
        what = ("density-based ground glass is likely overestimated" if lesion_source == "density" else
                "ground glass read from density may be overestimated")
        warns.append(warning("dense_lungs", f"median lung density {med:.0f} HU (> -700): expiration, diffuse "
                             f"disease or a non-standard calibration; {what}"))
    # motion: abrupt jumps of the lung cross-section between neighbouring slices
    if not few_slices and assessable and present.size > 10:
        a = area[present[0]:present[-1] + 1].astype(float)
        rel = np.abs(np.diff(a)) / np.maximum(a[:-1], 1)
        core = rel[len(rel) // 5: -len(rel) // 5 or None]
        if core.size and float(core.max()) > 0.35:
            warns.append(warning("possible_motion", "abrupt change of the lung cross-section between neighbouring "
                                 "slices in mid-lung: possible breathing motion or missing data"))
    return warns, assessable, {"complete": assessable and not missing, "missing": missing}


LOW_CTDI_MGY = 3.0
LOW_MAS = 30.0


def _dose(meta: dict) -> tuple[bool, str, str] | None:
    """``(low, text, basis)`` from CTDIvol when the header has it, else from tube current x
    exposure time (mA x ms / 1000 = mAs per rotation); None when neither is known. The Exposure
    tag alone is not used: scanners fill it inconsistently (lidc-idri-0001: 5 mAs beside
    502 mA x 500 ms)."""
    ctdi = meta.get("ctdi_vol_mgy")
    if ctdi is not None and ctdi > 0:
        return ctdi < LOW_CTDI_MGY, f"CTDIvol {ctdi:.1f} mGy < {LOW_CTDI_MGY:.0f} mGy", "CTDIvol"
    ma, ms = meta.get("tube_current_ma"), meta.get("exposure_time_ms")
    if ma and ms and ma > 0 and ms > 0:
        mas = ma * ms / 1000.0
        return (mas < LOW_MAS, f"tube current x exposure time {ma:.0f} mA x {ms:.0f} ms = {mas:.0f} mAs < "
                f"{LOW_MAS:.0f} mAs", "tube current x exposure time")
    return None
