"""Writing validation results: JSON, CSV and a self-contained HTML report with plots.

All files are written through :mod:`pulmo.io.outputs`: atomically (a temporary file renamed
into place), so a reader never sees half a report, and never over a file Pulmo did not write
unless the caller says ``force``. CSV cells that a spreadsheet would run as a formula are
written as text. JSON is strict: NaN becomes ``null`` and infinities the
strings ``"Infinity"`` / ``"-Infinity"``. Plots are PNG images (matplotlib, Agg canvas,
no global pyplot state) embedded in the HTML as base64.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import asdict, is_dataclass

import numpy as np

from pulmo import DISCLAIMER
from pulmo.io import outputs as _outputs
from pulmo.stats.validate import Validation

__all__ = ["jsonable", "to_json", "to_csv", "write_text", "write_json", "write_csv", "write_html",
           "csv_rows", "render_html"]


# --------------------------------------------------------------------------- JSON

def jsonable(obj):
    """Plain-Python, strictly JSON-encodable copy of ``obj`` (numpy, dataclasses, NaN/inf)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "Infinity" if f > 0 else "-Infinity"
        return f
    return obj


def to_json(result: dict) -> str:
    return json.dumps(jsonable(result), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def write_text(path, text: str, **check) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, never over a file of the user's:
    :func:`pulmo.io.outputs.write_text` (``force``, ``inputs``, ``input_dirs``, ``what``)."""
    _outputs.write_text(path, text, **check)


def write_json(path: str | os.PathLike, result: dict, **check) -> None:
    write_text(path, to_json(result), **check)


# --------------------------------------------------------------------------- CSV

def _ci(v, i):
    return None if v is None else v[i]


def csv_rows(result: dict) -> tuple[list[str], list[dict]]:
    """The flat results table (one row per measure): (columns, rows)."""
    kind = result.get("analysis")
    rows: list[dict] = []
    if kind == "roc":
        cols = ["kind", "score", "by", "level", "n", "n_positive", "n_negative", "auc", "auc_se",
                "auc_ci_low", "auc_ci_high", "youden_threshold", "sensitivity", "sensitivity_ci_low",
                "sensitivity_ci_high", "specificity", "specificity_ci_low", "specificity_ci_high",
                "ppv", "ppv_ci_low", "ppv_ci_high", "npv", "npv_ci_low", "npv_ci_high",
                "a", "b", "method", "statistic", "df", "p_value", "p_holm", "note"]
        for name, s in result["scores"].items():
            y = s["youden"]
            rows.append({"kind": "auc", "score": name, "by": "", "level": "all", "n": result["n"],
                         "n_positive": result["n_positive"], "n_negative": result["n_negative"],
                         "auc": s["auc"], "auc_se": s["auc_se"], "auc_ci_low": s["auc_ci"][0],
                         "auc_ci_high": s["auc_ci"][1], "youden_threshold": y["threshold"],
                         **{f"{k}{suf}": (y[k] if suf == "" else y[f"{k}_ci"][0 if suf == "_ci_low" else 1])
                            for k in ("sensitivity", "specificity", "ppv", "npv")
                            for suf in ("", "_ci_low", "_ci_high")}})
        for c in result["comparisons"]:
            rows.append({"kind": "comparison", "a": c["a"], "b": c["b"], "method": c["method"],
                         "statistic": c["z"], "p_value": c["p_value"]})
        for by, per_score in result["subgroups"].items():
            for name, tab in per_score.items():
                for lv in tab["levels"]:
                    rows.append({"kind": "subgroup_auc", "score": name, "by": by, "level": lv["level"],
                                 "n": lv["n"], "n_positive": lv["n_positive"], "n_negative": lv["n_negative"],
                                 "auc": lv["auc"], "auc_se": lv["auc_se"], "auc_ci_low": lv["auc_ci"][0],
                                 "auc_ci_high": lv["auc_ci"][1], "note": lv["note"]})
                for c in tab["comparisons"]:
                    rows.append({"kind": "subgroup_comparison", "score": name, "by": by, "a": c["a"],
                                 "b": c["b"], "method": c["method"], "statistic": c["statistic"],
                                 "df": c["df"], "p_value": c["p_value"], "p_holm": c["p_holm"],
                                 "note": c["note"]})
    elif kind == "survival":
        cols = ["risk", "measure", "horizon", "group", "estimate", "se", "ci_low", "ci_high",
                "p_value", "n", "events"]
        for name, r in result["risks"].items():
            for m in ("harrell", "uno"):
                c = r[m]
                rows.append({"risk": name, "measure": f"{m}_c", "horizon": c.get("tau"),
                             "estimate": c["c_index"], "se": c["se"], "ci_low": c["ci"][0],
                             "ci_high": c["ci"][1], "n": result["n"], "events": result["n_events"]})
            for a in r.get("time_dependent_auc", []):
                rows.append({"risk": name, "measure": "time_dependent_auc", "horizon": a["horizon"],
                             "estimate": a["auc"]})
            lr = r["risk_groups"]["logrank"]
            rows.append({"risk": name, "measure": "logrank_chisq", "estimate": lr["chisq"],
                         "p_value": lr["p_value"]})
            for g in r["risk_groups"]["groups"]:
                for s in g.get("survival_at", []):
                    rows.append({"risk": name, "measure": "km_survival", "horizon": s["horizon"],
                                 "group": g["group"], "estimate": s["survival"], "ci_low": s["ci"][0],
                                 "ci_high": s["ci"][1], "n": g["n"], "events": g["events"]})
        for p in result["predictions"]:
            rows.append({"risk": p["column"], "measure": "brier", "horizon": p["horizon"], "estimate": p["brier"]})
            cal = p["calibration"]
            for k in ("slope", "intercept", "oe_ratio"):
                rows.append({"risk": p["column"], "measure": f"calibration_{k}", "horizon": p["horizon"],
                             "estimate": cal[k]})
        if "integrated_brier" in result:
            rows.append({"measure": "integrated_brier", "estimate": result["integrated_brier"]["ibs"]})
    elif kind == "segmentation":
        cols = ["case", "label", "dice", "iou", "hd95", "hausdorff", "surface_dice", "tolerance",
                "volume_prediction", "volume_reference", "empty"]
        rows = [dict(r) for r in result["cases"]]
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown analysis {kind!r}")
    return cols, rows


def _cell(v):
    v = jsonable(v)
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.10g}"
    return v


def to_csv(result: dict) -> str:
    """The flat results table as CSV text (empty cell for a missing or NaN value; text that a
    spreadsheet would run as a formula starts with ``'``: :func:`pulmo.io.outputs.csv_text`)."""
    cols, rows = csv_rows(result)
    return _outputs.csv_text(cols, ({k: _cell(r.get(k)) for k in cols} for r in rows))


def write_csv(path: str | os.PathLike, result: dict, **check) -> None:
    write_text(path, to_csv(result), **check)


# --------------------------------------------------------------------------- plots

def _figure(w=6.0, h=4.5):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v, digits=3) -> str:
    v = jsonable(v)
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 10 ** -digits or v == 0 else f"{v:.2e}"
    return html.escape(str(v))


def _p(v) -> str:
    v = jsonable(v)
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return "&lt;0.001" if v < 0.001 else f"{v:.3f}"


def _ci_txt(ci) -> str:
    return f"{_fmt(ci[0])}–{_fmt(ci[1])}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _roc_sections(v: Validation) -> list[str]:
    r = v.result
    out = [f"<p>{r['n']} cases: {r['n_positive']} positive, {r['n_negative']} negative (truth column "
           f"<code>{html.escape(r['truth'])}</code>). Higher scores mean positive.</p>"]
    fig = _figure()
    ax = fig.add_subplot()
    for name, c in v.plots["roc"].items():
        a = c["auc"]
        ax.plot(c["fpr"], c["tpr"], lw=1.6, label=f"{name}: AUC {a.auc:.3f} ({a.ci[0]:.3f}–{a.ci[1]:.3f})")
        yd = c["youden"]
        ax.plot(1 - yd.specificity, yd.sensitivity, "o", ms=5, color=ax.lines[-1].get_color())
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
           title="ROC curves (dots: Youden-optimal threshold)")
    ax.legend(loc="lower right", fontsize=8)
    out.append("<h2>ROC curves</h2>" + _img(_png(fig), "ROC curves"))
    rows = []
    for name, s in r["scores"].items():
        y = s["youden"]
        rows.append([html.escape(name), _fmt(s["auc"]), _ci_txt(s["auc_ci"]),
                     _fmt(y["threshold"], 4), f"{_fmt(y['sensitivity'])} ({_ci_txt(y['sensitivity_ci'])})",
                     f"{_fmt(y['specificity'])} ({_ci_txt(y['specificity_ci'])})",
                     f"{_fmt(y['ppv'])} ({_ci_txt(y['ppv_ci'])})", f"{_fmt(y['npv'])} ({_ci_txt(y['npv_ci'])})"])
    out.append(_table(["score", "AUC", f"{int(r['conf_level'] * 100)}% CI (DeLong)", "Youden threshold",
                       "sensitivity (exact CI)", "specificity (exact CI)", "PPV", "NPV"], rows))
    if r["comparisons"]:
        rows = [[html.escape(c["a"]), html.escape(c["b"]), _fmt(c["difference"]),
                 _ci_txt(c["difference_ci"]), _fmt(c["z"]), _p(c["p_value"])] for c in r["comparisons"]]
        out.append("<h2>Paired comparisons (DeLong)</h2>"
                   + _table(["a", "b", "AUC a − b", "CI", "z", "p"], rows))
    for by, per_score in r["subgroups"].items():
        out.append(f"<h2>Subgroups by <code>{html.escape(by)}</code></h2>")
        for name, tab in per_score.items():
            rows = [[html.escape(lv["level"]), str(lv["n"]), str(lv["n_positive"]), _fmt(lv["auc"]),
                     _ci_txt(lv["auc_ci"]), html.escape(lv["note"])] for lv in tab["levels"]]
            out.append(f"<h3>{html.escape(name)}</h3>"
                       + _table(["subgroup", "n", "positive", "AUC", "CI", "note"], rows))
            rows = [[html.escape(c["a"]), html.escape(c["b"]), _fmt(c["statistic"]), _fmt(c["df"], 1),
                     _p(c["p_value"]), _p(c["p_holm"]), html.escape(c["note"])] for c in tab["comparisons"]]
            out.append(_table(["a", "b", "D", "df", "p", "p (Holm)", "note"], rows))
            levels = [lv for lv in tab["levels"] if lv["auc"] is not None]
            if levels:
                fig = _figure(6, 0.5 + 0.4 * len(levels))
                ax = fig.add_subplot()
                ys = np.arange(len(levels))[::-1]
                aucs = np.array([lv["auc"] for lv in levels])
                lo = np.array([np.nan if lv["auc_ci"][0] is None else lv["auc_ci"][0] for lv in levels], float)
                hi = np.array([np.nan if lv["auc_ci"][1] is None else lv["auc_ci"][1] for lv in levels], float)
                ax.errorbar(aucs, ys, xerr=[np.nan_to_num(aucs - lo), np.nan_to_num(hi - aucs)], fmt="s",
                            capsize=3)
                ax.axvline(r["scores"][name]["auc"], ls=":", color="grey")
                ax.set_yticks(ys, [lv["level"] for lv in levels])
                ax.set(xlabel="AUC (CI)", xlim=(0, 1.0), title=f"{name} by {by}")
                out.append(_img(_png(fig), f"AUC of {name} by {by}"))
    return out


def _survival_sections(v: Validation) -> list[str]:
    r = v.result
    out = [f"<p>{r['n']} subjects, {r['n_events']} events, follow-up up to {_fmt(r['max_follow_up'])}. "
           "Higher risk means an earlier event.</p>"]
    rows = []
    for name, e in r["risks"].items():
        h, u = e["harrell"], e["uno"]
        rows.append([html.escape(name), _fmt(h["c_index"]), _ci_txt(h["ci"]), _fmt(h["se"]),
                     _fmt(u["c_index"]), _ci_txt(u["ci"]), _fmt(u["tau"])])
    if rows:
        out.append("<h2>Concordance</h2>" + _table(["risk", "Harrell's C", "CI", "SE", "Uno's C", "CI", "tau"], rows))
    for name, e in r["risks"].items():
        if e.get("time_dependent_auc"):
            rows = [[_fmt(a["horizon"]), _fmt(a["auc"]), str(a["n_cases"]), str(a["n_controls"])]
                    for a in e["time_dependent_auc"]]
            out.append(f"<h3>Time-dependent AUC: {html.escape(name)}</h3>"
                       + _table(["horizon", "AUC(t)", "cases", "controls"], rows))
        kms, lr = v.plots["km"][name]
        fig = _figure()
        ax = fig.add_subplot()
        for lab, km in kms.items():
            x = np.concatenate(([0.0], km.time))
            y = np.concatenate(([1.0], km.surv))
            ax.step(x, y, where="post", label=f"{lab} (n={int(km.n_risk[0])})")
        ax.set(xlabel="time", ylabel="survival", ylim=(0, 1.02),
               title=f"Kaplan-Meier by risk group of {name} (log-rank p = {lr.p_value:.3g})")
        for hh in r["horizons"]:
            ax.axvline(hh, ls=":", color="grey", lw=0.8)
        ax.legend(fontsize=8)
        out.append(f"<h3>Risk groups: {html.escape(name)}</h3>" + _img(_png(fig), "Kaplan-Meier curves"))
        g = e["risk_groups"]
        rows = [[html.escape(x["group"]), str(x["n"]), str(x["events"]), _fmt(x["expected"], 1)]
                + [f"{_fmt(s['survival'])} ({_ci_txt(s['ci'])})" for s in x.get("survival_at", [])]
                for x in g["groups"]]
        out.append(_table(["group", "n", "events", "expected (log-rank)"]
                          + [f"S({_fmt(hh)})" for hh in r["horizons"]], rows)
                   + f"<p>Log-rank χ² = {_fmt(g['logrank']['chisq'])} on {g['logrank']['df']} df, "
                     f"p = {_p(g['logrank']['p_value'])}.</p>")
    if r["predictions"]:
        rows = [[html.escape(p["column"]), _fmt(p["horizon"]), _fmt(p["brier"], 4), _fmt(p["brier_reference"], 4),
                 _fmt(p["calibration"]["slope"]), _fmt(p["calibration"]["intercept"]),
                 _fmt(p["calibration"]["observed"]), _fmt(p["calibration"]["expected"])] for p in r["predictions"]]
        out.append("<h2>Calibration</h2>" + _table(["prediction", "horizon", "Brier", "Brier (prevalence only)",
                                                     "slope", "intercept", "observed", "expected"], rows))
        if "integrated_brier" in r:
            out.append(f"<p>Integrated Brier score over {', '.join(_fmt(x) for x in r['integrated_brier']['times'])}: "
                       f"{_fmt(r['integrated_brier']['ibs'], 4)}.</p>")
        for (h, col), cal in v.plots["calibration"].items():
            fig = _figure(5, 5)
            ax = fig.add_subplot()
            gp = np.array([g["predicted"] for g in cal.groups])
            go = np.array([g["observed"] for g in cal.groups])
            lo = np.array([np.nan if g["observed_ci"][0] is None else g["observed_ci"][0] for g in cal.groups], float)
            hi = np.array([np.nan if g["observed_ci"][1] is None else g["observed_ci"][1] for g in cal.groups], float)
            ax.errorbar(gp, go, yerr=[np.nan_to_num(go - lo), np.nan_to_num(hi - go)], fmt="o", capsize=3)
            top = float(np.nanmax(np.concatenate([gp, hi, [0.05]]))) * 1.05
            ax.plot([0, top], [0, top], ls=":", color="grey")
            ax.set(xlim=(0, top), ylim=(0, top), xlabel="predicted probability",
                   ylabel="observed (1 − Kaplan-Meier)",
                   title=f"{col} at {h:g}: slope {cal.slope:.2f}, intercept {cal.intercept:.2f}")
            out.append(_img(_png(fig), f"calibration of {col}"))
    return out


def _segmentation_sections(v: Validation) -> list[str]:
    r = v.result
    out = [f"<p>{r['n_cases']} cases; surface-Dice tolerance {_fmt(r['tolerance'])}.</p>"]
    for lab, s in r["summary"].items():
        rows = [[m, _fmt(a["mean"]), f"{_fmt(a.get('ci_low'))}–{_fmt(a.get('ci_high'))}", _fmt(a["sd"]),
                 _fmt(a["median"]), f"{_fmt(a['q1'])}–{_fmt(a['q3'])}", str(a["n"]), str(a["n_undefined"])]
                for m, a in s.items() if isinstance(a, dict)]
        out.append(f"<h2>Label {html.escape(lab)}</h2>"
                   + _table(["metric", "mean", "95% CI of mean (bootstrap)", "SD", "median", "IQR", "n",
                             "undefined"], rows))
    rows = v.plots["rows"]
    labels = v.plots["labels"]
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    data = [[x["dice"] for x in rows if str(x["label"]) == lab] for lab in labels]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set(ylabel="Dice", ylim=(0, 1.02), title="Dice per case")
    out.append(_img(_png(fig), "Dice per case"))
    if r.get("unmatched_predictions"):
        out.append("<p>Predictions without a reference (ignored): "
                   + html.escape(", ".join(r["unmatched_predictions"][:50])) + "</p>")
    return out


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.8em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:0.9em;
text-align:left}th{background:#f0f0f0}img{max-width:100%;display:block;margin:0.5em 0}
.note{color:#555;font-size:0.85em}code{background:#f4f4f4;padding:0 3px}"""


def render_html(v: Validation, title: str) -> str:
    r = v.result
    kind = r["analysis"]
    sections = {"roc": _roc_sections, "survival": _survival_sections,
                "segmentation": _segmentation_sections}[kind](v)
    conv = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(x))}</li>"
                   for k, x in r.get("conventions", {}).items())
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='note'>Input: <code>{html.escape(str(r.get('input')))}</code>; Pulmo "
            f"{html.escape(r.get('pulmo_version', ''))}. {html.escape(DISCLAIMER)}</p>"
            + "".join(sections)
            + f"<h2>Conventions</h2><ul class='note'>{conv}</ul></body></html>\n")


def write_html(path: str | os.PathLike, v: Validation, title: str, **check) -> None:
    write_text(path, render_html(v, title), **check)
