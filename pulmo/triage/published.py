"""Import the published 2020 critical-illness triage model (Liang et al., Nat Commun 2020).

The authors released five TensorFlow 1.9 checkpoints (one per cross-validation fold)
and the development cohort's imputed covariates as ``models.zip``. That artefact
carries no licence, so Pulmo never ships it: a user supplies their own copy, and
:func:`import_published_model` turns it into Pulmo's own model file.

The figures below are not in the checkpoints; they are the constants of the authors'
released inference code (scaling of the six continuous inputs, the Cox nomogram,
Breslow baseline cumulative hazards at 5, 10 and 30 days) and the risk-group cut-offs
of their evaluation code, as published with the paper.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pulmo import __version__
from pulmo.errors import InputError, ModelError
from pulmo.io.archives import extract_zip
from pulmo.io.limits import check_file, open_regular, walk_files
from pulmo.io.tf_checkpoint import Checkpoint
from pulmo.triage.model import DenseLayer, TriageModel
from pulmo.triage.schema import FEATURE_NAMES

CITATION = (
    "Liang W, Yao J, Chen A, et al. Early triage of critically ill COVID-19 patients using deep "
    "learning. Nat Commun 11, 3543 (2020). doi:10.1038/s41467-020-17280-8"
)

#: z-scoring of the continuous inputs (mean, sd); binary inputs go in as 0/1.
SCALING = {
    "comorbidities": (0.366352, 0.766475),
    "ldh": (259.740330, 77.955030),
    "age": (48.879804, 12.861063),
    "nlr": (5.374749, 2.445621),
    "creatine_kinase": (98.198436, 49.690099),
    "direct_bilirubin": (3.762461, 1.389199),
}
COX_COEFFICIENTS = {
    "malignancy": 1.06741622,
    "xray_abnormality": 0.65624252,
    "copd": 0.28010291,
    "dyspnea": 0.34496069,
    "comorbidities": 0.06626169,
    "ldh": 0.04888803,
    "age": 0.09156370,
    "nlr": 0.02040950,
    "creatine_kinase": 0.05368482,
    "direct_bilirubin": 0.03486548,
}
COX_COEFFICIENT_DL = 1.50393931
BASELINE_CUMHAZ = {5.0: 0.03552347, 10.0: 0.04164459, 30.0: 0.04840961}
RISK_LOW_MAX = 0.02750352
RISK_HIGH_MIN = 0.3114235
N_FOLDS = 5
LAYERS = ("layer1", "layer2", "layer3")

#: Column order of the released ``imputation.csv`` (after the patient id).
DONOR_COLUMNS = ("malignancy", "age", "xray_abnormality", "dyspnea", "copd", "ldh",
                 "direct_bilirubin", "creatine_kinase", "comorbidities", "nlr")

#: Budgets of the import: the archive (the authors' is under 1 MiB) and what it unpacks to, each
#: file read from it or from an unpacked folder, and the files and folders searched in a folder.
MAX_ARCHIVE_BYTES = 64 * 1024 * 1024
MAX_SOURCE_FILES = 10_000


def _safe_extract(zip_path: Path, dest: Path) -> None:
    """Extract the checkpoint files and the donor table, refusing unsafe archives."""
    try:
        extract_zip(zip_path, dest, max_member_bytes=MAX_ARCHIVE_BYTES, max_total_bytes=MAX_ARCHIVE_BYTES,
                    max_members=MAX_SOURCE_FILES, code="model_too_large",
                    keep=lambda p: p.name.startswith("model.") or p.name == "imputation.csv")
    except InputError as exc:
        raise ModelError(f"{zip_path}: refusing the archive (unsafe path, link, size or corruption): {exc}",
                         code=exc.code) from None


def _checked(path: Path) -> Path:
    """``path`` when it is a regular file within :data:`MAX_ARCHIVE_BYTES` (never a FIFO or a device)."""
    try:
        check_file(path, MAX_ARCHIVE_BYTES, str(path), what="model file", code="model_too_large")
    except InputError as exc:
        raise ModelError(str(exc), code=exc.code) from None
    return path


def _find_root(base: Path) -> Path:
    """The folder that holds fold_0 ... fold_4 (searched without following links to folders,
    over at most :data:`MAX_SOURCE_FILES` files and folders)."""
    try:
        found = walk_files(base, MAX_SOURCE_FILES, str(base), folders=True)
    except InputError as exc:
        raise ModelError(str(exc), code=exc.code) from None
    hits = sorted(p.parent for p in found if p.name == "fold_0" and p.is_dir())
    if not hits:
        raise ModelError(
            f"{base}: no fold_0 ... fold_4 checkpoint folders found; expected the authors' models.zip "
            "(models/fold_N/model.index, model.data-00000-of-00001) and models/imputation.csv."
        )
    return hits[0]


def _open_source(path: Path):
    try:
        return open_regular(path, str(path), what="model archive")
    except InputError as exc:
        raise ModelError(str(exc), code=exc.code) from None


def _read_donors(path: Path) -> np.ndarray:
    if not path.exists():
        raise ModelError(f"{path}: the donor table imputation.csv is missing from the model archive.")
    _checked(path)
    try:
        raw = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ModelError(f"{path}: the donor table is not numeric ({exc}).") from None
    if raw.shape[1] != 1 + len(DONOR_COLUMNS):
        raise ModelError(f"{path}: expected {1 + len(DONOR_COLUMNS)} columns, found {raw.shape[1]}.")
    if not np.all(np.isfinite(raw)):
        raise ModelError(f"{path}: the donor table has missing values.")
    cols = raw[:, 1:]
    return np.column_stack([cols[:, DONOR_COLUMNS.index(f)] for f in FEATURE_NAMES])


def import_published_model(source: str | Path) -> TriageModel:
    """Build a :class:`TriageModel` from the authors' ``models.zip`` (or its unpacked folder).

    Reads the five checkpoints without TensorFlow, checks every tensor's shape and
    checksum, and attaches the donor table and provenance (file hash, date).
    """
    source = Path(source)
    if not source.exists():
        raise ModelError(f"{source}: not found.")
    if not source.is_dir():
        _checked(source)
    with tempfile.TemporaryDirectory(prefix="pulmo-import-") as tmp:
        if source.is_dir():
            base = source
            digest = None
        else:
            with _open_source(source) as fh:
                data = fh.read(MAX_ARCHIVE_BYTES + 1)
            if len(data) > MAX_ARCHIVE_BYTES:
                raise ModelError(f"{source}: over the limit of {MAX_ARCHIVE_BYTES >> 20} MiB for the model archive.",
                                 code="model_too_large")
            digest = hashlib.sha256(data).hexdigest()
            if not zipfile.is_zipfile(io.BytesIO(data)):
                raise ModelError(f"{source}: expected the authors' models.zip or its unpacked folder.")
            base = Path(tmp)
            _safe_extract(source, base)
        root = _find_root(base)
        ensemble = []
        for k in range(N_FOLDS):
            fold = root / f"fold_{k}"
            for f in sorted(fold.glob("model.*")) if fold.is_dir() else ():
                _checked(f)
            ckpt = Checkpoint(fold / "model")
            layers = []
            width = len(FEATURE_NAMES)
            for name, out in zip(LAYERS, (27, 12, 1)):
                w = ckpt.tensor(f"{name}/weights")
                b = ckpt.tensor(f"{name}/biases")
                if w.shape != (width, out) or b.shape != (out,):
                    raise ModelError(
                        f"{root}/fold_{k}: {name} has shape {w.shape}/{b.shape}, expected "
                        f"({width}, {out})/({out},); this is not the published model."
                    )
                layers.append(DenseLayer(w.astype(np.float64), b.astype(np.float64), "tanh"))
                width = out
            ensemble.append(layers)
        donors = _read_donors(root / "imputation.csv")

    mean = np.array([SCALING.get(f, (0.0, 1.0))[0] for f in FEATURE_NAMES])
    sd = np.array([SCALING.get(f, (0.0, 1.0))[1] for f in FEATURE_NAMES])
    times = np.array(sorted(BASELINE_CUMHAZ))
    return TriageModel(
        features=list(FEATURE_NAMES),
        mean=mean,
        sd=sd,
        ensemble=ensemble,
        cox_coefficients=np.array([COX_COEFFICIENTS[f] for f in FEATURE_NAMES]),
        cox_coefficient_dl=COX_COEFFICIENT_DL,
        baseline_times=times,
        baseline_cumhaz=np.array([BASELINE_CUMHAZ[t] for t in times]),
        horizons=(5.0, 10.0, 30.0),
        risk_horizon=30.0,
        risk_low_max=RISK_LOW_MAX,
        risk_high_min=RISK_HIGH_MIN,
        reference=donors.mean(axis=0),
        donors=donors,
        provenance={
            "name": "Published COVID-19 critical-illness triage model (2020)",
            "citation": CITATION,
            "source_file": source.name,
            "source_sha256": digest,
            "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "imported_by": f"pulmo {__version__}",
            "outcome": "critical illness (ICU admission, invasive ventilation or death)",
            "development_cohort": "1590 patients, 575 centres in China (8.2% events)",
            "licence": "The authors' artefact states no licence: do not redistribute this file.",
            "donors": "development cohort covariates (already imputed), 1590 rows",
        },
        metrics={"c_index_development": 0.894, "c_index_external": [0.878, 0.769, 0.967]},
    )
