"""Outputs of a follow-up comparison: ``comparison.json``, ``change_map.nii.gz``, ``compare.html``
(matched key slices side by side, the change map, a trend chart over all time points) and, when
the scans are DICOM, ``sr_change.dcm`` (a Comprehensive 3D SR, TID 1500, of the change)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pulmo import DISCLAIMER
from pulmo.ct.compare import CHANGE_LABELS, Comparison, comparison_json
from pulmo.ct.report.images import overlay, png_base64, window

CHANGE_COLOURS = {1: (230, 40, 40), 2: (40, 190, 90), 3: (255, 210, 0), 4: (200, 120, 0), 5: (255, 80, 200),
                  6: (60, 160, 255)}


def change_rgb(hu: np.ndarray, lungs: np.ndarray, change: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """A slice in the lung window with the change map's codes filled in colour."""
    rgb = overlay(window(hu), lungs, np.zeros_like(lungs)).astype(np.float32)
    for code, colour in CHANGE_COLOURS.items():
        m = change == code
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array(colour, np.float32)
    return rgb.astype(np.uint8)


def key_slice(comparison: Comparison) -> int:
    """The prior's slice (canonical z) with the most change (new, resolved or turned), else the most
    lesion in either scan, else the largest lung cross-section."""
    cm = comparison.change_map
    moving = np.isin(cm, (1, 2, 5, 6)).sum(axis=(1, 2))
    if moving.any():
        return int(np.argmax(moving))
    lesion = (comparison.prior.analysis.lesions > 0).sum(axis=(1, 2)) + \
        (comparison.current_on_prior["lesions"] > 0).sum(axis=(1, 2))
    if lesion.any():
        return int(np.argmax(lesion))
    return int(np.argmax((comparison.prior.analysis.lungs > 0).sum(axis=(1, 2))))


def trend_svg(comparison: Comparison, width: int = 520, height: int = 220) -> str:
    """An inline SVG line chart: total lesion volume (mL) at every time point."""
    pts = comparison.time_points
    values = [float(tp.summary()["lungs"]["total"]["lesion_ml"]) for tp in pts]
    top = max(max(values), 1.0) * 1.15
    left, right, upper, lower = 56, 16, 16, 48
    w, h = width - left - right, height - upper - lower
    xs = [left + (w * i / max(len(pts) - 1, 1)) for i in range(len(pts))]
    ys = [upper + h * (1 - v / top) for v in values]
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(zip(xs, ys)))
    ticks = "".join(
        f'<line x1="{left}" x2="{left + w}" y1="{upper + h * (1 - f):.1f}" y2="{upper + h * (1 - f):.1f}" '
        f'stroke="#ddd"/><text x="{left - 6}" y="{upper + h * (1 - f) + 4:.1f}" text-anchor="end" '
        f'font-size="11">{top * f:.0f}</text>' for f in (0, 0.25, 0.5, 0.75, 1.0))
    marks = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#c0392b"/><text x="{x:.1f}" y="{y - 8:.1f}" '
        f'text-anchor="middle" font-size="11">{v:.1f}</text><text x="{x:.1f}" y="{upper + h + 18}" '
        f'text-anchor="middle" font-size="11">{html.escape(tp.date or tp.label)[:24]}</text>'
        for x, y, v, tp in zip(xs, ys, values, pts))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="lesion volume over time">{ticks}<path d="{path}" fill="none" stroke="#c0392b" '
            f'stroke-width="2"/>{marks}<text x="12" y="{upper + h / 2:.0f}" font-size="11" '
            f'transform="rotate(-90 12 {upper + h / 2:.0f})" text-anchor="middle">lesion mL</text></svg>')


def render_html(comparison: Comparison) -> str:
    d = comparison.to_dict()
    prior, current = comparison.prior, comparison.current
    z = key_slice(comparison)
    pa = prior.analysis
    left = overlay(window(pa.volume.array[z]), pa.lungs[z], pa.lesions[z])
    right = overlay(window(comparison.current_on_prior["hu"][z]), comparison.current_on_prior["lungs"][z],
                    comparison.current_on_prior["lesions"][z])
    change = change_rgb(pa.volume.array[z], pa.lungs[z], comparison.change_map[z])

    def fmt(v):
        return "&ndash;" if v is None else (f"{v:+.2f}" if isinstance(v, float) else html.escape(str(v)))

    rows = []
    for name, ch in [("Right lung", d["change"]["lungs"]["right"]), ("Left lung", d["change"]["lungs"]["left"]),
                     ("Both lungs", d["change"]["lungs"]["total"])] + [
                         (n.capitalize(), v) for n, v in d["change"]["regions"].items()]:
        key = name.lower().replace(" lung", "") if "lung" in name.lower() else name.lower()
        verdict = (d["verdict"]["overall"] if name == "Both lungs" else
                   d["verdict"]["lungs"].get(key) or d["verdict"]["regions"].get(name.lower(), ""))
        rows.append(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{fmt(ch[k])}</td>" for k in
                    ("lesion_ml", "percent_involved", "ggo_ml", "consolidation_ml")) + f"<td>{html.escape(verdict)}</td></tr>")
    legend = " ".join(f'<span style="background:rgb{CHANGE_COLOURS[k]};padding:0 .5em">&nbsp;</span> '
                      f'{html.escape(v)}' for k, v in CHANGE_LABELS.items())
    warns = "".join(f"<li><b>{html.escape(w['code'])}</b>: {html.escape(w['message'])}</li>" for w in d["warnings"])
    trans = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.2f}</td></tr>" for k, v in d["transitions_ml"].items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Pulmo follow-up comparison</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 .6em;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}}figure{{display:inline-block;margin:0 1em 1em 0;max-width:100%}}
img{{max-width:100%;height:auto}}.verdict{{font-size:1.3em}}
.disclaimer{{background:#fff3cd;border:1px solid #e0c060;padding:.6em}}</style></head><body>
<h1>Pulmo follow-up comparison</h1>
<p class="disclaimer"><b>Research tool, not a certified medical device.</b> {html.escape(DISCLAIMER)}</p>
<p>Prior: {html.escape(prior.label)} ({html.escape(prior.date or 'date unknown')}); current: {html.escape(current.label)}
({html.escape(current.date or 'date unknown')}). Change = current minus prior.</p>
<p class="verdict"><b>Overall: {html.escape(d['verdict']['overall'])}</b>
(total lesion {fmt(d['change']['lungs']['total']['lesion_ml'])} mL). {html.escape(d['verdict']['thresholds']['rule'])}:
{d['verdict']['thresholds']['stable_ml']} mL, {100 * d['verdict']['thresholds']['stable_fraction']:.0f} %.</p>
<h2>Warnings</h2><ul>{warns or '<li>none</li>'}</ul>
<h2>Matched key slices</h2>
<p>The prior's slice with the most change, and the current scan registered onto it
(lung Dice after registration {d['registration']['lung_dice']:.3f}).</p>
<figure><img alt="prior" src="data:image/png;base64,{png_base64(left)}"><figcaption>Prior</figcaption></figure>
<figure><img alt="current, registered" src="data:image/png;base64,{png_base64(right)}"><figcaption>Current (registered)</figcaption></figure>
<figure><img alt="change map" src="data:image/png;base64,{png_base64(change)}"><figcaption>Change map</figcaption></figure>
<p>{legend}</p>
<h2>Trend over all time points</h2>{trend_svg(comparison)}
<h2>Change per lung and region</h2>
<table><tr><th>Region</th><th>Lesion mL</th><th>% involved (points)</th><th>GGO mL</th><th>Consolidation mL</th><th>Verdict</th></tr>
{''.join(rows)}</table>
<h2>Voxel transitions (prior grid)</h2><table><tr><th>Change</th><th>mL</th></tr>{trans}</table>
<p>Registration: {html.escape(d['registration']['method'])}.</p>
</body></html>
"""


def write_change_map(comparison: Comparison, path: Path) -> None:
    img = comparison.prior.analysis.volume.to_native(comparison.change_map)
    sitk.WriteImage(img, str(path), True)


def write_change_sr(comparison: Comparison, path: Path) -> bool:
    """A TID 1500 Comprehensive 3D SR of the change (one measurement group per lung and region,
    with the change in lesion, ground-glass and consolidation volume and in percent involved, and
    the verdict as text in the group's session); False when the current scan is not DICOM."""
    import highdicom as hd
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    from pulmo.ct.report.dicom_out import (CONS_VOLUME, GGO_VOLUME, LEFT_LUNG, LESION_VOLUME, MANUFACTURER, ML,
                                           PCT_INVOLVED, PERCENT, RIGHT_LUNG)

    vol = comparison.current.analysis.volume
    if vol.dicom is None or not vol.dicom.headers:
        return False
    change = comparison.to_dict()["change"]
    groups = []
    entries = [("right lung", change["lungs"]["right"], RIGHT_LUNG), ("left lung", change["lungs"]["left"], LEFT_LUNG),
               ("both lungs", change["lungs"]["total"], None)]
    entries += [(name, v, RIGHT_LUNG if name.startswith("right") else LEFT_LUNG) for name, v in change["regions"].items()]
    verdicts = comparison.verdict
    for name, ch, site in entries:
        verdict = (verdicts["overall"] if name == "both lungs" else verdicts["lungs"].get(name.split()[0])
                   if name.endswith("lung") else verdicts["regions"].get(name, ""))
        ms = [hd.sr.Measurement(name=CodedConcept(c.value, c.scheme_designator, "Change in " + c.meaning.lower()),
                                value=float(ch[k]), unit=unit)
              for c, k, unit in ((LESION_VOLUME, "lesion_ml", ML), (GGO_VOLUME, "ggo_ml", ML),
                                 (CONS_VOLUME, "consolidation_ml", ML), (PCT_INVOLVED, "percent_involved", PERCENT))]
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{name}: {verdict}"),
            finding_type=codes.SCT.Lung, finding_sites=[hd.sr.FindingSite(site)] if site is not None else None,
            session=f"change from {comparison.prior.date or comparison.prior.label} to "
                    f"{comparison.current.date or comparison.current.label}",
            measurements=ms))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), manufacturer_name=MANUFACTURER, model_name="Pulmo follow-up comparison"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=None, observer_device_context=observer),
        procedure_reported=CodedConcept("25045-6", "LN", "CT unspecified body region"),
        imaging_measurements=groups, title=codes.cid7021.ImagingMeasurementReport)
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(vol.dicom.headers), content=report, series_instance_uid=hd.UID(), series_number=9004,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        series_description="Pulmo follow-up change", is_complete=True, is_final=False, is_verified=False)
    sr.save_as(path)
    return True


def write_comparison(comparison: Comparison, out_dir) -> list[str]:
    """Write every output into ``out_dir`` (replaced as a whole, like an analysis folder)."""
    from pulmo.ct.outputs import staging_dir

    files = []
    with staging_dir(Path(out_dir)) as tmp:
        write_change_map(comparison, tmp / "change_map.nii.gz")
        files.append("change_map.nii.gz")
        (tmp / "compare.html").write_text(render_html(comparison), encoding="utf-8")
        files.append("compare.html")
        if write_change_sr(comparison, tmp / "sr_change.dcm"):
            files.append("sr_change.dcm")
        (tmp / "comparison.json").write_text(comparison_json(comparison), encoding="utf-8")
        files.append("comparison.json")
    return files
