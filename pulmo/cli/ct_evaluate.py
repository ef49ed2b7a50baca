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

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from pulmo.errors import InputError

CLASSES = ("ggo", "consolidation", "lesion", "lung")


def add_command(subparsers) -> None:
    """Add the ``evaluate`` sub-command to the ``pulmo ct`` group's sub-parsers."""
    p = subparsers.add_parser(
        "evaluate", help="Dice of predicted 2D lung/lesion masks against ground truth",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("pred_dir", metavar="PRED_DIR", help="folder with <name>_lesions.png [and <name>_lungs.png]")
    p.add_argument("gt_dir", metavar="GT_DIR", help="folder with the ground-truth masks (see above)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--csv", metavar="FILE", help="also write the per-image table to FILE")
    p.set_defaults(func=handler)


# ----------------------------------------------------------------------------- reading

def _read_labels(path: Path) -> np.ndarray:
    from PIL import UnidentifiedImageError

    from pulmo.ct.io.grey_image import open_bounded_image

    try:
        with open_bounded_image(path, str(path), what="slice mask") as im:
            im.load()
            if im.mode not in ("L", "P", "1", "I", "I;16"):
                if im.mode in ("RGB", "RGBA", "LA"):
                    arr = np.asarray(im.convert("RGB"))
                    if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])):
                        raise InputError(f"{path}: a colour image, not a label mask")
                    return arr[..., 0].copy()
                raise InputError(f"{path}: unsupported image mode {im.mode} for a label mask")
            return np.asarray(im).astype(np.int64) if im.mode != "1" else np.asarray(im).astype(np.int64) * 255
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from exc


def _as_three_class(arr: np.ndarray, path: Path, binary_ok: bool, prediction: bool = False) -> tuple[np.ndarray, bool]:
    """(labels 0/1/2, is_binary) -- binary 0/255 (or 0/1 when ``binary_ok``) masks become 0/1;
    a ``prediction`` must be 0/1/2 (a 0/255 one is refused)."""
    vals = set(np.unique(arr).tolist())
    if prediction and 255 in vals and vals <= {0, 255}:
        raise InputError(f"{path}: a binary 0/255 mask; predictions are labelled 0 background, 1 ground glass, "
                         "2 consolidation (as pulmo ct segment writes them)")
    if vals <= {0, 255}:
        return (arr > 0).astype(np.uint8), True
    if vals <= {0, 1, 2}:
        if binary_ok and vals <= {0, 1}:
            return arr.astype(np.uint8), True
        return arr.astype(np.uint8), False
    shown = sorted(vals)[:8]
    raise InputError(f"{path}: label values {shown} are not a 0/1/2 mask nor a binary 0/255 mask")


def _find_gt(gt_dir: Path, name: str):
    les = None
    for cand, binary in ((gt_dir / f"{name}_lesions.png", False), (gt_dir / f"{name}.png", False),
                         (gt_dir / "labels" / f"{name}.png", False), (gt_dir / "covid" / f"{name}.png", True)):
        if cand.is_file():
            les = (cand, binary)
            break
    lung = None
    for cand in (gt_dir / f"{name}_lungs.png", gt_dir / "lungs" / f"{name}.png"):
        if cand.is_file():
            lung = cand
            break
    return les, lung


def _gt_names(gt_dir: Path) -> list[str]:
    names = set()
    for p in gt_dir.glob("*.png"):
        stem = p.stem
        if stem.endswith("_lungs") or not p.is_file():  # folders, dangling or looping links: not masks
            continue
        names.add(stem[: -len("_lesions")] if stem.endswith("_lesions") else stem)
    for sub in ("labels", "covid"):
        names.update(p.stem for p in (gt_dir / sub).glob("*.png") if p.is_file())
    names.discard("")
    return sorted(names, key=lambda s: (len(s), s))


# ----------------------------------------------------------------------------- scoring

def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    s = int(pred.sum()) + int(gt.sum())
    if s == 0:
        return math.nan
    return 2.0 * int((pred & gt).sum()) / s


def evaluate_dirs(pred_dir, gt_dir) -> dict:
    """Score every ground-truth image of ``gt_dir`` that has a prediction in ``pred_dir``."""
    from pulmo.stats.segmentation import mean_ci  # scipy.stats: imported when scoring, not at CLI start-up

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((pred_dir, "PRED_DIR"), (gt_dir, "GT_DIR")):
        if not d.is_dir():
            raise InputError(f"{what} {d}: not a folder")
    if pred_dir.resolve() == gt_dir.resolve():
        raise InputError(f"PRED_DIR and GT_DIR are the same folder ({pred_dir}): the predictions would be "
                         "scored against themselves")
    names = _gt_names(gt_dir)
    if not names:
        raise InputError(f"GT_DIR {gt_dir}: no ground-truth masks (<name>.png, <name>_lesions.png, "
                         "labels/<name>.png or covid/<name>.png)")
    rows, missing = [], []
    pooled = {c: [0, 0] for c in CLASSES}  # intersection, sum of sizes
    inside = [0, 0]
    for name in names:
        (gt_les_path, binary_hint), gt_lung_path = _find_gt(gt_dir, name)
        pred_les_path = pred_dir / f"{name}_lesions.png"
        if not pred_les_path.is_file():
            missing.append(name)
            continue
        gt, is_binary = _as_three_class(_read_labels(gt_les_path), gt_les_path, binary_ok=binary_hint)
        pr, _ = _as_three_class(_read_labels(pred_les_path), pred_les_path, binary_ok=False, prediction=True)
        if pr.shape != gt.shape:
            raise InputError(f"{name}: prediction {pr.shape[1]}x{pr.shape[0]} and ground truth "
                             f"{gt.shape[1]}x{gt.shape[0]} differ in size")
        row = {"name": name, "gt_binary": is_binary}
        masks = {"lesion": (pr > 0, gt > 0)}
        if not is_binary:
            masks["ggo"] = (pr == 1, gt == 1)
            masks["consolidation"] = (pr == 2, gt == 2)
        pred_lung_path = pred_dir / f"{name}_lungs.png"
        pred_lung = None
        if pred_lung_path.is_file():
            pred_lung = _as_three_class(_read_labels(pred_lung_path), pred_lung_path, binary_ok=False)[0] > 0
            if pred_lung.shape != gt.shape:
                raise InputError(f"{name}: lung prediction and ground truth differ in size")
            n_les = int((pr > 0).sum())
            n_in = int(((pr > 0) & pred_lung).sum())
            inside[0] += n_in
            inside[1] += n_les
            row["lesion_in_lung_pct"] = 100.0 * n_in / n_les if n_les else math.nan
        if gt_lung_path is not None and pred_lung is not None:
            gl = _as_three_class(_read_labels(gt_lung_path), gt_lung_path, binary_ok=True)[0] > 0
            if gl.shape != gt.shape:
                raise InputError(f"{name}: lung ground truth and lesion ground truth differ in size")
            masks["lung"] = (pred_lung, gl)
        for c in CLASSES:
            if c in masks:
                p, g = masks[c]
                row[c] = dice(p, g)
                pooled[c][0] += int((p & g).sum())
                pooled[c][1] += int(p.sum()) + int(g.sum())
            else:
                row[c] = None
        rows.append(row)
    if not rows:
        raise InputError(f"no predictions in {pred_dir} for the {len(names)} ground-truth images of {gt_dir} "
                         "(expected <name>_lesions.png)")
    mean = {}
    for c in CLASSES:
        vals = [r[c] for r in rows if r[c] is not None and not math.isnan(r[c])]
        lo, hi = mean_ci(vals)
        mean[c] = {"mean": float(np.mean(vals)) if vals else None, "ci95": [lo, hi] if lo is not None else None,
                   "n": len(vals), "pooled": 2.0 * pooled[c][0] / pooled[c][1] if pooled[c][1] else None}
    return {"n_images": len(rows), "missing": missing, "per_image": rows, "dice": mean,
            "lesion_in_lung_pct": 100.0 * inside[0] / inside[1] if inside[1] else None}


# ----------------------------------------------------------------------------- output

def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}"


def _fmt_ci(ci) -> str:
    return "-" if ci is None else f"{ci[0]:.3f}-{ci[1]:.3f}"


def _check_csv_path(path: Path) -> None:
    """Refuse a --csv target that is a folder or an image (a mask it would overwrite), before scoring."""
    if path.is_dir():
        raise InputError(f"--csv {path}: a folder; give a file name, e.g. {path / 'per_image.csv'}")
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        raise InputError(f"--csv {path}: an image file name; give a .csv file name")
    if not path.parent.is_dir():
        raise InputError(f"--csv {path}: the folder {path.parent} does not exist")


def handler(args) -> int:
    if args.csv:
        _check_csv_path(Path(args.csv))
    res = evaluate_dirs(args.pred_dir, args.gt_dir)
    cols = ["name", *CLASSES, "lesion_in_lung_pct"]
    if args.csv:
        try:
            with open(args.csv, "w", newline="", encoding="utf-8", errors="replace") as fh:
                w = csv.writer(fh)
                w.writerow(cols)
                for r in res["per_image"]:
                    w.writerow([r["name"], *(_fmt(r.get(c)) for c in cols[1:])])
        except OSError as exc:
            raise InputError(f"--csv {args.csv}: cannot write it ({exc.strerror or exc})") from exc
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
