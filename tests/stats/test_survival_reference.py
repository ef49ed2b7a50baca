"""pulmo.stats.survival against R's survival (and pROC / glm), on data generated here.

One Rscript call computes all reference values: concordance (Harrell and Uno, with and
without ymax: C, standard error, the five pair counts) on cases with tied times, tied
risks, events and censorings at the same time, times closer than sqrt(eps), a single
event, constant risk and n = 2; survfit; survdiff with 2 and 3 groups; the AUC of
"event by t" without censoring before t (pROC); and IPCW calibration / Brier computed
in R from survfit's censoring curve and glm.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pulmo.stats import roc, survival
from statshelp import assert_close, write_csv


def _concordance_cases():
    rng = np.random.default_rng(77)
    out = []

    def add(name, t, e, r):
        out.append((name, np.asarray(t, float), np.asarray(e, int), np.asarray(r, float)))

    n = 200
    add("continuous", rng.exponential(10, n) + 0.01, rng.integers(0, 2, n), rng.normal(size=n))
    n = 300
    add("tied times and risks", rng.integers(1, 20, n), rng.integers(0, 2, n), rng.integers(0, 6, n))
    t = np.repeat([1.0, 2.0, 3.0, 4.0], 5)
    add("events and censorings at the same time", t, np.tile([1, 0, 1, 0, 1], 4), rng.integers(0, 3, 20))
    t = np.array([1, 1 + 1e-10, 2, 2 - 1e-12, 3, 3.5, 4, 4 + 3e-9, 5, 6], float)
    add("times closer than sqrt(eps)", t, [1, 1, 0, 1, 1, 0, 1, 1, 0, 1], [3, 1, 2, 2, 5, 4, 1, 0, 2, 1])
    add("one event", np.arange(1, 21), np.r_[0, 0, 1, np.zeros(17)], rng.normal(size=20))
    add("two subjects", [1.0, 2.0], [1, 0], [0.5, 0.1])
    add("constant risk", rng.exponential(5, 50) + 0.1, rng.integers(0, 2, 50), np.full(50, 2.0))
    add("no censoring", rng.exponential(5, 80) + 0.1, np.ones(80, int), rng.normal(size=80))
    n = 4000
    x = rng.normal(size=n)
    add("large", np.round(rng.exponential(np.exp(-x)) * 100 + 1), rng.random(n) < 0.6, x + rng.normal(size=n))
    return out


TAU = 3.0
HORIZONS = (0.5, 1.0, 2.0)

R_SCRIPT = r"""
suppressMessages({library(survival); library(pROC)})
ncase <- as.integer(readLines("ncases.txt")); tau <- as.numeric(readLines("tau.txt"))
rows <- list()
for (i in seq_len(ncase)) {
  d <- read.csv(sprintf("case%d.csv", i))
  h <- concordance(Surv(time, event) ~ risk, data = d, reverse = TRUE)
  u <- concordance(Surv(time, event) ~ risk, data = d, reverse = TRUE, timewt = "n/G2")
  ut <- concordance(Surv(time, event) ~ risk, data = d, reverse = TRUE, timewt = "n/G2", ymax = tau)
  ht <- concordance(Surv(time, event) ~ risk, data = d, reverse = TRUE, ymax = tau)
  rows[[i]] <- c(h$concordance, sqrt(h$var), h$count[1:5], u$concordance, sqrt(u$var),
                 ut$concordance, sqrt(ut$var), ht$concordance, sqrt(ht$var))
}
res <- as.data.frame(do.call(rbind, rows))
names(res) <- c("c", "se", "concordant", "discordant", "tied_risk", "tied_time", "tied_both",
                "uno", "uno_se", "uno_tau", "uno_tau_se", "harrell_tau", "harrell_tau_se")
write.csv(res, "concordance.csv", row.names = FALSE)

k <- read.csv("km.csv")
f <- survfit(Surv(time, event) ~ 1, data = k)
write.csv(data.frame(time = f$time, n_risk = f$n.risk, n_event = f$n.event, surv = f$surv,
                     std_err = f$std.err, lower = f$lower, upper = f$upper), "km_R.csv", row.names = FALSE)
lr <- NULL
for (g in c("g2", "g3")) {
  s <- survdiff(Surv(time, event) ~ k[[g]], data = k)
  lr <- rbind(lr, data.frame(groups = g, chisq = s$chisq, p = s$pvalue,
                             obs = paste(s$obs, collapse = ";"), exp = paste(s$exp, collapse = ";")))
}
write.csv(lr, "logrank_R.csv", row.names = FALSE)

a <- read.csv("tdauc.csv"); hz <- as.numeric(strsplit(readLines("horizons.txt"), ",")[[1]])
write.csv(data.frame(auc = sapply(hz, function(t)
  as.numeric(auc(roc(as.integer(a$time <= t), a$risk, direction = "<", levels = c(0, 1), quiet = TRUE))))),
  "tdauc_R.csv", row.names = FALSE)

cdat <- read.csv("calib.csv"); h <- as.numeric(readLines("calib_h.txt"))
G <- survfit(Surv(time, 1 - event) ~ 1, data = cdat)
Gfun <- stepfun(G$time, c(1, G$surv))
w <- ifelse(cdat$time <= h & cdat$event == 1, 1 / Gfun(cdat$time - 1e-7),
            ifelse(cdat$time > h, 1 / Gfun(h), 0))
y <- as.numeric(cdat$time <= h & cdat$event == 1)
use <- w > 0
lp <- qlogis(cdat$p)
fs <- suppressWarnings(glm(y[use] ~ lp[use], family = quasibinomial, weights = w[use]))
fi <- suppressWarnings(glm(y[use] ~ 1 + offset(lp[use]), family = quasibinomial, weights = w[use]))
write.csv(data.frame(slope = coef(fs)[2], intercept = coef(fi)[1], brier = mean(w * (y - cdat$p)^2)),
          "calib_R.csv", row.names = FALSE)
write.csv(data.frame(w = w), "weights_R.csv", row.names = FALSE)
"""


def test_survival_statistics_identical_to_R(tmp_path, run_r):
    cases = _concordance_cases()
    for i, (_, t, e, r) in enumerate(cases, 1):
        write_csv(tmp_path / f"case{i}.csv", time=t, event=e, risk=r)
    (tmp_path / "ncases.txt").write_text(str(len(cases)))
    (tmp_path / "tau.txt").write_text(str(TAU))
    rng = np.random.default_rng(5)
    # Kaplan-Meier and log-rank data: tied times, three groups of different hazard
    n = 240
    g3 = np.repeat(["a", "b", "c"], n // 3)
    haz = np.repeat([1.0, 1.6, 2.5], n // 3)
    km_t = np.ceil(rng.exponential(1 / haz) * 20)
    km_e = (rng.random(n) < 0.75).astype(int)
    g2 = np.where(g3 == "a", "x", "y")
    write_csv(tmp_path / "km.csv", time=km_t, event=km_e, g2=g2, g3=g3)
    # time-dependent AUC: censoring only after the last horizon
    n = 500
    x = rng.normal(size=n)
    td_t = rng.exponential(np.exp(-x)) + 1e-3
    td_e = np.where(td_t > 2.5, rng.integers(0, 2, n), 1)
    td_r = x + rng.normal(size=n)
    write_csv(tmp_path / "tdauc.csv", time=td_t, event=td_e, risk=td_r)
    (tmp_path / "horizons.txt").write_text(",".join(map(str, HORIZONS)))
    # calibration: distinct times, independent censoring
    n = 800
    x = rng.normal(size=n)
    ev_t = rng.exponential(np.exp(-x) * 3)
    ce_t = rng.exponential(4, n)
    c_t = np.round(np.minimum(ev_t, ce_t), 6) + 1e-6
    c_e = (ev_t <= ce_t).astype(int)
    c_p = 1 - np.exp(-2.0 * np.exp(0.8 * x) / 3)
    write_csv(tmp_path / "calib.csv", time=c_t, event=c_e, p=c_p)
    h = 2.0
    (tmp_path / "calib_h.txt").write_text(str(h))

    run_r(R_SCRIPT)

    ref = pd.read_csv(tmp_path / "concordance.csv")
    for i, (name, t, e, r) in enumerate(cases):
        R = ref.iloc[i]
        hc = survival.harrell_c(t, e, r)
        uc = survival.uno_c(t, e, r)
        ut = survival.uno_c(t, e, r, tau=TAU)
        ht = survival.harrell_c(t, e, r, tau=TAU)
        assert_close([hc.c_index, hc.se, hc.concordant, hc.discordant, hc.tied_risk, hc.tied_time, hc.tied_both],
                     R[["c", "se", "concordant", "discordant", "tied_risk", "tied_time", "tied_both"]],
                     what=f"{name}: Harrell")
        assert_close([uc.c_index, uc.se], R[["uno", "uno_se"]], what=f"{name}: Uno")
        assert_close([ut.c_index, ut.se], R[["uno_tau", "uno_tau_se"]], what=f"{name}: Uno up to tau")
        assert_close([ht.c_index, ht.se], R[["harrell_tau", "harrell_tau_se"]], what=f"{name}: Harrell up to tau")

    km_r = pd.read_csv(tmp_path / "km_R.csv")
    km = survival.kaplan_meier(km_t, km_e)
    for col, mine in [("time", km.time), ("n_risk", km.n_risk), ("n_event", km.n_event), ("surv", km.surv),
                      ("std_err", km.std_err), ("lower", km.lower), ("upper", km.upper)]:
        assert_close(mine, km_r[col], what=f"Kaplan-Meier {col}")

    lr_r = pd.read_csv(tmp_path / "logrank_R.csv")
    for _, row in lr_r.iterrows():
        groups = g2 if row["groups"] == "g2" else g3
        lr = survival.logrank_test(km_t, km_e, groups)
        assert_close([lr.chisq, lr.p_value], [row["chisq"], row["p"]], what=f"log-rank {row['groups']}")
        assert_close(lr.observed, [float(v) for v in row["obs"].split(";")], what="log-rank observed")
        assert_close(lr.expected, [float(v) for v in row["exp"].split(";")], what="log-rank expected")
        assert lr.df == len(np.unique(groups)) - 1

    td_r_ref = pd.read_csv(tmp_path / "tdauc_R.csv")
    td = survival.cumulative_dynamic_auc(td_t, td_e, td_r, HORIZONS)
    assert_close(td.auc, td_r_ref["auc"], what="cumulative/dynamic AUC without censoring")

    cal_r = pd.read_csv(tmp_path / "calib_R.csv").iloc[0]
    w_r = pd.read_csv(tmp_path / "weights_R.csv")["w"]
    assert_close(survival.censoring_weights(c_t, c_e, h), w_r, what="IPCW weights")
    cal = survival.calibration_at_horizon(c_t, c_e, c_p, h)
    assert cal.converged
    assert_close([cal.slope, cal.intercept], [cal_r["slope"], cal_r["intercept"]], what="calibration")
    assert_close(survival.brier_score(c_t, c_e, c_p, h), cal_r["brier"], what="Brier score")


def test_reference_cases_exercise_the_conventions():
    cases = {c[0]: c[1:] for c in _concordance_cases()}
    t, e, r = cases["times closer than sqrt(eps)"]
    assert len(np.unique(survival.aeq_times(t))) < len(np.unique(t))
    hc = survival.harrell_c(*cases["tied times and risks"])
    assert hc.tied_risk > 0 and hc.tied_time > 0 and hc.tied_both > 0
    assert survival.harrell_c(*cases["constant risk"]).c_index == 0.5
    # with a single event Uno's weights fall back to Harrell's (as in R)
    one = cases["one event"]
    assert survival.uno_c(*one).c_index == survival.harrell_c(*one).c_index
    # the time-dependent AUC reference really has no censoring before the horizons
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    assert roc.delong_auc(x > 0, x).auc == 1.0
