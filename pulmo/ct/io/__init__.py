"""Load chest CT from a DICOM folder or zip, NIfTI, NRRD, MHA, or 2D PNG/JPG images.

All loaders return a :class:`pulmo.ct.volume.CTVolume` on the canonical LPS
grid (array (z, y, x), z toward superior, x toward the patient's left) in
Hounsfield units, or 8-bit grey levels for images (``is_hu`` False).
Bad input raises :class:`pulmo.errors.InputError` with a readable message.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pulmo.ct.io import dicom
from pulmo.ct.io.files import (
    IMAGE_SUFFIXES,
    VOLUME_SUFFIXES,
    load_image,
    load_volume_file,
    safe_extract,
    suffix_of,
)
from pulmo.ct.io.options import LoadOptions
from pulmo.ct.volume import CTVolume
from pulmo.errors import InputError
from pulmo.io.limits import check_regular

__all__ = ["LoadOptions", "ImageFolder", "read", "load", "list_series", "input_kind", "image_files", "ignored_files",
           "output_names"]

# suffixes of files that are never DICOM: a folder of 2D images may hold them beside its images
NOT_DICOM_SUFFIXES = {".txt", ".md", ".csv", ".json", ".xml", ".html", ".htm", ".pdf", ".db", ".ini", ".log",
                      ".rtf", ".doc", ".docx", ".xls", ".xlsx", ".yaml", ".yml"}


def _own_files(folder: Path, max_files: int | None = None) -> list[Path]:
    """The folder's own regular files (symlinks followed; dangling or looping links, special files
    and hidden files left out); refused (``too_many_files``) past ``max_files`` entries."""
    limit = LoadOptions().max_files if max_files is None else max_files
    out, n = [], 0
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith("."):
                continue
            n += 1
            if n > limit:
                raise InputError(f"{Path(folder).name}: holds more than {limit} files and folders, over the limit "
                                 f"of {limit}", code="too_many_files")
            try:
                if e.is_file():
                    out.append(Path(e.path))
            except OSError:
                continue
    return out


def _never_dicom(path: Path) -> bool:
    return suffix_of(path) in NOT_DICOM_SUFFIXES or path.name.lower() == "thumbs.db"


def input_kind(path: Path, options: LoadOptions | None = None) -> str:
    """'dicom-dir', 'zip', 'volume', 'image', 'image-dir' or 'dicom-file'. What is not a regular
    file or a folder (a FIFO, a device, a socket) is refused here, before anything opens it."""
    path = Path(path)
    st = check_regular(path, path.name if path.name else str(path), what="file or folder", allow_dir=True)
    if stat.S_ISDIR(st.st_mode):
        files = _own_files(path, (options or LoadOptions()).max_files)
        images = [p for p in files if suffix_of(p) in IMAGE_SUFFIXES]
        if images and all(p in images or _never_dicom(p) for p in files):
            return "image-dir"  # images, perhaps beside a README.txt or Thumbs.db (ignored, with a warning)
        return "dicom-dir"
    suf = suffix_of(path)
    if suf == ".zip":
        return "zip"
    if suf in VOLUME_SUFFIXES:
        return "volume"
    if suf in IMAGE_SUFFIXES:
        return "image"
    return "dicom-file"


def image_files(root: Path, max_files: int | None = None) -> list[Path]:
    """The PNG/JPG files of an image folder, sorted by name."""
    return sorted(p for p in _own_files(root, max_files) if suffix_of(p) in IMAGE_SUFFIXES)


def ignored_files(root: Path, max_files: int | None = None) -> list[str]:
    """Names of the files of an image folder that are not images (left out of the analysis)."""
    return sorted(p.name for p in _own_files(root, max_files) if suffix_of(p) not in IMAGE_SUFFIXES)


def output_names(files: list[Path]) -> list[str]:
    """One output name per image file, unique (also ignoring case, for case-insensitive file
    systems) and valid text: the stem (``0.jpg`` -> ``0``); ``<stem>_<ext>`` when two files share
    a stem (``a.png``, ``a.jpg`` -> ``a_png``, ``a_jpg``); then ``_2``, ``_3``, ... where that is
    taken too. Bytes of a file name that are not UTF-8 become U+FFFD."""
    def text(s: str) -> str:
        return os.fsencode(s).decode("utf-8", "replace")

    stems = [f.stem.lower() for f in files]
    names, seen = [], set()
    for f, stem in zip(files, stems):
        base = text(f.stem if stems.count(stem) == 1 else f.name.replace(".", "_"))
        name, k = base, 2
        while name.lower() in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name.lower())
        names.append(name)
    return names


def _dicom_from_dir(root: Path, options: LoadOptions, label: str) -> CTVolume:
    files = dicom.list_files(root, options.max_files, label)
    series, skipped = dicom.scan(files, options)
    if not series:
        images = [f for f in files if suffix_of(f) in IMAGE_SUFFIXES]
        if images:  # a folder of 2D images with other files beside them, or images in sub-folders
            where = sorted({str(f.parent.relative_to(root)) for f in images})
            others = [f.name for f in files if f not in images][:3]
            raise InputError(
                f"{label}: no DICOM images found, but {len(images)} PNG/JPG image(s) in "
                + ", ".join("the folder itself" if w == "." else w for w in where[:3]) + ("..." if len(where) > 3 else "")
                + (f"; a folder of 2D slices is read when it holds only images (other files: {', '.join(others)})"
                   if others else "; give the folder that holds them, or analyse each sub-folder as its own study"),
                code="images_in_subfolders" if not others else None)
    chosen = dicom.choose(series, options, skipped, label)
    vol = dicom.load_series(chosen, options, label)
    others = [s.summary() for s in series if s is not chosen]
    vol.meta["other_series"] = others
    return vol


@dataclass(frozen=True)
class ImageFolder:
    """A folder of 2D slice images (8-bit PNG/JPG), analysed image by image.

    ``files``: the images directly in the folder, sorted by name; ``names``: one unique output
    name per image (:func:`output_names`); ``ignored``: names of the other files beside them;
    ``subfolders``: sub-folders, which are not searched."""

    path: Path
    files: tuple[Path, ...]
    names: tuple[str, ...]
    ignored: tuple[str, ...]
    subfolders: tuple[str, ...]

    @classmethod
    def of(cls, path: str | Path, options: LoadOptions | None = None) -> ImageFolder:
        path = Path(path)
        limit = (options or LoadOptions()).max_files
        files = image_files(path, limit)
        subfolders = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
        return cls(path, tuple(files), tuple(output_names(files)), tuple(ignored_files(path, limit)),
                   tuple(subfolders))


def read(path: str | Path, options: LoadOptions | None = None) -> CTVolume | ImageFolder:
    """Read one study: a :class:`CTVolume` (DICOM folder, zip or file; NIfTI, NRRD, MHA; one 2D
    image), or an :class:`ImageFolder` for a folder of 2D images (decoded image by image later).
    The kind of input is decided here, once (:func:`input_kind`)."""
    options = options or LoadOptions()
    path = Path(path)
    kind = input_kind(path, options)
    if kind == "image-dir":
        return ImageFolder.of(path, options)
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
    # a single DICOM file
    series, skipped = dicom.scan([path], options)
    chosen = dicom.choose(series, options, skipped, path.name)
    return dicom.load_series(chosen, options, path.name)


def load(path: str | Path, options: LoadOptions | None = None) -> CTVolume:
    """Load one study as a volume (see :func:`read`); a folder of 2D images is refused."""
    found = read(path, options)
    if isinstance(found, ImageFolder):
        raise InputError(f"{path}: a folder of 2D images is analysed image by image, not loaded as one volume")
    return found


def list_series(path: str | Path, options: LoadOptions | None = None) -> list[dict]:
    """Summaries of the series in a DICOM folder/zip (for ``pulmo ct series``)."""
    options = options or LoadOptions()
    path = Path(path)
    kind = input_kind(path, options)
    if kind == "zip":
        with tempfile.TemporaryDirectory(prefix="pulmo-zip-") as tmp:
            safe_extract(path, Path(tmp), options)
            series, _ = dicom.scan(dicom.list_files(Path(tmp), options.max_files, path.name), options)
    elif kind == "dicom-dir":
        series, _ = dicom.scan(dicom.list_files(path, options.max_files, path.name), options)
    else:
        raise InputError(f"{path}: series are listed for DICOM folders and zips only")
    return [s.summary() for s in series]
