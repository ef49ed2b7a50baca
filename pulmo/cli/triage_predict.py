"""``pulmo triage predict``: score a CSV of admission data."""

from __future__ import annotations

import argparse
import os
import sys

from pulmo import DISCLAIMER
from pulmo.errors import InputError
from pulmo.cli.rows import (add_output_options, check_output, report_row_errors, report_row_warnings, table_text,
                             write_text)
from pulmo.cli.types import number, seed
from pulmo.io.tables import read_table
from pulmo.triage.model import TriageModel
from pulmo.triage.predict import TriagePredictor

MODEL_ENV = "PULMO_TRIAGE_MODEL"
MAX_IMPUTATIONS = 1000   # draws per incomplete row; more only costs memory (the interval settles long before)
IMPUTATIONS = number(1, MAX_IMPUTATIONS, integer=True)
INTERVAL = number(0, 1, lo_open=True, hi_open=True)


def add_command(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="probability of critical illness within 5/10/30 days for each patient of a CSV",
        description=(
            "Score every row of a CSV of admission data. Columns: the ten features under Pulmo's "
            "names (xray_abnormality, dyspnea, comorbidities, malignancy, copd, age, nlr, ldh, "
            "direct_bilirubin, creatine_kinase) or the original tool's (X.ray.abnormality, "
            "Lactate.dehydrogenase, ...); also accepted: direct_bilirubin_mg_dl, ldh_ukat_l, "
            "creatine_kinase_ukat_l, neutrophils + lymphocytes (for NLR) and comorbidity_list. "
            "An empty cell is imputed (multiple imputation, median and interval over M draws); "
            "rows missing more than 3 features are refused. Output: the input columns plus "
            "score_dl, score_final, prob_critical_{5,10,30}d (+ _low/_high), risk_group, "
            "imputed, n_imputations, warnings and error; in CSV, text cells that a spreadsheet would run as "
            "a formula (=, +, -, @ ...) start with '. Exit status 0: all rows scored; "
            "1: some rows failed (see the error column); 2: unusable input. " + DISCLAIMER
        ),
    )
    p.add_argument("input", help="CSV file (UTF-8/UTF-16/Latin-1; comma, semicolon or tab separated)")
    p.add_argument("--model", help=f"model file from 'pulmo triage import-model' or 'train' "
                   f"(default: ${MODEL_ENV})")
    add_output_options(p)
    p.add_argument("--json", action="store_true", help="write JSON records instead of CSV")
    p.add_argument("--strict", action="store_true", help="fail without writing anything if any row is invalid")
    p.add_argument("--imputations", type=IMPUTATIONS, default=20, metavar="M",
                   help=f"imputations per incomplete row (default 20; {IMPUTATIONS.range_text})")
    p.add_argument("--seed", type=seed(), default=2020, help="imputation seed (default 2020; 0 to 4294967295)")
    p.add_argument("--interval", type=INTERVAL, default=0.90,
                   help=f"central interval over imputations (default 0.90; {INTERVAL.range_text})")
    p.add_argument("--explain", action="store_true", help="add each feature's contribution to score_final (contrib_*)")
    p.set_defaults(func=run)


def load_model_arg(path: str | None) -> TriageModel:
    path = path or os.environ.get(MODEL_ENV)
    if not path:
        raise InputError(f"no model given: pass --model MODEL_FILE or set ${MODEL_ENV} "
                         "(create one with 'pulmo triage import-model models.zip -o MODEL_FILE').")
    return TriageModel.load(path)


def run(args: argparse.Namespace) -> int:
    args.input_files = [args.model or os.environ.get(MODEL_ENV)]  # the model is an input too
    check_output(args)  # never the input, never over a file Pulmo did not write (unless --force)
    model = load_model_arg(args.model)
    table, _ = read_table(args.input)
    predictor = TriagePredictor(model, n_imputations=args.imputations, seed=args.seed,
                                interval=args.interval, explain=args.explain)
    batch = predictor.predict_records(table)
    if batch.unused_columns:
        print("pulmo: note: columns not used by the model (kept in the output): "
              + ", ".join(batch.unused_columns), file=sys.stderr)
    result = batch.to_frame(table)
    n_failed, stop = report_row_errors(result, strict=args.strict)
    if stop:
        return 1
    report_row_warnings(result)
    text = table_text(result, args.json, float_format="%.10g")
    write_text(args.output, text, args)
    n_imp = sum(r.n_imputations > 0 for r in batch)
    print(f"pulmo: {len(result) - n_failed} of {len(result)} rows scored "
          f"({n_imp} with imputed values), {n_failed} failed. {DISCLAIMER}", file=sys.stderr)
    return 1 if n_failed else 0
