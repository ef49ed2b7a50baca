"""The shipped lung + lesion network (pulmo/ct/models/seg.onnx) as the pipeline's default,
its fallback to density analysis, the 2D image-folder path and `pulmo ct evaluate`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from pulmo.cli import main

try:
    from pulmo.ct.models import DEFAULT_MODEL, load_segmenter
except ImportError:  # pragma: no cover - the model package is missing
    DEFAULT_MODEL, load_segmenter = None, None

needs_model = pytest.mark.skipif(DEFAULT_MODEL is None or not DEFAULT_MODEL.is_file(),
                                 reason="pulmo/ct/models/seg.onnx is not present")


def _shipped_version(kind: str = "hu") -> str:
    try:
        return load_segmenter(kind=kind).version
    except Exception as exc:  # noqa: BLE001 - a broken shipped model: not what these tests check
        pytest.skip(f"the shipped model does not load here: {exc}")


def _slice_image(h: int, w: int, seed: int) -> np.ndarray:
    """A rough 8-bit axial chest slice: body ellipse, two dark lungs, a brighter patch in one."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] / np.array([h, w])[:, None, None]
    img = np.zeros((h, w), np.float32)
    img[((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.46) ** 2 < 1] = 150
    for cx in (0.3, 0.7):
        img[((yy - 0.48) / 0.3) ** 2 + ((xx - cx) / 0.15) ** 2 < 1] = 20
    img[((yy - 0.55) / 0.06) ** 2 + ((xx - 0.3) / 0.05) ** 2 < 1] = 110
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@needs_model
def test_default_uses_shipped_model(phantom_dicom):
    from pulmo.ct import analyze

    version = _shipped_version()
    res = analyze(phantom_dicom).to_dict()  # the default options
    m = res["method"]
    assert m["source"] == {"lungs": "classical+learned", "lesions": "learned"}  # learned lung recovery is on
    assert m["learned_model"]["file"] == "seg.onnx" and m["learned_model"]["version"] == version
    assert version in m["lesions"] and "learned_models_unavailable" not in {w["code"] for w in res["warnings"]}
    assert res["quantification"]["lungs"]["total"]["volume_ml"] > 0


def test_corrupt_model_falls_back_with_warning(tmp_path, phantom_dicom, monkeypatch, capsys):
    monkeypatch.delenv("PULMO_CT_MODELS", raising=False)
    bad = tmp_path / "seg.onnx"
    bad.write_bytes(b"this is not an ONNX model")
    out = tmp_path / "out"
    assert main(["ct", "segment", str(phantom_dicom), "-o", str(out), "--seg-model", str(bad), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["method"]["source"] == {"lungs": "classical", "lesions": "density"}
    assert res["method"]["learned_model"] is None
    (w,) = [w for w in res["warnings"] if w["code"] == "learned_models_unavailable"]
    assert w["message"].startswith("learned models could not be loaded: ") and "density analysis used" in w["message"]
    assert "learned models could not be loaded" in capsys.readouterr().out


def test_pinned_classical_has_no_learned_model(analyzed):
    res = json.loads((analyzed / "results.json").read_text())  # PULMO_CT_MODELS=none (conftest)
    assert res["method"]["source"] == {"lungs": "classical", "lesions": "density"}
    assert not [w for w in res["warnings"] if w["code"] == "learned_models_unavailable"]


@needs_model
def test_segment_image_folder_default(tmp_path, monkeypatch):
    monkeypatch.delenv("PULMO_CT_MODELS", raising=False)
    version = _shipped_version("8bit")
    assert version != _shipped_version("hu")  # 8-bit slices get their own network (seg_8bit.onnx)
    src = tmp_path / "slices"
    src.mkdir()
    sizes = {"0": (96, 128), "1": (64, 64), "scan_b": (150, 120)}
    Image.fromarray(_slice_image(*sizes["0"], 0)).save(src / "0.jpg", quality=95)
    Image.fromarray(_slice_image(*sizes["1"], 1)).save(src / "1.png")
    Image.fromarray(_slice_image(*sizes["scan_b"], 2)).convert("RGB").save(src / "scan_b.png")
    out = tmp_path / "out"
    assert main(["ct", "segment", str(src), "-o", str(out)]) == 0  # no extra flags
    for stem, (h, w) in sizes.items():
        for kind in ("lungs", "lesions"):
            arr = np.asarray(Image.open(out / f"{stem}_{kind}.png"))
            assert arr.shape == (h, w) and arr.dtype == np.uint8 and set(np.unique(arr)) <= {0, 1, 2}
    res = json.loads((out / "results.json").read_text())
    assert res["method"]["source"] == {"lungs": "learned", "lesions": "learned"}
    assert res["method"]["learned_model"]["version"] == version
    assert res["method"]["learned_model"]["file"] == "seg_8bit.onnx"
    assert [i["name"] for i in res["images"]] == ["0", "1", "scan_b"]
    rows = list(csv.DictReader(open(out / "summary.csv", encoding="utf-8")))
    assert [r["name"] for r in rows] == ["0", "1", "scan_b"]
    for r, img in zip(rows, res["images"]):
        assert 0.0 <= float(r["percent_involved"]) <= 100.0
        assert img["summary"]["percent_involved"] == float(r["percent_involved"])


def test_image_folder_corrupt_model_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PULMO_CT_MODELS", raising=False)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    src = tmp_path / "slices"
    src.mkdir()
    Image.fromarray(_slice_image(64, 64, 0)).save(src / "a.png")
    rc = main(["ct", "segment", str(src), "-o", str(tmp_path / "o"), "--seg-model", str(bad), "--no-progress"])
    assert rc == 2 and "could not be loaded" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_image_folder_missing_8bit_model_refused(tmp_path, monkeypatch, capsys):
    """Without seg_8bit.onnx (a broken install) 8-bit slices are refused, naming the file; nothing written."""
    from pulmo.ct.models import runtime

    monkeypatch.delenv("PULMO_CT_MODELS", raising=False)
    monkeypatch.setattr(runtime, "DEFAULT_MODEL_8BIT", tmp_path / "gone" / "seg_8bit.onnx")
    src = tmp_path / "slices"
    src.mkdir()
    Image.fromarray(_slice_image(64, 64, 0)).save(src / "a.png")
    rc = main(["ct", "segment", str(src), "-o", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "could not be loaded" in err and "seg_8bit.onnx" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_evaluate_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["ct", "evaluate", "--help"])
    assert exc.value.code == 0
    assert "PRED_DIR" in capsys.readouterr().out


def test_add_learned_lesional_lung_keeps_airway_and_sides():
    from pulmo.ct.segment.lungs import add_learned_lesional_lung

    labels = np.zeros((2, 20, 20), np.uint8)
    labels[:, 5:15, 2:7] = 1
    labels[:, 5:15, 13:18] = 2
    learned = np.zeros_like(labels)
    learned[:, 4:16, 1:9] = 2  # the network's side label is ignored: nearest classical lung wins
    learned[:, 4:16, 11:19] = 2
    learned[:, 0:3, 9:11] = 1  # "lung" in the airway
    lesions = np.zeros_like(labels)
    lesions[:, 8:12, 7:9] = 2  # consolidation at the right lung's medial edge
    lesions[:, 0:3, 9:11] = 1
    lesions[:, 0, 0] = 1  # lesion outside the learned lung: not added
    airway = np.zeros(labels.shape, bool)
    airway[:, 0:3, 9:11] = True
    before = labels.copy()
    n = add_learned_lesional_lung(labels, learned, lesions, airway)
    assert n == 2 * 4 * 2
    assert (labels[:, 8:12, 7:9] == 1).all() and not labels[:, 0:3, 9:11].any() and labels[0, 0, 0] == 0
    assert ((labels != before) == ((before == 0) & (labels == 1) & (lesions == 2))).all()


def test_learned_recovery_only_dense_lung_inside_the_thorax():
    """With HU, additions must be dense, not between the lungs (mediastinum) and inside the ribs."""
    from pulmo.ct.segment.lungs import add_learned_lesional_lung

    nz, ny, nx = 4, 140, 140
    hu = np.full((nz, ny, nx), -1000.0, np.float32)
    yy, xx = np.mgrid[:ny, :nx]
    r2 = (yy - 70) ** 2 + (xx - 70) ** 2
    hu[:, r2 <= 66 ** 2] = 40.0                                            # soft tissue
    hu[:, (r2 >= 56 ** 2) & (r2 <= 58 ** 2)] = 700.0                       # a closed bony ring
    labels = np.zeros((nz, ny, nx), np.uint8)
    labels[:, 40:100, 30:62] = 1
    labels[:, 40:100, 78:110] = 2
    hu[labels > 0] = -850.0
    learned = np.zeros_like(labels)
    lesions = np.zeros_like(labels)
    regions = {name: np.zeros((ny, nx), bool) for name in ("dense", "medi", "wall", "airy")}
    regions["dense"][100:108, 40:58] = True                                # consolidation below the right lung
    regions["medi"][60:70, 64:76] = True                                   # between the lungs
    regions["wall"][65:75, 6:10] = True                                    # outside the ribs (chest wall)
    regions["airy"][30:40, 85:100] = True                                  # labelled lesion but aerated
    for m in regions.values():
        learned[:, m] = 1
        lesions[:, m] = 2
    hu[:, regions["airy"]] = -900.0
    n = add_learned_lesional_lung(labels, learned, lesions, None, hu=hu, spacing=(5.0, 1.0, 1.0))
    assert (labels[:, regions["dense"]] == 1).all() and n == nz * regions["dense"].sum()
    assert not any(labels[:, regions[k]].any() for k in ("medi", "wall", "airy"))
