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

from pulmo.errors import ModelError

FORMAT_NAME = "pulmo-triage-model"
FORMAT_VERSION = 1

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

    def save(self, path: str | Path) -> Path:
        """Write the model atomically to ``path`` (a ``.pulmo-triage`` ZIP archive)."""
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
        tmp = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("model.json", json.dumps(manifest, indent=2))
                zf.writestr("arrays.npz", buf.getvalue())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TriageModel":
        """Read a ``.pulmo-triage`` file; raises :class:`ModelError` with a clear message."""
        path = Path(path)
        if not path.exists():
            raise ModelError(f"{path}: model file not found.")
        if path.is_dir():
            raise ModelError(f"{path}: is a folder; expected a .pulmo-triage model file "
                             "(create one with 'pulmo triage import-model' or 'pulmo triage train').")
        try:
            with zipfile.ZipFile(path) as zf:
                manifest = json.loads(zf.read("model.json"))
                with np.load(io.BytesIO(zf.read("arrays.npz")), allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files}
        except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, OSError, EOFError) as exc:  # zlib: damaged bytes
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
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: model file is incomplete or corrupt ({type(exc).__name__}: {exc}).") from None
