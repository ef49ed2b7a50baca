"""Train a triage model on a cohort, following the published design.

1. Scale: binary features (only 0/1) raw (mean 0, sd 1 in the model); the others
   z-scored with the cohort's mean and sample SD (ddof = 1, as R's ``sd``).
2. Split the rows into k folds (stratified by event, seeded). For each fold, train
   one DeepSurv MLP on the other k-1 folds with early stopping on the held-out fold
   (:mod:`.deepsurv`). Each member is centred (mean output 0 over the cohort).
   ``score_dl`` of a row *out of fold* is the output of the member that did not
   train on it; the saved ensemble averages the k members.
3. Fit a Cox model (:mod:`.cox`, Efron ties by default, small ridge) on the scaled
   features plus the **out-of-fold** ``score_dl``: an in-sample ensemble score
   would be overfit to these very outcomes and inflate its coefficient.
4. Breslow baseline cumulative hazard from that fit (the full step function).
5. Risk cut-offs on P(event by the risk horizon) of the training rows (computed as
   in 3-4): by default the tertiles (low / medium / high thirds); or given quantiles;
   or fixed probabilities.
6. Report cross-validated (out-of-fold) C-index of linear Cox, the ensemble and the
   final model (the Cox-on-top refitted without each fold in turn), and
   calibration (predicted vs Kaplan-Meier observed risk at the horizons, by decile
   and by risk group).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_limits

from pulmo import __version__
from pulmo.errors import InputError
from pulmo.triage.model import TriageModel
from pulmo.triage.training.cohort import Cohort
from pulmo.triage.training.cox import TIES, breslow_cumulative_hazard, fit_cox
from pulmo.triage.training.deepsurv import (
    ACTIVATIONS,
    centre_member,
    member_output,
    torch_threads,
    train_member,
)
from pulmo.triage.training.metrics import (
    calibration_table,
    concordance_index,
    km_risk,
    quantile_groups,
)


#: How :meth:`TrainingConfig.check` names each setting in its messages (plain words); a face
#: passes its own names (a form field, an option) instead.
SETTING_NAMES: dict[str, str] = {
    "folds": "the number of folds", "members_per_fold": "the number of networks per fold",
    "hidden": "the hidden layer sizes", "dropout": "the dropout rate", "weight_decay": "the weight decay",
    "cox_ridge": "the ridge penalty", "learning_rate": "the learning rate",
    "max_epochs": "the maximum number of epochs", "patience": "the early-stopping patience",
    "batch_size": "the batch size", "cox_ties": "the Cox ties method", "horizons": "the horizons",
    "risk_horizon": "the risk horizon", "risk_quantiles": "the risk quantiles",
    "risk_cutoffs": "the risk cut-offs", "threads": "the number of threads",
}


@dataclass
class TrainingConfig:
    """Hyper-parameters and options of :func:`train_triage_model` (see docs/training.md)."""

    folds: int = 5
    members_per_fold: int = 1
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    output_activation: str = "linear"
    dropout: float = 0.1
    weight_decay: float = 1e-3
    learning_rate: float = 3e-3
    max_epochs: int = 1000
    patience: int = 50
    batch_size: int | None = None
    seed: int = 2020
    cox_ties: str = "efron"
    cox_ridge: float = 1e-3
    horizons: tuple[float, ...] = (5.0, 10.0, 30.0)
    risk_horizon: float | None = None
    risk_quantiles: tuple[float, float] = (1 / 3, 2 / 3)
    risk_cutoffs: tuple[float, float] | None = None
    threads: int = 1
    min_events: int = 10
    calibration_groups: int = 10
    donors: bool = True

    def check(self, setting_names: dict[str, str] | None = None) -> "TrainingConfig":
        """Refuse impossible settings (:class:`InputError`); returns ``self``.

        ``setting_names`` maps field names to how the caller's interface calls them in messages
        (default :data:`SETTING_NAMES`, plain words), e.g. a command line's option names.
        """
        say = {**SETTING_NAMES, **(setting_names or {})}
        self.hidden = tuple(int(h) for h in self.hidden)
        self.horizons = tuple(float(h) for h in self.horizons)
        if self.folds < 2:
            raise InputError(f"{say['folds']} must be at least 2.")
        if self.members_per_fold < 1:
            raise InputError(f"{say['members_per_fold']} must be at least 1.")
        if any(h < 1 for h in self.hidden):
            raise InputError(f"{say['hidden']} must be positive integers.")
        for a in (self.activation, self.output_activation):
            if a not in ACTIVATIONS:
                raise InputError(f"activation {a!r} is not supported; choose one of {', '.join(ACTIVATIONS)}.")
        if not 0 <= self.dropout < 1:
            raise InputError(f"{say['dropout']} must be in [0, 1).")
        if self.weight_decay < 0 or self.cox_ridge < 0:
            raise InputError(f"{say['weight_decay']} and {say['cox_ridge']} must be >= 0.")
        if not self.learning_rate > 0:
            raise InputError(f"{say['learning_rate']} must be positive.")
        if self.max_epochs < 1 or self.patience < 1:
            raise InputError(f"{say['max_epochs']} and {say['patience']} must be at least 1.")
        if self.batch_size is not None and self.batch_size < 2:
            raise InputError(f"{say['batch_size']} must be at least 2.")
        if self.cox_ties not in TIES:
            raise InputError(f"{say['cox_ties']} must be one of {', '.join(TIES)}.")
        if not self.horizons or any(not (math.isfinite(h) and h > 0) for h in self.horizons):
            raise InputError(f"{say['horizons']} must be positive numbers of days, e.g. 5,10,30.")
        if len(set(self.horizons)) != len(self.horizons):
            raise InputError(f"{say['horizons']} must not repeat a value.")
        if self.risk_horizon is not None and not (math.isfinite(self.risk_horizon) and self.risk_horizon > 0):
            raise InputError(f"{say['risk_horizon']} must be a positive number of days.")
        q = self.risk_quantiles
        if len(q) != 2 or not 0 < q[0] <= q[1] < 1:
            raise InputError(f"{say['risk_quantiles']} must be two numbers 0 < q1 <= q2 < 1, e.g. 0.5,0.9.")
        if self.risk_cutoffs is not None:
            c = self.risk_cutoffs
            if len(c) != 2 or not 0 <= c[0] <= c[1] <= 1:
                raise InputError(f"{say['risk_cutoffs']} must be two probabilities 0 <= low <= high <= 1.")
        if self.threads < 1:
            raise InputError(f"{say['threads']} must be at least 1.")
        return self

    @property
    def the_risk_horizon(self) -> float:
        return float(self.risk_horizon if self.risk_horizon is not None else max(self.horizons))


@dataclass
class TrainingResult:
    """What :func:`train_triage_model` returns.

    ``model`` is ready to ``save()``; ``report`` is JSON-serialisable; ``oof`` holds the
    out-of-fold arrays (``fold``, ``score_dl``, ``score_final``, ``linear_cox``,
    ``prob_risk_horizon``) in the cohort's row order.
    """

    model: TriageModel
    report: dict[str, Any]
    oof: dict[str, np.ndarray] = field(default_factory=dict)


def make_folds(event: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number 0..k-1 per row, stratified by event, seeded."""
    event = np.asarray(event).astype(bool)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
    fold = np.empty(event.size, dtype=np.int64)
    offset = 0
    for cls in (True, False):
        idx = np.flatnonzero(event == cls)
        rng.shuffle(idx)
        fold[idx] = (np.arange(idx.size) + offset) % k
        offset = (offset + idx.size) % k
    return fold


def scaling(X: np.ndarray, binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, sd): 0/1 for binary columns, sample mean / SD (ddof 1) otherwise."""
    mean = np.where(binary, 0.0, X.mean(axis=0))
    sd = np.where(binary, 1.0, X.std(axis=0, ddof=1) if X.shape[0] > 1 else 1.0)
    sd = np.where(sd > 0, sd, 1.0)
    return mean, sd


def _prob(times, cumhaz, lp, t) -> np.ndarray:
    idx = np.searchsorted(times, t, side="right") - 1
    h0 = cumhaz[idx] if idx >= 0 else 0.0
    return -np.expm1(-h0 * np.exp(lp))


def _seed(seed: int, fold: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(fold)]).generate_state(1)[0])


def _c(time, event, risk) -> float | None:
    c = concordance_index(time, event, risk)
    return None if not np.isfinite(c) else round(float(c), 6)


def _r(x, nd=6):
    if x is None:
        return None
    x = float(x)
    return None if not math.isfinite(x) else round(x, nd)


def train_triage_model(
    cohort: Cohort,
    config: TrainingConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Train a :class:`TriageModel` on ``cohort`` (see the module docstring).

    Raises :class:`InputError` for unusable data or options, and
    :class:`pulmo.errors.PulmoError` when PyTorch is not installed.
    """
    cfg = TrainingConfig(**asdict(config)) if config is not None else TrainingConfig()
    cfg.check()
    # numpy's BLAS on the same thread budget as torch (small matrices; also steadier timings).
    with threadpool_limits(cfg.threads):
        return _train(cohort, cfg, progress)


def _train(cohort: Cohort, cfg: TrainingConfig, progress) -> TrainingResult:
    say = progress or (lambda msg: None)
    cohort.validate(cfg.min_events)
    X, t, e = cohort.X, cohort.time, cohort.event
    n, p = X.shape
    n_events = int(e.sum())
    rh = cfg.the_risk_horizon
    longest = float(t.max())
    for h in sorted(set(cfg.horizons) | {rh}):
        if h > longest:
            raise InputError(
                f"horizon {h:g} days is beyond the longest follow-up in the cohort ({longest:g} days); "
                "the model cannot predict past the data. Choose horizons (and a risk horizon) "
                "within the follow-up.", code="training_horizon_beyond_follow_up"
            )
    if cfg.folds > n_events:
        raise InputError(f"{cfg.folds} folds need at least {cfg.folds} events (there are {n_events}).")
    warnings: list[str] = []
    if n_events < 10 * (p + 1):
        warnings.append(f"{n_events} events for {p} features plus the ensemble score "
                        f"({n_events / (p + 1):.1f} per variable, fewer than 10): expect overfitting; "
                        "the cross-validated metrics below are the ones to trust.")
    if cohort.rows_read and cohort.dropped_missing > 0.2 * cohort.rows_read:
        warnings.append(f"{cohort.dropped_missing} of {cohort.rows_read} rows "
                        f"({100 * cohort.dropped_missing / cohort.rows_read:.0f}%) were dropped for missing "
                        "feature values; the complete rows may not represent the cohort.")

    mean, sd = scaling(X, cohort.binary)
    Z = (X - mean) / sd
    fold = make_folds(e, cfg.folds, cfg.seed)

    # --- 2. the k-fold DeepSurv ensemble -------------------------------------------
    members = []
    fold_info = []
    oof_dl = np.empty(n)
    with torch_threads(cfg.threads):
        for k in range(cfg.folds):
            tr, ho = fold != k, fold == k
            outs = []
            for j in range(cfg.members_per_fold):
                res = train_member(
                    Z[tr], t[tr], e[tr], Z[ho], t[ho], e[ho],
                    hidden=cfg.hidden, activation=cfg.activation, output_activation=cfg.output_activation,
                    dropout=cfg.dropout, weight_decay=cfg.weight_decay, learning_rate=cfg.learning_rate,
                    max_epochs=cfg.max_epochs, patience=cfg.patience, batch_size=cfg.batch_size,
                    seed=_seed(cfg.seed, k) if j == 0 else _seed(cfg.seed, 1000 * (j + 1) + k),
                )
                layers = centre_member(res.layers, Z)
                members.append(layers)
                outs.append(member_output(layers, Z[ho]))
                c_ho = _c(t[ho], e[ho], outs[-1])
                fold_info.append({
                    "fold": k + 1, "member": j + 1, "n_train": int(tr.sum()), "n_heldout": int(ho.sum()),
                    "events_heldout": int(e[ho].sum()), "best_epoch": res.best_epoch,
                    "epochs_run": res.epochs_run, "heldout_loss": _r(res.best_val_loss),
                    "train_loss": _r(res.train_loss), "c_index_heldout": c_ho,
                })
                say(f"fold {k + 1}/{cfg.folds}"
                    + (f", network {j + 1}/{cfg.members_per_fold}" if cfg.members_per_fold > 1 else "")
                    + f": best epoch {res.best_epoch} of {res.epochs_run}, held-out C-index "
                    f"{c_ho if c_ho is not None else float('nan'):.3f}")
                if res.best_epoch <= 1:
                    warnings.append(f"fold {k + 1}: the network did not improve on the held-out fold after "
                                    "the first epoch (little signal, or the learning rate is too high).")
            oof_dl[ho] = np.mean(outs, axis=0)

    # --- 3-4. Cox model on scaled features + out-of-fold score_dl -----------------
    D = np.column_stack([Z, oof_dl])
    cox = fit_cox(D, t, e, ties=cfg.cox_ties, ridge=cfg.cox_ridge)
    if not cox.converged:
        warnings.append("the Cox model on top did not fully converge; consider a larger ridge penalty.")
    lp_fit = D @ cox.coef
    bt, bh = breslow_cumulative_hazard(t, e, lp_fit)

    # --- 5. risk cut-offs ----------------------------------------------------------
    p_fit = _prob(bt, bh, lp_fit, rh)
    if cfg.risk_cutoffs is not None:
        low_max, high_min = (float(c) for c in cfg.risk_cutoffs)
        rule = f"fixed cut-offs on P({rh:g} d): low <= {low_max:g}, high > {high_min:g}"
    else:
        q1, q2 = cfg.risk_quantiles
        low_max, high_min = (float(v) for v in np.quantile(p_fit, [q1, q2]))
        rule = (f"quantiles {q1:.4g} and {q2:.4g} of the predicted P(event by {rh:g} d) of the training "
                "rows (out-of-fold ensemble score in the Cox model): low <= the first, high > the second"
                + (" (tertiles)" if abs(q1 - 1 / 3) < 1e-9 and abs(q2 - 2 / 3) < 1e-9 else ""))

    model = TriageModel(
        features=list(cohort.features), mean=mean, sd=sd, ensemble=members,
        cox_coefficients=cox.coef[:p], cox_coefficient_dl=float(cox.coef[p]),
        baseline_times=bt, baseline_cumhaz=bh, horizons=cfg.horizons, risk_horizon=rh,
        risk_low_max=low_max, risk_high_min=high_min, reference=X.mean(axis=0),
        donors=X.copy() if cfg.donors else None,
    )

    # --- 6. cross-validated metrics -------------------------------------------------
    say("cross-validating the Cox model on top and linear Cox")
    lp_oof = np.empty(n)
    lin_oof = np.empty(n)
    p_oof = {h: np.empty(n) for h in sorted(set(cfg.horizons) | {rh})}
    per_fold = []
    for k in range(cfg.folds):
        tr, ho = fold != k, fold == k
        ck = fit_cox(D[tr], t[tr], e[tr], ties=cfg.cox_ties, ridge=cfg.cox_ridge)
        lp_tr = D[tr] @ ck.coef
        lp_oof[ho] = D[ho] @ ck.coef
        btk, bhk = breslow_cumulative_hazard(t[tr], e[tr], lp_tr)
        for h in p_oof:
            p_oof[h][ho] = _prob(btk, bhk, lp_oof[ho], h)
        lk = fit_cox(Z[tr], t[tr], e[tr], ties=cfg.cox_ties, ridge=cfg.cox_ridge)
        lin_oof[ho] = Z[ho] @ lk.coef
        per_fold.append({"fold": k + 1, "linear_cox": _c(t[ho], e[ho], lin_oof[ho]),
                         "ensemble": _c(t[ho], e[ho], oof_dl[ho]), "final": _c(t[ho], e[ho], lp_oof[ho])})
    _, final_apparent = model.linear_predictor(X)

    c_cv = {"linear_cox": _c(t, e, lin_oof), "ensemble": _c(t, e, oof_dl), "final": _c(t, e, lp_oof)}
    c_fold_mean = {m: _r(np.nanmean([f[m] if f[m] is not None else np.nan for f in per_fold]))
                   for m in c_cv}
    c_apparent = _c(t, e, final_apparent)

    n_bins = max(2, min(cfg.calibration_groups, n // 30))
    deciles = quantile_groups(p_oof[rh], n_bins)
    calib_deciles = calibration_table(t, e, p_oof[rh], rh, deciles)
    grp_oof = model.risk_group(p_oof[rh])
    calib_groups = calibration_table(t, e, p_oof[rh], rh, grp_oof)
    grp_fit = model.risk_group(p_fit)
    train_groups = calibration_table(t, e, p_fit, rh, grp_fit)
    calib_large = {f"{h:g}": {"predicted_mean": _r(p_oof[h].mean()), "observed_km": _r(km_risk(t, e, h)),
                              "events_by_horizon": int(((t <= h) & (e == 1)).sum())}
                   for h in p_oof}
    abs_err = [abs(r["predicted_mean"] - r["observed_km"]) for r in calib_deciles
               if math.isfinite(r["observed_km"])]
    calib_mae = _r(np.mean(abs_err)) if abs_err else None
    for tab in (calib_deciles, calib_groups, train_groups):
        for r in tab:
            for key in ("predicted_min", "predicted_max", "predicted_mean", "observed_km"):
                r[key] = _r(r[key])

    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    hyper = asdict(cfg)
    hyper["risk_horizon"] = rh
    binary_feats = [f for f, b in zip(cohort.features, cohort.binary) if b]
    data = {
        "source": cohort.source, "sha256": cohort.sha256,
        "time_column": cohort.time_column, "event_column": cohort.event_column, "time_unit": "days",
        "rows_read": int(cohort.rows_read), "rows_used": n,
        "rows_dropped_missing_features": int(cohort.dropped_missing),
        "missing_cells_by_feature": dict(cohort.missing_by_feature),
        "dropped_rows_first": list(cohort.dropped_rows),
        "missing_value_policy": "rows with an empty feature cell are dropped (complete-case training); "
                                "rows with a missing or invalid time or event are refused",
        "events": n_events, "event_fraction": _r(n_events / n),
        "follow_up_days": {"min": _r(t.min()), "median": _r(np.median(t)), "max": _r(t.max())},
        "events_by_horizon": {f"{h:g}": int(((t <= h) & (e == 1)).sum()) for h in cfg.horizons},
        "features": list(cohort.features), "feature_columns": dict(cohort.columns),
        "binary_features": binary_feats,
        "donors_stored": bool(cfg.donors),
    }
    feats = []
    for j, f in enumerate(cohort.features):
        feats.append({
            "name": f, "column": cohort.columns.get(f, f), "kind": "binary" if cohort.binary[j] else "continuous",
            "data_mean": _r(X[:, j].mean()), "data_sd": _r(X[:, j].std(ddof=1)),
            "scaling_mean": _r(mean[j]), "scaling_sd": _r(sd[j]),
            "cox_coefficient": _r(cox.coef[j]), "cox_se": _r(cox.se[j]),
        })
    design = (f"{cfg.folds}-fold DeepSurv MLP ensemble ({cfg.members_per_fold} network(s) per fold; "
              "Breslow-ties Cox partial likelihood, early stopping on the "
              f"held-out fold, members centred, averaged) + Cox model ({cfg.cox_ties} ties, ridge "
              f"{cfg.cox_ridge:g}) on scaled features and the out-of-fold ensemble score + Breslow "
              "baseline hazard")
    report = {
        "title": "Pulmo triage model training report",
        "pulmo_version": __version__, "created": created, "design": design,
        "data": data,
        "features": feats,
        "cox": {"ties": cfg.cox_ties, "ridge": cfg.cox_ridge, "coefficient_score_dl": _r(cox.coef[p]),
                "se_score_dl": _r(cox.se[p]), "converged": bool(cox.converged),
                "iterations": int(cox.iterations), "penalised_loglik": _r(cox.loglik),
                "loglik_null": _r(cox.loglik_null)},
        "hyperparameters": hyper,
        "folds": fold_info,
        "metrics": {
            "c_index_cv": c_cv,
            "c_index_cv_fold_mean": c_fold_mean,
            "c_index_cv_per_fold": per_fold,
            "c_index_apparent_final": c_apparent,
            "calibration_in_the_large": calib_large,
            "calibration_mean_abs_error_by_group": calib_mae,
        },
        "calibration": {"horizon": rh, "groups": n_bins, "by_quantile_group": calib_deciles,
                        "by_risk_group": calib_groups},
        "risk_groups": {"horizon": rh, "low_max": low_max, "high_min": high_min, "rule": rule,
                        "training_rows": train_groups},
        "warnings": warnings,
        "notes": [
            "C-index: Harrell's, higher risk = earlier event; cross-validated values use for each row "
            "a model that did not see its outcome (the Cox model on top refitted without the fold).",
            "Early stopping used the held-out fold, and the out-of-fold ensemble scores of the other "
            "folds come from networks that saw the held-out fold: the cross-validated values may be "
            "slightly optimistic.",
            "The apparent C-index (the final model on its own training rows) is optimistic.",
            "Observed risk: 1 - Kaplan-Meier survival at the horizon within the group.",
        ],
    }
    model.provenance = {
        "trained_by": "pulmo triage train", "pulmo_version": __version__, "created": created,
        "design": design, "data": data, "hyperparameters": hyper,
        "risk_group_rule": rule,
    }
    model.metrics = {
        "n": n, "events": n_events,
        "c_index_cv_final": c_cv["final"], "c_index_cv_ensemble": c_cv["ensemble"],
        "c_index_cv_linear_cox": c_cv["linear_cox"], "c_index_apparent_final": c_apparent,
        "calibration_horizon": rh,
        "calibration_in_the_large": calib_large,
        "calibration_mean_abs_error_by_group": calib_mae,
        "risk_groups_training": {r["group"]: {"n": r["n"], "predicted_mean": r["predicted_mean"],
                                              "observed_km": r["observed_km"]} for r in train_groups},
    }
    oof = {"fold": fold, "score_dl": oof_dl, "score_final": lp_oof, "linear_cox": lin_oof,
           "prob_risk_horizon": p_oof[rh]}
    return TrainingResult(model=model, report=report, oof=oof)
