"""Survival metrics for training reports: Harrell's C-index, Kaplan-Meier, calibration."""

from __future__ import annotations

import numpy as np


def concordance_index(time, event, risk) -> float:
    """Harrell's C-index: the fraction of comparable pairs ordered correctly by ``risk``.

    Higher ``risk`` means an earlier event. A pair (i, j) is comparable when the
    one with the shorter time had an event (``T_i < T_j, E_i = 1``), or when both
    times are equal and only ``i`` had the event (the censored one is taken to
    have survived longer); pairs of two events at the same time are not
    comparable. Tied risks count 1/2. The same definition as
    ``lifelines.utils.concordance_index(time, -risk, event)``; O(n log n).

    Returns NaN when there is no comparable pair.
    """
    time = np.asarray(time, dtype=np.float64).reshape(-1)
    event = np.asarray(event).reshape(-1).astype(bool)
    risk = np.asarray(risk, dtype=np.float64).reshape(-1)
    if not (time.shape == event.shape == risk.shape):
        raise ValueError("time, event and risk must have the same length")
    if np.isnan(risk).any() or np.isnan(time).any():
        raise ValueError("time and risk must not contain NaN")
    n = time.size
    if n < 2 or not event.any():
        return float("nan")
    uniq, rank = np.unique(risk, return_inverse=True)
    size = uniq.size
    tree = [0] * (size + 1)  # Fenwick tree of counts by risk rank (1-based)

    def add(r: int) -> None:
        r += 1
        while r <= size:
            tree[r] += 1
            r += r & (-r)

    def prefix(r: int) -> int:  # number with rank < r
        s = 0
        while r > 0:
            s += tree[r]
            r -= r & (-r)
        return s

    order = np.argsort(-time, kind="stable")
    t_sorted = time[order]
    # Boundaries of groups of equal time, processed from the longest time down.
    starts = np.flatnonzero(np.r_[True, t_sorted[1:] != t_sorted[:-1]])
    ends = np.r_[starts[1:], n]
    pairs = concordant = tied = 0
    pool = 0
    rank_l = rank.tolist()
    event_l = event.tolist()
    order_l = order.tolist()
    for s, e in zip(starts.tolist(), ends.tolist()):
        idx = order_l[s:e]
        evs = [i for i in idx if event_l[i]]
        cens = [i for i in idx if not event_l[i]]
        # Censored at the same time count as longer survivors for these events.
        for i in cens:
            add(rank_l[i])
        pool += len(cens)
        for i in evs:
            r = rank_l[i]
            below = prefix(r)
            equal = prefix(r + 1) - below
            pairs += pool
            concordant += below
            tied += equal
        for i in evs:
            add(rank_l[i])
        pool += len(evs)
    if pairs == 0:
        return float("nan")
    return (concordant + 0.5 * tied) / pairs


def kaplan_meier(time, event) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier survival: ``(event_times, survival)`` just after each distinct event time."""
    time = np.asarray(time, dtype=np.float64).reshape(-1)
    event = np.asarray(event).reshape(-1).astype(bool)
    if time.size == 0:
        return np.zeros(0), np.zeros(0)
    ts = np.sort(time)
    uniq, d = np.unique(time[event], return_counts=True)
    at_risk = ts.size - np.searchsorted(ts, uniq, side="left")
    surv = np.cumprod(1.0 - d / at_risk)
    return uniq, surv


def km_risk(time, event, horizon: float) -> float:
    """Observed risk ``1 - S_KM(horizon)`` (NaN for an empty group)."""
    time = np.asarray(time, dtype=np.float64).reshape(-1)
    if time.size == 0:
        return float("nan")
    t, s = kaplan_meier(time, event)
    k = np.searchsorted(t, horizon, side="right") - 1
    return float(1.0 - (s[k] if k >= 0 else 1.0))


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
