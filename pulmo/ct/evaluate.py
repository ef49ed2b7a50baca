"""Overlap of predicted lung / lesion masks with ground truth (Dice), per image and over a set.

Label conventions (those of :mod:`pulmo.ct.models`): lesions 0 background, 1 ground-glass
opacity (GGO), 2 consolidation; lungs 0 background, 1 and 2 the two lungs (scored as their
union). Masks may be 2D slices or 3D volumes; sizes are pixel (voxel) counts.

Scored classes (:data:`CLASSES`): ``ggo``, ``consolidation``, ``lesion`` (GGO + consolidation)
and ``lung``. Against a *binary* ground truth (an infection mask without the GGO /
consolidation split) only ``lesion`` is scored.

Empty masks: where both the prediction and the truth of a class are empty the Dice is undefined
(NaN here, ``-`` in the ``pulmo ct evaluate`` table) and the image is left out of that class's
mean (:func:`pulmo.stats.segmentation.segmentation_metrics` reports 1.0 for that case instead:
it scores a structure that is absent and was not predicted).

Folders (:func:`evaluate_dirs`): predictions are the files ``pulmo ct segment`` writes for 2D
images, ``<name>_lesions.png`` and optionally ``<name>_lungs.png``; ground truth per image name
is, in this order of lookup,

* lesions: ``<name>_lesions.png``, ``<name>.png``, ``labels/<name>.png`` (values 0/1/2), or
  ``covid/<name>.png`` (binary 0/255 infection mask: only the lesion union is scored);
* lungs (optional): ``<name>_lungs.png`` (0/1/2) or ``lungs/<name>.png`` (binary 0/255).

Means over images come with a 95 % percentile-bootstrap interval
(:func:`pulmo.stats.segmentation.mean_ci`) and the pooled Dice (all pixels of all images
together). numpy and Pillow; scipy when a folder is scored.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pulmo.errors import InputError
from pulmo.stats.segmentation import dice_from_overlap, overlap

__all__ = ["CLASSES", "overlap", "dice_from_overlap", "dice", "class_masks", "lesion_in_lung",
           "read_label_mask", "evaluate_dirs"]

#: Scored classes, in report order.
CLASSES = ("ggo", "consolidation", "lesion", "lung")


# ----------------------------------------------------------------------------- metrics

def dice(pred, truth) -> float:
    """Dice of two boolean masks (2D or 3D); NaN when both are empty (counts from
    :func:`pulmo.stats.segmentation.overlap`, the one implementation)."""
    return dice_from_overlap(*overlap(pred, truth))


def class_masks(pred_lesions, truth_lesions, *, truth_binary: bool = False) -> dict:
    """``{class: (pred_mask, truth_mask)}`` of the lesion classes that can be scored: ``lesion``
    always, ``ggo`` and ``consolidation`` unless the truth is binary (``truth_binary``)."""
    pred_lesions, truth_lesions = np.asarray(pred_lesions), np.asarray(truth_lesions)
    masks = {"lesion": (pred_lesions > 0, truth_lesions > 0)}
    if not truth_binary:
        masks["ggo"] = (pred_lesions == 1, truth_lesions == 1)
        masks["consolidation"] = (pred_lesions == 2, truth_lesions == 2)
    return masks


def lesion_in_lung(pred_lesions, pred_lungs) -> tuple[int, int]:
    """``(predicted lesion pixels inside the predicted lung, all predicted lesion pixels)``."""
    les = np.asarray(pred_lesions) > 0
    return int(np.count_nonzero(les & (np.asarray(pred_lungs) > 0))), int(np.count_nonzero(les))


# ----------------------------------------------------------------------------- reading

def read_label_mask(path) -> np.ndarray:
    """A label image (PNG, ...) as an integer array; a 1-bit image as 0/255. Colour images whose
    channels are equal are read as grey; other colour images are refused (:class:`InputError`)."""
    from PIL import UnidentifiedImageError

    from pulmo.ct.io.grey_image import open_bounded_image

    path = Path(path)
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


def _find_truth(gt_dir: Path, name: str):
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


def _truth_names(gt_dir: Path) -> list[str]:
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


# ----------------------------------------------------------------------------- folders

def evaluate_dirs(pred_dir, gt_dir) -> dict:
    """Score every ground-truth image of ``gt_dir`` that has a prediction in ``pred_dir``.

    Returns ``{"n_images", "missing", "per_image", "dice", "lesion_in_lung_pct"}``:
    ``missing`` the ground-truth names without a prediction (left out); ``per_image`` one row per
    scored image (``name``, ``gt_binary``, the Dice of each of :data:`CLASSES` -- NaN where
    undefined, None where not scored -- and ``lesion_in_lung_pct`` when a lung prediction
    exists); ``dice[class]`` the ``mean`` over images with a defined Dice, its bootstrap
    ``ci95`` (None for fewer than two images), ``n`` and the ``pooled`` Dice;
    ``lesion_in_lung_pct`` the percentage of all predicted lesion pixels inside the predicted
    lungs. Bad folders or masks raise :class:`InputError`."""
    from pulmo.stats.segmentation import mean_ci  # scipy.stats: imported when scoring, not at start-up

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((pred_dir, "pred_dir"), (gt_dir, "gt_dir")):
        if not d.is_dir():
            raise InputError(f"'{what}' {d}: not a folder")
    if pred_dir.resolve() == gt_dir.resolve():
        raise InputError(f"'pred_dir' and 'gt_dir' are the same folder ({pred_dir}): the predictions would be "
                         "scored against themselves")
    names = _truth_names(gt_dir)
    if not names:
        raise InputError(f"'gt_dir' {gt_dir}: no ground-truth masks (<name>.png, <name>_lesions.png, "
                         "labels/<name>.png or covid/<name>.png)")
    rows, missing = [], []
    pooled = {c: [0, 0] for c in CLASSES}  # intersection, sum of sizes
    inside = [0, 0]
    for name in names:
        (gt_les_path, binary_hint), gt_lung_path = _find_truth(gt_dir, name)
        pred_les_path = pred_dir / f"{name}_lesions.png"
        if not pred_les_path.is_file():
            missing.append(name)
            continue
        gt, is_binary = _as_three_class(read_label_mask(gt_les_path), gt_les_path, binary_ok=binary_hint)
        pr, _ = _as_three_class(read_label_mask(pred_les_path), pred_les_path, binary_ok=False, prediction=True)
        if pr.shape != gt.shape:
            raise InputError(f"{name}: prediction {pr.shape[1]}x{pr.shape[0]} and ground truth "
                             f"{gt.shape[1]}x{gt.shape[0]} differ in size")
        row = {"name": name, "gt_binary": is_binary}
        masks = class_masks(pr, gt, truth_binary=is_binary)
        pred_lung_path = pred_dir / f"{name}_lungs.png"
        pred_lung = None
        if pred_lung_path.is_file():
            pred_lung = _as_three_class(read_label_mask(pred_lung_path), pred_lung_path, binary_ok=False)[0] > 0
            if pred_lung.shape != gt.shape:
                raise InputError(f"{name}: lung prediction and ground truth differ in size")
            n_in, n_les = lesion_in_lung(pr, pred_lung)
            inside[0] += n_in
            inside[1] += n_les
            row["lesion_in_lung_pct"] = 100.0 * n_in / n_les if n_les else math.nan
        if gt_lung_path is not None and pred_lung is not None:
            gl = _as_three_class(read_label_mask(gt_lung_path), gt_lung_path, binary_ok=True)[0] > 0
            if gl.shape != gt.shape:
                raise InputError(f"{name}: lung ground truth and lesion ground truth differ in size")
            masks["lung"] = (pred_lung, gl)
        for c in CLASSES:
            if c in masks:
                inter, total = overlap(*masks[c])
                row[c] = dice_from_overlap(inter, total)
                pooled[c][0] += inter
                pooled[c][1] += total
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
                   "n": len(vals), "pooled": dice_from_overlap(*pooled[c]) if pooled[c][1] else None}
    return {"n_images": len(rows), "missing": missing, "per_image": rows, "dice": mean,
            "lesion_in_lung_pct": 100.0 * inside[0] / inside[1] if inside[1] else None}
