"""pulmo.stats.roc: definitions checked against brute force, conventions, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pulmo.errors import InputError
from pulmo.stats import roc


def brute_auc_and_var(y, s):
    """DeLong's AUC and variance by the O(m n) definition."""
    y = np.asarray(y, bool)
    x, c = s[y], s[~y]
    psi = (x[:, None] > c[None, :]) + 0.5 * (x[:, None] == c[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    auc = psi.mean()
    return auc, v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(c), v10, v01


@pytest.mark.parametrize("seed", range(5))
def test_fast_delong_equals_the_quadratic_definition(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = rng.integers(0, 2, n)
    s = np.round(rng.normal(size=n) + y, 1)              # many ties
    auc, var, *_ = brute_auc_and_var(y, s)
    a = roc.delong_auc(y, s)
    assert a.auc == pytest.approx(auc, abs=1e-12)
    assert a.var == pytest.approx(var, rel=1e-10)
    z = 1.959963984540054
    assert a.ci == pytest.approx((auc - z * np.sqrt(var), auc + z * np.sqrt(var)), abs=1e-10)


def test_covariance_matrix_matches_placements_of_both_scores():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 200)
    s1, s2 = rng.normal(size=200) + y, np.round(rng.normal(size=200) + y)
    aucs, cov = roc.delong_covariance(y, [s1, s2])
    _, v1, x1, c1 = brute_auc_and_var(y, s1)
    _, v2, x2, c2 = brute_auc_and_var(y, s2)
    m, n = len(x1), len(c1)
    cov12 = np.cov(x1, x2)[0, 1] / m + np.cov(c1, c2)[0, 1] / n
    assert cov == pytest.approx(np.array([[v1, cov12], [cov12, v2]]), rel=1e-10)
    p = roc.delong_paired_test(y, s1, s2)
    assert p.statistic == pytest.approx((aucs[0] - aucs[1]) / np.sqrt(v1 + v2 - 2 * cov12), rel=1e-10)


def test_scores_ranking_cases_alike_are_not_different():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)
    t = roc.delong_paired_test(y, s, 3 * s + 7)
    assert (t.difference, t.statistic, t.p_value) == (0.0, 0.0, 1.0)


def test_auc_is_rank_based_and_direction_is_never_flipped():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = rng.normal(size=500) + y
    a = roc.delong_auc(y, s)
    assert roc.delong_auc(y, np.exp(s)).auc == pytest.approx(a.auc, abs=1e-15)   # monotone transform
    flipped = roc.delong_auc(y, -s)
    assert flipped.auc == pytest.approx(1 - a.auc, abs=1e-12)                    # below 0.5, not flipped
    assert flipped.se == pytest.approx(a.se, rel=1e-10)


def test_youden_threshold_convention():
    y = [0, 0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.35, 0.4, 0.3, 0.8, 0.9]
    m = roc.youden_threshold(y, s)
    # midpoints between adjacent distinct scores; best se+sp = 2/3 + 1 at (0.4 + 0.8) / 2
    assert m.threshold == pytest.approx(0.6)
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 0, 4, 1)
    assert m.ppv == 1.0 and m.npv == 0.8 and m.tied_thresholds == ()
    # the metrics at that threshold (score >= t positive) are the same operating point
    at = roc.threshold_metrics(y, s, m.threshold)
    assert (at.sensitivity, at.specificity) == (m.sensitivity, m.specificity)
    assert roc.threshold_metrics(y, s, 0.8).tp == 2          # score == threshold is positive


def test_youden_ties_report_the_lowest_threshold_and_list_the_others():
    m = roc.youden_threshold([0, 1, 0, 1], [1.0, 1.0, 1.0, 1.0])   # constant score
    assert m.threshold == -np.inf and m.tied_thresholds == (np.inf,)
    assert (m.sensitivity, m.specificity) == (1.0, 0.0)


def test_exact_ci_bounds_contain_the_estimate_and_reach_0_and_1():
    m = roc.youden_threshold([0, 0, 1, 1, 1], [1, 2, 3, 4, 5])
    assert m.sensitivity == 1.0 and m.sensitivity_ci[1] == 1.0 and m.sensitivity_ci[0] < 1.0
    assert m.specificity_ci[0] <= m.specificity <= m.specificity_ci[1]
    nobody = roc.threshold_metrics([0, 0, 1, 1], [1, 2, 3, 4], 10.0)
    assert nobody.tp == 0 and np.isnan(nobody.ppv) and np.isnan(nobody.ppv_ci[0])


def test_perfect_separation_has_zero_variance():
    y = np.r_[np.zeros(20), np.ones(20)]
    s = np.r_[np.arange(20), 100 + np.arange(20)]
    a = roc.delong_auc(y, s)
    assert (a.auc, a.se, a.ci) == (1.0, 0.0, (1.0, 1.0))


def test_tiny_groups_give_nan_ci_not_an_error():
    a = roc.delong_auc([0, 0, 1], [0.1, 0.5, 0.4])
    assert a.auc == 0.5 and np.isnan(a.se) and np.isnan(a.ci[0])


def test_bootstrap_is_seeded_and_agrees_with_delong_for_large_samples():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 2000)
    s = rng.normal(size=2000) + 0.8 * y
    b1 = roc.bootstrap_auc(y, s, n_boot=400, seed=5)
    b2 = roc.bootstrap_auc(y, s, n_boot=400, seed=5)
    b3 = roc.bootstrap_auc(y, s, n_boot=400, seed=6)
    d = roc.delong_auc(y, s)
    assert b1.ci == b2.ci and b1.ci != b3.ci
    assert b1.ci == pytest.approx(d.ci, abs=0.01)
    assert b1.method == "bootstrap" and b1.auc == d.auc


def test_unpaired_test_is_symmetric_and_detects_a_difference():
    rng = np.random.default_rng(2)
    ya, yb = rng.integers(0, 2, 400), rng.integers(0, 2, 300)
    sa, sb = rng.normal(size=400) + 1.5 * ya, rng.normal(size=300) + 0.2 * yb
    t1 = roc.delong_unpaired_test(ya, sa, yb, sb)
    t2 = roc.delong_unpaired_test(yb, sb, ya, sa)
    assert t1.statistic == pytest.approx(-t2.statistic) and t1.p_value == pytest.approx(t2.p_value)
    assert t1.p_value < 1e-6 and t1.df > 100


@pytest.mark.parametrize("truth,score,message", [
    ([0, 1, 2, 1], [1, 2, 3, 4], "0 (negative) or 1 (positive)"),
    ([1, 1, 1], [1, 2, 3], "all 3 cases are positive"),
    ([0, 0], [1, 2], "all 2 cases are negative"),
    ([0, 1, 1], [0.1, np.nan, 0.3], "NaN"),
    ([0, 1, 1], [0.1, np.inf, 0.3], "infinite"),
    ([0, 1, 1], [0.1, 0.3], "has 2 values but there are 3"),
])
def test_bad_input_is_refused_with_a_clear_message(truth, score, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        roc.delong_auc(truth, score)
