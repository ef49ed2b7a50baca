"""Subgroup tables: per-level AUC, pairwise unpaired DeLong tests, Holm adjustment, bands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pulmo.errors import InputError
from pulmo.stats import roc
from pulmo.stats.subgroups import band, holm, subgroup_table
from statshelp import assert_close, write_csv


def _data(seed=0, n=600):
    rng = np.random.default_rng(seed)
    vendor = rng.choice(["GE", "Philips", "Siemens"], n)
    y = rng.integers(0, 2, n)
    effect = np.select([vendor == "GE", vendor == "Philips"], [2.0, 1.0], 0.3)
    return y, rng.normal(size=n) + effect * y, vendor


def test_table_rows_are_the_subgroup_analyses():
    y, s, vendor = _data()
    tab = subgroup_table(y, s, vendor, column="vendor", score_name="model")
    assert [lv.level for lv in tab.levels] == ["GE", "Philips", "Siemens"]
    for lv in tab.levels:
        m = vendor == lv.level
        assert lv.auc.auc == roc.delong_auc(y[m], s[m]).auc and lv.n == m.sum()
    assert [(c.a, c.b) for c in tab.comparisons] == [("GE", "Philips"), ("GE", "Siemens"), ("Philips", "Siemens")]
    for c in tab.comparisons:
        ma, mb = vendor == c.a, vendor == c.b
        ref = roc.delong_unpaired_test(y[ma], s[ma], y[mb], s[mb])
        assert (c.test.statistic, c.test.df, c.test.p_value) == (ref.statistic, ref.df, ref.p_value)
    ge_siemens = tab.comparisons[1]
    assert ge_siemens.test.p_value < 1e-6 and ge_siemens.p_holm >= ge_siemens.test.p_value
    d = tab.as_dict()
    assert d["levels"][0]["auc_ci"][0] < d["levels"][0]["auc"] < d["levels"][0]["auc_ci"][1]


def test_a_subgroup_without_positive_cases_is_listed_without_auc():
    y = np.array([0, 1, 0, 1, 0, 0, 0])
    s = np.array([0.1, 0.9, 0.3, 0.6, 0.2, 0.4, 0.5])
    g = np.array(["a", "a", "a", "a", "b", "b", "b"])
    tab = subgroup_table(y, s, g)
    assert tab.levels[1].auc is None and "no positive" in tab.levels[1].note
    assert tab.comparisons[0].test is None and tab.comparisons[0].as_dict()["p_value"] is None


def test_single_level_is_refused():
    with pytest.raises(InputError, match="single value"):
        subgroup_table([0, 1, 0, 1], [1, 2, 3, 4], ["F", "F", "F", "F"], column="sex")


def test_bands():
    labels, order = band([17, 40, 64.9, 65, 90], [40, 65], "age")
    assert order == ["<40", "40-<65", ">=65"]
    assert labels.tolist() == ["<40", "40-<65", "40-<65", ">=65", ">=65"]


def test_holm_equals_R_p_adjust(tmp_path, run_r):
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.5, 0.001, 0.2])
    write_csv(tmp_path / "p.csv", p=p)
    run_r('d <- read.csv("p.csv"); write.csv(data.frame(h = p.adjust(d$p, "holm")), "h.csv", row.names = FALSE)',
          packages=("stats",))
    assert_close(holm(p), pd.read_csv(tmp_path / "h.csv")["h"], what="Holm")
