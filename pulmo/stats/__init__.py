"""Validation statistics, computed as R's reference packages compute them.

>>> from pulmo import stats
>>> a = stats.delong_auc(truth, score)            # AUC, DeLong SE and 95% CI (pROC)
>>> stats.delong_paired_test(truth, score_a, score_b).p_value
>>> stats.youden_threshold(truth, score).sensitivity_ci
>>> stats.harrell_c(time, event, risk).c_index    # survival::concordance(reverse=TRUE)
>>> stats.segmentation_metrics(pred_mask, gt_mask, spacing=(0.7, 0.7, 2.5)).hd95

Modules (pure computation: numpy in, dataclasses of floats out)
----------------------------------------------------------------
:mod:`pulmo.stats.roc`           ROC curve, AUC with DeLong variance (fast algorithm), paired and
                                 unpaired DeLong tests, bootstrap CI, Youden threshold, metrics at a
                                 threshold with Clopper-Pearson CIs (R pROC).
:mod:`pulmo.stats.survival`      Harrell's and Uno's C with standard errors, Kaplan-Meier, log-rank,
                                 time-dependent AUC, Brier / integrated Brier, calibration (R survival).
:mod:`pulmo.stats.segmentation`  Dice, IoU, HD95, Hausdorff, surface Dice; empty-mask conventions.
:mod:`pulmo.stats.subgroups`     subgroup table with pairwise unpaired DeLong tests and Holm p-values.
:mod:`pulmo.stats.proportions`   Clopper-Pearson interval (R binom.test).

Files (:mod:`pulmo.stats.io`, :mod:`pulmo.stats.validate`, :mod:`pulmo.stats.report`) back the
``pulmo validate`` command. Conventions are documented in each module and in docs/validation.md.
Pulmo is a research tool, not a certified medical device.
"""

_API = {
    "clopper_pearson": "pulmo.stats.proportions",
    "AUC": "pulmo.stats.roc",
    "AUCComparison": "pulmo.stats.roc",
    "RocCurve": "pulmo.stats.roc",
    "ThresholdMetrics": "pulmo.stats.roc",
    "bootstrap_auc": "pulmo.stats.roc",
    "delong_auc": "pulmo.stats.roc",
    "delong_covariance": "pulmo.stats.roc",
    "delong_paired_test": "pulmo.stats.roc",
    "delong_unpaired_test": "pulmo.stats.roc",
    "roc_curve": "pulmo.stats.roc",
    "threshold_metrics": "pulmo.stats.roc",
    "youden_threshold": "pulmo.stats.roc",
    "SegmentationMetrics": "pulmo.stats.segmentation",
    "aggregate": "pulmo.stats.segmentation",
    "mean_ci": "pulmo.stats.segmentation",
    "segmentation_metrics": "pulmo.stats.segmentation",
    "SubgroupTable": "pulmo.stats.subgroups",
    "band": "pulmo.stats.subgroups",
    "holm": "pulmo.stats.subgroups",
    "subgroup_table": "pulmo.stats.subgroups",
    "Calibration": "pulmo.stats.survival",
    "Concordance": "pulmo.stats.survival",
    "KaplanMeier": "pulmo.stats.survival",
    "LogRank": "pulmo.stats.survival",
    "TimeDependentAUC": "pulmo.stats.survival",
    "aeq_times": "pulmo.stats.survival",
    "brier_score": "pulmo.stats.survival",
    "calibration_at_horizon": "pulmo.stats.survival",
    "censoring_weights": "pulmo.stats.survival",
    "cumulative_dynamic_auc": "pulmo.stats.survival",
    "harrell_c": "pulmo.stats.survival",
    "integrated_brier_score": "pulmo.stats.survival",
    "kaplan_meier": "pulmo.stats.survival",
    "logrank_test": "pulmo.stats.survival",
    "risk_groups": "pulmo.stats.survival",
    "uno_c": "pulmo.stats.survival",
}

__all__ = [
    "AUC", "AUCComparison", "RocCurve", "ThresholdMetrics", "bootstrap_auc", "delong_auc",
    "delong_covariance", "delong_paired_test", "delong_unpaired_test", "roc_curve",
    "threshold_metrics", "youden_threshold", "clopper_pearson",
    "SegmentationMetrics", "aggregate", "mean_ci", "segmentation_metrics",
    "SubgroupTable", "band", "holm", "subgroup_table",
    "Calibration", "Concordance", "KaplanMeier", "LogRank", "TimeDependentAUC", "aeq_times",
    "brier_score", "calibration_at_horizon", "censoring_weights", "cumulative_dynamic_auc",
    "harrell_c", "integrated_brier_score", "kaplan_meier", "logrank_test", "risk_groups", "uno_c",
]


def __getattr__(name: str):
    """The API names, imported from their module on first use (``import pulmo.stats`` and its
    submodules stay light: scipy is loaded only by what needs it)."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'pulmo.stats' has no attribute {name!r}")
