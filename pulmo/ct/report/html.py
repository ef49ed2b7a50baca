"""report.html: a single self-contained page (images embedded as PNG)."""

from __future__ import annotations

import html

from pulmo import DISCLAIMER


def _fmt(v, nd=1):
    if v is None:
        return "&ndash;"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return html.escape(str(v))


def _nodule_rows(q: dict) -> str:
    rows = "".join(
        f"<tr><td>{n['number']}</td><td>{html.escape(n['kind'])}</td><td>{_fmt(n['diameter_mm'])}</td>"
        f"<td>{_fmt(n['long_axis_mm'])}</td><td>{_fmt(n['volume_ml'], 2)}</td><td>{_fmt(n['mean_hu'], 0)}</td>"
        f"<td>{html.escape(n['lung'])}</td><td>{html.escape(str(n.get('region') or ''))}</td>"
        f"<td>{html.escape(', '.join(f'{v:.1f}' for v in n['centre_lps_mm']))}</td></tr>"
        for n in q.get("nodules", []))
    if not rows:
        return ""
    return ("<h2>Nodules / focal opacities (not counted as pneumonia)</h2>"
            "<p>Round solid focal lesions are reported here, apart from ground glass and consolidation; they are "
            "outlined in magenta on the key images. A radiologist should assess them (Fleischner Society "
            "guidelines).</p><table><tr><th>#</th><th>Kind</th><th>Diameter mm</th><th>Long axis mm</th>"
            "<th>Volume mL</th><th>Mean HU</th><th>Lung</th><th>Region</th><th>Centre LPS mm (x, y, z)</th></tr>"
            f"{rows}</table>")


def render(results: dict, axial_b64: str | None, coronal_b64: str | None, caption: str = "") -> str:
    q = results.get("quantification") or {}
    rows = []
    for name, st in (("Right lung", q.get("lungs", {}).get("right")), ("Left lung", q.get("lungs", {}).get("left")),
                     ("Both lungs", q.get("lungs", {}).get("total"))):
        if st:
            rows.append((name, st, ""))
    for r in q.get("regions", []):
        rows.append((r["name"].capitalize(), r, r.get("score")))
    trs = "\n".join(
        f"<tr><td>{html.escape(n)}</td><td>{_fmt(s['volume_ml'])}</td><td>{_fmt(s['lesion_ml'])}</td>"
        f"<td>{_fmt(s['percent_involved'])}</td><td>{_fmt(s['ggo_ml'])}</td><td>{_fmt(s['consolidation_ml'])}</td>"
        f"<td>{_fmt(s['mean_lesion_hu'], 0)}</td><td>{_fmt(sc)}</td></tr>" for n, s, sc in rows)
    sev = q.get("severity")
    pn = q.get("pneumonia")
    cov = q.get("coverage") or {}
    if results.get("assessable") and sev and pn:
        severity = (f"{sev['value']} / {sev['max']}" if sev.get("value") is not None
                    else f"not given ({html.escape(sev.get('reason', 'partial coverage'))})")
        summary = (f"<p><b>{html.escape(sev['name'])}:</b> {severity}</p>"
                   f"<p><b>Pneumonia flag:</b> {_flag_text(pn['flag'])} "
                   f"({html.escape(pn['score_name'])} = {pn['score']:.1f} %, threshold {pn['threshold']:.1f} %; "
                   f"{html.escape(pn['note'])})</p>"
                   + (f"<p><b>Why indeterminate:</b> {html.escape(pn['reason'])}</p>" if pn.get("reason") else ""))
    else:
        summary = "<p><b>No severity score or pneumonia flag:</b> the study is not assessable (see warnings).</p>"
    warns = "".join(f"<li><b>{html.escape(w['code'])}</b>: {html.escape(w['message'])}</li>"
                    for w in results.get("warnings", []))
    imgs = f"<p>{html.escape(caption)}</p>" if caption else ""
    if cov and not cov.get("complete", True):
        imgs += "<p>No coronal image: the scan does not cover both lungs from apex to base.</p>"
    if axial_b64:
        imgs += (f'<figure><img alt="key axial slice" src="data:image/png;base64,{axial_b64}">'
                 '<figcaption>Axial (key slice)</figcaption></figure>')
    if coronal_b64:
        imgs += (f'<figure><img alt="coronal slice" src="data:image/png;base64,{coronal_b64}">'
                 '<figcaption>Coronal</figcaption></figure>')
    inp = results.get("input", {})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Pulmo chest-CT report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}}figure{{display:inline-block;margin:0 1em 1em 0}}
.disclaimer{{background:#fff3cd;border:1px solid #e0c060;padding:.6em}}</style></head><body>
<h1>Pulmo chest-CT analysis</h1>
<p class="disclaimer"><b>Research tool, not a certified medical device.</b> {html.escape(DISCLAIMER)}</p>
<p>Input: {html.escape(str(inp.get('source', '')))} ({html.escape(str(inp.get('kind', '')))}),
{html.escape(str(inp.get('shape_zyx', '')))} voxels, spacing {html.escape(str(inp.get('spacing_zyx_mm', '')))} mm (z, y, x).
Images are in radiological view: the patient's right is on the viewer's left.
Overlay: blue outline right lung, green outline left lung, yellow ground glass, red consolidation.</p>
{summary}
<h2>Warnings</h2><ul>{warns or '<li>none</li>'}</ul>
<h2>Key images</h2>{imgs}
{_nodule_rows(q)}
<h2>Per lung and region ({html.escape(results.get('regions', {}).get('kind', ''))})</h2>
<table><tr><th>Region</th><th>Volume mL</th><th>Lesion mL</th><th>% involved</th><th>GGO mL</th>
<th>Consolidation mL</th><th>Mean lesion HU</th><th>Score 0-5</th></tr>
{trs}</table>
<p>A region scores 0 unless its lesion reaches {_fmt((sev or {}).get('region_min_ml'))} mL and
{_fmt((sev or {}).get('region_min_pct'))} % of the region (smaller amounts are within what the method finds on
normal lungs).</p>
<p>Method: {html.escape(results.get('method', {}).get('summary', ''))}</p>
<p>Pulmo {html.escape(results.get('pulmo_version', ''))}, results schema {html.escape(results.get('schema_version', ''))}.</p>
</body></html>
"""


def _flag_text(flag) -> str:
    return "POSITIVE" if flag is True else ("INDETERMINATE" if flag == "indeterminate" else "negative")
