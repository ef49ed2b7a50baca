"""ROC analysis computed exactly as R's pROC does it.

Conventions (all functions)
---------------------------
* ``truth`` is 1 (or True) for a *case* (disease present, the positive class) and 0 for a
  *control*. ``score`` is any real number and **a higher score means "more likely
  positive"**: pROC's ``roc(truth, score, levels=c(0, 1), direction="<")``. Pulmo never
  flips the direction for you; an AUC below 0.5 means the score works the wrong way round.
* A case scoring the same as a control counts as half a correctly ordered pair, so
  ``AUC = P(score_case > score_control) + 0.5 * P(score_case == score_control)``
  (the Mann-Whitney statistic, equal to the trapezoidal area under the empirical ROC curve).
* At a threshold ``t`` a case is called positive when ``score >= t``.
* Scores must be finite; NaN or infinite scores are refused (pROC silently drops NaN
  and returns NaN for infinite values).

DeLong
------
The variance of the AUC is DeLong's (DeLong, DeLong & Clarke-Pearson 1988), computed
with the O(n log n) algorithm of Sun & Xu (2014, IEEE Signal Process. Lett. 21:1389):
one sort of the pooled scores gives, for every case, the number of controls below it
(ties counting one half; Sun & Xu's midrank difference ``Z_i - T_i``) and for every
control the number of cases above it. These *placement values* ``V10`` (cases) and
``V01`` (controls) give ``AUC = mean(V10)`` and
``Var = var(V10) / m + var(V01) / n`` (m cases, n controls; sample variances around the
AUC with m - 1 and n - 1 denominators). That is pROC's ``var(roc)``; the confidence
interval is pROC's ``ci.auc(method="delong")``: ``qnorm(c(a/2, 1-a/2), AUC, sqrt(Var))``,
clipped to [0, 1]; it is undefined (NaN) with fewer than 2 cases or 2 controls.
The paired test of two scores on the same cases is pROC's
``roc.test(paired=TRUE, method="delong")`` (a z statistic; 0 when both the difference and
its standard error are exactly 0); the unpaired test of two independent samples is
pROC's ``roc.test(paired=FALSE, method="delong")``, a t-like statistic ``D`` with
Welch-Satterthwaite degrees of freedom.

Thresholds (pROC's ``coords``)
------------------------------
The ROC curve is evaluated at ``-Inf``, at the midpoint between each pair of adjacent
distinct scores, and at ``+Inf`` (pROC's rule, including its handling of midpoints that
round onto a score and of scores above 1e100 in magnitude). The Youden-optimal threshold
maximises ``sensitivity + specificity`` exactly as ``coords(r, "best",
best.method="youden")``; when several thresholds tie, pROC returns all of them in
ascending order and Pulmo reports the **first (lowest)** one, listing the others in
``ThresholdMetrics.tied_thresholds``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from pulmo.errors import InputError
from pulmo.stats.checks import binary_truth, both_classes, conf_level as _check_level, finite
from pulmo.stats.proportions import clopper_pearson

__all__ = [
    "AUC", "AUCComparison", "RocCurve", "ThresholdMetrics", "roc_curve", "delong_auc",
    "bootstrap_auc", "delong_covariance", "delong_paired_test", "delong_unpaired_test",
    "youden_threshold", "threshold_metrics", "prepare",
]


# --------------------------------------------------------------------------- results

@dataclass(frozen=True)
class AUC:
    """Area under the ROC curve with its DeLong standard error and a confidence interval."""

    auc: float
    se: float                   #: sqrt of DeLong's variance (pROC ``var()``); NaN if < 2 cases or controls
    ci: tuple[float, float]     #: (lower, upper)
    conf_level: float
    method: str                 #: "delong" or "bootstrap" (how ``ci`` was obtained)
    n_cases: int
    n_controls: int
    n_boot: int | None = None
    seed: int | None = None

    @property
    def var(self) -> float:
        return self.se ** 2

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AUCComparison:
    """DeLong test of the difference between two AUCs (``auc_a - auc_b``)."""

    method: str                 #: "delong-paired" or "delong-unpaired"
    auc_a: float
    auc_b: float
    difference: float
    statistic: float            #: z (paired) or D (unpaired)
    p_value: float              #: two-sided
    df: float | None = None     #: degrees of freedom of D (unpaired only)
    se: float | None = None     #: standard error of the difference
    difference_ci: tuple[float, float] | None = None   #: paired only, as pROC's ``conf.int``
    conf_level: float = 0.95

    @property
    def statistic_name(self) -> str:
        return "Z" if self.method == "delong-paired" else "D"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["statistic_name"] = self.statistic_name
        return d


@dataclass(frozen=True)
class RocCurve:
    """The empirical ROC curve at pROC's thresholds, in ascending threshold order."""

    thresholds: np.ndarray
    sensitivities: np.ndarray
    specificities: np.ndarray
    tp: np.ndarray              #: cases with score >= threshold
    fp: np.ndarray              #: controls with score >= threshold
    n_cases: int
    n_controls: int


@dataclass(frozen=True)
class ThresholdMetrics:
    """Operating point at ``threshold`` (positive when ``score >= threshold``) with exact CIs."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float
    sensitivity_ci: tuple[float, float]
    specificity: float
    specificity_ci: tuple[float, float]
    ppv: float
    ppv_ci: tuple[float, float]
    npv: float
    npv_ci: tuple[float, float]
    youden_index: float         #: sensitivity + specificity - 1
    conf_level: float = 0.95
    tied_thresholds: tuple[float, ...] = field(default=())   #: other thresholds with the same Youden index

    def as_dict(self) -> dict:
        d = asdict(self)
        d["tied_thresholds"] = list(self.tied_thresholds)
        return d


# --------------------------------------------------------------------------- helpers

def prepare(truth, score, *, name: str = "score") -> tuple[np.ndarray, np.ndarray]:
    """Validate ``truth`` (binary, both classes present) and ``score`` (finite, same length)."""
    t = binary_truth(truth)
    both_classes(t)
    s = finite(score, name, n=len(t))
    return t, s


@dataclass
class _Placements:
    """Pooled-sort bookkeeping for one score (grouped by distinct value)."""

    order: np.ndarray
    gid: np.ndarray             # group of each sorted element
    gcase: np.ndarray           # cases per distinct value
    gctrl: np.ndarray           # controls per distinct value
    xg: np.ndarray              # per group: controls below + half the tied controls
    yg: np.ndarray              # per group: cases below + half the tied cases
    m: int
    n: int

    @property
    def theta(self) -> float:
        return float(np.dot(self.gcase, self.xg) / self.m / self.n)

    def sx(self, theta: float) -> float:
        """Sum of squared deviations of the case placements ``V10 = X / n``."""
        return float(np.dot(self.gcase, (self.xg / self.n - theta) ** 2))

    def sy(self, theta: float) -> float:
        """Sum of squared deviations of the control placements ``V01 = 1 - Y / m``."""
        return float(np.dot(self.gctrl, ((1.0 - self.yg / self.m) - theta) ** 2))

    def per_case(self, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(V10 for each case, V01 for each control), in input order."""
        v = np.empty(len(self.order))
        sorted_truth = truth[self.order]
        xs = self.xg[self.gid] / self.n
        ys = 1.0 - self.yg[self.gid] / self.m
        v[self.order] = np.where(sorted_truth, xs, ys)
        return v[truth], v[~truth]


def _placements(truth: np.ndarray, score: np.ndarray) -> _Placements:
    order = np.argsort(score, kind="stable")
    s = score[order]
    y = truth[order]
    N = len(s)
    new = np.empty(N, dtype=bool)
    new[0] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    gcase = np.add.reduceat(y.astype(np.int64), starts)
    gsize = np.diff(np.append(starts, N))
    gctrl = gsize - gcase
    ctrl_below = np.cumsum(gctrl) - gctrl
    case_below = np.cumsum(gcase) - gcase
    gid = np.cumsum(new) - 1
    m = int(gcase.sum())
    return _Placements(order, gid, gcase, gctrl, ctrl_below + gctrl / 2.0, case_below + gcase / 2.0,
                       m, N - m)


def _delong_var(p: _Placements, theta: float) -> float:
    if p.m <= 1 or p.n <= 1:
        return float("nan")
    return p.sx(theta) / (p.m - 1) / p.m + p.sy(theta) / (p.n - 1) / p.n


def _normal_ci(est: float, se: float, level: float) -> tuple[float, float]:
    if not np.isfinite(se):
        return (float("nan"), float("nan"))
    z = stats.norm.ppf(1 - (1 - level) / 2)
    lo, hi = est - z * se, est + z * se
    return (float(min(max(lo, 0.0), 1.0)), float(min(max(hi, 0.0), 1.0)))


# --------------------------------------------------------------------------- AUC

def delong_auc(truth, score, conf_level: float = 0.95) -> AUC:
    """AUC with DeLong's standard error and confidence interval (pROC ``ci.auc(method="delong")``).

    O(n log n) in the number of cases: 1,000,000 scores take a fraction of a second.
    """
    level = _check_level(conf_level)
    t, s = prepare(truth, score)
    p = _placements(t, s)
    theta = p.theta
    var = _delong_var(p, theta)
    if np.isfinite(var) and var < 0:  # rounding only
        var = 0.0
    se = float(np.sqrt(var)) if np.isfinite(var) else float("nan")
    ci = _normal_ci(theta, se, level)
    return AUC(theta, se, ci, level, "delong", p.m, p.n)


def bootstrap_auc(truth, score, conf_level: float = 0.95, n_boot: int = 2000, seed: int = 2020) -> AUC:
    """AUC with a stratified bootstrap percentile CI (pROC ``ci.auc(method="bootstrap")``).

    Each replicate resamples the cases and, separately, the controls with replacement
    (so every replicate keeps the observed prevalence); the interval is the
    ``(1-level)/2`` and ``1-(1-level)/2`` quantiles of the replicate AUCs (R's quantile
    type 7). Deterministic for a given ``seed`` (numpy's PCG64); the replicates differ
    from R's, so the bounds agree with pROC only up to Monte-Carlo error. ``se`` is
    still DeLong's.
    """
    level = _check_level(conf_level)
    if int(n_boot) < 10:
        raise InputError(f"the bootstrap needs at least 10 replicates, got {n_boot}.")
    t, s = prepare(truth, score)
    p = _placements(t, s)
    theta = p.theta
    var = _delong_var(p, theta)
    se = float(np.sqrt(max(var, 0.0))) if np.isfinite(var) else float("nan")
    sorted_truth = t[p.order]
    case_gid = p.gid[sorted_truth]
    ctrl_gid = p.gid[~sorted_truth]
    G = len(p.gcase)
    rng = np.random.default_rng(seed)
    aucs = np.empty(int(n_boot))
    for b in range(int(n_boot)):
        wc = np.bincount(case_gid[rng.integers(0, p.m, p.m)], minlength=G)
        wn = np.bincount(ctrl_gid[rng.integers(0, p.n, p.n)], minlength=G)
        below = np.cumsum(wn) - wn
        aucs[b] = np.dot(wc, below + wn / 2.0) / p.m / p.n
    lo, hi = np.quantile(aucs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return AUC(theta, se, (float(lo), float(hi)), level, "bootstrap", p.m, p.n, int(n_boot), seed)


def _covariance(t: np.ndarray, ps: list[_Placements]) -> np.ndarray:
    """DeLong's covariance matrix ``S = S10 / m + S01 / n`` of scores with these placements."""
    m, n = ps[0].m, ps[0].n
    if m <= 1 or n <= 1:
        return np.full((len(ps), len(ps)), np.nan)
    D10 = np.empty((len(ps), m))
    D01 = np.empty((len(ps), n))
    for i, p in enumerate(ps):
        x, y = p.per_case(t)
        th = p.theta
        D10[i], D01[i] = x - th, y - th
    return (D10 @ D10.T) / (m - 1) / m + (D01 @ D01.T) / (n - 1) / n


def delong_covariance(truth, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of several scores on the same cases and DeLong's covariance matrix of them.

    ``scores`` has shape (k, n_cases). Returns ``(aucs, cov)`` with ``cov`` k x k;
    ``cov[i, i]`` is pROC's ``var()`` of score i. NaN with < 2 cases or controls.
    """
    S = np.atleast_2d(np.asarray(scores, dtype=float))
    t = binary_truth(truth)
    both_classes(t)
    ps = [_placements(t, finite(S[i], f"score {i + 1}", n=len(t))) for i in range(S.shape[0])]
    return np.array([p.theta for p in ps]), _covariance(t, ps)


def delong_paired_test(truth, score_a, score_b, conf_level: float = 0.95) -> AUCComparison:
    """Paired DeLong test of two scores on the same cases (pROC ``roc.test(paired=TRUE)``).

    ``z = (AUC_a - AUC_b) / sqrt(Var_a + Var_b - 2 Cov_ab)``, two-sided normal p-value;
    ``difference_ci`` is pROC's ``conf.int`` (difference +/- z * se, not clipped). When the
    difference and its standard error are both exactly 0 (e.g. two scores that rank the
    cases identically) z is 0 and p is 1, as in pROC.
    """
    level = _check_level(conf_level)
    t = binary_truth(truth)
    both_classes(t)
    a = finite(score_a, "first score", n=len(t))
    b = finite(score_b, "second score", n=len(t))
    pa, pb = _placements(t, a), _placements(t, b)
    ta, tb = pa.theta, pb.theta
    m, n = pa.m, pa.n
    d = ta - tb
    if m <= 1 or n <= 1:
        nan = float("nan")
        return AUCComparison("delong-paired", ta, tb, d, nan, nan, None, nan, (nan, nan), level)
    # Var(AUC_a - AUC_b) = L S L' with L = (1, -1), computed from the differences of the
    # placements: never negative, and exactly 0 when both scores rank the cases alike.
    xa, ya = pa.per_case(t)
    xb, yb = pb.per_case(t)
    dx, dy = (xa - ta) - (xb - tb), (ya - ta) - (yb - tb)
    sig = float(np.sqrt(dx @ dx / (m - 1) / m + dy @ dy / (n - 1) / n))
    if sig > 0:
        z = d / sig
    else:  # pROC: 0/0 gives z = 0
        z = 0.0 if d == 0 else float(np.copysign(np.inf, d))
    p = float(2 * stats.norm.sf(abs(z)))
    zc = stats.norm.ppf(1 - (1 - level) / 2)
    return AUCComparison("delong-paired", ta, tb, d, float(z), p, None, sig,
                         (float(d - zc * sig), float(d + zc * sig)), level)


def delong_unpaired_test(truth_a, score_a, truth_b, score_b) -> AUCComparison:
    """Unpaired DeLong test of two independent samples (pROC ``roc.test(paired=FALSE)``).

    ``D = (AUC_a - AUC_b) / sqrt(Var_a + Var_b)`` with Welch-Satterthwaite degrees of
    freedom ``df = (Var_a + Var_b)^2 / (Var_a^2 / (N_a - 1) + Var_b^2 / (N_b - 1))``
    (N = cases + controls of each sample) and ``p = 2 * pt(-|D|, df)``. As in pROC the
    statistic, df and p are NaN when a sample has a single case or control, or when both
    variances are 0 (e.g. two perfectly separating scores).
    """
    ta = binary_truth(truth_a, "first group's truth")
    tb = binary_truth(truth_b, "second group's truth")
    both_classes(ta, "first group's truth")
    both_classes(tb, "second group's truth")
    sa = finite(score_a, "first group's score", n=len(ta))
    sb = finite(score_b, "second group's score", n=len(tb))
    pa, pb = _placements(ta, sa), _placements(tb, sb)
    tha, thb = pa.theta, pb.theta
    with np.errstate(divide="ignore", invalid="ignore"):
        def var(p: _Placements, th: float) -> float:
            return (np.float64(p.sx(th)) / (p.m - 1) / p.m + np.float64(p.sy(th)) / (p.n - 1) / p.n)
        va, vb = var(pa, tha), var(pb, thb)
        tot = va + vb
        se = np.sqrt(tot)
        D = (tha - thb) / se
        df = tot ** 2 / (va ** 2 / (pa.m + pa.n - 1) + vb ** 2 / (pb.m + pb.n - 1))
    if np.isfinite(D) and not np.isnan(df):
        p = float(2 * stats.t.sf(abs(D), df))
    else:
        p = float("nan")
        if np.isinf(D) and not np.isnan(df):
            p = 0.0
    return AUCComparison("delong-unpaired", tha, thb, tha - thb, float(D), p, float(df), float(se))


# --------------------------------------------------------------------------- thresholds

def _proc_thresholds(u: np.ndarray) -> np.ndarray:
    """pROC's ``roc.utils.thresholds`` for direction "<", given the sorted distinct scores."""
    a = np.concatenate(([-np.inf], u))
    b = np.concatenate((u, [np.inf]))
    with np.errstate(invalid="ignore", over="ignore"):
        t1 = (a + b) / 2
        t2 = a / 2 + b / 2
    t = np.where(np.abs(t1) > 1e100, t2, t1)
    # A midpoint that rounds onto the lower score would swallow it: use the upper score.
    inner = np.arange(1, len(u))
    low = t[inner] == u[inner - 1]
    t[inner[low]] = u[inner[low]]
    return t


def roc_curve(truth, score) -> RocCurve:
    """Sensitivity and specificity at each of pROC's thresholds (ascending)."""
    t, s = prepare(truth, score)
    cases = np.sort(s[t])
    controls = np.sort(s[~t])
    u = np.unique(s)
    m, n = len(cases), len(controls)
    cut = np.append(u, np.inf)   # threshold j calls positive the scores >= cut[j]
    tp = m - np.searchsorted(cases, cut, side="left")
    fp = n - np.searchsorted(controls, cut, side="left")
    return RocCurve(_proc_thresholds(u), tp / m, (n - fp) / n, tp, fp, m, n)


def _metrics(tp: int, fp: int, m: int, n: int, threshold: float, level: float,
             tied: tuple[float, ...] = ()) -> ThresholdMetrics:
    fn, tn = m - tp, n - fp
    ks = np.array([tp, tn, tp, tn])
    ns = np.array([m, n, tp + fp, tn + fn])
    lo, hi = clopper_pearson(ks, ns, level)
    with np.errstate(invalid="ignore", divide="ignore"):
        vals = np.where(ns > 0, ks / np.maximum(ns, 1), np.nan)
    ci = [(float(lo[i]), float(hi[i])) for i in range(4)]
    se, sp = tp / m, (n - fp) / n
    return ThresholdMetrics(float(threshold), int(tp), int(fp), int(tn), int(fn),
                            float(se), ci[0], float(sp), ci[1], float(vals[2]), ci[2],
                            float(vals[3]), ci[3], float(se + sp - 1), level, tied)


def youden_threshold(truth, score, conf_level: float = 0.95) -> ThresholdMetrics:
    """The threshold maximising sensitivity + specificity, as pROC's ``coords(r, "best")``.

    The reported threshold is pROC's: the midpoint between two adjacent distinct scores
    (or -Inf / +Inf at the ends). Sensitivity, specificity, PPV and NPV come with
    Clopper-Pearson exact intervals (``binom.test``). Ties: the lowest of the tied
    thresholds is reported; the others are in ``tied_thresholds``.
    """
    level = _check_level(conf_level)
    curve = roc_curve(truth, score)
    crit = curve.sensitivities + curve.specificities
    best = np.flatnonzero(crit == crit.max())
    j = int(best[0])
    tied = tuple(float(curve.thresholds[k]) for k in best[1:])
    return _metrics(int(curve.tp[j]), int(curve.fp[j]), curve.n_cases, curve.n_controls,
                    curve.thresholds[j], level, tied)


def threshold_metrics(truth, score, threshold: float, conf_level: float = 0.95) -> ThresholdMetrics:
    """Sensitivity, specificity, PPV, NPV (exact CIs) calling ``score >= threshold`` positive.

    Agrees with pROC's ``coords(r, x=threshold, input="threshold")``.
    """
    level = _check_level(conf_level)
    t, s = prepare(truth, score)
    thr = float(threshold)
    if np.isnan(thr):
        raise InputError("the threshold must be a number.")
    tp = int(np.count_nonzero(s[t] >= thr))
    fp = int(np.count_nonzero(s[~t] >= thr))
    return _metrics(tp, fp, int(t.sum()), int((~t).sum()), thr, level)
