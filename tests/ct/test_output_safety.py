"""The output folder never costs the user data: it may not be (or hold) the input, an existing
folder of other files is not replaced, and a folder that cannot be written gets a clear error.
Also the readers' handling of file names, EXIF rotation, huge images and links."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from pulmo.cli import main
from pulmo.ct.io import ignored_files, image_files, input_kind, load, output_names
from pulmo.ct.io.dicom import list_files
from pulmo.ct.io.grey_image import MAX_SIDE, read_gray_image
from pulmo.ct.models.runtime import MAX_SIDE as RUNTIME_MAX_SIDE
from pulmo.ct.outputs import check_output_location, staging_dir
from pulmo.errors import InputError


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_output_may_not_be_or_contain_the_input(tmp_path, phantom_dicom, capsys):
    before = _tree(phantom_dicom)
    for out in (phantom_dicom, phantom_dicom.parent):
        assert main(["ct", "segment", str(phantom_dicom), "-o", str(out), "--no-progress"]) == 2
        assert "is the input or contains it" in capsys.readouterr().err
        assert _tree(phantom_dicom) == before
    with pytest.raises(InputError, match="inside the batch input folder"):
        check_output_location(tmp_path, tmp_path / "out", batch=True)
    check_output_location(tmp_path / "a", tmp_path / "b")          # siblings are fine
    check_output_location(tmp_path, tmp_path / "out")              # a study's output inside its folder too
    link = tmp_path / "link"
    link.symlink_to(phantom_dicom)
    with pytest.raises(InputError, match="is the input"):           # compared resolved
        check_output_location(phantom_dicom, link)


def test_existing_folder_of_other_files_is_not_replaced(tmp_path):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not Pulmo results"):
        with staging_dir(other) as tmp:
            (tmp / "results.json").write_text("{}")
    assert _tree(other) == ["keep.txt"] and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    earlier = tmp_path / "earlier"               # a Pulmo output: replaced whole
    earlier.mkdir()
    (earlier / "results.json").write_text("{}")
    (earlier / "old.png").write_text("x")
    with staging_dir(earlier) as tmp:
        (tmp / "results.json").write_text('{"new": 1}')
    assert _tree(earlier) == ["results.json"] and "new" in (earlier / "results.json").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    with staging_dir(empty) as tmp:
        (tmp / "results.json").write_text("{}")
    assert _tree(empty) == ["results.json"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write the output there"):
        with staging_dir(blocker / "out"):
            pass


def test_output_names_are_unique_and_text():
    from pathlib import Path

    files = [Path(n) for n in ("a.jpg", "a.png", "a_png.png", "B.png", "b.PNG", "0.jpg")]
    names = output_names(files)
    assert names == ["a_jpg", "a_png", "a_png_2", "B_png", "b_PNG_2", "0"]  # B_png, b_png: one name ignoring case
    assert len({n.lower() for n in names}) == len(names)
    bad = Path(os.fsdecode(b"bad\xff.png"))
    (name,) = output_names([bad])
    assert name == "bad\ufffd" and name.encode("utf-8")


def test_reader_applies_exif_rotation_and_refuses_huge_images(tmp_path):
    upright = (np.add.outer(np.arange(60), np.arange(40) * 3) % 200).astype(np.uint8)   # 60 rows x 40 columns
    stored = Image.fromarray(np.rot90(upright, 1))      # stored sideways (40 x 60) ...
    exif = Image.Exif()
    exif[0x0112] = 6                                    # ... with "rotate 90 clockwise to view"
    stored.save(tmp_path / "r.jpg", exif=exif, quality=100)
    got = read_gray_image(tmp_path / "r.jpg")
    assert got.shape == upright.shape
    assert np.abs(got.astype(int) - upright).mean() < 8
    assert MAX_SIDE == RUNTIME_MAX_SIDE
    Image.new("L", (MAX_SIDE + 1, 8)).save(tmp_path / "wide.png")
    with pytest.raises(InputError, match="too large for a CT slice"):
        read_gray_image(tmp_path / "wide.png")


def test_image_folder_beside_other_files_and_links(tmp_path):
    d = tmp_path / "slices"
    d.mkdir()
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)).save(d / "a.png")
    (d / "README.txt").write_text("from the PACS export")
    (d / "gone.png").symlink_to(d / "nowhere.png")      # dangling
    (d / "loop.png").symlink_to(d / "loop.png")         # looping
    assert input_kind(d) == "image-dir"
    assert [p.name for p in image_files(d)] == ["a.png"] and ignored_files(d) == ["README.txt"]
    (d / "IM0001").write_bytes(b"\0" * 200)             # could be DICOM: not taken as a 2D folder
    assert input_kind(d) == "dicom-dir"
    with pytest.raises(InputError, match=r"no DICOM images found, but 1 PNG/JPG image\(s\) in the folder itself; "
                                         r"a folder of 2D slices is read when it holds only images"):
        load(d)
    assert [p.name for p in list_files(d)] == ["IM0001", "README.txt", "a.png"]   # the links are left out
    nest = tmp_path / "nest"
    (nest / "day1").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(nest / "day1" / "0.png")
    with pytest.raises(InputError, match="1 PNG/JPG image\\(s\\) in day1; give the folder that holds them, or analyse "
                                         "each sub-folder as its own study"):
        load(nest)
