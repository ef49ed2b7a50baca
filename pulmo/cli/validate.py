"""``pulmo validate ...``: validation statistics (ROC/DeLong, survival, segmentation)."""

from __future__ import annotations

import argparse
import math
import sys
import textwrap

from pulmo import DISCLAIMER
from pulmo.cli import add_group
from pulmo.cli.types import number, seed
from pulmo.errors import InputError

MAX_BOOTSTRAP = 100_000   # replicates: 2000 is usual; 100000 takes minutes on a large cohort
BOOTSTRAP = number(0, MAX_BOOTSTRAP, integer=True)
CONF_LEVEL = number(0, 1, lo_open=True, hi_open=True)
FINITE = number()
TIME = number(0, 1e9, lo_open=True)
GROUPS = number(2, 20, integer=True)
CALIBRATION_GROUPS = number(2, 100, integer=True)
LABEL = number(1, 2**31 - 1, integer=True)
TOLERANCE = number(0, 1e6)
SPACING = number(0, 1e6, lo_open=True)

_OUTPUTS = ("Outputs: --json (all numbers; '-' for standard output), --report (HTML with plots), "
            "--csv (a flat table; text cells that a spreadsheet would run as a formula start with '). With "
            "none of them the JSON goes to standard output. Files are written only when the whole analysis "
            "succeeded, and an existing file only when Pulmo wrote it (its folder's .pulmo-manifest.json "
            "says so) or with --force. Exit status 0: done; 2: unusable input (the message names the file, "
            "row and column).")


def _describe(*paragraphs: str) -> dict:
    """Keyword arguments for add_parser: a wrapped multi-paragraph description."""
    text = "\n\n".join(textwrap.fill(p, 88) for p in paragraphs)
    return {"description": text, "formatter_class": argparse.RawDescriptionHelpFormatter}


def _add_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="OUT.json", help="write all results as JSON ('-' = standard output)")
    p.add_argument("--report", metavar="OUT.html", help="write an HTML report with tables and plots")
    p.add_argument("--csv", metavar="OUT.csv", help="write the results as one flat CSV table")
    _add_force(p)
    p.add_argument("--conf-level", type=CONF_LEVEL, default=0.95, metavar="L",
                   help=f"confidence level of all intervals (default 0.95; {CONF_LEVEL.range_text})")


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="replace existing output files that Pulmo did not write (or that changed since); files "
                        "Pulmo wrote are replaced without it, the inputs never")


def register(subparsers) -> None:
    sub = add_group(
        subparsers, "validate",
        "Validation statistics for a hospital's own data: ROC AUC with DeLong CIs and tests, "
        "Youden threshold, subgroup tables; survival C-index, time-dependent AUC, calibration, "
        "Kaplan-Meier; segmentation Dice/IoU/HD95/surface Dice. Identical to R's pROC and survival.")

    p = sub.add_parser(
        "roc", help="ROC AUC (DeLong CI), paired tests between scores, Youden threshold, subgroup table",
        **_describe(
            "ROC analysis of one or more score columns against a binary truth column, as R's pROC "
            "computes it.",
            "HIGHER SCORES MEAN POSITIVE (truth = 1): pROC's direction '<'. The direction is never "
            "flipped, so an AUC below 0.5 means the score works the wrong way round.",
            "Per score: AUC with DeLong SE and CI, the Youden-optimal threshold (pROC's midpoint "
            "convention) with sensitivity, specificity, PPV and NPV and exact Clopper-Pearson CIs. Every "
            "pair of scores: paired DeLong test. Every --by column: AUC per subgroup and unpaired DeLong "
            "test of each pair of subgroups.", _OUTPUTS, DISCLAIMER))
    p.add_argument("data", metavar="DATA.csv", help="CSV with one row per case")
    p.add_argument("--truth", required=True, metavar="COL", help="0/1 column, 1 = disease present (positive)")
    p.add_argument("--score", required=True, action="append", metavar="COL",
                   help="score column, higher = more likely positive (repeat for several models)")
    p.add_argument("--by", action="append", default=[], metavar="COL[:EDGES]",
                   help="subgroup column (sex, vendor ...); COL:40,65 cuts a numeric column into bands "
                        "<40, 40-<65, >=65 (repeatable)")
    p.add_argument("--threshold", type=FINITE, action="append", default=[], metavar="T",
                   help="also report sensitivity/specificity/PPV/NPV at this threshold (score >= T is positive)")
    p.add_argument("--bootstrap", type=BOOTSTRAP, default=0, metavar="N",
                   help=f"add a stratified bootstrap CI of each AUC with N replicates (e.g. 2000; 10 to "
                        f"{MAX_BOOTSTRAP}, 0 for none)")
    p.add_argument("--seed", type=seed(), default=2020, help="bootstrap seed (default 2020; 0 to 4294967295)")
    _add_outputs(p)
    p.set_defaults(func=run_roc)

    p = sub.add_parser(
        "survival", help="Harrell's and Uno's C, time-dependent AUC, Brier, calibration, Kaplan-Meier by risk group",
        **_describe(
            "Validation of a survival (time-to-event) model's output, as R's survival package computes it.",
            "A HIGHER RISK MEANS AN EARLIER EVENT (survival::concordance reverse=TRUE).",
            "Per --risk column: Harrell's C with survival::concordance's standard error, Uno's C (up to "
            "--tau, default the largest --horizon), cumulative/dynamic AUC at each --horizon, Kaplan-Meier "
            "curves of risk groups with a log-rank test. Per --prob HORIZON=COL (the predicted probability "
            "of the event by HORIZON, e.g. 30=prob_critical_30d): IPCW Brier score and calibration (slope, "
            "intercept, observed vs predicted by group); the integrated Brier score when predictions are "
            "given for two or more horizons.", _OUTPUTS, DISCLAIMER))
    p.add_argument("data", metavar="DATA.csv", help="CSV with one row per patient")
    p.add_argument("--time", required=True, metavar="COL", help="follow-up time (> 0), e.g. days")
    p.add_argument("--event", required=True, metavar="COL", help="1 = event observed, 0 = censored")
    p.add_argument("--risk", action="append", default=[], metavar="COL",
                   help="risk score, higher = earlier event (repeatable)")
    p.add_argument("--horizon", type=TIME, nargs="+", action="extend", default=[], metavar="T",
                   help=f"time points for time-dependent AUC and survival by risk group ({TIME.range_text})")
    p.add_argument("--prob", action="append", default=[], metavar="T=COL",
                   help="predicted probability of the event by time T (repeatable)")
    p.add_argument("--groups", type=GROUPS, default=3, metavar="K",
                   help="risk groups at the quantiles of each risk (default 3: low/medium/high; 2 to 20)")
    p.add_argument("--cutoffs", type=FINITE, nargs="+", metavar="C",
                   help="risk cut-offs instead of quantile groups (risk <= C falls below)")
    p.add_argument("--tau", type=TIME, metavar="T", help=f"truncation time of Uno's C ({TIME.range_text})")
    p.add_argument("--calibration-groups", type=CALIBRATION_GROUPS, default=10, metavar="K",
                   help="groups of predicted risk in the calibration table and plot (default 10; 2 to 100)")
    _add_outputs(p)
    p.set_defaults(func=run_survival)

    p = sub.add_parser(
        "segmentation", help="Dice, IoU, HD95, Hausdorff and surface Dice of predicted vs reference masks",
        **_describe(
            "Compare predicted masks with reference masks, matched by file name (NIfTI .nii/.nii.gz or "
            "PNG). Per case and label: Dice, IoU, HD95, Hausdorff distance and surface Dice at "
            "--tolerance, in physical units (NIfTI voxel spacing, usually mm; PNG pixels unless --spacing).",
            "Both masks empty: Dice 1, HD95 0. One empty: Dice 0, HD95 infinite (left out of the HD95 "
            "summary, counted as undefined). Masks of different shape or spacing are refused, and every "
            "reference mask needs a prediction.", _OUTPUTS, DISCLAIMER))
    p.add_argument("pred_dir", metavar="PRED_DIR", help="folder of predicted masks")
    p.add_argument("gt_dir", metavar="GT_DIR", help="folder of reference (ground-truth) masks")
    p.add_argument("--labels", type=LABEL, nargs="+", metavar="L",
                   help=f"label values to evaluate separately (default: any non-zero voxel; {LABEL.range_text})")
    p.add_argument("--tolerance", type=TOLERANCE, default=1.0, metavar="MM",
                   help=f"surface-Dice tolerance in physical units (default 1; {TOLERANCE.range_text})")
    p.add_argument("--spacing", type=SPACING, nargs="+", metavar="S",
                   help=f"voxel size per axis for all masks (overrides the files; needed for PNG in mm; "
                        f"{SPACING.range_text})")
    p.add_argument("--json", metavar="OUT.json", help="write all results as JSON ('-' = standard output)")
    p.add_argument("--report", metavar="OUT.html", help="write an HTML report with a summary and a plot")
    p.add_argument("--csv", metavar="OUT.csv", help="write per-case metrics as CSV")
    _add_force(p)
    p.set_defaults(func=run_segmentation)


def _output_checks(args, inputs: list[str], input_dirs: list[str] = ()) -> dict:
    """How the output files are checked (:func:`pulmo.io.outputs.check_output_file`)."""
    return dict(force=args.force, inputs=inputs, input_dirs=list(input_dirs))


def _check_outputs(args, inputs: list[str], input_dirs: list[str] = ()) -> None:
    """Before any work: outputs that are not inputs, not each other, not folders, links or special
    files, not under a file, and not over a file Pulmo did not write (unless --force)."""
    from pulmo.io.outputs import check_distinct, check_output_file

    targets = {flag: getattr(args, flag[2:]) for flag in ("--json", "--report", "--csv")}
    check_distinct(targets)
    check = _output_checks(args, inputs, input_dirs)
    for flag, t in targets.items():
        if t and t != "-":
            check_output_file(t, what=f"{flag} file", **check)


def _emit(args, validation, title: str, inputs: list[str], input_dirs: list[str] = ()) -> None:
    from pulmo.stats import report

    # Render everything first, then write: a failure leaves no partial set of files.
    texts = []
    if args.json or not (args.report or args.csv):
        texts.append(("--json", args.json or "-", report.to_json(validation.result)))
    if args.report:
        texts.append(("--report", args.report, report.render_html(validation, title)))
    if args.csv:
        texts.append(("--csv", args.csv, report.to_csv(validation.result)))
    check = _output_checks(args, inputs, input_dirs)
    for flag, target, text in texts:
        if target == "-":
            sys.stdout.write(text)
        else:
            report.write_text(target, text, what=f"{flag} file", **check)


def run_roc(args: argparse.Namespace) -> int:
    _check_outputs(args, [args.data])  # before the statistics are imported: a refusal stays quick
    from pulmo.stats.validate import parse_group_spec, validate_roc

    if args.bootstrap and args.bootstrap < 10:
        raise InputError(f"--bootstrap needs at least 10 replicates (2000 is usual; at most {MAX_BOOTSTRAP}).")
    v = validate_roc(args.data, args.truth, args.score, [parse_group_spec(b) for b in args.by],
                     conf_level=args.conf_level, bootstrap=args.bootstrap, seed=args.seed,
                     thresholds=args.threshold)
    _emit(args, v, "ROC validation", [args.data])
    r = v.result
    summary = "; ".join(f"{k}: AUC {s['auc']:.3f}" + ("" if math.isnan(s["auc_ci"][0]) else
                                                      f" ({s['auc_ci'][0]:.3f}-{s['auc_ci'][1]:.3f})")
                        for k, s in r["scores"].items())
    print(f"pulmo: {r['n']} cases ({r['n_positive']} positive). {summary}.", file=sys.stderr)
    return 0


def _parse_prob(spec: str) -> tuple[float, str]:
    """``--prob`` ``"30=prob_30d"`` -> (30.0, "prob_30d")."""
    t, sep, col = spec.partition("=")
    try:
        h = float(t)
    except ValueError:
        h = float("nan")
    if not sep or not col.strip() or not math.isfinite(h) or h <= 0:
        raise InputError(f"--prob '{spec}': write HORIZON=COLUMN, e.g. 30=prob_30d "
                         "(the predicted probability of the event by day 30).")
    return h, col.strip()


def run_survival(args: argparse.Namespace) -> int:
    _check_outputs(args, [args.data])  # before the statistics are imported: a refusal stays quick
    from pulmo.stats.validate import validate_survival

    if not args.risk and not args.prob:
        raise InputError("give at least one --risk column (or --prob HORIZON=COLUMN).")
    probs = [_parse_prob(p) for p in args.prob]
    v = validate_survival(args.data, args.time, args.event, args.risk, args.horizon, probs=probs,
                          n_groups=args.groups, cutoffs=args.cutoffs, tau=args.tau,
                          conf_level=args.conf_level, calibration_groups=args.calibration_groups)
    _emit(args, v, "Survival model validation", [args.data])
    r = v.result
    summary = "; ".join(f"{k}: Harrell's C {e['harrell']['c_index']:.3f}" for k, e in r["risks"].items())
    print(f"pulmo: {r['n']} patients, {r['n_events']} events. {summary}.", file=sys.stderr)
    return 0


def run_segmentation(args: argparse.Namespace) -> int:
    _check_outputs(args, [], [args.pred_dir, args.gt_dir])  # before the statistics are imported
    from pulmo.stats.validate import validate_segmentation

    v = validate_segmentation(args.pred_dir, args.gt_dir, labels=args.labels, tolerance=args.tolerance,
                              spacing=args.spacing)
    _emit(args, v, "Segmentation validation", [], [args.pred_dir, args.gt_dir])
    r = v.result
    parts = []
    for lab, s in r["summary"].items():
        d = s["dice"]
        if d["mean"] is not None:
            parts.append(f"label {lab}: mean Dice {d['mean']:.3f}")
    print(f"pulmo: {r['n_cases']} cases. " + "; ".join(parts) + ".", file=sys.stderr)
    if r["unmatched_predictions"]:
        print(f"pulmo: note: {len(r['unmatched_predictions'])} prediction(s) without a reference were "
              "ignored: " + ", ".join(r["unmatched_predictions"][:10]), file=sys.stderr)
    return 0
