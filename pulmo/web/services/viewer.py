"""Slices for the viewer, read from the study's viewer files with memory maps (nothing is decoded
per request): Hounsfield units as little-endian int16 (window and level are applied in the
browser, on the real values) and the packed label byte (see
:data:`pulmo.web.services.analysis.LABEL_BITS`). Axial slices are rows (y, anterior to
posterior) by columns (x, patient right to left); coronal slices are rows (z, superior first)
by columns (x)."""

from __future__ import annotations

import json
import threading
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
from fastapi import HTTPException

from pulmo.web.models import Study
from pulmo.web.services.analysis import study_prefix

_MAPS: OrderedDict = OrderedDict()
_LOCK = threading.Lock()
_KEEP = 16
AXES = ("axial", "coronal")


def _array(path: Path) -> np.ndarray:
    key = (str(path), path.stat().st_mtime_ns)
    with _LOCK:
        arr = _MAPS.pop(key, None)
        if arr is None:
            arr = np.load(path, mmap_mode="r")
        _MAPS[key] = arr
        while len(_MAPS) > _KEEP:
            _MAPS.popitem(last=False)
    return arr


VIEWER_FILES = ("meta.json", "hu.npy", "labels.npy")


def files(storage, study: Study) -> Path:
    """The local folder holding the study's viewer files (with an object store: each file
    fetched into the local cache, or confirmed there, by :meth:`local_path`)."""
    prefix = f"{study_prefix(study)}/viewer"
    paths = [storage.local_path(f"{prefix}/{name}") for name in VIEWER_FILES] \
        if study.status in ("done", "queued", "running") else []
    if not paths or not all(p.is_file() for p in paths):
        raise HTTPException(404, "no images to show yet (is the analysis finished?)")
    return paths[0].parent


def meta(storage, study: Study) -> dict:
    return json.loads((files(storage, study) / "meta.json").read_text())


def slice_bytes(storage, study: Study, kind: str, axis: str, index: int) -> tuple[bytes, int, int]:
    """``(bytes, rows, columns)`` of one slice; ``kind`` "hu" or "labels"."""
    if kind not in ("hu", "labels") or axis not in AXES:
        raise HTTPException(404, "no such slice kind")
    arr = _array(files(storage, study) / f"{kind}.npy")
    nz, ny, nx = arr.shape
    n = nz if axis == "axial" else ny
    if not 0 <= index < n:
        raise HTTPException(404, f"slice {index} is outside 0..{n - 1}")
    sl = arr[index] if axis == "axial" else arr[::-1, index, :]
    data = np.ascontiguousarray(sl).astype("<i2" if kind == "hu" else np.uint8, copy=False).tobytes()
    return data, sl.shape[0], sl.shape[1]


#: Encoded slices kept in memory (bytes): many users scrolling one study share the work.
SLICE_CACHE_BYTES = 256 << 20
_SLICES: OrderedDict = OrderedDict()
_SLICES_SIZE = [0]


def slice_payload(storage, study: Study, kind: str, axis: str, index: int, gzip: bool) -> tuple[bytes, int, int]:
    """:func:`slice_bytes`, gzip-compressed when ``gzip`` (the browser accepts it), from a cache
    of recent slices keyed by the study's analysis: a slice is read and compressed once, not at
    every request."""
    version = str(study.updated_at)   # changes whenever the study does (a new analysis included)
    key = (study.id, version, kind, axis, int(index), gzip)
    with _LOCK:
        hit = _SLICES.pop(key, None)
        if hit is not None:
            _SLICES[key] = hit
            return hit
    data, rows, cols = slice_bytes(storage, study, kind, axis, index)
    if gzip:
        c = zlib.compressobj(1, zlib.DEFLATED, 31)   # gzip wrapper, fastest level (as the middleware)
        data = c.compress(data) + c.flush()
    out = (data, rows, cols)
    with _LOCK:
        if key not in _SLICES:
            _SLICES[key] = out
            _SLICES_SIZE[0] += len(data)
        while _SLICES_SIZE[0] > SLICE_CACHE_BYTES and _SLICES:
            _, (old, _, _) = _SLICES.popitem(last=False)
            _SLICES_SIZE[0] -= len(old)
    return out
