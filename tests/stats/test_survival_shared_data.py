"""Harrell's and Uno's C on real cohorts (the DeepSurv splits in ../shared) against R.

R fits a linear Cox model on each training split and predicts the test split; Pulmo's
C-indices of those predictions must equal survival::concordance's to 1e-6, and the
Harrell's C must be the linear-Cox figure recorded in the data README.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pulmo.stats import survival
from shared_data import shared_path
from statshelp import assert_close, write_csv

SPLITS = {  # file -> linear Cox test C-index from ../shared/data/survival/deepsurv-splits/README.md
    "whas_train_test.h5": 0.816,
    "support_train_test.h5": 0.583,
    "metabric_IHC4_clinical_train_test.h5": 0.632,
    "gbsg_cancer_train_test.h5": 0.656,
}

R_SCRIPT = r"""
suppressMessages(library(survival))
out <- NULL
for (name in readLines("names.txt")) {
  tr <- read.csv(paste0(name, "_train.csv")); te <- read.csv(paste0(name, "_test.csv"))
  fit <- coxph(Surv(t, e) ~ ., data = tr, ties = "efron")
  lp <- predict(fit, newdata = te, type = "lp")
  tau <- as.numeric(quantile(te$t[te$e == 1], 0.8))
  h <- concordance(Surv(te$t, te$e) ~ lp, reverse = TRUE)
  u <- concordance(Surv(te$t, te$e) ~ lp, reverse = TRUE, timewt = "n/G2", ymax = tau)
  write.csv(data.frame(lp = lp), paste0(name, "_lp.csv"), row.names = FALSE)
  out <- rbind(out, data.frame(name = name, tau = tau, c = h$concordance, se = sqrt(h$var),
                               uno = u$concordance, uno_se = sqrt(u$var)))
}
write.csv(out, "cindex_R.csv", row.names = FALSE)
"""


def test_c_index_on_deepsurv_test_splits_equals_R(tmp_path, run_r):
    h5py = pytest.importorskip("h5py", reason="h5py (test extra) is needed to read the DeepSurv splits")
    folder = shared_path("survival", "deepsurv-splits")
    names = []
    data = {}
    for file in SPLITS:
        name = file.split("_")[0]
        names.append(name)
        with h5py.File(folder / file, "r") as f:
            for part in ("train", "test"):
                x = np.asarray(f[part]["x"], dtype=float)
                cols = {f"x{j}": x[:, j] for j in range(x.shape[1])}
                t = np.asarray(f[part]["t"], dtype=float)
                e = np.asarray(f[part]["e"], dtype=int)
                write_csv(tmp_path / f"{name}_{part}.csv", t=t, e=e, **cols)
                data[name, part] = (t, e)
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    run_r(R_SCRIPT, packages=("survival",))
    ref = pd.read_csv(tmp_path / "cindex_R.csv").set_index("name")
    for file, published in SPLITS.items():
        name = file.split("_")[0]
        t, e = data[name, "test"]
        lp = pd.read_csv(tmp_path / f"{name}_lp.csv")["lp"].to_numpy()
        h = survival.harrell_c(t, e, lp)
        u = survival.uno_c(t, e, lp, tau=ref.loc[name, "tau"])
        assert_close([h.c_index, h.se, u.c_index, u.se], ref.loc[name, ["c", "se", "uno", "uno_se"]],
                     what=f"{name} test split")
        assert h.c_index == pytest.approx(published, abs=0.006), name
