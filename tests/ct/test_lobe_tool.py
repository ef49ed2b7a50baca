"""External lobe programs (lungmask, TotalSegmentator, ...) through ``--lobe-tool``.

The tests write a small stand-in program that behaves like such a tool: it reads the
NIfTI CT it is given and writes a lobe label map on the same grid, in lungmask's
numbering (1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL) or another one.
"""

from __future__ import annotations

import json
import shlex
import sys

import numpy as np
import pytest

from pulmo.cli import main
from pulmo.ct import AnalysisOptions, analyze

TOOL = r'''
import sys
import numpy as np
import SimpleITK as sitk

src, dst, mode = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "fail":
    sys.stderr.write("CUDA out of memory (pretend)\n")
    sys.exit(7)
img = sitk.ReadImage(src)
code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection())
lps = sitk.DICOMOrient(img, "LPS")
hu = sitk.GetArrayFromImage(lps)                 # (z, y, x): x towards the patient's left
lung = hu < -500
zs = np.flatnonzero(lung.any(axis=(1, 2)))
xs = np.flatnonzero(lung.any(axis=(0, 1)))
z0, z1 = zs[0], zs[-1]
xmid = (xs[0] + xs[-1]) // 2
zz = np.arange(hu.shape[0])[:, None, None]
xx = np.arange(hu.shape[2])[None, None, :]
third = (z1 - z0 + 1) / 3.0
band = np.clip(((zz - z0) // third).astype(int), 0, 2)   # 0 inferior .. 2 superior
right = np.where(band == 2, 3, np.where(band == 1, 4, 5))  # RUL / RML / RLL
left = np.where(band >= 1, 1, 2)                           # LUL / LLL
lab = np.where(xx < xmid, right, left) * lung
if mode == "tseg":                                          # TotalSegmentator numbering
    lab = np.select([lab == 1, lab == 2, lab == 3, lab == 4, lab == 5], [10, 11, 12, 13, 14], 0)
out = sitk.GetImageFromArray(lab.astype(np.uint8))
out.CopyInformation(lps)
out = sitk.DICOMOrient(out, code)
if mode == "shrink":
    out = out[:-2, :, :]
sitk.WriteImage(out, dst)
'''


@pytest.fixture
def tool(tmp_path):
    script = tmp_path / "fake_lobe_tool.py"
    script.write_text(TOOL)

    def command(mode="lungmask"):
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {{input}} {{output}} {mode}"
    return command


def _analyze(phantom_dicom, out, *extra):
    return main(["ct", "analyze", str(phantom_dicom), "-o", str(out), "--no-progress", "--no-dicom", *extra])


def _analysis(phantom_dicom, **options):
    """The in-memory analysis with the classical method (as the CLI under PULMO_CT_MODELS=none)."""
    return analyze(phantom_dicom, AnalysisOptions(shipped_network=False, plugin_models=False, **options))


@pytest.mark.parametrize("mode,scheme", [("lungmask", "lungmask"), ("tseg", "totalsegmentator"),
                                         ("lungmask", "3=1,4=2,5=3,1=4,2=5")])
def test_lobes_from_external_tool(phantom_dicom, tool, mode, scheme):
    a = _analysis(phantom_dicom, lobe_tool=tool(mode), lobe_tool_labels=scheme)
    res = a.to_dict()
    assert res["regions"]["kind"] == "lobes"
    assert res["method"]["regions"].startswith("external lobe tool")
    assert res["quantification"]["severity"]["max"] == 25
    vols = {r["name"]: r["volume_ml"] for r in res["quantification"]["regions"]}
    assert all(vols[n] > 0 for n in ("right upper lobe", "right middle lobe", "right lower lobe",
                                      "left upper lobe", "left lower lobe"))
    # the tool's numbers were translated: Pulmo's right upper lobe is in the right lung, above its lower lobe
    lungs, regions = a.native_mask("lungs"), a.native_mask("regions")   # (z, y, x) of the DICOM stack
    assert np.all(lungs[regions == 1] == 1) and np.all(lungs[regions == 4] == 2)
    zmean = {k: (np.nonzero(regions == k)[0]).mean() for k in (1, 3, 4, 5)}
    assert zmean[1] > zmean[3] and zmean[4] > zmean[5]


def test_lobes_in_dicom_outputs(tmp_path, phantom_dicom, tool):
    import highdicom as hd

    out = tmp_path / "out"
    assert main(["ct", "analyze", str(phantom_dicom), "-o", str(out), "--no-progress",
                 "--lobe-tool", tool("lungmask")]) == 0
    seg = hd.seg.segread(out / "seg.dcm")
    labels = [d.SegmentLabel for d in seg.SegmentSequence]
    assert labels[2:7] == ["right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe",
                           "left lower lobe"]
    sr = hd.sr.srread(out / "sr_measurements.dcm")
    assert len(sr.content.get_volumetric_roi_measurement_groups()) == 2 + 5


def test_environment_variable(tmp_path, phantom_dicom, tool, monkeypatch):
    monkeypatch.setenv("PULMO_CT_LOBE_TOOL", tool("lungmask"))
    out = tmp_path / "env"
    assert _analyze(phantom_dicom, out) == 0
    assert json.loads((out / "results.json").read_text())["regions"]["kind"] == "lobes"


@pytest.mark.parametrize("mode,message", [("fail", "CUDA out of memory"), ("shrink", "does not match the CT")])
def test_failing_tool_falls_back_to_zones(phantom_dicom, tool, mode, message):
    res = _analysis(phantom_dicom, lobe_tool=tool(mode)).to_dict()
    assert res["regions"]["kind"] == "zones"
    warn = [w for w in res["warnings"] if w["code"] == "lobe_tool_failed"]
    assert warn and message in warn[0]["message"] and "zones used" in warn[0]["message"]


def test_missing_tool_falls_back(phantom_dicom):
    res = _analysis(phantom_dicom, lobe_tool="no-such-lobe-program {input} {output}").to_dict()
    assert res["regions"]["kind"] == "zones"
    assert any("not found on PATH" in w["message"] for w in res["warnings"])


@pytest.mark.parametrize("args,message", [
    (["--lobe-tool", "lungmask in out"], "{input} and {output}"),
    (["--lobe-tool", "lungmask '{input} {output}"], "lobe tool command"),
    (["--lobe-labels", "upside-down"], "lobe label scheme"),
    (["--lobe-labels", "3=9"], "Pulmo lobes are 1..5"),
])
def test_bad_tool_options_are_refused(tmp_path, phantom_dicom, capsys, args, message):
    out = tmp_path / "out"
    assert _analyze(phantom_dicom, out, *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()
