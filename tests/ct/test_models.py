"""ONNX plug-in interface: a tiny lobe model built with onnx.helper, and the 2D image path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pulmo.cli import main  # noqa: E402
from pulmo.ct.segment.models import OnnxSegmentationModel  # noqa: E402
from pulmo.errors import ModelError  # noqa: E402


def _slice(h, w, level=90):
    """A non-uniform 8-bit test image (blank images are refused as not a CT slice)."""
    return Image.fromarray((level + np.add.outer(np.arange(h) % 20, np.arange(w) % 20)).astype(np.uint8))


def _constant_map_model(path, task, maps: np.ndarray, labels: dict, intensity="hu"):
    """A model whose output is ``0 * input + maps`` (class scores fixed per pixel)."""
    c, h, w = maps.shape
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, h, w])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, h, w])
    zero = numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), "zero")
    const = numpy_helper.from_array(maps[None].astype(np.float32), "maps")
    nodes = [helper.make_node("Mul", ["x", "zero"], ["x0"]), helper.make_node("Add", ["x0", "maps"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[zero, const])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for k, v in {"pulmo.task": task, "pulmo.labels": json.dumps(labels), "pulmo.input": "axial2d",
                 "pulmo.input_size": f"{h},{w}", "pulmo.intensity": intensity, "pulmo.version": "test-1"}.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.save(model, path)
    return path


def _lobe_maps(h=32, w=32):
    """Right half of the image (patient right, low x): upper rows lobe 1, lower rows lobe 3; left: 4 / 5."""
    maps = np.zeros((6, h, w), np.float32)
    yy, xx = np.mgrid[:h, :w]
    right, top = xx < w // 2, yy < h // 2
    maps[1][right & top] = 5
    maps[3][right & ~top] = 5
    maps[4][~right & top] = 5
    maps[5][~right & ~top] = 5
    return maps


def test_lobe_model_used_by_pipeline(tmp_path, phantom_dicom):
    model = _constant_map_model(tmp_path / "lobes.onnx", "lobes", _lobe_maps(),
                                {"0": "background", "1": "RUL", "2": "RML", "3": "RLL", "4": "LUL", "5": "LLL"})
    out = tmp_path / "out"
    assert main(["ct", "analyze", str(phantom_dicom), "-o", str(out), "--lobe-model", str(model),
                 "--no-dicom", "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["regions"]["kind"] == "lobes"
    assert res["quantification"]["severity"]["kind"] == "lobar" and res["quantification"]["severity"]["max"] == 25
    vols = {r["name"]: r["volume_ml"] for r in res["quantification"]["regions"]}
    assert vols["right middle lobe"] == 0  # the test model never predicts it
    assert vols["right upper lobe"] > 0 and vols["right lower lobe"] > 0 and vols["left lower lobe"] > 0
    total = res["quantification"]["lungs"]["total"]["volume_ml"]
    assert sum(vols.values()) == pytest.approx(total, abs=0.1)  # every lung voxel gets a lobe


def test_model_metadata_checked(tmp_path):
    path = _constant_map_model(tmp_path / "m.onnx", "lobes", _lobe_maps(), {"0": "bg"})
    with pytest.raises(ModelError, match="lungs model is needed"):
        OnnxSegmentationModel(path, expected_task="lungs")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError):
        OnnxSegmentationModel(tmp_path / "junk.onnx")


def test_png_without_model_refused(tmp_path, capsys):
    _slice(64, 64, 0).save(tmp_path / "slice.png")
    rc = main(["ct", "analyze", str(tmp_path / "slice.png"), "-o", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "learned" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_png_with_models(tmp_path):
    h = w = 32
    lung = np.zeros((3, h, w), np.float32)
    lung[0] = 1
    lung[1][8:24, 2:14] = 5
    lung[2][8:24, 18:30] = 5
    les = np.zeros((3, h, w), np.float32)
    les[0] = 1
    les[1][10:14, 4:8] = 5
    lm = _constant_map_model(tmp_path / "lungs.onnx", "lungs", lung, {"0": "bg", "1": "right", "2": "left"}, "uint8")
    lsm = _constant_map_model(tmp_path / "lesions.onnx", "lesions", les, {"0": "bg", "1": "GGO", "2": "cons"}, "uint8")
    _slice(100, 120).save(tmp_path / "img1.png")
    out = tmp_path / "o"
    assert main(["ct", "analyze", str(tmp_path / "img1.png"), "-o", str(out), "--lung-model", str(lm),
                 "--lesion-model", str(lsm), "--no-progress"]) == 0
    lungs = np.asarray(Image.open(out / "img1_lungs.png"))
    lesions = np.asarray(Image.open(out / "img1_lesions.png"))
    assert lungs.shape == (100, 120) and set(np.unique(lungs)) == {0, 1, 2}
    assert set(np.unique(lesions)) == {0, 1} and (lungs[lesions == 1] == 1).all()
    res = json.loads((out / "results.json").read_text())
    assert 0 < res["quantification"]["lungs"]["total"]["percent_involved"] < 100


def _models_2d(tmp_path, h=32, w=32):
    lung = np.zeros((3, h, w), np.float32)
    lung[0] = 1
    lung[1][8:24, 2:14] = 5
    lung[2][8:24, 18:30] = 5
    les = np.zeros((3, h, w), np.float32)
    les[0] = 1
    les[1][10:14, 4:8] = 5
    lm = _constant_map_model(tmp_path / "lungs.onnx", "lungs", lung, {"0": "bg", "1": "right", "2": "left"}, "uint8")
    lsm = _constant_map_model(tmp_path / "lesions.onnx", "lesions", les, {"0": "bg", "1": "GGO", "2": "cons"}, "uint8")
    return lm, lsm


def test_image_folder_each_image_independently(tmp_path):
    (tmp_path / "m").mkdir()
    lm, lsm = _models_2d(tmp_path / "m")
    src = tmp_path / "slices"
    src.mkdir()
    _slice(100, 120).save(src / "a.png")
    _slice(64, 48, 30).convert("RGB").save(src / "b.jpg")
    out = tmp_path / "o"
    assert main(["ct", "analyze", str(src), "-o", str(out), "--lung-model", str(lm), "--lesion-model", str(lsm),
                 "--no-progress"]) == 0
    a, b = np.asarray(Image.open(out / "a_lungs.png")), np.asarray(Image.open(out / "b_lungs.png"))
    assert a.shape == (100, 120) and b.shape == (64, 48)  # each image at its own size
    assert set(np.unique(a)) == {0, 1, 2} and (out / "a_lesions.png").exists() and (out / "b_lesions.png").exists()
    res = json.loads((out / "results.json").read_text())
    assert res["input"]["kind"] == "image-dir" and [i["name"] for i in res["images"]] == ["a", "b"]
    assert all(0 < i["quantification"]["lungs"]["total"]["percent_involved"] < 100 for i in res["images"])


def test_image_folder_says_which_subfolders_it_did_not_search(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    lm, lsm = _models_2d(tmp_path / "m")
    src = tmp_path / "slices"
    (src / "day2").mkdir(parents=True)
    (src / ".hidden").mkdir()
    _slice(80, 80).save(src / "a.png")
    _slice(80, 80).save(src / "day2" / "b.png")
    (src / "Thumbs.db").write_bytes(b"\0" * 64)         # beside the images: left out, said so
    out = tmp_path / "o"
    args = ["ct", "segment", str(src), "-o", str(out), "--lung-model", str(lm), "--lesion-model", str(lsm), "--no-progress"]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert [i["name"] for i in res["images"]] == ["a"] and not (out / "b_lungs.png").exists()
    ignored, w = res["warnings"]
    assert ignored["code"] == "files_ignored" and ignored["files"] == ["Thumbs.db"]
    assert w["code"] == "subfolders_not_searched" and w["subfolders"] == ["day2"]
    assert "warning [subfolders_not_searched]: 1 sub-folder(s) of slices not searched (day2)" in capsys.readouterr().out
    (src / "day2" / "b.png").unlink()
    (src / "day2").rmdir()
    (src / "Thumbs.db").unlink()
    assert main(args[:3] + ["-o", str(tmp_path / "o2")] + args[5:]) == 0
    assert json.loads((tmp_path / "o2" / "results.json").read_text())["warnings"] == []


def test_image_folder_without_models_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PULMO_CT_MODELS", "none")
    src = tmp_path / "slices"
    src.mkdir()
    _slice(64, 64, 0).save(src / "a.png")
    rc = main(["ct", "analyze", str(src), "-o", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "learned lung and lesion models" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_default_model_discovery(tmp_path, monkeypatch):
    from pulmo.ct.segment import models as m

    env_dir, pkg_dir = tmp_path / "env", tmp_path / "pkg"
    env_dir.mkdir()
    pkg_dir.mkdir()
    monkeypatch.setattr(m, "PACKAGED_DIR", pkg_dir)
    monkeypatch.delenv("PULMO_CT_MODELS", raising=False)
    assert m.default_model_paths() == {}  # packaged folder without *.onnx: not searched
    _constant_map_model(pkg_dir / "lungs-v2.onnx", "lungs", np.ones((3, 8, 8), np.float32), {"0": "bg"})
    _constant_map_model(pkg_dir / "lobes.onnx", "lobes", _lobe_maps(8, 8), {"0": "bg"})
    assert m.default_model_paths() == {"lungs": pkg_dir / "lungs-v2.onnx", "lobes": pkg_dir / "lobes.onnx"}
    _constant_map_model(env_dir / "lungs.onnx", "lungs", np.ones((3, 8, 8), np.float32), {"0": "bg"})
    assert m.default_model_paths(env_dir)["lungs"] == env_dir / "lungs.onnx"  # the given folder first
    assert m.default_model_paths(env_dir)["lobes"] == pkg_dir / "lobes.onnx"  # then the packaged folder
    assert m.find_model("lobes").task == "lobes"
    assert m.find_model("lungs", search=False) is None
    # the command line maps $PULMO_CT_MODELS onto the options: a folder, or "none" (no search, no network)
    from pulmo.cli import build_parser
    from pulmo.cli.ct import analysis_options

    args = build_parser().parse_args(["ct", "analyze", "in", "-o", "out"])
    opts = analysis_options(args, {"PULMO_CT_MODELS": str(env_dir)})
    assert m.plugin_model("lungs", opts).path == env_dir / "lungs.onnx"
    assert m.plugin_model("lobes", opts).path == pkg_dir / "lobes.onnx"
    opts = analysis_options(args, {"PULMO_CT_MODELS": "none"})
    assert m.plugin_model("lungs", opts) is None and not opts.shipped_network
    assert m.missing_plugin_models(opts, ("lungs", "lobes")) == ["lungs", "lobes"]


def test_batch_with_image_folder_study(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    lm, lsm = _models_2d(tmp_path / "m")
    monkeypatch.setenv("PULMO_CT_MODELS", str(tmp_path / "m"))  # found by default discovery
    root = tmp_path / "studies" / "slices"
    root.mkdir(parents=True)
    _slice(40, 50).save(root / "x.png")
    out = tmp_path / "o"
    assert main(["ct", "segment", str(tmp_path / "studies"), "-o", str(out), "--batch", "--no-progress"]) == 0
    assert (out / "slices" / "x_lungs.png").exists() and (out / "slices" / "results.json").exists()


def test_image_folder_bad_images_listed_the_others_written(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    lm, lsm = _models_2d(tmp_path / "m")
    src = tmp_path / "slices"
    src.mkdir()
    _slice(100, 120).save(src / "a.png")
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(src / "colour.png")
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 15).astype(np.uint16)).save(src / "deep.png")
    Image.fromarray(np.full((50, 50), 120, np.uint8)).save(src / "flat.png")
    (src / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "o"
    rc = main(["ct", "segment", str(src), "-o", str(out), "--lung-model", str(lm), "--lesion-model", str(lsm),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "4 of 5 images could not be segmented" in err
    assert "colour.png: a colour image" in err and "deep.png: I;16 (16-bit) image" in err
    assert "flat.png: a blank (uniform) image" in err and "cut.jpg: not a readable image" in err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a_lesions.png", "a_lungs.png", "results.json", "summary.csv"]
    import csv

    rows = {r["name"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows["a"]["status"] == "ok" and int(rows["a"]["lung_pixels"]) > 0
    assert {n: r["status"] for n, r in rows.items() if n != "a"} == dict.fromkeys(["colour", "cut", "deep", "flat"], "error")
    res = json.loads((out / "results.json").read_text())
    assert res["failed"] == 4 and [i["name"] for i in res["images"]] == ["a", "colour", "cut", "deep", "flat"]
    assert res["images"][0]["status"] == "ok" and "quantification" not in res["images"][0]


def test_image_folder_with_no_good_image_writes_nothing(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    lm, lsm = _models_2d(tmp_path / "m")
    src = tmp_path / "slices"
    src.mkdir()
    Image.fromarray(np.full((50, 50), 120, np.uint8)).save(src / "flat.png")
    (src / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rc = main(["ct", "segment", str(src), "-o", str(tmp_path / "o"), "--lung-model", str(lm), "--lesion-model",
               str(lsm), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "none of the 2 images could be segmented" in err and "cut.png" in err and "flat.png" in err
    assert not (tmp_path / "o").exists()


def test_batch_image_folder_study_with_a_bad_image(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    _models_2d(tmp_path / "m")
    monkeypatch.setenv("PULMO_CT_MODELS", str(tmp_path / "m"))
    root = tmp_path / "studies" / "slices"
    root.mkdir(parents=True)
    _slice(40, 50).save(root / "x.png")
    Image.fromarray(np.full((40, 50), 7, np.uint8)).save(root / "y.png")
    out = tmp_path / "o"
    assert main(["ct", "segment", str(tmp_path / "studies"), "-o", str(out), "--batch", "--no-progress"]) == 1
    assert (out / "slices" / "x_lungs.png").exists() and not (out / "slices" / "y_lungs.png").exists()
    import csv

    row = next(csv.DictReader(open(out / "summary.csv")))
    assert row["status"] == "failed" and "1 of its images could not be segmented" in row["error"]
