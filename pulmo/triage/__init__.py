"""Clinical triage: probability of critical illness from admission data.

>>> from pulmo.triage import TriageModel, TriagePredictor
>>> model = TriageModel.load("published.pulmo-triage")
>>> TriagePredictor(model, explain=True).predict({"age": 65, "xray_abnormality": 1, ...})

See :mod:`pulmo.triage.schema` for the inputs and units, :mod:`pulmo.triage.model` for
the computation and file format, :mod:`pulmo.triage.imputation` for missing values.
Pulmo is a research tool, not a certified medical device.
"""

from pulmo.triage.model import TriageModel
from pulmo.triage.predict import TriagePredictor, predict, shapley_values
from pulmo.triage.schema import FEATURE_NAMES, FEATURES, parse_patients

__all__ = ["TriageModel", "TriagePredictor", "predict", "shapley_values", "FEATURE_NAMES",
           "FEATURES", "parse_patients", "load_model"]


def load_model(path) -> TriageModel:
    """Read a ``.pulmo-triage`` model file."""
    return TriageModel.load(path)
