"""Subgroup tables: AUC per level of a grouping variable and every pairwise comparison.

This is the table of radiology-AI validation papers ("AUC by sex, age band, scanner
vendor, with the p-value of each pair"). Within one table the subgroups are disjoint
sets of patients, so pairs are compared with the **unpaired** DeLong test (pROC's
``roc.test(paired=FALSE)``). ``p_holm`` adjusts the p-values of one table for multiple
comparisons (Holm's step-down method); the raw ``p_value`` is what pROC reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from pulmo.errors import InputError
from pulmo.stats.checks import as_1d, binary_truth, conf_level as _check_level, finite
from pulmo.stats.roc import AUC, AUCComparison, delong_auc, delong_unpaired_test

__all__ = ["SubgroupLevel", "SubgroupComparison", "SubgroupTable", "subgroup_table", "band",
           "holm"]


@dataclass(frozen=True)
class SubgroupLevel:
    level: str
    n: int
    n_cases: int
    n_controls: int
    auc: AUC | None               #: None when the subgroup lacks cases or controls
    note: str = ""

    def as_dict(self) -> dict:
        d = {"level": self.level, "n": self.n, "n_positive": self.n_cases, "n_negative": self.n_controls}
        if self.auc is not None:
            d.update(auc=self.auc.auc, auc_se=self.auc.se, auc_ci=list(self.auc.ci))
        else:
            d.update(auc=None, auc_se=None, auc_ci=[None, None])
        d["note"] = self.note
        return d


@dataclass(frozen=True)
class SubgroupComparison:
    a: str
    b: str
    test: AUCComparison | None
    p_holm: float | None = None
    note: str = ""

    def as_dict(self) -> dict:
        d = {"a": self.a, "b": self.b, "method": "delong-unpaired"}
        if self.test is not None:
            d.update(auc_a=self.test.auc_a, auc_b=self.test.auc_b, difference=self.test.difference,
                     statistic=self.test.statistic, statistic_name="D", df=self.test.df,
                     p_value=self.test.p_value, p_holm=self.p_holm)
        else:
            d.update(auc_a=None, auc_b=None, difference=None, statistic=None, statistic_name="D",
                     df=None, p_value=None, p_holm=None)
        d["note"] = self.note
        return d


@dataclass(frozen=True)
class SubgroupTable:
    column: str
    score: str
    levels: list[SubgroupLevel]
    comparisons: list[SubgroupComparison] = field(default_factory=list)
    conf_level: float = 0.95

    def as_dict(self) -> dict:
        return {"column": self.column, "score": self.score, "conf_level": self.conf_level,
                "levels": [lv.as_dict() for lv in self.levels],
                "comparisons": [c.as_dict() for c in self.comparisons]}


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values (NaN entries stay NaN and do not count), as R's ``p.adjust``."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def band(values, edges, name: str = "value") -> tuple[np.ndarray, list[str]]:
    """Cut numbers into bands at ``edges``: "<e1", "e1-<e2", ..., ">=ek" (ordered labels)."""
    v = finite(values, name)
    e = np.asarray(sorted(set(float(x) for x in edges)))
    if len(e) == 0:
        raise InputError(f"{name}: give at least one band edge.")
    fmt = [f"{x:g}" for x in e]
    labels = [f"<{fmt[0]}"] + [f"{fmt[i]}-<{fmt[i + 1]}" for i in range(len(e) - 1)] + [f">={fmt[-1]}"]
    idx = np.searchsorted(e, v, side="right")
    return np.array(labels, dtype=object)[idx], labels


def subgroup_table(truth, score, groups, *, column: str = "group", score_name: str = "score",
                   conf_level: float = 0.95, order: list[str] | None = None) -> SubgroupTable:
    """AUC (DeLong CI) per subgroup and the unpaired DeLong test of every pair of subgroups.

    Subgroups without both positive and negative cases are listed with no AUC, and their
    comparisons with no p-value. A grouping with a single level is refused.
    """
    level = _check_level(conf_level)
    t = binary_truth(truth)
    s = finite(score, score_name, n=len(t))
    g = as_1d(groups, column).astype(str)
    if len(g) != len(t):
        raise InputError(f"{column}: has {len(g)} values but there are {len(t)} cases.")
    present = list(dict.fromkeys(np.unique(g)))
    if order is not None:
        present = [x for x in order if x in set(present)] + [x for x in present if x not in set(order)]
    if len(present) < 2:
        only = present[0] if present else "(none)"
        raise InputError(f"subgroup column '{column}' has a single value ('{only}'); comparing "
                         "subgroups needs at least two.")
    levels: list[SubgroupLevel] = []
    masks = {}
    for lv in present:
        m = g == lv
        masks[lv] = m
        nc, nn = int(t[m].sum()), int((~t[m]).sum())
        if nc == 0 or nn == 0:
            note = "no positive cases" if nc == 0 else "no negative cases"
            levels.append(SubgroupLevel(lv, int(m.sum()), nc, nn, None, note + ": AUC undefined"))
        else:
            a = delong_auc(t[m], s[m], level)
            note = "" if (nc > 1 and nn > 1) else "fewer than 2 positive or negative cases: no CI"
            levels.append(SubgroupLevel(lv, int(m.sum()), nc, nn, a, note))
    tests: list[tuple[str, str, AUCComparison | None, str]] = []
    have = {lv.level: lv.auc is not None for lv in levels}
    for a, b in combinations(present, 2):
        if not (have[a] and have[b]):
            tests.append((a, b, None, "a subgroup has no AUC"))
            continue
        r = delong_unpaired_test(t[masks[a]], s[masks[a]], t[masks[b]], s[masks[b]])
        note = "" if np.isfinite(r.p_value) else "variance undefined or zero (tiny or perfectly separated subgroup)"
        tests.append((a, b, r, note))
    adj = holm([x[2].p_value if x[2] is not None else np.nan for x in tests])
    comps = [SubgroupComparison(a, b, r, (None if np.isnan(adj[i]) else float(adj[i])), note)
             for i, (a, b, r, note) in enumerate(tests)]
    return SubgroupTable(column, score_name, levels, comps, level)
