"""pulmo.stats.roc against R's pROC (and binom.test), on data generated here.

One Rscript call computes every reference value for all cases (ties, constant scores,
perfect and inverted separation, single cases, huge magnitudes, scores one ulp apart,
tied Youden optima); the test compares to 1e-6.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pulmo.stats import roc
from pulmo.stats.proportions import clopper_pearson
from statshelp import assert_close, write_csv


def _cases():
    rng = np.random.default_rng(20240601)
    out = []

    def add(name, y, a, b, yb=None, sb=None):
        y = np.asarray(y)
        if yb is None:  # an independent second sample for the unpaired test
            yb = rng.permutation(y)
            sb = np.asarray(b)[::-1].copy()
        out.append((name, y, np.asarray(a, float), np.asarray(b, float), np.asarray(yb), np.asarray(sb, float)))

    y = rng.integers(0, 2, 60); y[:2] = [0, 1]
    add("continuous", y, rng.normal(size=60) + y, rng.normal(size=60) + 0.4 * y)
    y = rng.integers(0, 2, 150); y[:2] = [0, 1]
    add("heavy ties", y, np.round(rng.normal(size=150) + y), np.round(2 * rng.random(150) + y) / 2)
    y = rng.integers(0, 2, 40); y[:2] = [0, 1]
    add("constant score", y, np.ones(40), rng.normal(size=40) + y)
    y = np.r_[np.zeros(15), np.ones(12)].astype(int)
    add("perfect separation", y, y * 10 + rng.random(27), rng.random(27) + 0.3 * y)
    add("inverted", y, -y * 10 + rng.random(27), rng.random(27))
    add("both perfect", y, y + rng.random(27) * 0.1, 2 * y + rng.random(27) * 0.1,
        y, y * 5.0 + rng.random(27))
    add("one case", [0, 0, 0, 1], [0.1, 0.5, 0.3, 0.4], [0.2, 0.1, 0.3, 0.9],
        [0, 1, 1, 0], [0.3, 0.2, 0.8, 0.1])
    add("two and three", [1, 0, 1, 0, 0], [0.9, 0.2, 0.4, 0.4, 0.1], [0.3, 0.3, 0.3, 0.1, 0.5],
        [0, 1, 0, 1, 1], [1.0, 2.0, 1.0, 3.0, 2.0])
    y = rng.integers(0, 2, 3000); y[:2] = [0, 1]
    add("large integer scores", y, rng.integers(0, 11, 3000) + 2 * y, rng.integers(0, 5, 3000) + y)
    y = rng.integers(0, 2, 30); y[:2] = [0, 1]
    add("huge magnitudes", y, rng.choice([-1e300, -1e120, 0.0, 1e120, 1e300], 30) * np.where(y, 1, 0.5),
        rng.normal(size=30) * 1e200)
    y = rng.integers(0, 2, 30); y[:2] = [0, 1]
    ulp = 1.0 + np.arange(6) * np.finfo(float).eps
    add("one ulp apart", y, rng.choice(ulp, 30) + 0 * y, rng.choice(ulp, 30))
    add("tied youden optima", [0, 0, 1, 1, 0, 0, 1, 1], [1, 2, 3, 4, 5, 6, 7, 8], [1, 1, 2, 2, 3, 3, 4, 4])
    y = rng.integers(0, 2, 80); y[:2] = [0, 1]
    add("negative scores", y, -np.abs(rng.normal(size=80)) + 0.5 * y, -rng.exponential(size=80) * (1 - 0.3 * y))
    return out


THRESHOLDS = (0.0, 0.5, 1.0, 3.0)

R_SCRIPT = r"""
suppressMessages(library(pROC))
na <- function(expr) tryCatch(suppressWarnings(expr), error = function(e) NA)
rocs <- function(y, x) roc(y, x, direction = "<", levels = c(0, 1), quiet = TRUE)
ncase <- as.integer(readLines("ncases.txt"))
thr <- c(0, 0.5, 1, 3)
rows <- list()
for (i in seq_len(ncase)) {
  d <- read.csv(sprintf("case%d.csv", i)); g <- read.csv(sprintf("group%d.csv", i))
  ra <- rocs(d$y, d$a); rb <- rocs(d$y, d$b); rg <- rocs(g$y, g$s)
  ci <- na(ci.auc(ra, method = "delong"))
  if (length(ci) < 3) ci <- rep(NA, 3)
  tp <- na(roc.test(ra, rb, method = "delong", paired = TRUE))
  tu <- na(roc.test(ra, rg, method = "delong", paired = FALSE))
  best <- suppressWarnings(coords(ra, "best", best.method = "youden",
                                  ret = c("threshold", "sensitivity", "specificity", "ppv", "npv")))
  at <- suppressWarnings(coords(ra, x = thr, input = "threshold", ret = c("sensitivity", "specificity")))
  pz <- unname(if (is.list(tp)) c(tp$statistic, tp$p.value, tp$conf.int) else rep(NA, 4))
  pu <- unname(if (is.list(tu)) c(tu$statistic, tu$parameter, tu$p.value) else rep(NA, 3))
  ci <- unname(as.numeric(ci))
  rows[[i]] <- c(auc = as.numeric(auc(ra)), var = na(var(ra)), ci_low = ci[1], ci_high = ci[3],
                 auc_b = as.numeric(auc(rb)), var_b = na(var(rb)),
                 z = pz[1], p_paired = pz[2], dci_low = pz[3], dci_high = pz[4],
                 D = pu[1], df = pu[2], p_unpaired = pu[3],
                 thr = best$threshold[1], se = best$sensitivity[1], sp = best$specificity[1],
                 ppv = best$ppv[1], npv = best$npv[1], nbest = nrow(best),
                 se_at = at$sensitivity, sp_at = at$specificity)
}
write.csv(do.call(rbind, rows), "pROC.csv", row.names = FALSE)
b <- read.csv("binom.csv")
ci <- t(mapply(function(k, n) binom.test(k, n)$conf.int, b$k, b$n))
write.csv(data.frame(low = ci[, 1], high = ci[, 2]), "binom_R.csv", row.names = FALSE)
"""


def test_roc_statistics_identical_to_pROC(tmp_path, run_r):
    cases = _cases()
    for i, (_, y, a, b, yb, sb) in enumerate(cases, 1):
        write_csv(tmp_path / f"case{i}.csv", y=y, a=a, b=b)
        write_csv(tmp_path / f"group{i}.csv", y=yb, s=sb)
    (tmp_path / "ncases.txt").write_text(str(len(cases)))
    ks = np.array([0, 1, 5, 10, 0, 1, 3, 97, 250, 1])
    ns = np.array([10, 1, 5, 10, 1, 2, 40, 100, 1000, 3])
    write_csv(tmp_path / "binom.csv", k=ks, n=ns)
    run_r(R_SCRIPT, packages=("pROC",))
    ref = pd.read_csv(tmp_path / "pROC.csv")
    assert len(ref) == len(cases)
    assert ref["z"].notna().sum() >= len(cases) - 2 and ref["D"].notna().sum() >= len(cases) - 4
    for i, (name, y, a, b, yb, sb) in enumerate(cases):
        r = ref.iloc[i]
        A = roc.delong_auc(y, a)
        B = roc.delong_auc(y, b)
        P = roc.delong_paired_test(y, a, b)
        U = roc.delong_unpaired_test(y, a, yb, sb)
        Y = roc.youden_threshold(y, a)
        assert_close([A.auc, A.var, A.ci[0], A.ci[1], B.auc, B.var],
                     r[["auc", "var", "ci_low", "ci_high", "auc_b", "var_b"]], what=f"{name}: AUC/var/CI")
        assert_close([P.statistic, P.p_value, *P.difference_ci],
                     r[["z", "p_paired", "dci_low", "dci_high"]], what=f"{name}: paired test")
        assert_close([U.statistic, U.df, U.p_value], r[["D", "df", "p_unpaired"]], what=f"{name}: unpaired test")
        assert_close([Y.threshold, Y.sensitivity, Y.specificity, Y.ppv, Y.npv, 1 + len(Y.tied_thresholds)],
                     r[["thr", "se", "sp", "ppv", "npv", "nbest"]], what=f"{name}: Youden")
        for j, t in enumerate(THRESHOLDS):
            m = roc.threshold_metrics(y, a, t)
            assert_close([m.sensitivity, m.specificity], [r[f"se_at{j + 1}"], r[f"sp_at{j + 1}"]],
                         what=f"{name}: coords at {t}")
    bref = pd.read_csv(tmp_path / "binom_R.csv")
    lo, hi = clopper_pearson(ks, ns)
    assert_close(lo, bref["low"], what="Clopper-Pearson lower")
    assert_close(hi, bref["high"], what="Clopper-Pearson upper")


def test_the_reference_cases_cover_the_edge_cases():
    """The R comparison above is only as good as its cases: check they are what they claim."""
    cases = {c[0]: c for c in _cases()}
    assert roc.delong_auc(*cases["perfect separation"][1:3]).auc == 1.0
    assert roc.delong_auc(*cases["inverted"][1:3]).auc == 0.0
    assert roc.delong_auc(*cases["constant score"][1:3]).auc == 0.5
    assert np.isnan(roc.delong_auc(*cases["one case"][1:3]).se)
    assert len(roc.youden_threshold(*cases["tied youden optima"][1:3]).tied_thresholds) >= 1
    _, y, a, *_ = cases["one ulp apart"]
    assert len(np.unique(a)) >= 3 and np.ptp(a) < 1e-14
