"""Run Pulmo's shipped lung + lesion segmentation network (onnxruntime + numpy only).

Usage::

    from pulmo.ct.models import load_segmenter
    seg = load_segmenter()                      # the shipped HU model (pulmo/ct/models/seg.onnx)
    lungs, lesions = seg.segment_slices(volume_hu, kind="hu")     # (N, H, W) each, uint8
    seg8 = load_segmenter(kind="8bit")          # the shipped 8-bit model (seg_8bit.onnx)
    lungs, lesions = seg8.segment_slices(images_uint8, kind="8bit")
    seg.metadata                                # version, input size, HU window, classes...

Labels: ``lungs`` 0 background, 1 the lung on the image's left (the patient's right
in the radiological view / the canonical LPS grid), 2 the other lung; ``lesions``
0 background, 1 ground-glass opacity, 2 consolidation.

Any failure to load or run the model raises :class:`pulmo.errors.ModelError` (the
pipeline catches it and falls back to the density method); bad input raises
:class:`pulmo.errors.InputError`. Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pulmo.errors import InputError, ModelError

MODEL_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = MODEL_DIR / "seg.onnx"             # HU volumes (seg-2d-1)
DEFAULT_MODEL_8BIT = MODEL_DIR / "seg_8bit.onnx"   # 8-bit slices, PNG / JPG (seg-2d-3)
LUNG_CLASSES = {0: "background", 1: "image-left lung (patient right)", 2: "image-right lung (patient left)"}
LESION_CLASSES = {0: "background", 1: "ground-glass opacity", 2: "consolidation"}
KINDS = ("8bit", "hu")
MIN_SIDE, MAX_SIDE = 32, 4096
LABEL_OUTPUTS = ("lungs", "lesions")
LOGITS_OUTPUT = "logits"   # optional float head output, for TTA: (N, 24, h/2, w/2) sub-pixel or (N, 6, h, w)
LESION_MARGIN = 2      # network pixels: lesions farther than this from the lung are dropped (as in the graph)
TTA_BATCH = 8          # slices per probability-averaging TTA batch (12 views each) ...
TTA_PIXELS = 1 << 21   # ... fewer for large slices: at most this many pixels per batch (~50 MB of sums)


@dataclass
class SegmenterInfo:
    """What the ONNX file says about itself (its ``metadata_props``)."""

    path: str
    version: str
    input_size: tuple[int, int]
    hu_window: tuple[float, float]
    lung_classes: dict = field(default_factory=lambda: dict(LUNG_CLASSES))
    lesion_classes: dict = field(default_factory=lambda: dict(LESION_CLASSES))
    quantization: str = "unknown"
    licence: str = ""
    tta_sizes: tuple[int, ...] = ()   # square input sizes test-time augmentation averages over; () = label votes
    minor_lesion_share: float = 0.0   # 2D images: a lesion class under this share of a slice's lesion is merged

    def as_dict(self) -> dict:
        return {"path": self.path, "version": self.version, "input_size": list(self.input_size),
                "hu_window": list(self.hu_window), "lung_classes": self.lung_classes,
                "lesion_classes": self.lesion_classes, "quantization": self.quantization, "licence": self.licence,
                "tta_sizes": list(self.tta_sizes), "minor_lesion_share": self.minor_lesion_share}


def default_threads(busy: int = 0) -> int:
    """onnxruntime threads: the CPUs this process may use, less ``busy`` (those other work of the
    same process keeps busy), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - busy)


def execution_providers(ort) -> list[str]:
    """onnxruntime's execution providers, best first: CUDA when the installed onnxruntime has it
    (the ``onnxruntime-gpu`` package on a machine with an NVIDIA GPU: a GPU worker), then the CPU."""
    available = set(ort.get_available_providers())
    return [p for p in ("CUDAExecutionProvider",) if p in available] + ["CPUExecutionProvider"]


class Segmenter:
    """The lung + lesion network, loaded once and applied to stacks of axial slices."""

    def __init__(self, path: str | os.PathLike | None = None, threads: int | None = None):
        self.path = Path(path) if path is not None else DEFAULT_MODEL
        if not self.path.is_file():
            raise ModelError(f"segmentation model not found: {self.path}"
                             + (" (the package was installed without its model files)" if path is None else ""))
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
            raise ModelError(f"onnxruntime is not installed, cannot run {self.path.name}") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or default_threads())
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=execution_providers(ort))
        except Exception as exc:  # noqa: BLE001 - any load failure is a model problem
            raise ModelError(f"{self.path.name}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        try:
            if meta.get("pulmo.task") != "lungs+lesions":
                raise KeyError("pulmo.task is not 'lungs+lesions'")
            h, w = (int(v) for v in meta["pulmo.input_size"].split(","))
            lo, hi = (float(v) for v in meta["pulmo.hu_window"].split(","))
            if not (h > 0 and w > 0 and hi > lo):
                raise ValueError("bad input size or window")
            outs = json.loads(meta.get("pulmo.outputs", "{}"))
            tta_sizes = tuple(int(v) for v in meta["pulmo.tta_sizes"].split(",")) if meta.get("pulmo.tta_sizes") else ()
            if any(not MIN_SIDE <= v <= 1024 for v in tta_sizes):
                raise ValueError(f"TTA sizes {tta_sizes} out of range")
            raw = meta.get("pulmo.minor_lesion_share", "0")
            try:
                minor = float(raw)
            except ValueError:
                minor = math.nan
            if not 0.0 <= minor < 0.5:
                raise ValueError(f"pulmo.minor_lesion_share {raw!r} is not a share in [0, 0.5)")
        except (KeyError, ValueError) as exc:
            raise ModelError(f"{self.path.name}: missing or invalid Pulmo metadata ({exc}); "
                             "not a Pulmo segmentation model") from exc
        names_in = [i.name for i in self.session.get_inputs()]
        names_out = [o.name for o in self.session.get_outputs()]
        if names_in != ["image"] or names_out not in (list(LABEL_OUTPUTS), [*LABEL_OUTPUTS, LOGITS_OUTPUT]):
            raise ModelError(f"{self.path.name}: unexpected graph signature {names_in} -> {names_out}")
        if names_out == list(LABEL_OUTPUTS):
            tta_sizes = ()  # no probabilities to average: TTA votes over labels
        self.info = SegmenterInfo(
            path=str(self.path), version=meta.get("pulmo.version", "unknown"), input_size=(h, w), hu_window=(lo, hi),
            lung_classes={int(k): v for k, v in outs.get("lungs", LUNG_CLASSES).items()},
            lesion_classes={int(k): v for k, v in outs.get("lesions", LESION_CLASSES).items()},
            quantization=meta.get("pulmo.quantization", "unknown"), licence=meta.get("pulmo.licence", ""),
            tta_sizes=tta_sizes, minor_lesion_share=minor if tta_sizes else 0.0)

    # ------------------------------------------------------------------ public API
    @property
    def metadata(self) -> dict:
        return self.info.as_dict()

    @property
    def version(self) -> str:
        return self.info.version

    def segment_slices(self, images, kind: str = "8bit", spacing=None, batch: int = 32, tta: bool = False):
        """Segment a stack of axial slices.

        ``images``: ``(N, H, W)`` (or one ``(H, W)`` slice) -- 8-bit grey levels 0..255
        (``kind="8bit"``) or Hounsfield units (``kind="hu"``; the fixed lung window of the
        model is applied). Slices of any size are resized to the network size and the
        labels are resized back (nearest), so outputs have the input's shape.
        ``spacing`` (optional ``(z, y, x)`` or ``(y, x)`` mm) is only sanity-checked:
        the network is 2D and works on the slice grid as given.

        ``tta=True`` (used for 2D images, not volumes) also segments the horizontally, vertically
        and doubly flipped slices. A network with a ``logits`` output and ``tta_sizes`` in its
        metadata (``seg_8bit.onnx``) is run on the four flips at each of those input sizes
        (12 passes for 224, 256, 288); the class probabilities (softmax of the logits) are
        averaged, resized bilinearly to the slice size, and each pixel takes the most probable
        class (lesions more than 2 network pixels from the lung are then dropped, as inside the
        graph); then, if the metadata sets ``pulmo.minor_lesion_share``, a lesion class that
        covers less than that share of a slice's lesion pixels is relabelled as the other class
        (:func:`merge_minor_lesion_class`). Other networks take a per-pixel majority vote of the
        four flipped label maps, whose counts are resized bilinearly to the slice size first, for
        smooth borders.

        Returns ``(lungs, lesions)``, uint8 arrays of the input's shape (see module doc).
        """
        arr = self._check(images, kind, spacing)
        squeeze = arr.ndim == 2
        if squeeze:
            arr = arr[None]
        n, H, W = arr.shape
        h, w = self.info.input_size
        lungs = np.empty((n, H, W), np.uint8)
        lesions = np.empty((n, H, W), np.uint8)
        yi = np.minimum((np.arange(H) * h) // H, h - 1)
        xi = np.minimum((np.arange(W) * w) // W, w - 1)
        if tta and self.info.tta_sizes:
            step = max(1, min(TTA_BATCH, TTA_PIXELS // (H * W)))
            for s in range(0, n, step):
                lungs[s:s + step], lesions[s:s + step] = self._tta_probabilities(arr[s:s + step], kind)
            return (lungs[0], lesions[0]) if squeeze else (lungs, lesions)
        for s in range(0, n, batch):
            x = self._prepare(arr[s:s + batch], kind)
            if tta:  # vote counts, resized smoothly (bilinear) to the slice size, then decided there
                lungs[s:s + batch], lesions[s:s + batch] = (_decide(_resize_counts(c, (H, W)))
                                                            for c in self._tta_counts(x))
                continue
            lu, le = self._run(x)
            if (H, W) == (h, w):
                lungs[s:s + batch], lesions[s:s + batch] = lu, le
            elif H % h == 0 and W % w == 0:
                fy, fx = H // h, W // w
                lungs[s:s + batch] = np.repeat(np.repeat(lu, fy, 1), fx, 2)
                lesions[s:s + batch] = np.repeat(np.repeat(le, fy, 1), fx, 2)
            else:
                lungs[s:s + batch] = lu[:, yi][:, :, xi]
                lesions[s:s + batch] = le[:, yi][:, :, xi]
        if squeeze:
            return lungs[0], lesions[0]
        return lungs, lesions

    # ------------------------------------------------------------------ internals
    def _run(self, x: np.ndarray, outputs=LABEL_OUTPUTS):
        try:
            return self.session.run(list(outputs), {"image": x})
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{self.path.name}: inference failed ({type(exc).__name__}: {exc})") from exc

    def _tta_counts(self, x: np.ndarray):
        """Votes of identity, h-flip, v-flip and both: per class, how many of the 4 views say so,
        as float32 ``(n, 3, h, w)`` for lungs and lesions (lung labels 1/2 swap under h-flips)."""
        n = len(x)
        views = np.concatenate([x, x[..., ::-1], x[..., ::-1, :], x[..., ::-1, ::-1]])
        lu, le = self._run(np.ascontiguousarray(views))
        swap = np.array([0, 2, 1], np.uint8)
        lus = [lu[:n], swap[lu[n:2 * n, :, ::-1]], lu[2 * n:3 * n, ::-1], swap[lu[3 * n:, ::-1, ::-1]]]
        les = [le[:n], le[n:2 * n, :, ::-1], le[2 * n:3 * n, ::-1], le[3 * n:, ::-1, ::-1]]
        return _counts(lus), _counts(les)

    def _tta_probabilities(self, chunk: np.ndarray, kind: str):
        """Labels of ``chunk`` (n, H, W) from the class probabilities averaged over 4 flips x
        ``tta_sizes``, each resized bilinearly to (H, W); lesions kept within the lung margin."""
        _, H, W = chunk.shape
        acc = self.tta_probability_sums(chunk, kind)
        lungs = acc[0].argmax(axis=1).astype(np.uint8)
        lesions = acc[1].argmax(axis=1).astype(np.uint8)
        from scipy import ndimage

        h, w = self.info.input_size
        reach = 2 * LESION_MARGIN * int(np.ceil(max(H / h, W / w))) + 1
        near = ndimage.maximum_filter(lungs > 0, size=(1, reach, reach))
        lesions[~near] = 0
        if self.info.minor_lesion_share > 0:
            lesions = merge_minor_lesion_class(lesions, self.info.minor_lesion_share)
        return lungs, lesions

    def tta_probability_sums(self, chunk: np.ndarray, kind: str = "8bit") -> list[np.ndarray]:
        """Class probabilities of ``chunk`` (n, H, W) -- 8-bit grey levels or HU as for
        :meth:`segment_slices` -- summed over the 4 flips x ``tta_sizes`` views, each resized
        bilinearly to (H, W): ``[lungs, lesions]``, float32 ``(n, 3, H, W)`` each (divide by
        ``4 * len(tta_sizes)`` for the mean). Needs a network with ``tta_sizes``."""
        if not self.info.tta_sizes:
            raise ModelError(f"{self.path.name} has no tta_sizes in its metadata (no probability output)")
        n, H, W = chunk.shape
        acc = [np.zeros((n, 3, H, W), np.float32), np.zeros((n, 3, H, W), np.float32)]
        swap = [0, 2, 1]  # lung labels 1/2 swap under horizontal flips
        for size in self.info.tta_sizes:
            x = self._prepare(chunk, kind, (size, size))
            views = np.concatenate([x, x[..., ::-1], x[..., ::-1, :], x[..., ::-1, ::-1]])
            for k, p in enumerate(class_probabilities(self._run(np.ascontiguousarray(views), (LOGITS_OUTPUT,))[0])):
                ch = swap if k == 0 else [0, 1, 2]
                mean = p[:n] + p[n:2 * n, ch, :, ::-1] + p[2 * n:3 * n, :, ::-1] + p[3 * n:, ch, ::-1, ::-1]
                acc[k] += _resize_counts(np.ascontiguousarray(mean, dtype=np.float32), (H, W))
        return acc

    def _check(self, images, kind, spacing) -> np.ndarray:
        if kind not in KINDS:
            raise InputError(f"kind must be one of {KINDS}, not {kind!r}")
        arr = np.asarray(images)
        if arr.ndim == 4 and arr.shape[-1] in (3, 4) or arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
            raise InputError(f"images of shape {arr.shape} look like colour images; give grey-level slices (N, H, W)")
        if arr.ndim not in (2, 3):
            raise InputError(f"expected slices of shape (N, H, W) or (H, W), got an array of shape {arr.shape}")
        if arr.size == 0:
            raise InputError("no slices given (empty array)")
        H, W = arr.shape[-2:]
        if min(H, W) < MIN_SIDE or max(H, W) > MAX_SIDE:
            raise InputError(f"slice size {H}x{W} out of range ({MIN_SIDE}..{MAX_SIDE} pixels per side)")
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise InputError(f"slices must be numeric grey levels, not {arr.dtype}")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise InputError("slices contain NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if kind == "8bit" and (lo < 0 or hi > 255):
            raise InputError(f"8-bit slices must lie in 0..255, got {lo:g}..{hi:g} "
                             "(a 16-bit image or HU data? for HU give kind='hu')")
        if kind == "hu":
            if lo >= 0 and hi <= 255:
                raise InputError(f"values {lo:g}..{hi:g} look like an 8-bit image, not Hounsfield units; "
                                 "use kind='8bit'")
            if lo < -4000 or hi > 40000:
                raise InputError(f"values {lo:g}..{hi:g} are not plausible Hounsfield units")
        if spacing is not None:
            sp = np.asarray(spacing, float).ravel()
            if sp.size not in (2, 3) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
                raise InputError(f"spacing must be 2 or 3 positive numbers in mm, got {spacing!r}")
        return arr

    def _prepare(self, chunk: np.ndarray, kind: str, size=None) -> np.ndarray:
        if kind == "hu":
            lo, hi = self.info.hu_window
        else:
            lo, hi = 0.0, 255.0
        x = resize_stack(chunk, size or self.info.input_size)
        x -= np.float32(lo)
        x *= np.float32(1.0 / (hi - lo))
        np.clip(x, 0.0, 1.0, out=x)
        return x[:, None]


def class_probabilities(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``logits`` output -> (lung, lesion) softmax probabilities, each ``(N, 3, H, W)``
    float32 on the input grid. ``(N, 24, h, w)``: class-major, then the 2x2 sub-pixel
    (``H = 2h``), as a pixel shuffle reads them; ``(N, 6, H, W)``: already on the input grid."""
    n, c, h, w = logits.shape
    if c == 24:
        logits = logits.reshape(n, 6, 2, 2, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, 6, 2 * h, 2 * w)
    elif c != 6:
        raise ModelError(f"logits output has {c} channels, expected 6 or 24")
    out = []
    for z in (logits[:, :3], logits[:, 3:]):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        out.append((e / e.sum(axis=1, keepdims=True)).astype(np.float32))
    return out[0], out[1]


def _counts(maps) -> np.ndarray:
    return np.stack([sum((m == k).astype(np.float32) for m in maps) for k in (0, 1, 2)], axis=1)


def _resize_counts(counts: np.ndarray, size) -> np.ndarray:
    """(n, 3, h, w) vote counts or probabilities -> (n, 3, H, W), bilinear (Pillow), so that
    label borders are placed between network pixels instead of on a blocky nearest-neighbour grid."""
    n, c, h, w = counts.shape
    H, W = size
    if (H, W) == (h, w):
        return counts
    from PIL import Image

    out = np.empty((n, c, H, W), np.float32)
    for i in range(n):
        for k in range(c):
            out[i, k] = np.asarray(Image.fromarray(counts[i, k], mode="F").resize((W, H), Image.BILINEAR))
    return out


def _decide(counts: np.ndarray) -> np.ndarray:
    """Per pixel: foreground when at least half of the votes say so, then the commoner of
    classes 1 and 2 among them (1 on ties)."""
    c0, c1, c2 = counts[:, 0], counts[:, 1], counts[:, 2]
    return np.where(c1 + c2 >= c0, np.where(c1 >= c2, 1, 2), 0).astype(np.uint8)


def merge_minor_lesion_class(lesions: np.ndarray, min_share: float) -> np.ndarray:
    """Per slice of ``lesions`` ((N, H, W) or (H, W); 1 ground glass, 2 consolidation): a class
    that covers less than ``min_share`` (a fraction, 0..0.5) of the slice's lesion pixels is
    relabelled as the other lesion class; the lesion extent (label > 0) never changes.

    Why: per-image Dice scores a slice without consolidation 0 as soon as a few pixels are
    called consolidation, and the network leaves such specks (16 to 1135 pixels, 0.2-5 % of the
    lesion) on 6 of the 11 MedSeg training slices without consolidation. ``lesions.md`` has the
    measurements and how ``seg_8bit.onnx``'s 0.02 was chosen."""
    out = np.array(lesions, dtype=np.uint8, copy=True)
    flat = out.reshape((-1,) + out.shape[-2:])
    for sl in flat:  # views into ``out``
        n1, n2 = int((sl == 1).sum()), int((sl == 2).sum())
        total = n1 + n2
        if total == 0:
            continue
        if 0 < n2 < min_share * total:
            sl[sl == 2] = 1
        elif 0 < n1 < min_share * total:
            sl[sl == 1] = 2
    return out


def resize_stack(chunk: np.ndarray, size) -> np.ndarray:
    """(n, H, W) -> (n, h, w) float32: block mean for integer factors, else bilinear (Pillow,
    which filters like an area average when shrinking) -- as in training."""
    h, w = size
    n, H, W = chunk.shape
    if (H, W) == (h, w):
        return chunk.astype(np.float32, copy=True)
    if H % h == 0 and W % w == 0:
        fy, fx = H // h, W // w
        if (fy, fx) == (2, 2):  # the common 512 -> 256 case: four strided views, no temporaries per pixel
            out = chunk[:, 0::2, 0::2].astype(np.float32)
            out += chunk[:, 1::2, 0::2]
            out += chunk[:, 0::2, 1::2]
            out += chunk[:, 1::2, 1::2]
            out *= np.float32(0.25)
            return out
        return chunk.reshape(n, h, fy, w, fx).mean(axis=(2, 4), dtype=np.float32)
    from PIL import Image

    out = np.empty((n, h, w), np.float32)
    for i in range(n):
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(chunk[i], dtype=np.float32), mode="F")
                            .resize((w, h), Image.BILINEAR))
    return out


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()  # load_segmenter may be called from several threads (a server)


def default_model(kind: str = "hu") -> Path:
    """The shipped network for ``kind``: ``seg.onnx`` for HU volumes, ``seg_8bit.onnx`` for 8-bit
    slices (PNG/JPG). Why two: docs/models.md ("Two shipped networks")."""
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, not {kind!r}")
    return DEFAULT_MODEL if kind == "hu" else DEFAULT_MODEL_8BIT


def load_segmenter(path: str | os.PathLike | None = None, threads: int | None = None,
                   kind: str = "hu") -> Segmenter:
    """The segmenter for ``path`` (default: the shipped network for ``kind``, see
    :func:`default_model`), cached per (path, threads, file time); at most two networks stay loaded.
    Safe to call from several threads; a :class:`Segmenter` is read-only once loaded and its
    onnxruntime session may run several batches at once.

    Raises :class:`pulmo.errors.ModelError` when the file is missing, corrupt or not a
    Pulmo lung + lesion model."""
    p = Path(path).resolve() if path is not None else default_model(kind)
    key = (str(p), threads, p.stat().st_mtime_ns if p.is_file() else None)
    with _CACHE_LOCK:  # one load per key even when threads ask at once (a load takes ~0.1 s)
        seg = _CACHE.pop(key, None)
        if seg is None:
            seg = Segmenter(p, threads=threads)
            while len(_CACHE) >= 2:  # least recently used first
                _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = seg  # (re)inserted last: the most recently used
    return seg
