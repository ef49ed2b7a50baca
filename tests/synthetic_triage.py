"""A small random triage model over the ten published features, for tests."""

from __future__ import annotations

import numpy as np

from pulmo.triage.model import DenseLayer, TriageModel
from pulmo.triage.schema import FEATURE_NAMES


def make_synthetic_model(seed: int = 0, with_donors: bool = True) -> TriageModel:
    """A small random model over the ten published features (no shared data needed)."""
    rng = np.random.default_rng(seed)
    p = len(FEATURE_NAMES)
    ensemble = [
        [DenseLayer(rng.normal(0, 0.3, (p, 6)), rng.normal(0, 0.1, 6), "tanh"),
         DenseLayer(rng.normal(0, 0.3, (6, 1)), rng.normal(0, 0.1, 1), "tanh")]
        for _ in range(3)
    ]
    n = 400
    donors = np.column_stack([
        rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, 2, n),
        rng.integers(0, 4, n), rng.normal(260, 70, n).clip(50), rng.normal(50, 13, n).clip(18),
        rng.gamma(4, 1.3, n), rng.normal(100, 45, n).clip(10), rng.normal(3.8, 1.3, n).clip(0.5),
    ]).astype(float)
    mean = np.where(np.arange(p) < 4, 0.0, donors.mean(axis=0))
    sd = np.where(np.arange(p) < 4, 1.0, donors.std(axis=0))
    return TriageModel(
        features=list(FEATURE_NAMES), mean=mean, sd=sd, ensemble=ensemble,
        cox_coefficients=rng.normal(0, 0.3, p), cox_coefficient_dl=1.2,
        baseline_times=[5, 10, 30], baseline_cumhaz=[0.03, 0.04, 0.05],
        reference=donors.mean(axis=0), donors=donors if with_donors else None,
        provenance={"name": "synthetic test model"},
    )
