"""Write an analysis to a folder: masks (NIfTI on the input's grid, or PNG for 2D images),
``results.json``, ``report.html`` and, from DICOM input, SEG + TID 1500 SR + Secondary Capture.

Outputs are written into a staging folder next to the target and renamed onto it only when
everything succeeded, so bad input never leaves a half-written output folder. Writing never
changes the analysis: ``results.json`` is exactly :meth:`CTAnalysis.to_dict`.
"""

from __future__ import annotations

import fnmatch
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
from pulmo.io.outputs import check_output_folder, csv_text, write_folder_manifest

#: What Pulmo writes into an output folder, by name: an earlier output folder without a manifest
#: (written before Pulmo kept one) is replaced only when every file in it matches one of these.
PULMO_OUTPUT_NAMES = ("results.json", "*.nii.gz", "report.html", "seg.dcm", "sr_measurements.dcm", "sc_*.dcm",
                      "summary.csv", "*_lungs.png", "*_lesions.png")


@dataclass
class WrittenOutputs:
    """What :func:`write_outputs` wrote: the folder, its files and seconds per writing stage."""

    folder: Path
    files: list[str]
    timings: dict


def is_pulmo_output_name(name: str) -> bool:
    """Whether ``name`` is one Pulmo gives a file in an output folder (:data:`PULMO_OUTPUT_NAMES`)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in PULMO_OUTPUT_NAMES)


def check_output_folder_replaceable(out) -> None:
    """Refuse an output folder that holds anything but Pulmo's own unchanged files (its manifest,
    :mod:`pulmo.io.outputs`, says which; an earlier folder without one: ``results.json`` and only
    names of :data:`PULMO_OUTPUT_NAMES`), or that is a link, a file, or cannot be written."""
    check_output_folder(out, legacy_marker=RESULTS_FILE, legacy_name=is_pulmo_output_name)


def check_output_location(source, out, batch: bool = False) -> None:
    """Refuse an output folder whose replacement would delete the input: ``out`` may not be the
    input nor contain it (and, for a batch, may not lie inside the input folder, where it would be
    read as a study). Paths are compared resolved (symlinks followed). For a single study, also
    refuse a folder that is not Pulmo's to replace (:func:`check_output_folder_replaceable`)."""
    if not str(out).strip():
        raise InputError("an empty output folder name", code="output_name")
    try:
        src, dst = Path(source).resolve(), Path(out).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a loop of links, a NUL in the name
        raise InputError(f"{out}: cannot use it as the output folder ({exc})", code="output_name") from None
    if src == dst or src.is_relative_to(dst):
        raise InputError(f"the output folder {out} is the input or contains it ({source}): Pulmo replaces its "
                         "output folder as a whole, which would delete the input; give another folder")
    if batch and dst.is_relative_to(src):
        raise InputError(f"the output folder {out} lies inside the batch input folder {source}, where it would "
                         "be read as a study; give a folder outside it")
    if not batch:
        check_output_folder_replaceable(out)


@contextmanager
def staging_dir(target: Path):
    """A temporary folder next to ``target``, renamed onto it on success, removed on failure.

    ``target`` is checked before (:func:`check_output_folder_replaceable`) and once more just
    before it is replaced; the staging folder gets the manifest of Pulmo's files
    (:func:`pulmo.io.outputs.write_folder_manifest`) before it is renamed into place."""
    target = Path(target)
    check_output_folder_replaceable(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name[:40]}.", suffix=".partial", dir=target.parent))
    except OSError as exc:
        raise InputError(f"{target}: cannot write the output there ({exc.strerror or exc})",
                         code="output_unwritable") from exc
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        write_folder_manifest(tmp)
        check_output_folder_replaceable(target)  # nothing of the user's appeared there meanwhile
        _swap(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(tmp: Path, target: Path) -> None:
    """Put the staging folder ``tmp`` in the place of ``target`` (an earlier output, or nothing)."""
    old = None
    try:
        if os.path.lexists(target):
            old = target.with_name(f".{target.name[:40]}.old-{uuid.uuid4().hex[:8]}")
            os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            if old is not None:
                os.rename(old, target)  # put the earlier output back
                old = None
            raise
    except OSError as exc:
        raise InputError(f"{target}: cannot write the output there ({exc.strerror or exc})",
                         code="output_unwritable") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
    return WrittenOutputs(out_dir, list(analysis.outputs), timings)  # its manifest aside


def _write_image_folder(analysis: ImageFolderAnalysis, tmp: Path) -> None:
    for r in analysis.images:
        if r.ok:
            for label in ("lungs", "lesions"):
                arr = getattr(r.analysis, label)
                Image.fromarray(arr[0].astype(np.uint8)).save(tmp / f"{r.name}_{label}.png")
    (tmp / "summary.csv").write_bytes(csv_text(IMAGE_SUMMARY_FIELDS, analysis.summary_rows(), lineterminator="\r\n")
                                      .encode("utf-8", "replace"))
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
            if "nodules.nii.gz" in planned:
                outs.append(("nodules.nii.gz", a.nodule_mask))
            # written in the background (compression releases the GIL) while the other outputs are made
            nifti_pool = ThreadPoolExecutor(max_workers=2)
            nifti_jobs += [nifti_pool.submit(_write_nifti, a, arr, tmp / name, level) for name, arr in outs]
            nifti_pool.shutdown(wait=False)
    axial = coronal = z = None
    caption = ""
    if planned & {"report.html", "sc_axial.dcm"}:
        with stage("key images"):
            from pulmo.ct.report import images as im

            min_voxels = 0
            if a.quantification:
                min_voxels = int(a.quantification["pneumonia"].get("min_lesion_ml", 0) / vol.voxel_volume_ml)
            z, y, caption = im.key_images(a.lungs, a.lesions, a.nodule_mask, min_voxels)
            axial = im.axial_rgb(vol.array, a.lungs, a.lesions, z, a.nodule_mask)
            if (a.quantification or {}).get("coverage", {}).get("complete", True):
                coronal = im.coronal_rgb(vol.array, a.lungs, a.lesions, y, vol.spacing, a.nodule_mask)
    if "seg.dcm" in planned:
        with stage("dicom"):
            _write_dicom(a, tmp, axial, coronal, z, stage.timings)
    if "report.html" in planned:
        with stage("report"):
            from pulmo.ct.report import html as rh
            from pulmo.ct.report.images import png_base64

            (tmp / "report.html").write_text(
                rh.render(results, png_base64(axial), png_base64(coronal) if coronal is not None else None,
                          caption=caption), encoding="utf-8")
    if nifti_jobs:
        with stage("masks_wait"):
            for job in nifti_jobs:
                job.result()  # re-raises a failed write
    (tmp / RESULTS_FILE).write_text(_json(results), encoding="utf-8")


def _write_dicom(a: CTAnalysis, tmp: Path, axial, coronal, z, timings: dict) -> None:
    from pulmo.ct.report import dicom_out

    methods = {k: a.method.get(k, "") for k in ("lungs", "regions", "lesions")}
    t0 = time.perf_counter()
    _, segs = dicom_out.write_seg(a.volume, a.lungs, a.regions, a.region_kind, a.lesions, methods, tmp,
                                  nodules=a.nodule_mask)
    timings["dicom_seg"] = round(time.perf_counter() - t0, 3)  # part of "dicom"
    if a.quantification:
        dicom_out.write_sr(a.volume, segs, a.quantification, tmp)
    # reference header for the key axial image: the source slice nearest to canonical slice z
    zpos = a.volume.origin[2] + z * a.volume.spacing[0]
    ref_idx = int(np.argmin(np.abs(a.volume.dicom.positions[:, 2] - zpos)))
    images = [("axial", axial, ref_idx, ("L", "P"))]
    if coronal is not None:  # a partial scan has no coronal image
        images.append(("coronal", coronal, ref_idx, ("L", "F")))
    dicom_out.write_sc(a.volume, images, tmp)
