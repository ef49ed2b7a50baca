"""Reading validation data: table columns with row-level errors, and mask images.

Tables are read with :func:`pulmo.io.tables.read_table` (any spreadsheet export); the
helpers here turn its string cells into arrays and name the spreadsheet row and column
of the first bad cell. Masks are NIfTI (``.nii``, ``.nii.gz``, via nibabel) or PNG
(via Pillow), matched between two folders by file name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pulmo.errors import InputError
from pulmo.io.cells import parse_binary, parse_numbers
from pulmo.io.limits import check_file, check_nifti_header, human_bytes
from pulmo.io.tables import read_table

__all__ = ["load_table", "numeric_column", "binary_column", "label_column", "MaskImage",
           "read_mask", "match_masks", "MASK_SUFFIXES", "MAX_MASK_VOXELS", "MAX_MASK_FILE_BYTES",
           "MAX_MASK_DATA_BYTES"]

#: Budgets of the mask readers (keyword arguments of :func:`read_mask`): voxels of one mask, bytes
#: of one mask file, and of its voxel data once decompressed. The surface distances of a case
#: (scipy's exact distance transform of the whole grid) take ~32 bytes a voxel: a pair of
#: 512x512x300 masks (78.6 million voxels) peaks at 2.9 GB, so 80 million keeps a case under 3 GB.
MAX_MASK_VOXELS = 80_000_000
MAX_MASK_FILE_BYTES = 1 << 30
MAX_MASK_DATA_BYTES = 1 << 30
#: Largest NIfTI header with its extensions (where the voxel data start).
MAX_MASK_HEADER_BYTES = 16 << 20


def load_table(path: str | os.PathLike, **limits) -> tuple[pd.DataFrame, str]:
    """Read a CSV table (strings, index = spreadsheet row); refuse a table with no data rows.
    ``limits``: the budgets of :func:`pulmo.io.tables.read_table` (``max_bytes``, ``max_cells``,
    ``max_columns``, ``max_line_chars``), its defaults otherwise."""
    table, _ = read_table(path, **limits)
    name = str(path)
    if len(table) == 0:
        raise InputError(f"{name}: the file has a header but no data rows.")
    return table, name


def _column(table: pd.DataFrame, col: str, source: str) -> pd.Series:
    if col not in table.columns:
        cols = ", ".join(f"'{c}'" for c in table.columns[:30])
        raise InputError(f"{source}: no column '{col}'. The columns are: {cols}.")
    series = table[col]
    empty = series.isna()
    if empty.any():
        rows = [str(r) for r in series.index[empty][:5]]
        more = f" (and {int(empty.sum()) - 5} more)" if empty.sum() > 5 else ""
        raise InputError(f"{source}: row {rows[0]}, column '{col}' is empty"
                         + (f"; also rows {', '.join(rows[1:])}{more}" if len(rows) > 1 else "")
                         + ". Fill in or remove incomplete rows.")
    return series


def numeric_column(table: pd.DataFrame, col: str, source: str, *, what: str = "number") -> np.ndarray:
    """A column of finite numbers; names the row of an empty, non-numeric, NaN or infinite cell
    (cells are read by :func:`pulmo.io.cells.parse_numbers`; a missing-value token such as NA fails too)."""
    series = _column(table, col, source)
    values, missing, unreadable = parse_numbers(series)
    bad = missing | unreadable | ~np.isfinite(values)
    if bad.any():
        row = series.index[bad][0]
        cell = series[row]
        kind = "is not a finite number" if str(cell).strip().lower().lstrip("+-") in (
            "nan", "inf", "infinity", "na", "n/a") else "is not a number"
        n_bad = int(bad.sum())
        more = f" ({n_bad - 1} more rows like it)" if n_bad > 1 else ""
        raise InputError(f"{source}: row {row}, column '{col}': '{cell}' {kind}; expected a {what}{more}.")
    return values


def binary_column(table: pd.DataFrame, col: str, source: str, *, require_both: bool = True,
                  meaning: str = "1 = positive, 0 = negative") -> np.ndarray:
    """A 0/1 column (also true/false, yes/no, positive/negative: :func:`pulmo.io.cells.parse_binary`)
    as booleans; refuses other values and, by default, a column where one of the two values never occurs."""
    series = _column(table, col, source)
    values, missing, unreadable = parse_binary(series)
    bad = missing | unreadable | ((values != 0) & (values != 1) & ~np.isnan(values))
    if bad.any():
        row = series.index[bad][0]
        found = ", ".join(f"'{v}'" for v in list(dict.fromkeys(series.astype(str)))[:8])
        raise InputError(f"{source}: column '{col}' must be binary ({meaning}); row {row} has "
                         f"'{series[row]}'. Values found: {found}.")
    out = values == 1
    if require_both and (out.all() or not out.any()):
        which, absent = ("1", "0") if out.all() else ("0", "1")
        raise InputError(f"{source}: column '{col}' is {which} in all {len(out)} rows; the analysis "
                         f"needs both classes (no row has {absent}).")
    return out


def label_column(table: pd.DataFrame, col: str, source: str) -> np.ndarray:
    """A column of category labels (strings, stripped); empty cells are refused."""
    return _column(table, col, source).astype(str).str.strip().to_numpy(dtype=object)


# --------------------------------------------------------------------------- masks

MASK_SUFFIXES = (".nii.gz", ".nii", ".png")


@dataclass(frozen=True)
class MaskImage:
    path: Path
    data: np.ndarray              #: integer labels
    spacing: tuple[float, ...]    #: physical voxel size per axis (mm for NIfTI; 1 for PNG)


def case_id(path: Path) -> str | None:
    name = path.name
    for suf in MASK_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return None


def _too_many(p: Path, shape, max_voxels: int) -> None:
    n = 1
    for d in shape:
        n *= max(int(d), 0)
    if n > max_voxels:
        raise InputError(f"{p}: the mask has {'x'.join(str(int(d)) for d in shape)} = {n / 1e6:.0f} million voxels, "
                         f"over the limit of {max_voxels / 1e6:.0f} million voxels for a mask.", code="mask_too_large")


def _nifti_budget(p: Path, img, max_voxels: int, max_data_bytes: int) -> None:
    """Check a NIfTI's header (nibabel has read only the header) before its voxels are read."""
    hdr = img.header
    shape = tuple(int(d) for d in hdr.get_data_shape())
    _too_many(p, shape, max_voxels)
    n = 1
    for d in shape:
        n *= max(d, 0)
    nbytes = n * hdr.get_data_dtype().itemsize
    if nbytes > max_data_bytes:
        raise InputError(f"{p}: the mask holds {human_bytes(nbytes)} of voxel data, over the limit of "
                         f"{human_bytes(max_data_bytes)} for a mask.", code="mask_too_large")


def _compact(data: np.ndarray) -> np.ndarray:
    """Integer labels in the smallest integer type that holds them (a mask is compared as
    booleans; an int64 copy of a large volume is 8 bytes a voxel)."""
    if data.dtype == bool or data.size == 0:
        return data
    lo, hi = int(data.min()), int(data.max())
    for t in (np.uint8, np.int16, np.int32):
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return data.astype(t, copy=False)
    return data.astype(np.int64, copy=False)


def read_mask(path: str | os.PathLike, *, max_voxels: int = MAX_MASK_VOXELS,
              max_file_bytes: int = MAX_MASK_FILE_BYTES, max_data_bytes: int = MAX_MASK_DATA_BYTES) -> MaskImage:
    """Read a label mask. NIfTI: voxel data and ``header.get_zooms()``; PNG: grayscale or
    palette indices, spacing 1 per axis. Non-integer values are refused.

    Budgets, checked from the header before any voxel is read: the file must be a regular file
    (not a FIFO or a device) of at most ``max_file_bytes``; the mask at most ``max_voxels``
    voxels and ``max_data_bytes`` of voxel data once decompressed (code ``mask_too_large``)."""
    p = Path(path)
    low = p.name.lower()
    check_file(p, max_file_bytes, str(p), what="mask file", code="mask_too_large")
    try:
        if low.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            check_nifti_header(p, MAX_MASK_HEADER_BYTES, str(p), code="mask_too_large")
            img = nib.load(str(p))
            _nifti_budget(p, img, max_voxels, max_data_bytes)
            data = np.asanyarray(img.dataobj)
            zooms = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])
            if data.ndim == 4 and data.shape[3] == 1:
                data = data[..., 0]
                zooms = zooms[:3]
            spacing = zooms
        elif low.endswith(".png"):
            import warnings

            from PIL import Image

            with warnings.catch_warnings():  # Pillow's bomb warning: the budget below says it
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                try:
                    img = Image.open(p)
                except Image.DecompressionBombError:
                    raise InputError(f"{p}: far too large for a mask (over the limit of {max_voxels / 1e6:.0f} "
                                     "million pixels).", code="mask_too_large") from None
            with img:
                w, h = img.size
                _too_many(p, (h, w, len(img.getbands())), max_voxels)
                mode = img.mode
                data = np.array(img)
            if data.ndim == 3:
                chans = data[..., :3]
                if mode in ("RGB", "RGBA") and (chans == chans[..., :1]).all():
                    data = chans[..., 0]
                else:
                    raise InputError(f"{p}: a colour PNG is not a label mask; save masks as grayscale "
                                     "or palette images whose pixel values are the labels.")
            spacing = (1.0,) * data.ndim
        else:
            raise InputError(f"{p}: not a NIfTI (.nii, .nii.gz) or PNG mask.")
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{p}: the mask does not fit in memory.", code="mask_too_large") from None
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise InputError(f"{p}: cannot read the mask ({type(exc).__name__}: {exc}).") from None
    if data.ndim not in (2, 3):
        raise InputError(f"{p}: masks must be 2-D or 3-D images, this one has shape {data.shape}.")
    if not np.issubdtype(data.dtype, np.integer) and data.dtype != bool:
        f = np.asarray(data)
        if f.dtype.kind not in "f":
            raise InputError(f"{p}: the mask's voxel type {f.dtype} is not a number.")
        # slab by slab: no whole-volume float64 temporaries
        flat = f.reshape(f.shape[0], -1)
        for k in range(0, flat.shape[0], 16):
            part = flat[k:k + 16]
            if not np.isfinite(part).all() or (part != np.round(part)).any():
                raise InputError(f"{p}: the mask has non-integer values (a probability map?); "
                                 "threshold it into a label mask first.")
        lo, hi = (float(f.min()), float(f.max())) if f.size else (0.0, 0.0)
        if lo < -2**31 or hi >= 2**31:
            raise InputError(f"{p}: label values up to {hi:g} are not those of a label mask.")
        data = f.astype(np.int64 if lo < -2**15 or hi >= 2**15 else np.int32)
    return MaskImage(p, _compact(np.asarray(data)), spacing)


def match_masks(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike
                ) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pair masks by case name (file name without .nii/.nii.gz/.png).

    Returns (pairs sorted by case, predictions without reference, references without
    prediction).
    """
    def scan(d, what) -> dict[str, Path]:
        d = Path(d)
        if not d.exists():
            raise InputError(f"{d}: {what} folder not found.")
        if not d.is_dir():
            raise InputError(f"{d}: expected a folder of {what} masks, got a file.")
        out: dict[str, Path] = {}
        for f in sorted(d.iterdir()):
            cid = case_id(f)
            if cid is None or not f.is_file():
                continue
            if cid in out:
                raise InputError(f"{d}: two masks for case '{cid}' ({out[cid].name}, {f.name}).")
            out[cid] = f
        if not out:
            raise InputError(f"{d}: no NIfTI (.nii, .nii.gz) or PNG masks in the {what} folder.")
        return out

    pred = scan(pred_dir, "prediction")
    gt = scan(gt_dir, "reference")
    pairs = [(c, pred[c], gt[c]) for c in sorted(pred) if c in gt]
    return pairs, sorted(set(pred) - set(gt)), sorted(set(gt) - set(pred))
