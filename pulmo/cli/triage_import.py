"""``pulmo triage import-model`` and ``pulmo triage model-info``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pulmo.errors import InputError
from pulmo.triage.model import TriageModel
from pulmo.triage.published import import_published_model


def add_command(sub) -> None:
    p = sub.add_parser(
        "import-model",
        help="convert the authors' published models.zip (TensorFlow 1 checkpoints) to a Pulmo model file",
        description=(
            "Read the five TensorFlow 1 checkpoints and the donor table of the 2020 published "
            "critical-illness model (models.zip, or its unpacked folder) without TensorFlow, "
            "and write Pulmo's own model file (.pulmo-triage). The authors' artefact carries no "
            "licence: keep the result for your own use."
        ),
    )
    p.add_argument("source", help="models.zip or the folder that contains fold_0 ... fold_4")
    p.add_argument("-o", "--output", required=True, help="model file to write (e.g. published.pulmo-triage); an "
                   "existing file only when Pulmo wrote it (its folder's .pulmo-manifest.json says so) or with --force")
    p.add_argument("--force", action="store_true",
                   help="replace an existing model file that Pulmo did not write (or that changed since)")
    p.set_defaults(func=run_import)

    q = sub.add_parser("model-info", help="show what a model file holds (features, provenance, metrics)")
    q.add_argument("model", help="a .pulmo-triage file")
    q.set_defaults(func=run_info)


def _summary(model: TriageModel) -> dict:
    return {
        "features": model.features,
        "ensemble_members": len(model.ensemble),
        "layers": [[list(layer.weight.shape) + [layer.activation] for layer in m] for m in model.ensemble][:1],
        "horizons_days": list(model.horizons),
        "risk": {"horizon": model.risk_horizon, "low_max": model.risk_low_max, "high_min": model.risk_high_min},
        "donors": None if model.donors is None else int(model.donors.shape[0]),
        "provenance": model.provenance,
        "metrics": model.metrics,
    }


def run_import(args: argparse.Namespace) -> int:
    from pulmo.io.outputs import check_output_file

    out, src = Path(args.output), Path(args.source)
    try:
        into_source = out.resolve() == src.resolve() or (src.is_dir() and out.resolve().is_relative_to(src.resolve()))
    except (OSError, RuntimeError):  # a loop of links: refused below
        into_source = False
    if into_source:
        raise InputError("the model file would overwrite (or be written into) the source; choose another name.")
    check = dict(force=args.force, inputs=[args.source], what="model file")
    check_output_file(out, **check)  # before the checkpoints are read
    model = import_published_model(args.source)
    model.save(out, **check)
    print(f"pulmo: wrote {args.output}: {len(model.ensemble)} ensemble members, "
          f"{model.donors.shape[0]} donor rows, features {', '.join(model.features)}", file=sys.stderr)
    return 0


def run_info(args: argparse.Namespace) -> int:
    print(json.dumps(_summary(TriageModel.load(args.model)), indent=2))
    return 0
