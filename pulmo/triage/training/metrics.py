"""The training report's survival tables, on top of :mod:`pulmo.stats.survival`.

Harrell's C-index and the Kaplan-Meier estimate are those of :mod:`pulmo.stats.survival`
(the statistics of ``pulmo validate``, tested against R's ``survival``). This module adds
what the report needs beyond them: the C-index as a plain number, the observed risk at a
horizon, and the predicted-vs-observed table by group (deciles or risk groups).
"""

from __future__ import annotations

import numpy as np

# pulmo.stats.survival (and with it scipy.stats) is imported on first use, not with the
# training package: the command line imports that package before it checks for PyTorch.

__all__ = ["concordance_index", "km_risk", "calibration_table", "quantile_groups"]


def concordance_index(time, event, risk) -> float:
    """Harrell's C (higher ``risk`` = earlier event): :func:`pulmo.stats.survival.harrell_c`'s
    ``c_index``, NaN when no pair is comparable (e.g. no event)."""
    from pulmo.stats.survival import harrell_c

    return float(harrell_c(time, event, risk).c_index)


def km_risk(time, event, horizon: float) -> float:
    """Observed risk ``1 - S_KM(horizon)`` (``horizon`` in the unit of ``time``); NaN for an empty group."""
    from pulmo.stats.survival import kaplan_meier

    if np.size(time) == 0:
        return float("nan")
    return float(1.0 - kaplan_meier(time, event).at(horizon)[0][0])


def calibration_table(time, event, predicted, horizon: float, groups) -> list[dict]:
    """Predicted vs observed (Kaplan-Meier) risk at ``horizon`` per group.

    ``groups`` is an array of group labels (one per row); rows are summarised in the
    order the labels first appear after sorting by mean predicted risk.
    """
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event).astype(bool)
    predicted = np.asarray(predicted, dtype=np.float64)
    groups = np.asarray(groups)
    labels = list(dict.fromkeys(groups.tolist()))
    rows = []
    for g in labels:
        m = groups == g
        rows.append({
            "group": g if isinstance(g, str) else int(g) if float(g).is_integer() else float(g),
            "n": int(m.sum()),
            "events": int(event[m].sum()),
            "events_by_horizon": int((event[m] & (time[m] <= horizon)).sum()),
            "predicted_min": float(predicted[m].min()),
            "predicted_max": float(predicted[m].max()),
            "predicted_mean": float(predicted[m].mean()),
            "observed_km": km_risk(time[m], event[m], horizon),
        })
    rows.sort(key=lambda r: r["predicted_mean"])
    return rows


def quantile_groups(values, n_groups: int) -> np.ndarray:
    """Group index 1..n_groups by quantiles of ``values`` (ties kept together)."""
    values = np.asarray(values, dtype=np.float64)
    if n_groups <= 1 or values.size == 0:
        return np.ones(values.size, dtype=int)
    edges = np.quantile(values, np.linspace(0, 1, n_groups + 1)[1:-1])
    return np.searchsorted(edges, values, side="left") + 1
