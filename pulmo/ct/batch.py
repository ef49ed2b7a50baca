"""A folder of studies analysed one after the other into ``OUT/<study>/`` with ``OUT/summary.csv``.

The next study is read in a background thread while the current one is analysed; a study that
fails is recorded in the summary and does not stop the batch.
"""

from __future__ import annotations

import csv
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pulmo.ct.analysis import CTAnalysis, ProgressCallback, analyze
from pulmo.ct.io import read
from pulmo.ct.io.files import IMAGE_SUFFIXES, VOLUME_SUFFIXES, suffix_of
from pulmo.ct.options import AnalysisOptions
from pulmo.ct.outputs import check_output_location, write_outputs
from pulmo.errors import InputError, PulmoError

SUMMARY_FIELDS = ["case", "status", "error", "assessable", "right_lung_ml", "left_lung_ml", "percent_involved",
                  "ggo_ml", "consolidation_ml", "severity_score", "severity_kind", "pneumonia_flag", "warnings",
                  "seconds"]


def batch_items(root: Path) -> list[Path]:
    """The studies in a batch folder: each sub-folder, zip, volume file or 2D image."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: a batch needs a folder of studies")
    items = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() or suffix_of(p) in VOLUME_SUFFIXES or suffix_of(p) in IMAGE_SUFFIXES or suffix_of(p) == ".zip":
            items.append(p)
    if not items:
        raise InputError(f"{root}: no studies found (sub-folders, zips, NIfTI/NRRD/MHA files or images)")
    return items


def summary_row(name: str, results: dict | None = None, error: str | None = None, seconds: float = 0.0) -> dict:
    """One ``summary.csv`` row: the study's headline figures, or its error."""
    row = dict.fromkeys(SUMMARY_FIELDS, "")
    row.update(case=name, status="ok" if error is None else "failed", error=error or "", seconds=round(seconds, 2))
    if results:
        row["assessable"] = results.get("assessable")
        row["warnings"] = ";".join(w["code"] for w in results.get("warnings", []))
        q = results.get("quantification")
        if q:
            row.update(right_lung_ml=q["lungs"]["right"]["volume_ml"], left_lung_ml=q["lungs"]["left"]["volume_ml"],
                       percent_involved=q["lungs"]["total"]["percent_involved"], ggo_ml=q["lungs"]["total"]["ggo_ml"],
                       consolidation_ml=q["lungs"]["total"]["consolidation_ml"],
                       severity_score=q["severity"]["value"], severity_kind=q["severity"]["kind"],
                       pneumonia_flag=q["pneumonia"]["flag"])
    return row


def analyze_batch(root, outroot, options: AnalysisOptions | None = None, progress: ProgressCallback | None = None,
                  prefetch: bool = True) -> list[dict]:
    """Analyse every study under ``root`` into ``outroot/<name>/``; write ``outroot/summary.csv``
    and return its rows. ``progress(study, done)`` is called as each study starts and ends."""
    options = options or AnalysisOptions()
    check_output_location(root, outroot, batch=True)
    items = batch_items(Path(root))
    outroot = Path(outroot)
    try:
        outroot.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{outroot}: cannot write the output there ({exc.strerror or exc})") from exc

    def _read(p):
        t0 = time.perf_counter()
        try:
            return read(p, options.load), None, time.perf_counter() - t0
        except PulmoError as exc:
            return None, str(exc), time.perf_counter() - t0

    rows = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_read, items[0])
        for i, item in enumerate(items):
            name = item.name.split(".")[0] if item.is_file() else item.name
            if progress is not None:
                progress(name, False)
            source, err, t_read = pending.result()
            if prefetch and i + 1 < len(items):
                pending = pool.submit(_read, items[i + 1])
            t0 = time.perf_counter()
            results = None
            if err is None:
                try:
                    analysis = analyze(source, options)
                    if isinstance(analysis, CTAnalysis):
                        analysis.timings = {"load": round(t_read, 3), **analysis.timings}  # read ahead, above
                    write_outputs(analysis, outroot / name)
                    if not isinstance(analysis, CTAnalysis):  # a folder of 2D images
                        if analysis.failed:
                            err = (f"{len(analysis.failed)} of its images could not be segmented (the others were "
                                   f"written; reasons in {name}/summary.csv)")
                    else:
                        results = analysis.to_dict()
                    del analysis  # free this study's maps before the next one is analysed
                except PulmoError as exc:
                    err = str(exc)
            del source
            rows.append(summary_row(name, results, err, t_read + time.perf_counter() - t0))
            if not prefetch and i + 1 < len(items):
                pending = pool.submit(_read, items[i + 1])
            if progress is not None:
                progress(name, True)
    with open(outroot / "summary.csv", "w", newline="", encoding="utf-8", errors="replace") as fh:
        w = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        w.writerows(rows)
    return rows
