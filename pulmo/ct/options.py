"""Everything that configures a chest-CT analysis, in one object.

The core reads no environment variable and no command-line flag: each face (the
``pulmo`` command line, the web service) builds an :class:`AnalysisOptions` from its
own settings and passes it to :func:`pulmo.ct.analyze`. The command line's mapping of
flags and ``PULMO_*`` environment variables onto these fields is
:func:`pulmo.cli.ct.analysis_options`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pulmo.ct.io.options import LoadOptions
from pulmo.ct.quantify import ScoreParams
from pulmo.ct.segment.lesions import LesionParams
from pulmo.ct.segment.lungs import LungParams

__all__ = ["AnalysisOptions", "LoadOptions", "LungParams", "LesionParams", "ScoreParams"]


@dataclass
class AnalysisOptions:
    """How a CT is read, segmented, quantified and which outputs it gets.

    Models
        ``shipped_network``: use Pulmo's shipped lung + lesion network (``seg.onnx`` for CT
        in HU, ``seg_8bit.onnx`` for 8-bit slices), or the file ``seg_model`` instead of it.
        When it cannot be loaded, CT volumes fall back to the classical density method with a
        ``learned_models_unavailable`` warning; 8-bit images are refused.
        ``plugin_models``: look for plug-in ONNX models (``lungs.onnx``, ``lobes.onnx``,
        ``lesions.onnx``, see :mod:`pulmo.ct.segment.models`) in ``models_dir`` and then in the
        package's own model folder; ``lung_model`` / ``lobe_model`` / ``lesion_model`` name one
        file explicitly (used whatever ``plugin_models`` says).
        ``lobe_tool``: an installed external lobe program, run as a command with ``{input}`` and
        ``{output}`` (see :mod:`pulmo.ct.segment.lobe_tool`), its lobe numbering ``lobe_tool_labels``.
        ``threads``: onnxruntime threads per network (None: the CPUs this process may use).
    Lungs
        ``learned_lung_recovery``: add to the classical lung mask the voxels the network labels
        lung and lesion, denser than -500 HU, not in the mediastinum, inside the bony thorax:
        consolidated and ground-glass lung that density thresholds lose (docs/ct.md).
    Scope
        ``segment_only``: masks only (no quantification, report or DICOM): the fast path.
    Outputs (what :func:`pulmo.ct.write_outputs` writes; decided here so that the analysis
    lists its own outputs)
        ``write_dicom``: DICOM SEG, TID 1500 SR and Secondary Capture from DICOM input;
        ``write_report``: ``report.html``.
    """

    load: LoadOptions = field(default_factory=LoadOptions)
    lungs: LungParams = field(default_factory=LungParams)
    lesions: LesionParams = field(default_factory=LesionParams)
    score: ScoreParams = field(default_factory=ScoreParams)
    shipped_network: bool = True
    seg_model: str | Path | None = None
    plugin_models: bool = True
    models_dir: str | Path | None = None
    lung_model: str | Path | None = None
    lobe_model: str | Path | None = None
    lesion_model: str | Path | None = None
    lobe_tool: str | None = None
    lobe_tool_labels: str = "lungmask"
    threads: int | None = None
    learned_lung_recovery: bool = True
    segment_only: bool = False
    write_dicom: bool = True
    write_report: bool = True
