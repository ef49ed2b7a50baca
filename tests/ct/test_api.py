"""The in-memory CT API: ``pulmo.ct.analyze`` writes nothing, returns typed results whose
``to_dict()`` is the CLI's results.json, and is safe to run in several threads at once."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import SimpleITK as sitk

from pulmo.cli import main
from pulmo.ct import AnalysisOptions, CTAnalysis, ImageFolderAnalysis, analyze, read, write_outputs
from pulmo.ct.io import ImageFolder
from pulmo.ct.volume import CTVolume
from pulmo.errors import InputError

CLASSICAL = AnalysisOptions(shipped_network=False, plugin_models=False)


def _files_under(path) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs}


def _listing(folder) -> list[str]:
    """The output files of a folder, without Pulmo's hidden bookkeeping (its manifest)."""
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def _comparable(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("created", "timings_s")}


def test_analyze_writes_nothing_and_returns_typed_results(tmp_path, phantom_dicom, phantom_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _files_under(tmp_path) | _files_under(phantom_dicom)
    a = analyze(phantom_dicom, CLASSICAL)
    assert _files_under(tmp_path) | _files_under(phantom_dicom) == before  # nothing written
    assert isinstance(a, CTAnalysis)
    hu, truth = phantom_data
    assert a.lungs.shape == a.lesions.shape == a.regions.shape == hu.shape
    assert a.lungs.dtype == np.uint8 and set(np.unique(a.lungs)) == {0, 1, 2}
    assert ((a.lungs == 1) & truth["right"]).sum() > 0.9 * truth["right"].sum()
    assert a.pneumonia_flag in (True, False) and a.percent_involved > 0
    assert a.severity["value"] is not None and a.timings["lungs"] > 0
    assert a.native_mask("lungs").shape == hu.shape  # the DICOM stack is already on the canonical grid
    assert a.outputs[-1] == "results.json" and "seg.dcm" in a.outputs


def test_to_dict_is_the_cli_results_json(tmp_path, phantom_dicom, analyzed):
    """The CLI (run by the `analyzed` fixture with PULMO_CT_MODELS=none) and the API agree."""
    cli = json.loads((analyzed / "results.json").read_text())
    a = analyze(phantom_dicom, CLASSICAL)
    assert _comparable(a.to_dict()) == _comparable(cli)
    assert sorted(a.to_dict()["outputs"]) == _listing(analyzed)


def test_write_outputs_never_changes_the_analysis(tmp_path, phantom_dicom):
    a = analyze(phantom_dicom, CLASSICAL)
    before = a.to_dict()
    lungs = a.lungs.copy()
    written = write_outputs(a, tmp_path / "out")
    assert a.to_dict() == before and np.array_equal(a.lungs, lungs)
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(before))  # exactly to_dict(), timings included
    assert sorted(written.files) == _listing(tmp_path / "out")
    assert set(written.timings) >= {"masks", "dicom", "report"}
    d = a.to_dict()
    d["warnings"].append({"code": "x"})  # a copy: editing it leaves the analysis alone
    assert a.to_dict() == before


def test_dicom_outputs_skipped_warning_comes_from_the_analysis(tmp_path, phantom_data):
    from ct_synth import write_series

    hu, _ = phantom_data
    write_series(hu, tmp_path / "s")
    for f in (tmp_path / "s").iterdir():  # drop FrameOfReferenceUID from every slice
        import pydicom

        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(f)
    a = analyze(tmp_path / "s", CLASSICAL)
    assert any(w["code"] == "dicom_outputs_skipped" for w in a.warnings)
    assert "seg.dcm" not in a.outputs
    write_outputs(a, tmp_path / "out")
    assert _listing(tmp_path / "out") == sorted(a.outputs)


def test_sources_volume_and_sitk_image(phantom_dicom, phantom_data):
    vol = read(phantom_dicom)
    assert isinstance(vol, CTVolume)
    from_volume = analyze(vol, CLASSICAL)
    hu, _ = phantom_data
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((3.0, 3.0, 2.5))
    from_image = analyze(img, CLASSICAL)
    assert from_image.input["kind"] == "volume"
    assert np.array_equal(from_volume.lungs, from_image.lungs)


def test_image_folder_is_one_path(tmp_path):
    from PIL import Image

    (tmp_path / "f").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "f" / "a.png")
    found = read(tmp_path / "f")
    assert isinstance(found, ImageFolder) and [p.name for p in found.files] == ["a.png"]
    with pytest.raises(InputError) as err:  # no learned model selected: refused, with a code for the faces
        analyze(found, CLASSICAL)
    assert err.value.code == "no_2d_model" and "--" not in str(err.value)


def test_image_folder_analysis_with_the_shipped_network(tmp_path):
    from PIL import Image

    from pulmo.ct.models import DEFAULT_MODEL_8BIT

    if not DEFAULT_MODEL_8BIT.is_file():
        pytest.skip("the shipped 8-bit model is not installed")
    src = tmp_path / "slices"
    src.mkdir()
    yy, xx = np.mgrid[:128, :128]
    img = np.full((128, 128), 150, np.uint8)
    for cx in (40, 88):
        img[((xx - cx) / 20.0) ** 2 + ((yy - 64) / 40.0) ** 2 <= 1] = 20
    Image.fromarray(img).save(src / "a.png")
    Image.fromarray(np.stack([img, img // 2, 255 - img], -1)).save(src / "colour.png")  # refused: colour
    a = analyze(src)
    assert isinstance(a, ImageFolderAnalysis)
    assert [r.name for r in a.images] == ["a", "colour"] and [r.ok for r in a.images] == [True, False]
    assert a.images[0].analysis.lungs.shape == (1, 128, 128) and "colour" in a.images[1].error
    write_outputs(a, tmp_path / "out")
    assert _listing(tmp_path / "out") == sorted(a.outputs)
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == json.loads(json.dumps(a.to_dict()))


def test_progress_callback_sees_every_stage(phantom_dicom):
    events = []
    analyze(phantom_dicom, CLASSICAL, progress=lambda stage, done: events.append((stage, done)))
    stages = ["load", "lungs", "lesions", "regions", "quantify"]
    assert events == [(s, d) for s in stages for d in (False, True)]


@pytest.mark.slow
def test_four_analyses_in_threads_equal_serial_runs(tmp_path, phantom_data):
    """A server runs analyses in threads: the shipped network (one cached session shared by all
    threads), the classical lung mask and quantification must give what serial runs give."""
    from ct_synth import phantom, write_series

    studies = []
    for seed in range(4):
        hu, _ = phantom(seed=seed, consolidation=seed % 2 == 0)
        write_series(hu, tmp_path / f"s{seed}")
        studies.append(tmp_path / f"s{seed}")
    opts = AnalysisOptions()  # the default: shipped network + classical lungs
    serial = [analyze(s, opts) for s in studies]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda s: analyze(s, opts), studies))
    for a, b in zip(serial, threaded):
        assert np.array_equal(a.lungs, b.lungs) and np.array_equal(a.lesions, b.lesions)
        assert np.array_equal(a.regions, b.regions)
        assert _comparable(a.to_dict()) == _comparable(b.to_dict())
    assert len({s.percent_involved for s in serial}) > 1  # the four studies really differ


def test_cli_adds_its_flag_hint_to_library_errors(tmp_path, capsys):
    """Library messages name no flag; the CLI adds its own hint by error code."""
    from PIL import Image

    nest = tmp_path / "nest"
    (nest / "day1").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(nest / "day1" / "0.png")
    assert main(["ct", "analyze", str(nest), "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "give the folder that holds them, or analyse each sub-folder as its own study (--batch)" \
        in capsys.readouterr().err
