"""Plug-in interface for learned segmentation models (ONNX, run with onnxruntime).

A model is one ``.onnx`` file whose metadata (``metadata_props``) describes it:

=====================  ==========================================================
key                    value
=====================  ==========================================================
``pulmo.task``         ``lungs`` | ``lobes`` | ``lesions``
``pulmo.labels``       JSON object: output class index -> name. Class indices must
                       follow Pulmo's label conventions (lungs 1 right / 2 left;
                       lobes 1 RUL, 2 RML, 3 RLL, 4 LUL, 5 LLL; lesions 1 GGO,
                       2 consolidation); class 0 is background.
``pulmo.input``        ``axial2d``: input ``(N, 1, H, W)`` float32, one axial slice
                       per item, rows anterior->posterior, columns patient
                       right->left (the canonical LPS grid, radiological view).
``pulmo.input_size``   ``H,W`` the slices are resized to (bilinear); outputs are
                       resized back (nearest).
``pulmo.intensity``    ``hu`` (a CT in Hounsfield units, windowed by
                       ``pulmo.hu_window`` = ``lo,hi`` then scaled to 0..1) or
                       ``uint8`` (8-bit images, scaled to 0..1).
``pulmo.version``      free text (model version, shown in results.json).
=====================  ==========================================================

The output is ``(N, C, H, W)`` scores; the label is the arg-max over C.

Where models are found: an explicit path (``AnalysisOptions.lung_model`` etc.),
else :func:`default_model_paths`: ``<models_dir>/<task>.onnx`` when a folder is
given, then the packaged folder ``pulmo/ct/models/`` when it holds ``*.onnx``
files (``AnalysisOptions.plugin_models=False`` turns the search off; the command
line maps ``$PULMO_CT_MODELS`` onto these). Nothing is ever downloaded. When no model is found the pipeline uses the classical method
(lungs, lesions, zones instead of lobes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from pulmo.errors import ModelError

TASKS = ("lungs", "lobes", "lesions")


class OnnxSegmentationModel:
    """A learned per-slice segmentation model loaded from an ONNX file with Pulmo metadata."""

    def __init__(self, path: str | os.PathLike, expected_task: str | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        try:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 2
            from pulmo.ct.models.runtime import execution_providers

            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=execution_providers(ort))
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{self.path.name}: not a loadable ONNX model ({exc})") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        self.meta = dict(meta)
        try:
            self.task = meta["pulmo.task"]
            self.labels = {int(k): v for k, v in json.loads(meta["pulmo.labels"]).items()}
            self.input_kind = meta.get("pulmo.input", "axial2d")
            h, w = (int(v) for v in meta["pulmo.input_size"].split(","))
            self.input_size = (h, w)
            self.intensity = meta.get("pulmo.intensity", "hu")
            lo, hi = (float(v) for v in meta.get("pulmo.hu_window", "-1024,600").split(","))
            self.hu_window = (lo, hi)
        except (KeyError, ValueError) as exc:
            raise ModelError(f"{self.path.name}: missing or invalid Pulmo metadata ({exc}); see pulmo.ct.segment.models") from exc
        if self.task not in TASKS:
            raise ModelError(f"{self.path.name}: unknown task {self.task!r}")
        if expected_task and self.task != expected_task:
            raise ModelError(f"{self.path.name}: a {self.task} model was given where a {expected_task} model is needed")
        if self.input_kind != "axial2d":
            raise ModelError(f"{self.path.name}: input kind {self.input_kind!r} not supported (only axial2d)")
        self.version = meta.get("pulmo.version", "unknown")
        self.input_name = self.session.get_inputs()[0].name

    def describe(self) -> dict:
        return {"path": str(self.path), "task": self.task, "version": self.version, "labels": self.labels}

    def _normalise(self, arr: np.ndarray) -> np.ndarray:
        if self.intensity == "uint8":
            return arr.astype(np.float32) / 255.0
        lo, hi = self.hu_window
        return ((np.clip(arr, lo, hi) - lo) / (hi - lo)).astype(np.float32)

    def predict(self, volume: np.ndarray, batch: int = 16) -> np.ndarray:
        """Labels (uint8, same shape as ``volume`` (z, y, x)) for a canonical-grid volume."""
        nz, ny, nx = volume.shape
        h, w = self.input_size
        out = np.zeros(volume.shape, np.uint8)
        zoom_in = (h / ny, w / nx)
        for start in range(0, nz, batch):
            chunk = volume[start:start + batch]
            x = np.stack([ndi.zoom(self._normalise(s), zoom_in, order=1) for s in chunk])[:, None]
            x = x[:, :, :h, :w]
            if x.shape[2:] != (h, w):
                x = np.pad(x, ((0, 0), (0, 0), (0, h - x.shape[2]), (0, w - x.shape[3])), mode="edge")
            try:
                scores = self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]
            except Exception as exc:  # noqa: BLE001
                raise ModelError(f"{self.path.name}: inference failed ({exc})") from exc
            if scores.ndim != 4 or scores.shape[2:] != (h, w):
                raise ModelError(f"{self.path.name}: output shape {scores.shape}, expected (N, C, {h}, {w})")
            lab = np.argmax(scores, axis=1).astype(np.uint8)
            # back to the slice size, nearest neighbour (index mapping)
            yi = np.minimum((np.arange(ny) * h / ny).astype(int), h - 1)
            xi = np.minimum((np.arange(nx) * w / nx).astype(int), w - 1)
            out[start:start + len(chunk)] = lab[:, yi][:, :, xi]
        return out


PACKAGED_DIR = Path(__file__).resolve().parents[1] / "models"  # pulmo/ct/models/ (shipped models, if any)


def model_search_dirs(models_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for ``<task>.onnx``, in order: ``models_dir`` (when given), then the
    packaged folder ``pulmo/ct/models/`` when it contains ``*.onnx`` files."""
    dirs = [Path(models_dir)] if models_dir else []
    if PACKAGED_DIR.is_dir() and any(PACKAGED_DIR.glob("*.onnx")):
        dirs.append(PACKAGED_DIR)
    return dirs


def default_model_paths(models_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The default model file per task found in :func:`model_search_dirs` (first folder wins):
    ``<task>.onnx``, else the first ``<task>*.onnx`` by name (e.g. ``lungs-v2.onnx``). Only
    paths are returned; the files are opened (and their metadata checked) by :func:`find_model`."""
    found: dict[str, Path] = {}
    for root in model_search_dirs(models_dir):
        for task in TASKS:
            if task in found:
                continue
            exact = root / f"{task}.onnx"
            cands = [exact] if exact.is_file() else sorted(p for p in root.glob(f"{task}*.onnx") if p.is_file())
            if cands:
                found[task] = cands[0]
    return found


def find_model(task: str, explicit: str | os.PathLike | None = None, search: bool = True,
               models_dir: str | os.PathLike | None = None) -> OnnxSegmentationModel | None:
    """The model for ``task``: ``explicit`` if given, else (when ``search``) the default one in
    ``models_dir`` or the packaged folder (see :func:`default_model_paths`), else None (classical
    method)."""
    if explicit:
        return OnnxSegmentationModel(explicit, expected_task=task)
    path = default_model_paths(models_dir).get(task) if search else None
    return OnnxSegmentationModel(path, expected_task=task) if path is not None else None


def _explicit(options) -> dict:
    return {"lungs": options.lung_model, "lobes": options.lobe_model, "lesions": options.lesion_model}


def plugin_model(task: str, options) -> OnnxSegmentationModel | None:
    """The plug-in model for ``task`` that :class:`pulmo.ct.options.AnalysisOptions` select."""
    return find_model(task, _explicit(options)[task], search=options.plugin_models, models_dir=options.models_dir)


def missing_plugin_models(options, tasks=("lungs", "lesions")) -> list[str]:
    """The tasks among ``tasks`` for which the options select no plug-in model."""
    defaults = default_model_paths(options.models_dir) if options.plugin_models else {}
    return [t for t in tasks if not _explicit(options)[t] and t not in defaults]


# ----------------------------------------------------------------------------- the shipped model
def load_shipped_segmenter(explicit: str | os.PathLike | None = None, threads: int | None = None,
                           kind: str = "hu", enabled: bool = True):
    """``(segmenter, None)`` for Pulmo's shipped lung + lesion network for ``kind`` ("hu": volumes in
    Hounsfield units, ``seg.onnx``; "8bit": 8-bit slices, ``seg_8bit.onnx``; see :mod:`pulmo.ct.models`)
    or the file ``explicit``; ``(None, None)`` when not ``enabled``; ``(None, reason)`` when it cannot
    be loaded (``reason`` says why; the caller falls back to the density method and reports it)."""
    if not enabled:
        return None, None
    try:
        from pulmo.ct.models import load_segmenter

        return load_segmenter(explicit or None, threads=threads, kind=kind), None
    except ImportError as exc:
        return None, f"the model runtime is not available ({exc})"
    except ModelError as exc:
        return None, str(exc)


def segmenter_description(seg) -> dict:
    """What results.json records about the shipped model that was used."""
    meta = seg.metadata
    return {"file": Path(meta.get("path", "")).name, "version": meta.get("version", "unknown"),
            "quantization": meta.get("quantization", "unknown"), "input_size": meta.get("input_size"),
            "hu_window": meta.get("hu_window")}
