"""Held-out evaluation of the segmentation model (used for the model cards).

Library: :func:`evaluate` (everything below, into one ``work`` folder) and
:func:`paired_differences` (two such folders compared image by image). Command line::

    python -m pulmo.train.seg_eval [--model FILE.onnx] [--work build/seg/eval]
    python -m pulmo.train.seg_eval --work build/seg/eval-new --compare build/seg/eval   # paired
    python -m pulmo.train.seg_eval --skip-hu --split-limits     # + upper bounds of the GGO/consolidation split

1. 2D held-out sets, scored through the same code as ``pulmo ct evaluate``
   (:func:`pulmo.ct.evaluate.evaluate_dirs`):
   the PNG slices ``PNG_TEST_START``..1613 (lung Dice, lesion-union Dice) and the 10
   held-out MedSeg slices (GGO, consolidation, lesion Dice). Predictions are written by
   :func:`segment_folder`, i.e. the ``pulmo ct segment`` path (:func:`pulmo.ct.analyze`).
2. Real HU CT: lesion involvement (% of lung volume) on lidc-idri-0001 (healthy;
   whole series, and its superior half that training never saw), and per-slice
   involvement on the covid-ny-sbu axial slices, with overlays rendered to PNG.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pulmo.errors import InputError, PulmoError
from pulmo.train import seg_data as D

REPO = Path(__file__).resolve().parents[2]


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(src.resolve(), dst)


def segment_folder(images: Path, out: Path, seg_model=None) -> None:
    """What ``pulmo ct segment IMAGES -o OUT`` writes, with the 8-bit network ``seg_model`` (a path;
    None: the shipped one): ``OUT/<name>_lungs.png`` and ``_lesions.png`` per image. Any image that
    cannot be segmented raises :class:`InputError` (an evaluation needs every image)."""
    from pulmo.ct import AnalysisOptions, analyze, write_outputs

    analysis = analyze(Path(images), AnalysisOptions(seg_model=seg_model, plugin_models=False, segment_only=True))
    if analysis.failed:
        raise InputError(analysis.failed[0].error)
    write_outputs(analysis, Path(out))


def heldout_dirs(root: Path, work: Path) -> dict:
    """Folders of held-out images + ground truth (symlinks), laid out for ``pulmo ct evaluate``."""
    png = root / "seg2d" / "covid19-ct-seg-png"
    names = sorted(p.name for p in (png / "ct").glob("*.png") if int(p.stem) >= D.PNG_TEST_START)
    for n in names:
        _link(png / "ct" / n, work / "png" / "images" / n)
        _link(png / "covid" / n, work / "png" / "gt" / "covid" / n)
        _link(png / "lungs" / n, work / "png" / "gt" / "lungs" / n)
    ms = root / "seg2d" / "medseg-train"
    _, test = D.medseg_names(root)
    for n in test:
        _link(ms / "images" / f"{n}.jpg", work / "medseg" / "images" / f"{n}.jpg")
        _link(ms / "labels" / f"{n}.png", work / "medseg" / "gt" / "labels" / f"{n}.png")
    return {"png": work / "png", "medseg": work / "medseg"}


def medseg_train_dir(root: Path, work: Path) -> Path:
    """The 40 MedSeg *training* slices laid out like :func:`heldout_dirs` (a fit diagnostic: the
    networks saw them; the minor-class rule was chosen on them)."""
    ms = root / "seg2d" / "medseg-train"
    train, _ = D.medseg_names(root)
    for n in train:
        _link(ms / "images" / f"{n}.jpg", work / "medseg_train" / "images" / f"{n}.jpg")
        _link(ms / "labels" / f"{n}.png", work / "medseg_train" / "gt" / "labels" / f"{n}.png")
    return work / "medseg_train"


def read_series(folder: Path):
    """The DICOM slices of ``folder`` in HU, ``(n, H, W)``, sorted by z, and their z (mm)."""
    files = sorted(folder.glob("*.dcm"))
    items = sorted((D.read_dicom_hu(f) for f in files), key=lambda t: t[1])
    return np.stack([t[0] for t in items]), np.array([t[1] for t in items])


def overlay(hu: np.ndarray, lungs: np.ndarray, lesions: np.ndarray) -> np.ndarray:
    """RGB uint8 rendering of an HU slice in the lung window: lung outlines blue, GGO yellow,
    consolidation red."""
    g = D.window(hu, -1000, 200)
    rgb = np.stack([g, g, g], -1)
    from scipy import ndimage as ndi

    edge = (lungs > 0) & ~ndi.binary_erosion(lungs > 0, iterations=2)
    rgb[edge] = [0.2, 0.6, 1.0]
    for lab, col in ((1, [1.0, 0.85, 0.0]), (2, [1.0, 0.1, 0.1])):
        m = lesions == lab
        rgb[m] = 0.45 * rgb[m] + 0.55 * np.array(col)
    return (rgb * 255).astype(np.uint8)


def paired_differences(work: Path, baseline: Path) -> dict:
    """Per-image Dice of ``work`` minus ``baseline`` (two ``work`` folders of :func:`evaluate`), per
    held-out set and class: the mean difference with its 95 % bootstrap interval over the images
    scored in both (:func:`pulmo.stats.segmentation.mean_ci`), and how many images that is.
    Folders that do not pair (a file missing or malformed, other images) raise :class:`InputError`."""
    from pulmo.stats.segmentation import mean_ci

    out = {}
    for key in ("medseg", "png", "medseg_train"):
        files = [w / f"{key}_per_image.json" for w in (Path(work), Path(baseline))]
        if key == "medseg_train" and not all(f.is_file() for f in files):
            continue  # only when both were evaluated with the training slices
        if not all(f.is_file() for f in files):
            raise InputError(f"{' or '.join(str(f) for f in files if not f.is_file())} missing "
                             "(run the evaluation with 'work' on both folders first)")
        try:
            a, b = ({r["name"]: r for r in json.loads(f.read_text())} for f in files)
            rows = list(a.values()) + list(b.values())
            if not all(isinstance(r.get(c), (int, float, type(None))) for r in rows
                       for c in ("ggo", "consolidation", "lesion", "lung")):
                raise TypeError("a Dice value is not a number")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InputError(f"{files[0]} or {files[1]} is not a per-image file of this evaluation "
                             f"({type(exc).__name__}: {exc})") from None
        if set(a) != set(b):
            raise InputError(f"{files[0]} and {files[1]} score different images")
        out[key] = {}
        for c in ("ggo", "consolidation", "lesion", "lung"):
            # scored in both: None or NaN where the class is in neither truth nor prediction
            d = [a[n][c] - b[n][c] for n in sorted(a)
                 if a[n][c] is not None and b[n][c] is not None and np.isfinite(a[n][c] - b[n][c])]
            if d:
                lo, hi = mean_ci(d)
                out[key][c] = {"mean": float(np.mean(d)), "ci95": [lo, hi], "n": len(d)}
    return out


def _num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def evaluate_2d(work: Path, segmenter, data: Path = D.default_data_root(), train_slices: bool = False,
                log: Callable[[str], None] | None = None) -> dict:
    """Segment the 2D held-out sets (:func:`heldout_dirs`; with ``train_slices`` also
    :func:`medseg_train_dir`) with ``segmenter`` through :func:`segment_folder` and score them:
    per set ``{"n", "dice", "lesion_in_lung_pct"}`` (:func:`pulmo.ct.evaluate.evaluate_dirs`);
    the per-image rows go to ``work/<set>_per_image.json``. ``log`` gets one line per set."""
    from pulmo.ct.evaluate import evaluate_dirs

    say = log or (lambda line: None)
    work = Path(work)
    dirs = heldout_dirs(Path(data), work)
    if train_slices:
        dirs["medseg_train"] = medseg_train_dir(Path(data), work)
    summary = {}
    for key, d in dirs.items():
        segment_folder(d / "images", d / "pred", seg_model=segmenter.path)
        res = evaluate_dirs(d / "pred", d / "gt")
        summary[key] = {"n": res["n_images"], "dice": res["dice"], "lesion_in_lung_pct": res["lesion_in_lung_pct"]}
        (work / f"{key}_per_image.json").write_text(json.dumps(res["per_image"], indent=1, default=str))
        say(f"{key} {json.dumps(summary[key])}")
    return summary


def evaluate_hu(work: Path, segmenter, data: Path = D.default_data_root(),
                log: Callable[[str], None] | None = None) -> dict:
    """The real-HU checks with ``segmenter``: lesion involvement (% of lung volume) on
    lidc-idri-0001 (``"lidc"``) and per covid-ny-sbu axial slice (``"covid_ny_sbu"``, a list of
    rows); overlays rendered to ``work/overlays/``. ``log`` gets the LIDC line and one per slice."""
    from PIL import Image

    say = log or (lambda line: None)
    root, work = Path(data), Path(work)
    hu, zs = read_series(root / "ct" / "lidc-idri-0001")
    lungs, les = segmenter.segment_slices(hu, kind="hu")
    lung_vox = (lungs > 0).sum(axis=(1, 2))
    les_vox = ((les > 0) & (lungs > 0)).sum(axis=(1, 2))
    sup = zs >= np.median(zs)
    summary = {"lidc": {"involvement_pct_all": 100.0 * les_vox.sum() / max(lung_vox.sum(), 1),
                        "involvement_pct_heldout_superior_half": 100.0 * les_vox[sup].sum() / max(lung_vox[sup].sum(), 1),
                        "lesion_in_lung_pct": 100.0 * les_vox.sum() / max((les > 0).sum(), 1),
                        "lung_volume_ml": float((lungs > 0).sum() * 0.703125 ** 2 * 2.5 / 1000)}}
    say(f"lidc {json.dumps(summary['lidc'])}")
    ov = work / "overlays"
    ov.mkdir(parents=True, exist_ok=True)
    order = np.argsort(-lung_vox)
    for k in (order[0], order[len(order) // 8], order[len(order) // 3]):
        Image.fromarray(overlay(hu[k], lungs[k], les[k])).save(ov / f"lidc_z{zs[k]:.1f}.png")
    rows = []
    for f in sorted((root / "ct" / "covid-ny-sbu").glob("*/axial/*.dcm")):
        s, _ = D.read_dicom_hu(f)
        lu, le = segmenter.segment_slices(s[None], kind="hu")
        n_lung = int((lu > 0).sum())
        r = {"slice": f"{f.parent.parent.name}/{f.stem}", "lung_px": n_lung,
             "ggo_pct": 100.0 * int(((le == 1) & (lu > 0)).sum()) / max(n_lung, 1),
             "consolidation_pct": 100.0 * int(((le == 2) & (lu > 0)).sum()) / max(n_lung, 1)}
        r["involvement_pct"] = r["ggo_pct"] + r["consolidation_pct"]
        rows.append(r)
        Image.fromarray(overlay(s, lu[0], le[0])).save(ov / f"sbu_{f.parent.parent.name}_{f.stem}.png")
        say(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}))
    summary["covid_ny_sbu"] = rows
    return summary


def evaluate(work: Path, model=None, *, data: Path = D.default_data_root(), threads: int | None = None,
             skip_hu: bool = False, train_slices: bool = False, split_limits: bool = False,
             log: Callable[[str], None] | None = None) -> dict:
    """The held-out evaluation of the model cards into the folder ``work``; returns the summary
    also written to ``work/summary.json``.

    ``model``: one ONNX file for every check (default: the shipped networks as Pulmo uses them,
    ``seg_8bit.onnx`` on the 2D sets and ``seg.onnx`` on HU CT). ``threads``: onnxruntime threads
    (default: all cores). 2D sets by :func:`evaluate_2d`; ``split_limits``: then the upper bounds
    of the GGO/consolidation split (:func:`pulmo.train.seg_split_limits.split_limits`); unless
    ``skip_hu``, :func:`evaluate_hu`. ``log`` gets the progress lines of each step."""
    from pulmo.ct.models import DEFAULT_MODEL, DEFAULT_MODEL_8BIT, Segmenter

    say = log or (lambda line: None)
    work = Path(work)
    seg2d = Segmenter(model or DEFAULT_MODEL_8BIT, threads=threads)
    seg = Segmenter(model or DEFAULT_MODEL, threads=threads)
    summary = {"model_2d": str(seg2d.path), "version_2d": seg2d.version,
               "model_hu": str(seg.path), "version_hu": seg.version}
    scores = evaluate_2d(work, seg2d, data, train_slices=train_slices, log=log)
    summary.update(scores)
    if split_limits:
        from pulmo.train.seg_split_limits import split_limits as score_split_limits

        limits = score_split_limits(work, min_share=seg2d.info.minor_lesion_share,
                                    keys=[k for k in scores if k != "png"])  # the 3-class sets segmented now
        summary["split_limits"] = {k: {v: r["dice"] for v, r in per.items() if v != "oracle_threshold"}
                                   for k, per in limits.items()}
        for key, per in summary["split_limits"].items():
            for v, d in per.items():
                say(f"{key:<13} {v:<15} " + "  ".join(
                    f"{c} {_num(d[c]['mean'])} (pooled {_num(d[c]['pooled'])})" for c in ("ggo", "consolidation", "lesion")))
    if not skip_hu:
        summary.update(evaluate_hu(work, seg, data, log=log))
    (work / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def main(argv=None) -> int:
    """``python -m pulmo.train.seg_eval``: exit status 0; a library error is printed (flags named as
    on the command line) with status 1."""
    import argparse

    from pulmo.train._cli import command_line_message

    ap = argparse.ArgumentParser(prog="python -m pulmo.train.seg_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="one ONNX file for every check (default: the shipped "
                    "networks as Pulmo uses them: seg_8bit.onnx on the 2D sets, seg.onnx on HU CT)")
    ap.add_argument("--data", default=str(D.default_data_root()))
    ap.add_argument("--work", default=str(REPO / "build" / "seg" / "eval"))
    ap.add_argument("--skip-hu", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    ap.add_argument("--train-slices", action="store_true",
                    help="also score the 40 MedSeg training slices (medseg_train; seen in training)")
    ap.add_argument("--split-limits", action="store_true",
                    help="after the 2D evaluation, also score two upper bounds of the GGO/consolidation split "
                         "inside the predicted lesion outline (pulmo.train.seg_split_limits): the perfect split "
                         "and a per-image oracle density threshold")
    ap.add_argument("--compare", default=None, metavar="BASELINE_WORK",
                    help="no evaluation: print the paired per-image Dice differences of --work minus this "
                         "earlier --work folder, with 95 %% bootstrap intervals")
    args = ap.parse_args(argv)
    if args.compare:
        try:
            diffs = paired_differences(Path(args.work), Path(args.compare))
        except PulmoError as exc:
            raise SystemExit(f"--compare: {command_line_message(str(exc), ap)}") from None
        for key, per_class in diffs.items():
            for c, d in per_class.items():
                lo, hi = d["ci95"]
                ci = "no interval" if lo is None else f"{lo:+.4f} to {hi:+.4f}"
                print(f"{key:<7} {c:<14} {d['mean']:+.4f} ({ci}), n={d['n']}")
        return 0
    try:
        evaluate(Path(args.work), args.model, data=Path(args.data), threads=args.threads, skip_hu=args.skip_hu,
                 train_slices=args.train_slices, split_limits=args.split_limits,
                 log=lambda line: print(line, flush=True))
    except PulmoError as exc:
        raise SystemExit(command_line_message(str(exc), ap)) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
