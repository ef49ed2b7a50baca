"""The triage model and Pulmo's own model file format (``.pulmo-triage``).

A triage model is the published design of the 2020 critical-illness model:

1. each input feature is scaled (binary features as 0/1, continuous ones z-scored);
2. an ensemble of small MLPs gives ``score_dl`` (the mean of the members' outputs);
3. a Cox model on the scaled features plus ``score_dl`` gives
   ``score_final = sum_j coef_j * scaled_j + coef_dl * score_dl``;
4. ``P(critical illness by t) = 1 - exp(-H0(t) * exp(score_final))`` with the Breslow
   baseline cumulative hazard ``H0`` (a step function of time in days);
5. the risk group comes from ``P`` at ``risk_horizon`` and two cut-offs
   (low if ``P <= low_max``, high if ``P > high_min``, medium otherwise).

File format, version 1
----------------------
A ZIP archive holding

``model.json``
    ``{"format": "pulmo-triage-model", "format_version": 1, ...}`` with ``features``
    (canonical names, network input order), ``scaling`` (``mean``/``sd`` per feature;
    binary features have mean 0 and sd 1), ``ensemble`` (list of members, each a list
    of layers ``{"weight": NAME, "bias": NAME, "activation": "tanh"|"relu"|"selu"|"linear"}``),
    ``cox`` (``coefficients`` per feature and ``score_dl``), ``baseline_hazard``
    (``times`` in days and ``cumulative_hazard``; H0(t) is the value at the largest
    time <= t, 0 before the first), ``horizons`` (days reported), ``risk``
    (``horizon``, ``low_max``, ``high_min``), ``reference`` (raw feature values of the
    reference patient used for explanations), ``provenance`` and ``metrics`` (free-form).
``arrays.npz``
    The named float64 arrays referenced from ``model.json`` (``weight`` has shape
    (inputs, outputs): ``h = act(h @ W + b)``), and optionally ``donors``, the
    imputation donor table (n, len(features)) in raw units.

Nothing else is executed or unpickled when a file is read.
"""

from __future__ import annotations

import io
import json
import os
import threading
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from pulmo.errors import InputError, ModelError
from pulmo.io.archives import open_zip, read_member
from pulmo.io.limits import MiB, check_file

FORMAT_NAME = "pulmo-triage-model"
FORMAT_VERSION = 1

#: Budgets of :meth:`TriageModel.load`: the file, its two members as decompressed, the ensemble.
#: A model trained on a million patients with its donor table (20 features) is ~160 MiB of arrays.
MAX_FILE_BYTES = 512 * MiB
MAX_MANIFEST_BYTES = 32 * MiB
MAX_ARRAYS_BYTES = 512 * MiB
MAX_MEMBERS = 1000
MAX_LAYERS = 100

_BLOCK_ROWS = 4096
_THREADS = max(1, min(os.cpu_count() or 1, 8))
_POOL_LOCK = threading.Lock()

_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "selu": lambda x: 1.0507009873554805
    * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0.0))),
    "linear": lambda x: x,
}


@dataclass
class DenseLayer:
    """One fully connected layer, ``act(h @ weight + bias)``; weight is (inputs, outputs)."""

    weight: np.ndarray
    bias: np.ndarray
    activation: str = "tanh"

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight, dtype=np.float64)
        self.bias = np.asarray(self.bias, dtype=np.float64).reshape(-1)
        if self.weight.ndim != 2 or self.weight.shape[1] != self.bias.shape[0]:
            raise ModelError(
                f"layer weight {self.weight.shape} does not match bias {self.bias.shape}"
            )
        if self.activation not in _ACTIVATIONS:
            raise ModelError(f"unknown activation {self.activation!r}")


@dataclass
class TriageModel:
    """A complete triage model; see the module docstring for the computation.

    All arrays are float64. Times are in days. ``features`` are canonical names from
    :mod:`pulmo.triage.schema` (or, for a model trained on another cohort, the
    cohort's own column names).
    """

    features: list[str]
    mean: np.ndarray
    sd: np.ndarray
    ensemble: list[list[DenseLayer]]
    cox_coefficients: np.ndarray
    cox_coefficient_dl: float
    baseline_times: np.ndarray
    baseline_cumhaz: np.ndarray
    horizons: tuple[float, ...] = (5.0, 10.0, 30.0)
    risk_horizon: float = 30.0
    risk_low_max: float = 0.02750352
    risk_high_min: float = 0.3114235
    reference: np.ndarray | None = None
    donors: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = len(self.features)
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.sd = np.asarray(self.sd, dtype=np.float64).reshape(-1)
        self.cox_coefficients = np.asarray(self.cox_coefficients, dtype=np.float64).reshape(-1)
        self.baseline_times = np.asarray(self.baseline_times, dtype=np.float64).reshape(-1)
        self.baseline_cumhaz = np.asarray(self.baseline_cumhaz, dtype=np.float64).reshape(-1)
        self.horizons = tuple(float(h) for h in self.horizons)
        if len(set(self.features)) != p:
            raise ModelError("model features repeat a name")
        for name, arr in (("mean", self.mean), ("sd", self.sd), ("cox coefficients", self.cox_coefficients)):
            if arr.shape != (p,):
                raise ModelError(f"model {name} has {arr.shape[0]} values for {p} features")
            if not np.all(np.isfinite(arr)):
                raise ModelError(f"model {name} contains non-finite values")
        if np.any(self.sd <= 0):
            raise ModelError("model scaling has a non-positive standard deviation")
        if not self.ensemble:
            raise ModelError("model has no ensemble members")
        for member in self.ensemble:
            width = p
            for layer in member:
                if layer.weight.shape[0] != width:
                    raise ModelError(
                        f"ensemble layer expects {layer.weight.shape[0]} inputs, gets {width}"
                    )
                if not (np.all(np.isfinite(layer.weight)) and np.all(np.isfinite(layer.bias))):
                    raise ModelError("ensemble weights contain non-finite values")
                width = layer.weight.shape[1]
            if width != 1:
                raise ModelError("each ensemble member must end in a single output")
        if self.baseline_times.shape != self.baseline_cumhaz.shape or self.baseline_times.size == 0:
            raise ModelError("baseline hazard times and values do not match")
        if np.any(np.diff(self.baseline_times) <= 0) or np.any(np.diff(self.baseline_cumhaz) < 0):
            raise ModelError("baseline cumulative hazard must be non-decreasing in increasing time")
        if not self.risk_low_max <= self.risk_high_min:
            raise ModelError("risk cut-offs are in the wrong order")
        if self.reference is not None:
            self.reference = np.asarray(self.reference, dtype=np.float64).reshape(-1)
            if self.reference.shape != (p,):
                raise ModelError("model reference patient has the wrong length")
        if self.donors is not None:
            self.donors = np.asarray(self.donors, dtype=np.float64)
            if self.donors.ndim != 2 or self.donors.shape[1] != p:
                raise ModelError("model donor table has the wrong number of columns")
            if not np.all(np.isfinite(self.donors)):
                raise ModelError("model donor table has missing values")

    # --- computation (numpy in, numpy out) -------------------------------------------

    def scale(self, raw: np.ndarray) -> np.ndarray:
        """Raw feature matrix (n, p) in the model's units -> network inputs (n, p)."""
        return (np.asarray(raw, dtype=np.float64) - self.mean) / self.sd

    def score_dl(self, scaled: np.ndarray) -> np.ndarray:
        """Mean ensemble output for scaled inputs (n, p) -> (n,)."""
        total = np.zeros(scaled.shape[:-1], dtype=np.float64)
        for member in self.ensemble:
            h = scaled
            for layer in member:
                h = h @ layer.weight
                h += layer.bias
                h = _ACTIVATIONS[layer.activation](h)
            total += h[..., 0]
        return total / len(self.ensemble)

    def linear_predictor(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw features (..., p) -> (score_dl, score_final), each of shape (...).

        Large inputs are evaluated in cache-sized row blocks on one thread per core
        (numpy releases the GIL; BLAS is kept single-threaded meanwhile), several
        times faster than whole-array temporaries, with the same numbers.
        """
        raw = np.asarray(raw, dtype=np.float64)
        shape = raw.shape[:-1]
        flat = raw.reshape(-1, raw.shape[-1])
        n = flat.shape[0]
        dl = np.empty(n)
        final = np.empty(n)

        def block(start: int) -> None:
            stop = min(start + _BLOCK_ROWS, n)
            scaled = (flat[start:stop] - self.mean) / self.sd
            d = self.score_dl(scaled)
            dl[start:stop] = d
            final[start:stop] = scaled @ self.cox_coefficients + self.cox_coefficient_dl * d

        starts = range(0, n, _BLOCK_ROWS)
        if n > 4 * _BLOCK_ROWS and _THREADS > 1:
            # threadpool_limits changes the process-wide BLAS setting: one such section at a time,
            # so that concurrent callers (a web service's threads) restore it correctly.
            with _POOL_LOCK, threadpool_limits(1), ThreadPoolExecutor(_THREADS) as pool:
                list(pool.map(block, starts))
        else:
            for s0 in starts:
                block(s0)
        return dl.reshape(shape), final.reshape(shape)

    def cumulative_hazard(self, t: np.ndarray | float) -> np.ndarray:
        """Baseline cumulative hazard H0 at time(s) t (days), right-continuous step function."""
        t = np.asarray(t, dtype=np.float64)
        idx = np.searchsorted(self.baseline_times, t, side="right") - 1
        return np.where(idx >= 0, self.baseline_cumhaz[np.clip(idx, 0, None)], 0.0)

    def probability(self, score_final: np.ndarray, t: float | np.ndarray) -> np.ndarray:
        """P(critical illness by day t) = 1 - exp(-H0(t) exp(score_final))."""
        h0 = self.cumulative_hazard(t)
        return -np.expm1(-h0 * np.exp(np.asarray(score_final, dtype=np.float64)))

    def risk_group(self, p_risk_horizon: np.ndarray) -> np.ndarray:
        """'low' / 'medium' / 'high' from the probability at ``risk_horizon``."""
        p = np.asarray(p_risk_horizon)
        return np.where(p <= self.risk_low_max, "low", np.where(p > self.risk_high_min, "high", "medium"))

    # --- persistence ------------------------------------------------------------------

    def save(self, path: str | Path, **check) -> Path:
        """Write the model atomically to ``path`` (a ``.pulmo-triage`` ZIP archive), never over a
        file Pulmo did not write unless ``force=True``: ``check`` goes to
        :func:`pulmo.io.outputs.output_file` (``force``, ``inputs``, ``input_dirs``, ``what``)."""
        from pulmo.io.outputs import output_file

        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        members = []
        for i, member in enumerate(self.ensemble):
            layers = []
            for j, layer in enumerate(member):
                wn, bn = f"m{i}_l{j}_weight", f"m{i}_l{j}_bias"
                arrays[wn], arrays[bn] = layer.weight, layer.bias
                layers.append({"weight": wn, "bias": bn, "activation": layer.activation})
            members.append(layers)
        if self.donors is not None:
            arrays["donors"] = self.donors
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "features": list(self.features),
            "scaling": {"mean": self.mean.tolist(), "sd": self.sd.tolist()},
            "ensemble": members,
            "cox": {
                "coefficients": dict(zip(self.features, self.cox_coefficients.tolist())),
                "score_dl": float(self.cox_coefficient_dl),
            },
            "baseline_hazard": {
                "times": self.baseline_times.tolist(),
                "cumulative_hazard": self.baseline_cumhaz.tolist(),
            },
            "horizons": list(self.horizons),
            "risk": {
                "horizon": self.risk_horizon,
                "low_max": self.risk_low_max,
                "high_min": self.risk_high_min,
            },
            "reference": None if self.reference is None else self.reference.tolist(),
            "has_donors": self.donors is not None,
            "provenance": self.provenance,
            "metrics": self.metrics,
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        check.setdefault("what", "model file")
        with output_file(path, **check) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("model.json", json.dumps(manifest, indent=2))
                zf.writestr("arrays.npz", buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TriageModel":
        """Read a ``.pulmo-triage`` file; raises :class:`ModelError` with a clear message.

        Budgets, checked before anything is decompressed or allocated: a regular file (not a FIFO
        or a device) of at most :data:`MAX_FILE_BYTES`; ``model.json`` and ``arrays.npz`` of at
        most :data:`MAX_MANIFEST_BYTES` and :data:`MAX_ARRAYS_BYTES` as decompressed (counted
        while reading); each array's declared shape within what remains; at most
        :data:`MAX_MEMBERS` ensemble members of :data:`MAX_LAYERS` layers (code ``model_too_large``).
        """
        path = Path(path)
        if not path.exists():
            raise ModelError(f"{path}: model file not found.")
        if path.is_dir():
            raise ModelError(f"{path}: is a folder; expected a .pulmo-triage model file "
                             "(create one with 'pulmo triage import-model' or 'pulmo triage train').")
        try:
            check_file(path, MAX_FILE_BYTES, str(path), what="model file", code="model_too_large")
            with open_zip(path, max_members=64, label=str(path)) as zf:
                manifest = json.loads(read_member(zf, "model.json", MAX_MANIFEST_BYTES, f"{path}: model.json",
                                                  code="model_too_large"))
                raw = read_member(zf, "arrays.npz", MAX_ARRAYS_BYTES, f"{path}: arrays.npz", code="model_too_large")
            arrays = _read_arrays(raw, path)
        except InputError as exc:
            if exc.code in ("special_file", "model_too_large"):
                raise ModelError(str(exc), code=exc.code) from None
            reason = str(exc).removeprefix(f"{path}: ")
            raise ModelError(f"{path}: not a valid Pulmo triage model file ({reason}).", code=exc.code) from None
        except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, OSError, EOFError, RecursionError,
                UnicodeDecodeError, OverflowError) as exc:  # zlib: damaged bytes
            raise ModelError(
                f"{path}: not a valid Pulmo triage model file ({type(exc).__name__}: {exc})."
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise ModelError(f"{path}: not a Pulmo triage model file.")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelError(
                f"{path}: model file format version {version} is not supported "
                f"(this Pulmo reads version {FORMAT_VERSION})."
            )
        try:
            members = manifest["ensemble"]
            if len(members) > MAX_MEMBERS or any(len(m) > MAX_LAYERS for m in members):
                raise ModelError(f"{path}: an ensemble of {len(members)} members (of up to "
                                 f"{max((len(m) for m in members), default=0)} layers), over the limit of "
                                 f"{MAX_MEMBERS} members of {MAX_LAYERS} layers.", code="model_too_large")
            features = list(manifest["features"])
            ensemble = [
                [
                    DenseLayer(arrays[layer["weight"]], arrays[layer["bias"]], layer["activation"])
                    for layer in member
                ]
                for member in manifest["ensemble"]
            ]
            coefs = manifest["cox"]["coefficients"]
            risk = manifest["risk"]
            return cls(
                features=features,
                mean=manifest["scaling"]["mean"],
                sd=manifest["scaling"]["sd"],
                ensemble=ensemble,
                cox_coefficients=[coefs[f] for f in features],
                cox_coefficient_dl=float(manifest["cox"]["score_dl"]),
                baseline_times=manifest["baseline_hazard"]["times"],
                baseline_cumhaz=manifest["baseline_hazard"]["cumulative_hazard"],
                horizons=tuple(manifest["horizons"]),
                risk_horizon=float(risk["horizon"]),
                risk_low_max=float(risk["low_max"]),
                risk_high_min=float(risk["high_min"]),
                reference=manifest.get("reference"),
                donors=arrays.get("donors"),
                provenance=manifest.get("provenance", {}),
                metrics=manifest.get("metrics", {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
            raise ModelError(f"{path}: model file is incomplete or corrupt ({type(exc).__name__}: {exc}).") from None


def _read_arrays(raw: bytes, path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``arrays.npz`` (an in-memory zip of ``.npy`` files): each one's header
    (shape, dtype) is checked against what remains of :data:`MAX_ARRAYS_BYTES` before numpy
    allocates it; object (pickled) arrays are refused."""
    label = f"{path}: arrays.npz"
    try:
        inner = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a valid Pulmo triage model file (arrays: {exc}).") from None
    with inner:
        infos = inner.infolist()
        if len(infos) > 100_000:
            raise ModelError(f"{label}: {len(infos)} arrays, over the limit of 100000.", code="model_too_large")
        left = MAX_ARRAYS_BYTES
        arrays = {}
        for info in infos:
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with inner.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise ValueError(f"array {key}: .npy format version {version} is not supported")
                if dtype.hasobject:
                    raise ValueError(f"array {key} holds Python objects, which are never loaded")
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                left -= nbytes
                if left < 0:
                    raise ModelError(f"{label}: its arrays declare more than {MAX_ARRAYS_BYTES >> 20} MiB, over the "
                                     f"limit of {MAX_ARRAYS_BYTES >> 20} MiB.", code="model_too_large")
            with inner.open(info) as fh:  # from the start: read_array reads the header again
                arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
        return arrays
