"""Lobes from an installed external tool (lungmask, TotalSegmentator or any command line).

Pulmo never downloads or bundles such a tool; when a site has one installed it can be
plugged in with ``AnalysisOptions(lobe_tool=CMD, lobe_tool_labels=SCHEME)`` (on the command
line ``--lobe-tool`` / ``--lobe-labels`` or ``PULMO_CT_LOBE_TOOL`` / ``PULMO_CT_LOBE_LABELS``):

* Pulmo writes the CT, in Hounsfield units, as ``ct.nii.gz`` in a private temporary
  folder, in the geometry of the input (NIfTI header affine in RAS, as NIfTI requires);
* runs ``CMD`` with ``{input}`` replaced by that file and ``{output}`` by the label
  file the tool must write (``lobes.nii.gz`` in the same folder). The command is split
  like a shell would (:func:`shlex.split`) but no shell runs it;
* reads the tool's label map (NIfTI, NRRD or MHA: anything SimpleITK reads), which must
  have the grid of the input, and translates the tool's lobe numbers into Pulmo's
  (1 right upper, 2 right middle, 3 right lower, 4 left upper, 5 left lower) with the
  scheme: ``lungmask`` (LTRCLobes: 1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL),
  ``totalsegmentator`` (``--ml`` output of the ``total`` task: 10 LUL, 11 LLL, 12 RUL,
  13 RML, 14 RLL), ``pulmo`` (already Pulmo's numbers) or an explicit list
  ``"tool=pulmo,..."`` such as ``"3=1,4=2,5=3,1=4,2=5"``. Other labels become background.

Example commands::

    lungmask {input} {output} --modelname LTRCLobes                       # --lobe-labels lungmask
    TotalSegmentator -i {input} -o {output} --ml --fast                   # --lobe-labels totalsegmentator

Any failure (tool not found, non-zero exit, time-out, no or unreadable output, other
grid) raises :class:`pulmo.errors.ModelError` with the reason and the end of the tool's
error output; the pipeline then uses zones and says why in the results' warnings.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pulmo.errors import InputError, ModelError

SCHEMES = {
    "lungmask": {3: 1, 4: 2, 5: 3, 1: 4, 2: 5},
    "totalsegmentator": {12: 1, 13: 2, 14: 3, 10: 4, 11: 5},
    "pulmo": {1: 1, 2: 2, 3: 3, 4: 4, 5: 5},
}
DEFAULT_TIMEOUT_S = 1800.0


def parse_scheme(text: str) -> dict[int, int]:
    """A label scheme by name (see :data:`SCHEMES`) or as ``"tool=pulmo,..."`` pairs."""
    key = text.strip().lower()
    if key in SCHEMES:
        return dict(SCHEMES[key])
    mapping: dict[int, int] = {}
    try:
        for pair in key.split(","):
            a, b = pair.split("=")
            mapping[int(a)] = int(b)
    except ValueError:
        raise InputError(f"lobe label scheme {text!r}: give one of {', '.join(SCHEMES)} "
                         "or pairs like '3=1,4=2,5=3,1=4,2=5' (tool label = Pulmo lobe)") from None
    if not mapping or not set(mapping.values()) <= set(range(1, 6)) or min(mapping) < 1:
        raise InputError(f"lobe label scheme {text!r}: Pulmo lobes are 1..5 and tool labels positive integers")
    return mapping


class ExternalLobeTool:
    """An installed lobe segmentation program, run on one CT at a time."""

    def __init__(self, command: str, scheme: str = "lungmask", timeout_s: float = DEFAULT_TIMEOUT_S):
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise InputError(f"lobe tool command {command!r}: {exc}") from None
        if not self.argv:
            raise InputError("lobe tool command is empty")
        if not any("{input}" in a for a in self.argv) or not any("{output}" in a for a in self.argv):
            raise InputError(f"lobe tool command {command!r} must contain {{input}} and {{output}}")
        self.command = command
        self.scheme_name = scheme
        self.mapping = parse_scheme(scheme)
        self.timeout_s = float(timeout_s)
        self.version = "external"

    @property
    def name(self) -> str:
        return Path(self.argv[0]).name

    def describe(self) -> str:
        return f"external lobe tool '{self.command}' (labels: {self.scheme_name})"

    def predict(self, vol) -> np.ndarray:
        """Pulmo lobe labels on ``vol``'s canonical grid (same shape as ``vol.array``)."""
        exe = shutil.which(self.argv[0])
        if exe is None:
            raise ModelError(f"lobe tool {self.argv[0]!r} not found on PATH")
        with tempfile.TemporaryDirectory(prefix="pulmo-lobes-") as tmp:
            src, dst = Path(tmp) / "ct.nii.gz", Path(tmp) / "lobes.nii.gz"
            native = vol.to_native(np.asarray(vol.array, dtype=np.int16) if vol.is_hu else vol.array)
            sitk.WriteImage(native, str(src), True)
            argv = [exe] + [a.replace("{input}", str(src)).replace("{output}", str(dst)) for a in self.argv[1:]]
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s,
                                      stdin=subprocess.DEVNULL, cwd=tmp)
            except subprocess.TimeoutExpired:
                raise ModelError(f"lobe tool {self.name} did not finish within {self.timeout_s:.0f} s") from None
            except OSError as exc:
                raise ModelError(f"lobe tool {self.name} could not be started: {exc}") from None
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout or "").strip()[-400:]
                raise ModelError(f"lobe tool {self.name} failed (exit {proc.returncode})" + (f": {tail}" if tail else ""))
            if not dst.is_file():
                cands = sorted(p for p in Path(tmp).iterdir() if p.name != src.name and p.suffix in (".gz", ".nii", ".nrrd", ".mha"))
                if len(cands) != 1:
                    raise ModelError(f"lobe tool {self.name} wrote no label file {dst.name}")
                dst = cands[0]
            try:
                out = sitk.ReadImage(str(dst))
            except RuntimeError as exc:
                raise ModelError(f"lobe tool {self.name}: its output is not a readable image ({exc})") from None
            return self._to_canonical(vol, native, out)

    def _to_canonical(self, vol, native: sitk.Image, out: sitk.Image) -> np.ndarray:
        if out.GetSize() != native.GetSize() or not (
                np.allclose(out.GetSpacing(), native.GetSpacing(), rtol=1e-3, atol=1e-3)
                and np.allclose(out.GetOrigin(), native.GetOrigin(), atol=1e-2)
                and np.allclose(out.GetDirection(), native.GetDirection(), atol=1e-3)):
            raise ModelError(f"lobe tool {self.name}: its output grid {out.GetSize()} does not match the CT "
                             f"{native.GetSize()} (size, spacing, origin and direction must be the same)")
        if out.GetNumberOfComponentsPerPixel() != 1:
            raise ModelError(f"lobe tool {self.name}: its output has several components per voxel, not labels")
        out.CopyInformation(native)
        arr = sitk.GetArrayFromImage(out)
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.mod(arr, 1) == 0):
                raise ModelError(f"lobe tool {self.name}: its output holds non-integer values, not labels")
        lut = np.zeros(256, np.uint8)
        for tool_label, lobe in self.mapping.items():
            if tool_label < 256:
                lut[tool_label] = lobe
        arr = np.where((arr >= 0) & (arr < 256), arr, 0).astype(np.uint8)
        native_labels = sitk.GetImageFromArray(lut[arr])
        native_labels.CopyInformation(native)
        labels = vol.from_native(native_labels)
        if not labels.any():
            raise ModelError(f"lobe tool {self.name}: no lobe labels ({self.scheme_name} scheme) in its output")
        return labels
