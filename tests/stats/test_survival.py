"""pulmo.stats.survival: O(n log n) code against O(n^2) definitions, conventions, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pulmo.errors import InputError
from pulmo.stats import survival
from pulmo.stats.dominance import prefix_smaller


def brute_concordance(t, e, r, w=None):
    """Harrell's C (weights per earlier event) and survival::concordance's IJ variance, by pairs."""
    n = len(t)
    w = np.ones(n) if w is None else w
    cnt = np.zeros((n, 3))                         # per subject: concordant, discordant, tied
    C = D = T = 0.0
    for i in range(n):
        if not e[i]:
            continue
        later = (t > t[i]) | ((t == t[i]) & (e == 0))
        for j in np.flatnonzero(later):
            k = 0 if r[i] > r[j] else (1 if r[i] < r[j] else 2)
            cnt[i, k] += w[i]
            cnt[j, k] += w[i]
            C, D, T = C + w[i] * (k == 0), D + w[i] * (k == 1), T + w[i] * (k == 2)
    npair = C + D + T
    somer = (C - D) / npair
    dfbeta = (cnt[:, 0] - cnt[:, 1]) / npair - somer / npair * cnt.sum(axis=1)
    return (C + T / 2) / npair, np.sqrt(np.sum(dfbeta ** 2) / 4), (C, D, T)


@pytest.mark.parametrize("seed", range(6))
def test_harrell_c_equals_the_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    t = rng.integers(1, 30, n).astype(float) if seed % 2 else rng.exponential(5, n) + 0.1
    e = rng.integers(0, 2, n)
    e[0] = 1
    r = rng.integers(0, 8, n).astype(float) if seed % 3 else rng.normal(size=n)
    c, se, (C, D, T) = brute_concordance(t, e, r)
    h = survival.harrell_c(t, e, r)
    assert h.c_index == pytest.approx(c, abs=1e-12)
    assert h.se == pytest.approx(se, rel=1e-9, abs=1e-15)
    assert (h.concordant, h.discordant, h.tied_risk) == (C, D, T)


def test_uno_c_equals_the_weighted_pairwise_definition():
    rng = np.random.default_rng(9)
    n = 250
    t = np.round(rng.exponential(4, n), 1) + 0.1
    e = rng.integers(0, 2, n)
    r = np.round(rng.normal(size=n), 1)
    # G(t-) by hand: censoring KM, subjects with an event at t not at risk of censoring at t
    u = np.unique(t)
    G, Gleft = 1.0, {}
    for x in u:
        Gleft[x] = G
        at_risk = np.sum(t >= x) - np.sum((t == x) & (e == 1))
        cens = np.sum((t == x) & (e == 0))
        if cens:
            G *= (at_risk - cens) / at_risk
    w = np.array([1 / Gleft[x] ** 2 for x in t])
    c, se, _ = brute_concordance(t, e, r, w)
    uc = survival.uno_c(t, e, r)
    assert uc.c_index == pytest.approx(c, abs=1e-12)
    assert uc.se == pytest.approx(se, rel=1e-9)


@pytest.mark.parametrize("n", [1, 2, 3, 63, 64, 65, 1000, 4097])
def test_dominance_kernel_equals_brute_force(n):
    rng = np.random.default_rng(n)
    val = rng.permutation(n)
    flag = rng.integers(0, 2, n)
    wf = rng.random(n)
    cnt, wsum = prefix_smaller(val, flag)
    cnt2, wsum2 = prefix_smaller(val, wf)
    for p in range(0, n, max(1, n // 97)):
        below = val[:p] < val[p]
        assert cnt[p] == below.sum() == cnt2[p]
        assert wsum[p] == flag[:p][below].sum()
        assert wsum2[p] == pytest.approx(wf[:p][below].sum(), abs=1e-9)


def test_higher_risk_earlier_event_gives_c_above_half():
    rng = np.random.default_rng(4)
    x = rng.normal(size=2000)
    t = rng.exponential(np.exp(-x))
    e = np.ones(2000, int)
    assert survival.harrell_c(t, e, x).c_index > 0.6
    assert survival.harrell_c(t, e, -x).c_index == pytest.approx(1 - survival.harrell_c(t, e, x).c_index)


def brute_td_auc(t, e, r, h):
    Gu, Gv = survival._censoring_km(t, e.astype(bool))
    case = (t <= h) & (e == 1)
    ctrl = t > h
    num = den = 0.0
    for i in np.flatnonzero(case):
        k = np.searchsorted(Gu, t[i], "left") - 1
        wi = 1 / (Gv[k] if k >= 0 else 1.0)
        num += wi * np.sum((r[i] > r[ctrl]) + 0.5 * (r[i] == r[ctrl]))
        den += wi * ctrl.sum()
    return num / den


def test_time_dependent_auc_equals_the_ipcw_definition_with_censoring_and_ties():
    rng = np.random.default_rng(12)
    n = 300
    t = np.round(rng.exponential(3, n), 1) + 0.1
    e = rng.integers(0, 2, n)
    r = np.round(rng.normal(size=n) - 0.2 * t, 1)
    td = survival.cumulative_dynamic_auc(t, e, r, [1.0, 2.0, 4.0])
    for h, a in zip(td.times, td.auc):
        assert a == pytest.approx(brute_td_auc(t, e, r, h), abs=1e-12)
    assert np.isnan(survival.cumulative_dynamic_auc(t, e, r, [1000.0]).auc[0])   # no controls


def test_brier_without_censoring_is_the_mean_squared_error():
    rng = np.random.default_rng(1)
    t = rng.exponential(5, 500) + 0.01
    e = np.ones(500, int)
    p = rng.random(500)
    y = (t <= 4.0).astype(float)
    assert survival.brier_score(t, e, p, 4.0) == pytest.approx(np.mean((y - p) ** 2), abs=1e-12)
    P = np.column_stack([p, p, p])
    bs = [survival.brier_score(t, e, p, h) for h in (1, 2, 4)]
    ibs = survival.integrated_brier_score(t, e, P, [1, 2, 4])
    assert ibs == pytest.approx((0.5 * (bs[0] + bs[1]) * 1 + 0.5 * (bs[1] + bs[2]) * 2) / 3)


def test_calibration_of_true_probabilities_has_slope_one_and_intercept_zero():
    rng = np.random.default_rng(8)
    n = 20000
    x = rng.normal(size=n)
    rate = 0.1 * np.exp(0.7 * x)
    t = rng.exponential(1 / rate)
    c = rng.exponential(20, n)
    time, event = np.minimum(t, c) + 1e-9, (t <= c).astype(int)
    h = 5.0
    p_true = 1 - np.exp(-rate * h)
    cal = survival.calibration_at_horizon(time, event, p_true, h)
    assert cal.slope == pytest.approx(1, abs=0.08) and cal.intercept == pytest.approx(0, abs=0.05)
    assert cal.observed == pytest.approx(cal.expected, rel=0.05)
    over = survival.calibration_at_horizon(time, event, np.clip(p_true * 1.8, 0, 1), h)
    assert over.intercept < -0.3 and over.oe_ratio < 0.7          # risks overestimated
    assert len(cal.groups) == 10 and sum(g["n"] for g in cal.groups) == n


def test_kaplan_meier_and_logrank_basic_facts():
    km = survival.kaplan_meier([1, 2, 2, 3, 4], [1, 1, 0, 1, 0])
    assert km.surv.tolist() == pytest.approx([0.8, 0.6, 0.3, 0.3])
    assert km.at([0.5, 2.5, 10])[0].tolist() == pytest.approx([1.0, 0.6, 0.3])
    t = np.r_[np.arange(1, 21), np.arange(1, 21) * 3.0]
    lr = survival.logrank_test(t, np.ones(40, int), np.repeat(["a", "b"], 20))
    assert lr.p_value < 0.01 and lr.observed.sum() == 40


def test_risk_groups():
    r = np.arange(12.0)
    gi, labels, cuts = survival.risk_groups(r, 3)
    assert labels == ["low", "medium", "high"] and np.bincount(gi).tolist() == [4, 4, 4]
    gi, labels, _ = survival.risk_groups(r, cutoffs=[2.5])
    assert labels == ["low", "high"] and gi.sum() == 9
    with pytest.raises(InputError, match="one risk group"):
        survival.risk_groups(np.ones(10), 3)


@pytest.mark.parametrize("time,event,message", [
    ([1.0, -3.0, 2.0], [1, 0, 1], "cannot be negative"),
    ([1.0, np.nan, 2.0], [1, 0, 1], "missing"),
    ([1.0, np.inf, 2.0], [1, 0, 1], "infinite"),
    ([1.0, 2.0, 3.0], [1, 2, 1], "0 \\(censored\\) or 1 \\(event\\)"),
    ([1.0, 2.0], [1, 0, 1], "has 3 values but there are 2"),
])
def test_bad_survival_input_is_refused(time, event, message):
    with pytest.raises(InputError, match=message):
        survival.harrell_c(time, event, np.zeros(len(time)))


def test_time_zero_is_accepted_by_the_api_as_in_R():
    h = survival.harrell_c([0.0, 1.0, 2.0, 3.0], [1, 1, 0, 1], [4, 3, 2, 1])
    assert h.c_index == 1.0 and h.concordant == 5


def test_no_events_gives_nan_not_a_crash():
    h = survival.harrell_c([1.0, 2.0, 3.0], [0, 0, 0], [1, 2, 3])
    assert np.isnan(h.c_index) and h.n_events == 0
