"""Validation of array inputs shared by the statistics modules.

The computation modules take numpy arrays; these helpers turn array-likes into
clean arrays or raise :class:`~pulmo.errors.InputError` with a readable message.
Positions in messages are 0-based array positions; the file readers in
:mod:`pulmo.stats.io` check cells earlier and name spreadsheet rows instead.
"""

from __future__ import annotations

import numpy as np

from pulmo.errors import InputError


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def as_1d(values, name: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise InputError(f"{name}: expected one value per case (a 1-D array), got shape {a.shape}.")
    return a


def binary_truth(values, name: str = "truth", meaning: str = "0 (negative) or 1 (positive)") -> np.ndarray:
    """0/1 (or boolean) labels -> boolean array; 1/True is the positive class (a case)."""
    a = as_1d(values, name)
    if a.dtype == bool:
        return a
    try:
        f = a.astype(float)
    except (TypeError, ValueError):
        raise InputError(f"{name}: values must be {meaning}.") from None
    if np.isnan(f).any():
        raise InputError(f"{name}: missing value at position {_first_bad(np.isnan(f))}.")
    bad = (f != 0) & (f != 1)
    if bad.any():
        found = ", ".join(f"{v:g}" for v in np.unique(f)[:10])
        raise InputError(f"{name}: values must be {meaning}; found the values {found}.")
    return f == 1


def finite(values, name: str, *, n: int | None = None) -> np.ndarray:
    """Float array with no NaN or infinite value (and of length ``n`` when given)."""
    a = as_1d(values, name)
    try:
        f = a.astype(float)
    except (TypeError, ValueError):
        raise InputError(f"{name}: values must be numbers.") from None
    if n is not None and len(f) != n:
        raise InputError(f"{name}: has {len(f)} values but there are {n} cases.")
    if np.isnan(f).any():
        raise InputError(f"{name}: missing (NaN) value at position {_first_bad(np.isnan(f))}.")
    if np.isinf(f).any():
        raise InputError(f"{name}: infinite value at position {_first_bad(np.isinf(f))}.")
    return f


def both_classes(truth: np.ndarray, name: str = "truth") -> None:
    if truth.all():
        raise InputError(f"{name}: all {len(truth)} cases are positive (1); ROC analysis needs "
                         "negative (0) cases too.")
    if not truth.any():
        raise InputError(f"{name}: all {len(truth)} cases are negative (0); ROC analysis needs "
                         "positive (1) cases too.")


def conf_level(level: float) -> float:
    level = float(level)
    if not 0 < level < 1:
        raise InputError(f"confidence level must be between 0 and 1 (e.g. 0.95), got {level:g}.")
    return level
