"""Quantification per lung and per region, severity score, pneumonia flag, quality warnings.

Volumes in mL (voxel count x voxel volume). ``percent_involved`` = lesion / lung
volume x 100. The severity score bins each region's percent involved as Pan et
al. (Radiology 2020;295:715-721): 0 none, 1 <5 %, 2 5-25 %, 3 26-49 %, 4 50-75 %,
5 >75 %. With lobes it is the lobar score (0-25). With zones it is a
**zone-based score (6 zones x 0-5 = 0-30), an adaptation that is not the validated
lobar score** and is labelled so. "None" means below ``none_below_pct`` (density
masks are never exactly empty).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pulmo.ct import LOBE_LABELS, ZONE_LABELS
from pulmo.ct.volume import warning

HIST_EDGES = list(range(-1050, 151, 50))  # HU, 24 bins from -1050 to +150


@dataclass
class ScoreParams:
    pneumonia_threshold_pct: float = 10.0  # flag when the whole-lung percent involved reaches this
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


def quantify(hu, lungs, lesions, regions, region_kind: str, spacing, params: ScoreParams | None = None) -> dict:
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
        st["score"] = pan_bin(st["percent_involved"] or 0.0, p.none_below_pct) if st["volume_ml"] else 0
        score += st["score"]
        out["regions"].append({"label": label, "name": name, **st})
    if region_kind == "lobes":
        out["severity"] = {"kind": "lobar", "name": "CT severity score, lobar (Pan et al. 2020)",
                           "value": score, "max": 25}
    else:
        out["severity"] = {"kind": "zone-based",
                           "name": "zone-based CT severity score (6 zones x 0-5; adapted from Pan et al. 2020 "
                                   "lobar score, NOT the validated lobar score)", "value": score, "max": 30}
    pct = out["lungs"]["total"]["percent_involved"] or 0.0
    out["pneumonia"] = {
        "flag": bool(pct >= p.pneumonia_threshold_pct),
        "score": pct, "score_name": "percent of lung volume involved (GGO + consolidation)",
        "threshold": p.pneumonia_threshold_pct,
        "note": "heuristic screening flag of a density-based method; not a diagnosis",
    }
    return out


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


def quality_warnings(vol, lungs, few_slices: bool) -> tuple[list[dict], bool]:
    """Warnings about coverage and acquisition; returns (warnings, assessable)."""
    warns = []
    assessable = True
    sp = vol.spacing
    area = (lungs > 0).sum(axis=(1, 2))
    total_ml = float(area.sum()) * float(np.prod(sp)) / 1000.0
    present = np.flatnonzero(area)
    if present.size == 0:
        return [warning("no_lungs", "no lungs were found in this image")], False
    if few_slices:
        warns.append(warning("few_slices", f"only {lungs.shape[0]} slice(s): segmented slice by slice; volumes "
                             "and percentages refer to the slices given, not the whole lungs"))
    else:
        extent_mm = (present[-1] - present[0] + 1) * sp[0]
        top_cut = area[-1] > 0.1 * area.max()
        bottom_cut = area[0] > 0.1 * area.max()
        if total_ml < 1000.0 or extent_mm < 100.0:
            assessable = False
            warns.append(warning(
                "partial_coverage", f"not a chest CT, or the lungs are only partly in view: {total_ml:.0f} mL of "
                f"lung over {extent_mm:.0f} mm height (a whole adult lung pair is typically 3000-7000 mL over "
                "200-300 mm). No severity score or pneumonia flag is given", lung_ml=round(total_ml, 1)))
        elif top_cut or bottom_cut:
            where = " and ".join(w for w, c in (("apices (top)", top_cut), ("bases (bottom)", bottom_cut)) if c)
            warns.append(warning("partial_coverage", f"the lung {where} run off the scanned range; volumes and "
                                 "percentages cover only the part in view"))
    th = vol.meta.get("slice_thickness_mm") or sp[0]
    if th and th > 3.0:
        warns.append(warning("thick_slices", f"slice thickness {th:.1f} mm (> 3 mm): partial-volume effects blur "
                             "ground glass; thin-slice reconstructions are preferred"))
    ctdi, mas = vol.meta.get("ctdi_vol_mgy"), vol.meta.get("exposure_mas")
    if (ctdi is not None and ctdi < 3.0) or (mas is not None and mas < 30.0):
        warns.append(warning("low_dose", "low-dose acquisition (CTDIvol < 3 mGy or exposure < 30 mAs): noise can "
                             "inflate ground-glass volume"))
    lung_vals = vol.array[lungs > 0]
    med = float(np.median(lung_vals[:: max(1, lung_vals.size // 200000)])) if lung_vals.size else 0.0
    if med > -700:
        warns.append(warning("dense_lungs", f"median lung density {med:.0f} HU (> -700): expiration, diffuse "
                             "disease or a non-standard calibration; density-based ground glass is likely overestimated"))
    # motion: abrupt jumps of the lung cross-section between neighbouring slices
    if not few_slices and assessable and present.size > 10:
        a = area[present[0]:present[-1] + 1].astype(float)
        rel = np.abs(np.diff(a)) / np.maximum(a[:-1], 1)
        core = rel[len(rel) // 5: -len(rel) // 5 or None]
        if core.size and float(core.max()) > 0.35:
            warns.append(warning("possible_motion", "abrupt change of the lung cross-section between neighbouring "
                                 "slices in mid-lung: possible breathing motion or missing data"))
    return warns, assessable
