"""A folder of studies analysed one after the other into ``OUT/<study>/`` with ``OUT/summary.csv``.

The next study is read in a background thread while the current one is analysed; a study that
fails is recorded in the summary and does not stop the batch. Every study gets its own output
folder name (:func:`study_names`), and nothing of the user's in ``OUT`` is replaced: the study
folders and ``summary.csv`` are checked before any study is analysed.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pulmo.ct.analysis import CTAnalysis, ProgressCallback, analyze
from pulmo.ct.io import read
from pulmo.ct.io.files import IMAGE_SUFFIXES, VOLUME_SUFFIXES, suffix_of
from pulmo.ct.options import AnalysisOptions
from pulmo.ct.outputs import check_output_folder_replaceable, check_output_location, write_outputs
from pulmo.errors import InputError, PulmoError
from pulmo.io.outputs import MANIFEST, check_folder_to_write_into, check_output_file, csv_text, write_text

SUMMARY_FILE = "summary.csv"
#: ``case``: the study's name in the batch folder; ``output``: its output folder in ``OUT`` (empty
#: when nothing was written for it).
SUMMARY_FIELDS = ["case", "output", "status", "error", "assessable", "right_lung_ml", "left_lung_ml", "percent_involved",
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


def study_names(items: list[Path]) -> list[str]:
    """One output folder name per study, unique also ignoring case (for case-insensitive file
    systems), as :func:`pulmo.ct.io.output_names` names images: a folder's name, a file's name up
    to its first dot (``p1.nii.gz`` -> ``p1``); ``<name>_<ext>`` when two studies share a name
    (``p1.nii.gz``, ``p1.zip`` -> ``p1_nii_gz``, ``p1_zip``); then ``_2``, ``_3``, ... where that is
    taken too. Never ``summary.csv`` nor a hidden name; bytes that are not UTF-8 become U+FFFD,
    control characters ``_``, and a name is cut at 200 bytes."""
    def text(s: str) -> str:
        s = os.fsencode(s).decode("utf-8", "replace")
        s = "".join("_" if ord(c) < 32 or ord(c) == 127 else c for c in s)
        return s.encode("utf-8")[:200].decode("utf-8", "ignore")  # room for a suffix within 255 bytes

    bases = [text(p.name if p.is_dir() else p.name.split(".")[0]) for p in items]
    low = [b.lower() for b in bases]
    seen = {SUMMARY_FILE.lower(), MANIFEST.lower()}
    names = []
    for p, base in zip(items, bases):
        if low.count(base.lower()) > 1 or base.lower() in seen or not base or base.startswith("."):
            base = text(p.name).replace(".", "_")
        name, k = base, 2
        while name.lower() in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name.lower())
        names.append(name)
    return names


def _earlier_summary(path: Path) -> bool:
    """An OUT/summary.csv that an earlier Pulmo wrote, before it kept a manifest: its header."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(4096).decode("utf-8", "replace").strip()
    except OSError:
        return False
    old = [f for f in SUMMARY_FIELDS if f != "output"]
    return first in (",".join(old), ",".join(SUMMARY_FIELDS))


def summary_row(name: str, results: dict | None = None, error: str | None = None, seconds: float = 0.0,
                output: str = "") -> dict:
    """One ``summary.csv`` row: the study's headline figures, or its error."""
    row = dict.fromkeys(SUMMARY_FIELDS, "")
    row.update(case=name, output=output, status="ok" if error is None else "failed", error=error or "",
               seconds=round(seconds, 2))
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


def check_batch_output(root, outroot) -> list[str]:
    """Refuse (:class:`InputError`) a batch output folder where the batch would cost the user a
    file, before anything is analysed: ``outroot`` is not the input nor inside it, is (or can be) a
    folder, its ``summary.csv`` is Pulmo's, and every study's output folder is new or Pulmo's to
    replace. Returns the studies' output folder names (:func:`study_names`)."""
    check_output_location(root, outroot, batch=True)
    items = batch_items(Path(root))
    names = study_names(items)
    outroot = Path(outroot)
    check_folder_to_write_into(outroot, "batch output folder")
    check_output_file(outroot / SUMMARY_FILE, forceable=False, accept=_earlier_summary, what="batch summary")
    problems = []
    for name in names:
        try:
            check_output_folder_replaceable(outroot / name)
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        more = f" (and {len(problems) - 1} more study folder(s) like it)" if len(problems) > 1 else ""
        raise InputError(f"the batch would replace study folders in {outroot} that hold files of yours: "
                         f"{problems[0]}{more}", code="output_folder_not_pulmo")
    return names


def analyze_batch(root, outroot, options: AnalysisOptions | None = None, progress: ProgressCallback | None = None,
                  prefetch: bool = True) -> list[dict]:
    """Analyse every study under ``root`` into ``outroot/<name>/``; write ``outroot/summary.csv``
    and return its rows. ``progress(study, done)`` is called as each study starts and ends.
    Nothing is analysed when the output folder would cost the user a file (:func:`check_batch_output`)."""
    options = options or AnalysisOptions()
    names = check_batch_output(root, outroot)
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
        for i, (item, name) in enumerate(zip(items, names)):
            case = os.fsencode(item.name).decode("utf-8", "replace")
            if progress is not None:
                progress(name, False)
            source, err, t_read = pending.result()
            if prefetch and i + 1 < len(items):
                pending = pool.submit(_read, items[i + 1])
            t0 = time.perf_counter()
            results, written = None, ""
            if err is None:
                try:
                    analysis = analyze(source, options)
                    if isinstance(analysis, CTAnalysis):
                        analysis.timings = {"load": round(t_read, 3), **analysis.timings}  # read ahead, above
                    write_outputs(analysis, outroot / name)
                    written = name
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
            rows.append(summary_row(case, results, err, t_read + time.perf_counter() - t0, output=written))
            if not prefetch and i + 1 < len(items):
                pending = pool.submit(_read, items[i + 1])
            if progress is not None:
                progress(name, True)
    write_text(outroot / SUMMARY_FILE, csv_text(SUMMARY_FIELDS, rows, lineterminator="\r\n"), forceable=False,
               accept=_earlier_summary, what="batch summary")
    return rows
