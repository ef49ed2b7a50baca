"""Binomial proportions with exact (Clopper-Pearson) confidence intervals."""

from __future__ import annotations

import numpy as np
from scipy import stats

from pulmo.stats.checks import conf_level as _check_level


def clopper_pearson(k, n, conf_level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided confidence interval for ``k`` successes out of ``n`` trials.

    Identical to R's ``binom.test(k, n, conf.level=...)$conf.int``: the bounds are
    Beta quantiles, ``lower = qbeta(a/2, k, n-k+1)`` (0 when ``k == 0``) and
    ``upper = qbeta(1-a/2, k+1, n-k)`` (1 when ``k == n``), ``a = 1 - conf_level``.
    Vectorised; ``n == 0`` gives NaN bounds (the proportion is undefined).
    """
    level = _check_level(conf_level)
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    alpha = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = np.where(k > 0, stats.beta.ppf(alpha, np.maximum(k, 1e-300), n - k + 1), 0.0)
        upper = np.where(k < n, stats.beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1e-300)), 1.0)
    empty = n <= 0
    lower = np.where(empty, np.nan, lower)
    upper = np.where(empty, np.nan, upper)
    return lower, upper


def proportion(k: int, n: int, conf_level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """``(k / n, (lower, upper))`` with the Clopper-Pearson interval; NaN when ``n == 0``."""
    lo, hi = clopper_pearson(k, n, conf_level)
    value = k / n if n > 0 else float("nan")
    return float(value), (float(lo), float(hi))
