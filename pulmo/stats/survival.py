"""Validation statistics for survival (time-to-event) models, as R's ``survival`` computes them.

Conventions (all functions)
---------------------------
* ``time`` >= 0 and finite, in any unit (days, months); ``event`` is 1 for an observed
  event and 0 for a censored follow-up. (The command line refuses times <= 0.)
* ``risk``: **a higher risk means an earlier event** (a hazard ratio, a linear predictor, a
  predicted probability of the event). This is ``survival::concordance(..., reverse=TRUE)``.
* Times closer than ``sqrt(.Machine$double.eps)`` are made equal first, exactly as R's
  ``aeqSurv`` (``timefix=TRUE``, the default of ``concordance``, ``survfit`` and ``survdiff``).
* A subject censored at the same time as another's event is considered to have outlived it
  (R's convention); two events at the same time form a pair tied on time, which is not used.

Statistics and the R function each one reproduces
-------------------------------------------------
``harrell_c``                 ``concordance(Surv(time, event) ~ risk, reverse=TRUE)``: C, the counts
                              and ``sqrt(var)`` (the infinitesimal-jackknife standard error).
``uno_c``                     the same with ``timewt="n/G2"`` (and ``ymax=tau``).
``kaplan_meier``              ``survfit(Surv(time, event) ~ 1)`` (Greenwood SE, ``conf.type="log"``).
``logrank_test``              ``survdiff(Surv(time, event) ~ group)``.
``cumulative_dynamic_auc``    IPCW estimator of Uno et al. (2007) / Hung & Chiang (2010), as
                              ``timeROC(..., cause=1, weighting="marginal")``; not in ``survival``.
``brier_score``               IPCW Brier score of Graf et al. (1999); ``integrated_brier_score``
                              its trapezoidal integral divided by the time range.
``calibration_at_horizon``    IPCW logistic recalibration (slope; calibration-in-the-large) and a
                              grouped observed-vs-predicted table with Kaplan-Meier observations.

Inverse probability of censoring weights use the Kaplan-Meier estimate ``G`` of the censoring
distribution with R's ``concordance`` convention for ties: a subject whose event is at ``t`` is
not at risk of being censored at ``t``. An event at ``T_i`` is weighted ``1 / G(T_i-)``, a subject
still event-free at ``t`` ``1 / G(t)``.

Harrell's C is computed in O(n log n) (sorting plus the vectorised dominance count of
:mod:`pulmo.stats.dominance`): 1,000,000 subjects take about a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from scipy.integrate import trapezoid

from pulmo.errors import InputError
from pulmo.stats.checks import as_1d, binary_truth, conf_level as _check_level, finite
from pulmo.stats.dominance import prefix_smaller_flag, prefix_smaller_float

__all__ = [
    "Concordance", "KaplanMeier", "LogRank", "TimeDependentAUC", "Calibration",
    "check_survival", "aeq_times", "harrell_c", "uno_c", "kaplan_meier", "logrank_test",
    "censoring_weights", "cumulative_dynamic_auc", "brier_score", "integrated_brier_score",
    "calibration_at_horizon", "risk_groups",
]


# --------------------------------------------------------------------------- input

def check_survival(time, event, *, name_time: str = "time", name_event: str = "event"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Validate survival data: times finite and >= 0, events 0/1. Returns (float, bool) arrays.

    A time of 0 (an event on the day of inclusion) is accepted, as R does; ``pulmo validate
    survival`` is stricter and refuses times <= 0 in its input files.
    """
    t = as_1d(time, name_time)
    try:
        t = t.astype(float)
    except (TypeError, ValueError):
        raise InputError(f"{name_time}: survival times must be numbers.") from None
    if len(t) == 0:
        raise InputError("no subjects: the survival data are empty.")
    if np.isnan(t).any():
        raise InputError(f"{name_time}: missing (NaN) survival time at position "
                         f"{int(np.flatnonzero(np.isnan(t))[0])}.")
    if np.isinf(t).any():
        raise InputError(f"{name_time}: infinite survival time at position {int(np.flatnonzero(np.isinf(t))[0])}.")
    if (t < 0).any():
        i = int(np.flatnonzero(t < 0)[0])
        raise InputError(f"{name_time}: survival times cannot be negative; position {i} has {t[i]:g}.")
    e = binary_truth(event, name_event, "0 (censored) or 1 (event)")
    if len(e) != len(t):
        raise InputError(f"{name_event}: has {len(e)} values but there are {len(t)} survival times.")
    return t, e


def _aeq(time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(times after R's ``aeqSurv``, dense rank of each fixed time)."""
    y, inv = np.unique(time, return_inverse=True)
    if len(y) < 2:
        return time, inv
    dy = np.diff(y)
    tol = np.sqrt(np.finfo(float).eps)
    tied = (dy <= tol) | ((dy / np.mean(np.abs(y))) <= tol)
    if not tied.any():
        return time, inv
    group = np.concatenate(([0], np.cumsum(~tied)))     # fixed time index of each distinct time
    cuts = y[np.concatenate(([True], ~tied))]
    rank = group[inv]
    return cuts[rank], rank


def aeq_times(time: np.ndarray) -> np.ndarray:
    """R's ``aeqSurv``: times within ``sqrt(eps)`` (absolutely, or relative to the mean
    absolute time) of the previous distinct time are set to the first time of their run."""
    return _aeq(np.asarray(time, dtype=float))[0]


def _times_at(values, name: str) -> np.ndarray:
    v = np.atleast_1d(np.asarray(values, dtype=float))
    if v.ndim != 1 or len(v) == 0:
        raise InputError(f"{name}: give at least one time point.")
    if not np.isfinite(v).all() or (v <= 0).any():
        raise InputError(f"{name}: time points must be positive numbers.")
    return v


# --------------------------------------------------------------------------- Kaplan-Meier

def _risk_table(time: np.ndarray, event: np.ndarray):
    """Distinct times with number at risk, events and censorings (time already aeq'd)."""
    u, inv = np.unique(time, return_inverse=True)
    d = np.bincount(inv, weights=event.astype(float), minlength=len(u))
    tot = np.bincount(inv, minlength=len(u)).astype(float)
    c = tot - d
    n_risk = np.cumsum(tot[::-1])[::-1]
    return u, n_risk, d, c


@dataclass(frozen=True)
class KaplanMeier:
    """Kaplan-Meier curve at each distinct observed time (``survfit`` layout)."""

    time: np.ndarray
    n_risk: np.ndarray
    n_event: np.ndarray
    n_censor: np.ndarray
    surv: np.ndarray
    std_err: np.ndarray       #: SE of the cumulative hazard -log S (survfit's ``std.err``), Greenwood
    lower: np.ndarray         #: ``conf.type="log"``: S * exp(-z * std_err)
    upper: np.ndarray         #: min(1, S * exp(z * std_err))
    conf_level: float

    def at(self, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(S, lower, upper) at times ``t`` (right-continuous; 1 before the first time)."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        i = np.searchsorted(self.time, t, side="right") - 1
        ok = i >= 0
        j = np.maximum(i, 0)
        return (np.where(ok, self.surv[j], 1.0), np.where(ok, self.lower[j], 1.0),
                np.where(ok, self.upper[j], 1.0))


def kaplan_meier(time, event, conf_level: float = 0.95) -> KaplanMeier:
    """Kaplan-Meier estimate with Greenwood standard errors and log-type CI (R ``survfit``)."""
    level = _check_level(conf_level)
    t, e = check_survival(time, event)
    u, n, d, c = _risk_table(aeq_times(t), e)
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(1.0 - d / n)
        g = np.where(d > 0, d / (n * (n - d)), 0.0)
        se = np.sqrt(np.cumsum(g))
        z = stats.norm.ppf(1 - (1 - level) / 2)
        lower = surv * np.exp(-z * se)
        upper = np.minimum(surv * np.exp(z * se), 1.0)
    dead = surv <= 0
    lower = np.where(dead, np.nan, lower)
    upper = np.where(dead, np.nan, upper)
    return KaplanMeier(u, n, d, c, surv, se, lower, upper, level)


def _censoring_km(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct times, G just after each) with deaths at t not at risk of censoring at t."""
    u, n, d, c = _risk_table(time, event)
    at_risk = n - d
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(c > 0, (at_risk - c) / at_risk, 1.0)
    return u, np.cumprod(factor)


def _step(u: np.ndarray, g: np.ndarray, t: np.ndarray, *, left: bool) -> np.ndarray:
    i = np.searchsorted(u, t, side="left" if left else "right") - 1
    return np.where(i >= 0, g[np.maximum(i, 0)], 1.0)


def censoring_weights(time, event, horizon: float) -> np.ndarray:
    """IPCW weights for the status at ``horizon``.

    ``1 / G(T_i-)`` for an event at or before ``horizon``, ``1 / G(horizon)`` for a subject
    followed beyond it, 0 for a subject censored at or before it (status unknown).
    """
    t, e = check_survival(time, event)
    t = aeq_times(t)
    u, g = _censoring_km(t, e)
    h = float(horizon)
    w = np.zeros(len(t))
    case = (t <= h) & e
    with np.errstate(divide="ignore"):
        w[case] = 1.0 / _step(u, g, t[case], left=True)
        w[t > h] = 1.0 / _step(u, g, np.array([h]), left=False)[0]
    return w


# --------------------------------------------------------------------------- concordance

@dataclass(frozen=True)
class Concordance:
    """A concordance index with survival::concordance's standard error.

    Counts follow ``reverse=TRUE``: a pair is concordant when the subject with the higher
    risk has the earlier event. ``tied_risk`` pairs count one half; ``tied_time`` (two events
    at the same time, different risk) and ``tied_both`` pairs are not used. For Uno's C the
    counts are weighted by 1 / G(t-)^2.
    """

    c_index: float
    se: float
    ci: tuple[float, float]
    conf_level: float
    method: str
    concordant: float
    discordant: float
    tied_risk: float
    tied_time: float
    tied_both: float
    n: int
    n_events: int
    tau: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _runs(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) index of the run of equal keys containing each element of sorted arrays."""
    n = len(keys[0])
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for k in keys:
        new[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(new)
    rid = np.cumsum(new) - 1
    ends = np.append(starts[1:], n)
    return starts[rid], ends[rid]


def _concordance_counts(trank: np.ndarray, event: np.ndarray, risk: np.ndarray, weight: np.ndarray):
    """Pair counts and per-subject influence for concordance with per-event weights.

    ``trank`` is the dense rank of each (aeq'd) time; ``weight[i]`` is the weight of the
    pairs in which subject i is the earlier event (ignored for censored subjects; 0
    excludes the event). Returns totals (concordant, discordant, tied on risk, tied on
    time only, tied on both) and per-subject (concordant, discordant, tied) counts, in the
    ``reverse=TRUE`` sense.

    Subjects are put in order of K = (time, events before censorings) and then risk; the
    partners of an earlier event are the subjects with a larger K. Values are the ranks
    by (risk, position), so within a K group no pair is counted and the dominance count of
    :func:`~pulmo.stats.dominance.prefix_smaller` gives, per subject, the later subjects
    with a smaller risk and the earlier events with a larger risk.
    """
    n = len(trank)
    integer = bool(np.all((weight == 0) | (weight == 1)))
    w = np.where(event, weight, 0).astype(np.int64 if integer else float)
    K = 2 * trank.astype(np.int64) + (~event)
    ro = np.argsort(risk)
    rs = risk[ro]
    rnew = rs[1:] != rs[:-1]
    risk_ties = not rnew.all()
    rinv = np.empty(n, dtype=np.int64)
    rinv[ro] = np.concatenate(([0], np.cumsum(rnew)))
    order = np.argsort(K * (int(rinv[ro[-1]]) + 1) + rinv)     # positions: by (K, risk)
    Kp, wp = K[order], w[order]
    if risk_ties:
        rp = rinv[order]
        posv = np.argsort(rp * n + np.arange(n))               # value order: by (risk, position)
    else:
        pos = np.empty(n, dtype=np.int64)
        pos[order] = np.arange(n)
        posv = pos[ro]
    val = np.empty(n, dtype=np.int64)
    val[posv] = np.arange(n)
    if integer:
        cnt, cw = prefix_smaller_flag(val, wp)
    else:
        cnt, cw = prefix_smaller_float(val, wp)
    A = val - cnt                                    # later subjects with a smaller risk
    wcum = np.concatenate(([0], np.cumsum(wp)))
    B = wcum[:-1] - cw                               # earlier events with a larger risk
    k_start, k_end = _runs([Kp])
    N1 = n - k_end                                   # later subjects
    N2 = wcum[k_start]                               # earlier events (weighted)
    if risk_ties:
        rv, Kv, wv = rp[posv], Kp[posv], wp[posv]
        r_start, r_end = _runs([rv])
        rk_start, rk_end = _runs([rv, Kv])
        T1 = np.empty(n, dtype=np.int64)
        T1[posv] = r_end - rk_end                   # later subjects with the same risk
        wvc = np.concatenate(([0], np.cumsum(wv)))
        T2 = np.empty(n, dtype=wvc.dtype)
        T2[posv] = wvc[rk_start] - wvc[r_start]     # earlier events with the same risk
    else:
        T1 = T2 = np.zeros(n, dtype=np.int64)
    wA, wT1 = wp * A, wp * T1
    wD = wp * (N1 - A - T1)
    C, T, D = float(wA.sum()), float(wT1.sum()), float(wD.sum())
    # per-subject counts, left in sorted order (only their sums of squares are used)
    per = (wA + B, wD + (N2 - B - T2), wT1 + T2)
    # Events tied on time (and on risk): pairs inside each event-time group.
    ty = txy = 0.0
    evpos = (Kp % 2 == 0) & (wp != 0)
    if evpos.any():
        ke, we = Kp[evpos], wp[evpos].astype(float)
        first = np.flatnonzero(np.r_[True, ke[1:] != ke[:-1]])
        size = np.diff(np.append(first, len(ke)))
        ty = float(np.sum(we[first] * size * (size - 1) / 2))
        if (size > 1).any():
            re_ = rinv[order][evpos]
            first2 = np.flatnonzero(np.r_[True, (ke[1:] != ke[:-1]) | (re_[1:] != re_[:-1])])
            size2 = np.diff(np.append(first2, len(ke)))
            txy = float(np.sum(we[first2] * size2 * (size2 - 1) / 2))
    return C, D, T, ty - txy, txy, per


def _concordance_result(method: str, time, event, risk, weight_fn, conf_level: float,
                        tau: float | None) -> Concordance:
    level = _check_level(conf_level)
    t, e = check_survival(time, event)
    r = finite(risk, "risk", n=len(t))
    t, trank = _aeq(t)
    w = weight_fn(t, e)
    if tau is not None:
        tau = float(tau)
        if not np.isfinite(tau) or tau <= 0:
            raise InputError(f"tau must be a positive time, got {tau:g}.")
        w = np.where(t > tau, 0.0, w)
    n_ev = int(e.sum())
    if n_ev == 0:
        nan = float("nan")
        return Concordance(nan, nan, (nan, nan), level, method, 0.0, 0.0, 0.0, 0.0, 0.0,
                           len(t), 0, tau)
    C, D, T, ty, txy, per = _concordance_counts(trank, e, r, w)
    npair = C + D + T
    if npair <= 0:
        nan = float("nan")
        return Concordance(nan, nan, (nan, nan), level, method, C, D, T, ty, txy, len(t), n_ev, tau)
    somer = (C - D) / npair
    pc, pd, pt = per
    dfbeta = (pc - pd) / npair - (somer / npair) * (pc + pd + pt)
    var = float(np.sum(dfbeta ** 2) / 4)
    cidx = (somer + 1) / 2
    se = float(np.sqrt(var))
    z = stats.norm.ppf(1 - (1 - level) / 2)
    ci = (float(max(cidx - z * se, 0.0)), float(min(cidx + z * se, 1.0)))
    return Concordance(float(cidx), se, ci, level, method, C, D, T, ty, txy, len(t), n_ev, tau)


def harrell_c(time, event, risk, conf_level: float = 0.95, tau: float | None = None) -> Concordance:
    """Harrell's C, identical to ``survival::concordance(Surv(time, event) ~ risk, reverse=TRUE)``.

    ``C = (concordant + tied_risk / 2) / (concordant + discordant + tied_risk)`` over the
    comparable pairs (the earlier time is an event). ``se`` is R's ``sqrt(fit$var)``
    (infinitesimal jackknife) and ``ci`` the Wald interval ``C +/- z * se`` clipped to
    [0, 1]. ``tau`` ignores events after it (R's ``ymax``). NaN without comparable pairs.
    """
    return _concordance_result("harrell", time, event, risk,
                               lambda t, e: e.astype(float), conf_level, tau)


def _uno_weights(t: np.ndarray, e: np.ndarray) -> np.ndarray:
    if e.sum() < 2:              # R falls back to Harrell's weights
        return e.astype(float)
    u, g = _censoring_km(t, e)
    with np.errstate(divide="ignore"):
        w = 1.0 / _step(u, g, t, left=True) ** 2
    return np.where(e, w, 0.0)


def uno_c(time, event, risk, tau: float | None = None, conf_level: float = 0.95) -> Concordance:
    """Uno's C: pairs weighted by ``1 / G(T_i-)^2`` (``concordance(..., timewt="n/G2", ymax=tau)``).

    Consistent for the population concordance up to ``tau`` under independent censoring
    (Uno et al. 2011). ``se`` is R's infinitesimal-jackknife one, which treats the weights
    as fixed.
    """
    return _concordance_result("uno", time, event, risk, _uno_weights, conf_level, tau)


# --------------------------------------------------------------------------- log-rank

@dataclass(frozen=True)
class LogRank:
    """k-sample log-rank test (``survdiff``)."""

    groups: tuple
    n: np.ndarray
    observed: np.ndarray
    expected: np.ndarray
    chisq: float
    df: int
    p_value: float


def logrank_test(time, event, group) -> LogRank:
    """Log-rank test of equal survival across groups, as ``survdiff(Surv(time, event) ~ group)``.

    ``chisq = (O - E)' V^-1 (O - E)`` over the groups with expected events > 0 minus one,
    ``df`` = that number of groups minus one.
    """
    t, e = check_survival(time, event)
    g = as_1d(group, "group")
    if len(g) != len(t):
        raise InputError(f"group: has {len(g)} values but there are {len(t)} subjects.")
    labels, gi = np.unique(g, return_inverse=True)
    k = len(labels)
    if k < 2:
        raise InputError("the log-rank test needs at least two groups.")
    t = aeq_times(t)
    u, ti = np.unique(t, return_inverse=True)
    T = len(u)
    tot = np.zeros((T, k))
    dth = np.zeros((T, k))
    np.add.at(tot, (ti, gi), 1.0)
    np.add.at(dth, (ti, gi), e.astype(float))
    n_risk = np.cumsum(tot[::-1], axis=0)[::-1]      # at risk per group at each time
    N = n_risk.sum(axis=1)
    Dt = dth.sum(axis=1)
    keep = Dt > 0
    n_risk, N, Dt, dth = n_risk[keep], N[keep], Dt[keep], dth[keep]
    frac = n_risk / N[:, None]
    expected = (frac * Dt[:, None]).sum(axis=0)
    observed = dth.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(N > 1, Dt * (N - Dt) / (N - 1), 0.0)
    V = np.einsum("t,ti,ij->ij", scale, frac, np.eye(k)) - np.einsum("t,ti,tj->ij", scale, frac, frac)
    use = expected > 0
    df = int(use.sum()) - 1
    if df < 1:
        chisq = 0.0
    else:
        diff = (observed - expected)[use][1:]
        vv = V[np.ix_(use, use)][1:, 1:]
        chisq = float(diff @ np.linalg.solve(vv, diff)) if np.linalg.matrix_rank(vv) == len(diff) \
            else float(diff @ np.linalg.pinv(vv) @ diff)
    p = float(stats.chi2.sf(chisq, df)) if df >= 1 else float("nan")
    n = np.bincount(gi, minlength=k)
    return LogRank(tuple(labels.tolist()), n, observed, expected, chisq, df, p)


# --------------------------------------------------------------------------- time-dependent

@dataclass(frozen=True)
class TimeDependentAUC:
    """Cumulative/dynamic AUC(t): cases had the event by t, controls are event-free after t."""

    times: np.ndarray
    auc: np.ndarray
    n_cases: np.ndarray
    n_controls: np.ndarray


def cumulative_dynamic_auc(time, event, risk, times) -> TimeDependentAUC:
    """IPCW cumulative/dynamic AUC at each of ``times`` (Uno 2007; Hung & Chiang 2010).

    ``AUC(t) = sum_i sum_j w_i [I(r_i > r_j) + I(r_i = r_j) / 2] / (sum_i w_i * n_controls)``
    with cases ``T_i <= t, event_i = 1`` weighted ``w_i = 1 / G(T_i-)`` and controls
    ``T_j > t`` (their common weight 1/G(t) cancels). Without censoring before ``t`` this is
    the ordinary AUC of "event by t" vs "event-free at t". NaN when there are no cases or
    no controls at ``t``.
    """
    t, e = check_survival(time, event)
    r = finite(risk, "risk", n=len(t))
    ts = _times_at(times, "times")
    t = aeq_times(t)
    u, g = _censoring_km(t, e)
    with np.errstate(divide="ignore"):
        w_all = 1.0 / _step(u, g, t, left=True)
    aucs, ncase, nctrl = [], [], []
    for h in ts:
        case = e & (t <= h)
        ctrl = t > h
        nc, nn = int(case.sum()), int(ctrl.sum())
        ncase.append(nc)
        nctrl.append(nn)
        if nc == 0 or nn == 0:
            aucs.append(np.nan)
            continue
        cr = np.sort(r[ctrl])
        rc, wc = r[case], w_all[case]
        below = np.searchsorted(cr, rc, side="left")
        ties = np.searchsorted(cr, rc, side="right") - below
        aucs.append(float(np.sum(wc * (below + 0.5 * ties)) / (np.sum(wc) * nn)))
    return TimeDependentAUC(ts, np.array(aucs), np.array(ncase), np.array(nctrl))


def _probabilities(p, name: str, n: int) -> np.ndarray:
    p = finite(p, name, n=n)
    if (p < 0).any() or (p > 1).any():
        i = int(np.flatnonzero((p < 0) | (p > 1))[0])
        raise InputError(f"{name}: predicted probabilities must be between 0 and 1; position {i} has {p[i]:g}.")
    return p


def brier_score(time, event, predicted, horizon: float) -> float:
    """IPCW Brier score at ``horizon`` for predicted probabilities of the event by then.

    ``BS = mean_i[ I(T_i <= h, event) (1 - p_i)^2 / G(T_i-) + I(T_i > h) p_i^2 / G(h) ]``
    (Graf et al. 1999); subjects censored before ``h`` contribute 0 but count in the mean.
    0 is perfect; predicting the prevalence everywhere scores ``prevalence * (1 - prevalence)``.
    """
    t, e = check_survival(time, event)
    p = _probabilities(predicted, "predicted probability", len(t))
    h = float(_times_at([horizon], "horizon")[0])
    w = censoring_weights(t, e, h)
    tt = aeq_times(t)
    y = ((tt <= h) & e).astype(float)
    return float(np.mean(w * (y - p) ** 2))


def integrated_brier_score(time, event, predicted, times) -> float:
    """Trapezoidal integral of the Brier score over ``times`` divided by their range.

    ``predicted`` has one column per time point (probability of the event by that time).
    Needs at least two time points; with the times of a fine grid this is the usual IBS.
    """
    ts = _times_at(times, "times")
    P = np.asarray(predicted, dtype=float)
    if P.ndim != 2 or P.shape[1] != len(ts):
        raise InputError("integrated Brier score: give one column of predictions per time point.")
    if len(ts) < 2:
        raise InputError("the integrated Brier score needs at least two time points.")
    order = np.argsort(ts)
    ts, P = ts[order], P[:, order]
    bs = np.array([brier_score(time, event, P[:, j], ts[j]) for j in range(len(ts))])
    return float(trapezoid(bs, ts) / (ts[-1] - ts[0]))


# --------------------------------------------------------------------------- calibration

@dataclass(frozen=True)
class Calibration:
    """Calibration of predicted event probabilities at a horizon."""

    horizon: float
    slope: float                 #: coefficient of logit(p) in the IPCW logistic model (ideal 1)
    intercept: float             #: calibration-in-the-large: intercept with logit(p) as offset (ideal 0)
    observed: float              #: Kaplan-Meier probability of the event by the horizon
    expected: float              #: mean predicted probability
    oe_ratio: float              #: observed / expected
    groups: list[dict]           #: per group of predicted risk: n, mean predicted, KM observed + CI
    n_used: int                  #: subjects with known status at the horizon (weight > 0)
    converged: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-10, 1 - 1e-10)
    return np.log(q / (1 - q))


def _weighted_logistic(X: np.ndarray, y: np.ndarray, w: np.ndarray, offset: np.ndarray,
                       max_iter: int = 50) -> tuple[np.ndarray, bool]:
    """Newton-Raphson (IRLS) for weighted logistic regression; returns (beta, converged)."""
    beta = np.zeros(X.shape[1])
    for _ in range(max_iter):
        eta = X @ beta + offset
        mu = 1 / (1 + np.exp(-eta))
        grad = X.T @ (w * (y - mu))
        H = (X * (w * mu * (1 - mu))[:, None]).T @ X
        try:
            step = np.linalg.solve(H, grad)
        except np.linalg.LinAlgError:
            return np.full(X.shape[1], np.nan), False
        beta = beta + step
        if not np.all(np.isfinite(beta)):
            return np.full(X.shape[1], np.nan), False
        if np.max(np.abs(step)) < 1e-10 * (1 + np.max(np.abs(beta))):
            return beta, True
    return beta, False


def calibration_at_horizon(time, event, predicted, horizon: float, n_groups: int = 10,
                           conf_level: float = 0.95) -> Calibration:
    """Calibration of predicted probabilities of the event by ``horizon``.

    * **slope**: ``b`` in ``logit P(event by h) = a + b logit(p)``, fitted by logistic
      regression on the subjects whose status at ``h`` is known, each weighted by
      :func:`censoring_weights` (IPCW); equal to R's
      ``glm(y ~ qlogis(p), family=quasibinomial, weights=w)``. Ideal 1; < 1 means
      predictions too extreme.
    * **intercept** (calibration-in-the-large): ``a`` in ``logit P = a + offset(logit p)``;
      ideal 0; > 0 means risks are underestimated.
    * **groups**: subjects split at the quantiles of ``p`` into ``n_groups`` groups; per group
      the mean prediction and the Kaplan-Meier probability of the event by ``h`` (1 - S(h),
      log-type CI). These are the points of the calibration plot.
    Probabilities of exactly 0 or 1 are clipped to 1e-10 from the bounds for the logit.
    """
    level = _check_level(conf_level)
    t, e = check_survival(time, event)
    p = _probabilities(predicted, "predicted probability", len(t))
    h = float(_times_at([horizon], "horizon")[0])
    w = censoring_weights(t, e, h)
    tt = aeq_times(t)
    y = ((tt <= h) & e).astype(float)
    use = w > 0
    lp = _logit(p)
    X = np.column_stack([np.ones(use.sum()), lp[use]])
    (a, b), ok1 = _weighted_logistic(X, y[use], w[use], np.zeros(use.sum()))
    (a0,), ok2 = _weighted_logistic(X[:, :1], y[use], w[use], lp[use])
    km = kaplan_meier(t, e, level)
    s_h = float(km.at(h)[0][0])
    observed = 1 - s_h
    expected = float(np.mean(p))
    groups = []
    k = max(1, min(int(n_groups), len(np.unique(p))))
    edges = np.quantile(p, np.linspace(0, 1, k + 1))
    gi = np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, k - 1)
    for j in range(k):
        m = gi == j
        if not m.any():
            continue
        kmj = kaplan_meier(t[m], e[m], level)
        s, lo, hi = (float(x[0]) for x in kmj.at(h))
        groups.append({"group": j + 1, "n": int(m.sum()), "predicted": float(p[m].mean()),
                       "observed": 1 - s, "observed_ci": [1 - hi, 1 - lo],
                       "p_min": float(p[m].min()), "p_max": float(p[m].max())})
    return Calibration(h, float(b), float(a0), observed, expected,
                       observed / expected if expected > 0 else float("nan"),
                       groups, int(use.sum()), bool(ok1 and ok2))


# --------------------------------------------------------------------------- risk groups

def risk_groups(risk, n_groups: int = 3, cutoffs=None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Split subjects by risk: at given ``cutoffs`` or at the quantiles into ``n_groups``.

    A subject with ``risk <= cut`` falls below the cut. Labels are "low"/"high" (2 groups),
    "low"/"medium"/"high" (3), otherwise "Q1".."Qk" from lowest to highest risk. Returns
    (group index per subject, labels, cut points). Empty groups (heavy ties) are dropped.
    """
    r = finite(risk, "risk")
    if cutoffs is None:
        k = int(n_groups)
        if k < 2:
            raise InputError("risk groups: need at least 2 groups.")
        cuts = np.unique(np.quantile(r, np.arange(1, k) / k))
    else:
        cuts = np.unique(np.asarray(cutoffs, dtype=float))
        if not np.isfinite(cuts).all() or len(cuts) == 0:
            raise InputError("risk groups: cut-offs must be numbers.")
    gi = np.searchsorted(cuts, r, side="left")
    k = len(cuts) + 1
    names = {2: ["low", "high"], 3: ["low", "medium", "high"]}.get(k, [f"Q{i + 1}" for i in range(k)])
    present = np.unique(gi)
    if len(present) < 2:
        raise InputError("risk groups: all subjects fall in one risk group (too many tied risks).")
    remap = np.full(k, -1)
    remap[present] = np.arange(len(present))
    return remap[gi], [names[i] for i in present], cuts
