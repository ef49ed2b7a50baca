"""Sensitivity and specificity of the pneumonia flag on everything ../shared/data allows.

    python -m pulmo.train.flag_eval [--data ../shared/data] [--json out.json]

Cases (each analysed by :func:`pulmo.ct.analyze` with the default options, as ``pulmo ct
analyze`` does):

* **Positives, CT in HU**: the axial slices of covid-ny-sbu (one slice per study) in which
  ground glass or consolidation is visible. Every slice was looked at by eye (lung window); the
  verdicts are :data:`COVID_SLICES`. The two A027284 slices lie below the lungs (upper abdomen)
  and are left out.
* **Positives, 8-bit slices**: the held-out COVID-19-CT-Seg PNG slices (the block training never
  used, ``PNG_TEST_START``..1613; every one holds infection) and the 10 held-out MedSeg slices;
  "mild": the true infection mask covers under 5 % of the true lung mask.
* **Negatives**: lidc-idri-0001 (no pneumonia): the whole series as one study, each of its
  slices that holds lung given alone (a single-slice input), and each slice of the study's own
  analysis (its per-slice percentage at the slice operating point).

Sensitivity and specificity come with exact (Clopper-Pearson) 95 % intervals
(:func:`pulmo.stats.proportions.proportion`), at the shipped operating points
(:class:`pulmo.ct.quantify.ScoreParams`) and at other thresholds for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"

#: covid-ny-sbu axial slices: what a reader sees on each (lung window), looked at for issue 20.
COVID_SLICES = {
    "A002304/axial/19001231-076.dcm": "hazy ground glass in the right lung and around both hila (mild)",
    "A002304/axial/19010112-135.dcm": "extensive ground glass and consolidation of the right lung",
    "A046441/axial/19001111-045.dcm": "diffuse bilateral ground glass and consolidation (severe)",
    "A046441/axial/19010101-23.dcm": "diffuse bilateral ground glass and consolidation (severe)",
    "A048383/axial/19001231-30.dcm": "faint peripheral ground glass in the right lung (mild)",
    "A048383/axial/19010410-30.dcm": "small subpleural opacities in the left lung (minimal)",
    "A056642/axial/19001229-053.dcm": "extensive bilateral consolidation with ground glass",
    "A056642/axial/19010107-111.dcm": "posterior basal ground glass in both lungs",
}
EXCLUDED = {"A027284": "both slices lie below the lungs (upper abdomen)"}
SWEEP = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0)


def _rate(hits: int, n: int) -> dict:
    from pulmo.stats.proportions import proportion

    value, (lo, hi) = proportion(hits, n)
    return {"k": int(hits), "n": int(n), "value": round(value, 3), "ci95": [round(lo, 3), round(hi, 3)]}


def evaluate(data: Path = DEFAULT_DATA) -> dict:
    """Every case's score and flag, and the rates (see the module docstring)."""
    from PIL import Image

    from pulmo.ct import analyze
    from pulmo.ct.quantify import ScoreParams
    from pulmo.errors import InputError
    from pulmo.train.seg_data import PNG_TEST_START, medseg_names

    params = ScoreParams()
    out: dict = {"operating_points": {"volume_pct": params.pneumonia_threshold_pct,
                                      "volume_min_ml": params.pneumonia_min_ml,
                                      "slice_pct": params.pneumonia_slice_threshold_pct}, "cases": {}}
    cases = out["cases"]
    ct = Path(data) / "ct"
    cases["covid_hu"] = []
    for rel, seen in COVID_SLICES.items():
        a = analyze(ct / "covid-ny-sbu" / rel)
        cases["covid_hu"].append({"case": rel, "seen": seen, "score": a.percent_involved, "flag": a.pneumonia_flag})
    lidc = ct / "lidc-idri-0001"
    study = analyze(lidc)
    q = study.quantification
    cases["lidc_study"] = [{"case": "lidc-idri-0001", "score": study.percent_involved, "flag": study.pneumonia_flag,
                            "lesion_ml": q["lungs"]["total"]["lesion_ml"], "severity": q["severity"]["value"],
                            "nodules": len(study.nodules)}]
    lung_area = (study.lungs > 0).sum(axis=(1, 2))
    les_area = (study.lesions > 0).sum(axis=(1, 2))
    cases["lidc_slices_in_study"] = [
        {"case": f"z{z}", "score": round(100.0 * les_area[z] / lung_area[z], 2)}
        for z in np.flatnonzero(lung_area)]
    cases["lidc_single_slices"] = []
    for f in sorted(lidc.glob("*.dcm")):
        try:
            a = analyze(f)
        except InputError:
            continue  # above or below the lungs
        cases["lidc_single_slices"].append({"case": f.name, "score": a.percent_involved, "flag": a.pneumonia_flag})
    seg2d = Path(data) / "seg2d"
    png = seg2d / "covid19-ct-seg-png"
    ms = seg2d / "medseg-train"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "png").mkdir()
        (tmp / "medseg").mkdir()
        for i in range(PNG_TEST_START, 1614):
            os.symlink(png / "ct" / f"{i:04d}.png", tmp / "png" / f"{i:04d}.png")
        _, test = medseg_names(Path(data))
        for n in test:
            os.symlink(ms / "images" / f"{n}.jpg", tmp / "medseg" / f"{n}.jpg")
        for key in ("png", "medseg"):
            rows = []
            for r in analyze(tmp / key).images:
                if not r.ok:
                    continue
                if key == "png":
                    gt = np.asarray(Image.open(png / "covid" / f"{r.name}.png")) > 0
                    lung = np.asarray(Image.open(png / "lungs" / f"{r.name}.png")) > 0
                    true_pct = 100.0 * gt.sum() / max(int(lung.sum()), 1)
                else:
                    true_pct = None
                rows.append({"case": r.name, "score": r.summary["percent_involved"],
                             "flag": r.analysis.pneumonia_flag,
                             "true_pct": None if true_pct is None else round(float(true_pct), 2)})
            cases[f"{key}_8bit"] = rows
    out["rates"] = _rates(cases, params)
    return out


def _rates(cases: dict, params) -> dict:
    slice_th, vol_th = params.pneumonia_slice_threshold_pct, params.pneumonia_threshold_pct
    png = cases["png_8bit"]
    mild = [c for c in png if c["true_pct"] is not None and c["true_pct"] < 5.0]
    groups = {  # name: (cases, positive?, threshold of the shipped operating point)
        "sensitivity, covid-ny-sbu slices (HU)": (cases["covid_hu"], True, slice_th),
        "sensitivity, COVID-19-CT-Seg held-out slices (8-bit)": (png, True, slice_th),
        "sensitivity, of which mild (< 5 % of the lung)": (mild, True, slice_th),
        "sensitivity, MedSeg held-out slices (8-bit)": (cases["medseg_8bit"], True, slice_th),
        "specificity, lidc-idri-0001 slices given alone (HU)": (cases["lidc_single_slices"], False, slice_th),
        "specificity, lidc-idri-0001 slices within the study (HU)": (cases["lidc_slices_in_study"], False, slice_th),
        "specificity, lidc-idri-0001 study (HU)": (cases["lidc_study"], False, vol_th),
    }
    rates = {}
    for name, (rows, positive, shipped) in groups.items():
        scores = np.array([r["score"] for r in rows], float)
        row = {}
        for th in sorted(set(SWEEP) | {shipped}):
            hit = scores >= th if positive else scores < th
            row[f"{th:g}"] = _rate(int(hit.sum()), len(rows))
        rates[name] = {"shipped_threshold": shipped, "by_threshold": row}
    return rates


def markdown(result: dict) -> str:
    """The rates as a Markdown table (one row per group, the shipped point in bold)."""
    ths = [f"{t:g}" for t in SWEEP]
    lines = ["| group | n | " + " | ".join(f"{t} %" for t in ths) + " |", "|---|---|" + "---|" * len(ths)]
    for name, r in result["rates"].items():
        cells = []
        for t in ths:
            v = r["by_threshold"].get(t)
            text = f"{v['value']:.2f} ({v['ci95'][0]:.2f}-{v['ci95'][1]:.2f})" if v else ""
            cells.append(f"**{text}**" if float(t) == r["shipped_threshold"] else text)
        n = next(iter(r["by_threshold"].values()))["n"]
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pulmo.train.flag_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (default ../shared/data)")
    ap.add_argument("--json", type=Path, help="also write every case and rate to this JSON file")
    args = ap.parse_args(argv)
    if not (args.data / "ct" / "lidc-idri-0001").is_dir():
        print(f"flag_eval: {args.data} does not hold the shared data (ct/lidc-idri-0001)", file=sys.stderr)
        return 2
    result = evaluate(args.data)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
