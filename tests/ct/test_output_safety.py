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
    earlier = tmp_path / "earlier"               # a Pulmo output written before the manifest: replaced whole
    earlier.mkdir()
    (earlier / "results.json").write_text("{}")
    (earlier / "old_lungs.png").write_text("x")  # (was old.png: no name Pulmo writes, so no longer replaced)
    with staging_dir(earlier) as tmp:
        (tmp / "results.json").write_text('{"new": 1}')
    assert _tree(earlier) == [".pulmo-manifest.json", "results.json"] and "new" in (earlier / "results.json").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    with staging_dir(empty) as tmp:
        (tmp / "results.json").write_text("{}")
    assert _tree(empty) == [".pulmo-manifest.json", "results.json"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write the output folder there: .*file is a file, not a folder"):
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


# --- issue 19: outputs never cost a user's file ------------------------------------------------

def _folder(root, **files):
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_rerun_replaces_only_pulmo_s_own_unchanged_files(tmp_path):
    from pulmo.io.outputs import MANIFEST

    out = tmp_path / "out"
    for _ in range(2):                                   # a rerun replaces Pulmo's own folder
        with staging_dir(out) as tmp:
            (tmp / "results.json").write_text("{}")
            (tmp / "lungs.nii.gz").write_bytes(b"\x1f\x8b mask")
    assert _tree(out) == [MANIFEST, "lungs.nii.gz", "results.json"]
    (out / "notes.txt").write_text("my reading of the case")
    (out / "sub").mkdir()
    with pytest.raises(InputError, match=r"holds files Pulmo did not write: notes.txt, sub/\. Move them out"):
        with staging_dir(out) as tmp:
            (tmp / "results.json").write_text("{}")
    assert (out / "notes.txt").read_text() == "my reading of the case"
    (out / "notes.txt").unlink()
    (out / "sub").rmdir()
    (out / "lungs.nii.gz").write_bytes(b"\x1f\x8b corrected by hand")  # a mask the user corrected
    with pytest.raises(InputError, match="files changed since Pulmo wrote them: lungs.nii.gz"):
        check_output_location(tmp_path / "elsewhere", out)
    assert (out / "lungs.nii.gz").read_bytes().endswith(b"by hand")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no staging leftovers


def test_earlier_folders_without_a_manifest_and_damaged_ones(tmp_path):
    legacy = _folder(tmp_path / "legacy", **{"results.json": "{}", "lungs.nii.gz": "x", "report.html": "x",
                                             "sc_axial.dcm": "x", "a_lesions.png": "x", "summary.csv": "x"})
    check_output_location(tmp_path / "in", legacy)      # every name one Pulmo writes: replaceable
    (legacy / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="files Pulmo did not write: notes.txt"):
        check_output_location(tmp_path / "in", legacy)
    no_results = _folder(tmp_path / "noresults", **{"lungs.nii.gz": "x"})
    with pytest.raises(InputError, match=r"not Pulmo results \(no results.json\)"):
        check_output_location(tmp_path / "in", no_results)
    damaged = _folder(tmp_path / "damaged", **{"results.json": "{}", ".pulmo-manifest.json": "{not json"})
    with pytest.raises(InputError, match="is damaged or not Pulmo's"):
        check_output_location(tmp_path / "in", damaged)


def test_output_folder_that_is_a_link_is_refused(tmp_path):
    real = _folder(tmp_path / "real", **{"results.json": "{}"})
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(InputError, match="is a symbolic link"):
        with staging_dir(link):
            pass
    assert _tree(real) == ["results.json"] and link.is_symlink()


def test_output_files_replace_only_pulmo_s_own(tmp_path):
    from pulmo.io.outputs import MANIFEST, is_pulmo_file, read_manifest, write_text

    out = tmp_path / "out.csv"
    write_text(out, "a\n")
    write_text(out, "b\n")                               # a rerun: Pulmo's own unchanged file
    assert out.read_text() == "b\n" and is_pulmo_file(out)
    status, files = read_manifest(tmp_path)
    assert status == "ok" and files["out.csv"]["size"] == 2 and len(files["out.csv"]["sha256"]) == 64
    out.write_text("b\nedited in a spreadsheet\n")
    with pytest.raises(InputError, match="was changed since Pulmo wrote it") as err:
        write_text(out, "c\n")
    assert err.value.code == "output_exists" and "edited" in out.read_text()
    write_text(out, "c\n", force=True)                   # the user insists
    assert out.read_text() == "c\n" and is_pulmo_file(out)
    mine = tmp_path / "mine.csv"
    mine.write_text("mine\n")
    with pytest.raises(InputError, match="was not written by Pulmo"):
        write_text(mine, "x")
    with pytest.raises(InputError, match="is an input of this command"):
        write_text(mine, "x", force=True, inputs=[mine])
    gt = tmp_path / "gt"
    _folder(gt, **{"notes.csv": "mine"})
    with pytest.raises(InputError, match="lies in the input folder") as err:
        write_text(gt / "notes.csv", "x", force=True, input_dirs=[gt])
    assert err.value.code == "output_in_input_folder" and (gt / "notes.csv").read_text() == "mine"
    link = tmp_path / "link.csv"
    link.symlink_to(mine)
    with pytest.raises(InputError, match=r"is a symbolic link \(to .*mine.csv\)"):
        write_text(link, "x", force=True)
    assert mine.read_text() == "mine\n"
    with pytest.raises(InputError, match="mine.csv is a file, not a folder"):
        write_text(mine / "out.csv", "x")
    with pytest.raises(InputError, match="is a folder"):
        write_text(gt, "x", force=True)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match="is a named pipe, not a regular file"):
        write_text(tmp_path / "fifo", "x", force=True)
    for bad, msg in ((tmp_path / "a\nb.csv", "control character"), (tmp_path / ("x" * 300), "too long"),
                     (tmp_path / MANIFEST, "Pulmo's record of its outputs")):
        with pytest.raises(InputError, match=msg):
            write_text(bad, "x", force=True)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_manifest_that_is_not_pulmo_s_is_never_rewritten(tmp_path):
    from pulmo.io.outputs import MANIFEST, write_text

    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("keep")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / MANIFEST).symlink_to(elsewhere)
    write_text(tmp_path / "d" / "out.csv", "x")          # written; the linked "manifest" left alone
    assert elsewhere.read_text() == "keep" and (tmp_path / "d" / MANIFEST).is_symlink()
    with pytest.raises(InputError, match="was not written by Pulmo"):   # so not recognised as Pulmo's
        write_text(tmp_path / "d" / "out.csv", "y")


def test_two_outputs_with_one_name(tmp_path):
    from pulmo.io.outputs import check_distinct

    check_distinct({"a": tmp_path / "x.json", "b": tmp_path / "x.csv", "c": None, "d": "-", "e": "-"})
    with pytest.raises(InputError, match="a and b name the same file"):
        check_distinct({"a": tmp_path / "x.json", "b": tmp_path / "sub" / ".." / "x.json"})


def test_batch_output_names_are_unique(tmp_path):
    from pathlib import Path

    from pulmo.ct.batch import study_names

    (tmp_path / "summary.csv").mkdir()                   # a study folder named like the summary
    items = [Path(n) for n in ("p1.nii.gz", "p1.zip", "P1.nrrd", "q.zip")] + [tmp_path / "summary.csv",
                                                                            Path("a\nb.zip")]
    names = study_names(items)
    assert names == ["p1_nii_gz", "p1_zip", "P1_nrrd", "q", "summary_csv", "a_b"]
    assert len({n.lower() for n in names}) == len(names)


@pytest.mark.parametrize("cell, written", [
    ("=HYPERLINK(\"http://x\",\"click\")", "'=HYPERLINK(\"http://x\",\"click\")"), ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("-3.5", "-3.5"), ("+1e-3", "+1e-3"), ("-inf", "-inf"), ("-", "-"), ("plain", "plain"), ("a=b", "a=b"),
    (-3.5, -3.5), (None, None)])
def test_cells_a_spreadsheet_would_run_are_escaped(cell, written):
    from pulmo.io.outputs import csv_text, spreadsheet_safe

    assert spreadsheet_safe(cell) == written
    text = csv_text(["=h", "n"], [{"=h": cell, "n": 1}])
    assert text.splitlines()[0] == "'=h,n"


def test_frame_csv_escapes_text_and_keeps_numbers():
    import pandas as pd

    from pulmo.io.outputs import frame_csv

    df = pd.DataFrame({"name": ["=cmd()", "-3.5", "ok"], "x": [-3.5, 1.0, 2.0], "@c": ["@x", None, ""]})
    lines = frame_csv(df).splitlines()
    assert lines[0] == "name,x,'@c"
    assert lines[1:] == ["'=cmd(),-3.5,'@x", "-3.5,1.0,", "ok,2.0,"]
