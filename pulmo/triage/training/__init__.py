"""Training a triage model on a hospital's own cohort (``pulmo triage train``).

The published design (Liang et al. 2020): a k-fold DeepSurv MLP ensemble, then a Cox
model on the scaled features plus the ensemble score (fitted with *out-of-fold*
scores), a Breslow baseline hazard and low/medium/high risk cut-offs. The result is
a plain :class:`pulmo.triage.model.TriageModel`, so trained and published models are
served by the same numpy code. PyTorch (the ``train`` extra) is needed to train
only, and is imported lazily.

Public API
----------
load_cohort(path, time=..., event=..., features=None) -> Cohort
cohort_from_table(table, time=..., event=..., features=None) -> Cohort
Cohort(X, time, event, features)            arrays directly (e.g. a benchmark)
TrainingConfig(...)                         hyper-parameters and options
train_triage_model(cohort, config, progress=None) -> TrainingResult(model, report, oof)
write_report(report, base) -> (json_path, markdown_path)
fit_cox(X, time, event, ties="efron", ridge=0.0) -> CoxFit
breslow_cumulative_hazard(time, event, lp) -> (times, cumulative_hazard)
concordance_index(time, event, risk)        Harrell's C (higher risk = earlier event), the number of
                                            :func:`pulmo.stats.survival.harrell_c`
km_risk(time, event, horizon)               1 - Kaplan-Meier survival at the horizon

Survival statistics (C-index, Kaplan-Meier, calibration) are those of :mod:`pulmo.stats.survival`.
"""

from pulmo.triage.training.cohort import MIN_EVENTS, Cohort, cohort_from_table, load_cohort
from pulmo.triage.training.cox import CoxFit, breslow_cumulative_hazard, fit_cox, partial_loglik
from pulmo.triage.training.deepsurv import TORCH_MISSING, require_torch
from pulmo.triage.training.metrics import concordance_index, km_risk
from pulmo.triage.training.report import render_markdown, write_report
from pulmo.triage.training.trainer import TrainingConfig, TrainingResult, make_folds, train_triage_model

__all__ = [
    "MIN_EVENTS", "TORCH_MISSING", "Cohort", "CoxFit", "TrainingConfig", "TrainingResult",
    "breslow_cumulative_hazard", "cohort_from_table", "concordance_index", "fit_cox", "km_risk",
    "load_cohort", "make_folds", "partial_loglik", "render_markdown", "require_torch",
    "train_triage_model", "write_report",
]
