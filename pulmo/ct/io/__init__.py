"""Load chest CT from a DICOM folder or zip, NIfTI, NRRD, MHA, or 2D PNG/JPG images.

All loaders return a :class:`pulmo.ct.volume.CTVolume` on the canonical LPS
grid (array (z, y, x), z toward superior, x toward the patient's left) in
Hounsfield units, or 8-bit grey levels for images (``is_hu`` False).
Bad input raises :class:`pulmo.errors.InputError` with a readable message.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pulmo.ct.io import dicom
from pulmo.ct.io.files import IMAGE_SUFFIXES, VOLUME_SUFFIXES, load_image, load_volume_file, safe_extract, suffix_of
from pulmo.ct.io.options import LoadOptions
from pulmo.ct.volume import CTVolume
from pulmo.errors import InputError

__all__ = ["LoadOptions", "load", "list_series", "input_kind", "image_files"]


def input_kind(path: Path) -> str:
    """'dicom-dir', 'zip', 'volume', 'image', 'image-dir' or 'dicom-file'."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        if files and all(suffix_of(p) in IMAGE_SUFFIXES for p in files):
            return "image-dir"
        return "dicom-dir"
    suf = suffix_of(path)
    if suf == ".zip":
        return "zip"
    if suf in VOLUME_SUFFIXES:
        return "volume"
    if suf in IMAGE_SUFFIXES:
        return "image"
    return "dicom-file"


def image_files(root: Path) -> list[Path]:
    """The PNG/JPG files of an image folder, sorted by name."""
    return sorted(p for p in Path(root).iterdir() if p.is_file() and not p.name.startswith(".")
                  and suffix_of(p) in IMAGE_SUFFIXES)


def _dicom_from_dir(root: Path, options: LoadOptions, label: str) -> CTVolume:
    files = dicom.list_files(root)
    series, skipped = dicom.scan(files, options)
    chosen = dicom.choose(series, options, skipped, label)
    vol = dicom.load_series(chosen, options, label)
    others = [s.summary() for s in series if s is not chosen]
    vol.meta["other_series"] = others
    return vol


def load(path: str | Path, options: LoadOptions | None = None) -> CTVolume:
    """Load one study. See the module docstring."""
    options = options or LoadOptions()
    path = Path(path)
    kind = input_kind(path)
    if kind == "dicom-dir":
        return _dicom_from_dir(path, options, path.name)
    if kind == "zip":
        with tempfile.TemporaryDirectory(prefix="pulmo-zip-") as tmp:
            safe_extract(path, Path(tmp), options)
            vol = _dicom_from_dir(Path(tmp), options, path.name)
            vol.source = str(path)
            return vol
    if kind == "volume":
        return load_volume_file(path, options)
    if kind == "image":
        return load_image(path, options)
    if kind == "image-dir":
        raise InputError(f"{path}: a folder of 2D images is analysed image by image (pulmo ct analyze FOLDER), "
                         "not loaded as one volume")
    # a single DICOM file
    series, skipped = dicom.scan([path], options)
    chosen = dicom.choose(series, options, skipped, path.name)
    return dicom.load_series(chosen, options, path.name)


def list_series(path: str | Path, options: LoadOptions | None = None) -> list[dict]:
    """Summaries of the series in a DICOM folder/zip (for ``pulmo ct series``)."""
    options = options or LoadOptions()
    path = Path(path)
    kind = input_kind(path)
    if kind == "zip":
        with tempfile.TemporaryDirectory(prefix="pulmo-zip-") as tmp:
            safe_extract(path, Path(tmp), options)
            series, _ = dicom.scan(dicom.list_files(Path(tmp)), options)
    elif kind == "dicom-dir":
        series, _ = dicom.scan(dicom.list_files(path), options)
    else:
        raise InputError(f"{path}: series are listed for DICOM folders and zips only")
    return [s.summary() for s in series]
