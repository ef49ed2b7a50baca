"""Service layer: load -> segment -> regions -> lesions -> quantify -> write outputs.

``analyze_path`` handles one study (DICOM folder/zip, NIfTI/NRRD/MHA, PNG/JPG);
``analyze_batch`` a folder of studies with a summary CSV, loading the next
study in a background thread while the current one is computed.

Outputs are written into a staging folder next to the target and renamed onto
it only when everything succeeded, so bad input never leaves a half-written
output folder.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from pulmo import DISCLAIMER, __version__
from pulmo.ct import LESION_LABELS, LOBE_LABELS, LUNG_LABELS, SCHEMA_VERSION, ZONE_LABELS
from pulmo.ct.io import LoadOptions, load
from pulmo.ct.io.files import IMAGE_SUFFIXES, VOLUME_SUFFIXES, suffix_of
from pulmo.ct.quantify import ScoreParams, qualify_flag, quality_warnings, quantify
from pulmo.ct.segment.lesions import LesionParams, segment_lesions
from pulmo.ct.segment.lungs import LungParams, add_learned_lesional_lung, segment_lungs
from pulmo.ct.models.runtime import default_threads
from pulmo.ct.segment.lobe_tool import ExternalLobeTool
from pulmo.ct.segment.models import find_model, load_shipped_segmenter, segmenter_description
from pulmo.ct.segment.regions import restrict_lobes, zones
from pulmo.ct.volume import CTVolume, warning
from pulmo.errors import InputError, ModelError, PulmoError

CONVENTIONS = {
    "physical": "LPS (DICOM/ITK): +x patient left, +y posterior, +z superior, mm",
    "arrays": "internal arrays (z, y, x): z inferior->superior, y anterior->posterior, x patient right->left",
    "nifti_outputs": "label maps on the input's grid (DICOM: the slice stack sorted by position; "
                     "resampled uniform grid when slices were missing, uneven or tilted)",
}


@dataclass
class AnalysisOptions:
    load: LoadOptions = field(default_factory=LoadOptions)
    lungs: LungParams = field(default_factory=LungParams)
    lesions: LesionParams = field(default_factory=LesionParams)
    score: ScoreParams = field(default_factory=ScoreParams)
    lung_model: str | None = None
    lobe_model: str | None = None
    # an installed external lobe program (see pulmo.ct.segment.lobe_tool); None: $PULMO_CT_LOBE_TOOL
    lobe_tool: str | None = None
    lobe_tool_labels: str | None = None  # label scheme; None: $PULMO_CT_LOBE_LABELS or "lungmask"
    lesion_model: str | None = None
    seg_model: str | None = None  # shipped lung + lesion network (None: pulmo/ct/models/seg.onnx; "none": off)
    # Add to the classical lung mask the voxels the learned model labels lung and lesion,
    # denser than -500 HU, not in the mediastinum, inside the bony thorax: consolidated and
    # ground-glass lung that density thresholds lose (severe pneumonia), see docs/ct.md.
    learned_lung_recovery: bool = True
    write_dicom: bool = True
    write_report: bool = True
    nifti_compression: int = 1


@dataclass
class Case:
    vol: CTVolume
    lungs: np.ndarray
    lesions: np.ndarray | None
    regions: np.ndarray | None
    region_kind: str
    results: dict
    timings: dict


class _Timer:
    def __init__(self, timings: dict, progress=None):
        self.timings, self.progress = timings, progress

    @contextmanager
    def __call__(self, name: str):
        if self.progress is not None:
            self.progress.set_description(name)
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)
        if self.progress is not None:
            self.progress.update(1)


# ----------------------------------------------------------------------------- computing
def lobe_tool(options: AnalysisOptions) -> ExternalLobeTool | None:
    """The external lobe program from the options or ``$PULMO_CT_LOBE_TOOL`` (None: not configured)."""
    command = options.lobe_tool or os.environ.get("PULMO_CT_LOBE_TOOL", "").strip()
    if not command or command.lower() == "none":
        return None
    scheme = options.lobe_tool_labels or os.environ.get("PULMO_CT_LOBE_LABELS", "").strip() or "lungmask"
    return ExternalLobeTool(command, scheme)


def compute(vol: CTVolume, options: AnalysisOptions, segment_only: bool = False, timings=None,
            progress=None) -> Case:
    """Segment (and, unless ``segment_only``, quantify) a loaded volume."""
    timings = {} if timings is None else timings
    stage = _Timer(timings, progress)
    methods = {}
    sources = {}
    extra_warnings = []
    learned = learned_lungs = learned_lesions = None
    with stage("lungs"):
        lung_model = find_model("lungs", options.lung_model)
        lesion_model = find_model("lesions", options.lesion_model)
        seg = reason = None
        classical = lung_model is None and vol.is_hu
        pending = None
        if lung_model is None or lesion_model is None:
            # beside the classical lung mask (one busy core), the network gets the other cores
            threads = default_threads(busy=1) if classical else None
            seg, reason = load_shipped_segmenter(options.seg_model, threads=threads,
                                                 kind="hu" if vol.is_hu else "8bit")
            if seg is not None:
                run = partial(seg.segment_slices, vol.array, kind="hu" if vol.is_hu else "8bit",
                              tta=vol.kind == "image")
                # the network runs in onnxruntime (GIL released) beside the classical lung mask
                pool = ThreadPoolExecutor(max_workers=1) if classical else None
                pending = pool.submit(run) if pool else None
        if classical:
            try:
                res = segment_lungs(vol.array, vol.spacing, options.lungs)
            finally:
                if pending is not None:
                    pool.shutdown(wait=True)
        if seg is not None:
            try:
                learned_lungs, learned_lesions = pending.result() if pending is not None else run()
            except InputError as exc:
                if not vol.is_hu:
                    raise
                seg, reason = None, f"the model refused this volume ({exc})"
        if seg is None and reason is not None:
            if not vol.is_hu and lung_model is None:
                raise InputError(f"{NO_2D_MODEL}; the shipped model could not be loaded: {reason}")
            extra_warnings.append(warning(
                "learned_models_unavailable",
                f"learned models could not be loaded: {reason}; density analysis used"))
        if seg is not None:
            learned = segmenter_description(seg)
        if not vol.is_hu and lung_model is None and seg is None:
            raise InputError(NO_2D_MODEL)
        few = vol.shape[0] < options.lungs.few_slices
        info = {}
        if lung_model is not None:
            lungs = lung_model.predict(vol.array)
            lungs[lungs > 2] = 0
            methods["lungs"] = f"model {lung_model.path.name} ({lung_model.version})"
            sources["lungs"] = "plug-in model"
        elif not classical:
            lungs = learned_lungs
            methods["lungs"] = f"learned model {learned['file']} ({learned['version']})"
            sources["lungs"] = "learned"
        else:
            lungs, info = res.labels, res.info
            methods["lungs"] = "classical (threshold, airway removal, component analysis, consolidation recovery)"
            sources["lungs"] = "classical"
            if seg is not None and options.learned_lung_recovery:
                added = add_learned_lesional_lung(lungs, learned_lungs, learned_lesions, res.airway,
                                                  hu=vol.array, spacing=vol.spacing)
                methods["lungs"] += (f" + dense lung that the learned model {learned['file']} ({learned['version']}) "
                                     "labels as lesion")
                sources["lungs"] = "classical+learned"
                info = {**info, "learned_lesional_lung_voxels_added": added}
    if not lungs.any():
        raise InputError(f"{Path(vol.source).name}: no lungs found in this image; is it a chest CT?")
    lesions = regions = None
    region_kind = "zones"
    if True:  # regions and lesions are part of both analyze and segment
        with stage("regions"):
            lobe_model = find_model("lobes", options.lobe_model) if vol.is_hu else None
            tool = lobe_tool(options) if vol.is_hu and lobe_model is None else None
            if lobe_model is not None:
                regions = restrict_lobes(lobe_model.predict(vol.array), lungs)
                region_kind = "lobes"
                methods["regions"] = f"lobe model {lobe_model.path.name} ({lobe_model.version})"
            elif tool is not None:
                try:
                    regions = restrict_lobes(tool.predict(vol), lungs)
                    region_kind = "lobes"
                    methods["regions"] = tool.describe()
                except ModelError as exc:
                    extra_warnings.append(warning("lobe_tool_failed", f"{exc}; zones used instead of lobes"))
            if regions is None:
                regions = zones(lungs)
                methods["regions"] = "zones: upper/middle/lower third of each lung's height"
        with stage("lesions"):
            if lesion_model is not None:
                lesions = lesion_model.predict(vol.array)
                lesions[(lungs == 0) | (lesions > 2)] = 0
                methods["lesions"] = f"model {lesion_model.path.name} ({lesion_model.version})"
                sources["lesions"] = "plug-in model"
            elif seg is not None:
                lesions = learned_lesions
                lesions[(lungs == 0) | (lesions > 2)] = 0
                methods["lesions"] = f"learned model {learned['file']} ({learned['version']}), within the lung mask"
                sources["lesions"] = "learned"
            elif vol.is_hu:
                lesions = segment_lesions(vol.array, lungs, vol.spacing, options.lesions)
                methods["lesions"] = (f"density bands GGO {options.lesions.ggo_hu} HU, consolidation "
                                      f"{options.lesions.consolidation_hu} HU, vessel suppression")
                sources["lesions"] = "density"
            else:
                raise InputError("8-bit images need a learned lesion model (none installed); "
                                 "pass --lesion-model or set PULMO_CT_MODELS")
    results = _base_results(vol, methods, info, region_kind)
    results["method"]["source"] = sources
    results["method"]["learned_model"] = learned
    if not segment_only:
        with stage("quantify"):
            warns, assessable = quality_warnings(vol, lungs, few) if vol.is_hu else ([], True)
            q = quantify(vol.array, lungs, lesions, regions, region_kind, vol.spacing, options.score)
            if not assessable:
                q["severity"]["value"] = None
                q["pneumonia"]["flag"] = None
            else:
                qualify_flag(q, warns, density_based=sources.get("lesions") == "density")
            results["warnings"] = vol.warnings + extra_warnings + warns
            results["assessable"] = assessable
            results["quantification"] = q
    else:
        results["warnings"] = list(vol.warnings) + extra_warnings
    return Case(vol, lungs, lesions, regions, region_kind, results, timings)


def _base_results(vol: CTVolume, methods: dict, info: dict, region_kind: str) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "pulmo_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "disclaimer": DISCLAIMER,
        "input": {
            "source": vol.source, "kind": vol.kind, "is_hu": vol.is_hu,
            "shape_zyx": list(vol.shape), "spacing_zyx_mm": [round(float(s), 4) for s in vol.spacing],
            "origin_lps_mm": [round(float(o), 3) for o in vol.origin],
            **{k: v for k, v in vol.meta.items() if k != "other_series"},
            "other_series": vol.meta.get("other_series", []),
        },
        "conventions": CONVENTIONS,
        "labels": {"lungs": LUNG_LABELS, "lesions": LESION_LABELS,
                   "regions": LOBE_LABELS if region_kind == "lobes" else ZONE_LABELS},
        "regions": {"kind": region_kind},
        "method": {**methods, "details": info,
                   "summary": "; ".join(f"{k}: {v}" for k, v in methods.items())},
        "assessable": True,
        "warnings": [],
    }


# ----------------------------------------------------------------------------- writing
RESULTS_FILE = "results.json"  # every Pulmo output folder has one: the mark of a folder it may replace


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


def _write_nifti(case: Case, arr: np.ndarray, path: Path, level: int) -> None:
    img = case.vol.to_native(arr.astype(np.uint8, copy=False))
    sitk.WriteImage(img, str(path), True, level)


def write_case(case: Case, outdir: Path, options: AnalysisOptions, segment_only: bool, json_only_results=False,
               progress=None) -> list[str]:
    with staging_dir(outdir) as tmp:
        return write_into(case, tmp, options, segment_only, progress)


def write_into(case: Case, tmp: Path, options: AnalysisOptions, segment_only: bool, progress=None) -> list[str]:
    """Write every output of ``case`` into the (staging) folder ``tmp``."""
    jobs: list = []
    try:
        return _write_outputs(case, tmp, options, segment_only, progress, jobs)
    finally:
        for job in jobs:  # never leave a writer running into a folder that is about to be removed
            job.exception()


def _write_outputs(case: Case, tmp: Path, options: AnalysisOptions, segment_only: bool, progress,
                   nifti_jobs: list) -> list[str]:
    timings = case.timings
    stage = _Timer(timings, progress)
    files = []
    if True:
        if case.vol.kind == "image":
            with stage("masks"):
                stem = Path(case.vol.source).stem
                for name, arr in (("lungs", case.lungs), ("lesions", case.lesions)):
                    Image.fromarray(arr[0].astype(np.uint8)).save(tmp / f"{stem}_{name}.png")
                    files.append(f"{stem}_{name}.png")
        else:
            with stage("masks"):
                outs = [("lungs.nii.gz", case.lungs), ("lesions.nii.gz", case.lesions), ("regions.nii.gz", case.regions)]
                # written in the background (compression releases the GIL) while the other outputs are made
                nifti_pool = ThreadPoolExecutor(max_workers=2)
                nifti_jobs += [nifti_pool.submit(_write_nifti, case, arr, tmp / name, options.nifti_compression)
                               for name, arr in outs]
                nifti_pool.shutdown(wait=False)
                files += [n for n, _ in outs]
        if not segment_only and case.vol.kind != "image":
            axial = coronal = None
            if options.write_report or (options.write_dicom and case.vol.dicom is not None):
                with stage("key images"):
                    from pulmo.ct.report import images as im

                    z, y = im.key_slices(case.lungs, case.lesions)
                    axial = im.axial_rgb(case.vol.array, case.lungs, case.lesions, z)
                    coronal = im.coronal_rgb(case.vol.array, case.lungs, case.lesions, y, case.vol.spacing)
            if options.write_dicom and case.vol.dicom is not None:
                with stage("dicom"):
                    missing = _missing_uids(case.vol.dicom.headers)
                    if missing:
                        case.results["warnings"].append(warning(
                            "dicom_outputs_skipped", "DICOM SEG/SR/SC were not written: the source images lack "
                            + ", ".join(missing) + ", which the results must reference"))
                    else:
                        files += _write_dicom(case, tmp, axial, coronal, z)
            if options.write_report:
                with stage("report"):
                    from pulmo.ct.report import html as rh
                    from pulmo.ct.report.images import png_base64

                    case.results["outputs"] = files + ["results.json", "report.html"]
                    (tmp / "report.html").write_text(
                        rh.render(case.results, png_base64(axial), png_base64(coronal)), encoding="utf-8")
                    files.append("report.html")
        if nifti_jobs:
            with stage("masks_wait"):
                for job in nifti_jobs:
                    job.result()  # re-raises a failed write
        case.results["outputs"] = files + ["results.json"]
        case.results["timings_s"] = timings
        (tmp / "results.json").write_text(json.dumps(case.results, indent=2, default=_json_default), encoding="utf-8")
    return case.results["outputs"]


def _missing_uids(headers) -> list[str]:
    need = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
    return [k for k in need if not all(str(h.get(k, "") or "") for h in headers)]


def _write_dicom(case: Case, tmp: Path, axial, coronal, z) -> list[str]:
    from pulmo.ct.report import dicom_out

    methods = {k: case.results["method"].get(k, "") for k in ("lungs", "regions", "lesions")}
    t0 = time.perf_counter()
    paths, segs = dicom_out.write_seg(case.vol, case.lungs, case.regions, case.region_kind, case.lesions,
                                      methods, tmp)
    case.timings["dicom_seg"] = round(time.perf_counter() - t0, 3)  # part of "dicom"
    out = [p.name for p in paths]
    if case.results.get("quantification"):
        sr = dicom_out.write_sr(case.vol, segs, case.results["quantification"], tmp)
        if sr:
            out.append(sr.name)
    # reference header for the key axial image: the source slice nearest to canonical slice z
    zpos = case.vol.origin[2] + z * case.vol.spacing[0]
    ref_idx = int(np.argmin(np.abs(case.vol.dicom.positions[:, 2] - zpos)))
    scs = dicom_out.write_sc(case.vol, [("axial", axial, ref_idx, ("L", "P")),
                                        ("coronal", coronal, ref_idx, ("L", "F"))], tmp)
    return out + [p.name for p in scs]


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ----------------------------------------------------------------------------- entry points
NO_2D_MODEL = ("this is an 8-bit image, not a CT in Hounsfield units: HU thresholds mean nothing here, and the "
               "2D path needs learned lung and lesion models (the shipped pulmo/ct/models/seg_8bit.onnx, or "
               "--lung-model/--lesion-model, or PULMO_CT_MODELS)")

IMAGE_SUMMARY_FIELDS = ["name", "status", "width", "height", "lung_pixels", "ggo_pixels", "consolidation_pixels",
                        "percent_involved", "warning", "error"]


def _image_summary(name: str, image: np.ndarray, lungs: np.ndarray, lesions: np.ndarray) -> dict:
    """Per-image figures of the 2D path (pixels; percent of the lung mask that is lesion), with a
    warning when the masks look untrustworthy (:func:`pulmo.ct.models.images.image_warning`)."""
    from pulmo.ct.models.images import image_warning

    lung = lungs > 0
    n_lung = int(lung.sum())
    return {"name": name, "status": "ok", "width": int(lungs.shape[-1]), "height": int(lungs.shape[-2]),
            "lung_pixels": n_lung, "ggo_pixels": int(((lesions == 1) & lung).sum()),
            "consolidation_pixels": int(((lesions == 2) & lung).sum()),
            "percent_involved": round(100.0 * int(((lesions > 0) & lung).sum()) / n_lung, 2) if n_lung else 0.0,
            "warning": image_warning(image, lungs) or "", "error": ""}


def analyze_image_folder(path, outdir, options: AnalysisOptions, segment_only=False) -> dict:
    """A folder of PNG/JPG slices: each image segmented independently with the learned models
    (by default the shipped network, with flip test-time augmentation; or the plug-in models).

    Writes ``<stem>_lungs.png`` / ``<stem>_lesions.png`` per image (the image's size), one
    ``results.json`` (``images[]``: the per-image results, as for a single image, each with a
    ``summary`` and ``status``) and ``summary.csv`` (per image: status, lung / lesion pixels,
    percent involved, warning, error).

    An image that cannot be segmented (unreadable, colour, 16-bit, no lung found, ...) is
    listed with ``status: "error"`` and the reason, and gets no masks; the others are written
    (``results["failed"]`` counts the refused ones). Refused as a whole (InputError, nothing
    written) when no learned lung or lesion model is available or when no image succeeds.
    """
    from pulmo.ct.io import ignored_files, image_files, output_names
    from pulmo.ct.io.files import load_image
    from pulmo.ct.segment.models import models_available

    missing = models_available({"lungs": options.lung_model, "lesions": options.lesion_model})
    if missing:
        seg, reason = load_shipped_segmenter(options.seg_model, kind="8bit")
        if seg is None:
            raise InputError(f"{Path(path).name}: a folder of 2D images; " + NO_2D_MODEL
                             + (f"; the shipped model could not be loaded: {reason}" if reason else ""))
    t0 = time.perf_counter()
    files = image_files(Path(path))
    names = output_names(files)
    cases, images = [], []  # images: one entry per file, in order (results, or the reason it was refused)
    for f, name in zip(files, names):  # everything is computed before writing: the output appears whole or not at all
        try:
            vol = load_image(f, options.load)
            case = compute(vol, options, segment_only, {})
        except InputError as exc:  # this image only: the others are still segmented
            msg = str(exc) if str(exc).startswith(f.name) else f"{f.name}: {exc}"
            images.append({"name": name, "status": "error", "error": msg})
            continue
        case.results["summary"] = _image_summary(name, vol.array[0], case.lungs[0], case.lesions[0])
        cases.append((name, case))
        images.append({"name": name, "status": "ok", **case.results})
    failed = [r for r in images if r["status"] == "error"]
    folder_warnings = []
    others = ignored_files(Path(path))
    if others:
        folder_warnings.append(warning(
            "files_ignored", f"{len(others)} file(s) that are not PNG/JPG images were left out: "
            + ", ".join(others[:5]) + (", ..." if len(others) > 5 else ""), files=others))
    subfolders = sorted(d.name for d in Path(path).iterdir() if d.is_dir() and not d.name.startswith("."))
    if subfolders:  # only this folder's own images are read
        shown = ", ".join(subfolders[:5]) + (", ..." if len(subfolders) > 5 else "")
        folder_warnings.append(warning(
            "subfolders_not_searched",
            f"{len(subfolders)} sub-folder(s) of {Path(path).name} not searched ({shown}): only the images directly "
            "in the folder were segmented; give each sub-folder as its own input, or use --batch",
            subfolders=subfolders))
    if files and not cases:
        shown = "; ".join(r["error"] for r in failed[:3]) + ("; ..." if len(failed) > 3 else "")
        raise InputError(f"{Path(path).name}: none of the {len(files)} images could be segmented: {shown}")
    outputs = []
    with staging_dir(Path(outdir)) as tmp:
        for name, case in cases:
            for label, arr in (("lungs", case.lungs), ("lesions", case.lesions)):
                Image.fromarray(arr[0].astype(np.uint8)).save(tmp / f"{name}_{label}.png")
                outputs.append(f"{name}_{label}.png")
        with open(tmp / "summary.csv", "w", newline="", encoding="utf-8", errors="replace") as fh:
            w = csv.DictWriter(fh, fieldnames=IMAGE_SUMMARY_FIELDS, restval="")
            w.writeheader()
            w.writerows(r.get("summary", r) for r in images)
        method = cases[0][1].results.get("method", {}) if cases else {}
        results = {
            "schema_version": SCHEMA_VERSION, "pulmo_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "disclaimer": DISCLAIMER,
            "input": {"source": str(path), "kind": "image-dir", "images": len(files)},
            "conventions": CONVENTIONS, "labels": {"lungs": LUNG_LABELS, "lesions": LESION_LABELS},
            "method": {k: method.get(k) for k in ("lungs", "lesions", "source", "learned_model")},
            "images": images, "failed": len(failed), "warnings": folder_warnings,
            "outputs": outputs + ["summary.csv", "results.json"],
            "timings_s": {"total": round(time.perf_counter() - t0, 3)},
        }
        (tmp / "results.json").write_text(json.dumps(results, indent=2, default=_json_default), encoding="utf-8")
    return results


def analyze_path(path, outdir, options: AnalysisOptions | None = None, segment_only=False, progress=None) -> dict:
    options = options or AnalysisOptions()
    from pulmo.ct.io import input_kind

    check_output_location(path, outdir)
    if input_kind(Path(path)) == "image-dir":
        return analyze_image_folder(path, outdir, options, segment_only)
    timings: dict = {}
    stage = _Timer(timings, progress)
    with stage("load"):
        vol = load(path, options.load)
    case = compute(vol, options, segment_only, timings, progress)
    write_case(case, Path(outdir), options, segment_only, progress=progress)
    return case.results


def batch_items(root: Path) -> list[Path]:
    """The studies in a batch folder: each sub-folder, zip, volume file or 2D image."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: batch mode needs a folder of studies")
    items = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() or suffix_of(p) in VOLUME_SUFFIXES or suffix_of(p) in IMAGE_SUFFIXES or suffix_of(p) == ".zip":
            items.append(p)
    if not items:
        raise InputError(f"{root}: no studies found (sub-folders, zips, NIfTI/NRRD/MHA files or images)")
    return items


SUMMARY_FIELDS = ["case", "status", "error", "assessable", "right_lung_ml", "left_lung_ml", "percent_involved",
                  "ggo_ml", "consolidation_ml", "severity_score", "severity_kind", "pneumonia_flag", "warnings",
                  "seconds"]


def _summary_row(name, results=None, error=None, seconds=0.0) -> dict:
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


def analyze_batch(root, outroot, options: AnalysisOptions | None = None, segment_only=False, show_progress=None,
                  prefetch: bool = True) -> list[dict]:
    """Analyse every study under ``root`` into ``outroot/<name>/``; writes ``outroot/summary.csv``.

    Loading of the next study overlaps the computation of the current one (one background
    thread). A failing study is recorded in the summary and does not stop the batch.
    """
    from tqdm import tqdm

    options = options or AnalysisOptions()
    check_output_location(root, outroot, batch=True)
    items = batch_items(Path(root))
    outroot = Path(outroot)
    try:
        outroot.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{outroot}: cannot write the output there ({exc.strerror or exc})") from exc
    rows = []

    from pulmo.ct.io import input_kind

    def _load(p):
        t0 = time.perf_counter()
        try:
            if input_kind(p) == "image-dir":
                return "image-dir", None, 0.0  # analysed image by image below
            return load(p, options.load), None, time.perf_counter() - t0
        except PulmoError as exc:
            return None, str(exc), time.perf_counter() - t0

    bar = tqdm(total=len(items), desc="studies", unit="study", disable=show_progress is False or None)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_load, items[0])
        for i, item in enumerate(items):
            vol, err, t_load = pending.result()
            if prefetch and i + 1 < len(items):
                pending = pool.submit(_load, items[i + 1])
            t0 = time.perf_counter()
            name = item.name.split(".")[0] if item.is_file() else item.name
            results = None
            if err is None:
                try:
                    if isinstance(vol, str):  # a folder of 2D images
                        n_failed = analyze_image_folder(item, outroot / name, options, segment_only)["failed"]
                        if n_failed:
                            err = (f"{n_failed} of its images could not be segmented (the others were written; "
                                   f"reasons in {name}/summary.csv)")
                    else:
                        timings = {"load": round(t_load, 3)}
                        case = compute(vol, options, segment_only, timings)
                        write_case(case, outroot / name, options, segment_only)
                        results = case.results
                        del case  # free this study's maps before the next one is computed
                except PulmoError as exc:
                    err = str(exc)
            del vol
            rows.append(_summary_row(name, results, err, t_load + time.perf_counter() - t0))
            if not prefetch and i + 1 < len(items):
                pending = pool.submit(_load, items[i + 1])
            bar.update(1)
    bar.close()
    with open(outroot / "summary.csv", "w", newline="", encoding="utf-8", errors="replace") as fh:
        w = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        w.writerows(rows)
    return rows
