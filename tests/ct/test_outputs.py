"""End to end through the CLI: outputs, DICOM validity, bad input, batch."""

from __future__ import annotations

import csv
import json

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import dciodvfy
from ct_synth import write_series

from pulmo.cli import main


def test_analyze_writes_everything(analyzed, phantom_data):
    hu, truth = phantom_data
    names = {p.name for p in analyzed.iterdir()}
    assert {"results.json", "report.html", "lungs.nii.gz", "lesions.nii.gz", "regions.nii.gz", "seg.dcm",
            "sr_measurements.dcm", "sc_axial.dcm", "sc_coronal.dcm"} <= names
    res = json.loads((analyzed / "results.json").read_text())
    assert res["schema_version"] == "1.0.0" and res["assessable"] is True
    q = res["quantification"]
    assert q["lungs"]["right"]["ggo_ml"] > 0 and q["lungs"]["left"]["consolidation_ml"] > 0
    html = (analyzed / "report.html").read_text()
    assert "research tool, not a certified medical device" in html.lower()
    assert html.count("data:image/png;base64,") == 2


def test_nifti_in_input_geometry(analyzed, phantom_data):
    hu, truth = phantom_data
    img = nib.load(analyzed / "lungs.nii.gz")
    data = np.asarray(img.dataobj)  # nibabel: (i, j, k) = (x, y, z) of the DICOM stack
    assert data.shape == hu.shape[::-1]
    lungs = data.transpose(2, 1, 0)
    assert ((lungs == 1) & truth["right"]).sum() > 0.95 * truth["right"].sum()
    # NIfTI affine is RAS: voxel (0,0,0) at LPS (-190, -170, -80) -> RAS (190, 170, -80)
    assert np.allclose(img.affine[:3, 3], [190, 170, -80], atol=1e-3)
    les = np.asarray(nib.load(analyzed / "lesions.nii.gz").dataobj).transpose(2, 1, 0)
    assert set(np.unique(les)) <= {0, 1, 2} and ((les == 1) & truth["ggo"]).sum() > 0.8 * truth["ggo"].sum()


def test_seg_reads_back(analyzed, phantom_data, phantom_dicom):
    """One SEG instance holds lungs, zones and lesions; every frame matches the NIfTI maps."""
    _, truth = phantom_data
    seg = hd.seg.segread(analyzed / "seg.dcm")
    labels = [d.SegmentLabel for d in seg.SegmentSequence]
    assert labels[:2] == ["right lung", "left lung"] and len(labels) == 2 + 6 + 2
    assert labels[-2:] == ["ground-glass opacity", "consolidation"]
    assert seg.SegmentsOverlap == "YES" and seg.SegmentationType == "BINARY"
    # every segment carries the colour Pulmo's viewer draws it in (viewers such as OHIF use it)
    colours = [hd.color.CIELabColor.from_dicom_value(d.RecommendedDisplayCIELabValue).to_rgb()
               for d in seg.SegmentSequence]
    assert colours[-2][0] > 200 and colours[-2][1] > 150 and colours[-2][2] < 80    # ground glass: yellow
    assert colours[-1][0] > 180 and colours[-1][1] < 90                             # consolidation: red
    headers = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in phantom_dicom.iterdir()),
                     key=lambda h: float(h.ImagePositionPatient[2]))
    ref = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert ref == {h.SOPInstanceUID for h in headers}
    px = seg.get_pixels_by_source_instance([h.SOPInstanceUID for h in headers],
                                           segment_numbers=list(range(1, len(labels) + 1)))
    maps = {name: np.asarray(nib.load(analyzed / f"{name}.nii.gz").dataobj).transpose(2, 1, 0)
            for name in ("lungs", "regions", "lesions")}
    values = {"right lung": ("lungs", 1), "left lung": ("lungs", 2), "ground-glass opacity": ("lesions", 1),
              "consolidation": ("lesions", 2)}
    for i, label in enumerate(labels):
        name, value = values.get(label, ("regions", i - 1))  # zones 1..6 are segments 3..8
        assert np.array_equal(px[..., i] > 0, maps[name] == value), label
    assert int((px[..., 0] > 0).sum()) == pytest.approx(int(truth["right"].sum()), rel=0.05)


def test_seg_same_as_highdicom_alone(tmp_path, analyzed, phantom_dicom):
    """Pulmo's frame encoder gives the same segmentation as highdicom building every frame."""
    from pulmo.ct.io import load
    from pulmo.ct.report import dicom_out

    vol = load(phantom_dicom)
    maps = {name: np.asarray(nib.load(analyzed / f"{name}.nii.gz").dataobj).transpose(2, 1, 0).astype(np.uint8)
            for name in ("lungs", "regions", "lesions")}
    ours = hd.seg.segread(analyzed / "seg.dcm")
    for name, arr in maps.items():
        specs = dicom_out._seg_specs(name, "zones")
        present = [s for s in specs if (arr == s.value).any()]
        lut = np.zeros(256, np.uint8)
        for i, s in enumerate(present, start=1):
            lut[s.value] = i
        ref = hd.seg.Segmentation(
            source_images=vol.dicom.headers, pixel_array=lut[arr], segmentation_type="BINARY",
            segment_descriptions=[hd.seg.SegmentDescription(
                i, s.label, s.category, s.property_type, "AUTOMATIC",
                hd.AlgorithmIdentificationSequence(name="x", version="1",
                                                   family=hd.sr.CodedConcept("123110", "DCM", "AI")))
                for i, s in enumerate(present, start=1)],
            series_instance_uid=hd.UID(), series_number=1, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="test", manufacturer_model_name="test", software_versions="0", device_serial_number="0")
        ref.save_as(tmp_path / f"{name}.dcm")
        ref = hd.seg.segread(tmp_path / f"{name}.dcm")
        nums = {d.SegmentLabel: d.SegmentNumber for d in ours.SegmentSequence}
        uids = [h.SOPInstanceUID for h in vol.dicom.headers]
        a = ref.get_pixels_by_source_instance(uids, segment_numbers=list(range(1, len(present) + 1)))
        b = ours.get_pixels_by_source_instance(uids, segment_numbers=[nums[s.label] for s in present])
        assert np.array_equal(a, b), name
        # the same frames (segment, source image, position), in the same per-segment order
        def frames(ds, numbers):
            out = []
            for f in ds.PerFrameFunctionalGroupsSequence:
                n = f.SegmentIdentificationSequence[0].ReferencedSegmentNumber
                if n in numbers:
                    out.append((numbers.index(n), f.DerivationImageSequence[0].SourceImageSequence[0]
                                .ReferencedSOPInstanceUID,
                                tuple(float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient)))
            return sorted(out)
        assert frames(ref, list(range(1, len(present) + 1))) == frames(ours, [nums[s.label] for s in present])


def test_sr_tid1500_reads_back(analyzed):
    sr = hd.sr.srread(analyzed / "sr_measurements.dcm")
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 8  # 2 lungs + 6 zones
    right = [g for g in groups if g.tracking_identifier == "right lung"][0]
    seg_ref = right.referenced_segment
    assert seg_ref is not None
    res = json.loads((analyzed / "results.json").read_text())
    vol = [m for m in right.get_measurements() if m.name.meaning == "Volume"][0]
    assert vol.value == pytest.approx(res["quantification"]["lungs"]["right"]["volume_ml"])


@pytest.mark.parametrize("name", ["seg.dcm", "sr_measurements.dcm", "sc_axial.dcm"])
def test_dciodvfy(analyzed, name):
    out = dciodvfy(analyzed / name)
    if out is None:
        pytest.skip("dciodvfy (Debian dicom3tools) not installed")
    errors = [line for line in out.splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


def test_segment_fast_path(tmp_path, phantom_dicom):
    out = tmp_path / "seg"
    assert main(["ct", "segment", str(phantom_dicom), "-o", str(out), "--no-progress"]) == 0
    names = {p.name for p in out.iterdir()}
    listed = set(json.loads((out / "results.json").read_text())["outputs"])
    assert names - {".pulmo-manifest.json"} == listed      # masks and results.json only: no report, no DICOM
    assert {"lungs.nii.gz", "lesions.nii.gz", "regions.nii.gz", "results.json"} <= listed
    assert all(n.endswith(".nii.gz") for n in listed - {"results.json"})
    assert ".pulmo-manifest.json" in names    # what Pulmo wrote here, so that a rerun may replace it


@pytest.mark.parametrize("case", ["empty", "mr", "nofile"])
def test_bad_input_exit_code_and_no_output(tmp_path, phantom_data, capsys, case):
    hu, _ = phantom_data
    src = tmp_path / "in"
    if case == "empty":
        src.mkdir()
    elif case == "mr":
        write_series(hu[:5], src, modality="MR")
    out = tmp_path / "out"
    rc = main(["ct", "analyze", str(src), "-o", str(out), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "pulmo: error:" in err and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging leftovers


def test_failed_rerun_keeps_previous_output(tmp_path, analyzed):
    import shutil

    out = tmp_path / "keep"
    shutil.copytree(analyzed, out)
    (tmp_path / "empty").mkdir()
    assert main(["ct", "analyze", str(tmp_path / "empty"), "-o", str(out), "--no-progress"]) == 2
    assert (out / "results.json").exists()


def test_batch_summary(tmp_path, phantom_data, phantom_dicom):
    import shutil

    hu, _ = phantom_data
    root = tmp_path / "studies"
    shutil.copytree(phantom_dicom, root / "good")
    write_series(hu[:5], root / "bad_mr", modality="MR")
    out = tmp_path / "out"
    rc = main(["ct", "segment", str(root), "-o", str(out), "--batch", "--no-progress"])
    assert rc == 1
    rows = {r["case"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows["good"]["status"] == "ok" and rows["bad_mr"]["status"] == "failed"
    assert "MR" in rows["bad_mr"]["error"]
    assert (out / "good" / "lungs.nii.gz").exists() and not (out / "bad_mr").exists()
    assert rows["good"]["output"] == "good" and rows["bad_mr"]["output"] == ""   # the folder of each case
    (out / "summary.csv").write_text("my own summary\n")   # a file of the user's: refused before any study
    assert main(["ct", "segment", str(root), "-o", str(out), "--batch", "--no-progress"]) == 2
    assert (out / "summary.csv").read_text() == "my own summary\n"


def test_json_flag(tmp_path, phantom_dicom, capsys):
    out = tmp_path / "j"
    assert main(["ct", "analyze", str(phantom_dicom), "-o", str(out), "--json", "--no-dicom", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["quantification"]["severity"]["kind"] == "zone-based"
    assert not list(out.glob("*.dcm"))


def test_sr_references_the_seg(analyzed):
    sr = hd.sr.srread(analyzed / "sr_measurements.dcm")
    seg = hd.seg.segread(analyzed / "seg.dcm")
    numbers = {d.SegmentLabel: d.SegmentNumber for d in seg.SegmentSequence}
    groups = sr.content.get_volumetric_roi_measurement_groups()
    for g in groups:
        ref = g.referenced_segment
        assert ref[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
        assert ref[0].ReferencedSOPSequence[0].ReferencedSegmentNumber == numbers[g.tracking_identifier]


def test_seg_failure_leaves_nothing(tmp_path, phantom_dicom, monkeypatch, capsys):
    from pulmo.ct.report import dicom_out

    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(dicom_out, "write_segmentation", broken)
    out = tmp_path / "fail"
    assert main(["ct", "analyze", str(phantom_dicom), "-o", str(out), "--no-progress"]) == 3
    assert "boom" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".fail*"))


@pytest.mark.parametrize("shape", [(3, 7, 9), (2, 5, 5), (4, 8, 8)])
def test_seg_frames_packed_back_to_back(shape):
    """BINARY frames are packed bit after bit across frame boundaries (a frame may start inside
    a byte when rows x columns is not a multiple of 8), as pydicom's reference packer does."""
    from pydicom.pixels import pack_bits

    from pulmo.ct.report.dicom_seg import _pack_frames

    frames = np.random.default_rng(0).random(shape) > 0.5
    ours = _pack_frames(list(frames))
    ref = pack_bits(frames.astype(np.uint8).ravel(), pad=True)
    assert ours == ref and len(ours) % 2 == 0


def test_seg_with_odd_frame_size(tmp_path, phantom_data):
    """A source of 109 x 125 pixels (frames not a multiple of 8 bits): the SEG still reads back
    frame by frame as the NIfTI lung map."""
    hu, _ = phantom_data
    odd = np.ascontiguousarray(hu[:, 1:110, 2:127])
    src = tmp_path / "odd"
    write_series(odd, src)
    out = tmp_path / "out"
    assert main(["ct", "analyze", str(src), "-o", str(out), "--no-progress"]) == 0
    seg = hd.seg.segread(out / "seg.dcm")
    assert (seg.Rows, seg.Columns) == (109, 125)
    headers = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in src.iterdir()),
                     key=lambda h: float(h.ImagePositionPatient[2]))
    px = seg.get_pixels_by_source_instance([h.SOPInstanceUID for h in headers], segment_numbers=[1, 2])
    lungs = np.asarray(nib.load(out / "lungs.nii.gz").dataobj).transpose(2, 1, 0)
    assert np.array_equal(px[..., 0] > 0, lungs == 1) and np.array_equal(px[..., 1] > 0, lungs == 2)
    err = dciodvfy(out / "seg.dcm")
    if err is not None:
        assert not [line for line in err.splitlines() if line.startswith("Error")]
