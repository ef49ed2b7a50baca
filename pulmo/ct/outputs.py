"""Write an analysis to a folder: masks (NIfTI on the input's grid, or PNG for 2D images),
``results.json``, ``report.html`` and, from DICOM input, SEG + TID 1500 SR + Secondary Capture.

Outputs are written into a staging folder next to the target and renamed onto it only when
everything succeeded, so bad input never leaves a half-written output folder. Writing never
changes the analysis: ``results.json`` is exactly :meth:`CTAnalysis.to_dict`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from pulmo.ct.analysis import (IMAGE_SUMMARY_FIELDS, RESULTS_FILE, CTAnalysis, ImageFolderAnalysis,
                               ProgressCallback, StageTimer)
from pulmo.errors import InputError, PulmoError


@dataclass
class WrittenOutputs:
    """What :func:`write_outputs` wrote: the folder, its files and seconds per writing stage."""

    folder: Path
    files: list[str]
    timings: dict


def check_output_location(source, out, batch: bool = False) -> None:
    """Refuse an output folder whose replacement would delete the input: ``out`` may not be the
    input nor contain it (and, for a batch, may not lie inside the input folder, where it would be
    read as a study). Paths are compared resolved (symlinks followed)."""
    src, dst = Path(source).resolve(), Path(out).resolve()
    if src == dst or src.is_relative_to(dst):
        raise InputError(f"the output folder {out} is the input or contains it ({source}): Pulmo replaces its "
                         "output folder as a whole, which would delete the input; give another folder")
    if batch and dst.is_relative_to(src):
        raise InputError(f"the output folder {out} lies inside the batch input folder {source}, where it would "
                         "be read as a study; give a folder outside it")


@contextmanager
def staging_dir(target: Path):
    """A temporary folder next to ``target``, renamed onto it on success, removed on failure."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise InputError(f"{target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / RESULTS_FILE).is_file():
        raise InputError(f"{target}: the folder exists and holds files that are not Pulmo results (no "
                         f"{RESULTS_FILE}); Pulmo replaces its output folder as a whole, so give a new or empty "
                         "folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    except OSError as exc:
        raise InputError(f"{target}: cannot write the output there ({exc.strerror or exc})") from exc
    os.chmod(tmp, 0o755)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


def _json(obj: dict) -> str:
    return json.dumps(obj, indent=2)


def write_outputs(analysis: CTAnalysis | ImageFolderAnalysis, out_dir, progress: ProgressCallback | None = None,
                  source=None, nifti_compression: int = 1) -> WrittenOutputs:
    """Write every output of ``analysis`` (the files it lists in ``outputs``) into ``out_dir``,
    replacing an earlier Pulmo output folder there as a whole. ``source``: the input path, when
    there is one, so that an output folder that is or holds the input is refused
    (:func:`check_output_location`). ``nifti_compression``: gzip level of the NIfTI masks (0-9).
    Stages reported to ``progress``: ``masks``, ``key images``, ``dicom``, ``report``, ``masks_wait``."""
    out_dir = Path(out_dir)
    if source is not None:
        check_output_location(source, out_dir)
    timings: dict = {}
    with staging_dir(out_dir) as tmp:
        if isinstance(analysis, ImageFolderAnalysis):
            _write_image_folder(analysis, tmp)
        else:
            jobs: list = []
            try:
                _write_volume(analysis, tmp, StageTimer(timings, progress), jobs, nifti_compression)
            finally:
                for job in jobs:  # never leave a writer running into a folder that is about to be removed
                    job.exception()
        written = sorted(p.name for p in tmp.iterdir())
        if written != sorted(analysis.outputs):
            raise PulmoError(f"internal error: wrote {written}, expected {sorted(analysis.outputs)}")
    return WrittenOutputs(out_dir, list(analysis.outputs), timings)


def _write_image_folder(analysis: ImageFolderAnalysis, tmp: Path) -> None:
    for r in analysis.images:
        if r.ok:
            for label in ("lungs", "lesions"):
                arr = getattr(r.analysis, label)
                Image.fromarray(arr[0].astype(np.uint8)).save(tmp / f"{r.name}_{label}.png")
    with open(tmp / "summary.csv", "w", newline="", encoding="utf-8", errors="replace") as fh:
        w = csv.DictWriter(fh, fieldnames=IMAGE_SUMMARY_FIELDS, restval="")
        w.writeheader()
        w.writerows(analysis.summary_rows())
    (tmp / RESULTS_FILE).write_text(_json(analysis.to_dict()), encoding="utf-8")


def _write_nifti(analysis: CTAnalysis, arr: np.ndarray, path: Path, level: int) -> None:
    img = analysis.volume.to_native(arr.astype(np.uint8, copy=False))
    sitk.WriteImage(img, str(path), True, level)


def _write_volume(a: CTAnalysis, tmp: Path, stage: StageTimer, nifti_jobs: list, level: int) -> None:
    results = a.to_dict()
    planned = set(a.outputs)
    vol = a.volume
    with stage("masks"):
        if vol.kind == "image":
            stem = Path(vol.source).stem
            for name, arr in (("lungs", a.lungs), ("lesions", a.lesions)):
                Image.fromarray(arr[0].astype(np.uint8)).save(tmp / f"{stem}_{name}.png")
        else:
            outs = [("lungs.nii.gz", a.lungs), ("lesions.nii.gz", a.lesions), ("regions.nii.gz", a.regions)]
            # written in the background (compression releases the GIL) while the other outputs are made
            nifti_pool = ThreadPoolExecutor(max_workers=2)
            nifti_jobs += [nifti_pool.submit(_write_nifti, a, arr, tmp / name, level) for name, arr in outs]
            nifti_pool.shutdown(wait=False)
    axial = coronal = z = None
    if planned & {"report.html", "sc_axial.dcm"}:
        with stage("key images"):
            from pulmo.ct.report import images as im

            z, y = im.key_slices(a.lungs, a.lesions)
            axial = im.axial_rgb(vol.array, a.lungs, a.lesions, z)
            coronal = im.coronal_rgb(vol.array, a.lungs, a.lesions, y, vol.spacing)
    if "seg.dcm" in planned:
        with stage("dicom"):
            _write_dicom(a, tmp, axial, coronal, z, stage.timings)
    if "report.html" in planned:
        with stage("report"):
            from pulmo.ct.report import html as rh
            from pulmo.ct.report.images import png_base64

            (tmp / "report.html").write_text(rh.render(results, png_base64(axial), png_base64(coronal)),
                                             encoding="utf-8")
    if nifti_jobs:
        with stage("masks_wait"):
            for job in nifti_jobs:
                job.result()  # re-raises a failed write
    (tmp / RESULTS_FILE).write_text(_json(results), encoding="utf-8")


def _write_dicom(a: CTAnalysis, tmp: Path, axial, coronal, z, timings: dict) -> None:
    from pulmo.ct.report import dicom_out

    methods = {k: a.method.get(k, "") for k in ("lungs", "regions", "lesions")}
    t0 = time.perf_counter()
    _, segs = dicom_out.write_seg(a.volume, a.lungs, a.regions, a.region_kind, a.lesions, methods, tmp)
    timings["dicom_seg"] = round(time.perf_counter() - t0, 3)  # part of "dicom"
    if a.quantification:
        dicom_out.write_sr(a.volume, segs, a.quantification, tmp)
    # reference header for the key axial image: the source slice nearest to canonical slice z
    zpos = a.volume.origin[2] + z * a.volume.spacing[0]
    ref_idx = int(np.argmin(np.abs(a.volume.dicom.positions[:, 2] - zpos)))
    dicom_out.write_sc(a.volume, [("axial", axial, ref_idx, ("L", "P")), ("coronal", coronal, ref_idx, ("L", "F"))],
                       tmp)
