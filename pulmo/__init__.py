"""Pulmo: AI-assisted diagnosis and triage of pneumonia.

Pulmo is a research tool, not a certified medical device. Its outputs must not
be used on their own to make clinical decisions.

Subpackages
-----------
pulmo.triage   clinical triage: the published critical-illness model, imputation,
               classic clinical scores, training on a hospital's own cohort.
pulmo.stats    validation statistics (ROC/DeLong, survival, segmentation).
pulmo.ct       chest-CT analysis.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "Pulmo is a research tool, not a certified medical device; "
    "its results must not be used on their own for clinical decisions."
)
