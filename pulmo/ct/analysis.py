"""Chest-CT analysis in memory: :func:`analyze` reads a study, segments lungs, regions and
lesions, quantifies them and returns a :class:`CTAnalysis`. Nothing is written to disk
(:func:`pulmo.ct.outputs.write_outputs` does that).

Masks are ``uint8`` arrays on the canonical LPS grid of the input, indexed ``(z, y, x)``
(see :mod:`pulmo.ct`): for an axis-aligned input the very voxels of the input, permuted and
flipped into that order; :meth:`CTAnalysis.native_mask` gives them in the input's own grid.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pulmo import DISCLAIMER, __version__
from pulmo.ct import LESION_LABELS, LOBE_LABELS, LUNG_LABELS, SCHEMA_VERSION, ZONE_LABELS
from pulmo.ct.io import ImageFolder, read
from pulmo.ct.io.files import load_image, volume_from_image
from pulmo.ct.models.runtime import default_threads
from pulmo.ct.options import AnalysisOptions
from pulmo.ct.quantify import qualify_flag, quality_warnings, quantify
from pulmo.ct.segment.lesions import segment_lesions
from pulmo.ct.segment.lobe_tool import ExternalLobeTool
from pulmo.ct.segment.lungs import add_learned_lesional_lung, segment_lungs
from pulmo.ct.segment.nodules import find_nodules
from pulmo.ct.segment.partial_volume import remove_partial_volume
from pulmo.ct.segment.models import (load_shipped_segmenter, missing_plugin_models, plugin_model,
                                     segmenter_description)
from pulmo.ct.segment.regions import restrict_lobes, zones
from pulmo.ct.volume import CTVolume, warning
from pulmo.errors import InputError, ModelError

ProgressCallback = Callable[[str, bool], None]
"""``progress(stage, done)``: called with ``done=False`` when a stage starts and ``True`` when it
ends. Stages of :func:`analyze`: ``load``, ``lungs``, ``lesions``, ``regions``, ``quantify``."""

CONVENTIONS = {
    "physical": "LPS (DICOM/ITK): +x patient left, +y posterior, +z superior, mm",
    "arrays": "internal arrays (z, y, x): z inferior->superior, y anterior->posterior, x patient right->left",
    "nifti_outputs": "label maps on the input's grid (DICOM: the slice stack sorted by position; "
                     "resampled uniform grid when slices were missing, uneven or tilted)",
}
RESULTS_FILE = "results.json"
NO_2D_MODEL = ("this is an 8-bit image, not a CT in Hounsfield units: HU thresholds mean nothing here, and the "
               "2D path needs learned lung and lesion models (the shipped pulmo/ct/models/seg_8bit.onnx, or plug-in "
               "lung and lesion models)")


# ----------------------------------------------------------------------------- results
def results_header(input_info: dict, labels: dict, created: str) -> dict:
    """The first keys of every ``results.json``."""
    return {"schema_version": SCHEMA_VERSION, "pulmo_version": __version__, "created": created,
            "disclaimer": DISCLAIMER, "input": input_info, "conventions": CONVENTIONS, "labels": labels}


def json_ready(obj):
    """``obj`` as JSON reads it back: string keys, lists for tuples and arrays, plain numbers
    (a deep copy: changing it leaves ``obj`` alone)."""
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class CTAnalysis:
    """The analysis of one CT volume (or one 2D image).

    ``lungs`` (0 background, 1 right, 2 left), ``lesions`` (0, 1 ground-glass opacity,
    2 consolidation; None only when no lesion method ran) and ``regions`` (zones 1-6 or lobes
    1-5, see ``region_kind``): uint8 ``(z, y, x)`` on the canonical grid of ``volume``.
    ``quantification``: volumes in mL, percent involved, severity, pneumonia flag (None for
    masks only). ``warnings``: ``{"code", "message", ...}`` entries. ``timings``: seconds per
    stage. ``outputs``: the files :func:`pulmo.ct.write_outputs` writes for it.
    """

    volume: CTVolume
    lungs: np.ndarray
    lesions: np.ndarray | None
    regions: np.ndarray | None
    region_kind: str
    method: dict
    warnings: list[dict]
    assessable: bool
    quantification: dict | None
    outputs: list[str]
    timings: dict
    created: str
    nodule_mask: np.ndarray | None = None  # uint8: nodule n of quantification["nodules"] is value n

    @property
    def nodules(self) -> list[dict]:
        """Nodules and masses found (reported apart from pneumonia): size, position, region."""
        return (self.quantification or {}).get("nodules", [])

    @property
    def input(self) -> dict:
        vol = self.volume
        return {
            "source": vol.source, "kind": vol.kind, "is_hu": vol.is_hu,
            "shape_zyx": list(vol.shape), "spacing_zyx_mm": [round(float(s), 4) for s in vol.spacing],
            "origin_lps_mm": [round(float(o), 3) for o in vol.origin],
            **{k: v for k, v in vol.meta.items() if k != "other_series"},
            "other_series": vol.meta.get("other_series", []),
        }

    @property
    def labels(self) -> dict:
        return {"lungs": LUNG_LABELS, "lesions": LESION_LABELS,
                "regions": LOBE_LABELS if self.region_kind == "lobes" else ZONE_LABELS}

    @property
    def pneumonia_flag(self) -> bool | str | None:
        """True, False, "indeterminate", or None (masks only, or not assessable)."""
        return (self.quantification or {}).get("pneumonia", {}).get("flag")

    @property
    def percent_involved(self) -> float | None:
        """Lesion volume as a percentage of both lungs' volume."""
        return (self.quantification or {}).get("lungs", {}).get("total", {}).get("percent_involved")

    @property
    def severity(self) -> dict | None:
        """``{"name", "kind", "value", "max", ...}`` (value None when not assessable)."""
        return (self.quantification or {}).get("severity")

    def native_mask(self, name: str) -> np.ndarray:
        """``lungs``, ``lesions``, ``regions`` or ``nodules`` as an array on the input's own grid (the
        order of SimpleITK's array view of the input: (k, j, i) of its file or DICOM slice stack)."""
        arr = self.nodule_mask if name == "nodules" else getattr(self, name)
        if arr is None:
            raise ValueError(f"this analysis has no {name} mask")
        return sitk.GetArrayFromImage(self.volume.to_native(arr.astype(np.uint8, copy=False)))

    def to_dict(self, files: bool = True) -> dict:
        """Exactly the content of ``results.json``, as JSON reads it back (string keys; a copy:
        changing it leaves the analysis alone).
        ``files=False`` leaves out ``outputs`` and ``timings_s`` (an image inside a folder)."""
        d = results_header(self.input, self.labels, self.created)
        d["regions"] = {"kind": self.region_kind}
        d["method"] = self.method
        d["assessable"] = self.assessable
        d["warnings"] = self.warnings
        if self.quantification is not None:
            d["quantification"] = self.quantification
        if files:
            d["outputs"] = self.outputs
            d["timings_s"] = self.timings
        return json_ready(d)


@dataclass
class ImageResult:
    """One image of an :class:`ImageFolderAnalysis`: its analysis, or why it was refused."""

    name: str
    analysis: CTAnalysis | None = None
    error: str | None = None
    summary: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.analysis is not None

    def to_dict(self) -> dict:
        if not self.ok:
            return {"name": self.name, "status": "error", "error": self.error}
        return {"name": self.name, "status": "ok", **self.analysis.to_dict(files=False), "summary": dict(self.summary)}


IMAGE_SUMMARY_FIELDS = ["name", "status", "width", "height", "lung_pixels", "ggo_pixels", "consolidation_pixels",
                        "percent_involved", "warning", "error"]


@dataclass
class ImageFolderAnalysis:
    """A folder of 2D images analysed image by image (see :func:`analyze`)."""

    folder: ImageFolder
    images: list[ImageResult]
    warnings: list[dict]
    method: dict
    outputs: list[str]
    timings: dict
    created: str

    @property
    def failed(self) -> list[ImageResult]:
        return [r for r in self.images if not r.ok]

    def summary_rows(self) -> list[dict]:
        """One row per image for ``summary.csv`` (:data:`IMAGE_SUMMARY_FIELDS`)."""
        return [dict(r.summary) if r.ok else {"name": r.name, "status": "error", "error": r.error}
                for r in self.images]

    def to_dict(self) -> dict:
        d = results_header({"source": str(self.folder.path), "kind": "image-dir", "images": len(self.folder.files)},
                           {"lungs": LUNG_LABELS, "lesions": LESION_LABELS}, self.created)
        d.update(method=self.method, images=[r.to_dict() for r in self.images], failed=len(self.failed),
                 warnings=self.warnings, outputs=self.outputs, timings_s=self.timings)
        return json_ready(d)


# ----------------------------------------------------------------------------- computing
class StageTimer:
    """Times each stage into ``timings`` and reports it to ``progress``."""

    def __init__(self, timings: dict, progress: ProgressCallback | None = None):
        self.timings, self.progress = timings, progress

    @contextmanager
    def __call__(self, name: str):
        if self.progress is not None:
            self.progress(name, False)
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)
        if self.progress is not None:
            self.progress(name, True)


def lobe_tool(options: AnalysisOptions) -> ExternalLobeTool | None:
    """The external lobe program the options name (None: not configured)."""
    command = (options.lobe_tool or "").strip()
    if not command or command.lower() == "none":
        return None
    return ExternalLobeTool(command, options.lobe_tool_labels or "lungmask")


def _missing_uids(headers) -> list[str]:
    need = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
    return [k for k in need if not all(str(h.get(k, "") or "") for h in headers)]


def planned_outputs(vol: CTVolume, options: AnalysisOptions, segment_only: bool, quantified: bool,
                    dicom_ok: bool, complete: bool = True, nodules: bool = False) -> list[str]:
    """The files :func:`pulmo.ct.write_outputs` writes for this analysis, in order. A scan that
    does not cover the lungs from apex to base (``complete`` False) gets no coronal image."""
    if vol.kind == "image":
        stem = Path(vol.source).stem
        return [f"{stem}_lungs.png", f"{stem}_lesions.png", RESULTS_FILE]
    files = ["lungs.nii.gz", "lesions.nii.gz", "regions.nii.gz"] + (["nodules.nii.gz"] if nodules else [])
    if not segment_only:
        if options.write_dicom and vol.dicom is not None and dicom_ok:
            files += (["seg.dcm"] + (["sr_measurements.dcm"] if quantified else []) + ["sc_axial.dcm"]
                      + (["sc_coronal.dcm"] if complete else []))
        if options.write_report:
            files.append("report.html")
    return files + [RESULTS_FILE]


def _analyze_volume(vol: CTVolume, options: AnalysisOptions, timings: dict, progress=None,
                    created: str | None = None) -> CTAnalysis:
    """Segment and (unless ``options.segment_only``) quantify a loaded volume."""
    segment_only = options.segment_only
    stage = StageTimer(timings, progress)
    methods = {}
    sources = {}
    extra_warnings = []
    learned = learned_lungs = learned_lesions = None
    kind = "hu" if vol.is_hu else "8bit"
    with stage("lungs"):
        lung_model = plugin_model("lungs", options)
        lesion_model = plugin_model("lesions", options)
        seg = reason = None
        classical = lung_model is None and vol.is_hu
        pending = pool = None
        if lung_model is None or lesion_model is None:
            # beside the classical lung mask (one busy core), the network gets the other cores
            threads = options.threads or (default_threads(busy=1) if classical else None)
            seg, reason = load_shipped_segmenter(options.seg_model, threads=threads, kind=kind,
                                                 enabled=options.shipped_network)
            if seg is not None:
                def run():
                    return seg.segment_slices(vol.array, kind=kind, tta=vol.kind == "image")

                if classical:  # the network runs in onnxruntime (GIL released) beside the classical lung mask
                    pool = ThreadPoolExecutor(max_workers=1)
                    pending = pool.submit(run)
        if classical:
            try:
                res = segment_lungs(vol.array, vol.spacing, options.lungs)
            finally:
                if pool is not None:
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
                raise InputError(f"{NO_2D_MODEL}; the shipped model could not be loaded: {reason}",
                                 code="no_2d_model")
            extra_warnings.append(warning(
                "learned_models_unavailable",
                f"learned models could not be loaded: {reason}; density analysis used"))
        if seg is not None:
            learned = segmenter_description(seg)
        if not vol.is_hu and lung_model is None and seg is None:
            raise InputError(NO_2D_MODEL, code="no_2d_model")
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
            raise InputError("8-bit images need a learned lesion model (none installed)", code="no_2d_model")
        nodules, nodule_mask = [], None
        if vol.is_hu and vol.shape[0] >= 3:
            removed = remove_partial_volume(lungs, lesions, vol.array, vol.spacing)
            info = {**info, "partial_volume_removed_ml": {
                k.replace("_voxels", ""): round(v * vol.voxel_volume_ml, 2) for k, v in removed.items()}}
            nodules, nodule_mask = find_nodules(lungs, lesions, vol.array, vol.spacing, vol.origin)
            if nodules:
                lesions[nodule_mask > 0] = 0
            methods["lesions"] += ("; partial volume at the diaphragm domes and lung surfaces removed; round solid "
                                   "focal lesions reported as nodules, not as pneumonia")
    if not lungs.any():
        raise InputError(f"{Path(vol.source).name}: no lungs found in this image; is it a chest CT?")
    regions = None
    region_kind = "zones"
    with stage("regions"):
        lobe_model = plugin_model("lobes", options) if vol.is_hu else None
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
    order = [k for k in ("lungs", "regions", "lesions") if k in methods]
    method = {**{k: methods[k] for k in order}, "details": info,
              "summary": "; ".join(f"{k}: {methods[k]}" for k in order), "source": sources, "learned_model": learned}
    assessable, q = True, None
    coverage = {"complete": True, "missing": []}
    warnings_ = list(vol.warnings) + extra_warnings
    if not segment_only:
        with stage("quantify"):
            lesion_source = sources.get("lesions", "learned")
            if vol.is_hu:
                warns, assessable, coverage = quality_warnings(vol, lungs, few, lesion_source)
            else:  # a 2D image: one slice, never the whole lungs
                warns, coverage = [], {"complete": False, "missing": ["all but one slice of the lungs"]}
            q = quantify(vol.array, lungs, lesions, regions, region_kind, vol.spacing, options.score,
                         coverage_complete=coverage["complete"], lesion_source=lesion_source,
                         slices_only=few or not vol.is_hu)
            q["coverage"] = coverage
            q["nodules"] = [_with_region(n, regions, region_kind) for n in nodules]
            if not assessable:
                q["severity"]["value"] = None
                q["pneumonia"]["flag"] = None
            else:
                qualify_flag(q, warns, density_based=lesion_source == "density")
            warnings_ += warns
    dicom_ok = True
    if not segment_only and options.write_dicom and vol.dicom is not None and vol.kind != "image":
        missing = _missing_uids(vol.dicom.headers)
        if missing:
            dicom_ok = False
            warnings_.append(warning("dicom_outputs_skipped", "DICOM SEG/SR/SC were not written: the source images "
                                     "lack " + ", ".join(missing) + ", which the results must reference"))
    outputs = planned_outputs(vol, options, segment_only, q is not None, dicom_ok, coverage["complete"],
                              nodules=nodule_mask is not None)
    return CTAnalysis(vol, lungs, lesions, regions, region_kind, method, warnings_, assessable, q, outputs,
                      timings, created or _now(), nodule_mask)


def _with_region(nodule, regions: np.ndarray, region_kind: str) -> dict:
    """A nodule as results.json lists it, with the lobe or zone at its centre."""
    names = LOBE_LABELS if region_kind == "lobes" else ZONE_LABELS
    label = int(regions[nodule.centre_index_zyx])
    return {**nodule.to_dict(), "region": names.get(label)}


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


def _analyze_image_folder(folder: ImageFolder, options: AnalysisOptions, progress=None) -> ImageFolderAnalysis:
    """Each image of the folder segmented on its own with the learned models (by default the
    shipped 8-bit network with test-time augmentation, or the plug-in models). An image that
    cannot be segmented (unreadable, colour, 16-bit, no lung found, ...) is kept with the reason;
    refused as a whole (InputError) when no learned model is available or no image succeeds."""
    t0 = time.perf_counter()
    created = _now()
    if missing_plugin_models(options):
        seg, reason = load_shipped_segmenter(options.seg_model, kind="8bit", enabled=options.shipped_network)
        if seg is None:
            raise InputError(f"{folder.path.name}: a folder of 2D images; " + NO_2D_MODEL
                             + (f"; the shipped model could not be loaded: {reason}" if reason else ""),
                             code="no_2d_model")
    images = []
    for f, name in zip(folder.files, folder.names):
        if progress is not None:
            progress(name, False)
        try:
            vol = load_image(f, options.load)
            analysis = _analyze_volume(vol, options, {}, created=created)
        except InputError as exc:  # this image only: the others are still segmented
            msg = str(exc) if str(exc).startswith(f.name) else f"{f.name}: {exc}"
            images.append(ImageResult(name, error=msg))
        else:
            summary = _image_summary(name, vol.array[0], analysis.lungs[0], analysis.lesions[0])
            images.append(ImageResult(name, analysis, summary=summary))
        if progress is not None:
            progress(name, True)
    warnings_ = []
    if folder.ignored:
        others = list(folder.ignored)
        warnings_.append(warning(
            "files_ignored", f"{len(others)} file(s) that are not PNG/JPG images were left out: "
            + ", ".join(others[:5]) + (", ..." if len(others) > 5 else ""), files=others))
    if folder.subfolders:  # only this folder's own images are read
        subs = list(folder.subfolders)
        shown = ", ".join(subs[:5]) + (", ..." if len(subs) > 5 else "")
        warnings_.append(warning(
            "subfolders_not_searched",
            f"{len(subs)} sub-folder(s) of {folder.path.name} not searched ({shown}): only the images directly "
            "in the folder were segmented; give each sub-folder as its own input", subfolders=subs))
    done = [r for r in images if r.ok]
    if folder.files and not done:
        failed = [r.error for r in images]
        shown = "; ".join(failed[:3]) + ("; ..." if len(failed) > 3 else "")
        raise InputError(f"{folder.path.name}: none of the {len(folder.files)} images could be segmented: {shown}")
    method = done[0].analysis.method if done else {}
    outputs = [f"{r.name}_{label}.png" for r in done for label in ("lungs", "lesions")] + ["summary.csv", RESULTS_FILE]
    return ImageFolderAnalysis(folder, images, warnings_,
                               {k: method.get(k) for k in ("lungs", "lesions", "source", "learned_model")},
                               outputs, {"total": round(time.perf_counter() - t0, 3)}, created)


def analyze(source, options: AnalysisOptions | None = None,
            progress: ProgressCallback | None = None) -> CTAnalysis | ImageFolderAnalysis:
    """Analyse one chest CT in memory; nothing is written to disk.

    ``source``: a path (DICOM folder, zip or file; NIfTI, NRRD, MHA; a 2D PNG/JPG image, or a
    folder of them), a :class:`pulmo.ct.volume.CTVolume` already loaded (:func:`pulmo.ct.io.read`),
    a SimpleITK image in Hounsfield units, or a :class:`pulmo.ct.io.ImageFolder`.
    Returns a :class:`CTAnalysis`, or an :class:`ImageFolderAnalysis` for a folder of 2D images.
    Bad input raises :class:`pulmo.errors.InputError` with a readable message. Safe to call from
    several threads at once.
    """
    options = options or AnalysisOptions()
    timings: dict = {}
    if isinstance(source, sitk.Image):
        source = volume_from_image(source)
    elif not isinstance(source, (CTVolume, ImageFolder)):
        with StageTimer(timings, progress)("load"):
            source = read(source, options.load)
    if isinstance(source, ImageFolder):
        return _analyze_image_folder(source, options, progress)
    return _analyze_volume(source, options, timings, progress)
