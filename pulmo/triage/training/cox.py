"""Cox proportional hazards in numpy: Newton-Raphson fit (Efron or Breslow ties,
optional ridge penalty) and the Breslow baseline cumulative hazard.

No lifelines needed at run time; the test suite checks the coefficients against
``lifelines.CoxPHFitter`` to 1e-5.

Objective maximised::

    loglik(beta) - n * ridge / 2 * ||beta||^2

(``loglik`` the summed partial log-likelihood, ``n`` the number of rows): the scale of
lifelines' ``penalizer`` with ``l1_ratio=0``. lifelines applies it to covariates it has
standardised itself; here it applies to the columns exactly as given (in training
they are already scaled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pulmo.errors import InputError

TIES = ("efron", "breslow")


@dataclass
class CoxFit:
    """Result of :func:`fit_cox`.

    Attributes
    ----------
    coef : (p,) coefficients (log hazard ratios per unit of each column).
    se : (p,) standard errors from the inverse of the penalised information matrix.
    loglik : penalised partial log-likelihood at ``coef``.
    loglik_null : partial log-likelihood at ``coef = 0``.
    iterations, converged : Newton-Raphson bookkeeping.
    ties, ridge : the options used.
    """

    coef: np.ndarray
    se: np.ndarray
    loglik: float
    loglik_null: float
    iterations: int
    converged: bool
    ties: str
    ridge: float

    def linear_predictor(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef


class _Prepared:
    """Data sorted by time with tie groups, reused across Newton iterations."""

    def __init__(self, X: np.ndarray, time: np.ndarray, event: np.ndarray) -> None:
        order = np.argsort(time, kind="stable")
        self.X = X[order]
        self.time = time[order]
        self.event = event[order].astype(bool)
        n = len(self.time)
        # Risk set of an event at t: everyone with time >= t. With ascending times,
        # that is the suffix starting at the first row whose time equals t.
        self.first = np.searchsorted(self.time, self.time, side="left")
        ev = np.flatnonzero(self.event)
        self.ev = ev
        # Unique event times, the number of events at each, and each event's slot.
        ev_times = self.time[ev]
        self.uniq, self.group_of_event, self.d = np.unique(ev_times, return_inverse=True, return_counts=True)
        self.group_first = np.searchsorted(self.time, self.uniq, side="left")
        # l = 0..d-1 within each tie group (events are contiguous after sorting).
        starts = np.r_[0, np.cumsum(self.d)[:-1]]
        self.l_in_group = np.arange(len(ev)) - starts[self.group_of_event]
        # For each row: index (into uniq) of the last event time <= its time, -1 if none.
        self.last_group = np.searchsorted(self.uniq, self.time, side="right") - 1
        self.n = n


def _derivatives(prep: _Prepared, beta: np.ndarray, ties: str, need_hessian: bool = True):
    X = prep.X
    lp = X @ beta
    m = lp.max() if lp.size else 0.0
    w = np.exp(lp - m)
    # Suffix sums (risk-set sums for a set starting at index i).
    S0_suffix = np.cumsum(w[::-1])[::-1]
    S1_suffix = np.cumsum((w[:, None] * X)[::-1], axis=0)[::-1]
    S0 = S0_suffix[prep.group_first]  # per unique event time
    S1 = S1_suffix[prep.group_first]
    ev = prep.ev
    g_idx = prep.group_of_event
    if ties == "efron":
        we = w[ev]
        D0 = np.bincount(g_idx, weights=we, minlength=len(prep.uniq))
        D1 = np.zeros_like(S1)
        np.add.at(D1, g_idx, we[:, None] * X[ev])
        frac = prep.l_in_group / prep.d[g_idx]
    else:
        D0 = np.zeros(len(prep.uniq))
        D1 = np.zeros_like(S1)
        frac = np.zeros(len(ev))
    denom = S0[g_idx] - frac * D0[g_idx]  # one per event
    if np.any(denom <= 0) or not np.all(np.isfinite(denom)):
        raise FloatingPointError("non-positive risk-set sum")
    num = S1[g_idx] - frac[:, None] * D1[g_idx]
    V = num / denom[:, None]
    loglik = float(lp[ev].sum() - (np.log(denom) + m).sum())
    grad = X[ev].sum(axis=0) - V.sum(axis=0)
    if not need_hessian:
        return loglik, grad, None
    inv = 1.0 / denom
    c = np.bincount(g_idx, weights=inv, minlength=len(prep.uniq))
    e = np.bincount(g_idx, weights=frac * inv, minlength=len(prep.uniq))
    cum_c = np.r_[0.0, np.cumsum(c)]
    # Row j is in the risk set of every event time <= its own time.
    a = cum_c[prep.last_group + 1]
    # Efron: row j that is itself an event at time t_k has its weight reduced there.
    a_ev = a[ev] - e[g_idx]
    a = a.copy()
    a[ev] = a_ev
    a *= w
    H = -(X.T @ (a[:, None] * X) - V.T @ V)
    return loglik, grad, H


def _check(X, time, event):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    time = np.asarray(time, dtype=np.float64).reshape(-1)
    event = np.asarray(event, dtype=np.float64).reshape(-1)
    if X.shape[0] != time.shape[0] or event.shape != time.shape:
        raise ValueError("X, time and event must have the same number of rows")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(time))):
        raise ValueError("X and time must be finite")
    if not np.all((event == 0) | (event == 1)):
        raise ValueError("event must be 0 or 1")
    return X, time, event


def partial_loglik(X, time, event, beta, ties: str = "efron") -> float:
    """Partial log-likelihood (no penalty) of ``beta``."""
    X, time, event = _check(X, time, event)
    return _derivatives(_Prepared(X, time, event), np.asarray(beta, float), ties, need_hessian=False)[0]


def fit_cox(
    X,
    time,
    event,
    *,
    ties: str = "efron",
    ridge: float = 0.0,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> CoxFit:
    """Fit a Cox PH model by damped Newton-Raphson.

    Parameters
    ----------
    X : (n, p) covariates (used as given: no centring or scaling).
    time : (n,) follow-up times; event : (n,) 1 = event, 0 = censored.
    ties : "efron" (default, as lifelines and R's coxph) or "breslow".
    ridge : L2 penalty ``n * ridge / 2 * ||beta||^2`` subtracted from the summed
        log-likelihood (lifelines' ``penalizer`` scale).
    max_iter, tol : stop when the Newton decrement (and the change of the objective)
        falls below ``tol``.

    Raises
    ------
    InputError
        When there are no events, or the fit diverges (e.g. a covariate separates
        the outcome perfectly: use a positive ``ridge``).
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}")
    if ridge < 0:
        raise ValueError("ridge must be >= 0")
    X, time, event = _check(X, time, event)
    n, p = X.shape
    if event.sum() == 0:
        raise InputError("the Cox model needs at least one event.")
    prep = _Prepared(X, time, event)
    beta = np.zeros(p)

    lam = ridge * n

    def objective(b):
        ll, g, H = _derivatives(prep, b, ties)
        return ll - 0.5 * lam * b @ b, g - lam * b, H - lam * np.eye(p), ll

    obj, g, H, ll0 = objective(beta)
    loglik_null = ll0
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        try:
            step = np.linalg.solve(-H, g)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(-H, g, rcond=None)[0]
        decrement = float(g @ step)
        # Step halving until the objective does not decrease.
        t = 1.0
        while True:
            cand = beta + t * step
            try:
                new = objective(cand)
            except FloatingPointError:
                new = None
            if new is not None and np.isfinite(new[0]) and new[0] >= obj - 1e-12 * abs(obj):
                break
            t *= 0.5
            if t < 1e-10:
                new = None
                break
        if new is None:
            break
        beta = cand
        improvement = new[0] - obj
        obj, g, H, _ = new
        if abs(decrement) < tol or (abs(improvement) < tol * max(1.0, abs(obj)) and np.max(np.abs(t * step)) < 1e-8):
            converged = True
            break
    # A log hazard ratio above 10 per standard deviation of a covariate (HR > 22000)
    # only arises when the likelihood has no finite maximum (separation).
    spread = X.std(axis=0) if n > 1 else np.ones(p)
    if not np.all(np.isfinite(beta)) or np.max(np.abs(beta) * spread, initial=0) > 10:
        raise InputError(
            "the Cox model did not converge (a covariate may separate events from non-events "
            "perfectly); use a ridge penalty (such as 1) or remove that covariate.", code="cox_separation"
        )
    if not converged:
        # A last check: a tiny gradient means we are at the optimum anyway.
        converged = bool(np.max(np.abs(g)) < 1e-6 * max(1.0, float(event.sum())))
    try:
        cov = np.linalg.inv(-H)
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        se = np.full(p, np.nan)
    return CoxFit(coef=beta, se=se, loglik=float(obj), loglik_null=float(loglik_null),
                  iterations=it, converged=converged, ties=ties, ridge=float(ridge))


def breslow_cumulative_hazard(time, event, linear_predictor) -> tuple[np.ndarray, np.ndarray]:
    """Breslow estimator of the baseline cumulative hazard (at linear predictor 0).

    ``H0(t) = sum_{event times t_k <= t} d_k / sum_{j: T_j >= t_k} exp(lp_j)``.

    Returns ``(times, cumulative_hazard)`` at the distinct event times, increasing;
    the step function is 0 before the first event time and right-continuous.
    """
    time = np.asarray(time, dtype=np.float64).reshape(-1)
    event = np.asarray(event, dtype=np.float64).reshape(-1)
    lp = np.asarray(linear_predictor, dtype=np.float64).reshape(-1)
    order = np.argsort(time, kind="stable")
    t, e, lp = time[order], event[order].astype(bool), lp[order]
    m = lp.max()
    w = np.exp(lp - m)
    suffix = np.cumsum(w[::-1])[::-1]
    uniq, d = np.unique(t[e], return_counts=True)
    first = np.searchsorted(t, uniq, side="left")
    # d / (exp(m) * suffix) computed stably.
    increments = d / suffix[first] * np.exp(-m)
    return uniq, np.cumsum(increments)
