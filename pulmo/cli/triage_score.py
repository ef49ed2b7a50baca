"""``pulmo triage score``: classic clinical scores for a CSV of patients or for one patient."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from pulmo import DISCLAIMER
from pulmo.errors import InputError
from pulmo.cli.rows import (add_output_options, check_output, report_row_errors, report_row_warnings, table_text,
                             write_text)
from pulmo.io.tables import read_table
from pulmo.triage.scores import SCORE_NAMES, SCORES, resolve_scores, score_patient, score_records


def add_command(sub) -> None:
    p = sub.add_parser(
        "score",
        help="classic clinical scores (CURB-65, CRB-65, qSOFA, NEWS2, PSI/PORT, ISARIC 4C) for a CSV or one patient",
        description=(
            "Compute classic clinical scores for every row of a CSV, or for one patient given with --set. "
            "Inputs (headers matched ignoring case and punctuation): age, sex, respiratory_rate, systolic_bp, "
            "diastolic_bp, pulse, spo2, spo2_room_air, on_oxygen, spo2_scale or hypercapnic_respiratory_failure, "
            "consciousness (A/C/V/P/U), temperature_c or temperature_f, gcs, confusion or amt_score, urea_mmol_l "
            "or bun_mg_dl, crp_mg_l or crp_mg_dl, sodium_mmol_l, glucose_mg_dl or glucose_mmol_l, arterial_ph, "
            "pao2_mmhg or pao2_kpa, hematocrit_pct or hematocrit_fraction, n_comorbidities and the PSI yes/no "
            "items (nursing_home, neoplastic_disease, liver_disease, congestive_heart_failure, "
            "cerebrovascular_disease, renal_disease, altered_mental_status, pleural_effusion); see "
            "docs/clinical_scores.md. A score with a missing input is not computed (its <score>_missing column "
            "says why) unless --assume-normal. Output: the input columns plus <score>_points, <score>_band, "
            "<score>_mortality (where published), <score>_missing, warnings and error; in CSV, text cells that a "
            "spreadsheet would run as a formula (=, +, -, @ ...) start with '. Exit status 0: no row "
            "failed; 1: some rows failed (see the error column); 2: unusable input. " + DISCLAIMER
        ),
    )
    p.add_argument("input", nargs="?", help="CSV file (UTF-8/UTF-16/Latin-1; comma, semicolon or tab separated)")
    p.add_argument("--scores", default="all",
                   help=f"comma-separated scores: {','.join(SCORE_NAMES)} or all (default)")
    p.add_argument("--set", dest="values", action="append", default=[], metavar="NAME=VALUE",
                   help="one patient's input (repeat; e.g. --set respiratory_rate=32 --set urea_mmol_l=8); "
                        "prints each item's points instead of reading a CSV")
    add_output_options(p)
    p.add_argument("--json", action="store_true", help="write JSON instead of CSV / text")
    p.add_argument("--strict", action="store_true", help="write nothing if any row is invalid")
    p.add_argument("--assume-normal", action="store_true",
                   help="score missing items as normal (age and sex excepted) and list them in <score>_assumed")
    p.add_argument("--items", action="store_true", help="add each item's points as <score>_<item> columns")
    p.set_defaults(func=run)


def _parse_set(items: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--set {item!r}: expected NAME=VALUE, e.g. --set respiratory_rate=32.")
        if name.strip() in values:
            raise InputError(f"--set {name.strip()} is given twice.")
        values[name.strip()] = value.strip()
    return values


def run_patient(args: argparse.Namespace, keys: tuple[str, ...]) -> int:
    check_output(args)
    results = score_patient(_parse_set(args.values), keys, assume_normal_if_missing=args.assume_normal)
    if args.json:
        text = json.dumps({k: r.to_dict() for k, r in results.items()}, indent=1, ensure_ascii=False) + "\n"
    else:
        text = "\n\n".join(r.summary() for r in results.values()) + f"\n\n{DISCLAIMER}\n"
    write_text(args.output, text, args)
    return 0


def run(args: argparse.Namespace) -> int:
    keys = resolve_scores(args.scores)
    if args.values and args.input:
        raise InputError("give either a CSV file or --set NAME=VALUE values for one patient, not both.")
    if args.values:
        return run_patient(args, keys)
    if not args.input:
        raise InputError("give a CSV file, or one patient's values with --set NAME=VALUE "
                         "(see 'pulmo triage score --help').")
    check_output(args)  # never the input, never over a file Pulmo did not write (unless --force)
    table, _ = read_table(args.input)
    batch = score_records(table, keys, assume_normal_if_missing=args.assume_normal, items=args.items)
    result = batch.to_frame(table)

    if batch.unused_columns:
        print("pulmo: note: columns not used by the chosen scores (kept in the output): "
              + ", ".join(batch.unused_columns), file=sys.stderr)
    valid = [p for p in batch if p.error is None]
    for k in keys:
        if valid and all(p.scores[k].band is None for p in valid):
            common = Counter(m for p in valid for m in p.scores[k].missing).most_common()
            print(f"pulmo: note: {SCORES[k].title} could not be computed for any row; missing: "
                  + ", ".join(m for m, _ in common), file=sys.stderr)
    n_failed, stop = report_row_errors(result, strict=args.strict)
    if stop:
        return 1
    report_row_warnings(result)
    text = table_text(result, args.json) + ("\n" if args.json else "")
    write_text(args.output, text, args)
    # valid rows for which no chosen score could be computed
    n_none = sum(all(p.scores[k].band is None for k in keys) for p in valid)
    print(f"pulmo: {len(result) - n_failed - n_none} of {len(result)} rows scored"
          + (f", {n_none} with too few values for any of the scores (the *_missing columns say which)" if n_none else "")
          + f", {n_failed} failed ({', '.join(SCORES[k].title for k in keys)}). {DISCLAIMER}", file=sys.stderr)
    return 1 if n_failed else 0
