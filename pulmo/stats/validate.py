"""Validation analyses from files: the service layer behind ``pulmo validate``.

Each function reads its inputs (with row-level error messages), runs the computations
of :mod:`pulmo.stats.roc`, :mod:`~pulmo.stats.survival`, :mod:`~pulmo.stats.subgroups`
and :mod:`~pulmo.stats.segmentation`, and returns a :class:`Validation`: a JSON-ready
``result`` dict (floats may be NaN or infinite; :mod:`pulmo.stats.report` encodes them)
plus the curves the HTML report plots.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from pulmo import DISCLAIMER, __version__
from pulmo.errors import InputError
from pulmo.stats import roc as _roc
from pulmo.stats import segmentation as _seg
from pulmo.stats import survival as _surv
from pulmo.stats.io import (binary_column, label_column, load_table, match_masks,
                            numeric_column, read_mask)
from pulmo.stats.subgroups import band, subgroup_table

__all__ = ["Validation", "GroupSpec", "validate_roc", "validate_survival", "validate_segmentation",
           "parse_group_spec"]


@dataclass
class Validation:
    result: dict
    plots: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GroupSpec:
    """A subgroup column, optionally cut into bands at numeric ``edges`` ("age:40,65")."""

    column: str
    edges: tuple[float, ...] | None = None

    @property
    def name(self) -> str:
        return self.column if self.edges is None else f"{self.column}:{','.join(f'{e:g}' for e in self.edges)}"


def parse_group_spec(text: str) -> GroupSpec:
    """``"sex"`` or ``"age:40,65"`` (bands <40, 40-<65, >=65)."""
    col, sep, rest = text.partition(":")
    col = col.strip()
    if not col:
        raise InputError(f"subgroup '{text}': give a column name, optionally with band edges (age:40,65).")
    if not sep:
        return GroupSpec(col)
    try:
        edges = tuple(float(x) for x in rest.split(",") if x.strip())
    except ValueError:
        raise InputError(f"subgroup '{text}': band edges must be numbers, e.g. age:40,65.") from None
    if not edges or not all(np.isfinite(edges)):
        raise InputError(f"subgroup '{text}': band edges must be numbers, e.g. age:40,65.")
    return GroupSpec(col, edges)


def _header(analysis: str, source: str) -> dict:
    return {"analysis": analysis, "pulmo_version": __version__, "input": source}


ROC_CONVENTIONS = {
    "positive_class": "truth = 1 is a case (positive), 0 a control",
    "direction": "a higher score means more likely positive (pROC direction '<')",
    "ties": "a case and a control with the same score count as half a concordant pair",
    "positive_call": "score >= threshold",
    "auc_ci": "DeLong variance; CI = AUC +/- z*SE clipped to [0, 1] (pROC ci.auc method='delong')",
    "youden_threshold": "pROC coords(best.method='youden'): midpoint between adjacent distinct "
                        "scores; the lowest of tied optima is reported, the others in tied_thresholds",
    "proportion_ci": "Clopper-Pearson exact (R binom.test)",
    "comparisons": "paired DeLong z-test between scores on the same cases (pROC roc.test paired=TRUE)",
    "subgroup_comparisons": "unpaired DeLong test between subgroups, statistic D with Welch df "
                            "(pROC roc.test paired=FALSE); p_holm: Holm-adjusted within the table",
    "non_finite_json": "NaN is written as null, infinities as \"Infinity\" / \"-Infinity\"",
}


def _youden_dict(m: _roc.ThresholdMetrics) -> dict:
    d = m.as_dict()
    for k in ("sensitivity_ci", "specificity_ci", "ppv_ci", "npv_ci"):
        d[k] = list(d[k])
    return d


def _downsample(x: np.ndarray, y: np.ndarray, k: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= k:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, k).round().astype(int))
    return x[idx], y[idx]


def validate_roc(path: str | os.PathLike, truth: str, scores: list[str], by: list[GroupSpec] = (),
                 *, conf_level: float = 0.95, bootstrap: int = 0, seed: int = 2020,
                 thresholds: list[float] = ()) -> Validation:
    """ROC analysis of one or more score columns against a 0/1 truth column.

    ``scores``: score columns (a higher score means more likely positive); ``by``: subgroup
    columns; ``thresholds``: scores at which to report sensitivity, specificity, PPV and NPV.
    """
    if not scores:
        raise InputError("give at least one score column.")
    if len(set(scores)) != len(scores):
        raise InputError("a score column is given twice.")
    table, source = load_table(path)
    y = binary_column(table, truth, source)
    S = {s: numeric_column(table, s, source, what="score") for s in scores}
    groups = {}
    for spec in by:
        if spec.edges is None:
            labels = label_column(table, spec.column, source)
            order = None
        else:
            values = numeric_column(table, spec.column, source)
            labels, order = band(values, spec.edges, spec.column)
        present = list(dict.fromkeys(labels))
        if len(present) < 2:
            raise InputError(f"{source}: subgroup column '{spec.name}' has a single value "
                             f"('{present[0]}') in all {len(labels)} rows; a subgroup comparison needs "
                             "at least two groups.")
        groups[spec.name] = (labels, order)
    out = _header("roc", source)
    out.update(truth=truth, n=int(len(y)), n_positive=int(y.sum()), n_negative=int((~y).sum()),
               conf_level=conf_level, conventions=ROC_CONVENTIONS, scores={}, comparisons=[],
               subgroups={}, disclaimer=DISCLAIMER)
    plots = {"roc": {}, "subgroups": {}}
    for name, s in S.items():
        a = _roc.delong_auc(y, s, conf_level)
        yd = _roc.youden_threshold(y, s, conf_level)
        entry = {"auc": a.auc, "auc_se": a.se, "auc_ci": list(a.ci), "ci_method": "delong",
                 "youden": _youden_dict(yd)}
        if bootstrap:
            b = _roc.bootstrap_auc(y, s, conf_level, n_boot=bootstrap, seed=seed)
            entry["bootstrap"] = {"auc_ci": list(b.ci), "n_boot": b.n_boot, "seed": b.seed,
                                  "method": "stratified bootstrap, percentile interval"}
        if thresholds:
            entry["at_threshold"] = [_youden_dict(_roc.threshold_metrics(y, s, t, conf_level))
                                     for t in thresholds]
        out["scores"][name] = entry
        curve = _roc.roc_curve(y, s)
        fpr, tpr = _downsample(1 - curve.specificities, curve.sensitivities)
        plots["roc"][name] = {"fpr": fpr, "tpr": tpr, "auc": a, "youden": yd}
    for a_name, b_name in combinations(scores, 2):
        t = _roc.delong_paired_test(y, S[a_name], S[b_name], conf_level)
        out["comparisons"].append({"a": a_name, "b": b_name, "method": t.method, "auc_a": t.auc_a,
                                   "auc_b": t.auc_b, "difference": t.difference,
                                   "difference_ci": list(t.difference_ci), "z": t.statistic,
                                   "statistic": t.statistic, "statistic_name": "Z",
                                   "p_value": t.p_value})
    for gname, (labels, order) in groups.items():
        out["subgroups"][gname] = {}
        for name, s in S.items():
            tab = subgroup_table(y, s, labels, column=gname, score_name=name,
                                 conf_level=conf_level, order=order)
            out["subgroups"][gname][name] = tab.as_dict()
            plots["subgroups"][(gname, name)] = tab
    return Validation(out, plots)


SURVIVAL_CONVENTIONS = {
    "event": "1 = event observed, 0 = censored; times must be > 0",
    "risk": "a higher risk means an earlier event (survival::concordance reverse=TRUE)",
    "harrell_c": "survival::concordance(Surv(time, event) ~ risk, reverse=TRUE): ties in risk count 1/2, "
                 "pairs tied in time are not comparable, censored at an event time outlives it; "
                 "se = sqrt(var) (infinitesimal jackknife), CI = C +/- z*se",
    "uno_c": "concordance(..., timewt='n/G2', ymax=tau)",
    "time_dependent_auc": "cumulative/dynamic AUC(t), IPCW (Uno 2007): cases event by t weighted 1/G(T-), "
                          "controls event-free after t",
    "ipcw": "G = Kaplan-Meier of censoring; a subject with an event at t is not at risk of censoring at t",
    "brier": "IPCW Brier score of the predicted probability of the event by the horizon (Graf 1999)",
    "calibration": "IPCW logistic recalibration: slope of logit(p), intercept with logit(p) as offset; "
                   "observed = 1 - Kaplan-Meier at the horizon",
    "kaplan_meier": "survfit: Greenwood SE, log-type CI",
    "logrank": "survdiff(Surv(time, event) ~ risk_group)",
    "times": "times within sqrt(machine eps) are tied first (R aeqSurv)",
    "non_finite_json": "NaN is written as null, infinities as \"Infinity\" / \"-Infinity\"",
}


def validate_survival(path: str | os.PathLike, time: str, event: str, risks: list[str],
                      horizons: list[float] = (), *, probs: list[tuple[float, str]] = (), n_groups: int = 3,
                      cutoffs: list[float] | None = None, tau: float | None = None,
                      conf_level: float = 0.95, calibration_groups: int = 10) -> Validation:
    """Discrimination, calibration and risk-group survival of survival-model outputs.

    ``time`` (follow-up, > 0, any unit) and ``event`` (1 = event, 0 = censored) name columns;
    ``risks``: risk-score columns (a higher risk means an earlier event); ``horizons``: times (in
    the unit of ``time``) for the time-dependent AUC and survival by risk group; ``probs``:
    ``(horizon, column)`` pairs, the column holding the predicted probability of the event by
    that horizon.
    """
    if not risks and not probs:
        raise InputError("give at least one risk column or one column of predicted probabilities.")
    table, source = load_table(path)
    t = numeric_column(table, time, source, what="survival time")
    if (t <= 0).any():
        row = table.index[np.flatnonzero(t <= 0)[0]]
        raise InputError(f"{source}: row {row}, column '{time}': survival times must be positive, "
                         f"got {t[np.flatnonzero(t <= 0)[0]]:g}.")
    e = binary_column(table, event, source, require_both=False, meaning="1 = event, 0 = censored")
    if not e.any():
        raise InputError(f"{source}: column '{event}' has no events (all 0): concordance and "
                         "time-dependent statistics need at least one event.")
    hs = sorted(set(float(h) for h in horizons))
    for h in hs:
        if not np.isfinite(h) or h <= 0:
            raise InputError(f"horizon {h:g}: horizons must be positive times.")
    if hs and hs[-1] >= float(t.max()):  # nobody is followed that long: every figure there is an extrapolation
        raise InputError(f"horizon {hs[-1]:g}: at or beyond the longest follow-up in {source} "
                         f"({float(t.max()):g}); give horizons within the follow-up.")
    prob_specs = []
    for h, col in probs:
        h = float(h)
        if not np.isfinite(h) or h <= 0:
            raise InputError(f"predicted probabilities of column '{col}': the horizon must be a positive "
                             f"time, not {h:g}.")
        prob_specs.append((h, str(col)))
    R = {r: numeric_column(table, r, source, what="risk score") for r in risks}
    P = {}
    for h, col in prob_specs:
        p = numeric_column(table, col, source, what="probability")
        bad = (p < 0) | (p > 1)
        if bad.any():
            raise InputError(f"{source}: row {table.index[np.flatnonzero(bad)[0]]}, column '{col}': "
                             f"{p[bad][0]:g} is not a probability between 0 and 1.")
        P[(h, col)] = p
    tau_eff = tau if tau is not None else (max(hs) if hs else None)
    out = _header("survival", source)
    out.update(time=time, event=event, n=int(len(t)), n_events=int(e.sum()),
               max_follow_up=float(t.max()), horizons=hs, conf_level=conf_level,
               conventions=SURVIVAL_CONVENTIONS, risks={}, predictions=[], disclaimer=DISCLAIMER)
    plots = {"km": {}, "calibration": {}, "td_auc": {}}
    for name, r in R.items():
        hc = _surv.harrell_c(t, e, r, conf_level)
        uc = _surv.uno_c(t, e, r, tau=tau_eff, conf_level=conf_level)
        entry = {"harrell": _conc_dict(hc), "uno": _conc_dict(uc)}
        if hs:
            td = _surv.cumulative_dynamic_auc(t, e, r, hs)
            entry["time_dependent_auc"] = [
                {"horizon": float(h), "auc": float(a), "n_cases": int(nc), "n_controls": int(nn)}
                for h, a, nc, nn in zip(td.times, td.auc, td.n_cases, td.n_controls)]
            plots["td_auc"][name] = td
        gi, labels, cuts = _surv.risk_groups(r, n_groups, cutoffs)
        lr = _surv.logrank_test(t, e, gi)
        groups = []
        kms = {}
        for j, lab in enumerate(labels):
            m = gi == j
            km = _surv.kaplan_meier(t[m], e[m], conf_level)
            kms[lab] = km
            g = {"group": lab, "n": int(m.sum()), "events": int(e[m].sum()),
                 "risk_min": float(r[m].min()), "risk_max": float(r[m].max()),
                 "observed": float(lr.observed[j]), "expected": float(lr.expected[j])}
            if hs:
                s, lo, hi = km.at(hs)
                g["survival_at"] = [{"horizon": float(h), "survival": float(a), "ci": [float(b), float(c)]}
                                    for h, a, b, c in zip(hs, s, lo, hi)]
            groups.append(g)
        entry["risk_groups"] = {"method": "cut-offs" if cutoffs is not None else f"{n_groups} quantile groups",
                                "cutoffs": [float(c) for c in cuts], "groups": groups,
                                "logrank": {"chisq": lr.chisq, "df": lr.df, "p_value": lr.p_value}}
        out["risks"][name] = entry
        plots["km"][name] = (kms, lr)
    by_h: dict[float, list] = {}
    for (h, col), p in P.items():
        bs = _surv.brier_score(t, e, p, h)
        cal = _surv.calibration_at_horizon(t, e, p, h, calibration_groups, conf_level)
        prev = cal.observed
        out["predictions"].append({
            "horizon": h, "column": col, "brier": bs,
            "brier_reference": prev * (1 - prev) if np.isfinite(prev) else None,
            "calibration": {"slope": cal.slope, "intercept": cal.intercept, "observed": cal.observed,
                            "expected": cal.expected, "oe_ratio": cal.oe_ratio, "n_used": cal.n_used,
                            "converged": cal.converged, "groups": cal.groups}})
        plots["calibration"][(h, col)] = cal
        by_h.setdefault(h, []).append(col)
    if len(P) >= 2 and len(by_h) >= 2 and all(len(v) == 1 for v in by_h.values()):
        hs_p = sorted(by_h)
        M = np.column_stack([P[(h, by_h[h][0])] for h in hs_p])
        out["integrated_brier"] = {"times": hs_p, "columns": [by_h[h][0] for h in hs_p],
                                   "ibs": _surv.integrated_brier_score(t, e, M, hs_p)}
    return Validation(out, plots)


def _conc_dict(c: _surv.Concordance) -> dict:
    return {"c_index": c.c_index, "se": c.se, "ci": list(c.ci), "concordant": c.concordant,
            "discordant": c.discordant, "tied_risk": c.tied_risk, "tied_time": c.tied_time,
            "tied_both": c.tied_both, "tau": c.tau}


SEGMENTATION_CONVENTIONS = {
    "matching": "masks are paired by file name without .nii/.nii.gz/.png",
    "labels": "without chosen labels any non-zero voxel is foreground; with chosen labels each label separately",
    "surface": "voxels with a face neighbour outside the mask (image border counts); distances in "
               "physical units (NIfTI spacing, mm; PNG pixels unless a voxel spacing is given)",
    "hd95": "95th percentile of the pooled symmetric surface distances (medpy hd95)",
    "surface_dice": "fraction of both surfaces within the tolerance of the other surface",
    "empty": "both masks empty: Dice = IoU = surface Dice = 1, HD95 = 0; one empty: Dice = IoU = "
             "surface Dice = 0, HD95 = Infinity (left out of the HD95 summary, counted in n_undefined)",
    "non_finite_json": "NaN is written as null, infinities as \"Infinity\" / \"-Infinity\"",
}


def validate_segmentation(pred_dir, gt_dir, *, labels: list[int] | None = None, tolerance: float = 1.0,
                          spacing: list[float] | None = None) -> Validation:
    """Per-case and summary Dice, IoU, HD95, Hausdorff and surface Dice of two mask folders.

    ``labels``: label values evaluated separately (default: any non-zero voxel); ``tolerance``:
    surface-Dice tolerance in physical units (mm for NIfTI); ``spacing``: voxel size per axis for
    all masks, overriding the files'.
    """
    pairs, extra_pred, missing_pred = match_masks(pred_dir, gt_dir)
    if missing_pred:
        shown = ", ".join(missing_pred[:20]) + (" ..." if len(missing_pred) > 20 else "")
        raise InputError(f"no prediction for {len(missing_pred)} reference case(s): {shown}. Every "
                         "reference mask needs a prediction with the same file name.")
    if not pairs:
        raise InputError("no case has both a prediction and a reference mask with the same name.")
    if spacing is not None and not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError("the voxel spacing must be positive numbers.")
    problems: list[str] = []
    cases = []
    for cid, pp, gp in pairs:
        try:
            pm, gm = read_mask(pp), read_mask(gp)
        except InputError as exc:
            problems.append(str(exc))
            continue
        if pm.data.shape != gm.data.shape:
            problems.append(f"case '{cid}': prediction shape {pm.data.shape} differs from reference "
                            f"shape {gm.data.shape}")
            continue
        if spacing is None and not np.allclose(pm.spacing, gm.spacing, rtol=1e-3, atol=1e-5):
            problems.append(f"case '{cid}': prediction voxel spacing {_fmt_sp(pm.spacing)} differs from "
                            f"reference spacing {_fmt_sp(gm.spacing)}")
            continue
        sp = tuple(spacing) if spacing is not None else gm.spacing
        if len(sp) != gm.data.ndim:
            problems.append(f"case '{cid}': the voxel spacing has {len(sp)} values but the masks have "
                            f"{gm.data.ndim} dimensions")
            continue
        cases.append((cid, pm.data, gm.data, sp))
    if problems:
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise InputError(f"{len(problems)} case(s) cannot be compared; nothing was written:\n  "
                         + "\n  ".join(problems[:20]) + more)
    rows = []
    label_list = list(labels) if labels else [None]
    for cid, p, g, sp in cases:
        for lab in label_list:
            pm = p != 0 if lab is None else p == lab
            gm = g != 0 if lab is None else g == lab
            m = _seg.segmentation_metrics(pm, gm, sp, tolerance)
            row = {"case": cid, "label": "foreground" if lab is None else int(lab)}
            row.update(m.as_dict())
            rows.append(row)
    summary = {}
    for lab in label_list:
        key = "foreground" if lab is None else str(lab)
        sel = [r for r in rows if str(r["label"]) == key]
        summary[key] = {k: _seg.aggregate(r[k] for r in sel) for k in _seg.METRICS}
        summary[key]["n_cases"] = len(sel)
        summary[key]["n_both_empty"] = sum(r["empty"] == "both" for r in sel)
    out = _header("segmentation", str(pred_dir))
    out.update(prediction_dir=str(pred_dir), reference_dir=str(gt_dir),
               labels=[int(x) for x in labels] if labels else "foreground (non-zero)",
               tolerance=float(tolerance), n_cases=len(cases), conventions=SEGMENTATION_CONVENTIONS,
               summary=summary, cases=rows, unmatched_predictions=extra_pred, disclaimer=DISCLAIMER)
    return Validation(out, {"rows": rows, "labels": [("foreground" if x is None else str(x)) for x in label_list]})


def _fmt_sp(sp) -> str:
    return "x".join(f"{s:g}" for s in sp)
