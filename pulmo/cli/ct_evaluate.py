"""``pulmo ct evaluate PRED_DIR GT_DIR``: Dice of predicted 2D masks against ground truth.

Predictions are the files ``pulmo ct segment`` writes for 2D images:
``PRED_DIR/<name>_lesions.png`` (0 background, 1 ground-glass opacity,
2 consolidation) and, optionally, ``PRED_DIR/<name>_lungs.png`` (0, 1, 2).

Ground truth, per image name, is looked up in ``GT_DIR`` in this order:

* lesions: ``<name>_lesions.png``, ``<name>.png``, ``labels/<name>.png`` (values 0/1/2),
  or ``covid/<name>.png`` (binary 0/255 infection mask: only the lesion union is scored);
* lungs (optional): ``<name>_lungs.png`` (0/1/2) or ``lungs/<name>.png`` (binary 0/255).

Reported per image and as the mean over images: Dice for GGO, consolidation,
the lesion union (GGO + consolidation) and the lung (union of both lungs), and the
percentage of predicted lesion pixels inside the predicted lung mask. An image where
both the prediction and the ground truth of a class are empty has no Dice for that
class (shown as ``-``) and is left out of that class's mean; the pooled Dice (all
pixels of all images together) is reported as well, and so is a 95 % bootstrap
confidence interval of each mean over images (:func:`pulmo.stats.segmentation.mean_ci`):
on a few images it is wide, and two models whose intervals overlap this much are not
shown to differ.

Exit status 0; 1 when some ground-truth images have no prediction (counted and
listed, left out of the means); 2 for bad input.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from pulmo.errors import InputError
from pulmo.io.outputs import check_output_file, csv_text, write_text

#: How the library's parameter names read on this command line.
_CLI_NAMES = {"'pred_dir'": "PRED_DIR", "'gt_dir'": "GT_DIR"}


def add_command(subparsers) -> None:
    """Add the ``evaluate`` sub-command to the ``pulmo ct`` group's sub-parsers."""
    p = subparsers.add_parser(
        "evaluate", help="Dice of predicted 2D lung/lesion masks against ground truth",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("pred_dir", metavar="PRED_DIR", help="folder with <name>_lesions.png [and <name>_lungs.png]")
    p.add_argument("gt_dir", metavar="GT_DIR", help="folder with the ground-truth masks (see above)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--csv", metavar="FILE", help="also write the per-image table to FILE (never into PRED_DIR or "
                   "GT_DIR over a file that is not Pulmo's)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --csv file that Pulmo did not write (files Pulmo wrote are replaced "
                        "without it; files in PRED_DIR and GT_DIR never)")
    p.set_defaults(func=handler)


# ----------------------------------------------------------------------------- output

def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}"


def _fmt_ci(ci) -> str:
    return "-" if ci is None else f"{ci[0]:.3f}-{ci[1]:.3f}"


def _csv_target(args) -> dict:
    """The checks of the --csv file, run before scoring and again when it is written: not a
    folder, not an image name (a mask), in an existing folder; never an input, never over a file
    of the user's in PRED_DIR or GT_DIR, elsewhere only over Pulmo's own files unless --force."""
    path = Path(args.csv)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        raise InputError(f"--csv {path}: an image file name; give a .csv file name")
    check = dict(force=args.force, input_dirs=[args.pred_dir, args.gt_dir], what="--csv file")
    check_output_file(path, **check)
    if not path.parent.is_dir():
        raise InputError(f"--csv {path}: the folder {path.parent} does not exist")
    return check


def handler(args) -> int:
    check = _csv_target(args) if args.csv else None
    from pulmo.ct.evaluate import CLASSES, evaluate_dirs  # after the checks: a refusal stays quick

    try:
        res = evaluate_dirs(args.pred_dir, args.gt_dir)
    except InputError as exc:
        message = str(exc)
        for name, metavar in _CLI_NAMES.items():
            message = message.replace(name, metavar)
        reworded = type(exc)(message)
        reworded.code = getattr(exc, "code", None)  # the hint pulmo's main adds for it
        raise reworded from exc
    cols = ["name", *CLASSES, "lesion_in_lung_pct"]
    if args.csv:
        rows = ([r["name"], *(_fmt(r.get(c)) for c in cols[1:])] for r in res["per_image"])
        write_text(args.csv, csv_text(cols, rows, lineterminator="\r\n"), **check)
    if args.json:
        def clean(o):
            if isinstance(o, float) and math.isnan(o):
                return None
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items()}
            if isinstance(o, list):
                return [clean(v) for v in o]
            return o
        print(json.dumps(clean(res), indent=2))
    else:
        print(f"{'image':<16}" + "".join(f"{c:>15}" for c in CLASSES) + f"{'lesion_in_lung_%':>18}")
        for r in res["per_image"]:
            print(f"{r['name']:<16}" + "".join(f"{_fmt(r.get(c)):>15}" for c in CLASSES)
                  + f"{_fmt(r.get('lesion_in_lung_pct')):>18}")
        print(f"{'mean':<16}" + "".join(f"{_fmt(res['dice'][c]['mean']):>15}" for c in CLASSES)
              + f"{_fmt(res['lesion_in_lung_pct']):>18}")
        print(f"{'95% CI of mean':<16}" + "".join(f"{_fmt_ci(res['dice'][c]['ci95']):>15}" for c in CLASSES))
        print(f"{'pooled':<16}" + "".join(f"{_fmt(res['dice'][c]['pooled']):>15}" for c in CLASSES))
        print(f"{'n (scored)':<16}" + "".join(f"{res['dice'][c]['n']:>15}" for c in CLASSES))
        print(f"{res['n_images']} images scored (Dice over images where prediction or truth is non-empty; "
              "'pooled' = all pixels together)")
    if res["missing"]:
        shown = ", ".join(res["missing"][:10]) + (" ..." if len(res["missing"]) > 10 else "")
        print(f"pulmo: {len(res['missing'])} ground-truth image(s) have no prediction: {shown}", file=sys.stderr)
        return 1
    return 0
