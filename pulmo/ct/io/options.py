"""Loading options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pulmo.errors import InputError


@dataclass
class LoadOptions:
    """How inputs are read.

    max_file_bytes: any single file (or zip member) larger than this is refused.
    max_total_bytes: a zip whose members add up to more than this is refused.
    series_uid: choose this SeriesInstanceUID when a folder holds several series.
    rescale_slope / rescale_intercept: used only when a DICOM image lacks the
        rescale tags; without them such images are refused unless their stored
        values already look like Hounsfield units.
    no_hu: treat the input as 8-bit images (PNG/JPG path), not Hounsfield units.
    """

    max_file_bytes: int = 1 << 30
    max_total_bytes: int = 8 << 30
    series_uid: str | None = None
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    no_hu: bool = False
    workers: int = 2


def check_size(path: Path, options: LoadOptions) -> None:
    """Refuse a file larger than ``options.max_file_bytes`` (before reading it)."""
    size = path.stat().st_size
    if size > options.max_file_bytes:
        raise InputError(f"{path.name}: file is {size / 2**20:.0f} MiB, over the limit of "
                         f"{options.max_file_bytes / 2**20:.0f} MiB", code="file_too_large")
