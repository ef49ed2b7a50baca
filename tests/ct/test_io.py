"""Loading: DICOM folders/zips, NIfTI, sorting, HU, series choice and bad input."""

from __future__ import annotations

import zipfile

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from ct_synth import SHAPE, SPACING, write_series
from pydicom.uid import RLELossless

from pulmo.ct.io import LoadOptions, list_series, load
from pulmo.errors import InputError


def test_dicom_sorted_by_position_and_hu(phantom_data, phantom_dicom):
    hu, _ = phantom_data
    vol = load(phantom_dicom)
    assert vol.shape == hu.shape
    assert vol.spacing == pytest.approx(SPACING)
    # files have shuffled names; values must match slice by slice (stored rounding only)
    assert np.abs(vol.array - np.clip(np.round(hu), -1024, 3071)).max() <= 1.0
    assert vol.origin[2] == pytest.approx(-80.0)
    assert vol.warnings == []


def test_rescale_slope_intercept_applied(tmp_path, phantom_data):
    hu, _ = phantom_data
    write_series(hu[:10], tmp_path / "s", slope=2.0, intercept=-2048.0)
    vol = load(tmp_path / "s")
    assert np.abs(vol.array - np.clip(hu[:10], -1024, 3071)).max() <= 1.01


def test_rle_compressed_series(tmp_path, phantom_data):
    hu, _ = phantom_data
    write_series(hu[:12], tmp_path / "rle", compress=RLELossless)
    assert pydicom.dcmread(next((tmp_path / "rle").iterdir())).file_meta.TransferSyntaxUID == RLELossless
    vol = load(tmp_path / "rle")
    assert np.abs(vol.array - np.clip(np.round(hu[:12]), -1024, 3071)).max() <= 1.0


def test_missing_slice_detected_and_filled(tmp_path, phantom_data):
    hu, _ = phantom_data
    write_series(hu[:20], tmp_path / "gap", drop=(9,))
    vol = load(tmp_path / "gap")
    codes = {w["code"]: w for w in vol.warnings}
    assert codes["missing_slices"]["n_missing"] == 1
    assert vol.shape[0] == 20  # uniform grid restored
    assert vol.meta["resampled"]


def test_gantry_tilt_detected(tmp_path, phantom_data):
    hu, _ = phantom_data
    write_series(hu[:16], tmp_path / "tilt", tilt_mm_per_slice=0.5)
    vol = load(tmp_path / "tilt")
    tilt = [w for w in vol.warnings if w["code"] == "gantry_tilt"]
    assert tilt and tilt[0]["degrees"] == pytest.approx(np.degrees(np.arctan(0.5 / 2.5)), abs=0.2)


def test_series_choice_localizer_and_uid(tmp_path, phantom_data):
    hu, _ = phantom_data
    d = tmp_path / "multi"
    write_series(hu, d / "axial", series_uid="1.2.3.4.1")
    write_series(hu[:3], d / "scout", series_uid="1.2.3.4.2", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    write_series(hu[:30], d / "short", series_uid="1.2.3.4.3")
    rows = {r["series_uid"]: r for r in list_series(d)}
    assert rows["1.2.3.4.2"]["eligible"] is False and "localizer" in rows["1.2.3.4.2"]["reason"]
    assert load(d).meta["series_uid"] == "1.2.3.4.1"  # most slices wins
    assert load(d, LoadOptions(series_uid="1.2.3.4.3")).shape[0] == 30
    with pytest.raises(InputError, match="not found"):
        load(d, LoadOptions(series_uid="9.9.9"))


def test_mr_refused(tmp_path, phantom_data):
    hu, _ = phantom_data
    write_series(hu[:5], tmp_path / "mr", modality="MR")
    with pytest.raises(InputError, match="MR"):
        load(tmp_path / "mr")


def test_empty_and_non_dicom_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        load(tmp_path / "empty")
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM"):
        load(tmp_path / "txt")


def test_truncated_file(tmp_path, phantom_data):
    hu, _ = phantom_data
    paths = write_series(hu[:6], tmp_path / "trunc")
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 5000])
    with pytest.raises(InputError, match=paths[2].name):
        load(tmp_path / "trunc")


def test_no_rescale_tags(tmp_path, phantom_data):
    hu, _ = phantom_data
    write_series(hu[:6], tmp_path / "raw", rescale_tags=False)  # stored = HU + 1024, no tags
    with pytest.raises(InputError, match="rescale"):
        load(tmp_path / "raw")
    vol = load(tmp_path / "raw", LoadOptions(rescale_intercept=-1024.0))
    assert any(w["code"] == "rescale_assumed" for w in vol.warnings)
    assert np.abs(vol.array - np.clip(np.round(hu[:6]), -1024, 3071)).max() <= 1.0


def test_file_size_limit(phantom_dicom):
    with pytest.raises(InputError, match="over the limit"):
        load(phantom_dicom, LoadOptions(max_file_bytes=1000))


def test_zip_ok_and_traversal_refused(tmp_path, phantom_dicom):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        for p in sorted(phantom_dicom.iterdir()):
            zf.write(p, f"study/{p.name}")
    assert load(good).shape[0] == SHAPE[0]
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../../evil.dcm", b"x")
    with pytest.raises(InputError, match="traversal"):
        load(bad)
    assert not (tmp_path.parent / "evil.dcm").exists()


def test_nifti_ras_is_canonicalised(tmp_path, phantom_data):
    hu, _ = phantom_data
    img = sitk.GetImageFromArray(hu[:, :, ::-1].copy())  # x index runs toward patient right
    img.SetSpacing(SPACING[::-1])
    img.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(img, str(tmp_path / "v.nii.gz"))
    vol = load(tmp_path / "v.nii.gz")
    assert vol.native_exact
    assert np.allclose(vol.array, np.clip(hu, -1024, 3071), atol=0.01)  # flipped back: canonical LPS


def test_mr_like_nifti_refused(tmp_path):
    arr = np.random.default_rng(0).uniform(0, 800, (20, 32, 32)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "mr.nii.gz"))
    with pytest.raises(InputError, match="Hounsfield"):
        load(tmp_path / "mr.nii.gz")


# ----------------------------------------------------------------------------- budgets and checks (issue 19)

def _by_position(paths):
    return sorted(paths, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))


def test_far_slice_splits_the_series_instead_of_interpolating(tmp_path, phantom_data):
    hu, _ = phantom_data
    paths = _by_position(write_series(hu[:30], tmp_path / "far"))
    ds = pydicom.dcmread(paths[-1])
    ds.ImagePositionPatient = [-190.0, -170.0, 12000.0]
    ds.save_as(paths[-1], enforce_file_format=True)
    vol = load(tmp_path / "far")
    split = [w for w in vol.warnings if w["code"] == "series_split"]
    assert vol.shape[0] == 29 and split and split[0]["n_left_out"] == 1 and paths[-1].name in split[0]["message"]


def test_small_gap_filled_large_gap_split(tmp_path, phantom_data):
    hu, _ = phantom_data
    write_series(hu[:40], tmp_path / "g3", drop=(20, 21, 22))  # 3 missing slices of 2.5 mm: filled
    vol = load(tmp_path / "g3")
    assert vol.shape[0] == 40 and {w["code"] for w in vol.warnings} == {"missing_slices"}
    write_series(hu[:40], tmp_path / "g5", drop=(10, 11, 12, 13, 14))  # 12.5 mm missing: split
    vol = load(tmp_path / "g5")
    assert vol.shape[0] == 25 and "series_split" in {w["code"] for w in vol.warnings}


def test_bad_geometry_names_the_slice(tmp_path, phantom_data):
    hu, _ = phantom_data
    paths = _by_position(write_series(hu[:12], tmp_path / "ps"))
    ds = pydicom.dcmread(paths[4])
    ds.PixelSpacing = [0, 0]
    ds.save_as(paths[4], enforce_file_format=True)
    with pytest.raises(InputError, match=f"PixelSpacing of zero or below: {paths[4].name}") as exc:
        load(tmp_path / "ps")
    assert exc.value.code == "bad_geometry"


def test_budgets_refuse_before_decoding(tmp_path, phantom_dicom):
    with pytest.raises(InputError, match="over the limit of 1 million voxels") as exc:
        load(phantom_dicom, LoadOptions(max_voxels=1_000_000))
    assert exc.value.code == "image_too_large"
    with pytest.raises(InputError, match="over the limit of 30 slices"):
        load(phantom_dicom, LoadOptions(max_slices=30))
    with pytest.raises(InputError, match="over the limit of 100 mm"):
        load(phantom_dicom, LoadOptions(max_extent_mm=100))


def test_nifti_non_finite_voxels(tmp_path):
    a = np.full((20, 30, 40), -1000, np.float32)
    a[5:15, 5:25, 5:35] = 40
    a[1, 2, 3], a[4, 5, 6] = np.nan, np.inf
    img = sitk.GetImageFromArray(a)
    img.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(img, str(tmp_path / "few.nii.gz"))
    vol = load(tmp_path / "few.nii.gz")  # ITK's reader would make them 0 (water): they are air, and said
    assert [w["n_voxels"] for w in vol.warnings if w["code"] == "non_finite_voxels"] == [2]
    assert (vol.array == -1024).sum() == 2 and (vol.array == 0).sum() == 0
    a[:, :10] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(a), str(tmp_path / "many.nii.gz"))
    with pytest.raises(InputError, match="over the limit of 1 %") as exc:
        load(tmp_path / "many.nii.gz")
    assert exc.value.code == "non_finite_voxels"


def test_zip_bomb_and_special_files(tmp_path):
    import os

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", bytes(64 << 20))
    with pytest.raises(InputError, match="zip bomb") as exc:
        load(bomb)
    assert exc.value.code == "zip_bomb"
    os.mkfifo(tmp_path / "pipe.nii.gz")
    with pytest.raises(InputError, match="named pipe") as exc:
        load(tmp_path / "pipe.nii.gz")
    assert exc.value.code == "special_file"


def test_nifti_gz_beside_a_nii_of_the_same_name_is_refused(tmp_path):
    """ITK's NIfTI library, given a.nii.gz, reads a.nii when it exists: never analyse the wrong file."""
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 4, 5), -1000, np.int16)), str(tmp_path / "a.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 4, 5), 99, np.int16)), str(tmp_path / "a.nii"))
    with pytest.raises(InputError, match="a.nii lies beside it") as exc:
        load(tmp_path / "a.nii.gz")
    assert exc.value.code == "ambiguous_input"
