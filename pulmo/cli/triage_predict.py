"""``pulmo triage predict``: score a CSV of admission data."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pulmo import DISCLAIMER
from pulmo.errors import InputError
from pulmo.cli.rows import report_row_errors, report_row_warnings, write_text
from pulmo.io.tables import read_table
from pulmo.triage.model import TriageModel
from pulmo.triage.predict import TriagePredictor

MODEL_ENV = "PULMO_TRIAGE_MODEL"
MAX_IMPUTATIONS = 1000   # draws per incomplete row; more only costs memory (the interval settles long before)


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
            "imputed, n_imputations, warnings and error. Exit status 0: all rows scored; "
            "1: some rows failed (see the error column); 2: unusable input. " + DISCLAIMER
        ),
    )
    p.add_argument("input", help="CSV file (UTF-8/UTF-16/Latin-1; comma, semicolon or tab separated)")
    p.add_argument("--model", help=f"model file from 'pulmo triage import-model' or 'train' "
                   f"(default: ${MODEL_ENV})")
    p.add_argument("-o", "--output", help="output file (default: standard output)")
    p.add_argument("--json", action="store_true", help="write JSON records instead of CSV")
    p.add_argument("--strict", action="store_true", help="fail without writing anything if any row is invalid")
    p.add_argument("--imputations", type=int, default=20, metavar="M", help="imputations per incomplete row (default 20)")
    p.add_argument("--seed", type=int, default=2020, help="imputation seed (default 2020)")
    p.add_argument("--interval", type=float, default=0.90, help="central interval over imputations (default 0.90)")
    p.add_argument("--explain", action="store_true", help="add each feature's contribution to score_final (contrib_*)")
    p.set_defaults(func=run)


def load_model_arg(path: str | None) -> TriageModel:
    path = path or os.environ.get(MODEL_ENV)
    if not path:
        raise InputError(f"no model given: pass --model MODEL_FILE or set ${MODEL_ENV} "
                         "(create one with 'pulmo triage import-model models.zip -o MODEL_FILE').")
    return TriageModel.load(path)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.imputations <= MAX_IMPUTATIONS:
        raise InputError(f"--imputations must be between 1 and {MAX_IMPUTATIONS}, not {args.imputations}.")
    if args.seed < 0:
        raise InputError(f"--seed must be a non-negative whole number, not {args.seed}.")
    model = load_model_arg(args.model)
    if args.output and Path(args.output).resolve() == Path(args.input).resolve():
        raise InputError("the output file would overwrite the input file; choose another name.")
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
    text = (result.to_json(orient="records", indent=1, force_ascii=False) if args.json
            else result.to_csv(index=False, float_format="%.10g"))
    write_text(args.output, text)
    n_imp = sum(r.n_imputations > 0 for r in batch)
    print(f"pulmo: {len(result) - n_failed} of {len(result)} rows scored "
          f"({n_imp} with imputed values), {n_failed} failed. {DISCLAIMER}", file=sys.stderr)
    return 1 if n_failed else 0
