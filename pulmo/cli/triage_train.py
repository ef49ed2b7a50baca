"""``pulmo triage train``: train a triage model on a hospital's own cohort."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from pulmo import DISCLAIMER
from pulmo.cli.types import number, seed
from pulmo.errors import InputError

DAYS = number(0, 36500, lo_open=True)     # a horizon: up to 100 years
MAX_HORIZONS = 20
MAX_LAYERS, MAX_WIDTH = 10, 4096
FOLDS = number(2, 100, integer=True)
MEMBERS = number(1, 100, integer=True)
DROPOUT = number(0, 1, hi_open=True)
WEIGHT_DECAY = number(0, 10)
LEARNING_RATE = number(0, 1, lo_open=True)
EPOCHS = number(1, 100_000, integer=True)
BATCH_SIZE = number(2, 10_000_000, integer=True)
RIDGE = number(0, 1e6)
MIN_EVENTS = number(1, 1_000_000, integer=True)
THREADS = number(1, 1024, integer=True)


#: How messages of the library name the settings on this command line.
FLAGS = {
    "folds": "--folds", "members_per_fold": "--members-per-fold", "hidden": "--hidden", "dropout": "--dropout",
    "weight_decay": "--weight-decay", "cox_ridge": "--ridge", "learning_rate": "--learning-rate",
    "max_epochs": "--epochs", "patience": "--patience", "batch_size": "--batch-size", "cox_ties": "--ties",
    "horizons": "--horizons", "risk_horizon": "--risk-horizon", "risk_quantiles": "--risk-quantiles",
    "risk_cutoffs": "--risk-cutoffs", "threads": "--threads",
    "time": "--time", "event": "--event", "features": "--features",
}


def _floats(text: str, what: str, count: int | None = None, most: int = MAX_HORIZONS) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.replace(";", ",").split(",")[: most + 1] if x.strip())
    except ValueError:
        raise InputError(f"{what}: expected comma-separated numbers, got {text!r}.") from None
    if not vals or (count is not None and len(vals) != count):
        raise InputError(f"{what}: expected {count or 'some'} comma-separated number(s), got {text!r}.")
    if len(vals) > most:
        raise InputError(f"{what}: at most {most} numbers.")
    if not all(math.isfinite(v) for v in vals):
        raise InputError(f"{what}: expected finite numbers, got {text!r}.")
    return vals


def _ints(text: str, what: str, most: int = MAX_LAYERS, largest: int = MAX_WIDTH) -> tuple[int, ...]:
    vals = _floats(text, what, most=most)
    if any(v != int(v) or not 1 <= v <= largest for v in vals):
        raise InputError(f"{what}: expected whole numbers from 1 to {largest}, got {text!r}.")
    return tuple(int(v) for v in vals)


def _days(text: str, what: str) -> tuple[float, ...]:
    vals = _floats(text, what)
    if not all(0 < v <= 36500 for v in vals):
        raise InputError(f"{what}: expected numbers of days greater than 0 and at most 36500, got {text!r}.")
    return vals


def _same(a: Path, b) -> bool:
    """Whether two paths name one file (compared resolved; a loop of links names none)."""
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return False


def add_command(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a triage model (DeepSurv ensemble + Cox) on your own cohort CSV",
        description=(
            "Train a triage model on a cohort CSV with the published design: a k-fold DeepSurv MLP "
            "ensemble (early stopping on each held-out fold), then a Cox model (Efron ties) on the "
            "scaled features plus the out-of-fold ensemble score, a Breslow baseline hazard and "
            "low/medium/high risk cut-offs (tertiles of the predicted risk by default). Binary (0/1) "
            "features are used as they are, the others z-scored. Rows with an empty feature cell are "
            "dropped and counted; a missing or invalid time or event is an error. Writes the model "
            "file (.pulmo-triage, usable with 'pulmo triage predict --model') and a report "
            "(MODEL.report.json and .md) with cross-validated C-index and calibration. "
            "Needs PyTorch (pip install 'pulmo[train]'). " + DISCLAIMER
        ),
    )
    p.add_argument("cohort", help="cohort CSV: one row per patient, features, follow-up time (days) and event (0/1)")
    p.add_argument("--time", required=True, metavar="COL", help="column with the follow-up time in days (> 0)")
    p.add_argument("--event", required=True, metavar="COL", help="column with the event: 1 = event, 0 = censored")
    p.add_argument("--features", nargs="+", metavar="COL",
                   help="feature columns, space- or comma-separated (default: every other column except an ID column)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_FILE", help="model file to write (.pulmo-triage); "
                   "an existing file only when Pulmo wrote it (its folder's .pulmo-manifest.json says so) or with --force")
    p.add_argument("--report", metavar="BASE",
                   help="write the report to BASE.json and BASE.md (default: the model file name + .report)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing model or report file that Pulmo did not write (or that changed since)")
    p.add_argument("--horizons", default="5,10,30",
                   help=f"prediction horizons in days (default 5,10,30; up to {MAX_HORIZONS}, each 0 to 36500)")
    p.add_argument("--risk-horizon", type=DAYS,
                   help=f"horizon of the risk groups (default: the largest horizon; {DAYS.range_text})")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--risk-quantiles", default=None, metavar="Q1,Q2",
                   help="risk cut-offs at these quantiles of the training rows' predicted risk (default tertiles)")
    g.add_argument("--risk-cutoffs", default=None, metavar="LOW,HIGH",
                   help="fixed cut-offs on the probability: low if P <= LOW, high if P > HIGH")
    p.add_argument("--folds", type=FOLDS, default=5,
                   help="cross-validation folds, one network each (default 5; 2 to 100)")
    p.add_argument("--members-per-fold", type=MEMBERS, default=1, metavar="R",
                   help="networks per fold, differently seeded; the ensemble has folds x R (default 1, as "
                        "published; 3 often discriminates a little better; 1 to 100)")
    p.add_argument("--hidden", default="64,64",
                   help=f"hidden layer sizes (default 64,64; up to {MAX_LAYERS} layers of 1 to {MAX_WIDTH})")
    p.add_argument("--activation", default="relu", choices=["relu", "tanh", "selu", "linear"],
                   help="hidden activation (default relu)")
    p.add_argument("--dropout", type=DROPOUT, default=0.1, help=f"dropout rate (default 0.1; {DROPOUT.range_text})")
    p.add_argument("--weight-decay", type=WEIGHT_DECAY, default=1e-3,
                   help=f"Adam L2 weight decay (default 1e-3; {WEIGHT_DECAY.range_text})")
    p.add_argument("--learning-rate", type=LEARNING_RATE, default=3e-3,
                   help=f"Adam learning rate (default 3e-3; {LEARNING_RATE.range_text})")
    p.add_argument("--epochs", type=EPOCHS, default=1000, help="maximum epochs per network (default 1000; 1 to 100000)")
    p.add_argument("--patience", type=EPOCHS, default=50,
                   help="early-stopping patience in epochs (default 50; 1 to 100000)")
    p.add_argument("--batch-size", type=BATCH_SIZE, default=None,
                   help=f"mini-batch size (default: full batch; {BATCH_SIZE.range_text})")
    p.add_argument("--ties", default="efron", choices=["efron", "breslow"], help="Cox ties (default efron)")
    p.add_argument("--ridge", type=RIDGE, default=1e-3,
                   help=f"ridge penalty of the Cox model, lifelines' penalizer scale (default 1e-3; {RIDGE.range_text})")
    p.add_argument("--min-events", type=MIN_EVENTS, default=10, help=argparse.SUPPRESS)
    p.add_argument("--no-donors", action="store_true",
                   help="do not store the training rows' feature values in the model file (the donor table "
                        "for imputing missing values); such a model cannot impute")
    p.add_argument("--seed", type=seed(), default=2020, help="random seed (default 2020; 0 to 4294967295)")
    p.add_argument("--threads", type=THREADS, default=1,
                   help="PyTorch threads (default 1: bit-reproducible; 1 to 1024)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pulmo.io.outputs import check_distinct, check_output_file
    from pulmo.triage.training import TrainingConfig, load_cohort, train_triage_model, write_report
    from pulmo.triage.training.deepsurv import require_torch

    out = Path(args.output)
    if _same(out, args.cohort):
        raise InputError("the model file would overwrite the cohort file; choose another name.")
    check = dict(force=args.force, inputs=[args.cohort])
    check_output_file(out, what="model file", **check)
    base = Path(args.report) if args.report else out.with_name(
        (out.name[: -len(out.suffix)] if out.suffix else out.name) + ".report")
    report_files = [base.with_name(base.name + ext) for ext in (".json", ".md")]
    for f in report_files:  # checked before training: nothing may overwrite the model, the cohort or each other
        if _same(f, out) or _same(f, args.cohort):
            raise InputError(f"the report file {f} would overwrite the {'model' if _same(f, out) else 'cohort'} "
                             "file; give --report another base name (the report is BASE.json and BASE.md).")
        check_output_file(f, what="report file (--report)", **check)
    check_distinct({"-o": out, "--report (BASE.json)": report_files[0], "--report (BASE.md)": report_files[1]})
    features = None
    if args.features:
        features = [f.strip() for item in args.features for f in item.split(",") if f.strip()]
    cfg = TrainingConfig(
        folds=args.folds, members_per_fold=args.members_per_fold, hidden=_ints(args.hidden, "--hidden"), activation=args.activation,
        dropout=args.dropout, weight_decay=args.weight_decay, learning_rate=args.learning_rate,
        max_epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, seed=args.seed,
        cox_ties=args.ties, cox_ridge=args.ridge, horizons=_days(args.horizons, "--horizons"),
        risk_horizon=args.risk_horizon,
        risk_quantiles=_floats(args.risk_quantiles, "--risk-quantiles", 2) if args.risk_quantiles else (1 / 3, 2 / 3),
        risk_cutoffs=_floats(args.risk_cutoffs, "--risk-cutoffs", 2) if args.risk_cutoffs else None,
        threads=args.threads, min_events=args.min_events, donors=not args.no_donors,
    ).check(FLAGS)
    require_torch()  # before the cohort is read: nothing to do without it
    cohort = load_cohort(args.cohort, time=args.time, event=args.event, features=features,
                         min_events=cfg.min_events, setting_names=FLAGS)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"pulmo: {msg}", file=sys.stderr, flush=True))
    say(f"{cohort.n} rows ({cohort.n_events} events) and {len(cohort.features)} features: "
        + ", ".join(cohort.features)
        + (f"; {cohort.dropped_missing} row(s) dropped for empty feature cells" if cohort.dropped_missing else ""))
    result = train_triage_model(cohort, cfg, progress=say)
    result.model.save(out, what="model file", **check)
    js, md = write_report(result.report, base, what="report file (--report)", **check)
    m = result.report["metrics"]["c_index_cv"]
    for w in result.report["warnings"]:
        print(f"pulmo: warning: {w}", file=sys.stderr)
    print(f"pulmo: wrote {out} and the report {js.name}, {md.name}. Cross-validated C-index: "
          f"final {m['final']}, ensemble {m['ensemble']}, linear Cox {m['linear_cox']}. {DISCLAIMER}",
          file=sys.stderr)
    return 0
