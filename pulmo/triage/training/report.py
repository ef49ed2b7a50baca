"""The training report: JSON (everything) and a short Markdown summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pulmo import DISCLAIMER
from pulmo.io.outputs import write_text


def _f(x, nd: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render_markdown(report: dict[str, Any]) -> str:
    d, m, cal, rg = report["data"], report["metrics"], report["calibration"], report["risk_groups"]
    hp = report["hyperparameters"]
    out = [f"# {report['title']}", "", f"Pulmo {report['pulmo_version']}, {report['created']}. {DISCLAIMER}", ""]
    out += ["## Data", "",
            f"- Source: `{d['source'] or 'arrays'}`" + (f" (sha256 `{d['sha256'][:16]}...`)" if d.get("sha256") else ""),
            f"- Time column `{d['time_column']}` (days), event column `{d['event_column']}`",
            f"- Rows read {d['rows_read']}, used {d['rows_used']}, dropped for missing feature values "
            f"{d['rows_dropped_missing_features']}"
            + (" (" + ", ".join(f"{k}: {v}" for k, v in d["missing_cells_by_feature"].items()) + " empty cells)"
               if d["missing_cells_by_feature"] else ""),
            f"- Events {d['events']} ({_pct(d['event_fraction'])}); by horizon: "
            + ", ".join(f"{k} d: {v}" for k, v in d["events_by_horizon"].items()),
            f"- Follow-up (days): min {_f(d['follow_up_days']['min'], 2)}, median "
            f"{_f(d['follow_up_days']['median'], 2)}, max {_f(d['follow_up_days']['max'], 2)}", ""]
    out += ["## Features", "", "Cox coefficients act on the scaled value ((x - mean) / sd; binary features as 0/1).", "",
            "| feature | column | kind | scaling mean | scaling sd | Cox coef (SE) |",
            "|---|---|---|---|---|---|"]
    for f in report["features"]:
        out.append(f"| {f['name']} | {f['column']} | {f['kind']} | {_f(f['scaling_mean'], 4)} | "
                   f"{_f(f['scaling_sd'], 4)} | {_f(f['cox_coefficient'], 4)} ({_f(f['cox_se'], 4)}) |")
    c = report["cox"]
    out += [f"| score_dl (ensemble) | | | | | {_f(c['coefficient_score_dl'], 4)} ({_f(c['se_score_dl'], 4)}) |", ""]
    out += ["## Discrimination (Harrell's C-index)", "",
            "| model | cross-validated (pooled out-of-fold) | mean over folds |", "|---|---|---|"]
    for key, label in (("linear_cox", "linear Cox (features only)"), ("ensemble", "DeepSurv ensemble score"),
                       ("final", "final model (Cox on features + ensemble score)")):
        out.append(f"| {label} | {_f(m['c_index_cv'][key])} | {_f(m['c_index_cv_fold_mean'][key])} |")
    out += ["", f"Apparent C-index of the final model on its own training rows (optimistic): "
            f"{_f(m['c_index_apparent_final'])}.", ""]
    out += [f"## Calibration at {cal['horizon']:g} days (out-of-fold predictions)", "",
            "Predicted: mean P(event by the horizon); observed: 1 - Kaplan-Meier within the group.", "",
            "| group | n | events | predicted | observed |", "|---|---|---|---|---|"]
    for r in cal["by_quantile_group"]:
        out.append(f"| {r['group']} | {r['n']} | {r['events_by_horizon']} | {_pct(r['predicted_mean'])} | "
                   f"{_pct(r['observed_km'])} |")
    out += ["", "| risk group | n | events | predicted | observed |", "|---|---|---|---|---|"]
    for r in cal["by_risk_group"]:
        out.append(f"| {r['group']} | {r['n']} | {r['events_by_horizon']} | {_pct(r['predicted_mean'])} | "
                   f"{_pct(r['observed_km'])} |")
    out += ["", "Overall: " + "; ".join(
        f"{h} d predicted {_pct(v['predicted_mean'])}, observed {_pct(v['observed_km'])}"
        for h, v in m["calibration_in_the_large"].items()), ""]
    out += ["## Risk groups", "", f"Rule: {rg['rule']}.", "",
            f"low if P({rg['horizon']:g} d) <= {rg['low_max']:.6g}; high if > {rg['high_min']:.6g}; "
            "medium otherwise.", "",
            "| risk group (training rows) | n | predicted | observed |", "|---|---|---|---|"]
    for r in rg["training_rows"]:
        out.append(f"| {r['group']} | {r['n']} | {_pct(r['predicted_mean'])} | {_pct(r['observed_km'])} |")
    out += ["", "## Training", "",
            f"{hp['folds']} folds x {hp['members_per_fold']} network(s); MLP hidden {tuple(hp['hidden'])}, {hp['activation']} "
            f"(output {hp['output_activation']}), dropout {hp['dropout']}, weight decay {hp['weight_decay']}, "
            f"Adam lr {hp['learning_rate']}, at most {hp['max_epochs']} epochs, patience {hp['patience']}, "
            f"batch {'full' if hp['batch_size'] is None else hp['batch_size']}, seed {hp['seed']}; "
            f"Cox {c['ties']} ties, ridge {c['ridge']}.", "",
            "| fold | train | held-out | events | best epoch | held-out C |", "|---|---|---|---|---|---|"]
    for f in report["folds"]:
        fid = f"{f['fold']}" if hp["members_per_fold"] == 1 else f"{f['fold']}.{f['member']}"
        out.append(f"| {fid} | {f['n_train']} | {f['n_heldout']} | {f['events_heldout']} | "
                   f"{f['best_epoch']}/{f['epochs_run']} | {_f(f['c_index_heldout'])} |")
    if not report["data"].get("donors_stored", True):
        out += ["", "The model file holds no donor table (trained without donors): it cannot impute missing values."]
    if report["warnings"]:
        out += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    out += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"


def write_report(report: dict[str, Any], base: str | Path, **check) -> tuple[Path, Path]:
    """Write ``BASE.json`` and ``BASE.md`` atomically, never over a file Pulmo did not write unless
    ``force=True`` (``check``: :func:`pulmo.io.outputs.output_file`); returns their paths."""
    base = Path(base)
    js, md = base.with_name(base.name + ".json"), base.with_name(base.name + ".md")
    check.setdefault("what", "training report")
    write_text(js, json.dumps(report, indent=2, allow_nan=False), **check)
    write_text(md, render_markdown(report), **check)
    return js, md
