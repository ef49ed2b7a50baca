"""Clinical triage: probability of critical illness from admission data.

>>> from pulmo.triage import TriageModel, TriagePredictor, predict_records
>>> model = TriageModel.load("published.pulmo-triage")
>>> TriagePredictor(model, explain=True).predict({"age": 65, "xray_abnormality": 1, ...})  # a DataFrame
>>> batch = predict_records(model, [{"age": 65, ...}, {"age": 80, ...}])               # typed records
>>> batch[0].probability(30).value, batch[0].risk_group, batch[0].error

:func:`predict_records` (and :meth:`TriagePredictor.predict_records`) returns one
:class:`TriageResult` per patient: the probability of critical illness by 5, 10 and 30 days
(fractions 0..1, with the imputation interval), risk group, scores, imputed features,
warnings and error; ``to_row()`` gives the columns of ``pulmo triage predict``'s output.
Classic scores on a table as records: :func:`pulmo.triage.scores.score_records`.

See :mod:`pulmo.triage.schema` for the inputs and units, :mod:`pulmo.triage.model` for
the computation and file format, :mod:`pulmo.triage.imputation` for missing values.
Everything here may be called from several threads at once.
Pulmo is a research tool, not a certified medical device.
"""

from pulmo.triage.model import TriageModel
from pulmo.triage.predict import (Probability, TriageBatch, TriagePredictor, TriageResult, predict,
                                  predict_records, shapley_values)
from pulmo.triage.schema import FEATURE_NAMES, FEATURES, parse_patients

__all__ = ["TriageModel", "TriagePredictor", "TriageResult", "TriageBatch", "Probability", "predict",
           "predict_records", "shapley_values", "FEATURE_NAMES", "FEATURES", "parse_patients", "load_model"]


def load_model(path) -> TriageModel:
    """Read a ``.pulmo-triage`` model file."""
    return TriageModel.load(path)
